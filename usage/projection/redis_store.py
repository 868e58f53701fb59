"""Redis read models and their checkpoint. The only module that talks to Redis.

Layout, per user (the ``{u:ID}`` hash tag keeps a user's keys in one Redis Cluster slot,
which the Lua scripts need):

    PREFIX:v2:{u:ID}:cp              last applied log position (the checkpoint)
    PREFIX:v2:{u:ID}:m:MINUTE        per-minute bucket hash (MINUTE = epoch seconds)
    PREFIX:v2:{u:ID}:h:HOUR          per-hour rollup of the same
    PREFIX:v2:{u:ID}:tot             totals over all retained events
    PREFIX:v2:{u:ID}:ts              sorted set: counted message -> timestamp (ms), for windows
                                     and first/last (member: MESSAGE|REQUEST|PID|SID|HOSTID)
    PREFIX:v2:{u:ID}:projects        set of project ids;   ...:p:ID  project hash
    PREFIX:v2:{u:ID}:p:ID:sessions   set of session ids;   ...:s:ID  session hash
    PREFIX:v2:{u:ID}:hosts           set of host names;    ...:host:NAME  host hash
    PREFIX:v2:{u:ID}:unpriced        model -> events that had no price

Bucket fields: ``i`` ``o`` ``cc`` ``cr`` (the four token types), ``n`` (messages), ``c``
(cost, nanodollars), and the same per model as ``FIELD|MODEL``. Project, session and host
hashes also hold ``first`` and ``last``: the earliest and latest timestamp (ms) of their
counted messages, whatever order the copies arrived in (v1 only ever widened them, so a copy
later revised or retracted could leave its time behind).

Every change is applied by one Lua script that also moves the checkpoint, so a read never
sees an event half applied, and an event at or below the checkpoint is skipped (applying
twice is a no-op).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
import redis
from django.conf import settings

from usage.shapes import Totals as Bucket  # a bucket holds the same six sums

LAYOUT_VERSION = "v2"
# Earlier layouts: their keys are deleted when a user's projection is built afresh.
OLD_LAYOUT_VERSIONS = ("v1",)
TOKEN_FIELDS = ("i", "o", "cc", "cr")
SUM_FIELDS = (*TOKEN_FIELDS, "n", "c")
# Lua's unpack() puts every item on the C stack (8,000 slots at most): ZADD's and ZREM's
# arguments go in chunks of this many.
UNPACK_LIMIT = 1000
REBUILD_LOCK_SECONDS = 60  # dropping and resetting takes milliseconds; this bounds a crash

# Applies one batch: all of a user's events in (after, last], pre-aggregated in Python into
# increments and set/index changes. All or nothing: the checkpoint must still be ``after``
# (else another writer got there first, and the caller re-reads from the checkpoint).
# Hashes are never deleted, only taken out of their index set while empty, so the result
# does not depend on how the log was split into batches.
_APPLY = """
local prefix = KEYS[1]
local batch = cjson.decode(ARGV[1])
local stored = redis.call('GET', prefix .. 'cp')
-- No checkpoint: the projection is lost or being dropped for a rebuild. Writing now would
-- leave keys that the rebuild then adds to a second time; the caller re-reads instead.
if not stored then return {-1, -1} end
local checkpoint = tonumber(stored)
if checkpoint >= batch.last then return {0, checkpoint} end
if checkpoint ~= batch.after then return {-1, checkpoint} end
for _, op in ipairs(batch.incr) do
  -- op: {key, {field, amount, field, amount, ...}}, no amount zero.
  local key, changes = prefix .. op[1], op[2]
  if redis.call('EXISTS', key) == 0 then
    -- A new hash (most minute buckets of a backfill): one HSET instead of an HINCRBY per
    -- field; the same hash either way.
    redis.call('HSET', key, unpack(changes))
  else
    for i = 1, #changes, 2 do
      -- A field back at zero is removed, so that "+1 then -1" over two batches leaves the
      -- same hash as both in one batch (where they cancel before reaching Redis).
      if redis.call('HINCRBY', key, changes[i], changes[i + 1]) == 0 then
        redis.call('HDEL', key, changes[i])
      end
    end
  end
end
-- Chunks of score/member pairs, one ZADD or ZREM each.
for _, chunk in ipairs(batch.zadd) do
  redis.call('ZADD', prefix .. 'ts', unpack(chunk))
