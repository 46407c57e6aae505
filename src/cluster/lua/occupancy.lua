-- Cluster-wide occupancy of one subscription pattern: a sorted set of the nodes that have
-- subscribers to it, scored by when each node's entry expires (its node refreshes it).
--
-- KEYS: [1] the pattern's set of nodes; for `forget`, the index of patterns.
-- ARGV: [1] the operation, then:
--   join   [2] node, [3] expiry ms: adds or refreshes the node's entry. Returns 1 when the
--          pattern had no entry (this call occupied it), 2 when the node's entry was its
--          only one already, 0 otherwise.
--   leave  [2] node, [3] now ms: removes the node's entry and the expired ones. Returns 1
--          when that emptied the pattern (this call vacated it), 2 when the node had no
--          entry and none is left, 0 when live entries remain.
--   reap   [2] now ms: removes the expired entries. Returns 1 when that emptied the pattern
--          (its nodes died: exactly one caller sees the 1), -1 when it was empty already,
--          0 when live entries remain.
--   forget [2] pattern, [3] now ms: takes the pattern out of the index if its expiry there
--          passed (a node that refreshed it meanwhile keeps it in). Returns 1 if removed.
local op = ARGV[1]
if op == 'join' then
  local n = redis.call('ZCARD', KEYS[1])
  local mine = redis.call('ZSCORE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  if n == 0 then return 1 end
  if mine and n == 1 then return 2 end
  return 0
elseif op == 'leave' then
  local removed = redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
  if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
  if removed == 1 then return 1 end
  return 2
elseif op == 'reap' then
  local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
  if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
  if removed > 0 then return 1 end
  return -1
elseif op == 'forget' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if s and tonumber(s) <= tonumber(ARGV[3]) then
    return redis.call('ZREM', KEYS[1], ARGV[2])
  end
  return 0
end
return redis.error_reply('unknown occupancy operation ' .. tostring(op))
