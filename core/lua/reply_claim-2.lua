-- reply_claim: hands out one unconfirmed reply whose delivery time has come
-- (found by peek-1 on reply_due; this re-checks atomically) and postpones
-- its next delivery, so that no other worker hands it out meanwhile. An
-- expired reply is dropped instead.
-- KEYS: 1 replies, 2 reply_due (of one partition)
-- ARGV: 1 batch id, 2 redeliver ms
-- Returns the reply JSON, or nil (not due, confirmed meanwhile, expired).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bid = ARGV[1]
local due = redis.call('ZSCORE', KEYS[2], bid)
if not due or tonumber(due) > now then return false end
local v = redis.call('HGET', KEYS[1], bid)
local expires = v and tonumber(string.match(v, '^(%d+):'))
if not expires or expires <= now then
  redis.call('HDEL', KEYS[1], bid)
  redis.call('ZREM', KEYS[2], bid)
  return false
end
local nxt = math.min(now + tonumber(ARGV[2]), expires)
redis.call('ZADD', KEYS[2], string.format('%d', nxt), bid)
return string.sub(v, string.len(string.match(v, '^%d+:')) + 1)
