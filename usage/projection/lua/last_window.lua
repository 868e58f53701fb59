-- The user's latest 5-hour window. Windows follow each other through the message
-- timestamps: the next one starts at the first message more than 5 h after the current
-- start (a gap of more than 5 h after the previous message implies that too), one
-- O(log n) lookup per window. The walk starts from the anchor (win:ALIGN: the start and
-- first message of a window found before, which lua/apply.lua deletes when a change could
-- move it), else from the first message, and takes at most ARGV[2] steps per call: a long
-- history is walked once, in several short calls, and the anchor keeps what was walked.
-- KEYS[1]: the user's key prefix. ARGV[1]: 'hour' to floor a window's start to the hour,
-- or 'exact'. ARGV[2]: the most windows to walk in this call.
-- Returns {start, first message, last message} in epoch ms; {} without messages; {'more'}
-- when the walk goes on in the next call.
local prefix = KEYS[1]
local align_hour = ARGV[1] == 'hour'
local steps = tonumber(ARGV[2])
local anchor_key = prefix .. 'win:' .. ARGV[1]
local index = prefix .. 'ts'
local length = 5 * 3600 * 1000
local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', anchor_key)
  return {}
end
local function start_of(ts)
  if align_hour then return ts - (ts % 3600000) end
  return ts
end
local start, first_ts
local anchor = redis.call('HMGET', anchor_key, 'start', 'first')
if anchor[1] and anchor[2] then
  start, first_ts = tonumber(anchor[1]), tonumber(anchor[2])
else
  first_ts = tonumber(redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')[2])
  start = start_of(first_ts)
end
for _ = 1, steps do
  local nxt = redis.call('ZRANGEBYSCORE', index, '(' .. (start + length), '+inf',
                         'WITHSCORES', 'LIMIT', 0, 1)
  if #nxt == 0 then
    redis.call('HSET', anchor_key, 'start', start, 'first', first_ts)
    return {tostring(start), tostring(first_ts), tostring(last[2])}
  end
  first_ts = tonumber(nxt[2])
  start = start_of(first_ts)
end
redis.call('HSET', anchor_key, 'start', start, 'first', first_ts)
return {'more'}
