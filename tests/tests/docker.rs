//! The compose stack and the docker backend on the real Docker engine (images from
//! `compose/build-images.sh`, which `.ci/run` runs first).
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use renderfleet_shared::job::JobSpec;
use renderfleet_tests::stack::{docker, docker_ok, redis_cli, Stack};
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(120);

fn fast_policy(stack: &Stack, extra: &[&str]) {
    let mut args = vec![
        "config",
        "set",
        "heartbeat_interval=500ms",
        "worker_ttl=2s",
        "scale_up_cooldown=1s",
        "scale_down_cooldown=2s",
        "stabilization_window=3s",
        "drain_timeout=20s",
    ];
    args.extend_from_slice(extra);
    cli_ok(&stack.url("admin"), &stack.ns, &args);
}

fn fake(world: &str, seconds: &str) -> JobSpec {
    JobSpec {
        world: world.into(),
        renderer: "fake".into(),
        params: [("seconds".to_string(), seconds.to_string())].into(),
        ..Default::default()
    }
}

/// Start the stack's Redis, set the policy, bring up `services` (all when empty), and wait until
/// the heartbeating workers satisfy `ready`. Returns an admin client.
async fn start_fleet(
    stack: &Stack,
    policy: &[&str],
    services: &[&str],
    what: &str,
    ready: impl Fn(&[String]) -> bool,
) -> renderfleet_shared::Fleet {
    stack.up(&["redis"]).unwrap();
    fast_policy(stack, policy);
    stack.up(services).unwrap();
    let fleet = renderfleet_shared::Fleet::connect(&stack.url("admin"), &stack.ns)
        .await
        .unwrap();
    wait_for(T, what, || async {
        ready(&workers(&fleet).await).then_some(())
    })
    .await;
    fleet
}

async fn workers(fleet: &renderfleet_shared::Fleet) -> Vec<String> {
    fleet
        .workers()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.id)
        .collect()
}

#[tokio::test]
async fn compose_stack_runs_jobs_and_shows_the_documented_keys() {
    let stack = Stack::new("e2e", &["w1", "w2", "w3"], "docker").unwrap();
    let fleet = start_fleet(
        &stack,
        &["min_workers=1", "max_workers=4"],
        &[],
        "the three compose agents",
        |w| {
            ["agent-1", "agent-2", "agent-3"]
                .iter()
                .all(|a| w.iter().any(|x| x == a))
        },
    )
    .await;
    let mut ids = Vec::new();
    for w in ["w1", "w2", "w3"] {
        ids.push(cli_ok(
            &stack.url("admin"),
            &stack.ns,
            &["submit", "--world", w, "--renderer", "fake"],
        ));
    }
    for id in &ids {
        let j = wait_state(&fleet, id, "succeeded", T).await;
        assert!(j.worker.is_some());
    }
    // The documented keys, through redis-cli with the admin user.
    let keys = redis_cli(
        &stack,
        "admin",
        &["--scan", "--pattern", &format!("{{{}}}:*", stack.ns)],
    );
    for k in [
        "worker:agent-1",
        "workers",
        "heartbeats",
        "stream:normal",
        "leader",
        "events",
        "config",
        "renderers",
        "jobs",
    ] {
        assert!(
            keys.lines().any(|l| l == format!("{{{}}}:{k}", stack.ns)),
            "{k} missing from:\n{keys}"
        );
    }
    assert!(keys.contains(&format!("{{{}}}:job:{}", stack.ns, ids[0])));
    let hb = redis_cli(
        &stack,
        "admin",
        &[
            "HGET",
            &format!("{{{}}}:worker:agent-1", stack.ns),
            "memory_limit",
        ],
    );
    assert_eq!(
        hb,
        (1u64 << 30).to_string(),
        "agents see their container's 1 GiB cgroup limit"
    );
    let policy = redis_cli(
        &stack,
        "admin",
        &["--user", "admin", "CONFIG", "GET", "maxmemory-policy"],
    );
    assert!(
        policy.contains("NOPERM") || policy.contains("noeviction"),
        "{policy}"
    );
    // The agent image runs as non-root, with the documented healthcheck and stop signal.
    let user = docker_ok(&[
        "inspect",
        "-f",
        "{{.Config.User}} {{.Config.StopSignal}} {{json .Config.Healthcheck.Test}}",
        &stack.container("agent-1"),
    ]);
    assert!(user.starts_with("renderfleet SIGTERM"), "{user}");
    assert!(
        user.contains("renderfleet-agent") && user.contains("health"),
        "{user}"
    );
    wait_for(T, "Docker's healthcheck to pass", || async {
        (docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            &stack.container("agent-1"),
        ]) == "healthy")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn docker_kill_mid_render_completes_elsewhere_and_the_container_is_replaced() {
    let stack = Stack::new("kill", &["w1"], "docker").unwrap();
    let fleet = start_fleet(
        &stack,
        &["min_workers=2", "max_workers=2"],
        &["redis", "coordinator"],
        "two backend workers",
        |w| w.len() == 2,
    )
    .await;
    let containers = stack.backend_containers();
    assert_eq!(containers.len(), 2, "{containers:?}");
    let profiles = fleet.profiles().await.unwrap();
    let id = fleet.submit(&fake("w1", "6"), &profiles).await.unwrap().id;
    let running = wait_state(&fleet, &id, "running", T).await;
    let victim = running.worker.clone().unwrap();
    let old_start = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &victim]);
    docker_ok(&["kill", &victim]);
    let done = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!(done.attempt, 2);
    assert_ne!(done.worker.as_deref(), Some(victim.as_str()));
    // The coordinator brought the killed container back, and it heartbeats again.
    wait_for(T, "the killed container restarted", || async {
        let s = docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.StartedAt}}",
            &victim,
        ]);
        (s.starts_with("true") && !s.ends_with(&old_start)).then_some(())
    })
    .await;
    wait_for(T, "its heartbeat", || async {
        fleet.worker(&victim).await.ok().flatten()
    })
    .await;
    let restarted = fleet_events(&fleet, "backend").await;
    assert!(
        restarted.iter().any(|e| e.get("worker") == Some(&victim)),
        "{restarted:?}"
    );
}

