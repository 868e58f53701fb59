"""`claude-usage-agent monitor`: the server's dashboard, live, in the terminal.

Modules: `formatting` (pure, standard library: numbers, times, colour thresholds and the plain
summary), `view` (pure: a dashboard and a moment → a rich renderable), `link` (the WebSocket
connection: reconnects, backoff, the `configure` action), `command` (the entry point that
picks the live screen or a one-shot answer). Only `view`, `link` and `screen` import the
optional `[monitor]` extra (rich, websockets), and only when the live screen starts.
"""
