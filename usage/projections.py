"""Redis read models and their checkpoint. The only module that talks to Redis.

Layout, per user (the ``{u:ID}`` hash tag keeps a user's keys in one Redis Cluster slot,
which the Lua scripts need):

    PREFIX:v1:{u:ID}:cp              last applied log position (the checkpoint)
    PREFIX:v1:{u:ID}:m:MINUTE        per-minute bucket hash (MINUTE = epoch seconds)
    PREFIX:v1:{u:ID}:h:HOUR          per-hour rollup of the same
    PREFIX:v1:{u:ID}:tot             totals over all retained events
    PREFIX:v1:{u:ID}:ts              sorted set: counted message -> timestamp (ms), for windows
    PREFIX:v1:{u:ID}:projects        set of project ids;   ...:p:ID  project hash
    PREFIX:v1:{u:ID}:p:ID:sessions   set of session ids;   ...:s:ID  session hash
    PREFIX:v1:{u:ID}:hosts           set of host names;    ...:host:NAME  host hash
    PREFIX:v1:{u:ID}:unpriced        model -> events that had no price

Bucket fields: ``i`` ``o`` ``cc`` ``cr`` (the four token types), ``n`` (messages), ``c``
(cost, nanodollars), and the same per model as ``FIELD|MODEL``.

Every change is applied by one Lua script that also moves the checkpoint, so a read never
sees an event half applied, and an event at or below the checkpoint is skipped (applying
twice is a no-op).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings

LAYOUT_VERSION = "v1"
TOKEN_FIELDS = ("i", "o", "cc", "cr")
SUM_FIELDS = (*TOKEN_FIELDS, "n", "c")

_APPLY = """
local prefix = KEYS[1]
local batch = cjson.decode(ARGV[1])
local checkpoint = tonumber(redis.call('GET', prefix .. 'cp') or '0')
local applied = 0
local fields = {'i', 'o', 'cc', 'cr', 'n', 'c'}

local function add(key, values, sign, model)
  for _, f in ipairs(fields) do
    local v = values[f] * sign
    if v ~= 0 then
      redis.call('HINCRBY', key, f, v)
      if model then redis.call('HINCRBY', key, f .. '|' .. model, v) end
    end
  end
end

local function widen(key, ts)
  local first = tonumber(redis.call('HGET', key, 'first') or '0')
  if first == 0 or ts < first then redis.call('HSET', key, 'first', ts) end
  local last = tonumber(redis.call('HGET', key, 'last') or '0')
  if ts > last then redis.call('HSET', key, 'last', ts) end
end

local function drop_if_empty(key, set_key, member)
  if tonumber(redis.call('HGET', key, 'n') or '0') <= 0 then
    redis.call('DEL', key)
    redis.call('SREM', set_key, member)
    return true
  end
  return false
end

for _, event in ipairs(batch) do
  if event.p > checkpoint then
    for _, d in ipairs(event.d) do
      local s = d.s
      add(prefix .. 'm:' .. d.minute, d, s, d.model)
      add(prefix .. 'h:' .. d.hour, d, s, d.model)
      add(prefix .. 'tot', d, s, d.model)
      local pkey = prefix .. 'p:' .. d.pid
      local skey = prefix .. 's:' .. d.sid
      local hkey = prefix .. 'host:' .. d.host
      add(pkey, d, s, nil)
      add(skey, d, s, nil)
      add(hkey, d, s, nil)
      if s > 0 then
        redis.call('SADD', prefix .. 'hosts', d.host)
        widen(hkey, d.ts)
        redis.call('ZADD', prefix .. 'ts', d.ts, d.member)
        redis.call('SADD', prefix .. 'projects', d.pid)
        redis.call('HSET', pkey, 'path', d.path)
        widen(pkey, d.ts)
        redis.call('SADD', pkey .. ':sessions', d.sid)
        redis.call('HSET', skey, 'session', d.session, 'pid', d.pid)
        widen(skey, d.ts)
        if d.unpriced == 1 then redis.call('HINCRBY', prefix .. 'unpriced', d.model, 1) end
      else
        redis.call('ZREM', prefix .. 'ts', d.member)
        drop_if_empty(skey, pkey .. ':sessions', d.sid)
        drop_if_empty(hkey, prefix .. 'hosts', d.host)
        if drop_if_empty(pkey, prefix .. 'projects', d.pid) then
          redis.call('DEL', pkey .. ':sessions')
        end
        if d.unpriced == 1 then
          if redis.call('HINCRBY', prefix .. 'unpriced', d.model, -1) <= 0 then
            redis.call('HDEL', prefix .. 'unpriced', d.model)
          end
        end
      end
    end
    checkpoint = event.p
    applied = applied + 1
  end
