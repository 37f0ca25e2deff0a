-- peek: members of a sorted set whose score has come (score <= now).
-- Used on ready (claim candidates) and leases (expired leases); the
-- per-conversation script re-checks atomically.
-- KEYS: 1 zset
-- ARGV: 1 limit
-- Returns {now, member1, score1, member2, score2, ...}, oldest first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now),
                     'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
table.insert(r, 1, string.format('%d', now))
return r
