"""Read entry points: every answer comes from the Redis projections, so its cost does not
grow with the size of the log. Each takes ``now`` (read once by the caller)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from usage import outage, pricing, shapes, side_tables, store
from usage.limits import LimitReport, apply_official
from usage.measures import Totals, sum_totals
from usage.pricing import NANOS_PER_USD
from usage.projection import projector, redis_store
from usage.projection.batch import epoch_ms
from usage.projection.redis_store import HostRow, ProjectRow, SessionRow
from usage.windows import (
    CUSTOM_PLAN,
    WINDOW_LENGTH,
    BurnRate,
    RateLimitState,
    Window,
    WindowAlign,
    burn_rate,
    rate_limit_state,
    resolve_token_limit,
)

MINUTE = 60
INTERVALS = {"1min": 60, "5min": 300, "15min": 900, "1hour": 3600}
COMPLETED_WINDOW_HISTORY = timedelta(days=30)


def _ensure_current(user_id: int) -> None:
    """Rebuild first if Redis holds no projection of this log, unless the log's database is
    down: then the read answers from what Redis holds (``usage.outage``)."""
    outage.optional(lambda: projector.ensure_current(user_id), None)


class NotFound(LookupError):
    """The named thing does not exist for this user."""


@dataclass(frozen=True, slots=True)
class LimitSettings:
    plan: str
    token_limit: int | None
    window_align: WindowAlign


def dashboard(
    *, user_id: int, now: datetime, hours: float, limits: LimitSettings
) -> dict[str, object]:
    _ensure_current(user_id)
    start = now - timedelta(hours=hours)
    (summary, models), (last_hour, _) = redis_store.sum_ranges(
        user_id, [_minutes(start, now), _last_hour(now)], with_models=True
    )
    burn = _burn(last_hour)
    return shapes.dashboard(
        totals=summary,
        hours=hours,
        burn=burn,
        models=models,
        rate_limit=_rate_limit(user_id, now, limits, burn.tokens_per_minute),
        unpriced_models=redis_store.unpriced_models(user_id),
    )


def timeseries(*, user_id: int, now: datetime, hours: float, interval: str) -> dict[str, object]:
    """Every interval bucket from the one holding ``now - hours`` to the one holding ``now``,
    aligned to UTC interval boundaries, oldest first, empty ones included."""
    _ensure_current(user_id)
    step = INTERVALS[interval]
    first = _floor(_epoch(now - timedelta(hours=hours)), step)
    last = _floor(_epoch(now), step)
    starts = list(range(first, last + 1, step))
    sums = redis_store.sum_ranges(user_id, [(slot, slot + step) for slot in starts])
    return {
        "start_time": _moment(first).isoformat(),
        "end_time": _moment(last + step).isoformat(),
        "interval": interval,
        "data_points": [
            shapes.timeseries_point(_moment(slot), bucket)
            for slot, (bucket, _) in zip(starts, sums, strict=True)
        ],
    }


def stats(*, user_id: int, now: datetime, limits: LimitSettings) -> dict[str, object]:
    _ensure_current(user_id)
    totals, _ = redis_store.totals(user_id)
    [(last_hour, _)] = redis_store.sum_ranges(user_id, [_last_hour(now)])
    return shapes.stats(
        totals=totals,
        sessions=redis_store.session_count(user_id),
        projects=redis_store.project_count(user_id),
        rate_limit=_rate_limit(user_id, now, limits, _burn(last_hour).tokens_per_minute),
        unpriced_models=redis_store.unpriced_models(user_id),
        hosts=[_host(row) for row in redis_store.hosts(user_id)],
    )


def project_list(*, user_id: int) -> dict[str, object]:
    _ensure_current(user_id)
    listed = _named_projects(user_id)
    return {"projects": listed, "count": len(listed)}


def project_detail(*, user_id: int, name: str) -> dict[str, object]:
    project = _find_project(user_id, name)
    found = _sessions(user_id, project)
    return {**project, "sessions": found}


def project_sessions(*, user_id: int, name: str) -> dict[str, object]:
    project = _find_project(user_id, name)
    found = _sessions(user_id, project)
    return {"project": project["name"], "sessions": found, "count": len(found)}


def price_list(*, user_id: int, now: datetime, day: date | None = None) -> dict[str, object]:
    """The rates in force on ``day`` (today, UTC, by default) for each model in the user's
    retained data, the unpriced ones included, each rate with its source."""
    _ensure_current(user_id)
    _, models = redis_store.totals(user_id)
    names = {name for name, totals in models.items() if totals.messages}
    names |= set(redis_store.unpriced_models(user_id))
    names.discard(pricing.SYNTHETIC_MODEL)  # never billed, no model
    day = day or now.date()
    return shapes.price_list(
        data=pricing.price_data(),
        day=day,
        cards=[(name, pricing.rate_card(name, day)) for name in sorted(names)],
        reported={
            name: (totals.reported_cost_nanos, totals.compared_cost_nanos)
            for name, totals in models.items()
        },
    )


def _rate_limit(
    user_id: int, now: datetime, limits: LimitSettings, tokens_per_minute: float
) -> LimitReport:
    """Our estimate, replaced by Claude's own figures when the statusline sent fresh ones."""
    estimate = _estimated_rate_limit(user_id, now, limits, tokens_per_minute)
    official = outage.optional(lambda: side_tables.official_limits(user_id), None)
    return apply_official(estimate, official, tokens_per_minute=tokens_per_minute, now=now)


