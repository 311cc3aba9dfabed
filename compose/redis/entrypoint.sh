#!/bin/sh
# Writes the ACL users from the environment, then execs redis-server as user redis.
#   REDIS_ADMIN_PASSWORD        the admin CLI / HTTP API: every key of the fleet
#   REDIS_COORDINATOR_PASSWORD  the coordinator: every key of the fleet, no dangerous commands
#   REDIS_AGENT_PASSWORD        agents: only the commands and keys an agent needs
#   RENDERFLEET_NAMESPACE       the fleet's namespace (default rf)
# The default user is disabled.
set -eu
ns=${RENDERFLEET_NAMESPACE:-rf}
: "${REDIS_ADMIN_PASSWORD:?set REDIS_ADMIN_PASSWORD}"
: "${REDIS_COORDINATOR_PASSWORD:?set REDIS_COORDINATOR_PASSWORD}"
: "${REDIS_AGENT_PASSWORD:?set REDIS_AGENT_PASSWORD}"
p="{$ns}:"
acl=/run/renderfleet-users.acl
mkdir -p /run
umask 077
{
  # Nobody can log in as default ("off"), but it keeps its permissions: Redis 7.0 replays the AOF
  # (MULTI/EXEC from scripts) as the default user, and an empty default user loses every job on
  # restart.
  # (It gets a random password nobody knows, which also keeps protected mode quiet.)
  echo "user default off >$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n') ~* &* +@all"
  echo "user admin on >$REDIS_ADMIN_PASSWORD ~${p}* &* +@all -@dangerous +info"
  echo "user coordinator on >$REDIS_COORDINATOR_PASSWORD ~${p}* &* +@all -@dangerous"
  echo "user agent on >$REDIS_AGENT_PASSWORD" \
    "~${p}job:* ~${p}stream:* ~${p}jobs ~${p}expiry ~${p}delayed ~${p}dead ~${p}lock:* ~${p}waiting:*" \
    "~${p}worker:* ~${p}workers ~${p}heartbeats ~${p}renderers ~${p}stats ~${p}stats:durations" \
    "-@all +@connection +ping +time +evalsha +eval +script|load +script|exists" \
    "+xreadgroup +xgroup|create +xpending +xrange +xadd +xack +xdel +xlen" \
    "+hset +hmset +hsetnx +hdel +hget +hmget +hgetall +hincrby +get +set +del +exists +lpop +rpush +ltrim +lrange +lrem" \
    "+zadd +zrem +zrange +zrangebyscore +zcount +zcard +pexpire +persist +pttl"
} > "$acl"
chown redis:redis "$acl" /data
exec setpriv --reuid=redis --regid=redis --init-groups redis-server /etc/renderfleet/redis.conf --aclfile "$acl" "$@"
