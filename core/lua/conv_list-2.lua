-- conv_list: the conversations of one partition in one state, for the
-- dashboard (read only).
-- KEYS: 1 ready, 2 leases
-- ARGV: 1 state (waiting|ready|leased|backoff), 2 search ("" = all),
--       3 want (matches returned), 4 scan (members looked at, a bound on
--       the work), 5 key prefix "<prefix>:{p}:" of this partition's
--       per-conversation keys (same hash slot as KEYS)
-- Returns {now, total matches among those scanned, truncated (0|1),
--          conv, score, attempts, owner, last_error, ...} oldest first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state, search = ARGV[1], ARGV[2]
local want, scan, kp = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local zkey, lo, hi = KEYS[1], '-inf', '+inf'
if state == 'leased' then
  zkey = KEYS[2]
elseif state == 'ready' then
  hi = string.format('%d', now)
else
  lo = '(' .. string.format('%d', now)
end
local members = redis.call('ZRANGEBYSCORE', zkey, lo, hi, 'WITHSCORES', 'LIMIT', 0, scan)
local truncated = 0
if #members / 2 >= scan and redis.call('ZCOUNT', zkey, lo, hi) > scan then truncated = 1 end
local total = 0
local out = {string.format('%d', now), 0, truncated}
for i = 1, #members, 2 do
  local c = members[i]
  local ok = search == '' or string.find(c, search, 1, true) ~= nil
  if ok and (state == 'waiting' or state == 'backoff') then
    local has_batch = redis.call('EXISTS', kp .. 'batch:' .. c) == 1
    ok = (state == 'backoff') == has_batch
  end
  if ok then
    total = total + 1
    if total <= want then
      local m = redis.call('HMGET', kp .. 'meta:' .. c, 'attempts', 'owner', 'token', 'last_error')
      local owner = ''
      if m[3] and m[3] ~= '' then owner = m[2] or '' end
      local err = m[4] or ''
      -- a page of a list: long errors are read in the conversation view
      if #err > 300 then err = string.sub(err, 1, 300) end
      table.insert(out, c)
      table.insert(out, members[i + 1])
      table.insert(out, tonumber(m[1]) or 0)
      table.insert(out, owner)
      table.insert(out, err)
    end
  end
end
out[2] = total
return out