def _estimated_rate_limit(
    user_id: int, now: datetime, limits: LimitSettings, tokens_per_minute: float
) -> RateLimitState:
    window = _last_window(user_id, limits.window_align)
    active = window if window is not None and window.is_active(now) else None
    window_totals = Totals()
    if active is not None:
        [(window_totals, _)] = redis_store.sum_ranges(user_id, [_minutes(active.start, active.end)])
        window_totals = _without_earlier_windows(user_id, active, window_totals)
    history = []
    if limits.plan == CUSTOM_PLAN and limits.token_limit is None:
        since = now - COMPLETED_WINDOW_HISTORY
        align = limits.window_align.value
        nothing: list[int] = []
        history = outage.optional(
            lambda: side_tables.completed_window_totals(user_id, align, since), nothing
        )
    return rate_limit_state(
        window=active,
        window_tokens=window_totals.total_tokens,
        window_input_output_tokens=window_totals.input_output_tokens,
        plan=limits.plan,
        token_limit=resolve_token_limit(
            plan=limits.plan, token_limit=limits.token_limit, completed_window_totals=history
        ),
        tokens_per_minute=tokens_per_minute,
        now=now,
    )


def _without_earlier_windows(user_id: int, window: Window, totals: Totals) -> Totals:
    """``totals`` of whole minute buckets, less the messages of earlier windows that share
    the window's first minute. With ``window_align=exact`` a window opened at 15:00:40 by a
    message that came after the previous window ended at 15:00:10 shares the 15:00 bucket
    with that window's 15:00:05 message (with hour alignment, a message at exactly the
    previous window's end does). Such messages are rare: the log is read only when Redis's
    message index has one in the first minute before the window's first message."""
    minute_start = window.start.replace(second=0, microsecond=0)
    cut = min(window.first_message_at, minute_start + timedelta(minutes=1))
    if not redis_store.messages_between(user_id, epoch_ms(minute_start), epoch_ms(cut)):
        return totals
    return outage.optional(lambda: _less_earlier(user_id, minute_start, cut, totals), totals)


def _less_earlier(user_id: int, minute_start: datetime, cut: datetime, totals: Totals) -> Totals:
    logged = store.events_between(user_id, minute_start, cut - timedelta(microseconds=1))
    earlier = [  # the copy of each message that the projection counts, if it lies there
        event
        for event in store.latest_events(user_id, {e.record.message_id for e in logged})
        if event.counted and minute_start <= event.record.timestamp < cut
    ]
    return totals.minus(sum_totals(earlier))


def _last_window(user_id: int, align: WindowAlign) -> Window | None:
    found = redis_store.last_window(user_id, align.value)
    if found is None:
        return None
    start, first, last = (_moment_ms(value) for value in found)
    return Window(
        start=start, end=start + WINDOW_LENGTH, first_message_at=first, last_message_at=last
    )


def _burn(last_hour: Totals) -> BurnRate:
    return burn_rate(
        input_output_tokens_last_hour=last_hour.input_output_tokens,
        all_tokens_last_hour=last_hour.total_tokens,
        cost_last_hour_usd=last_hour.cost_nanos / NANOS_PER_USD,
    )


def _named_projects(user_id: int) -> list[dict[str, object]]:
    """The seed's project objects, named by ``project_names`` in the order they were first
    seen."""
    rows = sorted(redis_store.projects(user_id), key=lambda row: (row.first_ms or 0, row.path))
    names = project_names([row.path for row in rows])
    return [_project(row, name) for row, name in zip(rows, names, strict=True)]


