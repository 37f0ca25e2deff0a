-- stats: the totals of one partition, O(1).
-- KEYS: 1 stats, 2 ready, 3 leases, 4 dead
-- ARGV: none
-- Returns {pending, conversations, enqueued, acked, failed, dead_lettered,
-- recovered, ready count, inflight count, dead count} (integers).
local m = redis.call('HMGET', KEYS[1], 'pending', 'convs', 'enqueued', 'acked',
                     'failed', 'dead_lettered', 'recovered')
local r = {}
for i = 1, 7 do r[i] = tonumber(m[i]) or 0 end
r[8] = redis.call('ZCARD', KEYS[2])
r[9] = redis.call('ZCARD', KEYS[3])
r[10] = redis.call('ZCARD', KEYS[4])
return r
