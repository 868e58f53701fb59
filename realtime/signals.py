"""What ``realtime`` tells whoever listens (operations' connection gauge), without knowing
who listens: Django signals, sent synchronously from the consumer (a receiver must be quick,
must not block the event loop and must not raise)."""

from __future__ import annotations

from django.dispatch import Signal

# A dashboard WebSocket was accepted with valid credentials; each is followed by exactly one
# ``connection_closed`` from the same process.
connection_opened = Signal()
connection_closed = Signal()
