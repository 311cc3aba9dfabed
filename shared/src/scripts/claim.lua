-- claim.lua: promote due retries, then take up to ARGV[3] runnable jobs for worker ARGV[2],
-- high priority first, FIFO within a priority. One round trip for the whole batch.
-- ARGV: prefix, worker, free. Returns {next_retry_due_ms or '', claim JSON...}.
local worker = ARGV[2]
local free = tonumber(ARGV[3]) or 0

local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', NOW, 'LIMIT', 0, 256)
for _, id in ipairs(due) do
  redis.call('ZREM', P .. 'delayed', id)
  local st = redis.call('HMGET', job_key(id), 'state', 'priority')
  if st[1] == 'failed' then enqueue(id, st[2]) end
end

local out = { '' }
for _, prio in ipairs(PRIORITIES) do
  local rounds = 0
  while #out - 1 < free and rounds < 16 do
    rounds = rounds + 1
    local r = redis.call('XREADGROUP', 'GROUP', GROUP, worker, 'COUNT', free - (#out - 1),
      'STREAMS', stream_key(prio), '>')
    if not r or #r[1][2] == 0 then break end
    for _, e in ipairs(r[1][2]) do
      local c = start(worker, prio, e[1], entry_field(e[2], 'job'))
      if c then out[#out + 1] = c end
    end
  end
  if #out - 1 >= free then break end
end

count_taken(worker, #out - 1)
local nxt = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = nxt[2] end
return out
