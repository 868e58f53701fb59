-- Applies one batch: all of a user's events in (after, last], summed in Python into
-- increments and set/index changes (usage/projection/redis_store.py builds the batch).
-- All or nothing: the checkpoint must still be `after` (else another writer got there
-- first, and the caller re-reads from the checkpoint). Hashes are never deleted, only taken
-- out of their index set while empty, so the result does not depend on how the log was
-- split into batches.
-- KEYS[1]: the user's key prefix. ARGV[1]: the batch as JSON.
-- Returns {status, checkpoint}: status 1 applied, 0 already applied, -1 refused.
local prefix = KEYS[1]
local batch = cjson.decode(ARGV[1])
local messages_field = batch.messages_field
-- The checkpoint is LOG:POSITION:EVENT (redis_store.Checkpoint).
local stored = redis.call('GET', prefix .. 'cp')
-- No checkpoint: the projection is lost or being dropped for a rebuild. Writing now would
-- leave keys that the rebuild then adds to a second time; the caller re-reads instead.
if not stored then return {-1, ''} end
local log, position = string.match(stored, '^([^:]*):(%d+):')
-- Another log's projection, or one left half-written: never added to.
if log ~= batch.log or not position then return {-1, stored} end
if tonumber(position) >= batch.last_position then return {0, stored} end
if stored ~= batch.after then return {-1, stored} end
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
  if count_of(key) <= 0 then
    redis.call('HDEL', key, 'first', 'last')
  else
    for field, upward in pairs({first = true, last = false}) do
      if tonumber(redis.call('HGET', key, field) or '0') == withdrawn then
        local found = nearest(which, tag, withdrawn, upward)
        -- Never nil while the owner has messages; HDEL rather than an error half-way.
        if found then redis.call('HSET', key, field, found) else redis.call('HDEL', key, field) end
      end
    end
  end
end
for _, op in ipairs(batch.index) do
  -- op: {owner hash, index set, member}: in the set while the owner has messages
  if count_of(prefix .. op[1]) > 0 then
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
