-- rate_take: the shared requests-per-minute budget (rate.limit.rpm), a
-- token bucket every client of the queue shares.
-- KEYS: 1 bucket  hash  <prefix>:{rate}:bucket  tokens (float), at (ms)
-- ARGV: 1 rpm (> 0)
-- Capacity (the burst) is rpm / 60 but at least 1; it refills at
-- rpm / 60000 tokens per ms of server time; a missing bucket is full.
-- Returns 0 when a token was taken, else the ms until the next whole token
-- (nothing taken). The key expires once the bucket would be full again.
-- Same arithmetic as m_rate_take in store_memory.c.

-- Redis < 5 replicates scripts verbatim unless told otherwise, which
-- forbids writes after TIME; from 7.0 this is a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local rpm = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = rpm / 60
if cap < 1 then cap = 1 end

local m = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(m[1]), tonumber(m[2])
if not tokens or not at then
  tokens = cap
  at = now
end
-- A clock that went back does not refill (nor drain) the bucket.
if now > at then
  tokens = tokens + (now - at) * rpm / 60000
  at = now
end
if tokens > cap then tokens = cap end

local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  -- rounded up: after this long a whole token is there
  wait = math.floor((1 - tokens) * 60000 / rpm) + 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%d', at))
-- Full again after (cap - tokens) * 60000 / rpm ms: then the key may go.
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.floor((cap - tokens) * 60000 / rpm) + 1000))
return wait
