-- extend_batch: moves pending messages, oldest first, into the leased batch
-- while it stays within max messages / max bytes (busy.policy=interrupt:
-- the interrupted turn restarts with everything). The batch keeps its id,
-- token, attempts and checkpoint.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats
-- ARGV: 1..7 common (see includes/common.lua), 8 token
-- Returns the whole batch's messages JSON array, or 0 when the token is
-- stale (nothing changed).
--@include "common.lua"
--@include "lifecycle.lua"

if not rl_token_ok(ARGV[8]) then return 0 end
local now = rl_now()
local maxm, maxb = tonumber(ARGV[4]), tonumber(ARGV[5])
local batch = redis.call('LRANGE', KEYS[3], 0, -1)
local n, bytes = #batch, 0
for i = 1, n do bytes = bytes + rl_entry_size(batch[i]) end
if n < maxm then
  local entries = redis.call('LRANGE', KEYS[2], 0, maxm - n - 1)
  local k, kbytes = 0, 0
  for i = 1, #entries do
    local sz = rl_entry_size(entries[i])
    if n + k > 0 and bytes + kbytes + sz > maxb then break end
    k = k + 1
    kbytes = kbytes + sz
  end
  if k > 0 then
    for i = 1, k, 1000 do
      redis.call('RPUSH', KEYS[3], unpack(entries, i, math.min(k, i + 999)))
    end
    redis.call('LTRIM', KEYS[2], k, -1)
    redis.call('HINCRBY', KEYS[1], 'pbytes', rl_int(-kbytes))
    redis.call('HINCRBY', KEYS[6], 'moved', k)
    local nexthead = redis.call('LINDEX', KEYS[2], 0)
    if nexthead then
      redis.call('HSET', KEYS[1], 'first_ms', rl_int(rl_entry_ts(nexthead) or now))
    end
    for i = 1, k do batch[n + i] = entries[i] end
  end
end
return rl_join(batch)
