//! `rediss://`: the CLI and an agent over TLS to a real redis-server, and a clear error when the
//! server's certificate is not trusted.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use renderfleet_tests::*;

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn cli_and_agent_work_over_tls_and_an_untrusted_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=renderfleet test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(d.join("server.pem"))
        .arg("--tls-key-file")
        .arg(d.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(d.join("ca.pem"))
        .arg("--dir")
        .arg(d)
        .stdout(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let url = format!("rediss://127.0.0.1:{port}/0");
    let ns = ns("tls");
    let ca = d.join("ca.pem");
    let cli_tls = |args: &[&str]| {
        Command::new(bin("renderfleet"))
            .args(args)
            .env("REDIS_URL", &url)
            .env("RENDERFLEET_NAMESPACE", &ns)
            .env("SSL_CERT_FILE", &ca)
            .output()
            .unwrap()
    };
    let ok = wait_for(Duration::from_secs(20), "the TLS server", || async {
        let out = cli_tls(&["jobs"]);
        out.status.success().then_some(out)
    })
    .await;
    assert!(ok.status.success());
    // Not trusting the test CA: one clear line, exit 1.
    let out = Command::new(bin("renderfleet"))
        .arg("jobs")
        .env("REDIS_URL", &url)
        .env("SSL_CERT_FILE", d.join("server.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("renderfleet: "), "{err}");
    // An agent over TLS runs a job.
    let site = Site::new(&["w"]).unwrap();
    let log = std::fs::File::create(site.path().join("agent.log")).unwrap();
    let agent = Command::new(bin("renderfleet-agent"))
        .args([
            "run",
            "--worker-id",
            "tls-agent",
            "--heartbeat-interval",
            "200ms",
        ])
        .arg("--worlds-dir")
        .arg(site.path().join("worlds"))
        .arg("--output-dir")
        .arg(site.path().join("output"))
        .env("REDIS_URL", &url)
        .env("RENDERFLEET_NAMESPACE", &ns)
        .env("SSL_CERT_FILE", &ca)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let out = cli_tls(&[
        "submit",
        "--world",
        "w",
        "--renderer",
        "noop",
        "--wait",
        "--wait-timeout",
        "20s",
    ]);
    drop(agent);
    drop(server);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(site.path().join("agent.log")).unwrap_or_default()
    );
}
