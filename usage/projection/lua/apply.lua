-- Applies one batch: all of a user's events in (after, last], summed in Python into
-- increments and set/index changes (usage/projection/redis_store.py builds the batch).
-- All or nothing: the checkpoint must still be `after` (else another writer got there
-- first, and the caller re-reads from the checkpoint). Hashes of buckets and owners are
-- deleted when nothing is left in them, and owners taken out of their index set, so the
-- result does not depend on how the log was split into batches.
-- Retention (batch.expire_epoch set) applies the contributions of events that just left
-- the log at or below `after`: the projection must be the same build (epoch) that stood
-- at `after` when they left; its checkpoint becomes `last` (the same position, naming an
-- event still in the log), or stays where a later ingest already moved it.
-- KEYS[1]: the user's key prefix. ARGV[1]: the batch as JSON.
-- Returns {status, checkpoint}: status 1 applied, 0 already applied, -1 refused.
local prefix = KEYS[1]
local batch = cjson.decode(ARGV[1])
local messages_field = batch.messages_field
local unpack_limit = batch.unpack_limit
-- The checkpoint is LOG:POSITION:EVENT (redis_store.Checkpoint).
local stored = redis.call('GET', prefix .. 'cp')
-- No checkpoint: the projection is lost or being dropped for a rebuild. Writing now would
-- leave keys that the rebuild then adds to a second time; the caller re-reads instead.
if not stored then return {-1, ''} end
local log, position = string.match(stored, '^([^:]*):(%d+):')
-- Another log's projection, or one left half-written: never added to.
if log ~= batch.log or not position then return {-1, stored} end
local final = batch.last
if batch.expire_epoch then
  if (redis.call('GET', prefix .. 'epoch') or '') ~= batch.expire_epoch then
    return {-1, stored}
  end
  if tonumber(position) > batch.after_position then
    final = stored
  elseif stored ~= batch.after then
    return {-1, stored}
  end
else
  if tonumber(position) >= batch.last_position then return {0, stored} end
  if stored ~= batch.after then return {-1, stored} end
end
-- Until the last write below, the checkpoint says "being written": should this script
-- fail half-way (Redis keeps what it already wrote), the projection reads as lost and is
-- rebuilt, never served nor added to again.
redis.call('SET', prefix .. 'cp', batch.log .. ':writing')

local function count_of(key)
  return tonumber(redis.call('HGET', key, messages_field) or '0')
end

for _, op in ipairs(batch.incr) do
  -- op: {key, {field, amount, field, amount, ...}}, no amount zero.
  local key, changes = prefix .. op[1], op[2]
  if redis.call('EXISTS', key) == 0 then
    -- A new hash (most minute buckets of a backfill): HSET instead of an HINCRBY per
    -- field, the same hash either way; in chunks, as unpack() puts every item on the
    -- C stack.
    for i = 1, #changes, unpack_limit do
      redis.call('HSET', key, unpack(changes, i, math.min(i + unpack_limit - 1, #changes)))
    end
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
-- The timestamp indexes (the user's and each owner's): {index, {score, member, ...}} and
-- {index, {member, ...}}, in chunks.
for _, op in ipairs(batch.zadd) do
  redis.call('ZADD', prefix .. op[1], unpack(op[2]))
end
for _, op in ipairs(batch.zrem) do
  redis.call('ZREM', prefix .. op[1], unpack(op[2]))
end
for _, op in ipairs(batch.hset) do
  redis.call('HSET', prefix .. op[1], op[2], op[3])
end
-- An owner's first and last message: its own index's ends, one lookup each, whatever the
-- order copies arrived in. An owner left without messages keeps neither.
for _, op in ipairs(batch.spans) do
  local key, index = prefix .. op[1], prefix .. op[2]
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('HDEL', key, 'first', 'last')
  else
    local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
    redis.call('HSET', key, 'first', first[2], 'last', last[2])
  end
end
-- The latest-window anchors (lua/last_window.lua) stand on the messages from their first
-- one on: a change at or before it may move every window after.
if batch.earliest then
  for _, align in ipairs(batch.aligns) do
    local anchor = redis.call('HGET', prefix .. 'win:' .. align, 'first')
    if anchor and batch.earliest <= tonumber(anchor) then
      redis.call('DEL', prefix .. 'win:' .. align)
    end
  end
end
for _, op in ipairs(batch.index) do
  -- op: {owner hash, index set, member}: in the set while the owner has messages; gone,
  -- names and all, once it has none
  if count_of(prefix .. op[1]) > 0 then
    redis.call('SADD', prefix .. op[2], op[3])
  else
    redis.call('SREM', prefix .. op[2], op[3])
    redis.call('DEL', prefix .. op[1])
  end
end
for _, model in ipairs(batch.unpriced) do
  if tonumber(redis.call('HGET', prefix .. 'unpriced', model) or '0') <= 0 then
    redis.call('HDEL', prefix .. 'unpriced', model)
  end
end
redis.call('SET', prefix .. 'cp', final)
return {1, final}
