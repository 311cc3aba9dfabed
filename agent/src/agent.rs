//! The agent's long-lived parts: start-up (connect, settle), the pull loop, heartbeats, the lease
//! checker, and the drain on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use renderfleet_shared::fleet::{Claim, Outcome};
use renderfleet_shared::renderer::{Profiles, Runner};
use renderfleet_shared::worker::{Heartbeat, WorkerStatus};
use renderfleet_shared::{time::now_ms, Error, Fleet};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::{hostname, AgentConfig};
use crate::executor;
use crate::memory::Meter;
use crate::process;

/// Why a running job is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The job moved on without us: cancelled, superseded by another attempt, or gone.
    MovedOn,
    /// The agent is draining and the drain timeout ran out: hand the job back.
    Drain,
}

struct RunningJob {
    attempt: u32,
    stop: watch::Sender<Option<StopReason>>,
}

struct State {
    running: HashMap<String, RunningJob>,
    max_running: u32,
    status: WorkerStatus,
    reason: String,
    draining: bool,
}

/// One agent process.
pub struct Agent {
    pub(crate) fleet: Fleet,
    pub(crate) cfg: AgentConfig,
    pub(crate) profiles: Profiles,
    pub(crate) host: String,
    /// Profiles whose program exists here (reported in the heartbeat).
    available: Vec<String>,
    started_at_ms: u64,
    state: Mutex<State>,
    slot_freed: Notify,
    /// Set when the coordinator asked this worker to drain (through Redis).
    drain_requested: std::sync::atomic::AtomicBool,
}

/// Run an agent until `shutdown` fires, then drain and return.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let profiles = Profiles::load(cfg.renderers.as_deref())?;
    let mut available = Vec::new();
    for p in profiles.iter() {
        match &p.runner {
            Runner::Command(argv) if !program_available(&argv[0]) => {
                warn!(renderer = %p.name, program = %argv[0], "renderer program not found on this worker; its jobs will fail here");
            }
            _ => available.push(p.name.clone()),
        }
    }
    let Some(fleet) = connect_with_retry(&cfg, &shutdown).await else {
        info!("stopped before Redis became available");
        return Ok(());
    };
    fleet.ensure_groups().await?;
    fleet.publish_profiles(&profiles).await?;
    let agent = Arc::new(Agent {
        fleet,
        host: hostname(),
        available,
        started_at_ms: now_ms(),
        state: Mutex::new(State {
            running: HashMap::new(),
            max_running: 0,
            status: WorkerStatus::Healthy,
            reason: String::new(),
            draining: false,
        }),
        slot_freed: Notify::new(),
        drain_requested: std::sync::atomic::AtomicBool::new(false),
        profiles,
        cfg,
    });
    let span = info_span!("worker", id = %agent.cfg.worker_id);
    agent.clone().run_inner(shutdown).instrument(span).await
}

