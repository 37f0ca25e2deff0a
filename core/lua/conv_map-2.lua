-- conv_map: the conversation key -> provider conversation id map (see
-- store.h conv_map). One hash per partition that never expires.
-- KEYS: 1 meta (of the conversation), 2 convmap (of its partition)
-- ARGV: 1 mode (0 get, 1 record, 2 set, 3 forget), 2 conv, 3 token,
--       4 provider id
-- Returns {1, mapping or ''}, or {0, ''} when record's token is stale.
local mode, conv = ARGV[1], ARGV[2]
local cur = redis.call('HGET', KEYS[2], conv) or ''
if mode == '0' then return {1, cur} end
if mode == '1' then
  -- Fenced: only the lease holder records, and never over a mapping, so a
  -- key's messages only ever go to the first recorded conversation.
  local tok = redis.call('HGET', KEYS[1], 'token')
  if not tok or tok == '' or tok ~= ARGV[3] then return {0, ''} end
  if cur ~= '' then return {1, cur} end
  redis.call('HSET', KEYS[2], conv, ARGV[4])
  return {1, ARGV[4]}
end
if mode == '2' then
  redis.call('HSET', KEYS[2], conv, ARGV[4])
  return {1, cur}
end
redis.call('HDEL', KEYS[2], conv)
return {1, cur}
