-- finish.lua: record the outcome of attempt ARGV[3] of job ARGV[2] run by worker ARGV[4].
-- The attempt number is a fencing token: an outcome from any attempt but the current one, or from
-- another worker, is rejected and changes nothing.
-- ARGV: prefix, id, attempt, worker, outcome, exit code, error.
-- outcome: succeeded | failed (retry with backoff, then dead) | fatal (dead at once) |
--          handback (queued again, attempt not charged) | lost (queued again at once, charged)
-- Returns the job's new state, or 'stale:<state>' / 'missing'.
local id, attempt, worker, outcome = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = job_key(id)
local j = redis.call('HMGET', k, 'state', 'attempt', 'worker', 'entry', 'world', 'renderer', 'priority',
  'max_attempts', 'free_attempts', 'backoff_ms', 'stopping', 'retention_ms', 'started_at', 'shard', 'stage',
  'children_total', 'children_failed', 'first_child_error')
if not j[1] then return 'missing' end
if j[2] ~= attempt or j[3] ~= worker then return 'stale:' .. j[1] end
local cancelled = j[1] == 'cancelled' and j[11] == '1'
if j[1] ~= 'running' and not cancelled then return 'stale:' .. j[1] end

drop_entry(j[4])
local charged = tonumber(attempt) - (tonumber(j[9]) or 0)
local max = tonumber(j[8]) or 3
local final = cancelled or outcome == 'succeeded' or outcome == 'fatal' or
  ((outcome == 'failed' or outcome == 'lost') and charged >= max)
-- A sharded render's final step that will run again keeps the world: another render of it must not
-- plan before this one's zoom levels are built.
if final or j[15] ~= 'finalize' then release_lock(id, j[5], j[6], j[14]) end
redis.call('HINCRBY', stats_key(worker), 'jobs_' .. outcome, 1)
if cancelled then
  finalize(id, 'cancelled', j[12], { 'exit_code', ARGV[6], 'error', 'cancelled' })
  return 'cancelled'
end
if outcome == 'succeeded' and j[15] == 'finalize' and (tonumber(j[17]) or 0) > 0 then
  -- The map was built from the shards that rendered; the render as a whole did not succeed.
  finalize(id, 'dead', j[12], { 'exit_code', ARGV[6], 'error', j[17] .. ' of ' .. (j[16] or '?') ..
    ' shards failed (first: ' .. (j[18] or '?') .. '); the rest are in the output' })
  return 'dead'
end
if outcome == 'succeeded' then
  finalize(id, 'succeeded', j[12], { 'exit_code', ARGV[6], 'error', '', 'progress', 100 }, j[13])
  return 'succeeded'
end
if outcome == 'handback' then
  redis.call('HSET', k, 'exit_code', ARGV[6], 'error', ARGV[7], 'free_attempts', (tonumber(j[9]) or 0) + 1)
  enqueue(id, j[7])
  return 'queued'
end
if outcome == 'fatal' or charged >= max then
  finalize(id, 'dead', j[12], { 'exit_code', ARGV[6], 'error', ARGV[7] })
  return 'dead'
end
redis.call('HSET', k, 'exit_code', ARGV[6], 'error', ARGV[7])
if outcome == 'lost' then
  enqueue(id, j[7])
  return 'queued'
end
local delay = (tonumber(j[10]) or 10000) * (2 ^ (charged - 1))
if delay > MAX_BACKOFF_MS then delay = MAX_BACKOFF_MS end
delay = math.floor(delay)
redis.call('HSET', k, 'state', 'failed', 'next_attempt_at', NOW + delay, 'updated_at', NOW, 'entry', '')
redis.call('HINCRBY', P .. 'stats', 'attempts_failed', 1)
redis.call('ZADD', P .. 'delayed', NOW + delay, id)
return 'failed'
