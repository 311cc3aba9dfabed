-- cancel.lua: cancel job ARGV[2]. A queued or retry-waiting job is cancelled at once; a running one
-- is marked cancelled and keeps its lock until its agent confirms the renderer is gone
-- (finish.lua), so a cancelled render never overlaps the next one. Cancelling a sharded render
-- cancels its shards the same way and frees its (world, renderer) lock.
-- Returns 'cancelled', 'cancelling', 'missing' or 'final:<state>'.
local function cancel_one(id)
  local k = job_key(id)
  local j = redis.call('HMGET', k, 'state', 'entry', 'waiting_on', 'world', 'renderer', 'shard', 'stage')
  if not j[1] then return 'missing' end
  if j[1] == 'queued' then
    drop_entry(j[2])
    if j[3] and j[3] ~= '' then redis.call('LREM', waiting_key(j[4], j[5], j[6]), 0, id) end
    finalize(id, 'cancelled', nil, nil)
    if j[7] == 'finalize' then release_lock(id, j[4], j[5], j[6]) end
    return 'cancelled'
  end
  if j[1] == 'failed' then
    redis.call('ZREM', P .. 'delayed', id)
    finalize(id, 'cancelled', nil, nil)
    if j[7] == 'finalize' then release_lock(id, j[4], j[5], j[6]) end
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
