"""The projection store: the only module that talks to Redis and knows its keys.

Layout, per user (the ``{u:ID}`` hash tag keeps a user's keys in one Redis Cluster slot,
which the Lua scripts need):

    PREFIX:v4:{u:ID}:cp              the checkpoint, LOG:POSITION:EVENT (``Checkpoint``)
    PREFIX:v4:{u:ID}:epoch           which build of the projection this is: new at every
                                     reset, so retention can tell it was rebuilt meanwhile
    PREFIX:v4:{u:ID}:m:MINUTE        per-minute bucket hash (MINUTE = epoch seconds)
    PREFIX:v4:{u:ID}:h:HOUR          per-hour rollup of the same
    PREFIX:v4:{u:ID}:tot             totals over all retained events
    PREFIX:v4:{u:ID}:ts              sorted set: counted message -> timestamp (ms), for
                                     windows (member: ``index_member``)
    PREFIX:v4:{u:ID}:pts:PID, sts:SID, hts:HOSTID
                                     the same per project, session and host: their first
                                     and last messages are the ends, one lookup each
    PREFIX:v4:{u:ID}:win:ALIGN       the latest window found (start, first message): where
                                     the next window walk starts
    PREFIX:v4:{u:ID}:projects        set of project ids;   ...:p:ID  project hash
    PREFIX:v4:{u:ID}:p:ID:sessions   set of session ids;   ...:s:ID  session hash
    PREFIX:v4:{u:ID}:hosts           set of host names;    ...:host:NAME  host hash
    PREFIX:v4:{u:ID}:unpriced        model -> events that had no price

Bucket fields: one per measure (``usage.measures.FIELDS``), and the same per model as
``FIELD|MODEL``. Project, session and host hashes hold the measures too, and ``first`` and
``last``: the earliest and latest timestamp (ms) of their counted messages, whatever order
the copies arrived in. An owner left without counted messages loses its hash and its place
in the index sets, as if it had never been (retention takes whole sessions away).

Every change is applied by one Lua script (``lua/apply.lua``) that also moves the
checkpoint, so a read never sees an event half applied, and an event at or below the
checkpoint is skipped (applying twice is a no-op). No script does work that grows with a
user's history: lookups go through the indexes above, in O(log n), and the window walk
takes bounded steps per call (``tests/usage/test_redis_work.py`` counts them).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from operator import add
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import redis
from django.conf import settings

from usage.measures import FIELDS, MESSAGES_FIELD, Totals
from usage.projection import redis_address
from usage.projection.batch import (
    HOUR,
    MINUTE,
    TOTAL,
    TOTAL_BUCKET,
    Batch,
    Bucket,
    Contribution,
    Owner,
    aggregate,
)

LAYOUT_VERSION = "v4"  # v4: web search measures, checkpoints bound to the price data too
# Earlier layouts: their keys are deleted when a user's projection is built afresh.
OLD_LAYOUT_VERSIONS = ("v1", "v2", "v3")
# Lua's unpack() puts every item on the C stack (8,000 slots at most): ZADD's and ZREM's
# arguments go in chunks of this many (and the script's own unpacks are chunked too).
UNPACK_LIMIT = 1000
# cjson reads numbers as doubles: integers above 2**53 would arrive rounded, so larger
# amounts go as text (HINCRBY and HSET read both); Redis's integers end at 2**63 - 1.
MAX_EXACT = 2**53
MAX_REDIS_INTEGER = 2**63 - 1
# The 5-hour window alignments whose latest window the store keeps an anchor for.
WINDOW_ALIGNS = ("hour", "exact")
# Windows one call of lua/last_window.lua walks at most; a longer walk takes more calls.
WINDOW_STEPS_PER_CALL = 64
REBUILD_LOCK_SECONDS = 60  # dropping and resetting takes milliseconds; this bounds a crash
MINUTE_SECONDS = 60
HOUR_SECONDS = 3600
_LUA = Path(__file__).resolve().parent / "lua"
# What a Redis that is down, restarting, loading or out of reach raises (the throttles' cache
# raises the same): requests answer 503 with Retry-After (usage.api.errors), since every
# write and read needs the projections, and a retry after Redis returns succeeds.
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, closed; BusyLoadingError too
    redis.exceptions.TimeoutError,
    # On a cluster: CLUSTERDOWN (a slot without a master), TRYAGAIN (a slot on the move,
    # after the retries), and redis-py's RedisClusterException: no node reachable, or slots
    # not covered. That one also stands for misuse (keys of two slots in one command),
    # which none of ours is: tests/test_redis_cluster.py runs the projections on a cluster.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)


class ProjectRow(NamedTuple):
    project_id: int
    path: str
    totals: Totals
    first_ms: int | None
    last_ms: int | None
    sessions: int


class SessionRow(NamedTuple):
    session_id: str
    totals: Totals
    first_ms: int | None
    last_ms: int | None


class HostRow(NamedTuple):
    host: str
    totals: Totals
    first_ms: int | None
    last_ms: int | None


Sums = tuple[Totals, dict[str, Totals]]  # over all models, and per model


def client() -> Any:
    """The shared client (decoded strings; redis-py's types cannot express that)."""
    return _client(settings.REDIS_URL)


@lru_cache(maxsize=4)
def _client(url: str) -> Any:
    # A cluster's clients take no health_check_interval (redis-py drops it): they find a
    # broken connection when a command fails on it, and retry elsewhere.
    return connect(url, decode_responses=True, health_check_interval=30)


def connect(url: str, **options: Any) -> Any:
    """A new client of ``url`` (``redis_address``): for a ``redis+cluster://`` URL a
    ``RedisCluster``, which learns the slots' masters from the nodes listed and sends each
    command to the master of its key's slot (a script to its first key's, a SCAN to every
    master); else a ``Redis``. ``options`` apply to every connection."""
    address = redis_address.parse(url)
    if not address.cluster:
        return redis.Redis.from_url(url, **options)
    others = [
        redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]  # redis-py's
        for host, port in address.nodes[1:]
    ]
    # The first node's URL carries the credentials, TLS and options every node shares.
    return redis.RedisCluster(url=address.node_urls[0], startup_nodes=others, **options)


