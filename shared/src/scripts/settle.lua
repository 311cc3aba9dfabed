-- settle.lua: look at what worker ARGV[2] has pending in the consumer group (its PEL) from an
-- earlier life or an interrupted read. Entries delivered but never started are queued again;
-- stale entries are dropped; attempts that were running on this worker are returned to the
-- caller, which stops any leftover renderer and then records them as lost (finish.lua).
-- ARGV: prefix, worker, then pairs (priority, entry id). Returns JSONs of running attempts.
local worker = ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local prio, eid = ARGV[i], ARGV[i + 1]
  local entry = prio .. '|' .. eid
  local r = redis.call('XRANGE', stream_key(prio), eid, eid)
  local id = nil
  if r[1] then id = entry_field(r[1][2], 'job') end
  local j = {}
  if id then
    j = redis.call('HMGET', job_key(id), 'state', 'entry', 'worker', 'attempt', 'pid', 'pstart', 'host',
      'priority', 'stopping')
  end
  if id and j[2] == entry and j[1] == 'queued' then
    drop_entry(entry)
    enqueue(id, j[8])
  elseif id and j[2] == entry and j[3] == worker and (j[1] == 'running' or j[9] == '1') then
    out[#out + 1] = cjson.encode({ id = id, attempt = tonumber(j[4]) or 0, pid = j[5] or '',
      pstart = j[6] or '', host = j[7] or '' })
  else
    drop_entry(entry)
  end
end
return out