def project_names(paths: Sequence[str]) -> list[str]:
    """Each path's name: its last component; when several paths share it, the first keeps
    it and the others get ``-2``, ``-3``...

    A suffixed name skips every name already in use, including a real last component: with
    ``/a/api``, ``/b/api`` and ``/c/api-2`` a plain counter named two projects ``api-2``, and
    ``projects/api-2/`` could reach only one of them. Linear: each base's counter only moves
    forward (a name ``base-N`` can only come from ``base``: the digits after the last hyphen
    are N), so 20,000 paths ending in ``api`` do not try 2, 3... afresh for each one."""
    bases = [_last_component(path) for path in paths]
    named: list[str | None] = [None] * len(bases)
    taken: set[str] = set()
    for index, base in enumerate(bases):  # first pass: the first path of each base keeps it
        if base not in taken:
            named[index] = base
            taken.add(base)
    next_suffix: dict[str, int] = {}
    for index, base in enumerate(bases):  # second pass: the others take the next free suffix
        if named[index] is not None:
            continue
        suffix = next_suffix.get(base, 2)
        while f"{base}-{suffix}" in taken:
            suffix += 1
        named[index] = f"{base}-{suffix}"
        taken.add(f"{base}-{suffix}")
        next_suffix[base] = suffix + 1
    return [name for name in named if name is not None]


def _find_project(user_id: int, name: str) -> dict[str, object]:
    _ensure_current(user_id)
    for project in _named_projects(user_id):
        if project["name"] == name or str(project["id"]) == name:
            return project
    raise NotFound(f"No project named {name!r}")


def _sessions(user_id: int, project: dict[str, object]) -> list[dict[str, object]]:
    rows = redis_store.sessions(user_id, int(str(project["id"])))
    return [_session(row) for row in sorted(rows, key=lambda r: r.last_ms or 0, reverse=True)]


def _project(row: ProjectRow, name: str) -> dict[str, object]:
    totals = row.totals
    return {
        "id": row.project_id,
        "name": name,
        "path": row.path,
        "total_tokens": totals.total_tokens,
        "total_sessions": row.sessions,
        "total_cost": shapes.usd(totals.cost_nanos),
        "created_at": _iso_ms(row.first_ms),
        "updated_at": _iso_ms(row.last_ms),
        "total_messages": totals.messages,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cache_creation_tokens": totals.cache_creation_tokens,
        "cache_read_tokens": totals.cache_read_tokens,
        **shapes.web_search(totals),
    }


def _session(row: SessionRow) -> dict[str, object]:
    totals = row.totals
    return {
        "session_id": row.session_id,
        "total_tokens": totals.total_tokens,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cache_creation_tokens": totals.cache_creation_tokens,
        "cache_read_tokens": totals.cache_read_tokens,
        "total_messages": totals.messages,
        "total_cost": shapes.usd(totals.cost_nanos),
        "first_activity": _iso_ms(row.first_ms),
        "last_activity": _iso_ms(row.last_ms),
        **shapes.web_search(totals),
    }


def _host(row: HostRow) -> dict[str, object]:
    totals = row.totals
    return {
        "host": row.host,
        "total_tokens": totals.total_tokens,
        "total_messages": totals.messages,
        "total_cost_usd": shapes.usd(totals.cost_nanos),
        "last_seen": _iso_ms(row.last_ms),
    }


def _minutes(start: datetime, end: datetime) -> tuple[int, int]:
    """The whole minutes from ``start``'s to ``end``'s (inclusive), in epoch seconds."""
    return _floor(_epoch(start), MINUTE), _floor(_epoch(end), MINUTE) + MINUTE


def _last_hour(now: datetime) -> tuple[int, int]:
    """The 60 minutes ending with the current (partial) one: the burn-rate hour."""
    current = _floor(_epoch(now), MINUTE)
    return current - 59 * MINUTE, current + MINUTE


def _last_component(path: str) -> str:
    parts = [part for part in path.replace("\\", "/").split("/") if part]
    return parts[-1] if parts else "unknown"


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp() // 1)


def _floor(seconds: int, step: int) -> int:
    return seconds - seconds % step


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _moment_ms(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(0, tz=UTC) + timedelta(milliseconds=milliseconds)


def _iso_ms(value: int | None) -> str | None:
    return None if value is None else _moment_ms(value).isoformat()


def dashboard_with_position(
    *, user_id: int, now: datetime, hours: float, limits: LimitSettings
) -> tuple[int, dict[str, object]]:
    """The dashboard and the log position it includes at least (read before the data, so
    every event up to it is in the answer)."""
    _ensure_current(user_id)
    stored = redis_store.checkpoint(user_id)
    position = stored.position if stored is not None else 0
    return position, dashboard(user_id=user_id, now=now, hours=hours, limits=limits)


def checkpoints(user_ids: list[int]) -> dict[int, int]:
    """The positions the users' projections stand at (what the WebSocket resync compares)."""
    return {user_id: cp.position for user_id, cp in redis_store.checkpoints(user_ids).items()}
