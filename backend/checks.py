"""System checks of the settings that have a fixed set of values or a range.

A value outside them would pass start-up and fail later, in every request that reads it
(``USAGE_WINDOW_ALIGN=sideways`` would make every dashboard a 500). Here each such setting has one
rule; ``manage.py check`` and every command, the launcher (``backend/serve.py``) and a bare
daphne (``backend/asgi.py``) refuse to go on, with one line per bad setting:
``USAGE_WINDOW_ALIGN='sideways': must be one of 'hour', 'exact'``.

The rules read the settings, never the environment: a value the settings could not even
parse is in ``settings.UNREADABLE_SETTINGS`` as its text, and is reported under the same
rule. So is what a profile needs (``backend/profiles.py``): the production profile refuses,
one line per variable, the ``settings.UNSET_SETTINGS`` it has no default for, and
``USAGE_TLS_PROXY`` without a trusted proxy to say which requests came over TLS.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, run_checks

from backend import profiles
from usage import pricing
from usage.projection import redis_address
from usage.windows import CUSTOM_PLAN, PLAN_LIMITS, WindowAlign

CHECK_ID = "backend.E001"
TAG = "settings"

# A century: a cutoff further back leaves the range of datetime in the retention query.
MAX_RETENTION_HOURS = 100 * 365 * 24
# The prefix starts every key and every SCAN pattern; glob characters, braces (Redis hash
# tags) or spaces in it would make those patterns match other keys, or none.
REDIS_PREFIX = re.compile(r"[A-Za-z0-9._:-]+")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
USERNAME_MAX_LENGTH = 150  # django.contrib.auth's User.username
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Rule:
    setting: str
    allowed: str  # ends "<setting>=<value>: must be ..."
    # None: no setting holds the value as such (DATABASE_URL becomes DATABASES), and the
    # settings refuse every unreadable or unsupported one, which is then reported as text.
    accepts: Callable[[Any], bool] | None


def _one_of(setting: str, choices: Iterable[str]) -> Rule:
    values = tuple(choices)
    listed = ", ".join(repr(value) for value in values)
    return Rule(setting, f"one of {listed}", lambda value: value in values)


def _whole_number_from(setting: str, minimum: int) -> Rule:
    return Rule(
        setting, f"a whole number >= {minimum}", lambda value: _whole(value) and value >= minimum
    )


def _number_from(setting: str, minimum: float) -> Rule:
    return Rule(
        setting, f"a number >= {minimum:g}", lambda value: _finite(value) and value >= minimum
    )


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _network(text: Any) -> bool:
    try:
        ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        return False
    return True


def _redis_url(url: str) -> bool:
    try:
        return url.startswith(REDIS_SCHEMES) or redis_address.parse(url).cluster
    except ValueError:
        return False


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


MAX_RECORDS_LIMIT = 100_000


def _true_or_false(setting: str) -> Rule:
    return Rule(setting, "true or false", lambda value: isinstance(value, bool))


RULES: tuple[Rule, ...] = (
    _true_or_false("DEBUG"),
    _one_of("USAGE_PROFILE", profiles.PROFILES),
    Rule(
        "LOG_LEVEL",
        "one of " + ", ".join(LOG_LEVELS) + " (any case)",
        lambda value: value in logging.getLevelNamesMapping(),
    ),
    Rule("DATABASE_URL", "a sqlite:/// or postgres:// URL", None),
    Rule(
        "REDIS_URL",
        "empty (the embedded server), a redis://, rediss:// or unix:// URL, or a Redis "
        f"Cluster's nodes: {redis_address.EXAMPLE} (rediss+cluster:// over TLS)",
        lambda url: isinstance(url, str) and (url == "" or _redis_url(url)),
    ),
    Rule(
        "USAGE_REDIS_PREFIX",
        "made of letters, digits and . _ : - (not empty)",
        lambda prefix: isinstance(prefix, str) and REDIS_PREFIX.fullmatch(prefix) is not None,
    ),
    _one_of("USAGE_WINDOW_ALIGN", (align.value for align in WindowAlign)),
    _one_of("USAGE_DEFAULT_PLAN", [*PLAN_LIMITS, CUSTOM_PLAN]),
    Rule(
        "USAGE_RETENTION_HOURS",
        f"a number from 0 (keep everything) to {MAX_RETENTION_HOURS}",
        lambda hours: _finite(hours) and 0 <= hours <= MAX_RETENTION_HOURS,
    ),
    Rule(
        "USAGE_LOCAL_USER",
        f"a user name of 1 to {USERNAME_MAX_LENGTH} characters",
        lambda name: isinstance(name, str) and 1 <= len(name) <= USERNAME_MAX_LENGTH,
    ),
    _whole_number_from("USAGE_MAX_BODY_BYTES", 1),
    _whole_number_from("USAGE_MAX_OTHER_BODY_BYTES", 1),
    # The JSON body's record count is a decoder of this many fields (usage/api/ingest_body.py),
    # made in about 0.1 s for 10,000 and 1 s for 100,000: a larger limit would stall a worker.
    Rule(
        "USAGE_MAX_RECORDS",
        f"a whole number from 1 to {MAX_RECORDS_LIMIT}",
        lambda value: _whole(value) and 1 <= value <= MAX_RECORDS_LIMIT,
    ),
    _whole_number_from("USAGE_MAX_MODELS_PER_USER", 1),
    _whole_number_from("USAGE_MAX_PROJECTS_PER_USER", 1),
    _whole_number_from("USAGE_MAX_SESSIONS_PER_USER", 1),
    _whole_number_from("USAGE_MAX_HOSTS_PER_USER", 1),
    _number_from("USAGE_WS_MIN_INTERVAL_SECONDS", 0),
    # 0 would re-read every checkpoint in a busy loop.
    Rule(
        "USAGE_WS_RESYNC_SECONDS",
        "a number > 0",
        lambda seconds: _finite(seconds) and seconds > 0,
    ),
    _whole_number_from("USAGE_WS_MAX_BUFFERED_BYTES", 1),
    Rule(
        "USAGE_TRUSTED_PROXIES",
        "a comma-separated list of IP addresses or networks (10.0.0.1, 10.0.0.0/8)",
        lambda texts: isinstance(texts, list) and all(_network(text) for text in texts),
    ),
    _true_or_false("USAGE_TLS_PROXY"),
    _whole_number_from("USAGE_HSTS_SECONDS", 0),  # 0 sends no Strict-Transport-Security
    _true_or_false("USAGE_HSTS_INCLUDE_SUBDOMAINS"),
    _true_or_false("USAGE_HSTS_PRELOAD"),
    # 0 turns a rate limit off (usage/api/throttles.py).
    _whole_number_from("USAGE_THROTTLE_WRITE_PER_MINUTE", 0),
    _whole_number_from("USAGE_THROTTLE_READ_PER_MINUTE", 0),
    _whole_number_from("USAGE_THROTTLE_ANONYMOUS_PER_MINUTE", 0),
    _whole_number_from("USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN", 0),
    _whole_number_from("USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN", 0),
    # A waiting request holds a thread and a database connection (usage/api/throttles.py).
    Rule(
        "USAGE_IN_FLIGHT_WAIT_SECONDS",
        "a number from 0 to 30",
        lambda seconds: _finite(seconds) and 0 <= seconds <= 30,
    ),
    # A refusal held longer would hold its connection (backend/slow_refusals.py).
    Rule(
        "USAGE_REFUSAL_DELAY_SECONDS",
        "a number from 0 to 60",
        lambda seconds: _finite(seconds) and 0 <= seconds <= 60,
    ),
    # Each pool keeps one connection open (settings.py), and psycopg's pool refuses a
    # maximum below its minimum.
    _whole_number_from("DB_POOL_SIZE", 1),
)


# What the production profile has no default for (settings.REQUIRED_IN_PRODUCTION): why,
# and what stood in for it locally. Each ends "<VARIABLE> is not set: ...".
NOT_SET_IN_PRODUCTION = {
    "DATABASE_URL": "production needs the one database every process shares, e.g. "
    "postgres://user:password@host:5432/db (USAGE_PROFILE=local: a SQLite file)",
    "REDIS_URL": "production needs the one Redis every process shares, e.g. "
    "redis://host:6379/0 (USAGE_PROFILE=local: an embedded redis-server)",
    "SECRET_KEY": "production needs a key of its own, e.g. 50 random characters "
    "(USAGE_PROFILE=local: a published one)",
}
TLS_PROXY_WITHOUT_PROXY = (
    "USAGE_TRUSTED_PROXIES is not set: USAGE_TLS_PROXY=true (the production default) needs the "
    "reverse proxy that terminates TLS and sends X-Forwarded-Proto, e.g. 10.0.0.5 or "
    "10.0.0.0/24 (USAGE_TLS_PROXY=false: plain HTTP, never redirected)"
)
PUBLISHED_SECRET_KEY = (
    "SECRET_KEY is the local profile's published key: production needs a key of its own"
)


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[Error]:
    """One error for each setting outside its rule, and for each variable the profile
    needs and lacks (a Django system check)."""
    unreadable: dict[str, str] = settings.UNREADABLE_SETTINGS
    errors = [_error(name, text, _allowed(name)) for name, text in unreadable.items()]
    for rule in RULES:
        if rule.accepts is None or rule.setting in unreadable:
            continue
        value = getattr(settings, rule.setting)
        if not rule.accepts(value):
            errors.append(_error(rule.setting, value, rule.allowed))
    return errors + [Error(line, id=CHECK_ID) for line in _missing()]


def _missing() -> list[str]:
    """A line for each variable the settings' profile needs and lacks."""
    lines = []
    if settings.USAGE_PROFILE == profiles.PRODUCTION:
        unset: list[str] = settings.UNSET_SETTINGS
        # An empty DATABASE_URL is already reported as a value that does not read.
        lines += [
            f"{name} is not set: {NOT_SET_IN_PRODUCTION[name]}"
            for name in unset
            if name not in settings.UNREADABLE_SETTINGS
        ]
        if "SECRET_KEY" not in unset and settings.SECRET_KEY == settings.LOCAL_SECRET_KEY:
            lines.append(PUBLISHED_SECRET_KEY)
    # Whatever the profile: behind no trusted proxy no request is ever HTTPS, and every one
    # would be redirected (to itself, through the proxy).
    if settings.USAGE_TLS_PROXY is True and not settings.USAGE_TRUSTED_PROXIES:
        lines.append(TLS_PROXY_WITHOUT_PROXY)
    return lines