@lru_cache(maxsize=8)
def _script(url: str, name: str) -> Any:
    """A registered script (redis-py runs it by its hash, loading it once per server)."""
    return _client(url).register_script((_LUA / f"{name}.lua").read_text())


def _run(name: str, user_id: int, *args: object) -> Any:
    return _script(settings.REDIS_URL, name)(keys=[user_prefix(user_id)], args=list(args))


def user_prefix(user_id: int, layout: str = LAYOUT_VERSION) -> str:
    return f"{settings.USAGE_REDIS_PREFIX}:{layout}:{{u:{user_id}}}:"


# --- the checkpoint and applying -----------------------------------------------------------


class Checkpoint(NamedTuple):
    """Where a projection stands: which log it projects and with which price data
    (``projector.binding``: ``LOG@PRICES``), the last position it applied, and an event
    that vouches for it: that event's fingerprint (``events.fingerprint``; "" at 0), or,
    once retention deleted it, ``FINGERPRINT@POSITION`` of the user's newest event left
    below it (``@0`` for none; ``witness``).
    Stored as ``LOG:POSITION:EVENT``; while a batch is being written it is ``LOG:writing``,
    which reads as no checkpoint at all (a script that fails half-way leaves it so)."""

    log: str
    position: int
    event: str

    def text(self) -> str:
        return f"{self.log}:{self.position}:{self.event}"

    def witness(self) -> tuple[int, str]:
        """(position, fingerprint) of the event the log must hold for this checkpoint to
        be of it (position 0: none needed)."""
        fingerprint, at, position = self.event.partition("@")
        return (int(position), fingerprint) if at else (self.position, self.event)

    def vouched_by(self, newest_left: tuple[int, str]) -> Checkpoint:
        """This checkpoint after retention: the same position, vouched for by the user's
        newest event left at or below it, (position, fingerprint)."""
        position, fingerprint = newest_left
        if position == self.position:
            return self._replace(event=fingerprint)
        return self._replace(event=f"{fingerprint}@{position}")


def _checkpoint_from(value: str | None) -> Checkpoint | None:
    if value is None:
        return None
    log, _, rest = value.partition(":")
    position, _, event = rest.partition(":")
    return Checkpoint(log, int(position), event) if position.isdigit() else None


def checkpoint(user_id: int) -> Checkpoint | None:
    """The stored checkpoint, or None when Redis has none that reads (flushed, restarted
    without persistence, never built, or left half-written)."""
    return _checkpoint_from(client().get(user_prefix(user_id) + "cp"))


