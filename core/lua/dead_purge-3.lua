-- dead_purge: deletes one dead letter, or all of a partition's.
-- KEYS: 1 dead, 2 deadrec, 3 deadaux (of one partition)
-- ARGV: 1 dead id, or "" for all
-- Returns the number of dead letters deleted.
local id = ARGV[1]
if id == '' then
  local n = redis.call('ZCARD', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return n
end
local n = redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
return n
