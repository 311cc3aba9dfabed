//! Bad input gets one clear line, exit 1, and writes nothing; Redis down or refusing credentials is
//! reported the same way by the CLI and retried (with a message) by the agent.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use renderfleet_shared::job::MAX_JOB_BYTES;
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(30);

fn one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("renderfleet: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{stderr:?} should mention {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

async fn dbsize(redis: &TestRedis) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut redis.conn().await.unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn invalid_jobs_are_refused_and_nothing_is_written() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("bad");
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let malformed = file("malformed.json", r#"{"world": "w", "renderer": "#);
    let unknown_field = file(
        "unknown.json",
        r#"{"world": "w", "renderer": "noop", "shell": "rm -rf /"}"#,
    );
    let huge = file(
        "huge.json",
        &format!(
            r#"{{"world": "w", "renderer": "overviewer", "params": {{"rendermodes": "{}"}}}}"#,
            "a".repeat(MAX_JOB_BYTES)
        ),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["submit", "--spec", &malformed], "malformed job JSON"),
        (
            vec!["submit", "--spec", &unknown_field],
            "unknown field `shell`",
        ),
        (vec!["submit", "--spec", &huge], "the limit is 16384"),
        (
            vec!["submit", "--world", "w", "--renderer", "bluemapx"],
            "unknown renderer 'bluemapx'",
        ),
        (
            vec![
                "submit",
                "--world",
                "w",
                "--renderer",
                "overviewer",
                "--param",
                "config=/etc/passwd",
            ],
            "does not declare param 'config'",
        ),
        (
            vec![
                "submit",
                "--world",
                "w",
                "--renderer",
                "overviewer",
                "--param",
                "threads=4;reboot",
            ],
            "does not match",
        ),
        (
            vec!["submit", "--world", "../etc", "--renderer", "overviewer"],
            "world '../etc'",
        ),
        (
            vec!["submit", "--world", "a/b", "--renderer", "overviewer"],
            "world 'a/b'",
        ),
        (
            vec!["submit", "--world", "..", "--renderer", "overviewer"],
            "world '..'",
        ),
        (
            vec![
                "submit",
                "--world",
                "w",
                "--renderer",
                "overviewer",
                "--param",
                "novalue",
            ],
            "is not KEY=VALUE",
        ),
        (
            vec![
                "submit",
                "--world",
                "w",
                "--renderer",
                "noop",
                "--priority",
                "urgent",
            ],
            "priority 'urgent'",
        ),
        (
            vec![
                "submit",
                "--world",
                "w",
                "--renderer",
                "noop",
                "--max-attempts",
                "0",
            ],
            "max_attempts 0",
        ),
        (
            vec![
                "submit",
                "--world",
                "w",
                "--renderer",
                "noop",
                "--id",
                "a b",
            ],
            "job id 'a b'",
        ),
        (vec!["jobs", "--state", "exploded"], "state 'exploded'"),
        (vec!["job", "nope"], "no job with id 'nope'"),
        (vec!["cancel", "nope"], "no job with id 'nope'"),
    ];
    for (args, needle) in cases {
        let out = cli(&url, &ns, &args);
        one_line_error(&out, needle);
    }
    assert_eq!(dbsize(&redis).await, 0, "bad input wrote keys");
    // A usage error is exit 2.
    let out = cli(&url, &ns, &["submit", "--world"]);
    assert_eq!(out.status.code(), Some(2));
    // Oversized JSON on stdin is refused too (read is bounded).
    let mut child = std::process::Command::new(bin("renderfleet"))
        .args(["submit", "--spec", "-"])
        .env("REDIS_URL", &url)
        .env("RENDERFLEET_NAMESPACE", &ns)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(
            format!(
                r#"{{"world":"w","renderer":"noop","id":"{}"}}"#,
                "x".repeat(1 << 20)
            )
            .as_bytes(),
        );
    }
    let out = child.wait_with_output().unwrap();
    one_line_error(&out, "the limit is 16384");
    assert_eq!(dbsize(&redis).await, 0);
}

#[tokio::test]
async fn cli_with_redis_down_or_wrong_password_exits_1_with_one_line() {
    let mut down = TestRedis::start().unwrap();
    let url = down.url();
    down.stop();
    let out = cli(&url, "rf", &["jobs"]);
    one_line_error(&out, "cannot reach Redis at 127.0.0.1:");

    let locked = TestRedis::start_with(Some("right"), &[]).unwrap();
    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", locked.port);
    let out = cli(
        &wrong,
        "rf",
        &["submit", "--world", "w", "--renderer", "noop"],
    );
    one_line_error(&out, "refused the credentials");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("wrong"),
        "password leaked into the message"
    );
    let none = format!("redis://127.0.0.1:{}/0", locked.port);
    let out = cli(&none, "rf", &["workers"]);
    one_line_error(&out, "refused the credentials");
    // The right password works.
    cli_ok(&locked.url(), "rf", &["jobs"]);
}

