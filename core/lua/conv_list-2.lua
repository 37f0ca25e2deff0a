-- conv_list: the conversations of one partition in one state, for the
-- dashboard (read only).
-- KEYS: 1 ready, 2 leases
-- ARGV: 1 state (waiting|ready|leased|backoff), 2 search ("" = all),
--       3 want (matches returned), 4 scan (members looked at, a bound on
--       the work), 5 key prefix "<prefix>:{p}:" of this partition's
--       per-conversation keys (same hash slot as KEYS), 6 count (members
--       looked at past the want-th match to count the total: a lower bound
--       on the work of a refresh)
-- Returns {now, total matches counted, truncated (0|1: there may be more
--          than total), conv, score, attempts, owner, last_error, ...}
--          oldest first.
-- Work, independent of the partition's size (a dashboard polls this):
-- ready or leased without a search: O(log N + want) (ZCOUNT, ZRANGE of the
-- page); otherwise members are read by rank, in due order, until the range
-- ends, `scan` were looked at, or more than `want` matched and `count` were
-- looked at.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state, search = ARGV[1], ARGV[2]
local want, scan, kp = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local count = tonumber(ARGV[6]) or scan
local zkey = KEYS[1]
-- the state's rank range [rlo, rhi] (the ready set is ordered by due time:
-- due now first, then the future ones)
local rlo, rhi
if state == 'leased' then
  zkey = KEYS[2]
  rlo, rhi = 0, redis.call('ZCARD', zkey) - 1
else
  local due = redis.call('ZCOUNT', zkey, '-inf', string.format('%d', now))
  if state == 'ready' then
    rlo, rhi = 0, due - 1
  else
    rlo, rhi = due, redis.call('ZCARD', zkey) - 1
  end
end
local total, truncated = 0, 0
local out = {string.format('%d', now), 0, 0}
local function take(c, score)
  local m = redis.call('HMGET', kp .. 'meta:' .. c, 'attempts', 'owner', 'token', 'last_error')
  local owner = ''
  if m[3] and m[3] ~= '' then owner = m[2] or '' end
  local err = m[4] or ''
  -- a page of a list: long errors are read in the conversation view
  if #err > 300 then err = string.sub(err, 1, 300) end
  table.insert(out, c)
  table.insert(out, score)
  table.insert(out, tonumber(m[1]) or 0)
  table.insert(out, owner)
  table.insert(out, err)
end
if search == '' and (state == 'ready' or state == 'leased') then
  total = math.max(0, rhi - rlo + 1)
  if want > 0 and rhi >= rlo then
    local members = redis.call('ZRANGE', zkey, rlo, math.min(rhi, rlo + want - 1), 'WITHSCORES')
    for i = 1, #members, 2 do take(members[i], members[i + 1]) end
  end
else
  local looked, chunk = 0, 256
  local pos = rlo
  while pos <= rhi do
    if looked >= scan or (total > want and looked >= count) then
      truncated = 1
      break
    end
    local last = math.min(rhi, pos + math.min(chunk, scan - looked) - 1)
    local members = redis.call('ZRANGE', zkey, pos, last, 'WITHSCORES')
    if #members == 0 then break end
    for i = 1, #members, 2 do
      local c = members[i]
      looked = looked + 1
      local ok = search == '' or string.find(c, search, 1, true) ~= nil
      if ok and (state == 'waiting' or state == 'backoff') then
        local has_batch = redis.call('EXISTS', kp .. 'batch:' .. c) == 1
        ok = (state == 'backoff') == has_batch
      end
      if ok then
        total = total + 1
        if total <= want then take(c, members[i + 1]) end
      end
    end
    pos = last + 1
  end
end
out[2] = total
out[3] = truncated
return out