def checkpoints(user_ids: Sequence[int]) -> dict[int, Checkpoint]:
    """Checkpoints of many users in one round trip (a pipeline: keys live in other slots)."""
    pipe = client().pipeline(transaction=False)
    for user_id in user_ids:
        pipe.get(user_prefix(user_id) + "cp")
    found = zip(user_ids, map(_checkpoint_from, pipe.execute()), strict=True)
    return {user_id: stored for user_id, stored in found if stored is not None}


def apply(
    user_id: int,
    events: Sequence[tuple[int, Sequence[Contribution]]],
    *,
    after: Checkpoint,
    last_event: str,
) -> Checkpoint | None:
    """Apply ``events``, which must be all of the user's events after ``after`` (whose last
    has the fingerprint ``last_event``), in one atomic step. Returns the new checkpoint;
    the stored one when they were already applied; None when the stored checkpoint is not
    ``after`` (a gap, a race, or another log: re-read and judge it)."""
    if not events:
        return after
    last = Checkpoint(after.log, events[-1][0], last_event)
    status, current = _run_apply(user_id, events, after=after, last=last)
    partly_in = (
        status < 0
        and current is not None
        and current.log == after.log
        and current.position != last.position
        and current.position in {position for position, _ in events}
    )
    if partly_in and current is not None:
        # Part of the batch is already in (a concurrent catch-up read fewer events): apply
        # the rest, which starts right after it. A stored position that is not one of the
        # batch's is not this story (another history of the log): the caller judges it.
        rest = [(position, c) for position, c in events if position > current.position]
        status, current = _run_apply(user_id, rest, after=current, last=last)
    return None if status < 0 else current


def take_back(
    user_id: int,
    events: Sequence[tuple[int, Sequence[Contribution]]],
    *,
    after: Checkpoint,
    to: Checkpoint,
    epoch: str,
) -> bool:
    """Retention: apply ``events``' contributions (taking back expired copies) to the
    projection of build ``epoch`` that stood at ``after`` when they left the log. The
    checkpoint becomes ``to`` (the same position, vouched for by an event still in the
    log); one that moved on meanwhile (a later ingest) stays. False, and nothing written,
    when the projection was reset since (another ``epoch``, no checkpoint, another log):
    it may not hold what left, so the caller forgets it."""
    status, _ = _run_apply(user_id, events, after=after, last=to, epoch=epoch)
    return status > 0


def _run_apply(
    user_id: int,
    events: Sequence[tuple[int, Sequence[Contribution]]],
    *,
    after: Checkpoint,
    last: Checkpoint,
    epoch: str | None = None,
) -> tuple[int, Checkpoint | None]:
    payload = _payload(aggregate(events))
    payload.update(
        log=after.log,
        after=after.text(),
        after_position=after.position,
        last=last.text(),
        last_position=last.position,
        messages_field=MESSAGES_FIELD,
        unpack_limit=UNPACK_LIMIT,
    )
    if epoch is not None:
        payload["expire_epoch"] = epoch
    status, stored = _run("apply", user_id, orjson.dumps(payload))
    return int(status), _checkpoint_from(stored or None)


def _payload(batch: Batch) -> dict[str, Any]:
    """The batch as ``lua/apply.lua`` takes it: keys, fields and index members."""
    ids = _OwnerIds()
    changes: dict[str, list[str | int]] = {}
    bucket_keys: dict[Bucket, str] = {}
    for bucket, sums in batch.buckets.items():
        key = bucket_keys[bucket] = _bucket_key(bucket)
        changes[key] = _field_changes(FIELDS, sums)
    model_fields: dict[str, tuple[str, ...]] = {}  # "i|MODEL", ...: built once per model
    for (bucket, model), sums in batch.bucket_models.items():
        names = model_fields.get(model)
        if names is None:
            names = model_fields[model] = tuple(f"{field}|{model}" for field in FIELDS)
        # Written out rather than a call: a backfill's batch has thousands of these.
        changes[bucket_keys[bucket]] += [
            item
            for name, value in zip(names, sums, strict=False)
            if value
            for item in (name, value)
        ]
    owner_sums: dict[str, list[int]] = {}
    index: dict[str, tuple[str, str]] = {}
    for owner, sums in batch.owners.items():
        keys = ids.keys(owner)
        for key in keys:
            current = owner_sums.get(key)
            owner_sums[key] = sums[:] if current is None else list(map(add, current, sums))
        sets, members = ids.index_sets(owner), ids.members(owner)
        for key, set_key, member in zip(keys, sets, members, strict=True):
            index[key] = (set_key, member)
    for key, sums in owner_sums.items():
        changes[key] = _field_changes(FIELDS, sums)
    changes["unpriced"] = [
        item for model, count in batch.unpriced.items() if count for item in (model, count)
    ]
    if batch.bound > MAX_EXACT:
        _exactly(changes)
    return {
        "incr": [[key, fields] for key, fields in changes.items() if fields],
        "hset": _owner_fields(batch, ids),
        "spans": _owner_spans(batch, ids),
        "index": [[key, set_key, member] for key, (set_key, member) in index.items()],
        "unpriced": sorted(batch.unpriced),
        "earliest": batch.earliest,
        "aligns": WINDOW_ALIGNS,
        **_index_changes(batch, ids),
    }


