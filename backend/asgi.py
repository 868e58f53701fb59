"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Also what a daphne started on its own (without ``backend.serve``) runs first: it starts or
joins the embedded Redis when there is no ``REDIS_URL`` (in the local profile), and refuses
to serve, with one line per problem, when a system check fails (a setting outside its
allowed values, a variable the production profile needs).
"""

import gc
import os
from pathlib import Path

from django.conf import settings
from django.core.asgi import get_asgi_application

from backend.checks import start_up_errors
from backend.embedded_redis import ensure_redis_url, ensure_var_dir

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
ensure_var_dir()  # the default SQLite file's directory
ensure_redis_url()  # before the settings load: they read REDIS_URL once
# WhiteNoise warns at start when the static files' directory does not exist yet (a daphne
# started on its own, before any collectstatic): the page then says what to run instead.
Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
django_http = get_asgi_application()  # sets Django up before the consumers import models
if problems := start_up_errors():
    raise SystemExit("\n".join(problems))  # daphne then exits 1 with these lines, no traceback

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from backend import access_log, body_limit, proxies  # noqa: E402
from backend.slow_refusals import DelayRefusals  # noqa: E402
from realtime import backpressure  # noqa: E402
from realtime.routing import websocket_application  # noqa: E402
from usage import pricing  # noqa: E402

backpressure.install()
access_log.install()  # tokens never reach daphne's access log (backend/access_log.py)
proxies.install()  # X-Forwarded-* only from USAGE_TRUSTED_PROXIES (backend/proxies.py)
# Bodies over the limit are refused while daphne reads them, not after (backend/body_limit.py).
body_limit.install()

# Loaded now, not by the first request each process serves: the URL conf (it imports every
# view, DRF and the schema generator) and the price data: otherwise the first request of a
# backfill right after a start pays for them, on every worker.
get_resolver().url_patterns  # noqa: B018
pricing.load()

application = ProtocolTypeRouter(
    {"http": DelayRefusals(django_http), "websocket": websocket_application}
)

# Everything loaded so far (Django, the apps, the views, the price table) lives as long as
# the process. Frozen, the collector stops walking it in every full collection, which
# bench.ingest shows in its throughput.
gc.freeze()
