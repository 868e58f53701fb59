"""The Redis projections of the event log: what they hold, how events change them, and how
they follow the log. Everything in them is rebuilt from the log by ``rebuild_projections``."""