def _field_changes(names: Sequence[str], sums: Sequence[int]) -> list[str | int]:
    """[field, amount, field, amount, ...], zeros left out."""
    pairs = zip(names, sums, strict=True)
    return [item for name, value in pairs if value for item in (name, value)]


def _exactly(changes: dict[str, list[str | int]]) -> None:
    """Every amount must reach Redis exactly: cjson reads numbers as doubles, so those past
    2**53 are sent as text. One past Redis's integers is refused here, before the script,
    which Redis would not roll back half-way. Only a batch whose bound passes 2**53 (never
    a real one: that is nine million dollars in nanodollars) comes here."""
    for fields in changes.values():
        for at in range(1, len(fields), 2):
            value = fields[at]
            if isinstance(value, int) and abs(value) > MAX_EXACT:
                if abs(value) > MAX_REDIS_INTEGER:
                    raise ValueError(f"an amount of {value} is past what Redis can hold")
                fields[at] = str(value)


def _owner_fields(batch: Batch, ids: _OwnerIds) -> list[list[str]]:
    """The names a project's and a session's hashes keep beside their sums."""
    fields: dict[tuple[str, str], str] = {}
    for owner in batch.named:  # once named, always: the same whatever the batches' splits
        project, session, _ = ids.keys(owner)
        pid, _, _ = ids.of(owner)
        fields[(project, "path")] = owner.project_path
        fields[(session, "session")] = owner.session_id
        fields[(session, "pid")] = pid
    return [[key, field, value] for (key, field), value in fields.items()]


def _owner_spans(batch: Batch, ids: _OwnerIds) -> list[list[str]]:
    """[owner hash, its timestamp index] of every owner the batch touched: the script sets
    the hash's ``first`` and ``last`` from the index's ends (one lookup each)."""
    touched = {message.owner for message in batch.messages}
    return [
        [key, index]
        for owner in touched
        for key, index in zip(ids.keys(owner), ids.indexes(owner), strict=True)
    ]


def _index_changes(batch: Batch, ids: _OwnerIds) -> dict[str, Any]:
    """The timestamp indexes' changes: the user's (``ts``) and each owner's. A member stays
    in an index if any of its copies in the batch ends counted there (a revision may move a
    message from one session to another of the same project)."""
    final: dict[str, dict[str, int | None]] = {}
    for message, ts in batch.messages.items():
        member = index_member(message.message_id, message.request_id)
        for index in ("ts", *ids.indexes(message.owner)):
            states = final.setdefault(index, {})
            if ts is not None or member not in states:
                states[member] = ts
    zadd, zrem = [], []
    for index, states in final.items():
        added = [item for member, ts in states.items() if ts is not None for item in (ts, member)]
        removed = [member for member, ts in states.items() if ts is None]
        zadd += [[index, chunk] for chunk in _chunks(added, UNPACK_LIMIT)]
        zrem += [[index, chunk] for chunk in _chunks(removed, UNPACK_LIMIT)]
    return {"zadd": zadd, "zrem": zrem}


