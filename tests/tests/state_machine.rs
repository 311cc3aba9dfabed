//! Job state machine end to end: real redis-server, real agent process, real CLI.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use renderfleet_tests::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn submit_run_succeed_with_progress_and_output() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("happy");
    let site = Site::new(&["w1"]).unwrap();
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
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
            "steps=4",
            "--param",
            "seconds=0.4",
        ],
    );
    assert_eq!(id.lines().count(), 1, "submit prints the id alone: {id:?}");
    let fleet = redis.fleet(&ns).await.unwrap();
    let running = wait_state(&fleet, &id, "running", T).await;
    assert_eq!(running.attempt, 1);
    assert_eq!(running.worker.as_deref(), Some("a1"));
    let done = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!(done.progress, 100.0);
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(completions(&site, "w1"), [format!("{id} 1")]);

    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&redis.url(), &ns, &["job", &id, "--json"])).unwrap();
    for field in [
        "id", "world", "renderer", "state", "attempt", "worker", "progress",
    ] {
        assert!(json.get(field).is_some(), "job JSON lacks {field}: {json}");
    }
    let log: Vec<String> = serde_json::from_value(json["log"].clone()).unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("Rendered 4 of 4.  100% complete")),
        "{log:?}"
    );
    assert_eq!(json["phase"], "1: 4/4");

    // The full output is in the agent's log dir, one file per attempt.
    let file = site
        .path()
        .join("output/.renderfleet-logs")
        .join(format!("{id}.1.log"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("Rendered 2 of 4."), "{text}");

    let listed: serde_json::Value = serde_json::from_str(&cli_ok(
        &redis.url(),
        &ns,
        &["jobs", "--state", "succeeded", "--json"],
    ))
    .unwrap();
    assert_eq!(listed.as_array().map(|a| a.len()), Some(1));
}

#[tokio::test]
async fn failures_retry_with_backoff_then_dead_then_retry_succeeds() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("retry");
    let site = Site::new(&["w1"]).unwrap();
    let out = site.output("w1", "fake");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("fail"), "").unwrap();
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
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
            "seconds=0",
            "--param",
            "steps=1",
            "--max-attempts",
            "3",
            "--backoff",
            "300ms",
        ],
    );
    let fleet = redis.fleet(&ns).await.unwrap();
    let dead = wait_state(&fleet, &id, "dead", T).await;
    assert_eq!(dead.attempt, 3);
    assert_eq!(dead.exit_code, Some(3));
    // The error quotes the renderer's last line of output.
    let error = dead.error.as_deref().unwrap_or("");
    assert!(
        error.starts_with("renderer exited with code 3: ") && error.contains("failing because"),
        "{error}"
    );
    let dead_set: Vec<String> =
        redis::AsyncCommands::zrange(&mut redis.conn().await.unwrap(), fleet.keys().dead(), 0, -1)
            .await
            .unwrap();
    assert_eq!(dead_set, std::slice::from_ref(&id));

    // Attempts were spaced by the exponential backoff: >= 300ms, then >= 600ms.
    let starts: Vec<u64> = std::fs::read_to_string(out.join(format!("attempts.{id}")))
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 3);
    assert!(starts[1] - starts[0] >= 300, "{starts:?}");
    assert!(starts[2] - starts[1] >= 600, "{starts:?}");

    // Fix the cause, retry: it runs again with a fresh budget and succeeds.
    std::fs::remove_file(out.join("fail")).unwrap();
    cli_ok(&redis.url(), &ns, &["retry", &id]);
    let ok = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!(ok.attempt, 4);
    assert_eq!(completions(&site, "w1"), [format!("{id} 4")]);
    let dead_set: Vec<String> =
        redis::AsyncCommands::zrange(&mut redis.conn().await.unwrap(), fleet.keys().dead(), 0, -1)
            .await
            .unwrap();
    assert!(dead_set.is_empty());
    // Retrying a succeeded job is refused with a clear message.
    let out = cli(&redis.url(), &ns, &["retry", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is succeeded"));
}

#[tokio::test]
async fn timeout_stops_the_renderer_and_fails_the_attempt() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("timeout");
    let site = Site::new(&["w1"]).unwrap();
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
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
            "seconds=60",
            "--timeout",
            "1s",
            "--max-attempts",
            "1",
        ],
    );
    let fleet = redis.fleet(&ns).await.unwrap();
    let dead = wait_state(&fleet, &id, "dead", T).await;
    assert_eq!(dead.error.as_deref(), Some("timed out after 1s"));
    let pid = renderer_pid(&site, "w1", &id, 1).expect("renderer started");
    wait_for(T, "renderer to be gone", || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cancel_queued_and_running_jobs() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("cancel");
    let site = Site::new(&["w1", "w2"]).unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();

    // Queued: cancelled before any agent exists; it never runs.
    let profiles = site.path().join("renderers.toml");
    let profiles = profiles.to_str().unwrap();
    let queued = cli_ok(
        &redis.url(),
        &ns,
        &[
            "submit",
            "--world",
            "w2",
            "--renderer",
            "fake",
            "--renderers",
            profiles,
        ],
    );
    let out = cli_ok(&redis.url(), &ns, &["cancel", &queued]);
    assert_eq!(out, format!("cancelled {queued}"));
    assert_eq!(
        fleet.job(&queued).await.unwrap().unwrap().state.as_str(),
        "cancelled"
    );

    // Running: the renderer process group is stopped and the job ends cancelled.
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let running = cli_ok(
        &redis.url(),
        &ns,
        &[
            "submit",
            "--world",
            "w1",
            "--renderer",
            "fake",
            "--param",
            "seconds=60",
        ],
    );
    wait_state(&fleet, &running, "running", T).await;
    let pid = wait_for(T, "renderer pid", || async {
        renderer_pid(&site, "w1", &running, 1)
    })
    .await;
    assert!(pid_alive(pid));
    let out = cli_ok(&redis.url(), &ns, &["cancel", &running]);
    assert!(out.contains("stopping"), "{out}");
    wait_for(T, "renderer to be gone", || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    // The agent confirms: the (world, renderer) lock is released and the record is final.
    wait_for(T, "cancel confirmed", || async {
        let j = fleet.job(&running).await.ok().flatten()?;
        j.finished_at.is_some().then_some(())
    })
    .await;
    let lock: Option<String> = redis::AsyncCommands::get(
        &mut redis.conn().await.unwrap(),
        fleet.keys().lock("w1", "fake"),
    )
    .await
    .unwrap();
    assert_eq!(lock, None);
    // A new job of the same world runs afterwards; the queued-then-cancelled one never ran.
    let next = cli_ok(
        &redis.url(),
        &ns,
        &[
            "submit",
            "--world",
            "w1",
            "--renderer",
            "fake",
            "--param",
            "seconds=0",
        ],
    );
    wait_state(&fleet, &next, "succeeded", T).await;
    assert!(completions(&site, "w2").is_empty());
    assert!(renderer_pid(&site, "w2", &queued, 1).is_none());
    // Cancelling a finished job is an error, exit 1, one line.
    let out = cli(&redis.url(), &ns, &["cancel", &next]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
