//! `process`: local `renderfleet-agent run` children. They inherit the coordinator's environment
//! (so one set of `REDIS_URL`/`RENDERFLEET_*` variables configures the whole local fleet). A child
//! that crashes is restarted with the same worker id (so it settles its own pending work); one that
//! crash-loops is given up on, loudly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::{Backend, BackendEvent};
use crate::view::Snapshot;

/// Restarts allowed within [`CRASH_WINDOW`] before a worker is given up on.
const MAX_RESTARTS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);

struct Worker {
    child: Child,
    restarts: Vec<Instant>,
}

/// Local agent processes.
pub struct ProcessBackend {
    bin: PathBuf,
    args: Vec<String>,
    prefix: String,
    seq: u64,
    workers: HashMap<String, Worker>,
    stop_grace: Duration,
}

impl ProcessBackend {
    /// Children run `bin run --worker-id <prefix>-<n> <args...>`.
    pub fn new(bin: PathBuf, args: Vec<String>, prefix: String, stop_grace: Duration) -> Self {
        Self {
            bin,
            args,
            prefix,
            seq: 0,
            workers: HashMap::new(),
            stop_grace,
        }
    }

    fn spawn(&self, id: &str) -> anyhow::Result<Child> {
        Command::new(&self.bin)
            .arg("run")
            .arg("--worker-id")
            .arg(id)
            .args(&self.args)
            .stdin(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))
    }

    fn signal(child: &Child, sig: Signal) {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    async fn stop(child: &mut Child, grace: Duration) {
        Self::signal(child, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn local(&self) -> bool {
        true
    }

    async fn add(&mut self, n: u32) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for _ in 0..n {
            self.seq += 1;
            let id = format!("{}-{}", self.prefix, self.seq);
            let child = self.spawn(&id)?;
            info!(worker = %id, pid = child.id(), "started agent process");
            self.workers.insert(
                id.clone(),
                Worker {
                    child,
                    restarts: Vec::new(),
                },
            );
            ids.push(id);
        }
        Ok(ids)
    }

    async fn remove(&mut self, id: &str) -> anyhow::Result<bool> {
        let Some(mut w) = self.workers.remove(id) else {
            return Ok(false);
        };
        if w.child.try_wait()?.is_none() {
            Self::stop(&mut w.child, self.stop_grace).await;
        }
        Ok(true)
    }

    async fn maintain(&mut self, _s: &Snapshot) -> Vec<BackendEvent> {
        let mut events = Vec::new();
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in ids {
            let status = match self.workers.get_mut(&id).map(|w| w.child.try_wait()) {
                Some(Ok(Some(s))) => s,
                _ => continue,
            };
            if status.success() {
                info!(worker = %id, "agent process exited cleanly");
                self.workers.remove(&id);
                events.push(BackendEvent {
                    kind: "exited",
                    worker: id,
                    detail: "exit 0".into(),
                });
                continue;
            }
            let Some(mut w) = self.workers.remove(&id) else {
                continue;
            };
            w.restarts.retain(|t| t.elapsed() < CRASH_WINDOW);
            if w.restarts.len() >= MAX_RESTARTS {
                warn!(worker = %id, %status, "agent process keeps crashing; giving up on it");
                events.push(BackendEvent {
                    kind: "crash_loop",
                    worker: id,
                    detail: format!(
                        "{status}; {MAX_RESTARTS} restarts within {}s, not restarted",
                        CRASH_WINDOW.as_secs()
                    ),
                });
                continue;
            }
            match self.spawn(&id) {
                Ok(child) => {
                    warn!(worker = %id, %status, "agent process died; restarted it with the same worker id");
                    w.restarts.push(Instant::now());
                    w.child = child;
                    events.push(BackendEvent {
                        kind: "restarted",
                        worker: id.clone(),
                        detail: status.to_string(),
                    });
                    self.workers.insert(id, w);
                }
                Err(e) => events.push(BackendEvent {
                    kind: "restart_failed",
                    worker: id,
                    detail: format!("{e:#}"),
                }),
            }
        }
        events
    }

    fn managed(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    async fn shutdown(&mut self) {
        for w in self.workers.values() {
            Self::signal(&w.child, Signal::SIGTERM);
        }
        for (id, mut w) in self.workers.drain() {
            if tokio::time::timeout(self.stop_grace, w.child.wait())
                .await
                .is_err()
            {
                warn!(worker = %id, "agent did not drain in time; killing it");
                let _ = w.child.kill().await;
            }
        }
    }
}