#[tokio::test]
async fn burst_adds_labelled_containers_then_drains_and_removes_them() {
    let worlds: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let stack = Stack::new(
        "burst",
        &worlds.iter().map(String::as_str).collect::<Vec<_>>(),
        "docker",
    )
    .unwrap();
    let fleet = start_fleet(
        &stack,
        &["min_workers=1", "max_workers=3"],
        &["redis", "coordinator"],
        "one backend worker",
        |w| w.len() == 1,
    )
    .await;
    let profiles = fleet.profiles().await.unwrap();
    let mut ids = Vec::new();
    for w in &worlds {
        ids.push(fleet.submit(&fake(w, "3"), &profiles).await.unwrap().id);
    }
    let mut peak = 0;
    for id in &ids {
        loop {
            peak = peak.max(stack.backend_containers().len());
            if fleet
                .job(id)
                .await
                .unwrap()
                .is_some_and(|j| j.state.as_str() == "succeeded")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert!(
        peak >= 2,
        "the docker backend added containers (peak {peak})"
    );
    assert!(peak <= 3);
    // Idle: drained and removed down to one container; nothing was interrupted.
    wait_for(T, "one container left", || async {
        (stack.backend_containers().len() == 1).then_some(())
    })
    .await;
    for id in &ids {
        assert_eq!(
            fleet.job(id).await.unwrap().unwrap().attempt,
            1,
            "job {id} was interrupted"
        );
    }
    let labels = docker_ok(&[
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &stack.backend_containers()[0],
    ]);
    assert!(
        labels.contains(&format!("\"renderfleet.fleet\":\"{}\"", stack.ns))
            && labels.contains("\"renderfleet.role\":\"worker\""),
        "{labels}"
    );
    let limits = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        &stack.backend_containers()[0],
    ]);
    assert_eq!(limits, format!("{} 500000000", 1u64 << 30));
}