end
redis.call('SET', prefix .. 'cp', checkpoint)
return {applied, checkpoint}
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
    local flat = redis.call('HGETALL', prefix .. suffix)
    for k = 1, #flat, 2 do
      local f, v = flat[k], tonumber(flat[k + 1])
      if sums[f] ~= nil then
        sums[f] = sums[f] + v
      elseif with_models and string.find(f, '|', 1, true) then
        models[f] = (models[f] or 0) + v
      end
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


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one event adds to (sign +1) or takes from (sign -1) the read models."""

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
    member: str  # identifies the counted message in the timestamp index
    unpriced: bool
    host: str

    def as_lua(self) -> dict[str, Any]:
        seconds = self.timestamp_ms // 1000
        return {
            "s": self.sign,
            "minute": seconds - seconds % 60,
            "hour": seconds - seconds % 3600,
            "model": self.model,
            "i": self.input_tokens,
            "o": self.output_tokens,
            "cc": self.cache_creation_tokens,
            "cr": self.cache_read_tokens,
            "n": self.messages,
            "c": self.cost_nanos,
            "ts": self.timestamp_ms,
            "member": self.member,
            "session": self.session_id,
            "sid": _short_id(self.project_path + "\0" + self.session_id),
            "pid": str(project_id(self.project_path)),  # Lua would print a float
            "path": self.project_path,
            "unpriced": 1 if self.unpriced else 0,
            "host": self.host,
        }


@dataclass(frozen=True, slots=True)
class Bucket:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    messages: int = 0
    cost_nanos: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )

    @property
    def input_output_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def project_id(project_path: str) -> int:
    """A stable id for a project path: 52 bits of its hash, exact in a JavaScript number."""
    return int(hashlib.blake2b(project_path.encode(), digest_size=8).hexdigest()[:13], 16)


def client() -> Any:
    """The shared client (decoded strings; redis-py's types cannot express that)."""
    return _client(settings.REDIS_URL)


@lru_cache(maxsize=4)
def _client(url: str) -> Any:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def user_prefix(user_id: int) -> str:
    return f"{settings.USAGE_REDIS_PREFIX}:{LAYOUT_VERSION}:{{u:{user_id}}}:"


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


def apply(user_id: int, events: Sequence[tuple[int, Sequence[Contribution]]]) -> int:
    """Apply ``(position, contributions)`` pairs in one atomic step; returns the checkpoint."""
    batch = [
        {"p": position, "d": [c.as_lua() for c in contributions]}
        for position, contributions in events
    ]
    script = client().register_script(_APPLY)
    _, new_checkpoint = script(keys=[user_prefix(user_id)], args=[json.dumps(batch)])
    return int(new_checkpoint)


def reset_checkpoint(user_id: int) -> None:
    """Marks an empty, fully built projection (a user with no events yet)."""
    client().set(user_prefix(user_id) + "cp", 0, nx=True)


def drop_user(user_id: int) -> None:
    """Delete every key of the user's projection (before a rebuild)."""
    r = client()
    keys = list(r.scan_iter(match=_glob_escape(user_prefix(user_id)) + "*", count=1000))
    for start in range(0, len(keys), 500):
        r.delete(*keys[start : start + 500])


def drop_all() -> None:
    r = client()
    pattern = f"{_glob_escape(settings.USAGE_REDIS_PREFIX)}:{LAYOUT_VERSION}:*"
    keys = list(r.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        r.delete(*keys[start : start + 500])


def sum_groups(
    user_id: int, groups: Sequence[Sequence[str]], *, with_models: bool = False
) -> list[tuple[Bucket, dict[str, Bucket]]]:
    """Sum the buckets named in each group (key suffixes such as ``m:1728144000``)."""
    script = client().register_script(_SUM_GROUPS)
    rows = script(
        keys=[user_prefix(user_id)], args=["1" if with_models else "0", json.dumps(groups)]
    )
    return [(_bucket(row[:6]), _model_buckets(row[6:])) for row in rows]


def totals(user_id: int) -> tuple[Bucket, dict[str, Bucket]]:
    return sum_groups(user_id, [["tot"]], with_models=True)[0]


def last_window(user_id: int, align: str) -> tuple[int, int, int] | None:
    """(start, first message, last message) in epoch ms of the user's latest window."""
    script = client().register_script(_LAST_WINDOW)
    found = script(keys=[user_prefix(user_id)], args=[align])
    if not found:
        return None
    start, first, last = (int(float(value)) for value in found)
    return start, first, last


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


def snapshot(user_id: int) -> dict[str, dict[str, str] | str | list[str] | set[str]]:
    """Every key of the user's projection with its value: for tests and diagnostics."""
    r = client()
    prefix = user_prefix(user_id)
    out: dict[str, dict[str, str] | str | list[str] | set[str]] = {}
    for key in sorted(r.scan_iter(match=_glob_escape(prefix) + "*", count=1000)):
        kind = r.type(key)
        name = key[len(prefix) :]
        if kind == "hash":
            out[name] = r.hgetall(key)
        elif kind == "set":
            out[name] = r.smembers(key)
        elif kind == "zset":
            out[name] = [f"{m}@{int(s)}" for m, s in r.zrange(key, 0, -1, withscores=True)]
        else:
            out[name] = r.get(key) or ""
    return out


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


def _short_id(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
