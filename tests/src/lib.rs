//! Test support for renderfleet's end-to-end tests and benchmarks: a real `redis-server` per test
//! (RAII), real agent processes, the real CLI, and helpers that wait on conditions with deadlines.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use renderfleet_shared::Fleet;

pub mod stack;

/// A `redis-server` on a free loopback port in its own temp dir, killed on drop.
pub struct TestRedis {
    child: Child,
    pub port: u16,
    pub password: Option<String>,
    dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl TestRedis {
    /// Start a server (no persistence).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None, &[])
    }

    /// Start a server with `requirepass` and extra `--key value` config.
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            match Self::spawn(&dir, port, password, extra) {
                Ok(child) => {
                    return Ok(Self {
                        child,
                        port,
                        password: password.map(str::to_owned),
                        dir,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn spawn(
        dir: &tempfile::TempDir,
        port: u16,
        password: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<Child> {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--maxmemory-policy", "noeviction"])
        .arg("--dir")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let mut child = cmd
            .spawn()
            .context("starting redis-server (is it installed? see .ci/run)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server exited with {status} (port {port} taken?)");
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf) {
                        let reply = String::from_utf8_lossy(&buf[..n]);
                        if reply.starts_with("+PONG") || reply.starts_with("-NOAUTH") {
                            return Ok(child);
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("redis-server on port {port} did not answer within 10s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>/0`, with the password when one is set.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stop the server now (for "Redis down" tests).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A plain connection for direct inspection.
    pub async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// A [`Fleet`] client for namespace `ns`.
    pub async fn fleet(&self, ns: &str) -> anyhow::Result<Fleet> {
        Ok(Fleet::connect(&self.url(), ns).await?)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Path of a workspace binary (built by `cargo build --workspace --bins`, which the test command runs).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test binary> or target/<profile>/<bench binary> -> target/<profile>/<name>
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The `tests/fixtures` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A scratch directory with `worlds/` (holding the given worlds) and `output/`, and a renderer
/// profile file using the fixture renderers.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new(worlds: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        for w in worlds {
            std::fs::create_dir_all(dir.path().join("worlds").join(w))?;
        }
        std::fs::create_dir_all(dir.path().join("output"))?;
        let fake = fixtures().join("fake-renderer.sh");
        let sample = fixtures().join("overviewer-sample.log");
        let toml = format!(
            r#"
[renderers.fake]
command  = ["{fake}", "{{output_dir}}", "{{job_id}}", "{{attempt}}", "{{seconds}}", "{{steps}}", "{{exit}}"]
progress = "overviewer"
timeout  = "5m"
[renderers.fake.params]
seconds = {{ pattern = "^[0-9]{{1,3}}(\\.[0-9]{{1,3}})?$", default = "0.2" }}
steps   = {{ pattern = "^[1-9][0-9]{{0,2}}$", default = "2" }}
exit    = {{ pattern = "^[0-9]{{1,3}}$", default = "0" }}

[renderers.replay]
command  = ["cat", "{sample}"]
progress = "overviewer"

[renderers.true]
command = ["/bin/true"]
"#,
            fake = fake.display(),
            sample = sample.display()
        );
        std::fs::write(dir.path().join("renderers.toml"), toml)?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Output directory of (world, renderer).
    pub fn output(&self, world: &str, renderer: &str) -> PathBuf {
        self.dir.path().join("output").join(world).join(renderer)
    }
}

/// A `renderfleet-agent run` process. Killed (SIGKILL) on drop if still running.
pub struct Agent {
    pub child: Child,
    pub worker_id: String,
    pub log: PathBuf,
}

/// Options for an agent process.
#[derive(Clone)]
pub struct AgentOpts {
    pub worker_id: String,
    pub capacity: u32,
    pub drain_timeout: &'static str,
    pub extra: Vec<String>,
    /// `RUST_LOG` of the agent process.
    pub log: &'static str,
}

impl AgentOpts {
    pub fn new(worker_id: &str) -> Self {
        Self {
            worker_id: worker_id.to_owned(),
            capacity: 2,
            drain_timeout: "30s",
            extra: Vec::new(),
            log: "info",
        }
    }
    pub fn capacity(mut self, c: u32) -> Self {
        self.capacity = c;
        self
    }
    pub fn drain(mut self, d: &'static str) -> Self {
        self.drain_timeout = d;
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_owned());
        self
    }
}

impl Agent {
    /// Start an agent against `url`/`ns` in `site`, with fast test timings.
    pub fn start(url: &str, ns: &str, site: &Site, o: AgentOpts) -> anyhow::Result<Self> {
        let log = site.path().join(format!(
            "agent-{}-{}.log",
            o.worker_id,
            renderfleet_shared::time::now_ms()
        ));
        let f = std::fs::File::create(&log)?;
        let child = Command::new(bin("renderfleet-agent"))
            .arg("run")
            .args([
                "--worker-id",
                &o.worker_id,
                "--capacity",
                &o.capacity.to_string(),
            ])
            .args([
                "--heartbeat-interval",
                "200ms",
                "--check-interval",
                "100ms",
                "--kill-grace",
                "2s",
            ])
            .args(["--drain-timeout", o.drain_timeout])
            .arg("--worlds-dir")
            .arg(site.path().join("worlds"))
            .arg("--output-dir")
            .arg(site.path().join("output"))
            .arg("--renderers")
            .arg(site.path().join("renderers.toml"))
            .args(&o.extra)
            .env("REDIS_URL", url)
            .env("RENDERFLEET_NAMESPACE", ns)
            .env("RUST_LOG", o.log)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("starting renderfleet-agent")?;
        Ok(Self {
            child,
            worker_id: o.worker_id,
            log,
        })
    }

    /// Start an agent and wait until its first heartbeat is in Redis (its profiles are published
    /// before that).
    pub async fn start_ready(
        url: &str,
        ns: &str,
        site: &Site,
        o: AgentOpts,
    ) -> anyhow::Result<Self> {
        let agent = Self::start(url, ns, site, o)?;
        let fleet = Fleet::connect(url, ns).await?;
        let id = agent.worker_id.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        while fleet.worker(&id).await.ok().flatten().is_none() {
            if Instant::now() > deadline {
                bail!(
                    "agent {id} sent no heartbeat within 20s; log:\n{}",
                    agent.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(agent)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM.
    pub fn term(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "agent {} did not exit within {limit:?}; log:\n{}",
                    self.worker_id,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// Write a sample world of `n` x `n` regions into `dir` with `renderfleet sample-world`.
pub fn sample_world(dir: &Path, n: u32, seed: u64) {
    let out = Command::new(bin("renderfleet"))
        .arg("sample-world")
        .arg(dir)
        .args(["--regions", &n.to_string(), "--seed", &seed.to_string()])
        .output()
        .expect("running renderfleet sample-world");
    assert!(
        out.status.success(),
        "renderfleet sample-world: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run the `renderfleet` CLI against `url`/`ns`.
pub fn cli(url: &str, ns: &str, args: &[&str]) -> Output {
    Command::new(bin("renderfleet"))
        .args(args)
        .env("REDIS_URL", url)
        .env("RENDERFLEET_NAMESPACE", ns)
        .env_remove("RENDERFLEET_RENDERERS")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running renderfleet: {e}"))
}

/// stdout of a successful CLI call, trimmed; panics with stderr otherwise.
pub fn cli_ok(url: &str, ns: &str, args: &[&str]) -> String {
    let out = cli(url, ns, args);
    assert!(
        out.status.success(),
        "renderfleet {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Poll `check` until it returns `Some`, or fail after `limit` with `what`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until job `id` is in `state`, returning its record.
pub async fn wait_state(
    fleet: &Fleet,
    id: &str,
    state: &str,
    limit: Duration,
) -> renderfleet_shared::job::JobRecord {
    wait_for(limit, &format!("job {id} to be {state}"), || async {
        fleet
            .job(id)
            .await
            .ok()
            .flatten()
            .filter(|j| j.state.as_str() == state)
    })
    .await
}

/// Kills and reaps a child process when dropped, however the test ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True while process `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The pid the fake renderer wrote for (job, attempt), once it has started.
pub fn renderer_pid(site: &Site, world: &str, job: &str, attempt: u32) -> Option<i32> {
    std::fs::read_to_string(
        site.output(world, "fake")
            .join(format!("pid.{job}.{attempt}")),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
}

/// Lines of the fake renderer's `completions` file for (world): "JOB ATTEMPT" per successful run.
pub fn completions(site: &Site, world: &str) -> Vec<String> {
    std::fs::read_to_string(site.output(world, "fake").join("completions"))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Unique namespace per test, so tests can also share one Redis.
pub fn ns(test: &str) -> String {
    format!("t-{test}-{}", std::process::id())
}

/// A `renderfleet-coordinator` process. On drop it gets SIGTERM (so it drains the agents it
/// started), then SIGKILL if it is still there after 15s.
pub struct Coordinator {
    pub child: Child,
    pub id: String,
    pub log: PathBuf,
}

impl Coordinator {
    /// Start a coordinator with a fast tick; the process backend's agents use `site`.
    pub fn start(
        url: &str,
        ns: &str,
        site: &Site,
        id: &str,
        backend: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let log = site.path().join(format!(
            "coordinator-{id}-{}.log",
            renderfleet_shared::time::now_ms()
        ));
        let f = std::fs::File::create(&log)?;
        let agent_args = format!(
            "--worlds-dir {} --output-dir {} --renderers {} --heartbeat-interval 200ms --check-interval 100ms --kill-grace 2s",
            site.path().join("worlds").display(),
            site.path().join("output").display(),
            site.path().join("renderers.toml").display()
        );
        let child = Command::new(bin("renderfleet-coordinator"))
            .args([
                "--id",
                id,
                "--backend",
                backend,
                "--tick",
                "250ms",
                "--lease-ttl",
                "2s",
                "--agent-stop-grace",
                "10s",
            ])
            .args(["--worker-prefix", id])
            .args(extra)
            .env("REDIS_URL", url)
            .env("RENDERFLEET_NAMESPACE", ns)
            .env("RENDERFLEET_AGENT_ARGS", agent_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("starting renderfleet-coordinator")?;
        Ok(Self {
            child,
            id: id.to_owned(),
            log,
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap (its agents are left running).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("coordinator {} did not stop within 15s", self.id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
}

/// Kill (SIGKILL) every agent process that heartbeats in namespace `ns` on this host: cleanup of
/// agents orphaned by a killed coordinator.
pub async fn kill_fleet_agents(fleet: &Fleet) {
    for w in fleet.workers().await.unwrap_or_default() {
        if w.pid > 1 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(w.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Events of `kind` in the fleet's events stream (field maps, with the entry id as `id`).
pub async fn events_of(
    _redis: &TestRedis,
    fleet: &Fleet,
    kind: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    fleet_events(fleet, kind).await
}

/// Events of `kind` in the fleet's events stream, read through the fleet's own connection.
pub async fn fleet_events(
    fleet: &Fleet,
    kind: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let rows: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(fleet.keys().events())
        .arg("-")
        .arg("+")
        .query_async(&mut fleet.conn())
        .await
        .unwrap_or_default();
    rows.into_iter()
        .filter(|(_, f)| f.get("type").map(String::as_str) == Some(kind))
        .map(|(id, mut f)| {
            f.insert("id".into(), id);
            f
        })
        .collect()
}
