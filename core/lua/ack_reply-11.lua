-- ack_reply: ack (see ack-6.lua) and, in the same step, keeps the turn's
-- reply as unconfirmed until the host confirms it (reply_ack-2.lua); until
-- then reply_claim-2.lua hands it out again every redeliver ms.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats, 7 dead,
--       8 deadrec, 9 deadaux (unused), 10 replies, 11 reply_due
-- ARGV: 1..7 common (see includes/common.lua), 8 token, 9 batch id,
--       10 reply JSON, 11 redeliver ms, 12 ttl ms
-- Returns 1, or 0 when the token is stale or the batch id is not the
-- leased batch's (nothing changed).
--@include "common.lua"

local bid = ARGV[9]
local m = rl_ack_read(ARGV[8], 'batch_id')
if not m or m[4] ~= bid then return 0 end
local now = rl_now()
rl_ack(now, m)
local expires = now + tonumber(ARGV[12])
redis.call('HSET', KEYS[10], bid, rl_int(expires) .. ':' .. ARGV[10])
redis.call('ZADD', KEYS[11], rl_int(math.min(now + tonumber(ARGV[11]), expires)), bid)
return 1
