-- submit.lua: create job ARGV[2] and queue it, unless a job with that id exists (idempotent submit).
-- ARGV: prefix, id, priority, then field/value pairs of the record.
-- Returns {created (1|0), state}.
local id = ARGV[2]
local k = job_key(id)
local existing = redis.call('HGET', k, 'state')
if existing then return { 0, existing } end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
create_job(id, ARGV[3], fields)
redis.call('ZADD', P .. 'jobs', NOW, id)
return { 1, 'queued' }
