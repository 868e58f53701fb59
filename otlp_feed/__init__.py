"""The OpenTelemetry feed (issue 16): Claude Code's own OTLP/HTTP log export, beside the
agent's NDJSON feed (``usage.api``), into the same event log."""