end
for _, chunk in ipairs(batch.zrem) do
  redis.call('ZREM', prefix .. 'ts', unpack(chunk))
end
for _, op in ipairs(batch.hset) do
  redis.call('HSET', prefix .. op[1], op[2], op[3])
end
for _, op in ipairs(batch.widen) do
  local key = prefix .. op[1]
  local first = tonumber(redis.call('HGET', key, 'first') or '0')
  if first == 0 or op[2] < first then redis.call('HSET', key, 'first', op[2]) end
  local last = tonumber(redis.call('HGET', key, 'last') or '0')
  if op[3] > last then redis.call('HSET', key, 'last', op[3]) end
end
-- A withdrawn copy (revised or retracted) that was an owner's first or last: the owner's
-- nearest remaining message in the timestamp index takes its place, found by its tag
-- (members end in |PID|SID|HOSTID). An owner left without messages keeps neither.
local function tag_of(member, which)
  local tags = {string.match(member, '|([^|]*)|([^|]*)|([^|]*)$')}
  return tags[which]
end
-- Walks by rank, 256 members at a time: linear in the distance walked (LIMIT's offset
-- would make it quadratic).
local function nearest(which, tag, from, upward)
  local index = prefix .. 'ts'
  local edge
  if upward then
    edge = redis.call('ZRANGEBYSCORE', index, from, '+inf', 'LIMIT', 0, 1)
  else
    edge = redis.call('ZREVRANGEBYSCORE', index, from, '-inf', 'LIMIT', 0, 1)
  end
  if #edge == 0 then return nil end
  local rank = redis.call('ZRANK', index, edge[1])
  while true do
    local low, high = rank, rank + 255
    if not upward then low, high = math.max(rank - 255, 0), rank end
    local page = redis.call('ZRANGE', index, low, high, 'WITHSCORES')
    if #page == 0 then return nil end
    local first, last, step = 1, #page - 1, 2
    if not upward then first, last, step = #page - 1, 1, -2 end
    for i = first, last, step do
      if tag_of(page[i], which) == tag then return page[i + 1] end
    end
    if upward then rank = high + 1 elseif low == 0 then return nil else rank = low - 1 end
  end
end
for _, op in ipairs(batch.narrow) do
  -- op: {key, which tag (1 project, 2 session, 3 host), tag, withdrawn timestamp}
  local key, which, tag, withdrawn = prefix .. op[1], op[2], op[3], op[4]
  if tonumber(redis.call('HGET', key, 'n') or '0') <= 0 then
    redis.call('HDEL', key, 'first', 'last')
  else
    for field, upward in pairs({first = true, last = false}) do
      if tonumber(redis.call('HGET', key, field) or '0') == withdrawn then
        local found = nearest(which, tag, withdrawn, upward)
        -- Never nil while n > 0; HDEL rather than an error half-way through the batch.
        if found then redis.call('HSET', key, field, found) else redis.call('HDEL', key, field) end
      end
    end
  end
end
for _, op in ipairs(batch.index) do
  if tonumber(redis.call('HGET', prefix .. op[1], 'n') or '0') > 0 then
    redis.call('SADD', prefix .. op[2], op[3])
  else
    redis.call('SREM', prefix .. op[2], op[3])
  end
end
for _, model in ipairs(batch.unpriced) do
  if tonumber(redis.call('HGET', prefix .. 'unpriced', model) or '0') <= 0 then
    redis.call('HDEL', prefix .. 'unpriced', model)
  end