#[tokio::test]
async fn redis_restart_mid_run_loses_no_job() {
    let worlds: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    let stack = Stack::new(
        "aof",
        &worlds.iter().map(String::as_str).collect::<Vec<_>>(),
        "none",
    )
    .unwrap();
    stack.up(&[]).unwrap();
    let fleet = renderfleet_shared::Fleet::connect(&stack.url("admin"), &stack.ns)
        .await
        .unwrap();
    wait_for(T, "the compose agents", || async {
        (workers(&fleet).await.len() == 3).then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for w in &worlds {
        ids.push(cli_ok(
            &stack.url("admin"),
            &stack.ns,
            &[
                "submit",
                "--world",
                w,
                "--renderer",
                "fake",
                "--param",
                "seconds=1",
                "--max-attempts",
                "10",
            ],
        ));
    }
    // Let appendfsync everysec flush the submits, then restart Redis under the running fleet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    docker_ok(&["restart", "-t", "10", &stack.container("redis")]);
    let fleet = wait_for(T, "Redis back", || async {
        renderfleet_shared::Fleet::connect(&stack.url("admin"), &stack.ns)
            .await
            .ok()
    })
    .await;
    for id in &ids {
        wait_state(&fleet, id, "succeeded", T).await;
    }
    assert_eq!(fleet.jobs(None, 100).await.unwrap().len(), ids.len());
}

#[tokio::test]
async fn acl_confines_each_role() {
    let stack = Stack::new("acl", &[], "none").unwrap();
    stack.up(&["redis"]).unwrap();
    let p = format!("{{{}}}:", stack.ns);
    // The agent may touch job and worker keys...
    assert_eq!(
        redis_cli(&stack, "agent", &["HSET", &format!("{p}job:x"), "a", "b"]),
        "1"
    );
    assert_eq!(
        redis_cli(
            &stack,
            "agent",
            &["HSET", &format!("{p}worker:w1"), "status", "healthy"]
        ),
        "1"
    );
    // ...but not the policy config, the leader lease, the events, or another fleet's keys.
    for args in [
        vec![
            "HSET".to_string(),
            format!("{p}config"),
            "min_workers".into(),
            "9".into(),
        ],
        vec!["SET".to_string(), format!("{p}leader"), "me".into()],
        vec![
            "XADD".to_string(),
            format!("{p}events"),
            "*".into(),
            "type".into(),
            "forged".into(),
        ],
        vec![
            "HSET".to_string(),
            "{otherfleet}:job:x".into(),
            "a".into(),
            "b".into(),
        ],
        vec!["FLUSHALL".to_string()],
        vec![
            "CONFIG".to_string(),
            "SET".into(),
            "maxmemory-policy".into(),
            "allkeys-lru".into(),
        ],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = redis_cli(&stack, "agent", &a);
        assert!(out.contains("NOPERM"), "agent {args:?} was allowed: {out}");
    }
    // A script cannot launder the access either.
    let out = redis_cli(
        &stack,
        "agent",
        &[
            "EVAL",
            &format!("return redis.call('SET', '{p}leader', 'me')"),
            "0",
        ],
    );
    assert!(
        out.contains("NOPERM") || out.contains("can't access"),
        "{out}"
    );
    // The coordinator may write the config; nobody may use the default user.
    assert_eq!(
        redis_cli(
            &stack,
            "coordinator",
            &["HSET", &format!("{p}config"), "min_workers", "2"]
        ),
        "1"
    );
    assert!(redis_cli(
        &stack,
        "coordinator",
        &["HSET", "{otherfleet}:config", "a", "b"]
    )
    .contains("NOPERM"));
    let anon = std::process::Command::new("redis-cli")
        .args(["-p", &stack.redis_port.to_string(), "ping"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&anon.stdout).contains("NOAUTH"));
}

#[tokio::test]
async fn network_cut_hands_the_job_back_and_the_stale_agent_stops() {
    let stack = Stack::new("netcut", &["w1"], "none").unwrap();
    let fleet = start_fleet(&stack, &["min_workers=0"], &[], "the compose agents", |w| {
        w.len() == 3
    })
    .await;
    let id = cli_ok(
        &stack.url("admin"),
        &stack.ns,
        &[
            "submit",
            "--world",
            "w1",
            "--renderer",
            "fake",
            "--param",
            "seconds=12",
            "--param",
            "steps=12",
        ],
    );
    let running = wait_state(&fleet, &id, "running", T).await;
    let victim_worker = running.worker.clone().unwrap();
    let victim = stack.container(&victim_worker);
    docker_ok(&["network", "disconnect", &stack.backend_network(), &victim]);
    // Handed back after worker_ttl and rendered by another agent.
    let again = wait_for(T, "attempt 2 elsewhere", || async {
        fleet
            .job(&id)
            .await
            .ok()
            .flatten()
            .filter(|j| j.attempt == 2 && j.state.as_str() == "running")
    })
    .await;
    assert_ne!(again.worker.as_deref(), Some(victim_worker.as_str()));
    docker_ok(&["network", "connect", &stack.backend_network(), &victim]);
    // Back on the network, the stale agent learns its job moved on and stops that render.
    wait_for(T, "the stale agent to stop its render", || async {
        stack
            .logs(&victim)
            .contains("job moved on; stopping its render")
            .then_some(())
    })
    .await;
    let done = wait_state(&fleet, &id, "succeeded", T).await;
    assert_eq!(done.attempt, 2);
    assert_ne!(done.worker.as_deref(), Some(victim_worker.as_str()));
    // Its late outcome for attempt 1 was not recorded.
    wait_for(T, "the stale outcome to be refused", || async {
        let logs = stack.logs(&victim);
        (logs.contains("attempt is stale; outcome not recorded")
            || logs.contains("gave up recording"))
        .then_some(())
    })
    .await;
    let _ = docker(&["ps"]);
}

#[tokio::test]
async fn compose_stack_renders_a_sample_world_across_its_agents() {
    let stack = Stack::new("maps", &[], "none").unwrap();
    // A 2x2-region world in the stack's worlds directory (mounted read-only into the agents).
    let world = stack.dir.path().join("worlds").join("w");
    sample_world(&world, 2, 4);
    std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&world)
        .status()
        .unwrap();
    let fleet = start_fleet(
        &stack,
        &["min_workers=0"],
        &[],
        "the three compose agents",
        |w| w.len() >= 3,
    )
    .await;
    let id = cli_ok(
        &stack.url("admin"),
        &stack.ns,
        &["submit", "--world", "w", "--renderer", "builtin"],
    );
    let parent = wait_for(T, "the sharded render to end", || async {
        fleet
            .job(&id)
            .await
            .ok()
            .flatten()
            .filter(|j| j.state.is_final())
    })
    .await;
    assert_eq!(parent.state.as_str(), "succeeded", "{parent:?}");
    assert_eq!(parent.shards.as_ref().map(|s| s.done), Some(4));
    // Every transition ran to its end under the agent's ACL user: finished records got their
    // retention (PEXPIRE comes last in the script), and the fleet counters moved.
    let mut shard_workers = std::collections::BTreeSet::new();
    for sid in fleet.shards(&id).await.unwrap() {
        let pttl = redis_cli(
            &stack,
            "admin",
            &["PTTL", &format!("{{{}}}:job:{sid}", stack.ns)],
        );
        assert!(pttl.parse::<i64>().unwrap() > 0, "{sid}: PTTL {pttl}");
        shard_workers.insert(fleet.job(&sid).await.unwrap().unwrap().worker.unwrap());
    }
    let ok = redis_cli(
        &stack,
        "admin",
        &["HGET", &format!("{{{}}}:stats", stack.ns), "jobs_succeeded"],
    );
    assert!(ok.parse::<u64>().unwrap() >= 5, "jobs_succeeded = {ok}");
    // The map is in the shared output volume, written by the agents.
    let listing = docker_ok(&[
        "exec",
        &stack.container("agent-1"),
        "ls",
        "/output/w/builtin/tiles/0",
        "/output/w/builtin",
    ]);
    for f in [
        "-1_-1.png",
        "-1_0.png",
        "0_-1.png",
        "0_0.png",
        "index.html",
        "map.js",
    ] {
        assert!(listing.contains(f), "{f} missing:\n{listing}");
    }
    assert!(!shard_workers.is_empty(), "{shard_workers:?}");
}