async fn connect_with_retry(cfg: &AgentConfig, shutdown: &CancellationToken) -> Option<Fleet> {
    let mut delay = Duration::from_millis(500);
    loop {
        match Fleet::connect(&cfg.redis_url, &cfg.namespace).await {
            Ok(f) => return Some(f),
            Err(e) => {
                warn!(error = %e, retry_in = %renderfleet_shared::time::human(delay), "Redis not available; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn program_available(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

impl Agent {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run_inner(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        info!(capacity = self.cfg.capacity, host = %self.host, "agent starting");
        self.settle("start")
            .await
            .context("settling what this worker had pending")?;
        self.beat().await;

        let bg = CancellationToken::new();
        let hb = tokio::spawn(self.clone().heartbeat_loop(bg.clone(), shutdown.clone()));
        let checker = tokio::spawn(self.clone().check_loop(bg.clone()));
        let jobs = TaskTracker::new();

        self.pull_loop(&shutdown, &jobs).await;

        // Drain: decide, tell, wait.
        info!(running = self.running_count(), drain_timeout = %renderfleet_shared::time::human(self.cfg.drain_timeout), "draining");
        {
            let mut st = self.state();
            st.draining = true;
            st.status = WorkerStatus::Draining;
        }
        self.beat().await;
        jobs.close();
        // A drain the coordinator asked for (scale-in) never interrupts a render: it waits for the
        // running jobs however long they take. A signal's drain is bounded by --drain-timeout.
        let requested = self
            .drain_requested
            .load(std::sync::atomic::Ordering::SeqCst);
        let limit = if requested {
            Duration::MAX
        } else {
            self.cfg.drain_timeout
        };
        if tokio::time::timeout(limit, jobs.wait()).await.is_err() {
            {
                let st = self.state();
                info!(
                    jobs = st.running.len(),
                    "drain timeout reached; stopping and handing back running jobs"
                );
                for job in st.running.values() {
                    let _ = job.stop.send(Some(StopReason::Drain));
                }
            }
            jobs.wait().await;
        }
        if let Err(e) = self.settle("exit").await {
            warn!(error = %e, "could not settle pending entries on exit; the coordinator will");
        }
        bg.cancel();
        let _ = hb.await;
        let _ = checker.await;
        self.state().status = WorkerStatus::Stopped;
        self.beat().await;
        if let Err(e) = self.fleet.forget_worker(&self.cfg.worker_id).await {
            debug!(error = %e, "could not remove worker from the index");
        }
        info!("agent stopped");
        Ok(())
    }

    fn running_count(&self) -> usize {
        self.state().running.len()
    }

    /// Pull jobs while there is free capacity and the agent is healthy.
    async fn pull_loop(self: &Arc<Self>, shutdown: &CancellationToken, jobs: &TaskTracker) {
        let mut blocking = None;
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let (free, status) = {
                let st = self.state();
                (self.cfg.capacity as usize - st.running.len(), st.status)
            };
            if free == 0 || status != WorkerStatus::Healthy {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.slot_freed.notified() => {}
                    _ = tokio::time::sleep(self.cfg.heartbeat_interval) => {}
                }
                continue;
            }
            let step = async {
                let (claims, next_due) = self.fleet.claim(&self.cfg.worker_id, free).await?;
                if !claims.is_empty() {
                    return Ok::<_, Error>(claims);
                }
                let mut block = self.cfg.block;
                if let Some(due) = next_due {
                    let wait = Duration::from_millis(due.saturating_sub(now_ms()).max(5));
                    block = block.min(wait);
                }
                if blocking.is_none() {
                    blocking = Some(self.fleet.blocking_connection(self.cfg.block).await?);
                }
                let Some(conn) = blocking.as_mut() else {
                    return Ok(Vec::new());
                };
                match self
                    .fleet
                    .read_blocking(conn, &self.cfg.worker_id, free, block)
                    .await
                {
                    Ok(c) => Ok(c),
                    Err(e) => {
                        blocking = None;
                        Err(e)
                    }
                }
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = step => r,
            };
            match result {
                Ok(claims) => {
                    backoff = Duration::from_millis(200);
                    for c in claims {
                        self.launch(c, jobs);
                    }
                }
                Err(e) => {
                    warn!(error = %e, retry_in = %renderfleet_shared::time::human(backoff), "pulling jobs failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn launch(self: &Arc<Self>, claim: Claim, jobs: &TaskTracker) {
        let (tx, rx) = watch::channel(None);
        {
            let mut st = self.state();
            st.running.insert(
                claim.id.clone(),
                RunningJob {
                    attempt: claim.attempt,
                    stop: tx,
                },
            );
            st.max_running = st.max_running.max(st.running.len() as u32);
        }
        let agent = self.clone();
        jobs.spawn(async move {
            let (id, attempt) = (claim.id.clone(), claim.attempt);
            executor::execute(&agent, claim, rx).await;
            // Only this attempt's entry: a sharded render's final step (same id, next attempt)
            // may already be running here.
            let mut st = agent.state();
            if st.running.get(&id).is_some_and(|r| r.attempt == attempt) {
                st.running.remove(&id);
            }
            drop(st);
            agent.slot_freed.notify_one();
        });
    }

    /// Settle entries this worker has pending from an earlier life (or an interrupted read).
    async fn settle(&self, when: &str) -> renderfleet_shared::Result<()> {
        let entries = self.fleet.pending_entries(&self.cfg.worker_id).await?;
        let running: Vec<String> = self.state().running.keys().cloned().collect();
        let orphans = self.fleet.settle(&self.cfg.worker_id, &entries).await?;
        for o in orphans.into_iter().filter(|o| !running.contains(&o.id)) {
            if o.host == self.host {
                if let (Ok(pid), Ok(pstart)) = (o.pid.parse::<u32>(), o.pstart.parse::<u64>()) {
                    if process::kill_leftover(pid, pstart).await {
                        info!(job = %o.id, pid, "killed renderer left over from an earlier run of this worker");
                    }
                }
            }
            let r = self
                .fleet
                .finish(
                    &o.id,
                    o.attempt,
                    &self.cfg.worker_id,
                    Outcome::Lost,
                    None,
                    "worker restarted; attempt lost",
                )
                .await?;
            info!(job = %o.id, attempt = o.attempt, result = ?r, when, "settled attempt from an earlier run");
        }
        Ok(())
    }

    fn heartbeat_of(&self, meter: Option<&mut Meter>) -> Heartbeat {
        let reading = meter.map(|m| m.read());
        let mut st = self.state();
        if let Some(r) = reading {
            if !st.draining && st.status != WorkerStatus::Stopped {
                let frac = r.fraction();
                let (status, reason) = if frac > self.cfg.memory_threshold {
                    (
                        WorkerStatus::Degraded,
                        format!("memory at {:.0}% of limit", frac * 100.0),
                    )
                } else {
                    (WorkerStatus::Healthy, String::new())
                };
                if status != st.status {
                    info!(status = status.as_str(), reason = %reason, "worker status changed");
                    if status == WorkerStatus::Healthy {
                        self.slot_freed.notify_one();
                    }
                }
                st.status = status;
                st.reason = reason;
            }
        }
        let r = reading.unwrap_or_default();
        Heartbeat {
            worker: self.cfg.worker_id.clone(),
            status: st.status,
            reason: st.reason.clone(),
            running: st.running.len() as u32,
            capacity: self.cfg.capacity,
            memory_used: r.used,
            memory_limit: r.limit,
            cpu: r.cpu,
            host: self.host.clone(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            jobs: st.running.keys().cloned().collect(),
            renderers: self.available.clone(),
            max_running: st.max_running,
        }
    }

    /// Write one heartbeat now (status changes are announced at once, not at the next tick).
    async fn beat(&self) {
        let hb = self.heartbeat_of(Some(&mut Meter::new()));
        if let Err(e) = self.fleet.heartbeat(&hb, self.cfg.worker_ttl).await {
            warn!(error = %e, "heartbeat failed");
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken, shutdown: CancellationToken) {
        let mut meter = Meter::new();
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let hb = self.heartbeat_of(Some(&mut meter));
            let result = self.fleet.heartbeat(&hb, self.cfg.worker_ttl).await;
            if let Ok((_, Some(reason))) = &result {
                if !self
                    .drain_requested
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    info!(reason = %reason, "drain requested through Redis; finishing running jobs, then exiting");
                    shutdown.cancel();
                }
            }
            match result {
                Ok(_) if failing => {
                    info!("heartbeats reach Redis again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    warn!(error = %e, "heartbeat failed; running jobs continue, their leases may be reclaimed");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Stop renders whose job moved on (cancelled, superseded, reclaimed) without waiting for output.
    async fn check_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let jobs: Vec<(String, u32)> = self
                .state()
                .running
                .iter()
                .map(|(id, j)| (id.clone(), j.attempt))
                .collect();
            if jobs.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &jobs {
                pipe.cmd("HMGET")
                    .arg(self.fleet.keys().job(id))
                    .arg("state")
                    .arg("attempt")
                    .arg("worker");
            }
            let replies: Vec<(Option<String>, Option<u32>, Option<String>)> =
                match pipe.query_async(&mut self.fleet.conn()).await {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(error = %e, "lease check failed");
                        continue;
                    }
                };
            for ((id, attempt), (state, cur, worker)) in jobs.iter().zip(replies) {
                let ours = state.as_deref() == Some("running")
                    && cur == Some(*attempt)
                    && worker.as_deref() == Some(self.cfg.worker_id.as_str());
                if !ours {
                    if let Some(job) = self.state().running.get(id) {
                        if job.stop.borrow().is_none() {
                            info!(job = %id, attempt, state = ?state, "job moved on; stopping its render");
                            let _ = job.stop.send(Some(StopReason::MovedOn));
                        }
                    }
                }
            }
        }
    }
}
