//! Progress parsing from a recorded sample of Overviewer output, offline and through a real agent.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use renderfleet_shared::progress::ProgressParser;
use renderfleet_shared::renderer::ProgressSpec;
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(20);

fn sample() -> String {
    std::fs::read_to_string(fixtures().join("overviewer-sample.log")).unwrap()
}

#[test]
fn overviewer_sample_parses_phase_aware_and_monotonic() {
    let mut parser = ProgressParser::new(&ProgressSpec::Overviewer);
    let readings: Vec<_> = sample().lines().filter_map(|l| parser.feed(l)).collect();
    // 25 progress lines in phase 1 and 9 in phase 2; the warning and other lines are not progress.
    assert_eq!(readings.len(), 34);
    let mut last = 0.0;
    for r in &readings {
        assert!(r.percent >= last, "went backwards: {last} -> {}", r.percent);
        last = r.percent;
    }
    assert_eq!(readings[1].percent, 1.0); // 10 of 1030
    assert_eq!(readings[24].phase.as_deref(), Some("1: 1030/1030"));
    assert_eq!(readings[24].percent, 100.0);
    assert_eq!(readings[25].phase.as_deref(), Some("2: 0/342"));
    assert_eq!(
        readings.last().unwrap().phase.as_deref(),
        Some("2: 342/342")
    );
    assert_eq!(readings.last().unwrap().percent, 100.0);
}

#[test]
fn percent_regex_profile_on_the_sample() {
    let spec = ProgressSpec::Regex(r"(?P<percent>\d+)% complete".into());
    let mut parser = ProgressParser::new(&spec);
    let readings: Vec<f64> = sample()
        .lines()
        .filter_map(|l| parser.feed(l))
        .map(|r| r.percent)
        .collect();
    // Plain percentages restart per phase; the parser never reports a step back.
    assert_eq!(readings.first(), Some(&1.0));
    assert_eq!(readings.last(), Some(&100.0));
    assert!(readings.windows(2).all(|w| w[1] > w[0]));
}

#[tokio::test]
async fn agent_records_progress_phase_and_log_tail_from_the_sample() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("progress");
    let site = Site::new(&["w"]).unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let id = cli_ok(
        &redis.url(),
        &ns,
        &["submit", "--world", "w", "--renderer", "replay"],
    );
    let fleet = redis.fleet(&ns).await.unwrap();
    wait_state(&fleet, &id, "succeeded", T).await;
    let j = fleet.job_with_log(&id).await.unwrap().unwrap();
    assert_eq!(j.phase.as_deref(), Some("2: 342/342"));
    assert_eq!(j.progress, 100.0);
    assert_eq!(
        j.log.last().map(String::as_str),
        Some("2024-05-11 21:13:44  Rendering complete!")
    );
    assert!(j.log.iter().any(|l| l.contains(" W Unknown block type")));
}
