-- lease.lua: take or renew the coordinator leader lease.
-- ARGV: prefix, coordinator id, ttl ms. Returns {1, epoch} when this coordinator leads (the epoch
-- changes with every new leader), {0, holder} when another one does.
local me, ttl = ARGV[2], tonumber(ARGV[3])
local k = P .. 'leader'
local cur = redis.call('GET', k)
if cur == me then
  redis.call('PEXPIRE', k, ttl)
  return { 1, redis.call('GET', k .. ':epoch') or '0' }
end
if cur then return { 0, cur } end
redis.call('SET', k, me, 'PX', ttl)
local epoch = redis.call('INCR', k .. ':epoch')
return { 1, tostring(epoch) }
