-- reply_ack: the host confirmed a reply: it is never delivered again.
-- KEYS: 1 replies, 2 reply_due (of the batch id's partition)
-- ARGV: 1 batch id
-- Returns 1, or 0 when there was no live reply (unknown, already
-- confirmed, or expired: an expired one is dropped now).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bid = ARGV[1]
local v = redis.call('HGET', KEYS[1], bid)
redis.call('HDEL', KEYS[1], bid)
redis.call('ZREM', KEYS[2], bid)
if not v then return 0 end
local expires = tonumber(string.match(v, '^(%d+):'))
if not expires or expires <= now then return 0 end
return 1