def check_price_data(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[Error]:
    """The price data must read: genai-prices, our overlay and the operator's
    (``USAGE_PRICE_OVERLAY``), one line naming the file and the problem otherwise."""
    try:
        pricing.load()
    except pricing.OverlayError as error:
        overlay = settings.USAGE_PRICE_OVERLAY
        return [Error(f"USAGE_PRICE_OVERLAY={overlay!r}: {error}", id=CHECK_ID)]
    return []


def _allowed(setting: str) -> str:
    for rule in RULES:
        if rule.setting == setting:
            return rule.allowed
    return "readable"  # a setting parsed without a rule here still fails, if less helpfully


def _error(setting: str, value: Any, allowed: str) -> Error:
    return Error(f"{setting}={value!r}: must be {allowed}", id=CHECK_ID)


def start_up_errors() -> list[str]:
    """Every serious system check problem, one entry per problem, for the processes that
    serve: they exit with these lines instead of serving with a bad value. Django must be
    set up."""
    problems: list[CheckMessage] = run_checks()
    return [
        _line(problem) for problem in problems if problem.is_serious() and not problem.is_silenced()
    ]


def _line(problem: CheckMessage) -> str:
    # A problem that is not about one object (ours: a setting) reads best without Django's
    # "?: (id)" in front; the others keep their object.
    return str(problem.msg) if problem.obj is None else str(problem)
