-- Moves a dead node's unacked group messages to the caller, part of its hash per call.
--
-- KEYS: [1] the dead node's liveness key, [2] its hash of unacked messages, [3] the
--       caller's hash, [4] the set of nodes.
-- ARGV: [1] the dead node's id, [2] HSCAN cursor ("0" to start), [3] cutoff ms: an entry
--       whose deadline is at or before it is taken whatever its group (nobody took it
--       within the session TTL: the caller dead-letters it), [4..] the group keys the
--       caller has members of (`<len>:<pattern><len>:<name>`, the start of each field).
-- Returns {next cursor, field, value, field, value, ...}: what was moved. Nothing while
-- the liveness key exists. Redis runs one script at a time, and a moved field is gone
-- from the dead node's hash, so each entry goes to exactly one caller. Once the cursor is
-- back at "0" and the hash is empty, the node leaves the set.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'0'}
end
local mine = {}
for i = 4, #ARGV do
  mine[ARGV[i]] = true
end
local cutoff = tonumber(ARGV[3])

-- The group key a field starts with: `<plen>:<pattern><nlen>:<name>`.
local function group_of(field)
  local c1 = string.find(field, ':', 1, true)
  if not c1 then return nil end
  local plen = tonumber(string.sub(field, 1, c1 - 1))
  if not plen then return nil end
  local c2 = string.find(field, ':', c1 + plen + 1, true)
  if not c2 then return nil end
  local nlen = tonumber(string.sub(field, c1 + plen + 1, c2 - 1))
  if not nlen then return nil end
  return string.sub(field, 1, c2 + nlen)
end

local scan = redis.call('HSCAN', KEYS[2], ARGV[2], 'COUNT', 256)
local out = {scan[1]}
local items = scan[2]
for i = 1, #items, 2 do
  local field, value = items[i], items[i + 1]
  local take = mine[group_of(field) or ''] == true
  if not take then
    local deadline = tonumber(string.match(value, '^%d+ (%d+) '))
    take = deadline ~= nil and deadline <= cutoff
  end
  if take and redis.call('HDEL', KEYS[2], field) == 1 then
    redis.call('HSET', KEYS[3], field, value)
    table.insert(out, field)
    table.insert(out, value)
  end
end
if scan[1] == '0' and redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
end
return out