end
redis.call('SET', prefix .. 'cp', batch.last)
return {1, batch.last}
"""

# Sums the buckets of each group of keys; returns, per group, the SUM_FIELDS values and,
# when ARGV[1] is '1', the per-model fields as a flat field/value list.
_SUM_GROUPS = """
local prefix = KEYS[1]
local with_models = ARGV[1] == '1'
local groups = cjson.decode(ARGV[2])
local out = {}
for gi, group in ipairs(groups) do
  local sums = {i = 0, o = 0, cc = 0, cr = 0, n = 0, c = 0}
  local models = {}
  for _, suffix in ipairs(group) do
    if with_models then
      local flat = redis.call('HGETALL', prefix .. suffix)
      for k = 1, #flat, 2 do
        local f, v = flat[k], tonumber(flat[k + 1])
        if sums[f] ~= nil then
          sums[f] = sums[f] + v
        elseif string.find(f, '|', 1, true) then
          models[f] = (models[f] or 0) + v
        end
      end
    else
      -- Only the six totals: a full minute bucket also holds every model's fields.
      local values = redis.call('HMGET', prefix .. suffix, 'i', 'o', 'cc', 'cr', 'n', 'c')
      sums.i = sums.i + (tonumber(values[1]) or 0)
      sums.o = sums.o + (tonumber(values[2]) or 0)
      sums.cc = sums.cc + (tonumber(values[3]) or 0)
      sums.cr = sums.cr + (tonumber(values[4]) or 0)
      sums.n = sums.n + (tonumber(values[5]) or 0)
      sums.c = sums.c + (tonumber(values[6]) or 0)
    end
  end
  local row = {sums.i, sums.o, sums.cc, sums.cr, sums.n, sums.c}
  if with_models then
    for f, v in pairs(models) do
      table.insert(row, f)
      table.insert(row, v)
    end
  end
  out[gi] = row
end
return out
"""

# Walks the windows forward through the message timestamps: each next window starts at
# the first message more than 5 h after the current start (a gap of more than 5 h after
# the previous message implies that too). One O(log n) lookup per window.
_LAST_WINDOW = """
local prefix = KEYS[1]
local align_hour = ARGV[1] == 'hour'
local length = 5 * 3600 * 1000
local first = redis.call('ZRANGE', prefix .. 'ts', 0, 0, 'WITHSCORES')
if #first == 0 then return {} end
local function start_of(ts)
  if align_hour then return ts - (ts % 3600000) end
  return ts
end
local first_ts = tonumber(first[2])
local start = start_of(first_ts)
while true do
  local nxt = redis.call('ZRANGEBYSCORE', prefix .. 'ts', '(' .. (start + length), '+inf',
                         'WITHSCORES', 'LIMIT', 0, 1)
  if #nxt == 0 then break end
  first_ts = tonumber(nxt[2])
  start = start_of(first_ts)