def index_member(message_id: str, request_id: str) -> str:
    """A message's member in the timestamp indexes. The message id's length first: with a
    plain separator ``a|b`` + ``c`` and ``a`` + ``b|c`` would be one member."""
    return f"{len(message_id)}:{message_id}|{request_id}"


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _bucket_key(bucket: Bucket) -> str:
    kind, start = bucket
    if kind == MINUTE:
        return f"m:{start}"
    if kind == HOUR:
        return f"h:{start}"
    if kind == TOTAL:
        return "tot"
    raise ValueError(f"no such bucket: {bucket!r}")


class _OwnerIds:
    """Owners' ids (hashes of their names, once per owner per batch) and the keys, index
    sets and timestamp-index tags made of them."""

    def __init__(self) -> None:
        self._ids: dict[Owner, tuple[str, str, str]] = {}

    def of(self, owner: Owner) -> tuple[str, str, str]:
        found = self._ids.get(owner)
        if found is None:
            found = self._ids[owner] = _owner_ids(owner)
        return found

    def indexes(self, owner: Owner) -> tuple[str, str, str]:
        """The timestamp indexes of the project's, session's and host's messages."""
        pid, sid, hid = self.of(owner)
        return f"pts:{pid}", f"sts:{sid}", f"hts:{hid}"

    def keys(self, owner: Owner) -> tuple[str, str, str]:
        """The project's, session's and host's hash (the host's is named, not hashed)."""
        pid, sid, _ = self.of(owner)
        return f"p:{pid}", f"s:{sid}", f"host:{owner.host}"

    def index_sets(self, owner: Owner) -> tuple[str, str, str]:
        pid, _, _ = self.of(owner)
        return "projects", f"p:{pid}:sessions", "hosts"

    def members(self, owner: Owner) -> tuple[str, str, str]:
        pid, sid, _ = self.of(owner)
        return pid, sid, owner.host


def project_id(project_path: str) -> int:
    """A stable id for a project path: 52 bits of its hash, exact in a JavaScript number."""
    return int(hashlib.blake2b(project_path.encode(), digest_size=8).hexdigest()[:13], 16)


def _owner_ids(owner: Owner) -> tuple[str, str, str]:
    """The ids of a message's project, session and host, as its timestamp index member
    ends with them."""
    path, session, host = owner
    return str(project_id(path)), _short_id(path + "\0" + session), _short_id(host)


