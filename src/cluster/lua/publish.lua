-- The publish script. Atomically: de-duplicates by msg_id, takes the topic's epoch
-- (creating it on first use), assigns the next offset, appends to the history stream
-- (trimmed by count, and by age from the oldest end), sets or clears the retained message
-- and publishes on the topic's channel.
--
-- KEYS: [1] offset, [2] epoch, [3] history, [4] retained, [5] dedup (the offset key again
-- without a msg_id).
-- ARGV: [1] channel, [2] data, [3] msg_id, [4] reply_to, [5] retain flag, [6] history count,
-- [7] dedup window ms, [8] epoch candidate, [9] ts ms, [10] history ttl ms (0: none).
-- Returns {new 0|1, offset, epoch, receivers}.
local msgid = ARGV[3]
local dedup = msgid ~= '' and tonumber(ARGV[7]) > 0
local ep = redis.call('GET', KEYS[2])
if dedup and ep then
  local prev = redis.call('GET', KEYS[5])
  if prev then return {0, tonumber(prev), ep, 0} end
end
if not ep then
  ep = ARGV[8]
  redis.call('SET', KEYS[2], ep)
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
end
local off = redis.call('INCR', KEYS[1])
if dedup then redis.call('SET', KEYS[5], off, 'PX', ARGV[7]) end
local p = ARGV[5] .. ' ' .. off .. ' ' .. ARGV[9] .. ' ' .. ep .. ' ' .. #msgid .. ' ' .. #ARGV[4] .. ' ' .. msgid .. ARGV[4] .. ARGV[2]
local keep = tonumber(ARGV[6])
if keep > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', keep, off .. '-0', 'p', p)
  local ttl = tonumber(ARGV[10])
  if ttl > 0 then
    local cutoff = tonumber(ARGV[9]) - ttl
    for _ = 1, 64 do
      local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
      if #first == 0 then break end
      local _, _, ts = string.find(first[1][2][2], '^%S+ %S+ (%d+)')
      if tonumber(ts) >= cutoff then break end
      redis.call('XDEL', KEYS[3], first[1][1])
    end
  end
else
  redis.call('DEL', KEYS[3])
end
if ARGV[5] == 'r' then
  redis.call('SET', KEYS[4], p)
elseif ARGV[5] == 'c' then
  redis.call('DEL', KEYS[4])
end
local n = redis.call('PUBLISH', ARGV[1], p)
return {1, off, ep, n}
