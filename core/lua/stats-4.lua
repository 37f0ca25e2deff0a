-- stats: the totals of one partition, O(1).
-- KEYS: 1 stats, 2 ready, 3 leases, 4 dead
-- ARGV: none
-- Returns {pending, conversations, enqueued, acked, failed, dead_lettered,
-- recovered, ready count, inflight count, dead count} (integers).
-- pending and conversations are derived (see includes/common.lua): the
-- scripts on the hot path do not keep them.
local m = redis.call('HMGET', KEYS[1], 'enqueued', 'requeued', 'moved', 'acked', 'failed',
                     'dead_lettered', 'recovered')
local v = {}
for i = 1, 7 do v[i] = tonumber(m[i]) or 0 end
local ready = redis.call('ZCARD', KEYS[2])
local inflight = redis.call('ZCARD', KEYS[3])
return {v[1] + v[2] - v[3], ready + inflight, v[1], v[4], v[5], v[6], v[7], ready, inflight,
        redis.call('ZCARD', KEYS[4])}