def _short_id(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# --- building afresh -----------------------------------------------------------------------


def reset_checkpoint(user_id: int, log: str) -> None:
    """Marks an empty, fully built projection of ``log`` (a user with no events yet), a
    new build of it (a new epoch). Under ``rebuild_lock``, as every reset is."""
    prefix = user_prefix(user_id)
    if client().set(prefix + "cp", Checkpoint(log, 0, "").text(), nx=True):
        client().set(prefix + "epoch", secrets.token_hex(8))


def epoch(user_id: int) -> str:
    """The build the user's projection is ("" for one built before epochs were kept)."""
    return str(client().get(user_prefix(user_id) + "epoch") or "")


def forget(user_id: int) -> None:
    """Delete the checkpoint only: the projection reads as lost, and the next read, ingest
    or worker tick rebuilds it from the log."""
    client().delete(user_prefix(user_id) + "cp")


@contextmanager
def rebuild_lock(user_id: int) -> Iterator[None]:
    """Held while a user's projection is dropped and reset, so that two processes that both
    find it missing (a flushed Redis, two dashboard reads at once) do not drop each other's
    half-built work. The key is outside the user's layout, so ``drop_user`` keeps it."""
    name = f"{settings.USAGE_REDIS_PREFIX}:lock:{{u:{user_id}}}"
    lock = client().lock(name, timeout=REBUILD_LOCK_SECONDS, blocking_timeout=REBUILD_LOCK_SECONDS)
    if not lock.acquire():
        raise TimeoutError(f"projection of user {user_id} is locked by another rebuild")
    try:
        yield
    finally:
        lock.release()


def drop_user(user_id: int, *, earlier_layouts: bool = False) -> None:
    """Delete every key of the user's projection (before a rebuild, under ``rebuild_lock``).

    The checkpoint goes first: from then on ``apply`` refuses to write, so no key appears
    after the scan below and survives the drop (the rebuild would count it twice).
    ``earlier_layouts`` also deletes what earlier layout versions left (after an upgrade);
    each layout costs a scan of the whole keyspace, so only the rebuilds that may follow an
    upgrade ask for it, not the one after every retention prune."""
    client().delete(user_prefix(user_id) + "cp")
    layouts = (LAYOUT_VERSION, *OLD_LAYOUT_VERSIONS) if earlier_layouts else (LAYOUT_VERSION,)
    for layout in layouts:
        _delete_matching(glob_escape(user_prefix(user_id, layout)) + "*")


def projected_user_ids() -> list[int]:
    """Users that have a projection (a checkpoint) in Redis."""
    pattern = f"{glob_escape(settings.USAGE_REDIS_PREFIX)}:{LAYOUT_VERSION}:{{u:*}}:cp"
    # The first "{u:" is the hash tag; the glob's * may also span a host name's key.
    found = (key.split("{u:", 1)[1].split("}", 1)[0] for key in client().scan_iter(match=pattern))
    return sorted({int(user_id) for user_id in found if user_id.isdigit()})


def _delete_matching(pattern: str) -> None:
    r = client()
    keys = list(r.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        r.delete(*keys[start : start + 500])


def glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


# --- the projections' lag, and probes ------------------------------------------------------

# A probe (a readiness check, a metrics scrape) waits at most this long for Redis: a load
# balancer polls it every few seconds, and a Redis that does not answer is not ready.
PROBE_SECONDS = 2.0


class Lag(NamedTuple):
    """How far the projections stood behind the log when the worker last measured it:
    the largest distance, in log positions, from a user's last event back to their
    checkpoint (a whole head when they have no usable checkpoint), the users behind at all,
    and when (Unix seconds). Positions are shared by every user, so the distance is an
    upper bound on that user's events not yet projected."""

    positions: int
    users_behind: int
    measured_at: float


def _lag_key() -> str:
    return f"{settings.USAGE_REDIS_PREFIX}:{LAYOUT_VERSION}:lag"


def record_lag(lag: Lag) -> None:
    client().set(_lag_key(), orjson.dumps(lag._asdict()))


def recorded_lag() -> Lag | None:
    """The last figure the worker recorded (one GET with the probe's timeouts); None before
    any. Raises ``UNAVAILABLE`` as every read does."""
    value = _probe_client(settings.REDIS_URL).get(_lag_key())
    if value is None:
        return None
    fields = orjson.loads(value)
    return Lag(int(fields["positions"]), int(fields["users_behind"]), float(fields["measured_at"]))


def ping() -> None:
    """Raises ``UNAVAILABLE`` unless Redis answers within ``PROBE_SECONDS``: in a cluster,
    every master (any of them may hold the slot of the next user's keys)."""
    probe = _probe_client(settings.REDIS_URL)
    if isinstance(probe, redis.RedisCluster):
        probe.ping(target_nodes=redis.RedisCluster.PRIMARIES)
    else:
        probe.ping()


@lru_cache(maxsize=4)
def _probe_client(url: str) -> Any:
    # Its own pool with timeouts: the shared client has none, and may wait on a Redis that
    # accepts but does not answer for as long as the operating system lets it.
    options: dict[str, Any] = {}
    if redis_address.parse(url).cluster:
        # A cluster's client tries a command that timed out three more times, with pauses:
        # a master that hangs held a probe 22 s; without retries it answers in 2.
        options["retry"] = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    return connect(
        url,
        decode_responses=True,
        socket_timeout=PROBE_SECONDS,
        socket_connect_timeout=PROBE_SECONDS,
        **options,
    )


# --- reading -------------------------------------------------------------------------------


def sum_ranges(
    user_id: int, ranges: Sequence[tuple[int, int]], *, with_models: bool = False
) -> list[Sums]:
    """The sums of each range [start, end) of epoch seconds (whole minutes), in order; per
    model too when ``with_models``."""
    return _sum_groups(user_id, [_bucket_keys(start, end) for start, end in ranges], with_models)


def totals(user_id: int) -> Sums:
    """The sums over all retained events, in all and per model."""
    return _sum_groups(user_id, [[_bucket_key(TOTAL_BUCKET)]], with_models=True)[0]


def _sum_groups(user_id: int, groups: list[list[str]], with_models: bool) -> list[Sums]:
    arguments = ("1" if with_models else "0", orjson.dumps(groups), orjson.dumps(FIELDS))
    rows = _run("sum_groups", user_id, *arguments)
    count = len(FIELDS)
    return [(_totals(row[:count]), _model_totals(row[count:])) for row in rows]


def _bucket_keys(start: int, end: int) -> list[str]:
    """Keys for [start, end) in epoch seconds (minute-aligned): whole hours from the hourly
    rollups, the ragged edges from minute buckets."""
    keys = []
    moment = start
    while moment < end:
        if moment % HOUR_SECONDS == 0 and moment + HOUR_SECONDS <= end:
            keys.append(_bucket_key((HOUR, moment)))
            moment += HOUR_SECONDS
        else:
            keys.append(_bucket_key((MINUTE, moment)))
            moment += MINUTE_SECONDS
    return keys


def last_window(user_id: int, align: str) -> tuple[int, int, int] | None:
    """(start, first message, last message) in epoch ms of the user's latest window.

    The script walks the windows from the latest one it found before (an anchor that
    writes before it invalidate), at most ``WINDOW_STEPS_PER_CALL`` of them per call: a long
    history takes several short calls, once, never one long one."""
    while True:
        found = _run("last_window", user_id, align, WINDOW_STEPS_PER_CALL)
        if not found:
            return None
        if found[0] != "more":
            start, first, last = (int(float(value)) for value in found)
            return start, first, last


def messages_between(user_id: int, start_ms: int, end_ms: int) -> int:
    """How many counted messages have a timestamp in [start_ms, end_ms)."""
    return int(client().zcount(user_prefix(user_id) + "ts", start_ms, f"({end_ms}"))


def projects(user_id: int) -> list[ProjectRow]:
    r = client()
    prefix = user_prefix(user_id)
    ids = sorted(r.smembers(prefix + "projects"))
    pipe = r.pipeline(transaction=False)
    for pid in ids:
        pipe.hgetall(f"{prefix}p:{pid}")
        pipe.scard(f"{prefix}p:{pid}:sessions")
    replies = pipe.execute()
    return [
        ProjectRow(int(pid), fields.get("path", ""), *_owner_sums(fields), sessions=sessions)
        for pid, fields, sessions in zip(ids, replies[::2], replies[1::2], strict=True)
        if fields
    ]


def sessions(user_id: int, project: int) -> list[SessionRow]:
    r = client()
    prefix = user_prefix(user_id)
    sids = sorted(r.smembers(f"{prefix}p:{project}:sessions"))
    pipe = r.pipeline(transaction=False)
    for sid in sids:
        pipe.hgetall(f"{prefix}s:{sid}")
    return [
        SessionRow(fields.get("session", ""), *_owner_sums(fields))
        for fields in pipe.execute()
        if fields
    ]


def hosts(user_id: int) -> list[HostRow]:
    r = client()
    prefix = user_prefix(user_id)
    names = sorted(r.smembers(prefix + "hosts"))
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(f"{prefix}host:{name}")
    return [
        HostRow(name, *_owner_sums(fields))
        for name, fields in zip(names, pipe.execute(), strict=True)
    ]


def session_count(user_id: int) -> int:
    r = client()
    prefix = user_prefix(user_id)
    pipe = r.pipeline(transaction=False)
    for pid in r.smembers(prefix + "projects"):
        pipe.scard(f"{prefix}p:{pid}:sessions")
    return sum(pipe.execute())


def project_count(user_id: int) -> int:
    return int(client().scard(user_prefix(user_id) + "projects"))


def unpriced_models(user_id: int) -> list[str]:
    return sorted(client().hkeys(user_prefix(user_id) + "unpriced"))


def _owner_sums(fields: dict[str, str]) -> tuple[Totals, int | None, int | None]:
    """An owner hash's measures and its first and last message (ms)."""
    return (
        _totals([fields.get(field, 0) for field in FIELDS]),
        _ms(fields.get("first")),
        _ms(fields.get("last")),
    )


def _ms(value: str | None) -> int | None:
    return None if not value else int(float(value))


def _totals(values: Sequence[Any]) -> Totals:
    return Totals._make(int(value) for value in values)


def _model_totals(flat: Sequence[Any]) -> dict[str, Totals]:
    by_model: dict[str, dict[str, int]] = {}
    for field, value in zip(flat[::2], flat[1::2], strict=True):
        name, _, model = str(field).partition("|")
        by_model.setdefault(model, {})[name] = int(value)
    return {
        model: _totals([values.get(field, 0) for field in FIELDS])
        for model, values in by_model.items()
    }
