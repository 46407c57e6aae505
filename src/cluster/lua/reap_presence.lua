-- Removes presence members whose expiry passed.
--
-- KEYS: [1] presence zset, [2] presence info hash.
-- ARGV: [1] now ms.
-- Returns the removed members' {session, info} pairs, flattened; a member is returned by
-- exactly one caller however many nodes reap at once.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, s in ipairs(gone) do
  redis.call('ZREM', KEYS[1], s)
  local info = redis.call('HGET', KEYS[2], s)
  redis.call('HDEL', KEYS[2], s)
  table.insert(out, s)
  table.insert(out, info or '{}')
end
return out
