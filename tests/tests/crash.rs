//! Agent crashes and fencing: `kill -9` mid-render, restart with the same worker id.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use renderfleet_shared::fleet::{Finished, Outcome};
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn kill9_mid_render_then_restart_same_id_succeeds_exactly_once() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("crash");
    let site = Site::new(&["w1"]).unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    let mut agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
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
            "seconds=3",
            "--param",
            "steps=3",
        ],
    );
    wait_state(&fleet, &id, "running", T).await;
    let old_pid = wait_for(T, "renderer pid", || async {
        renderer_pid(&site, "w1", &id, 1)
    })
    .await;
    // The renderer's pid reaches the job record before we pull the plug.
    wait_for(T, "pid on the job", || async {
        let mut c = redis.conn().await.ok()?;
        let pid: Option<String> = redis::AsyncCommands::hget(&mut c, fleet.keys().job(&id), "pid")
            .await
            .ok()?;
        pid.filter(|p| !p.is_empty())
    })
    .await;

    agent.kill9();
    // The renderer outlives its agent (own process group) until the restarted agent settles it.
    assert!(
        pid_alive(old_pid),
        "renderer should survive a kill -9 of its agent"
    );
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    wait_for(T, "leftover renderer killed", || async {
        (!pid_alive(old_pid)).then_some(())
    })
    .await;

    let done = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!(done.attempt, 2);
    // The render completed exactly once, by the second attempt; the first never finished.
    assert_eq!(completions(&site, "w1"), [format!("{id} 2")]);
    let stats = fleet.worker_stats("a1").await.unwrap();
    assert_eq!(stats.get("jobs_succeeded"), Some(&1));
    assert_eq!(stats.get("jobs_lost"), Some(&1));

    // A late completion of the stale first attempt is rejected and changes nothing.
    let late = fleet
        .finish(&id, 1, "a1", Outcome::Failed, Some(1), "late")
        .await
        .unwrap();
    assert_eq!(late, Finished::Stale("succeeded".into()));
    let after = fleet.job(&id).await.unwrap().unwrap();
    assert_eq!(after.state.as_str(), "succeeded");
    assert_eq!(after.attempt, 2);
    assert_eq!(after.error, None);
}

#[tokio::test]
async fn stale_attempt_cannot_overwrite_a_newer_one() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("fence");
    let fleet = redis.fleet(&ns).await.unwrap();
    fleet.ensure_groups().await.unwrap();
    let profiles = fleet.profiles().await.unwrap();
    let spec = renderfleet_shared::job::JobSpec {
        world: "w".into(),
        renderer: "noop".into(),
        ..Default::default()
    };
    let id = fleet.submit(&spec, &profiles).await.unwrap().id;
    // Worker x takes attempt 1, then loses it (as a reclaim would); worker y takes attempt 2.
    let (c1, _) = fleet.claim("x", 1).await.unwrap();
    assert_eq!((c1[0].id.as_str(), c1[0].attempt), (id.as_str(), 1));
    assert_eq!(
        fleet
            .finish(&id, 1, "x", Outcome::Lost, None, "lost")
            .await
            .unwrap(),
        Finished::Recorded("queued".into())
    );
    let (c2, _) = fleet.claim("y", 1).await.unwrap();
    assert_eq!(c2[0].attempt, 2);
    // x's late result, progress and completion are all refused.
    assert_eq!(
        fleet
            .update(
                &id,
                1,
                "x",
                &[("progress", "50".into())],
                &["late line".into()]
            )
            .await
            .unwrap(),
        "superseded"
    );
    assert_eq!(
        fleet
            .finish(&id, 1, "x", Outcome::Succeeded, Some(0), "")
            .await
            .unwrap(),
        Finished::Stale("running".into())
    );
    // Right attempt, wrong worker: refused too.
    assert_eq!(
        fleet
            .finish(&id, 2, "x", Outcome::Succeeded, Some(0), "")
            .await
            .unwrap(),
        Finished::Stale("running".into())
    );
    let j = fleet.job_with_log(&id).await.unwrap().unwrap();
    assert_eq!(
        (j.state.as_str(), j.attempt, j.worker.as_deref()),
        ("running", 2, Some("y"))
    );
    assert!(!j.log.iter().any(|l| l == "late line"));
    assert_eq!(
        fleet
            .finish(&id, 2, "y", Outcome::Succeeded, Some(0), "")
            .await
            .unwrap(),
        Finished::Recorded("succeeded".into())
    );
}
