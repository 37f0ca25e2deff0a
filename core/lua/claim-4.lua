-- claim: leases up to `max` conversations of one partition whose due time
-- has come, oldest due first, in one step: it finds them itself (no peek
-- round trip before it) and skips what another worker took meanwhile, so a
-- claim returns nothing only when nothing is due.
-- KEYS: 1 ready, 2 leases, 3 stats, 4 wake (of one partition)
-- ARGV: 1 key base "<prefix>:{p}:", 2 partition, 3 max messages,
--       4 max bytes, 5 owner, 6 lease ms, 7 max claims, 8.. candidate
--       conversations (optional: then these first, in this order, and
--       the partition's oldest due for those taken meanwhile); or
--       8 "" and 9 a conversation whose announcement ("c:<conv>", see
--       rl_signal in includes/common.lua) this worker popped: that one,
--       then up to max - 1 others announced and not yet popped, taken
--       from the wake key here (so no other worker is woken for them)
-- Returns {now, next due ms or -1, conv, claim, conv, claim, ...} where
-- claim = {batch id, token, attempt, lease_until ms, messages JSON array,
--  checkpoint JSON or nil, settle JSON or nil} (settle: the checkpoint of
--  the conversation's last dead-lettered batch, see store.h claim) and
-- next due is the due time of the first conversation left in ready when
-- known (-1: ready is empty, or not looked at).
-- Per conversation (meta, pending, batch keys built from the key base,
-- same hash tag as KEYS, so same Cluster slot): one HMGET, one LRANGE,
-- one RENAME (or RPUSH + LTRIM when messages stay behind), one HSET; per script one ZREM, one ZADD and
-- two counters (fence by the number claimed, moved).

if redis.replicate_commands then redis.replicate_commands() end

local function rl_int(n) return string.format('%d', n) end
local function rl_num(v)
  if not v or v == '' then return 0 end
  return tonumber(v) or 0
end
local function rl_entry_size(e) return tonumber(string.match(e, '^(%d+):')) or 0 end
local function rl_entry_ts(e) return tonumber(string.match(e, '^%d+:{"id":"m(%d+)%-')) end
local function rl_join(entries, n)
  local parts = {}
  for i = 1, n do
    local e = entries[i]
    parts[i] = string.sub(e, string.find(e, ':', 1, true) + 1)
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, part = ARGV[1], ARGV[2]
local maxm, maxb = tonumber(ARGV[3]), tonumber(ARGV[4])
local owner, lease_until = ARGV[5], now + tonumber(ARGV[6])
local max = tonumber(ARGV[7])

-- Pass 1: which candidates are claimable (due, unleased).
local named = ARGV[8] == ''
local take, gone = {}, {}
local next_due, more_due = -1, false
-- A range claim leaves a conversation announced by name (meta "ann", see
-- rl_signal in includes/common.lua) whose announcement another worker
-- popped and is claiming now: that worker's claim would come back empty.
-- Not for long: an announcement popped by a worker that died is taken
-- after ANN_MS.
local ANN_MS = 2000
local function consider(conv)
  local m = redis.call('HMGET', base .. 'meta:' .. conv, 'token', 'batch_id', 'attempts',
                       'pbytes', 'ckpt', 'settle', 'ann')
  if not named and m[7] and m[7] ~= '' and now - rl_num(m[7]) < ANN_MS and
      not redis.call('ZSCORE', KEYS[4], 'c:' .. conv) then
    return false
  end
  gone[#gone + 1] = conv -- claimed or stray: leaves ready either way
  if m[1] and m[1] ~= '' then return end -- a leased conversation is never ready
  take[#take + 1] = {conv, m}
end
if named then
  local cands = {ARGV[9]}
  if max > 1 then
    -- (the timer member "w" is left for a waiting worker)
    local r = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', rl_int(now), 'LIMIT', 0, max)
    local grabbed = {}
    for i = 1, #r do
      if #cands >= max then break end
      if string.sub(r[i], 1, 2) == 'c:' then
        grabbed[#grabbed + 1] = r[i]
        -- (announced again meanwhile: taken once)
        if r[i] ~= 'c:' .. ARGV[9] then cands[#cands + 1] = string.sub(r[i], 3) end
      end
    end
    -- (in chunks: unpack is limited by the Lua stack)
    for i = 1, #grabbed, 1000 do
      redis.call('ZREM', KEYS[4], unpack(grabbed, i, math.min(#grabbed, i + 999)))
    end
  end
  for i = 1, #cands do
    local due = redis.call('ZSCORE', KEYS[1], cands[i])
    if due and tonumber(due) <= now then
      consider(cands[i])
    elseif due then
      -- due later than announced (a retry delay, a release): the timer
      local ok = redis.pcall('ZADD', KEYS[4], 'LT', due, 'w')
      if type(ok) == 'table' and ok.err then redis.call('ZADD', KEYS[4], due, 'w') end
    end
  end
else
  -- Stray entries (leased meanwhile) are skipped; a bounded number of
  -- extra looks replaces them.
  local function scan(seen)
    local off, looks = 0, 0
    while #take < max and looks < 4 do
      looks = looks + 1
      local want = max - #take + 1
      local r = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf', 'WITHSCORES', 'LIMIT', off,
                           want)
      local k = 0
      for i = 1, #r, 2 do
        local due = tonumber(r[i + 1])
        if due > now then next_due = due; break end
        if #take >= max then more_due = true; next_due = due; break end
        if not seen[r[i]] then consider(r[i]) end
        k = k + 1
      end
      if next_due >= 0 or #r < want * 2 then break end
      off = off + k
    end
  end
  local seen = {}
  for i = 8, #ARGV do
    if #take >= max then break end
    seen[ARGV[i]] = true
    local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if due and tonumber(due) <= now then consider(ARGV[i]) end
  end
  -- Candidates another worker took meanwhile (it peeked the same heads):
  -- the partition's own oldest due replace them, so a claim comes back
  -- empty only when nothing here is due.
  if #take < max then scan(seen) end
end

-- Pass 2: lease them. Tokens (and batch id sequence numbers) come from one
-- counter update for all.
local out = {now, next_due}
local claimed = {}
if #take > 0 then
  local fence = redis.call('HINCRBY', KEYS[3], 'fence', #take) - #take
  local moved = 0
  for j = 1, #take do
    local conv, m = take[j][1], take[j][2]
    fence = fence + 1
    local meta, batch = base .. 'meta:' .. conv, base .. 'batch:' .. conv
    local bid, attempts, entries, n = m[2], nil, nil, 0
    local ckpt, settle = m[5], m[6]
    if bid and bid ~= '' then
      -- a retry (or a released / recovered batch): the same batch again
      entries = redis.call('LRANGE', batch, 0, -1)
      n = #entries
      attempts = rl_num(m[3]) + 1
      redis.call('HSET', meta, 'attempts', rl_int(attempts), 'token', rl_int(fence), 'owner',
                 owner, 'lease_until', rl_int(lease_until), 'ann', '')
    else
      local pending = base .. 'pending:' .. conv
      -- one entry more than a batch takes: the next head, if any
      entries = redis.call('LRANGE', pending, 0, maxm)
      local bytes = 0
      for i = 1, math.min(#entries, maxm) do
        local sz = rl_entry_size(entries[i])
        if n > 0 and bytes + sz > maxb then break end
        n = n + 1
        bytes = bytes + sz
      end
      if n > 0 then
        if n == #entries then
          -- the whole list becomes the batch (no batch exists: batch_id is
          -- empty exactly then)
          redis.call('RENAME', pending, batch)
        else
          for i = 1, n, 1000 do
            redis.call('RPUSH', batch, unpack(entries, i, math.min(n, i + 999)))
          end
          redis.call('LTRIM', pending, n, -1)
        end
        moved = moved + n
        bid = 'b' .. rl_int(now) .. '-' .. part .. '-' .. rl_int(fence)
        attempts = 1
        ckpt = ''
        local pb = rl_int(rl_num(m[4]) - bytes)
        if n < #entries then
          redis.call('HSET', meta, 'batch_id', bid, 'attempts', '1', 'stalls', '0', 'ckpt', '',
                     'pbytes', pb, 'first_ms', rl_int(rl_entry_ts(entries[n + 1]) or now),
                     'token', rl_int(fence), 'owner', owner, 'lease_until', rl_int(lease_until),
                     'ann', '')
        else
          redis.call('HSET', meta, 'batch_id', bid, 'attempts', '1', 'stalls', '0', 'ckpt', '',
                     'pbytes', pb, 'token', rl_int(fence), 'owner', owner, 'lease_until',
                     rl_int(lease_until), 'ann', '')
        end
      end
    end
    if n > 0 then
      if not ckpt or ckpt == '' then ckpt = false end
      if not settle or settle == '' then settle = false end
      claimed[#claimed + 1] = conv
      out[#out + 1] = conv
      out[#out + 1] = {bid, rl_int(fence), attempts, lease_until, rl_join(entries, n), ckpt, settle}
    end
  end
  if moved > 0 then redis.call('HINCRBY', KEYS[3], 'moved', moved) end
end
-- (in chunks: unpack is limited by the Lua stack)
for i = 1, #gone, 1000 do
  redis.call('ZREM', KEYS[1], unpack(gone, i, math.min(#gone, i + 999)))
end
-- Announcements of what was claimed (taken by range or as another
-- partition's candidate) wake nobody now.
if not named and #claimed > 0 then
  for i = 1, #claimed, 1000 do
    local args = {}
    for k = i, math.min(#claimed, i + 999) do args[#args + 1] = 'c:' .. claimed[k] end
    redis.call('ZREM', KEYS[4], unpack(args))
  end
end
for i = 1, #claimed, 500 do
  local args = {}
  for k = i, math.min(#claimed, i + 499) do
    args[#args + 1] = rl_int(lease_until)
    args[#args + 1] = claimed[k]
  end
  redis.call('ZADD', KEYS[2], unpack(args))
end
-- More is due than this claim took: wake another worker for it.
if more_due then
  local ok = redis.pcall('ZADD', KEYS[4], 'LT', rl_int(now), 'w')
  if type(ok) == 'table' and ok.err then redis.call('ZADD', KEYS[4], rl_int(now), 'w') end
end
return out