#[tokio::test]
async fn agent_retries_until_redis_comes_up_and_says_so() {
    // Reserve a port, start the agent against it while nothing listens there.
    let mut first = TestRedis::start().unwrap();
    let port = first.port;
    first.stop();
    let url = format!("redis://127.0.0.1:{port}/0");
    let ns = ns("late-redis");
    let site = Site::new(&["w"]).unwrap();
    let agent = Agent::start(&url, &ns, &site, AgentOpts::new("a1")).unwrap();
    wait_for(T, "the agent to report Redis unavailable twice", || async {
        (agent
            .log_text()
            .matches("Redis not available; retrying")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    assert!(agent
        .log_text()
        .contains("cannot reach Redis at 127.0.0.1:"));
    // Now Redis comes up on that port: the agent connects and works.
    let redis = wait_for(T, "redis to start on the reserved port", || async {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().ok()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        match child.try_wait() {
            Ok(None) => Some(KillOnDrop(child)),
            _ => None,
        }
    })
    .await;
    let fleet = wait_for(T, "a fleet connection", || async {
        renderfleet_shared::Fleet::connect(&url, &ns).await.ok()
    })
    .await;
    wait_for(T, "the agent's heartbeat", || async {
        fleet.worker("a1").await.ok().flatten()
    })
    .await;
    let id = cli_ok(&url, &ns, &["submit", "--world", "w", "--renderer", "noop"]);
    wait_state(&fleet, &id, "succeeded", T).await;
    drop(redis);
}

#[tokio::test]
async fn agent_with_wrong_password_keeps_retrying_and_says_why() {
    let redis = TestRedis::start_with(Some("right"), &[]).unwrap();
    let url = format!("redis://:wrong@127.0.0.1:{}/0", redis.port);
    let site = Site::new(&[]).unwrap();
    let mut agent = Agent::start(&url, "rf", &site, AgentOpts::new("a1")).unwrap();
    wait_for(T, "the agent to report the refused credentials", || async {
        agent
            .log_text()
            .contains("refused the credentials")
            .then_some(())
    })
    .await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent keeps retrying, it does not exit"
    );
    assert!(
        !agent.log_text().contains("wrong"),
        "password leaked into the log"
    );
    // SIGTERM while waiting for Redis: a clean exit.
    agent.term();
    assert!(agent.wait_exit(T).unwrap().success());
}

#[tokio::test]
async fn garbage_in_redis_is_skipped_not_a_crash() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("garbage");
    let site = Site::new(&["w"]).unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    fleet.ensure_groups().await.unwrap();
    let mut c = redis.conn().await.unwrap();
    let stream = fleet
        .keys()
        .stream(renderfleet_shared::job::Priority::Normal);
    // An entry without a job, one naming a job that does not exist, and a job whose params are junk.
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("junk")
        .arg("1")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("job")
        .arg("ghost")
        .query_async(&mut c)
        .await
        .unwrap();
    let profiles = fleet.profiles().await.unwrap();
    let spec = renderfleet_shared::job::JobSpec {
        world: "w".into(),
        renderer: "noop".into(),
        ..Default::default()
    };
    let bad = fleet.submit(&spec, &profiles).await.unwrap().id;
    let _: () = redis::AsyncCommands::hset(&mut c, fleet.keys().job(&bad), "params", "{not json")
        .await
        .unwrap();
    // Garbage worker hash written by hand: listed workers skip it.
    let _: () = redis::AsyncCommands::zadd(&mut c, fleet.keys().workers(), "zombie", 1)
        .await
        .unwrap();
    let _: () =
        redis::AsyncCommands::hset(&mut c, fleet.keys().worker("zombie"), "status", "on fire")
            .await
            .unwrap();

    let agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let dead = wait_state(&fleet, &bad, "dead", T).await;
    assert!(
        dead.error
            .as_deref()
            .unwrap_or("")
            .contains("params are not a JSON object"),
        "{dead:?}"
    );
    let good = cli_ok(
        &redis.url(),
        &ns,
        &["submit", "--world", "w", "--renderer", "noop"],
    );
    wait_state(&fleet, &good, "succeeded", T).await;
    // The junk entries were acknowledged and removed; nothing is left pending.
    let len: u64 = redis::AsyncCommands::xlen(&mut c, &stream).await.unwrap();
    assert_eq!(len, 0);
    let workers: serde_json::Value =
        serde_json::from_str(&cli_ok(&redis.url(), &ns, &["workers", "--json"])).unwrap();
    let ids: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1"]);
    assert!(!agent.log_text().contains("panicked"));
}
