-- submit.lua: create job ARGV[2] and queue it, unless a job with that id exists (idempotent submit).
-- ARGV: prefix, id, priority, then field/value pairs of the record.
-- Returns {created (1|0), state}.
local id = ARGV[2]
local k = job_key(id)
local existing = redis.call('HGET', k, 'state')
if existing then return { 0, existing } end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', k, 'id', id, 'attempt', 0, 'free_attempts', 0, 'created_at', NOW, 'created_us', NOW_US,
  'progress', 0,
  unpack(fields))
redis.call('ZADD', P .. 'jobs', NOW, id)
enqueue(id, ARGV[3])
return { 1, 'queued' }
