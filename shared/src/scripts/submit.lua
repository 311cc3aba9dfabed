-- submit.lua: create job ARGV[2] and queue it, unless a job with that id exists (idempotent submit).
-- ARGV: prefix, id, priority, then field/value pairs of the record.
-- Returns {created (1|0), state}.
local id = ARGV[2]
local k = job_key(id)
local existing = redis.call('HGET', k, 'state')
if existing then return { 0, existing } end
local prio = ARGV[3]
if prio ~= 'high' and prio ~= 'low' then prio = 'normal' end
local eid = redis.call('XADD', stream_key(prio), '*', 'job', id)
local fields = { 'id', id, 'state', 'queued', 'entry', prio .. '|' .. eid, 'attempt', 0, 'free_attempts', 0,
  'created_at', NOW, 'created_us', NOW_US, 'queued_at', NOW, 'updated_at', NOW, 'progress', 0 }
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', k, unpack(fields))
redis.call('ZADD', P .. 'jobs', NOW, id)
return { 1, 'queued' }
