"""``USAGE_PROFILE``: whether the embedded defaults may stand in for what was not configured.

``local``: a SQLite file and an embedded Redis under ``var/``, a fixed secret key, plain HTTP.
One machine, no configuration: ``make run`` and ``make test`` set it (the Makefile), and so
does the test run itself (``tests/embedded_redis_setup.py``).

``production``: the default everywhere else (a container, a Procfile platform, systemd),
unless ``DEBUG`` is true. No embedded default: the system checks (``backend/checks.py``)
refuse to start, one line per variable, without ``DATABASE_URL``, ``REDIS_URL`` and
``SECRET_KEY``, and ``USAGE_TLS_PROXY`` defaults to true. The embedded defaults would give
each container a SQLite file and a Redis of its own, so that the web processes and the worker
would run on different data, and everyone the published key.

The entry points decide whether to start the embedded Redis before the settings load
(``backend/embedded_redis.py``), so the rule is read from the environment here, once, for
them and for the settings.
"""

from collections.abc import Mapping

LOCAL = "local"
PRODUCTION = "production"
PROFILES = (LOCAL, PRODUCTION)

# django-environ's words for true and false, as the settings read every switch.
TRUE_WORDS = frozenset({"true", "on", "ok", "y", "yes", "1"})
FALSE_WORDS = frozenset({"false", "off", "n", "no", "0"})


def parse(text: str) -> str:
    """``text`` as a profile; ValueError for anything else (a typo must not pick ``local``'s
    defaults, nor pass unnoticed)."""
    if text not in PROFILES:
        raise ValueError(text)
    return text


def default(*, debug: bool) -> str:
    """The profile when ``USAGE_PROFILE`` is not set: a DEBUG run is a developer's."""
    return LOCAL if debug else PRODUCTION


def allows_embedded_defaults(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` is the local profile's (by the settings' rules). A value that does
    not read is not: its start is refused anyway, and must start nothing first."""
    text = environ.get("USAGE_PROFILE")
    if text is None:
        return environ.get("DEBUG", "").strip().lower() in TRUE_WORDS
    return text == LOCAL
