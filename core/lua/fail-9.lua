-- fail: a failed attempt of the leased batch: retry after a backoff, or
-- dead-letter it (attempts spent, or not retriable). The attempts that
-- count are attempts - stalls.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats, 7 dead,
--       8 deadrec, 9 deadaux
-- ARGV: 1..7 common (see includes/common.lua), 8 token, 9 error message,
--       10 retriable (0|1), 11 max attempts, 12 backoff base ms,
--       13 backoff max ms, 14 backoff jitter (0..1), 15 random u in [0,1)
--       drawn by the caller
-- Returns 0 (retry), 1 (dead-lettered) or -1 (stale token, nothing changed).
--@include "common.lua"
--@include "lifecycle.lua"

if not rl_token_ok(ARGV[8]) then return -1 end
local now = rl_now()
local err = ARGV[9]
-- Expired leases are not attempts (see recover-9.lua).
local m = redis.call('HMGET', KEYS[1], 'attempts', 'stalls')
local attempts = rl_num(m[1]) - rl_num(m[2])
redis.call('HINCRBY', KEYS[6], 'failed', 1)
if ARGV[10] == '1' and attempts < tonumber(ARGV[11]) then
  -- backoff(a) = min(cap, base * 2^(a-1)) * (1 - jitter * u), rounded
  local a = attempts
  if a < 1 then a = 1 end
  local d = math.min(tonumber(ARGV[13]), tonumber(ARGV[12]) * math.pow(2, a - 1))
  d = math.floor(d * (1 - tonumber(ARGV[14]) * tonumber(ARGV[15])) + 0.5)
  rl_end_lease()
  redis.call('HSET', KEYS[1], 'last_error', err)
  rl_ready(now + d, now)
  return 0
end
rl_dead_letter(now, err)
return 1
