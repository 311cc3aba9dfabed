//! Graceful shutdown: SIGTERM drains; jobs that outlive the drain timeout are handed back.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use renderfleet_tests::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_then_exits_0() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("drain-ok");
    let site = Site::new(&["w1"]).unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    let mut agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1").drain("20s"))
        .await
        .unwrap();
    let id = cli_ok(
        &redis.url(),
        &ns,
        &[
            "submit",
            "--world",
            "w1",
            "--renderer",
            "fake",
            "--param",
            "seconds=1.5",
        ],
    );
    wait_state(&fleet, &id, "running", T).await;
    wait_for(T, "renderer started", || async {
        renderer_pid(&site, "w1", &id, 1)
    })
    .await;
    agent.term();
    // While draining it says so, and takes nothing new.
    wait_for(T, "draining status", || async {
        fleet
            .worker("a1")
            .await
            .ok()
            .flatten()
            .filter(|w| w.status.as_str() == "draining")
    })
    .await;
    let later = cli_ok(
        &redis.url(),
        &ns,
        &["submit", "--world", "w2", "--renderer", "noop"],
    );
    let status = agent.wait_exit(T).unwrap();
    assert!(
        status.success(),
        "agent exited with {status}; log:\n{}",
        agent.log_text()
    );
    let j = fleet.job(&id).await.unwrap().unwrap();
    assert_eq!((j.state.as_str(), j.attempt), ("succeeded", 1));
    assert_eq!(completions(&site, "w1"), [format!("{id} 1")]);
    assert_eq!(
        fleet.job(&later).await.unwrap().unwrap().state.as_str(),
        "queued"
    );
    // Clean exit: out of the worker index.
    assert!(fleet.workers().await.unwrap().iter().all(|w| w.id != "a1"));
}

#[tokio::test]
async fn drain_timeout_hands_the_job_back_to_another_agent() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("drain-handback");
    let site = Site::new(&["w1"]).unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    let mut a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a").drain("300ms"))
        .await
        .unwrap();
    let id = cli_ok(
        &redis.url(),
        &ns,
        &[
            "submit",
            "--world",
            "w1",
            "--renderer",
            "fake",
            "--param",
            "seconds=2",
            "--max-attempts",
            "1",
        ],
    );
    wait_state(&fleet, &id, "running", T).await;
    let pid = wait_for(T, "renderer started", || async {
        renderer_pid(&site, "w1", &id, 1)
    })
    .await;
    a.term();
    let status = a.wait_exit(T).unwrap();
    assert!(
        status.success(),
        "agent exited with {status}; log:\n{}",
        a.log_text()
    );
    assert!(!pid_alive(pid), "the handed-back render was stopped");
    // Handed back at once, not charged: with max-attempts 1 it is queued again, not dead.
    let j = fleet.job(&id).await.unwrap().unwrap();
    assert_eq!(j.state.as_str(), "queued", "{j:?}");
    let _b = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("b"))
        .await
        .unwrap();
    let done = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!((done.attempt, done.worker.as_deref()), (2, Some("b")));
    assert_eq!(completions(&site, "w1"), [format!("{id} 2")]);
}
