-- lib.lua: helpers prepended to every renderfleet script (see shared/src/scripts.rs).
--
-- Every key lives under the fleet prefix ARGV[1] = "{<ns>}:". The hash tag puts a whole fleet in one
-- Redis Cluster slot, so building keys from the prefix inside a script stays legal there.
-- Time always comes from the Redis server (TIME), so all timestamps of a fleet share one clock.
local P = ARGV[1]
local GROUP = 'workers'
local LOG_LINES = 200
local MAX_BACKOFF_MS = 3600000
local PRIORITIES = { 'high', 'normal', 'low' }
-- Upper bounds (seconds) of the job duration histogram; must match shared::keys::DURATION_BUCKETS.
local DURATION_BUCKETS = { 1, 10, 60, 300, 900, 3600, 14400, 43200, 86400 }

local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Microseconds as a decimal string (a plain number would be printed in exponent notation).
local NOW_US = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))

local function job_key(id) return P .. 'job:' .. id end
local function stream_key(prio) return P .. 'stream:' .. prio end
-- A job locks its (world, renderer); a shard of a sharded render locks only its own tile:
-- (world, renderer, shard).
local function lock_name(world, renderer, shard)
  if shard and shard ~= '' then return world .. ':' .. renderer .. ':' .. shard end
  return world .. ':' .. renderer
end
local function lock_key(world, renderer, shard) return P .. 'lock:' .. lock_name(world, renderer, shard) end
local function waiting_key(world, renderer, shard) return P .. 'waiting:' .. lock_name(world, renderer, shard) end
local function stats_key(worker) return P .. 'worker:' .. worker .. ':stats' end

-- Value of `name` in a stream entry's flat field list, or nil.
local function entry_field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- Append a fresh stream entry for job `id` and make it the job's only live entry.
local function enqueue(id, prio)
  if prio ~= 'high' and prio ~= 'low' then prio = 'normal' end
  local eid = redis.call('XADD', stream_key(prio), '*', 'job', id)
  redis.call('HSET', job_key(id), 'state', 'queued', 'entry', prio .. '|' .. eid, 'queued_at', NOW,
    'updated_at', NOW, 'worker', '', 'waiting_on', '', 'stopping', '')
  return eid
end

-- Create job record `id` from spec field/value pairs `fields` and queue it at priority `prio`.
local function create_job(id, prio, fields)
  if prio ~= 'high' and prio ~= 'low' then prio = 'normal' end
  local eid = redis.call('XADD', stream_key(prio), '*', 'job', id)
  local all = { 'id', id, 'state', 'queued', 'entry', prio .. '|' .. eid, 'attempt', 0, 'free_attempts', 0,
    'created_at', NOW, 'created_us', NOW_US, 'queued_at', NOW, 'updated_at', NOW, 'progress', 0 }
  for i = 1, #fields do all[#all + 1] = fields[i] end
  redis.call('HSET', job_key(id), unpack(all))
end

-- Acknowledge and delete a stream entry given as "<priority>|<entry id>".
local function drop_entry(entry)
  if not entry or entry == '' then return end
  local sep = string.find(entry, '|', 1, true)
  if not sep then return end
  local s = stream_key(string.sub(entry, 1, sep - 1))
  local eid = string.sub(entry, sep + 1)
  redis.call('XACK', s, GROUP, eid)
  redis.call('XDEL', s, eid)
end

-- Does job `holder` still own its (world, renderer) lock? A running job does, and so does a cancelled
-- one whose renderer has not been confirmed stopped yet.
-- A sharded render's parent keeps it from planning until its final step is done, including while
-- its shards render and while the final step waits in the queue or for a retry.
local function holds_lock(holder)
  local h = redis.call('HMGET', job_key(holder), 'state', 'stopping', 'stage')
  return h[1] == 'running' or h[1] == 'sharded' or (h[1] == 'cancelled' and h[2] == '1')
    or ((h[1] == 'queued' or h[1] == 'failed') and h[3] == 'finalize')
end

