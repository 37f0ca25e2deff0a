-- ack: the leased batch is done; deletes it and schedules what waits.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats
-- ARGV: 1..7 common (see includes/common.lua), 8 token
-- Returns 1, or 0 when the token is stale (nothing changed).
--@include "common.lua"

local m = rl_ack_read(ARGV[8])
if not m then return 0 end
rl_ack(nil, m) -- reads the time only when messages wait
return 1
