//! Scheduling guarantees: capacity bounds and spread, per-(world, renderer) exclusivity,
//! priorities, idempotent submit.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use renderfleet_shared::job::{JobRecord, JobSpec, Priority};
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(60);

/// Largest number of jobs whose [started, finished) intervals overlap.
fn max_overlap(jobs: &[&JobRecord]) -> usize {
    let mut events: Vec<(u64, i32)> = Vec::new();
    for j in jobs {
        events.push((j.started_at_ms.unwrap(), 1));
        events.push((j.finished_at_ms.unwrap(), -1));
    }
    // Ends sort before starts at the same millisecond (half-open intervals).
    events.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[tokio::test]
async fn two_agents_forty_jobs_capacity_respected_and_load_spread() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("spread");
    let worlds: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let site = Site::new(&worlds.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a").capacity(2))
        .await
        .unwrap();
    let _b = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("b").capacity(2))
        .await
        .unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    let profiles = fleet.profiles().await.unwrap();
    let mut ids = Vec::new();
    for w in &worlds {
        let spec = JobSpec {
            world: w.clone(),
            renderer: "fake".into(),
            params: [
                ("seconds".to_string(), "0.1".to_string()),
                ("steps".to_string(), "1".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        ids.push(fleet.submit(&spec, &profiles).await.unwrap().id);
    }
    let mut done = Vec::new();
    for id in &ids {
        done.push(wait_state(&fleet, id, "succeeded", T).await);
    }
    let mut by_worker: HashMap<String, Vec<&JobRecord>> = HashMap::new();
    for j in &done {
        assert_eq!(j.attempt, 1, "job {} needed a second attempt", j.id);
        by_worker
            .entry(j.worker.clone().unwrap())
            .or_default()
            .push(j);
    }
    assert_eq!(by_worker.len(), 2, "both agents took work");
    for (w, jobs) in &by_worker {
        assert!(
            jobs.len() >= 8,
            "worker {w} took only {} of 40 jobs",
            jobs.len()
        );
        assert!(
            max_overlap(jobs) <= 2,
            "worker {w} ran more than its capacity at once"
        );
        // The agent's own record of its peak concurrency agrees.
        let stats = fleet.worker_stats(w).await.unwrap();
        assert!(
            stats["max_running"] <= 2 && stats["max_running"] >= 1,
            "{stats:?}"
        );
        assert_eq!(stats["jobs_taken"], jobs.len() as u64);
        assert_eq!(stats["jobs_succeeded"], jobs.len() as u64);
    }
    // Every job ran exactly once.
    let mut runs = Vec::new();
    for w in &worlds {
        runs.extend(completions(&site, w));
    }
    assert_eq!(runs.len(), 40);
}

#[tokio::test]
async fn same_world_renders_never_overlap() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("exclusive");
    let site = Site::new(&["shared", "other"]).unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a").capacity(4))
        .await
        .unwrap();
    let url = redis.url();
    let same: Vec<String> = (0..3)
        .map(|_| {
            cli_ok(
                &url,
                &ns,
                &[
                    "submit",
                    "--world",
                    "shared",
                    "--renderer",
                    "fake",
                    "--param",
                    "seconds=0.3",
                    "--param",
                    "steps=1",
                ],
            )
        })
        .collect();
    let other = cli_ok(
        &url,
        &ns,
        &[
            "submit",
            "--world",
            "other",
            "--renderer",
            "fake",
            "--param",
            "seconds=0.3",
            "--param",
            "steps=1",
        ],
    );
    let fleet = redis.fleet(&ns).await.unwrap();
    // While the first runs, the others wait for its lock (and say so).
    wait_for(T, "a job waiting on the world lock", || async {
        for id in &same {
            if let Some(j) = fleet.job(id).await.ok().flatten() {
                if j.waiting_on.is_some() {
                    return Some(());
                }
            }
        }
        None
    })
    .await;
    let mut done = Vec::new();
    for id in &same {
        done.push(wait_state(&fleet, id, "succeeded", T).await);
    }
    let o = wait_state(&fleet, &other, "succeeded", T).await;
    assert_eq!(
        max_overlap(&done.iter().collect::<Vec<_>>()),
        1,
        "same-world renders overlapped"
    );
    // A different world was not held back: it overlapped with one of them.
    let mut with_other: Vec<&JobRecord> = done.iter().collect();
    with_other.push(&o);
    assert_eq!(max_overlap(&with_other), 2);
    // FIFO among the waiters.
    let mut starts: Vec<(u64, &str)> = done
        .iter()
        .map(|j| (j.started_at_ms.unwrap(), j.id.as_str()))
        .collect();
    starts.sort();
    assert_eq!(
        starts.iter().map(|s| s.1).collect::<Vec<_>>(),
        same.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn high_priority_drains_first_fifo_within_priority() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("prio");
    let site = Site::new(&[]).unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    fleet.ensure_groups().await.unwrap();
    let profiles = fleet.profiles().await.unwrap();
    // Queue before any agent runs: low, normal, high interleaved.
    let mut expected: HashMap<Priority, Vec<String>> = HashMap::new();
    for i in 0..9 {
        let p = [Priority::Low, Priority::Normal, Priority::High][i % 3];
        let spec = JobSpec {
            world: format!("w{i}"),
            renderer: "noop".into(),
            priority: p,
            ..Default::default()
        };
        let id = fleet.submit(&spec, &profiles).await.unwrap().id;
        expected.entry(p).or_default().push(id);
    }
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a").capacity(1))
        .await
        .unwrap();
    let mut order = Vec::new();
    for p in Priority::ALL {
        for id in &expected[&p] {
            let j = wait_state(&fleet, id, "succeeded", T).await;
            order.push((
                j.started_at_ms.unwrap(),
                j.finished_at_ms.unwrap(),
                id.clone(),
            ));
        }
    }
    // With capacity 1 each starts no earlier than the one before it finished: the run order is
    // exactly high..., normal..., low..., each FIFO.
    let mut by_start = order.clone();
    by_start.sort_by_key(|o| (o.0, o.1));
    let want: Vec<String> = Priority::ALL
        .iter()
        .flat_map(|p| expected[p].clone())
        .collect();
    let got: Vec<String> = by_start.into_iter().map(|o| o.2).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn idempotent_submit_returns_the_same_job() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("idem");
    let url = redis.url();
    let args = [
        "submit",
        "--world",
        "w",
        "--renderer",
        "noop",
        "--id",
        "nightly:w:2026-12-04",
    ];
    let first = cli(&url, &ns, &args);
    let second = cli(&url, &ns, &args);
    assert!(first.status.success() && second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "nightly:w:2026-12-04"
    );
    assert_eq!(first.stdout, second.stdout);
    assert!(String::from_utf8_lossy(&second.stderr).contains("already exists"));
    let fleet = redis.fleet(&ns).await.unwrap();
    let mut c = redis.conn().await.unwrap();
    let mut entries = 0u64;
    for p in Priority::ALL {
        let n: u64 = redis::AsyncCommands::xlen(&mut c, fleet.keys().stream(p))
            .await
            .unwrap();
        entries += n;
    }
    assert_eq!(entries, 1, "one stream entry for two submits");
    let jobs = fleet.jobs(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
}
