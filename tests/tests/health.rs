//! Worker health: `renderfleet-agent health` for HEALTHCHECK, the heartbeat record, and the
//! degraded state (memory above the threshold stops pulling).
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use renderfleet_tests::*;

const T: Duration = Duration::from_secs(20);

fn health(url: &str, ns: &str, id: &str) -> std::process::Output {
    Command::new(bin("renderfleet-agent"))
        .args(["health", "--worker-id", id, "--max-age", "1s"])
        .env("REDIS_URL", url)
        .env("RENDERFLEET_NAMESPACE", ns)
        .output()
        .unwrap()
}

#[tokio::test]
async fn health_follows_the_heartbeat() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("health");
    let site = Site::new(&[]).unwrap();
    let mut agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("h1").capacity(3))
        .await
        .unwrap();
    let out = health(&redis.url(), &ns, "h1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The heartbeat carries the documented fields.
    let w: serde_json::Value =
        serde_json::from_str(&cli_ok(&redis.url(), &ns, &["worker", "h1", "--json"])).unwrap();
    for f in [
        "id",
        "status",
        "running",
        "capacity",
        "memory_used",
        "memory_limit",
        "last_heartbeat",
    ] {
        assert!(w.get(f).is_some(), "worker JSON lacks {f}: {w}");
    }
    assert_eq!(w["capacity"], 3);
    assert_eq!(w["status"], "healthy");
    // `fake` and `replay` run here; the built-in `overviewer` profile's program does not exist.
    let renderers: Vec<&str> = w["renderers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        renderers.contains(&"fake") && renderers.contains(&"noop"),
        "{renderers:?}"
    );
    assert!(!renderers.contains(&"overviewer"), "{renderers:?}");
    assert!(w["memory_limit"].as_u64().unwrap() >= w["memory_used"].as_u64().unwrap());

    agent.kill9();
    // No heartbeat for longer than --max-age: unhealthy, exit 1.
    wait_for(T, "health to fail", || async {
        (!health(&redis.url(), &ns, "h1").status.success()).then_some(())
    })
    .await;
    let out = health(&redis.url(), &ns, "h1");
    assert_eq!(out.status.code(), Some(1));
    let mut down = redis;
    let url = down.url();
    down.stop();
    let out = health(&url, &ns, "h1");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot reach Redis"));
}

#[tokio::test]
async fn degraded_agent_keeps_running_jobs_but_pulls_nothing_new() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("degraded");
    let site = Site::new(&["w"]).unwrap();
    // A threshold below any real usage: the agent's own memory reading puts it over.
    let _a = Agent::start_ready(
        &redis.url(),
        &ns,
        &site,
        AgentOpts::new("d1").arg("--memory-threshold").arg("0.0001"),
    )
    .await
    .unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    let w = wait_for(T, "degraded status", || async {
        fleet
            .worker("d1")
            .await
            .ok()
            .flatten()
            .filter(|w| w.status.as_str() == "degraded")
    })
    .await;
    assert!(w.reason.unwrap_or_default().contains("memory at"));
    let id = cli_ok(
        &redis.url(),
        &ns,
        &["submit", "--world", "w", "--renderer", "noop"],
    );
    let submitted = fleet.job(&id).await.unwrap().unwrap().created_at_ms;
    // Three heartbeats later (200ms interval) it still has not pulled the job.
    wait_for(T, "three heartbeats after the submit", || async {
        fleet
            .worker("d1")
            .await
            .ok()
            .flatten()
            .filter(|w| w.last_heartbeat_ms > submitted + 600)
    })
    .await;
    assert_eq!(
        fleet.job(&id).await.unwrap().unwrap().state.as_str(),
        "queued"
    );
    // A healthy agent takes it.
    let _b = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("ok"))
        .await
        .unwrap();
    let done = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!(done.worker.as_deref(), Some("ok"));
}
