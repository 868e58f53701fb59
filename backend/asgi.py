"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
django_http = get_asgi_application()  # sets Django up before the consumers import models

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from realtime import backpressure  # noqa: E402
from realtime.routing import websocket_application  # noqa: E402
from usage import pricing  # noqa: E402

backpressure.install()

# Loaded now, not by the first request each process serves: the URL conf (it imports every
# view, DRF and the schema generator) and the price data. In a first backfill right after a
# start, that first request paid about 0.7 s of CPU per worker (py-spy, BENCHMARKS.md).
get_resolver().url_patterns  # noqa: B018
pricing.load()

application = ProtocolTypeRouter({"http": django_http, "websocket": websocket_application})

# Everything loaded so far (Django, the apps, the views, the price table) lives as long as
# the process. Frozen, the collector stops walking it in every full collection:
# bench.ingest went from 15,414 to 17,626 records/s with this line alone (BENCHMARKS.md,
# section 1).
gc.freeze()
