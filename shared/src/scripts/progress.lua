-- progress.lua: fenced update of a running attempt: a few whitelisted fields and log lines.
-- ARGV: prefix, id, attempt, worker, n, n field/value pairs, then log lines.
-- Returns the job's state ('running' when the update was taken, else what the job is now:
-- the agent stops the render on anything but 'running').
local id, attempt, worker = ARGV[2], ARGV[3], ARGV[4]
local k = job_key(id)
local j = redis.call('HMGET', k, 'state', 'attempt', 'worker')
if not j[1] then return 'missing' end
if j[1] ~= 'running' or j[2] ~= attempt or j[3] ~= worker then
  if j[1] == 'running' then return 'superseded' end
  return j[1]
end
local allowed = { progress = true, phase = true, pid = true, pstart = true, host = true }
local n = tonumber(ARGV[5]) or 0
local pairs_ = { 'updated_at', NOW }
for i = 6, 5 + 2 * n, 2 do
  if allowed[ARGV[i]] then
    pairs_[#pairs_ + 1] = ARGV[i]
    pairs_[#pairs_ + 1] = ARGV[i + 1]
  end
end
redis.call('HSET', k, unpack(pairs_))
local first = 6 + 2 * n
if #ARGV >= first then
  local lines = {}
  for i = first, #ARGV do lines[#lines + 1] = ARGV[i] end
  redis.call('RPUSH', k .. ':log', unpack(lines))
  redis.call('LTRIM', k .. ':log', -LOG_LINES, -1)
end
return 'running'