end
local last = redis.call('ZRANGE', prefix .. 'ts', -1, -1, 'WITHSCORES')
return {tostring(start), tostring(first_ts), tostring(last[2])}
"""


class Contribution(NamedTuple):
    """What one event adds to (sign +1) or takes from (sign -1) the read models.

    A NamedTuple, not a frozen dataclass: just as immutable, and built three times faster
    (a frozen dataclass sets each field through ``object.__setattr__``), once per event on
    the ingest path."""

    sign: int
    timestamp_ms: int
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    messages: int
    cost_nanos: int
    session_id: str
    project_path: str
    member: str  # MESSAGE|REQUEST: with its owners' ids, its timestamp index member
    unpriced: bool
    host: str


def project_id(project_path: str) -> int:
    """A stable id for a project path: 52 bits of its hash, exact in a JavaScript number."""
    return int(hashlib.blake2b(project_path.encode(), digest_size=8).hexdigest()[:13], 16)


def client() -> Any:
    """The shared client (decoded strings; redis-py's types cannot express that)."""
    return _client(settings.REDIS_URL)


@lru_cache(maxsize=4)
def _client(url: str) -> Any:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def user_prefix(user_id: int, layout: str = LAYOUT_VERSION) -> str:
    return f"{settings.USAGE_REDIS_PREFIX}:{layout}:{{u:{user_id}}}:"


def checkpoint(user_id: int) -> int | None:
    """The last applied position, or None when Redis has no projection for the user
    (flushed, restarted without persistence, or never built)."""
    value = client().get(user_prefix(user_id) + "cp")
    return None if value is None else int(value)


def checkpoints(user_ids: Sequence[int]) -> dict[int, int]:
    """Checkpoints of many users in one round trip (a pipeline: keys live in other slots)."""
    pipe = client().pipeline(transaction=False)
    for user_id in user_ids:
        pipe.get(user_prefix(user_id) + "cp")
    return {
        user_id: int(value)
        for user_id, value in zip(user_ids, pipe.execute(), strict=True)
        if value is not None
    }


def apply(
    user_id: int, events: Sequence[tuple[int, Sequence[Contribution]]], *, after: int
) -> int | None:
    """Apply ``events``, which must be all of the user's events after position ``after``,
    in one atomic step. Returns the new checkpoint; the unchanged one when they were already
    applied; None when the checkpoint is not ``after`` (a gap or a race: re-read from it)."""
    if not events:
        return after
    last = events[-1][0]
    status, current = _run_apply(user_id, events, after=after, last=last)
    if status < 0 and after < current < last:
        # Part of the batch is already in (a concurrent catch-up read fewer events):
        # apply the rest, which starts right after it.
        rest = [(position, c) for position, c in events if position > current]
        status, current = _run_apply(user_id, rest, after=current, last=last)
    return None if status < 0 else current


def _run_apply(
    user_id: int, events: Sequence[tuple[int, Sequence[Contribution]]], *, after: int, last: int
) -> tuple[int, int]:
    batch = _aggregate(events)
    batch.update(after=after, last=last)
    status, checkpoint_now = _script(_APPLY)(
        keys=[user_prefix(user_id)], args=[orjson.dumps(batch)]
    )
    return int(status), int(checkpoint_now)


@lru_cache(maxsize=8)
def _script_for(url: str, source: str) -> Any:
    return _client(url).register_script(source)


def _script(source: str) -> Any:
    """A registered script, hashed once per process rather than on every call."""
    return _script_for(settings.REDIS_URL, source)


def _aggregate(events: Sequence[tuple[int, Sequence[Contribution]]]) -> dict[str, Any]:
    """One batch's effect, summed: increments per (key, field), the final state of each
    message in the timestamp index, and which index sets to re-check.

    Contributions are first summed per (minute, model, project, session, host): a batch
    of a thousand messages touches a few dozen such cells, so the expansion into Redis
    fields below runs per cell, not per message."""
    cells: dict[tuple[int, str, str, str, str, bool], list[int]] = {}
    spans: dict[tuple[str, str, str], tuple[int, int]] = {}
    indexed: dict[str, int | None] = {}
    owners: dict[tuple[str, str, str], tuple[str, str, str]] = {}  # -> their ids, once
    tags: dict[tuple[str, str, str], str] = {}
    withdrawn: dict[tuple[tuple[str, str, str], int], None] = {}  # an ordered set
    for _, contributions in events:
        for c in contributions:
            ts = c.timestamp_ms
            cell = (ts // 60_000, c.model, c.project_path, c.session_id, c.host, c.unpriced)
            sums = cells.get(cell)
            if sums is None:
                sums = cells[cell] = [0, 0, 0, 0, 0, 0, 0]
            sign = c.sign
            sums[0] += sign * c.input_tokens
            sums[1] += sign * c.output_tokens
            sums[2] += sign * c.cache_creation_tokens
            sums[3] += sign * c.cache_read_tokens
            sums[4] += sign * c.messages
            sums[5] += sign * c.cost_nanos
            sums[6] += sign  # unpriced events
            owner = (c.project_path, c.session_id, c.host)
            tag = tags.get(owner)
            if tag is None:
                ids = owners[owner] = _owner_ids(*owner)
                tag = tags[owner] = "|" + "|".join(ids)
            indexed[c.member + tag] = ts if sign > 0 else None
            if sign > 0:
                low, high = spans.get(owner, (ts, ts))
                spans[owner] = (min(low, ts), max(high, ts))
            else:
                withdrawn[(owner, ts)] = None
    batch = _expand(cells, spans, owners)
    batch["narrow"] = [
        [key, which, owners[owner][which - 1], ts]
        for owner, ts in withdrawn
        for which, key in enumerate(_owner_keys(owner, owners[owner]), 1)
    ]
    added = [item for member, ts in indexed.items() if ts is not None for item in (ts, member)]
    removed = [member for member, ts in indexed.items() if ts is None]
    batch["zadd"] = _chunks(added, UNPACK_LIMIT)
    batch["zrem"] = _chunks(removed, UNPACK_LIMIT)
    return batch


def _expand(
    cells: dict[tuple[int, str, str, str, str, bool], list[int]],
    spans: dict[tuple[str, str, str], tuple[int, int]],
    owners: dict[tuple[str, str, str], tuple[str, str, str]],
) -> dict[str, Any]:
    """Cells -> the Redis fields they move: each key's sums are added up first (a vector per
    key), then turned into one increment per non-zero field.

    Rolled up in steps rather than cell by cell into every key: cells into (minute, model)
    and into (project, session, host); minutes into hours and the total; a key's own sums
    from its models' sums. A backfill's batch has about one cell per message (its messages
    are minutes apart), so what is done per cell counts."""
    per_minute: dict[tuple[int, str], list[int]] = {}
    per_owner: dict[tuple[str, str, str], list[int]] = {}
    unpriced: dict[str, int] = {}
    for (minute, model, path, session, host, is_unpriced), sums in cells.items():
        _add(per_minute, (minute, model), sums)
        _add(per_owner, (path, session, host), sums)
        if is_unpriced:
            unpriced[model] = unpriced.get(model, 0) + sums[6]
    by_model_key: dict[tuple[str, str], list[int]] = {}
    for (minute, model), sums in per_minute.items():
        seconds = minute * 60
        by_model_key[(f"m:{seconds}", model)] = sums  # each (minute, model) once
        _add(by_model_key, (f"h:{seconds - seconds % 3600}", model), sums)
        _add(by_model_key, ("tot", model), sums)
    by_key: dict[str, list[int]] = {}
    for (key, _), sums in by_model_key.items():
        _add(by_key, key, sums)
    index: dict[str, tuple[str, str]] = {}
    for owner, sums in per_owner.items():
        host = owner[2]
        pid, sid, _ = ids = owners[owner]
        for key in _owner_keys(owner, ids):
            _add(by_key, key, sums)
        index[f"s:{sid}"] = (f"p:{pid}:sessions", sid)
        index[f"p:{pid}"] = ("projects", pid)
        index[f"host:{host}"] = ("hosts", host)
    # Per key: [field, amount, field, amount, ...] (the Lua script's op), zeros left out.
    changes: dict[str, list[str | int]] = {}
    for key, sums in by_key.items():
        changes[key] = [
            item
            for name, value in zip(SUM_FIELDS, sums, strict=False)
            if value
            for item in (name, value)
        ]
    model_fields: dict[str, tuple[str, ...]] = {}  # "i|MODEL", ...: built once per model
    for (key, model), sums in by_model_key.items():
        names = model_fields.get(model)
        if names is None:
            names = model_fields[model] = tuple(f"{name}|{model}" for name in SUM_FIELDS)
        changes[key] += [
            item
            for name, value in zip(names, sums, strict=False)
            if value
            for item in (name, value)
        ]
    changes["unpriced"] = [
        item for model, count in unpriced.items() if count for item in (model, count)
    ]
    increments = [[key, fields] for key, fields in changes.items() if fields]
    fields: dict[tuple[str, str], str] = {}
    widen = []
    for owner, (low, high) in spans.items():
        path, session, _ = owner
        pid, sid, _ = ids = owners[owner]
        fields[(f"p:{pid}", "path")] = path
        fields[(f"s:{sid}", "session")] = session
        fields[(f"s:{sid}", "pid")] = pid
        widen += [[key, low, high] for key in _owner_keys(owner, ids)]
    return {
        "incr": increments,
        "hset": [[key, field, value] for (key, field), value in fields.items()],
        "widen": widen,
        "index": [[key, set_key, member] for key, (set_key, member) in index.items()],
        "unpriced": sorted(unpriced),
    }


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _add(sums_by_key: dict[Any, list[int]], key: Any, sums: list[int]) -> None:
    current = sums_by_key.get(key)
    if current is None:
        sums_by_key[key] = sums[:6]
    else:  # unrolled: a loop over range(6) took twice as long, and this runs per cell
        current[0] += sums[0]
        current[1] += sums[1]
        current[2] += sums[2]
        current[3] += sums[3]
        current[4] += sums[4]
        current[5] += sums[5]


def reset_checkpoint(user_id: int) -> None:
    """Marks an empty, fully built projection (a user with no events yet)."""
    client().set(user_prefix(user_id) + "cp", 0, nx=True)


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


def drop_all() -> None:
    for layout in (LAYOUT_VERSION, *OLD_LAYOUT_VERSIONS):
        _delete_matching(f"{glob_escape(settings.USAGE_REDIS_PREFIX)}:{layout}:*")


def _delete_matching(pattern: str) -> None:
    r = client()
    keys = list(r.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        r.delete(*keys[start : start + 500])


def sum_groups(
    user_id: int, groups: Sequence[Sequence[str]], *, with_models: bool = False
) -> list[tuple[Bucket, dict[str, Bucket]]]:
    """Sum the buckets named in each group (key suffixes such as ``m:1728144000``)."""
    rows = _script(_SUM_GROUPS)(
        keys=[user_prefix(user_id)], args=["1" if with_models else "0", orjson.dumps(groups)]
    )
    return [(_bucket(row[:6]), _model_buckets(row[6:])) for row in rows]


def totals(user_id: int) -> tuple[Bucket, dict[str, Bucket]]:
    return sum_groups(user_id, [["tot"]], with_models=True)[0]


def last_window(user_id: int, align: str) -> tuple[int, int, int] | None:
    """(start, first message, last message) in epoch ms of the user's latest window."""
    found = _script(_LAST_WINDOW)(keys=[user_prefix(user_id)], args=[align])
    if not found:
        return None
    start, first, last = (int(float(value)) for value in found)
    return start, first, last


def messages_between(user_id: int, start_ms: int, end_ms: int) -> int:
    """How many counted messages have a timestamp in [start_ms, end_ms)."""
    return int(client().zcount(user_prefix(user_id) + "ts", start_ms, f"({end_ms}"))


def projects(user_id: int) -> list[dict[str, str]]:
    r = client()
    prefix = user_prefix(user_id)
    ids = sorted(r.smembers(prefix + "projects"))
    pipe = r.pipeline(transaction=False)
    for pid in ids:
        pipe.hgetall(prefix + "p:" + pid)
        pipe.scard(prefix + "p:" + pid + ":sessions")
    replies = pipe.execute()
    out = []
    for pid, fields, sessions in zip(ids, replies[::2], replies[1::2], strict=True):
        if fields:
            out.append({**fields, "id": pid, "sessions": str(sessions)})
    return out


def sessions(user_id: int, pid: int | str) -> list[dict[str, str]]:
    r = client()
    prefix = user_prefix(user_id)
    sids = sorted(r.smembers(f"{prefix}p:{pid}:sessions"))
    pipe = r.pipeline(transaction=False)
    for sid in sids:
        pipe.hgetall(prefix + "s:" + sid)
    return [fields for fields in pipe.execute() if fields]


def hosts(user_id: int) -> list[dict[str, str]]:
    r = client()
    prefix = user_prefix(user_id)
    names = sorted(r.smembers(prefix + "hosts"))
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(prefix + "host:" + name)
    return [{**fields, "host": name} for name, fields in zip(names, pipe.execute(), strict=True)]


def session_count(user_id: int) -> int:
    r = client()
    prefix = user_prefix(user_id)
    pipe = r.pipeline(transaction=False)
    for pid in r.smembers(prefix + "projects"):
        pipe.scard(prefix + "p:" + pid + ":sessions")
    return sum(pipe.execute())


def project_count(user_id: int) -> int:
    return int(client().scard(user_prefix(user_id) + "projects"))


def unpriced_models(user_id: int) -> list[str]:
    return sorted(client().hkeys(user_prefix(user_id) + "unpriced"))


def _bucket(values: Sequence[int]) -> Bucket:
    return Bucket(*(int(v) for v in values))


def _model_buckets(flat: Sequence[Any]) -> dict[str, Bucket]:
    by_model: dict[str, dict[str, int]] = {}
    for field, value in zip(flat[::2], flat[1::2], strict=True):
        name, _, model = str(field).partition("|")
        by_model.setdefault(model, {})[name] = int(value)
    return {
        model: _bucket([values.get(name, 0) for name in SUM_FIELDS])
        for model, values in by_model.items()
    }


def _owner_ids(path: str, session: str, host: str) -> tuple[str, str, str]:
    """The ids of a message's project, session and host, as its timestamp index member
    ends with them."""
    return str(project_id(path)), _short_id(path + "\0" + session), _short_id(host)


def _owner_keys(owner: tuple[str, str, str], ids: tuple[str, str, str]) -> tuple[str, str, str]:
    """The project's, session's and host's hash (the host's is named, not hashed)."""
    return f"p:{ids[0]}", f"s:{ids[1]}", f"host:{owner[2]}"


def _short_id(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
