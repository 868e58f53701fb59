"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
django_http = get_asgi_application()  # sets Django up before the consumers import models

from channels.routing import ProtocolTypeRouter  # noqa: E402

from realtime import backpressure  # noqa: E402
from realtime.routing import websocket_application  # noqa: E402

backpressure.install()

application = ProtocolTypeRouter({"http": django_http, "websocket": websocket_application})

# Everything loaded so far (Django, the apps, the price table) lives as long as the process.
# Frozen, the collector stops walking it on every full collection: measured in-process on
# the ingest path, from 15,000 to 20,000 records/s (BENCHMARKS.md, section 1).
gc.freeze()
