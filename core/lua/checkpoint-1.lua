-- checkpoint: records the provider turn's state on the leased batch (and
-- clears the conversation's settle, see claim-6.lua).
-- KEYS: 1 meta
-- ARGV: 1..7 common (see includes/common.lua), 8 token, 9 checkpoint JSON
-- Returns 1, or 0 when the token is stale.
--@include "common.lua"
--@include "lifecycle.lua"

if not rl_token_ok(ARGV[8]) then return 0 end
redis.call('HSET', KEYS[1], 'ckpt', ARGV[9])
-- The batch's own turn began: a dead batch's turn was settled first.
redis.call('HDEL', KEYS[1], 'settle')
return 1
