-- cancel.lua: cancel job ARGV[2]. A queued or retry-waiting job is cancelled at once; a running one
-- is marked cancelled and keeps its lock until its agent confirms the renderer is gone
-- (finish.lua), so a cancelled render never overlaps the next one. Cancelling a sharded render
-- cancels its shards the same way and frees its (world, renderer) lock.
-- Returns 'cancelled', 'cancelling', 'missing' or 'final:<state>'.
local function cancel_one(id)
  local k = job_key(id)
  local j = redis.call('HMGET', k, 'state', 'entry', 'waiting_on', 'world', 'renderer', 'shard', 'stage')
  if not j[1] then return 'missing' end
  if j[1] == 'queued' or j[1] == 'failed' then
    drop_entry(j[2])
    redis.call('ZREM', P .. 'delayed', id)
    if j[3] and j[3] ~= '' then redis.call('LREM', waiting_key(j[4], j[5], j[6]), 0, id) end
    finalize(id, 'cancelled', nil, nil)
    -- Free the lock if this job holds it (a sharded render's final step); and if this job was the
    -- waiter the last release woke, or the lock is otherwise free, wake the next one in its place.
    release_lock(id, j[4], j[5], j[6])
    local holder = redis.call('GET', lock_key(j[4], j[5], j[6]))
    if not holder or not holds_lock(holder) then wake_next(j[4], j[5], j[6]) end
    return 'cancelled'
  end
  if j[1] == 'running' then
    redis.call('HSET', k, 'state', 'cancelled', 'stopping', '1', 'updated_at', NOW)
    return 'cancelling'
  end
  if j[1] == 'sharded' then
    finalize(id, 'cancelled', nil, nil)
    release_lock(id, j[4], j[5], j[6])
    for _, cid in ipairs(redis.call('LRANGE', k .. ':children', 0, -1)) do cancel_one(cid) end
    return 'cancelled'
  end
  return 'final:' .. j[1]
end
return cancel_one(ARGV[2])
