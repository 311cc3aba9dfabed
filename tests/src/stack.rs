//! A throwaway copy of the compose stack (`compose/docker-compose.yml`) on the real Docker engine:
//! its own project, networks, volumes, namespace and Redis port, torn down (with any container the
//! docker backend created for it) on drop. Needs the images from `compose/build-images.sh`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// One compose stack under test.
pub struct Stack {
    pub name: String,
    pub ns: String,
    pub redis_port: u16,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

fn compose_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/docker-compose.yml")
}

/// Run a docker CLI command, returning its output.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker: {e}"))
}

/// stdout of a successful docker command.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Stack {
    /// Prepare a stack named after `test`, with `worlds`, the fake renderer as a profile, and
    /// fast timings. `backend` is the coordinator's backend (`docker` or `none`).
    pub fn new(test: &str, worlds: &[&str], backend: &str) -> anyhow::Result<Self> {
        for image in [
            "renderfleet/agent:dev",
            "renderfleet/coordinator:dev",
            "renderfleet/redis:dev",
        ] {
            if !docker(&["image", "inspect", image]).status.success() {
                bail!("image {image} is missing: run compose/build-images.sh first");
            }
        }
        let name = format!("rft{}{}", test.replace(['_', '-'], ""), std::process::id());
        let dir = tempfile::tempdir()?;
        for w in worlds {
            std::fs::create_dir_all(dir.path().join("worlds").join(w))?;
        }
        let profiles = dir.path().join("profiles");
        std::fs::create_dir_all(&profiles)?;
        std::fs::copy(
            crate::fixtures().join("fake-renderer.sh"),
            profiles.join("fake-renderer.sh"),
        )?;
        std::fs::write(
            profiles.join("renderers.toml"),
            r#"
[renderers.fake]
command  = ["/etc/renderfleet/fake-renderer.sh", "{output_dir}", "{job_id}", "{attempt}", "{seconds}", "{steps}", "0"]
progress = "overviewer"
[renderers.fake.params]
seconds = { pattern = "^[0-9]{1,3}(\\.[0-9]{1,3})?$", default = "0.5" }
steps   = { pattern = "^[1-9][0-9]{0,2}$", default = "2" }
"#,
        )?;
        // Containers run as uid 10001: the scratch tree must be readable by it.
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.path())
            .status()?;
        let redis_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let env = vec![
            ("REDIS_ADMIN_PASSWORD", format!("admin-{name}")),
            ("REDIS_COORDINATOR_PASSWORD", format!("coord-{name}")),
            ("REDIS_AGENT_PASSWORD", format!("agent-{name}")),
            (
                "RENDERFLEET_WORLDS",
                dir.path().join("worlds").display().to_string(),
            ),
            ("RENDERFLEET_PROFILES", profiles.display().to_string()),
            (
                "RENDERFLEET_AGENT_RENDERERS",
                "/etc/renderfleet/renderers.toml".into(),
            ),
            ("RENDERFLEET_STACK", name.clone()),
            ("RENDERFLEET_NAMESPACE", name.clone()),
            ("RENDERFLEET_REDIS_PORT", redis_port.to_string()),
            ("RENDERFLEET_HEARTBEAT_INTERVAL", "500ms".into()),
            ("RENDERFLEET_TICK", "500ms".into()),
            ("RENDERFLEET_BACKEND", backend.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(Self {
            ns: name.clone(),
            name,
            redis_port,
            dir,
            env,
        })
    }

    /// `docker-compose -p <name> -f compose/docker-compose.yml <args>`.
    pub fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(compose_file())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap_or_else(|e| panic!("running docker-compose: {e}"))
    }

    /// `up -d` the given services (all when empty) and wait for Redis to answer.
    pub fn up(&self, services: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["up", "-d"];
        args.extend_from_slice(services);
        let out = self.compose(&args);
        if !out.status.success() {
            bail!(
                "docker-compose up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("redis-cli")
                .args([
                    "-p",
                    &self.redis_port.to_string(),
                    "--no-auth-warning",
                    "--user",
                    "admin",
                    "--pass",
                ])
                .arg(self.password("admin"))
                .arg("ping")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Redis of stack {} did not answer within 60s", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn password(&self, role: &str) -> String {
        let key = match role {
            "admin" => "REDIS_ADMIN_PASSWORD",
            "coordinator" => "REDIS_COORDINATOR_PASSWORD",
            _ => "REDIS_AGENT_PASSWORD",
        };
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Redis URL from the host with a role's credentials.
    pub fn url(&self, role: &str) -> String {
        format!(
            "redis://{role}:{}@127.0.0.1:{}/0",
            self.password(role),
            self.redis_port
        )
    }

    /// Container name of a compose service.
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    /// Names of the worker containers the docker backend created for this stack.
    pub fn backend_containers(&self) -> Vec<String> {
        let out = docker_ok(&[
            "ps",
            "--filter",
            &format!("label=renderfleet.fleet={}", self.ns),
            "--filter",
            "label=renderfleet.role=worker",
            "--format",
            "{{.Names}}",
        ]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The backend network's name.
    pub fn backend_network(&self) -> String {
        format!("{}-backend", self.name)
    }

    /// A container's logs (stdout and stderr).
    pub fn logs(&self, container: &str) -> String {
        let out = docker(&["logs", container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=renderfleet.fleet={}", self.ns),
        ]);
        for id in String::from_utf8_lossy(&ids.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let _ = docker(&["rm", "-f", id]);
        }
        let _ = docker(&[
            "volume",
            "rm",
            &format!("{}-output", self.name),
            &format!("{}-redis-data", self.name),
        ]);
        let _ = docker(&[
            "network",
            "rm",
            &format!("{}-backend", self.name),
            &format!("{}-edge", self.name),
        ]);
    }
}

/// Run `redis-cli` against the stack with a role's credentials.
pub fn redis_cli(stack: &Stack, role: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &stack.redis_port.to_string(),
            "--no-auth-warning",
            "--user",
            role,
            "--pass",
        ])
        .arg(stack.password(role))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_owned()
}

/// Poll a blocking check until it returns `Some`, or fail after `limit`.
pub fn wait_sync<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!(
                "timed out after {limit:?} waiting for {what}"
            ))
            .context(what.to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
