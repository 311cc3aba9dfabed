-- heartbeat.lua: write worker ARGV[2]'s state hash (TTL ARGV[3] ms), index it by last heartbeat,
-- append it to the heartbeat stream (trimmed to about ARGV[4] entries) and keep its counters.
-- ARGV: prefix, worker, ttl_ms, stream_len, max_running, then field/value pairs.
-- The timestamp is the Redis server's clock, the same clock job records use.
-- Returns {server time ms, drain request} where the drain request is '' or why the coordinator
-- asked this worker to drain.
local worker, ttl, len = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = { 'last_heartbeat', NOW }
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
local wk = P .. 'worker:' .. worker
redis.call('DEL', wk)
redis.call('HSET', wk, 'id', worker, unpack(fields))
redis.call('PEXPIRE', wk, ttl)
redis.call('ZADD', P .. 'workers', NOW, worker)
redis.call('XADD', P .. 'heartbeats', 'MAXLEN', '~', len, '*', 'worker', worker, unpack(fields))
local sk = stats_key(worker)
local peak = tonumber(redis.call('HGET', sk, 'max_running')) or 0
if tonumber(ARGV[5]) > peak then redis.call('HSET', sk, 'max_running', ARGV[5]) end
redis.call('PEXPIRE', sk, 604800000)
local drain = redis.call('GET', wk .. ':drain')
return { NOW, drain or '' }
