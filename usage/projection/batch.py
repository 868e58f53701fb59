"""What a batch of events does to the projections, summed. Pure: no Redis, no Django.

The projector turns each event into contributions (what it adds, what it takes back); this
module sums a batch of them per target, so that each Redis field gets one increment however
many events touched it. Targets are named by what they are (a minute, an owner, a message),
never by their Redis keys: only the projection store knows those.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import add, sub
from typing import NamedTuple

from usage.events import UsageEvent
from usage.measures import repriced, values_of

MINUTE = "minute"
HOUR = "hour"
TOTAL = "total"
Bucket = tuple[str, int]  # (MINUTE or HOUR, its start in epoch seconds), or (TOTAL, 0)
TOTAL_BUCKET: Bucket = (TOTAL, 0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Owner(NamedTuple):
    """Whose message it is: a project, a session of it, a host."""

    project_path: str
    session_id: str
    host: str


class Contribution(NamedTuple):
    """What one event adds to (sign +1) or takes from (sign -1) the projections."""

    sign: int
    timestamp_ms: int
    model: str
    values: tuple[int, ...]  # one per measure, in ``usage.measures.MEASURES`` order
    message_id: str
    request_id: str
    owner: Owner
    unpriced: bool


class Message(NamedTuple):
    """A counted message, as the timestamp index holds it."""

    message_id: str
    request_id: str
    owner: Owner


class Batch(NamedTuple):
    """A batch's effect. Sums are lists in ``MEASURES`` order."""

    buckets: dict[Bucket, list[int]]  # each bucket's sums over all models
    bucket_models: dict[tuple[Bucket, str], list[int]]  # each (bucket, model)'s sums
    owners: dict[Owner, list[int]]  # each project/session/host's sums
    messages: dict[Message, int | None]  # each message's final timestamp; None: removed
    named: dict[Owner, None]  # owners a copy was added to (whose hashes keep their names)
    unpriced: dict[str, int]  # model -> change in its count of unpriced events
    earliest: int | None  # the earliest timestamp (ms) the batch adds or takes back
    bound: int  # no sum in the batch is larger than this (in absolute value)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, in integers (float seconds * 1000 can round down)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def contribution(event: UsageEvent, *, sign: int, priced_now: bool = False) -> Contribution:
    """What ``event`` adds or takes back, priced with the price data in force (a copy that
    is taken back is priced as it was when added: with the projection's price data).
    ``priced_now``: the event was priced by this ingest, with that same data, and keeps its
    cost (pricing it again cost a live batch 3 ms of its ~55 ms of CPU)."""
    if not priced_now:
        event = repriced(event)
    record = event.record
    return Contribution(
        sign,
        epoch_ms(record.timestamp),
        record.model,
        values_of(event),
        record.message_id,
        record.request_id,
        Owner(record.project_path, record.session_id, record.host),
        not event.priced,
    )


def aggregate(events: Sequence[tuple[int, Sequence[Contribution]]]) -> Batch:
    """Sum the contributions of ``events`` (position, contributions), in position order.

    Contributions are first summed per (minute, model, owner) cell: a live batch of a
    thousand messages touches a few dozen such cells, and the roll-up into buckets and owners
    (``_roll_up``) runs per cell, not per message."""
    cells: dict[tuple[int, str, Owner], list[int]] = {}
    messages: dict[Message, int | None] = {}
    named: dict[Owner, None] = {}
    unpriced: dict[str, int] = {}
    earliest: int | None = None
    largest = count = 0
    for _, contributions in events:
        count += len(contributions)
        for c in contributions:
            if c.values and (top := max(c.values)) > largest:
                largest = top
            ts, owner, sign = c.timestamp_ms, c.owner, c.sign
            cell = (ts // 60_000, c.model, owner)
            sums = cells.get(cell)
            if sums is None:
                sums = cells[cell] = [0] * len(c.values)
            sums[:] = map(add if sign > 0 else sub, sums, c.values)
            if c.unpriced:
                unpriced[c.model] = unpriced.get(c.model, 0) + sign
            messages[Message(c.message_id, c.request_id, owner)] = ts if sign > 0 else None
            if sign > 0:
                named[owner] = None
            if earliest is None or ts < earliest:
                earliest = ts
    buckets, bucket_models, owners = _roll_up(cells)
    bound = largest * count  # every value is a count or a cost: none is negative
    return Batch(buckets, bucket_models, owners, messages, named, unpriced, earliest, bound)


def _roll_up(
    cells: dict[tuple[int, str, Owner], list[int]],
) -> tuple[dict[Bucket, list[int]], dict[tuple[Bucket, str], list[int]], dict[Owner, list[int]]]:
    """Cells into buckets and owners, in steps: cells into (minute, model) and into owners;
    minutes into their hour and the total; each bucket's own sums from its models'. A
    backfill's batch has about one cell per message (its messages are minutes apart), so
    what is done per cell counts: the additions are written out, not calls."""
    per_minute: dict[tuple[int, str], list[int]] = {}
    owners: dict[Owner, list[int]] = {}
    for (minute, model, owner), sums in cells.items():
        current = per_minute.get((minute, model))
        if current is None:
            per_minute[(minute, model)] = sums[:]
        else:
            current[:] = map(add, current, sums)
        current = owners.get(owner)
        if current is None:
            owners[owner] = sums[:]
        else:
            current[:] = map(add, current, sums)
    bucket_models: dict[tuple[Bucket, str], list[int]] = {}
    for (minute, model), sums in per_minute.items():
        seconds = minute * 60
        bucket_models[((MINUTE, seconds), model)] = sums  # each (minute, model) once
        for wider in (((HOUR, seconds - seconds % 3600), model), (TOTAL_BUCKET, model)):
            current = bucket_models.get(wider)
            if current is None:
                bucket_models[wider] = sums[:]
            else:
                current[:] = map(add, current, sums)
    buckets: dict[Bucket, list[int]] = {}
    for (bucket, _), sums in bucket_models.items():
        current = buckets.get(bucket)
        if current is None:
            buckets[bucket] = sums[:]
        else:
            current[:] = map(add, current, sums)
    return buckets, bucket_models, owners
