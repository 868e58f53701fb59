"""What ``usage`` tells whoever listens (operations' metrics), without knowing who listens.

Django signals, sent synchronously: a receiver must be quick and must not raise (a metric
counter, not I/O). ``usage`` never imports its listeners; they connect from their own
``AppConfig.ready()``.
"""

from __future__ import annotations

from django.dispatch import Signal

# After an ingest's append committed (or found nothing to append): ``result``, the
# ``services.IngestResult`` the caller gets.
records_ingested = Signal()

# A request was answered 503 because a dependency was out of reach: ``dependency`` is
# ``DATABASE`` or ``REDIS``.
dependency_unavailable = Signal()
DATABASE = "database"
REDIS = "redis"
