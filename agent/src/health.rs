//! `renderfleet-agent health`: exit 0 when Redis answers and this worker's heartbeat is fresh.

use std::time::Duration;

use renderfleet_shared::Fleet;

/// Check the worker's heartbeat against the Redis server's clock.
pub async fn check(
    redis_url: &str,
    ns: &str,
    worker: &str,
    max_age: Duration,
) -> anyhow::Result<String> {
    let fleet = tokio::time::timeout(Duration::from_secs(5), Fleet::connect(redis_url, ns))
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within 5s"))??;
    let mut c = fleet.conn();
    let (last, status, (secs, micros)): (Option<u64>, Option<String>, (u64, u64)) = redis::pipe()
        .hget(fleet.keys().worker(worker), "last_heartbeat")
        .hget(fleet.keys().worker(worker), "status")
        .cmd("TIME")
        .query_async(&mut c)
        .await
        .map_err(|e| fleet.err(e))?;
    let now = secs * 1000 + micros / 1000;
    let Some(last) = last else {
        anyhow::bail!("worker '{worker}' has no heartbeat in Redis");
    };
    let age = Duration::from_millis(now.saturating_sub(last));
    anyhow::ensure!(
        age <= max_age,
        "worker '{worker}' last heartbeat is {} old (limit {})",
        renderfleet_shared::time::human(age),
        renderfleet_shared::time::human(max_age)
    );
    let status = status.unwrap_or_default();
    anyhow::ensure!(
        status != "unhealthy" && status != "stopped",
        "worker '{worker}' is {status}"
    );
    Ok(format!(
        "worker '{worker}' is {status}; heartbeat {}ms old",
        age.as_millis()
    ))
}
