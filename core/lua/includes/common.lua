-- Shared by the per-conversation scripts of the redis store.
-- Key layout (see store_redis.c): KEYS are always passed in this order, a
-- script taking the first N of them:
--   1 meta     hash   <prefix>:{p}:meta:<conv>
--   2 pending  list   <prefix>:{p}:pending:<conv>
--   3 batch    list   <prefix>:{p}:batch:<conv>
--   4 ready    zset   <prefix>:{p}:ready     conv -> due ms
--   5 leases   zset   <prefix>:{p}:leases    conv -> lease expiry ms
--   6 stats    hash   <prefix>:{p}:stats     counters, seq, fence
--   7 dead     zset   <prefix>:{p}:dead      dead id -> dead_at ms
--   8 deadrec  hash   <prefix>:{p}:deadrec   dead id -> JSON record
--   9 deadaux  hash   <prefix>:{p}:deadaux   dead id -> cmsgpack {conv, entries}
--  10 replies  hash   <prefix>:{p}:replies   batch id -> "<expires ms>:<JSON>"
--  11 reply_due zset  <prefix>:{p}:reply_due batch id -> next delivery ms
--                                             (never after its expiry)
-- and ARGV starts with the same seven values:
--   1 conv, 2 window_ms, 3 max_wait_ms, 4 max_messages, 5 max_bytes,
--   6 idle_ttl_ms (expiry of the meta hash of an idle conversation),
--   7 partition
-- List entries are "<content bytes>:<record JSON>".
--  (+) wake     zset   <prefix>:{p}:wake      announcements, workers
--                 BZPOPMIN it (see rl_signal); derived from KEYS[4] (same
--                 slot: same hash tag). Members: "c:<conv>" -> due ms (a
--                 conversation that became due, named: the one worker that
--                 pops it claims it) and "w" -> earliest announced later
--                 due ms (a timer: its worker claims what is due then).
-- stats fields: enqueued (also the message id sequence), moved (messages
-- moved from pending lists into batches), requeued (messages a dead_retry
-- put back), acked, failed, dead_lettered, recovered, fence (lease tokens,
-- also the batch id sequence; per partition so that a token is never
-- reused even after an idle meta hash expired). Derived, not stored, so
-- that the hot path updates one counter per script at most:
--   pending       = enqueued + requeued - moved
--   conversations = ZCARD ready + ZCARD leases (a conversation with pending
--                   messages or a batch is either leased or in ready)

local CONV = ARGV[1]

-- Redis < 5 replicates scripts verbatim unless told otherwise, which
-- forbids writes after TIME; from 7.0 this is a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local function rl_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Numbers go to redis.call as integer strings: Lua 5.1 would print -0 as
-- "-0" and large values in exponent form, which Redis refuses.
local function rl_int(n)
  return string.format('%d', n)
end

local function rl_num(v)
  if not v or v == '' then return 0 end
  return tonumber(v) or 0
end

-- Due time per store.h (never before now) of `count` pending messages of
-- `bytes` content bytes, first arrived at `first`, last activity `last`.
local function rl_due_of(now, count, bytes, first, last)
  if count >= tonumber(ARGV[4]) or bytes >= tonumber(ARGV[5]) then return now end
  local d = math.min(last + tonumber(ARGV[2]), first + tonumber(ARGV[3]))
  if d < now then d = now end
  return d
end

-- Wakes one worker blocked on the partition's wake key (BZPOPMIN, see
-- store_redis.c r_wait_*). A conversation due now is announced by name
-- ("c:<conv>"): Redis hands each member to exactly one waiting worker,
-- which claims that conversation (and other named ones still waiting in
-- the key, taken atomically by its claim), so two workers are never woken
-- for one conversation and claims do not come back empty. A later due time
-- goes to the one timer member "w" (its earliest announced due time), so
-- that future due times merge instead of piling up one per conversation.
-- The key is built from KEYS[4] (<prefix>:{p}:ready -> <prefix>:{p}:wake):
-- same hash tag, so same Cluster slot as every key of the script.
-- Returns true when the announcement names the conversation: the caller
-- then sets the meta field "ann" (the time it was announced; claim-4.lua
-- clears it) so that a range claim leaves the conversation to the worker
-- that popped its announcement.
local function rl_signal(due, now, conv)
  local wake = string.sub(KEYS[4], 1, -6) .. 'wake'
  local member = 'w'
  if due <= now then member = 'c:' .. (conv or CONV) end
  -- The wake key is not among KEYS: in a Cluster slot being migrated a
  -- call on it can fail. That must not abort the script after its writes
  -- (a lost announcement only waits for a look at the heads; a Cluster's
  -- workers poll anyway), so every call on it is a pcall.
  local ok = redis.pcall('ZADD', wake, 'LT', rl_int(due), member)
  if type(ok) == 'table' and ok.err then
    if not string.find(ok.err, 'syntax', 1, true) then return false end
    -- Redis < 6.2 has no ZADD LT
    local cur = redis.pcall('ZSCORE', wake, member)
    if type(cur) == 'table' then return false end
    if not cur or tonumber(cur) > due then
      ok = redis.pcall('ZADD', wake, rl_int(due), member)
      if type(ok) == 'table' and ok.err then return false end
    end
  end
  return member ~= 'w'
end

-- Conversation is due at `due`: in ready, and announced (see rl_signal).
local function rl_ready(due, now)
  redis.call('ZADD', KEYS[4], rl_int(due), CONV)
  return rl_signal(due, now)
end

-- The meta hash expires while the conversation is idle (ARGV[6]), not
-- while it has work.
local function rl_mark_active()
  redis.call('PERSIST', KEYS[1])
end

local function rl_mark_idle()
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end

-- The leased batch is done: deletes it and schedules what waits (needs
-- KEYS 1..6; now may be nil: read when needed). `m` = HMGET meta pbytes first_ms last_ms, read with the
-- token: one write of the meta hash, and a leased conversation is never
-- in ready (no ZREM).
local function rl_ack(now, m)
  -- reads first: the lease ends with the first write (as a script stopped
  -- half way by an error keeps what it wrote)
  local count = redis.call('LLEN', KEYS[2])
  local due, ann = nil, ''
  if count > 0 then
    now = now or rl_now()
    due = rl_due_of(now, count, rl_num(m[1]), rl_num(m[2]), rl_num(m[3]))
    -- announced by name (rl_signal) when due now
    if due <= now then ann = rl_int(now) end
  end
  redis.call('HSET', KEYS[1], 'token', '', 'owner', '', 'lease_until', '0', 'attempts', '0',
             'stalls', '0', 'batch_id', '', 'ckpt', '', 'settle', '', 'last_error', '', 'ann',
             ann)
  redis.call('ZREM', KEYS[5], CONV)
  redis.call('DEL', KEYS[3])
  redis.call('HINCRBY', KEYS[6], 'acked', 1)
  if due then
    rl_ready(due, now)
  else
    rl_mark_idle()
  end
end

-- The token check of an ack, with what rl_ack needs: nil when stale.
local function rl_ack_read(token, ...)
  local m = redis.call('HMGET', KEYS[1], 'token', 'pbytes', 'first_ms', 'last_ms', ...)
  if not m[1] or m[1] == '' or m[1] ~= token then return nil end
  return {m[2], m[3], m[4], m[5]}
end
