-- retry.lua: requeue a dead, cancelled or retry-waiting job now, with a fresh attempt budget.
-- Returns 'queued', 'missing' or 'invalid:<state>'.
local id = ARGV[2]
local k = job_key(id)
local j = redis.call('HMGET', k, 'state', 'attempt', 'priority', 'stopping', 'created_at')
if not j[1] then return 'missing' end
if not (j[1] == 'dead' or j[1] == 'failed' or (j[1] == 'cancelled' and j[4] ~= '1')) then
  return 'invalid:' .. j[1]
end
redis.call('ZREM', P .. 'delayed', id)
redis.call('ZREM', P .. 'dead', id)
redis.call('ZREM', P .. 'expiry', id)
redis.call('PERSIST', k)
redis.call('PERSIST', k .. ':log')
redis.call('ZADD', P .. 'jobs', 'NX', tonumber(j[5]) or NOW, id)
-- A sharded render starts over from planning (which skips shards whose output is current).
redis.call('HSET', k, 'free_attempts', tonumber(j[2]) or 0, 'error', '', 'exit_code', '',
  'next_attempt_at', '', 'finished_at', '', 'stage', '')
enqueue(id, j[3])
return 'queued'