-- Release job `id`'s lock and queue the first job that waits for it.
-- Queue the first job still waiting for the (world, renderer[, shard]) lock.
local function wake_next(world, renderer, shard)
  local wk = waiting_key(world, renderer, shard)
  while true do
    local nxt = redis.call('LPOP', wk)
    if not nxt then return end
    local st = redis.call('HMGET', job_key(nxt), 'state', 'priority', 'waiting_on')
    if st[1] == 'queued' and st[3] ~= '' then
      enqueue(nxt, st[2])
      return
    end
  end
end

local function release_lock(id, world, renderer, shard)
  local lk = lock_key(world, renderer, shard)
  if redis.call('GET', lk) ~= id then return end
  redis.call('DEL', lk)
  wake_next(world, renderer, shard)
end

-- Shard `id` of a sharded render reached final state `state`: count it on its parent, and when the
-- last shard is in, queue the parent's final step. Only shards of the parent's current run count,
-- each once (a dead shard retried by hand to success moves from failed to done).
local function child_ended(id, state)
  local c = redis.call('HMGET', job_key(id), 'parent', 'run', 'counted', 'error', 'shard')
  if not c[1] or c[1] == '' then return end
  local pk = job_key(c[1])
  local p = redis.call('HMGET', pk, 'state', 'run', 'children_total', 'priority')
  if p[1] ~= 'sharded' or p[2] ~= c[2] then return end
  local ok = state == 'succeeded'
  if c[3] == 'succeeded' or (c[3] == 'failed' and not ok) then return end
  if c[3] == 'failed' then redis.call('HINCRBY', pk, 'children_failed', -1) end
  redis.call('HSET', job_key(id), 'counted', ok and 'succeeded' or 'failed')
  if ok then
    redis.call('HINCRBY', pk, 'children_done', 1)
  else
    redis.call('HINCRBY', pk, 'children_failed', 1)
    local line = 'shard ' .. (c[5] or id) .. ' ' .. state .. ': ' .. (c[4] or '')
    redis.call('HSETNX', pk, 'first_child_error', line)
    redis.call('RPUSH', pk .. ':log', line)
    redis.call('LTRIM', pk .. ':log', -LOG_LINES, -1)
  end
  local n = redis.call('HMGET', pk, 'children_done', 'children_failed')
  local ended = (tonumber(n[1]) or 0) + (tonumber(n[2]) or 0)
  local total = tonumber(p[3]) or 0
  local pct = 100
  if total > 0 then pct = math.floor(ended * 100 / total) end
  redis.call('HSET', pk, 'progress', pct, 'phase', 'shards ' .. ended .. '/' .. total, 'updated_at', NOW)
  if ended >= total then
    redis.call('HSET', pk, 'stage', 'finalize', 'phase', 'final step queued')
    enqueue(c[1], p[4])
  end
end

-- Forget index entries of job records whose retention has run out. Bounded work, and only on
-- about one call in eight (the time's low bits), which still outpaces expiry by far.
local function cleanup_expired()
  if NOW % 8 ~= 0 then return end
  local ids = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', NOW, 'LIMIT', 0, 64)
  for _, id in ipairs(ids) do
    redis.call('ZREM', P .. 'jobs', id)
    redis.call('ZREM', P .. 'expiry', id)
    redis.call('ZREM', P .. 'dead', id)
  end
end

-- Put job `id` into a final state, with extra field/value pairs; its record and log expire after
-- the job's retention (`retention_ms`, passed in by callers that already read it, like
-- `started_at`).
local function finalize(id, state, retention_ms, extra, started_at)
  local k = job_key(id)
  local ret = tonumber(retention_ms) or tonumber(redis.call('HGET', k, 'retention_ms')) or 604800000
  local fields = { 'state', state, 'finished_at', NOW, 'updated_at', NOW, 'entry', '', 'stopping', '',
    'waiting_on', '' }
  if extra then
    for i = 1, #extra do fields[#fields + 1] = extra[i] end
  end
  redis.call('HSET', k, unpack(fields))
  if state == 'dead' then redis.call('ZADD', P .. 'dead', NOW, id) end
  redis.call('HINCRBY', P .. 'stats', 'jobs_' .. state, 1)
  if state == 'succeeded' then
    local started = tonumber(started_at) or tonumber(redis.call('HGET', k, 'started_at'))
    if started then
      -- One bucket per job (the smallest that fits); /metrics adds them up into le= buckets.
      local secs = (NOW - started) / 1000
      local bucket = 'b_inf'
      for _, le in ipairs(DURATION_BUCKETS) do
        if secs <= le then
          bucket = 'b_' .. le
          break
        end
      end
      local d = P .. 'stats:durations'
      redis.call('HINCRBY', d, bucket, 1)
      redis.call('HINCRBY', d, 'sum_ms', NOW - started)
    end
  end
  redis.call('PEXPIRE', k, ret)
  redis.call('PEXPIRE', k .. ':log', ret)
  redis.call('PEXPIRE', k .. ':children', ret)
  redis.call('ZADD', P .. 'expiry', NOW + ret, id)
  child_ended(id, state)
  cleanup_expired()
