-- The publish script: one call publishes a batch of messages, in order. Per message,
-- atomically: de-duplicates by msg_id, takes the topic's epoch (creating it on first use),
-- assigns the next offset, appends to the history stream (trimmed approximately by
-- count), sets or clears the retained message. Per topic, once per batch: trims history by
-- age, notes the topic in the topic set and publishes every new message of the batch on
-- the topic's channel as one payload (`<len>:<record>` repeated, see wire.rs).
--
-- KEYS: [1] topic set, [2] retained set, then 4 per topic: offset, epoch, history,
-- retained; then one de-duplication key per message that has a msg_id and a dedup window.
-- ARGV: [1] topics T, [2] messages N, [3] epoch candidate; then 8 per topic: name,
-- channel, history count, history ttl ms (0: none), dedup window ms, note (1: add to the
-- topic set), its message count when none of them can be a duplicate (0 otherwise:
-- such a topic takes all its offsets with one INCRBY), and its run ('' or, for a topic
-- whose messages can neither be duplicates nor touch the retained message, all of them
-- as the node wrote them: `<len>:n <ts> <rest>` repeated); then, for each run of a topic
-- with history, its messages again one per argument (`n <ts> <rest>`, stored as they
-- are); then 5 per message of the other topics (N in all): topic index (1-based),
-- msg_id, retain flag (n|r|c), ts ms, and the record's rest as the node wrote it:
-- `<len msg_id> <len reply_to> <msg_id><reply_to><data>`.
-- A run is published as it came, after `=<first offset> <epoch> `, and stored (with
-- history) as stream entries `q <item> e <epoch>`: no record is built per message, which
-- made the script most of Redis's time per publish (wire.rs). Other messages are stored
-- as `p <record>`.
-- Numbers are turned into text with string.format('%d'): Lua's own `..` of a number goes
-- through the C library's floating-point printf, which was a tenth of this script's time.
-- Returns T epochs, then 2 per topic: a run's first offset (0 without a run) and its
-- receivers, then 3 per message outside runs: new 0|1, offset, receivers.
local T, N = tonumber(ARGV[1]), tonumber(ARGV[2])
local topics, a = {}, 3
for t = 1, T do
  local k = 2 + 4 * (t - 1)
  topics[t] = {
    off = KEYS[k + 1], ep = KEYS[k + 2], hist = KEYS[k + 3], ret = KEYS[k + 4],
    name = ARGV[a + 1], chan = ARGV[a + 2], keep = tonumber(ARGV[a + 3]),
    ttl = tonumber(ARGV[a + 4]), window = tonumber(ARGV[a + 5]), note = ARGV[a + 6],
    plain = tonumber(ARGV[a + 7]), run = ARGV[a + 8], out = {}, firsts = {}, first = 0,
  }
  a = a + 8
end
-- The topic's epoch, created (with its offsets, history and retained message reset) on
-- first use.
local function epoch(tp)
  if not tp.epoch then
    local ep = redis.call('GET', tp.ep)
    if not ep then
      ep = ARGV[3]
      redis.call('SET', tp.ep, ep)
      redis.call('DEL', tp.off, tp.hist, tp.ret)
    end
    tp.epoch = ep
  end
end
for t = 1, T do
  local tp = topics[t]
  if tp.run ~= '' then
    epoch(tp)
    tp.first = redis.call('INCRBY', tp.off, tp.plain) - tp.plain + 1
    tp.out[1] = '=' .. string.format('%d', tp.first) .. ' ' .. tp.epoch .. ' '
    tp.out[2] = tp.run
    if tp.keep > 0 then
      for i = 0, tp.plain - 1 do
        a = a + 1
        redis.call('XADD', tp.hist, 'MAXLEN', '~', tp.keep,
          string.format('%d-0', tp.first + i), 'q', ARGV[a], 'e', tp.epoch)
      end
      tp.last_ts = tonumber(string.match(ARGV[a], '^%S+ (%d+)'))
    end
  end
end
local out, d = {}, 2 + 4 * T
for m = 1, N do
  local tp = topics[tonumber(ARGV[a + 1])]
  local msgid, flag, ts, rest = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  a = a + 5
  if not tp.epoch then epoch(tp) end
  local dkey = nil
  if msgid ~= '' and tp.window > 0 then
    d = d + 1
    dkey = KEYS[d]
  end
  local prev = dkey and redis.call('GET', dkey)
  local r = 3 * (m - 1)
  if prev then
    out[r + 1], out[r + 2], out[r + 3] = 0, tonumber(prev), 0
  else
    local off
    if tp.plain > 0 then
      if not tp.next then tp.next = redis.call('INCRBY', tp.off, tp.plain) - tp.plain end
      tp.next = tp.next + 1
      off = tp.next
    else
      off = redis.call('INCR', tp.off)
    end
    if dkey then redis.call('SET', dkey, off, 'PX', tp.window) end
    local offs = string.format('%d', off)
    local p = flag .. ' ' .. offs .. ' ' .. ts .. ' ' .. tp.epoch .. ' ' .. rest
    if tp.keep > 0 then
      redis.call('XADD', tp.hist, 'MAXLEN', '~', tp.keep, offs .. '-0', 'p', p)
    end
    if flag == 'r' then
      redis.call('SET', tp.ret, p)
      redis.call('SADD', KEYS[2], tp.name)
    elseif flag == 'c' then
      redis.call('DEL', tp.ret)
      redis.call('SREM', KEYS[2], tp.name)
    end
    tp.out[#tp.out + 1] = string.format('%d:', #p)
    tp.out[#tp.out + 1] = p
    tp.firsts[#tp.firsts + 1] = r + 3
    out[r + 1], out[r + 2], out[r + 3] = 1, off, 0
  end
end
local last_ts = N > 0 and tonumber(ARGV[a - 1]) or 0 -- the last message's ts
local receivers = {}
for t = 1, T do
  local tp = topics[t]
  if tp.keep == 0 then
    -- A topic whose history was turned off drops what it kept (once per batch).
    redis.call('DEL', tp.hist)
  elseif tp.ttl > 0 and (tp.last_ts or N > 0) then
    -- By age, from the oldest end: each message is removed once, so this is one read per
    -- batch and topic plus one per message that aged out.
    local cutoff = (tp.last_ts or last_ts) - tp.ttl
    for _ = 1, 64 do
      local first = redis.call('XRANGE', tp.hist, '-', '+', 'COUNT', 1)
      if #first == 0 then break end
      local f = first[1][2]
      local ts
      if f[1] == 'q' then
        ts = string.match(f[2], '^%S+ (%d+)')
      else
        ts = string.match(f[2], '^%S+ %S+ (%d+)')
      end
      if tonumber(ts) >= cutoff then break end
      redis.call('XDEL', tp.hist, first[1][1])
    end
  end
  if tp.note == '1' then redis.call('SADD', KEYS[1], tp.name) end
  receivers[t] = 0
  if #tp.out > 0 then
    local n = redis.call('PUBLISH', tp.chan, table.concat(tp.out))
    receivers[t] = n
    for _, i in ipairs(tp.firsts) do out[i] = n end
  end
end
local res = {}
for t = 1, T do
  local tp = topics[t]
  res[t] = tp.epoch or ''
  res[T + 2 * t - 1], res[T + 2 * t] = tp.first, receivers[t]
end
for i = 1, 3 * N do res[3 * T + i] = out[i] end
return res
