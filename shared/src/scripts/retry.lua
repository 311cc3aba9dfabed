-- retry.lua: requeue a dead, cancelled or retry-waiting job now, with a fresh attempt budget.
-- A sharded render that is dead or cancelled starts over from planning (which skips regions whose
-- output is current); one whose final step waits for a retry runs that final step now.
-- A shard can be retried while its render still waits for its shards (it is then no longer
-- counted as failed); once the render has moved on, its parent is the one to retry.
-- Returns 'queued', 'missing' or 'invalid:<state>'.
local id = ARGV[2]
local k = job_key(id)
local j = redis.call('HMGET', k, 'state', 'attempt', 'priority', 'stopping', 'created_at', 'stage', 'parent',
  'run', 'counted')
if not j[1] then return 'missing' end
if not (j[1] == 'dead' or j[1] == 'failed' or (j[1] == 'cancelled' and j[4] ~= '1')) then
  return 'invalid:' .. j[1]
end
local parent = j[7]
if parent and parent ~= '' then
  local pk = job_key(parent)
  local p = redis.call('HMGET', pk, 'state', 'run')
  if j[1] ~= 'failed' and (p[1] ~= 'sharded' or p[2] ~= j[8]) then
    return 'invalid:' .. j[1] .. ' shard of a render that has moved on (retry the render ' .. parent .. ')'
  end
  if j[9] == 'failed' then
    redis.call('HINCRBY', pk, 'children_failed', -1)
    redis.call('HDEL', k, 'counted')
  end
end
redis.call('ZREM', P .. 'delayed', id)
redis.call('ZREM', P .. 'dead', id)
redis.call('ZREM', P .. 'expiry', id)
redis.call('PERSIST', k)
redis.call('PERSIST', k .. ':log')
redis.call('PERSIST', k .. ':children')
-- Shards are listed through their render, not in the main index.
if not parent or parent == '' then
  redis.call('ZADD', P .. 'jobs', 'NX', tonumber(j[5]) or NOW, id)
end
local stage = ''
if j[1] == 'failed' and j[6] == 'finalize' then stage = 'finalize' end
redis.call('HSET', k, 'free_attempts', tonumber(j[2]) or 0, 'error', '', 'exit_code', '',
  'next_attempt_at', '', 'finished_at', '', 'stage', stage)
enqueue(id, j[3])
return 'queued'
