//! The coordinator against real Redis and real agent processes: autoscaling with the process
//! backend, reclaim of dead workers, leader election, scheduled renders, bad input.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use renderfleet_shared::job::JobSpec;
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(60);

/// Fast policy settings for tests.
fn fast_policy(url: &str, ns: &str, extra: &[&str]) {
    let mut args = vec![
        "config",
        "set",
        // Agents beat every 200ms; data counts as stale only after 1s, which a loaded CI
        // machine does not reach by accident.
        "heartbeat_interval=500ms",
        "worker_ttl=1s",
        "scale_up_cooldown=1s",
        "scale_down_cooldown=1s",
        "stabilization_window=2s",
        "drain_timeout=5s",
    ];
    args.extend_from_slice(extra);
    cli_ok(url, ns, &args);
}

#[tokio::test]
async fn queue_burst_grows_the_fleet_then_shrinks_to_min_without_interrupting_jobs() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("burst");
    let worlds: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
    let site = Site::new(&worlds.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    fast_policy(&redis.url(), &ns, &["min_workers=1", "max_workers=4"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    let _coord = Coordinator::start(&redis.url(), &ns, &site, "c1", "process", &[]).unwrap();
    // It brings the fleet up to min_workers by itself.
    wait_for(T, "one worker", || async {
        (fleet.workers().await.ok()?.len() == 1).then_some(())
    })
    .await;

    let profiles = fleet.profiles().await.unwrap();
    let mut ids = Vec::new();
    for w in &worlds {
        let spec = JobSpec {
            world: w.clone(),
            renderer: "fake".into(),
            params: [
                ("seconds".to_string(), "0.6".to_string()),
                ("steps".to_string(), "2".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        ids.push(fleet.submit(&spec, &profiles).await.unwrap().id);
    }
    let mut peak = 0;
    let deadline = Instant::now() + T;
    loop {
        peak = peak.max(fleet.workers().await.unwrap().len());
        let mut done = 0;
        for id in &ids {
            if fleet
                .job(id)
                .await
                .unwrap()
                .is_some_and(|j| j.state.as_str() == "succeeded")
            {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog did not drain: {done}/30"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        peak >= 3,
        "the fleet grew under the burst (peak {peak} workers)"
    );
    assert!(peak <= 4, "never above max_workers (peak {peak})");
    assert!(!events_of(&redis, &fleet, "scale_up").await.is_empty());

    // Idle: back to min_workers, through drains.
    wait_for(T, "the fleet back at one worker", || async {
        (fleet.workers().await.ok()?.len() == 1).then_some(())
    })
    .await;
    let downs = events_of(&redis, &fleet, "scale_down").await;
    assert!(!downs.is_empty());
    assert!(!events_of(&redis, &fleet, "removed").await.is_empty());
    // No job ever saw a second attempt: scale-in interrupted nothing.
    for id in &ids {
        let j = fleet.job(id).await.unwrap().unwrap();
        assert_eq!(j.attempt, 1, "job {id} was interrupted: {j:?}");
    }
    // Every decision is on record with its inputs and reason.
    let decisions = events_of(&redis, &fleet, "decision").await;
    assert!(decisions
        .iter()
        .all(|d| d.contains_key("inputs") && !d["reason"].is_empty()));
}

#[tokio::test]
async fn dead_worker_jobs_are_handed_back_within_ttl_plus_a_tick() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("reclaim");
    let site = Site::new(&["w1"]).unwrap();
    fast_policy(&redis.url(), &ns, &["min_workers=0"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    let _coord = Coordinator::start(&redis.url(), &ns, &site, "c1", "none", &[]).unwrap();
    let mut a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a").capacity(1))
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
    let _b = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("b").capacity(1))
        .await
        .unwrap();
    let killed = Instant::now();
    a.kill9();
    // Handed back and running elsewhere within worker_ttl (1s) + one tick (250ms) + the last
    // heartbeat's age (up to one 200ms interval), with a little scheduling slack.
    let j = wait_for(T, "the job running on b", || async {
        fleet
            .job(&id)
            .await
            .ok()
            .flatten()
            .filter(|j| j.attempt == 2 && j.worker.as_deref() == Some("b"))
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(1_000 + 250 + 200 + 600),
        "hand-back took {took:?}"
    );
    assert_eq!(j.attempt, 2);
    let done = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!(done.worker.as_deref(), Some("b"));
    let reclaims = events_of(&redis, &fleet, "reclaim").await;
    assert_eq!(reclaims.len(), 1);
    assert_eq!(reclaims[0]["worker"], "a");
    assert!(reclaims[0]["jobs"].contains(&id));
    // The dead worker left the index and the consumer group.
    assert!(fleet.workers().await.unwrap().iter().all(|w| w.id != "a"));
    // A's late result for attempt 1 is rejected.
    let late = fleet
        .finish(
            &id,
            1,
            "a",
            renderfleet_shared::fleet::Outcome::Succeeded,
            Some(0),
            "",
        )
        .await
        .unwrap();
    assert!(matches!(
        late,
        renderfleet_shared::fleet::Finished::Stale(_)
    ));
}

#[tokio::test]
async fn process_backend_replaces_a_killed_agent() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("replace");
    let site = Site::new(&[]).unwrap();
    fast_policy(&redis.url(), &ns, &["min_workers=1", "max_workers=1"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    let _coord = Coordinator::start(&redis.url(), &ns, &site, "c1", "process", &[]).unwrap();
    let w = wait_for(T, "the managed worker", || async {
        fleet.workers().await.ok()?.into_iter().next()
    })
    .await;
    let old_pid = w.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let again = wait_for(T, "the worker back with a new process", || async {
        fleet
            .worker(&w.id)
            .await
            .ok()
            .flatten()
            .filter(|x| x.pid != old_pid)
    })
    .await;
    assert_eq!(again.id, w.id, "replaced under the same worker id");
    let restarted = events_of(&redis, &fleet, "backend").await;
    assert!(
        restarted
            .iter()
            .any(|e| e["kind"] == "restarted" && e["worker"] == w.id),
        "{restarted:?}"
    );
}

#[tokio::test]
async fn two_coordinators_one_acts_and_the_standby_takes_over() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("lease");
    let site = Site::new(&[]).unwrap();
    fast_policy(&redis.url(), &ns, &["min_workers=2", "max_workers=2"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    let mut c1 = Coordinator::start(&redis.url(), &ns, &site, "c1", "process", &[]).unwrap();
    wait_for(T, "c1 to lead", || async {
        renderfleet_coordinator_leader(&fleet)
            .await
            .filter(|l| l == "c1")
    })
    .await;
    let mut c2 = Coordinator::start(&redis.url(), &ns, &site, "c2", "process", &[]).unwrap();
    wait_for(T, "two workers", || async {
        (fleet.workers().await.ok()?.len() == 2).then_some(())
    })
    .await;
    // Let both run side by side for a while: only c1 acts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leaders: Vec<String> = events_of(&redis, &fleet, "decision")
        .await
        .into_iter()
        .map(|e| e["leader"].clone())
        .collect();
    assert!(
        !leaders.is_empty() && leaders.iter().all(|l| l == "c1"),
        "{leaders:?}"
    );
    assert!(!c2.log_text().contains("scaled up"), "the standby acted");

    c1.kill9();
    let killed = Instant::now();
    wait_for(T, "c2 to lead", || async {
        renderfleet_coordinator_leader(&fleet)
            .await
            .filter(|l| l == "c2")
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(2_000 + 250 + 300),
        "takeover took {took:?} (lease 2s, tick 250ms)"
    );
    // No double scaling in the overlap: c1's orphaned agents still count, nobody adds more.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let n = fleet.workers().await.unwrap().len();
        assert!(n <= 2, "{n} workers: double scaling");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ups: u32 = events_of(&redis, &fleet, "scale_up")
        .await
        .iter()
        .map(|e| e["workers"].split(',').filter(|s| !s.is_empty()).count() as u32)
        .sum();
    assert_eq!(
        ups, 2,
        "exactly the two workers min_workers asks for were started"
    );
    let epochs = events_of(&redis, &fleet, "leader").await;
    assert_eq!(epochs.len(), 2, "{epochs:?}");
    c2.stop().unwrap();
    kill_fleet_agents(&fleet).await;
}

async fn renderfleet_coordinator_leader(fleet: &renderfleet_shared::Fleet) -> Option<String> {
    redis::AsyncCommands::get(&mut fleet.conn(), fleet.keys().leader())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn scheduled_render_fires_on_time_and_never_stacks() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("schedule");
    let site = Site::new(&["w1"]).unwrap();
    fast_policy(&redis.url(), &ns, &["min_workers=0"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a").capacity(2))
        .await
        .unwrap();
    let _coord = Coordinator::start(&redis.url(), &ns, &site, "c1", "none", &[]).unwrap();
    // Every second, a render that takes 2.2s: slots are skipped while one is live.
    let name = cli_ok(
        &redis.url(),
        &ns,
        &[
            "schedule",
            "add",
            "--world",
            "w1",
            "--renderer",
            "fake",
            "--every",
            "1s",
            "--param",
            "seconds=2.2",
        ],
    );
    assert_eq!(name, "w1-fake");
    let added = Instant::now();
    let first = wait_for(T, "the first scheduled job", || async {
        events_of(&redis, &fleet, "schedule")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert!(
        added.elapsed() < Duration::from_millis(1_000 + 250 + 500),
        "first fire late: {:?}",
        added.elapsed()
    );
    // Watch for 6s: never two live copies.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let live = fleet
            .jobs(None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|j| matches!(j.state.as_str(), "queued" | "running" | "failed"))
            .count();
        assert!(live <= 1, "{live} live copies of the scheduled render");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fired = events_of(&redis, &fleet, "schedule").await;
    let skipped = events_of(&redis, &fleet, "schedule_skipped").await;
    assert!(fired.len() >= 2, "fired {}", fired.len());
    assert!(
        !skipped.is_empty(),
        "slots were skipped while a render was live"
    );
    assert!(first["job"].starts_with("sched:w1-fake:"));
    // Each fired job starts after the previous one finished.
    let mut jobs = Vec::new();
    for f in &fired {
        jobs.push(fleet.job(&f["job"]).await.unwrap().unwrap());
    }
    for pair in jobs.windows(2) {
        let prev_end = pair[0].finished_at_ms.unwrap();
        assert!(
            pair[1].created_at_ms >= prev_end,
            "stacked: {:?} before {:?}",
            pair[1].created_at,
            pair[0].finished_at
        );
    }
    cli_ok(&redis.url(), &ns, &["schedule", "remove", "w1-fake"]);
}

#[tokio::test]
async fn bad_config_is_refused_and_garbage_is_skipped() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("coord-bad");
    let site = Site::new(&[]).unwrap();
    let url = redis.url();
    for (args, needle) in [
        (
            vec!["config", "set", "max_workers=0"],
            "max_workers=0: expected integer 1-1000",
        ),
        (
            vec!["config", "set", "scale_up_utilization=2"],
            "fraction in (0, 1]",
        ),
        (vec!["config", "set", "colour=blue"], "unknown key 'colour'"),
        (
            vec!["config", "set", "min_workers=20"],
            "min_workers 20 is above max_workers 10",
        ),
        (
            vec!["config", "set", "scale_up_cooldown=soon"],
            "scale_up_cooldown=soon",
        ),
        (vec!["config", "set", "novalue"], "is not KEY=VALUE"),
    ] {
        let out = cli(&url, &ns, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        assert_eq!(err.trim_end().lines().count(), 1);
    }
    let fleet = redis.fleet(&ns).await.unwrap();
    let mut c = redis.conn().await.unwrap();
    let n: u64 = redis::AsyncCommands::exists(&mut c, fleet.keys().config())
        .await
        .unwrap();
    assert_eq!(n, 0, "refused config wrote nothing");

    // Garbage by hand: a config value, a worker hash and a manual command.
    let _: () = redis::AsyncCommands::hset(&mut c, fleet.keys().config(), "max_workers", "many")
        .await
        .unwrap();
    let _: () = redis::AsyncCommands::hset(&mut c, fleet.keys().config(), "min_workers", "0")
        .await
        .unwrap();
    let _: () = redis::AsyncCommands::zadd(
        &mut c,
        fleet.keys().workers(),
        "junk",
        renderfleet_shared::time::now_ms(),
    )
    .await
    .unwrap();
    let _: () = redis::AsyncCommands::hset(&mut c, fleet.keys().worker("junk"), "status", "???")
        .await
        .unwrap();
    let _: () = redis::AsyncCommands::lpush(&mut c, fleet.keys().commands(), "{not json")
        .await
        .unwrap();
    let mut coord = Coordinator::start(&url, &ns, &site, "c1", "none", &[]).unwrap();
    wait_for(T, "three decisions", || async {
        (events_of(&redis, &fleet, "decision").await.len() >= 3).then_some(())
    })
    .await;
    let log = coord.log_text();
    assert!(log.contains("ignoring bad policy config in Redis"), "{log}");
    assert!(log.contains("skipping malformed manual command"), "{log}");
    assert!(!log.contains("panicked"));
    let refused = events_of(&redis, &fleet, "command_refused").await;
    assert_eq!(refused.len(), 1);
    // `config get` shows the effective policy (the bad value fell back to its default).
    assert_eq!(cli_ok(&url, &ns, &["config", "get", "max_workers"]), "10");
    assert!(coord.stop().unwrap().success());
}

#[tokio::test]
async fn cli_admin_commands_read_and_write_redis() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("admin");
    let site = Site::new(&[]).unwrap();
    let url = redis.url();
    fast_policy(&url, &ns, &["min_workers=1", "max_workers=3"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    // No coordinator: health says so (exit 1), status says no leader.
    let out = cli(&url, &ns, &["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(cli_ok(&url, &ns, &["status"]).contains("leader        none"));
    let _coord = Coordinator::start(&url, &ns, &site, "c1", "process", &[]).unwrap();
    wait_for(T, "one worker", || async {
        (fleet.workers().await.ok()?.len() == 1).then_some(())
    })
    .await;
    wait_for(T, "healthy fleet", || async {
        cli(&url, &ns, &["health"]).status.success().then_some(())
    })
    .await;
    let st: serde_json::Value =
        serde_json::from_str(&cli_ok(&url, &ns, &["status", "--json"])).unwrap();
    assert_eq!(st["leader"]["id"], "c1");
    assert_eq!(st["policy"]["max_workers"], 3);
    let ev: serde_json::Value =
        serde_json::from_str(&cli_ok(&url, &ns, &["evaluate", "--json"])).unwrap();
    assert_eq!(ev["decision"]["current"], 1);
    // Manual scale-up goes through the leader and respects max_workers (3). Long cooldowns keep
    // the policy's own decisions out of the way.
    cli_ok(
        &url,
        &ns,
        &[
            "config",
            "set",
            "scale_down_cooldown=1h",
            "scale_up_cooldown=1h",
            "stabilization_window=1h",
        ],
    );
    cli_ok(&url, &ns, &["scale", "up", "--by", "5"]);
    wait_for(T, "three workers", || async {
        (fleet.workers().await.ok()?.len() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fleet.workers().await.unwrap().len(), 3);
    // workers remove drains one.
    let victim = fleet.workers().await.unwrap()[0].id.clone();
    cli_ok(&url, &ns, &["workers", "remove", &victim]);
    wait_for(T, "the victim gone", || async {
        fleet
            .workers()
            .await
            .ok()?
            .iter()
            .all(|w| w.id != victim)
            .then_some(())
    })
    .await;
    wait_for(T, "the removal on record", || async {
        events_of(&redis, &fleet, "removed")
            .await
            .into_iter()
            .find(|e| e["worker"] == victim)
    })
    .await;
    let events = cli_ok(&url, &ns, &["events", "--count", "500"]);
    assert!(
        events.contains("manual remove") && events.contains(&victim),
        "{events}"
    );
    let list = cli_ok(&url, &ns, &["config", "get"]);
    assert!(list.contains("scale_down_cooldown=1h"));
}

#[tokio::test]
async fn a_deposed_leader_cannot_act_and_redis_down_means_hold() {
    let mut redis = TestRedis::start().unwrap();
    let ns = ns("deposed");
    let site = Site::new(&[]).unwrap();
    fast_policy(&redis.url(), &ns, &["min_workers=0"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    // Leader-checked writes by anyone but the lease holder are refused and change nothing.
    let mut c = redis.conn().await.unwrap();
    let _: () = redis::AsyncCommands::set(&mut c, fleet.keys().leader(), "someone-else")
        .await
        .unwrap();
    for (op, args) in [
        (
            "drain",
            vec!["w1".to_string(), "60000".into(), "0".into(), "stale".into()],
        ),
        ("history", vec!["{}".into()]),
        ("event", vec!["type".into(), "decision".into()]),
    ] {
        assert!(
            !renderfleet_coordinator::ops::leader_op(&fleet, "old-leader", op, &args)
                .await
                .unwrap(),
            "{op}"
        );
    }
    let exists: u64 = redis::cmd("EXISTS")
        .arg(fleet.keys().drain("w1"))
        .arg(fleet.keys().scaling())
        .arg(fleet.keys().events())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    let _: () = redis::AsyncCommands::del(&mut c, fleet.keys().leader())
        .await
        .unwrap();

    // Redis goes away under a running coordinator: it says so, holds, and does not exit.
    let mut coord = Coordinator::start(&redis.url(), &ns, &site, "c1", "process", &[]).unwrap();
    wait_for(T, "c1 to lead", || async {
        events_of(&redis, &fleet, "leader").await.into_iter().next()
    })
    .await;
    redis.stop();
    wait_for(T, "the coordinator to report Redis down", || async {
        coord
            .log_text()
            .contains("Redis unreachable: holding")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        coord.child.try_wait().unwrap().is_none(),
        "the coordinator keeps running without Redis"
    );
    assert!(
        !coord.log_text().contains("scaled up"),
        "no action while blind"
    );
    assert!(coord.stop().unwrap().success());
}

#[tokio::test]
async fn docker_backend_without_a_socket_says_so_and_keeps_observing() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("nosocket");
    let site = Site::new(&["w1"]).unwrap();
    fast_policy(&redis.url(), &ns, &["min_workers=2"]);
    let fleet = redis.fleet(&ns).await.unwrap();
    let missing = site.path().join("no-docker.sock");
    let mut coord = Coordinator::start(
        &redis.url(),
        &ns,
        &site,
        "c1",
        "docker",
        &["--docker-socket", missing.to_str().unwrap()],
    )
    .unwrap();
    wait_for(T, "the engine error on record", || async {
        fleet_events(&fleet, "backend")
            .await
            .into_iter()
            .find(|e| e["kind"] == "engine_unavailable")
    })
    .await;
    // The log line may reach the file a moment after the event reaches Redis.
    wait_for(T, "the engine error in the coordinator's log", || async {
        coord
            .log_text()
            .contains("does not exist (mount /var/run/docker.sock")
            .then_some(())
    })
    .await;
    // Still observing: a dead worker's job is handed back through Redis.
    let mut a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a").capacity(1))
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
            "seconds=30",
            "--max-attempts",
            "3",
        ],
    );
    wait_state(&fleet, &id, "running", T).await;
    a.kill9();
    let j = wait_state(&fleet, &id, "queued", T).await;
    assert_eq!(j.attempt, 1);
    assert!(
        coord.child.try_wait().unwrap().is_none(),
        "the coordinator keeps running"
    );
    // Its attempt to replace the lost worker fails with the same reason (at its next tick).
    wait_for(
        T,
        "a scale_up_failed event naming the missing socket",
        || async {
            fleet_events(&fleet, "scale_up_failed")
                .await
                .iter()
                .any(|e| e["reason"].contains("does not exist"))
                .then_some(())
        },
    )
    .await;
}
