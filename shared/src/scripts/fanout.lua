-- fanout.lua: attempt ARGV[3] of job ARGV[2] on worker ARGV[4] has planned a sharded render: create
-- one shard job per pair (suffix, params JSON) in ARGV[5..], queue them, and park the parent in
-- state 'sharded' until the last shard ends (lib.lua child_ended queues its final step then).
-- The parent keeps its (world, renderer) lock throughout; its stream entry is released, so it
-- holds no worker slot. Fenced like finish.lua. Returns the number of shards, or 'stale:<state>' /
-- 'missing'.
local id, attempt, worker = ARGV[2], ARGV[3], ARGV[4]
local k = job_key(id)
local j = redis.call('HMGET', k, 'state', 'attempt', 'worker', 'entry', 'world', 'renderer', 'priority',
  'timeout_ms', 'max_attempts', 'backoff_ms', 'retention_ms')
if not j[1] then return 'missing' end
if j[1] ~= 'running' or j[2] ~= attempt or j[3] ~= worker then return 'stale:' .. j[1] end
drop_entry(j[4])
local prio = j[7]
local ck = k .. ':children'
redis.call('DEL', ck)
local n = 0
for i = 5, #ARGV, 2 do
  local suffix, params = ARGV[i], ARGV[i + 1]
  local cid = id .. '.' .. attempt .. '.' .. suffix
  local ckey = job_key(cid)
  redis.call('DEL', ckey, ckey .. ':log')
  create_job(cid, prio, { 'world', j[5], 'renderer', j[6], 'params', params, 'priority', prio,
    'timeout_ms', j[8] or '', 'max_attempts', j[9] or 3, 'backoff_ms', j[10] or 10000,
    'retention_ms', j[11] or 604800000, 'parent', id, 'run', attempt, 'shard', suffix })
  redis.call('RPUSH', ck, cid)
  n = n + 1
end
-- Planning is not charged against the parent's attempts (not even planning attempts that
-- failed): its final step gets the full budget.
redis.call('HSET', k, 'state', 'sharded', 'stage', '', 'entry', '', 'run', attempt,
  'children_total', n, 'children_done', 0, 'children_failed', 0,
  'progress', 0, 'phase', 'shards 0/' .. n, 'updated_at', NOW, 'pid', '', 'pstart', '',
  'free_attempts', attempt)
redis.call('HDEL', k, 'first_child_error')
redis.call('HINCRBY', stats_key(worker), 'jobs_fanout', 1)
if n == 0 then
  redis.call('HSET', k, 'stage', 'finalize', 'phase', 'final step queued', 'progress', 100)
  enqueue(id, prio)
end
return n
