-- Helpers of the less frequent per-conversation scripts (lease end, retry,
-- dead letters), apart from includes/common.lua: every script builds all
-- the local functions it includes on every call, so the hot scripts
-- (enqueue, ack) include only common.lua. Include after common.lua.

local function rl_entry_size(e)
  return tonumber(string.match(e, '^(%d+):')) or 0
end

local function rl_entry_json(e)
  local i = string.find(e, ':', 1, true)
  return string.sub(e, i + 1)
end

-- Arrival time of an entry, from its id "m<ms>-...".
local function rl_entry_ts(e)
  return tonumber(string.match(e, '^%d+:{"id":"m(%d+)%-'))
end

local function rl_join(entries)
  local parts = {}
  for i = 1, #entries do parts[i] = rl_entry_json(entries[i]) end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function rl_token_ok(token)
  local cur = redis.call('HGET', KEYS[1], 'token')
  return cur and cur ~= '' and cur == token
end

-- Due time of the pending messages, read from the store.
local function rl_due(now)
  local count = redis.call('LLEN', KEYS[2])
  local m = redis.call('HMGET', KEYS[1], 'pbytes', 'first_ms', 'last_ms')
  return rl_due_of(now, count, rl_num(m[1]), rl_num(m[2]), rl_num(m[3]))
end

local function rl_end_lease()
  redis.call('HSET', KEYS[1], 'token', '', 'owner', '', 'lease_until', '0')
  redis.call('ZREM', KEYS[5], CONV)
end

local function rl_drop_batch()
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[1], 'attempts', '0', 'stalls', '0', 'batch_id', '', 'ckpt', '')
end

-- After the batch is gone: due again if messages wait, else idle.
local function rl_move_on(now)
  if redis.call('LLEN', KEYS[2]) > 0 then
    rl_ready(rl_due(now), now)
  else
    redis.call('ZREM', KEYS[4], CONV)
    rl_mark_idle()
  end
end

-- Moves the current batch to the dead letters (needs KEYS 1..9).
local function rl_dead_letter(now, err)
  local m = redis.call('HMGET', KEYS[1], 'batch_id', 'attempts', 'stalls')
  local bid, attempts, stalls = m[1] or '', rl_num(m[2]), rl_num(m[3])
  local entries = redis.call('LRANGE', KEYS[3], 0, -1)
  local rec = '{"id":' .. cjson.encode(bid) ..
    ',"conversation_id":' .. cjson.encode(CONV) ..
    ',"batch_id":' .. cjson.encode(bid) ..
    ',"attempts":' .. rl_int(attempts) ..
    ',"stalls":' .. rl_int(stalls) ..
    ',"error":' .. cjson.encode(err) ..
    ',"dead_at_ms":' .. rl_int(now) ..
    ',"messages":' .. rl_join(entries) .. '}'
  redis.call('ZADD', KEYS[7], rl_int(now), bid)
  redis.call('HSET', KEYS[8], bid, rec)
  redis.call('HSET', KEYS[9], bid, cmsgpack.pack({CONV, entries}))
  -- Its provider turn may still run: the next claim settles it.
  local ckpt = redis.call('HGET', KEYS[1], 'ckpt')
  if ckpt and ckpt ~= '' then redis.call('HSET', KEYS[1], 'settle', ckpt) end
  rl_end_lease()
  rl_drop_batch()
  redis.call('HSET', KEYS[1], 'last_error', err)
  redis.call('HINCRBY', KEYS[6], 'dead_lettered', 1)
  rl_move_on(now)
end
