-- leader.lua: writes only the current leader may make. Every call first checks that ARGV[2] still
-- holds the lease, so a deposed coordinator cannot act on a stale lease.
-- ARGV: prefix, coordinator id, op, args...
--   drain WORKER TTL_MS DEADLINE_MS REASON   ask a worker to drain; remember its deadline
--   undrain WORKER                           forget a drain (the worker is gone)
--   history JSON                             store the policy's memory
--   warming WORKER                           a backend started WORKER (warm-up starts now)
--   unwarm WORKER                            WORKER heartbeated or failed to start
--   event field value ...                    append to the events stream
--   schedule NAME EXPECTED_JSON NEW_JSON      compare-and-set a schedule
-- Returns 'ok', 'not-leader' or 'conflict'.
if redis.call('GET', P .. 'leader') ~= ARGV[2] then return 'not-leader' end
local op = ARGV[3]
if op == 'drain' then
  redis.call('SET', P .. 'worker:' .. ARGV[4] .. ':drain', ARGV[7], 'PX', ARGV[5])
  redis.call('HSET', P .. 'draining', ARGV[4], ARGV[6])
elseif op == 'undrain' then
  redis.call('DEL', P .. 'worker:' .. ARGV[4] .. ':drain')
  redis.call('HDEL', P .. 'draining', ARGV[4])
elseif op == 'history' then
  redis.call('HSET', P .. 'scaling', 'history', ARGV[4])
elseif op == 'warming' then
  redis.call('HSET', P .. 'warming', ARGV[4], NOW)
elseif op == 'unwarm' then
  redis.call('HDEL', P .. 'warming', ARGV[4])
elseif op == 'event' then
  local fields = { 'leader', ARGV[2] }
  for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', 10000, '*', unpack(fields))
elseif op == 'schedule' then
  local cur = redis.call('HGET', P .. 'schedules', ARGV[4])
  if cur ~= ARGV[5] then return 'conflict' end
  redis.call('HSET', P .. 'schedules', ARGV[4], ARGV[6])
else
  return redis.error_reply('unknown leader op ' .. tostring(op))
end
return 'ok'
