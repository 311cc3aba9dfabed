-- cancel.lua: cancel job ARGV[2]. A queued or retry-waiting job is cancelled at once; a running one
-- is marked cancelled and keeps its (world, renderer) lock until its agent confirms the renderer
-- is gone (finish.lua), so a cancelled render never overlaps the next one.
-- Returns 'cancelled', 'cancelling', 'missing' or 'final:<state>'.
local id = ARGV[2]
local k = job_key(id)
local j = redis.call('HMGET', k, 'state', 'entry', 'waiting_on', 'world', 'renderer')
if not j[1] then return 'missing' end
if j[1] == 'queued' then
  drop_entry(j[2])
  if j[3] and j[3] ~= '' then redis.call('LREM', waiting_key(j[4], j[5]), 0, id) end
  finalize(id, 'cancelled', nil, nil)
  return 'cancelled'
end
if j[1] == 'failed' then
  redis.call('ZREM', P .. 'delayed', id)
  finalize(id, 'cancelled', nil, nil)
  return 'cancelled'
end
if j[1] == 'running' then
  redis.call('HSET', k, 'state', 'cancelled', 'stopping', '1', 'updated_at', NOW)
  return 'cancelling'
end
return 'final:' .. j[1]
