-- The user's latest 5-hour window: walks the windows forward through the message timestamps;
-- each next window starts at the first message more than 5 h after the current start (a gap
-- of more than 5 h after the previous message implies that too). One O(log n) lookup per
-- window.
-- KEYS[1]: the user's key prefix. ARGV[1]: 'hour' to floor a window's start to the hour.
-- Returns {start, first message, last message} in epoch ms, or {} without messages.
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
