//! The HTTP admin API against real Redis and a running coordinator: every endpoint's success path
//! and its error statuses, auth, /metrics, and the OpenAPI document against the router.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use renderfleet_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "test-token-0123456789abcdef";

struct Api {
    base: String,
}

impl Api {
    /// (status, body) of one request through curl.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "--max-time",
            "10",
        ]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = c.arg(format!("{}{path}", self.base)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
    fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (s, b) = self.call(method, path, Some(TOKEN), body);
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn start(
    test: &str,
    extra: &[&str],
) -> (
    TestRedis,
    String,
    Site,
    Coordinator,
    Api,
    renderfleet_shared::Fleet,
) {
    let redis = TestRedis::start().unwrap();
    let ns = ns(test);
    let site = Site::new(&["w1", "w2"]).unwrap();
    cli_ok(
        &redis.url(),
        &ns,
        &[
            "config",
            "set",
            "min_workers=0",
            "heartbeat_interval=500ms",
            "worker_ttl=2s",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_file = site.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut args = vec![
        "--http".to_string(),
        format!("127.0.0.1:{port}"),
        "--http-token-file".into(),
        token_file.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let coord = Coordinator::start(&redis.url(), &ns, &site, "c1", "none", &a).unwrap();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_for(T, "the API", || async {
        (api.call("GET", "/api/scaling/health", None, None).0 != 0).then_some(())
    })
    .await;
    let fleet = redis.fleet(&ns).await.unwrap();
    (redis, ns, site, coord, api, fleet)
}

#[tokio::test]
async fn every_endpoint_success_and_errors() {
    let (redis, ns, site, _coord, api, fleet) = start("http", &[]).await;
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();

    // Jobs.
    let (s, job) = api.json(
        "POST",
        "/api/jobs",
        Some(r#"{"world":"w1","renderer":"fake","id":"j1","params":{"seconds":"0.2"}}"#),
    );
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["id"], "j1");
    let (s, again) = api.json(
        "POST",
        "/api/jobs",
        Some(r#"{"world":"w1","renderer":"fake","id":"j1"}"#),
    );
    assert_eq!(
        (s, again["id"].as_str()),
        (200, Some("j1")),
        "idempotent submit"
    );
    for (body, needle) in [
        (r#"{"world":"../etc","renderer":"fake"}"#, "world '../etc'"),
        (r#"{"world":"w1","renderer":"nope"}"#, "unknown renderer"),
        (
            r#"{"world":"w1","renderer":"fake","params":{"evil":"1"}}"#,
            "does not declare param",
        ),
        (r#"{"world":"w1""#, ""),
        (
            r#"{"world":"w1","renderer":"fake","shell":"x"}"#,
            "unknown field",
        ),
    ] {
        let (s, e) = api.json("POST", "/api/jobs", Some(body));
        assert_eq!(s, 400, "{body}: {e}");
        assert_eq!(error_code(&e), "bad_request");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }
    let big = format!(
        r#"{{"world":"w1","renderer":"fake","id":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (s, _) = api.call("POST", "/api/jobs", Some(TOKEN), Some(&big));
    assert_eq!(s, 413, "body over the limit");
    wait_state(&fleet, "j1", "succeeded", T).await;
    let (s, j) = api.json("GET", "/api/jobs/j1", None);
    assert_eq!((s, j["state"].as_str()), (200, Some("succeeded")));
    assert!(j["log"].as_array().is_some_and(|l| !l.is_empty()));
    assert_eq!(api.json("GET", "/api/jobs/nope", None).0, 404);
    let (s, list) = api.json("GET", "/api/jobs?state=succeeded&limit=5", None);
    assert_eq!((s, list.as_array().map(|a| a.len())), (200, Some(1)));
    assert_eq!(api.json("GET", "/api/jobs?state=exploded", None).0, 400);
    assert_eq!(
        api.json("DELETE", "/api/jobs/j1", None).0,
        409,
        "cancelling a finished job conflicts"
    );
    assert_eq!(api.json("DELETE", "/api/jobs/nope", None).0, 404);
    let (s, long) = api.json(
        "POST",
        "/api/jobs",
        Some(r#"{"world":"w2","renderer":"fake","params":{"seconds":"30"}}"#),
    );
    assert_eq!(s, 201);
    let id = long["id"].as_str().unwrap().to_owned();
    wait_state(&fleet, &id, "running", T).await;
    let (s, c) = api.json("DELETE", &format!("/api/jobs/{id}"), None);
    assert_eq!((s, c["state"].as_str()), (200, Some("cancelling")));
    wait_for(T, "cancel confirmed", || async {
        fleet
            .job(&id)
            .await
            .ok()
            .flatten()
            .and_then(|j| j.finished_at)
    })
    .await;
    let (s, r) = api.json("POST", &format!("/api/jobs/{id}/retry"), None);
    assert_eq!((s, r["state"].as_str()), (200, Some("queued")));
    assert_eq!(api.json("POST", "/api/jobs/j1/retry", None).0, 409);
    assert_eq!(api.json("POST", "/api/jobs/nope/retry", None).0, 404);
    let _ = fleet.cancel(&id).await;

    // Scaling.
    let (s, st) = api.json("GET", "/api/scaling/status", None);
    assert_eq!(s, 200);
    assert_eq!(st["leader"]["id"], "c1");
    let (s, ws) = api.json("GET", "/api/scaling/workers", None);
    assert_eq!((s, ws[0]["id"].as_str()), (200, Some("a1")));
    assert_eq!(api.json("GET", "/api/scaling/workers/a1", None).0, 200);
    assert_eq!(api.json("GET", "/api/scaling/workers/ghost", None).0, 404);
    assert_eq!(
        api.json("DELETE", "/api/scaling/workers/ghost", None).0,
        404
    );
    for path in [
        "/api/scaling/workers",
        "/api/scaling/scale-up",
        "/api/scaling/scale-down",
    ] {
        let (s, q) = api.json("POST", path, Some(r#"{"by":1}"#));
        assert_eq!(s, 202, "{path}: {q}");
        assert_eq!(q["leader"], "c1");
        assert_eq!(api.json("POST", path, Some(r#"{"by":0}"#)).0, 400);
        assert_eq!(api.json("POST", path, Some(r#"{"bogus":1}"#)).0, 400);
    }
    let (s, _) = api.json("DELETE", "/api/scaling/workers/a1", None);
    assert_eq!(s, 202);
    let (s, ev) = api.json("POST", "/api/scaling/evaluate-scaling", None);
    assert_eq!(s, 200);
    assert!(ev["decision"]["reason"].is_string());
    let (s, lb) = api.json("GET", "/api/scaling/load-balancer/stats", None);
    assert_eq!(s, 200);
    assert!(
        lb[0]["share"].as_f64().is_some() && lb[0]["jobs_taken"].as_u64().unwrap() >= 2,
        "{lb}"
    );
    let (s, h) = api.json("GET", "/api/scaling/health", None);
    assert!(s == 200 || s == 503, "{h}");
    let (s, cfg) = api.json("GET", "/api/scaling/auto-scaling/config", None);
    assert_eq!((s, cfg["max_workers"].as_str()), (200, Some("10")));
    let (s, cfg) = api.json(
        "POST",
        "/api/scaling/auto-scaling/config",
        Some(r#"{"max_workers": 7, "scale_up_cooldown": "2m"}"#),
    );
    assert_eq!(
        (
            s,
            cfg["max_workers"].as_str(),
            cfg["scale_up_cooldown"].as_str()
        ),
        (200, Some("7"), Some("2m"))
    );
    let (s, e) = api.json(
        "POST",
        "/api/scaling/auto-scaling/config",
        Some(r#"{"max_workers": 0}"#),
    );
    assert_eq!((s, error_code(&e)), (400, "bad_request"));
    assert_eq!(
        api.json(
            "POST",
            "/api/scaling/auto-scaling/config",
            Some(r#"{"colour": "blue"}"#)
        )
        .0,
        400
    );
    assert_eq!(
        api.json("POST", "/api/scaling/auto-scaling/config", Some("{}"))
            .0,
        400
    );
    let (s, events) = api.json("GET", "/api/events?count=5", None);
    assert_eq!(
        (s, events.as_array().map(|a| a.len() <= 5)),
        (200, Some(true))
    );
    assert_eq!(api.json("GET", "/api/nothing-here", None).0, 404);

    // Redis down: 503 with the stable error shape.
    let mut redis = redis;
    redis.stop();
    let (s, e) = api.json("GET", "/api/jobs", None);
    assert_eq!((s, error_code(&e)), (503, "redis_unavailable"), "{e}");
}

#[tokio::test]
async fn auth_is_required_and_wrong_tokens_write_nothing() {
    let (redis, ns, _site, _coord, api, fleet) = start("auth", &[]).await;
    for (m, p, b) in [
        (
            "POST",
            "/api/jobs",
            Some(r#"{"world":"w1","renderer":"noop"}"#),
        ),
        ("POST", "/api/scaling/scale-up", Some(r#"{"by":1}"#)),
        (
            "POST",
            "/api/scaling/auto-scaling/config",
            Some(r#"{"max_workers":3}"#),
        ),
        ("DELETE", "/api/jobs/x", None),
        ("GET", "/api/scaling/status", None),
        ("GET", "/metrics", None),
    ] {
        for token in [None, Some("wrong-token-wrong-token")] {
            let (s, body) = api.call(m, p, token, b);
            assert_eq!(s, 401, "{m} {p} with {token:?}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    assert!(
        fleet.jobs(None, 10).await.unwrap().is_empty(),
        "a job was written"
    );
    let n: u64 =
        redis::AsyncCommands::llen(&mut redis.conn().await.unwrap(), fleet.keys().commands())
            .await
            .unwrap();
    assert_eq!(n, 0, "a command was queued");
    assert_eq!(
        cli_ok(&redis.url(), &ns, &["config", "get", "max_workers"]),
        "10"
    );
    // Health, the document and the dashboard are open.
    assert_ne!(api.call("GET", "/api/scaling/health", None, None).0, 401);
    assert_eq!(api.call("GET", "/api/openapi.json", None, None).0, 200);
    assert_eq!(api.call("GET", "/", None, None).0, 200);
}

#[tokio::test]
async fn public_reads_serve_gets_without_a_token_but_not_writes() {
    let (_redis, _ns, _site, _coord, api, _fleet) = start("public", &["--http-public-reads"]).await;
    assert_eq!(api.call("GET", "/api/scaling/status", None, None).0, 200);
    assert_eq!(api.call("GET", "/metrics", None, None).0, 200);
    assert_eq!(
        api.call("POST", "/api/scaling/scale-up", None, Some("{}"))
            .0,
        401
    );
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let (redis, ns, site, _coord, api, fleet) = start("metrics", &[]).await;
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let id = cli_ok(
        &redis.url(),
        &ns,
        &["submit", "--world", "w1", "--renderer", "noop"],
    );
    wait_state(&fleet, &id, "succeeded", T).await;
    let (s, text) = api.call("GET", "/metrics", Some(TOKEN), None);
    assert_eq!(s, 200);
    for line in [
        "renderfleet_workers{status=\"healthy\"} 1",
        "renderfleet_jobs_finished_total{state=\"succeeded\"} 1",
        "renderfleet_job_duration_seconds_count 1",
        "renderfleet_leader 1",
        "renderfleet_backlog_jobs{priority=\"high\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let promtool = Command::new("promtool").arg("--version").output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is not installed (apt-get install prometheus; .ci/run does)"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let (_redis, _ns, _site, _coord, api, _fleet) = start("openapi", &[]).await;
    let (s, body) = api.call("GET", "/api/openapi.json", None, None);
    assert_eq!(s, 200);
    let served: Value = serde_json::from_str(&body).unwrap();
    let in_repo: Value = serde_json::from_str(renderfleet_coordinator::http::OPENAPI).unwrap();
    assert_eq!(served, in_repo);
    let mut documented = BTreeSet::new();
    for (path, ops) in served["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = renderfleet_coordinator::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed, "router and document disagree");
    // Every documented route is served (no fallback 404 "no such route").
    for (method, path) in &routed {
        let concrete = path.replace("{workerId}", "ghost").replace("{id}", "ghost");
        let (_, body) = api.call(
            &method.to_uppercase(),
            &concrete,
            Some(TOKEN),
            (method == "post").then_some("{}"),
        );
        assert!(
            !body.contains("no such route"),
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn openapi_is_valid_and_the_api_conforms_under_schemathesis() {
    let (redis, ns, site, _coord, api, _fleet) = start("schemathesis", &[]).await;
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let valid = Command::new("python3")
        .args(["-c", "import json,sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1])))"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/openapi.json"))
        .output()
        .unwrap();
    assert!(
        valid.status.success(),
        "openapi-spec-validator (pip; .ci/run installs it): {}",
        String::from_utf8_lossy(&valid.stderr)
    );
    // Business rules that no schema can state are excluded: a renderer or config value that is
    // well-formed but unknown is a 400 (positive_data_acceptance), and DELETE of a worker asks for
    // a drain, so the worker stays visible until its jobs are done (use_after_free).
    let out = Command::new("st")
        .args([
            "run",
            &format!("{}/api/openapi.json", api.base),
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .args([
            "--max-examples",
            "15",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        // schemathesis keeps a cache in its working directory: not in the repository.
        .current_dir(site.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn dashboard_in_headless_chromium_shows_the_fleet_and_updates() {
    let (redis, ns, site, _coord, api, fleet) = start("dashboard", &["--http-public-reads"]).await;
    let _agent = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("dash-worker"))
        .await
        .unwrap();
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let chromium = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
            ])
            .args([
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=4000",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("{}/", api.base))
            .output()
            .unwrap()
    };
    let first = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&first.stdout);
    assert!(
        dom.contains("dash-worker"),
        "the worker is not on the page:\n{dom}"
    );
    assert!(dom.contains("healthy"));
    let log = String::from_utf8_lossy(&first.stderr);
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("CONSOLE")
                && (l.contains("Uncaught") || l.contains("Error") || l.contains("error"))
        })
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
    // Submit a job: the next render of the page shows it.
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
            "seconds=0.3",
        ],
    );
    wait_state(&fleet, &id, "succeeded", T).await;
    let second = chromium(&["--dump-dom"]);
    assert!(
        String::from_utf8_lossy(&second.stdout).contains(&id),
        "the new job is not on the page"
    );
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let third = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&third.stderr)
    );
}

#[tokio::test]
async fn a_standby_serves_reads_and_queues_writes_for_the_leader_and_no_token_means_read_only() {
    let (redis, ns, site, _leader, api, fleet) = start("standby", &[]).await;
    // A second coordinator: standby (c1 leads), its own API.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_file = site.path().join("token");
    let _standby = Coordinator::start(
        &redis.url(),
        &ns,
        &site,
        "c2",
        "none",
        &[
            "--http",
            &format!("127.0.0.1:{port}"),
            "--http-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .unwrap();
    let standby = Api {
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_for(T, "the standby's API", || async {
        (standby.call("GET", "/api/scaling/health", None, None).0 != 0).then_some(())
    })
    .await;
    let (s, st) = standby.json("GET", "/api/scaling/status", None);
    assert_eq!((s, st["leader"]["id"].as_str()), (200, Some("c1")), "{st}");
    let (s, q) = standby.json("POST", "/api/scaling/scale-up", Some(r#"{"by": 2}"#));
    assert_eq!((s, q["leader"].as_str()), (202, Some("c1")));
    // The leader takes the command from Redis (its next tick empties the queue).
    wait_for(T, "the leader to take the command", || async {
        let n: u64 = redis::AsyncCommands::llen(&mut fleet.conn(), fleet.keys().commands())
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await;
    let _ = api;

    // Without --http-token-file the API is read-only: writes get 403 (reads are served here
    // because of --http-public-reads).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ro = Coordinator::start(
        &redis.url(),
        &ns,
        &site,
        "c3",
        "none",
        &[
            "--http",
            &format!("127.0.0.1:{port}"),
            "--http-public-reads",
        ],
    )
    .unwrap();
    let ro = Api {
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_for(T, "the read-only API", || async {
        (ro.call("GET", "/api/scaling/health", None, None).0 != 0).then_some(())
    })
    .await;
    assert_eq!(ro.call("GET", "/api/scaling/status", None, None).0, 200);
    let (s, body) = ro.call(
        "POST",
        "/api/jobs",
        Some("anything"),
        Some(r#"{"world":"w1","renderer":"noop"}"#),
    );
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("\"forbidden\""));
    assert!(fleet.jobs(None, 10).await.unwrap().is_empty());
}