end

-- Turn delivered stream entry (prio, eid) of job `id` into a running attempt on `worker`.
-- Returns the claim as a JSON string, or nil when the entry was stale or the job has to wait for
-- its (world, renderer) lock.
local function start(worker, prio, eid, id)
  local entry = prio .. '|' .. eid
  if not id then
    drop_entry(entry)
    return nil
  end
  local k = job_key(id)
  local j = redis.call('HMGET', k, 'state', 'entry', 'world', 'renderer', 'attempt', 'params',
    'timeout_ms', 'priority', 'created_at', 'shard', 'stage', 'parent', 'run')
  if j[1] ~= 'queued' or j[2] ~= entry or not j[3] or not j[4] then
    drop_entry(entry)
    return nil
  end
  local lk = lock_key(j[3], j[4], j[10])
  local holder = redis.call('GET', lk)
  if holder and holder ~= id and holds_lock(holder) then
    drop_entry(entry)
    redis.call('RPUSH', waiting_key(j[3], j[4], j[10]), id)
    redis.call('HSET', k, 'entry', '', 'waiting_on', holder, 'updated_at', NOW)
    return nil
  end
  redis.call('SET', lk, id)
  local attempt = (tonumber(j[5]) or 0) + 1
  if j[11] == 'finalize' then
    -- A sharded render's final step keeps its shard totals and progress on show, and its start
    -- time (the render's duration runs from planning to the end of the final step).
    redis.call('HSET', k, 'state', 'running', 'attempt', attempt, 'worker', worker,
      'updated_at', NOW, 'phase', 'final step', 'error', '', 'exit_code', '',
      'next_attempt_at', '', 'pid', '', 'pstart', '', 'host', '')
  elseif attempt == 1 then
    redis.call('HSET', k, 'state', 'running', 'attempt', attempt, 'worker', worker, 'started_at', NOW,
      'started_us', NOW_US, 'updated_at', NOW)
  else
    -- A later attempt starts from a clean slate: nothing of the last one shows as current.
    redis.call('HSET', k, 'state', 'running', 'attempt', attempt, 'worker', worker, 'started_at', NOW,
      'started_us', NOW_US, 'updated_at', NOW, 'finished_at', '', 'progress', 0, 'phase', '',
      'waiting_on', '', 'error', '', 'exit_code', '', 'next_attempt_at', '', 'pid', '', 'pstart', '',
      'host', '')
  end
  return cjson.encode({ id = id, attempt = attempt, world = j[3], renderer = j[4],
    params = j[6] or '{}', timeout_ms = j[7] or '', priority = j[8] or 'normal',
    created_at = tonumber(j[9]) or 0, started_at = NOW, stage = j[11] or '', parent = j[12] or '',
    shard = j[10] or '', run = tonumber(j[13]) or 0 })
end

-- Count `n` jobs taken by `worker` (once per script call, not per job).
local function count_taken(worker, n)
  if n > 0 then redis.call('HINCRBY', stats_key(worker), 'jobs_taken', n) end
end
