//! The coordinator's tick loop. Every tick: renew the leader lease (only the leader acts), read the
//! fleet, hand back jobs of dead workers, promote due retries, fire scheduled renders, finish
//! scale-ins, apply manual commands, run the policy and act through the backend. Every decision
//! goes to the events stream with its inputs and reason. When Redis is unreachable it holds: it
//! never acts blind.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use renderfleet_shared::scripts::scripts;
use renderfleet_shared::{Error, Fleet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::Backend;
use crate::config::{self, PolicyConfig};
use crate::ops::{self, ManualCommand};
use crate::policy::{self, Action};
use crate::schedule::{self, Fired};
use crate::view::{self, Health, Snapshot};

/// Coordinator settings from flags.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub redis_url: String,
    pub namespace: String,
    /// This coordinator's id in the lease.
    pub id: String,
    pub tick: Duration,
    pub lease_ttl: Duration,
    /// The HTTP admin API, when enabled.
    pub http: Option<crate::http::HttpConfig>,
}

/// Run until `shutdown`, then release the lease and stop the backend's workers.
pub async fn run<B: Backend>(
    cfg: CoordinatorConfig,
    mut backend: B,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let fleet = loop {
        match Fleet::connect(&cfg.redis_url, &cfg.namespace).await {
            Ok(f) => break f,
            Err(e) => {
                warn!(error = %e, "Redis not available; retrying (holding: no action without Redis)");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(cfg.tick) => {}
                }
            }
        }
    };
    fleet.ensure_groups().await?;
    info!(id = %cfg.id, backend = backend.name(), tick = ?cfg.tick, lease_ttl = ?cfg.lease_ttl, "coordinator starting");
    let mut c = Coordinator::new(fleet, cfg);
    let server = c.cfg.http.clone().map(|h| {
        let state = std::sync::Arc::new(crate::http::AppState {
            fleet: c.fleet.clone(),
            cfg: h,
            leading: c.leading_flag.clone(),
            redis_errors: c.redis_errors.clone(),
            cache: Default::default(),
        });
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(state, stop).await {
                warn!(error = %e, "HTTP admin API stopped");
            }
        })
    });
    let mut tick = tokio::time::interval(c.cfg.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redis_down = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match c.tick(&mut backend).await {
            Ok(()) if redis_down => {
                info!("Redis reachable again");
                redis_down = false;
            }
            Ok(()) => {}
            Err(e) if e.is_transient() => {
                c.redis_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.leading_flag
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                if !redis_down {
                    warn!(error = %e, "Redis unreachable: holding, no scaling action until it is back");
                }
                redis_down = true;
                c.lease_at = None;
            }
            Err(e) => warn!(error = %e, "tick failed"),
        }
    }
    info!("coordinator stopping");
    if c.leading {
        let _: redis::RedisResult<i64> = redis::Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
            .key(c.fleet.keys().leader())
            .arg(&c.cfg.id)
            .invoke_async(&mut c.fleet.conn())
            .await;
    }
    backend.shutdown().await;
    if let Some(s) = server {
        let _ = s.await;
    }
    Ok(())
}

/// One coordinator's state between ticks.
pub struct Coordinator {
    fleet: Fleet,
    cfg: CoordinatorConfig,
    leading: bool,
    /// When the lease was last renewed (local monotonic clock).
    lease_at: Option<Instant>,
    /// When this coordinator became leader: it observes for one `worker_ttl` before scaling, so
    /// workers that exist but have not heartbeated to it yet are not taken for missing.
    leading_since: Option<Instant>,
    /// Shared with the HTTP API's metrics.
    leading_flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    redis_errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Coordinator {
    /// A coordinator on a connected fleet (used by `run`, and by benchmarks to time single ticks).
    pub fn new(fleet: Fleet, cfg: CoordinatorConfig) -> Self {
        Self {
            fleet,
            cfg,
            leading: false,
            lease_at: None,
            leading_since: None,
            leading_flag: Default::default(),
            redis_errors: Default::default(),
        }
    }

    /// Whether this coordinator held the lease at its last tick.
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// The lease is fresh enough to act on (renewed less than half a TTL ago).
    fn may_act(&self) -> bool {
        self.lease_at
            .is_some_and(|t| t.elapsed() < self.cfg.lease_ttl / 2)
    }

    async fn event(&self, kind: &str, fields: &[(&str, String)]) {
        let mut all = vec![("type", kind.to_owned())];
        all.extend(fields.iter().cloned());
        match ops::append_event(&self.fleet, &self.cfg.id, &all).await {
            Ok(true) => {}
            Ok(false) => warn!(kind, "not the leader anymore; event dropped"),
            Err(e) => warn!(kind, error = %e, "could not append event"),
        }
    }

    /// One tick (see the module docs).
    pub async fn tick<B: Backend>(&mut self, backend: &mut B) -> Result<(), Error> {
        let (leads, who): (i64, String) = scripts()
            .lease
            .arg(self.fleet.keys().prefix())
            .arg(&self.cfg.id)
            .arg(self.cfg.lease_ttl.as_millis() as u64)
            .invoke_async(&mut self.fleet.conn())
            .await
            .map_err(|e| self.fleet.err(e))?;
        let cfg = config::load(&self.fleet).await?;
        let snap = view::snapshot(&self.fleet, &cfg).await?;
        // Local workers (this process's children) are reaped and restarted whether leading or not;
        // shared infrastructure (containers, services) only by the leader.
        let backend_events = if leads == 1 || backend.local() {
            backend.maintain(&snap).await
        } else {
            Vec::new()
        };
        if leads != 1 {
            if self.leading {
                warn!(leader = %who, "lost the leader lease; standing by");
            }
            self.leading = false;
            self.leading_flag
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.lease_at = None;
            return Ok(());
        }
        self.lease_at = Some(Instant::now());
        if !self.leading {
            self.leading = true;
            self.leading_flag
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.leading_since = Some(Instant::now());
            info!(epoch = %who, "leading");
            self.event(
                "leader",
                &[("epoch", who.clone()), ("reason", "lease acquired".into())],
            )
            .await;
        }
        for e in backend_events {
            self.event(
                "backend",
                &[
                    ("kind", e.kind.into()),
                    ("worker", e.worker),
                    ("reason", e.detail),
                ],
            )
            .await;
        }
        self.reclaim(&snap, &cfg).await?;
        self.fleet.promote_due().await?;
        for f in schedule::fire_due(&self.fleet, &self.cfg.id, snap.now_ms).await? {
            match f {
                Fired::Queued { schedule, job } => {
                    self.event(
                        "schedule",
                        &[
                            ("schedule", schedule),
                            ("job", job),
                            ("reason", "due".into()),
                        ],
                    )
                    .await
                }
                Fired::Skipped { schedule, because } => {
                    self.event(
                        "schedule_skipped",
                        &[("schedule", schedule), ("reason", because)],
                    )
                    .await
                }
            }
        }
        self.warmup(&snap).await?;
        self.finish_drains(&snap, backend).await?;
        if self.manual(&snap, &cfg, backend).await? {
            // This tick's snapshot predates the manual action: decide again next tick.
            return Ok(());
        }
        self.scale(&snap, &cfg, backend).await
    }

    /// Hand back the jobs of workers without a heartbeat for `worker_ttl`.
    async fn reclaim(&self, snap: &Snapshot, cfg: &PolicyConfig) -> Result<(), Error> {
        for w in snap.workers.iter().filter(|w| w.health == Health::Dead) {
            let jobs = self.fleet.reclaim_worker(&w.id).await?;
            ops::count(&self.fleet, "reclaims", jobs.len() as i64).await;
            let _ = ops::leader_op(
                &self.fleet,
                &self.cfg.id,
                "undrain",
                std::slice::from_ref(&w.id),
            )
            .await?;
            info!(worker = %w.id, age_ms = w.age_ms, jobs = ?jobs, "worker dead; its jobs handed back");
            let list = jobs
                .iter()
                .map(|(j, s)| format!("{j}->{s}"))
                .collect::<Vec<_>>()
                .join(",");
            self.event(
                "reclaim",
                &[
                    ("worker", w.id.clone()),
                    ("jobs", list),
                    (
                        "reason",
                        format!(
                            "no heartbeat for {}ms (worker_ttl {}ms)",
                            w.age_ms,
                            cfg.worker_ttl.as_millis()
                        ),
                    ),
                ],
            )
            .await;
        }
        Ok(())
    }

    /// Forget warm-up records of workers that heartbeat now, or that never came up.
    async fn warmup(&self, snap: &Snapshot) -> Result<(), Error> {
        let beating: HashSet<&str> = snap.workers.iter().map(|w| w.id.as_str()).collect();
        for (id, started) in &snap.warming {
            if beating.contains(id.as_str()) {
                ops::leader_op(
                    &self.fleet,
                    &self.cfg.id,
                    "unwarm",
                    std::slice::from_ref(id),
                )
                .await?;
            } else if snap.now_ms.saturating_sub(*started) > 120_000 {
                ops::leader_op(
                    &self.fleet,
                    &self.cfg.id,
                    "unwarm",
                    std::slice::from_ref(id),
                )
                .await?;
                self.event(
                    "warmup_failed",
                    &[
                        ("worker", id.clone()),
                        ("reason", "no heartbeat within 2m of its start".into()),
                    ],
                )
                .await;
            }
        }
        Ok(())
    }

    /// Scale-in, second half: remove drained workers once they exited, or once their deadline
    /// passed while they run nothing. A running render is never killed.
    async fn finish_drains<B: Backend>(
        &self,
        snap: &Snapshot,
        backend: &mut B,
    ) -> Result<(), Error> {
        for (id, deadline) in &snap.draining {
            let w = snap.workers.iter().find(|w| &w.id == id);
            let gone = w.is_none_or(|w| w.stopped);
            let overdue_idle = w.is_some_and(|w| snap.now_ms > *deadline && w.running == 0);
            if !(gone || overdue_idle) {
                continue;
            }
            if !self.may_act() {
                return Ok(());
            }
            let removed = backend.remove(id).await.unwrap_or_else(|e| {
                warn!(worker = %id, error = %e, "backend could not remove worker");
                false
            });
            ops::leader_op(
                &self.fleet,
                &self.cfg.id,
                "undrain",
                std::slice::from_ref(id),
            )
            .await?;
            let why = if gone {
                "drained and exited"
            } else {
                "drain deadline passed with no job running"
            };
            self.event(
                "removed",
                &[
                    ("worker", id.clone()),
                    ("backend_removed", removed.to_string()),
                    ("reason", why.into()),
                ],
            )
            .await;
        }
        Ok(())
    }

    /// Manual commands from the CLI/API, applied within bounds. Returns true when one was applied.
    async fn manual<B: Backend>(
        &self,
        snap: &Snapshot,
        cfg: &PolicyConfig,
        backend: &mut B,
    ) -> Result<bool, Error> {
        use redis::AsyncCommands;
        let mut applied = false;
        // Several commands in one tick see each other's effect on the size.
        let mut size = snap.metrics(cfg).size();
        for _ in 0..100 {
            let raw: Option<String> = self
                .fleet
                .conn()
                .rpop(self.fleet.keys().commands(), None)
                .await
                .map_err(|e| self.fleet.err(e))?;
            let Some(raw) = raw else { return Ok(applied) };
            let Ok(cmd) = serde_json::from_str::<ManualCommand>(&raw) else {
                warn!(command = %raw, "skipping malformed manual command");
                self.event(
                    "command_refused",
                    &[("command", raw), ("reason", "malformed".into())],
                )
                .await;
                continue;
            };
            applied = true;
            match cmd {
                ManualCommand::ScaleUp { by } => {
                    let n = by.min(cfg.max_workers.saturating_sub(size));
                    let why = format!(
                        "manual scale up by {by} (bounded to {n} by max_workers {})",
                        cfg.max_workers
                    );
                    self.scale_up(n, backend, &why, "manual").await?;
                    if n > 0 && backend.acts() {
                        size += n;
                        self.remember_manual(snap.now_ms, size, true).await?;
                    }
                }
                ManualCommand::ScaleDown { by } => {
                    let n = by.min(size.saturating_sub(cfg.min_workers));
                    let why = format!(
                        "manual scale down by {by} (bounded to {n} by min_workers {})",
                        cfg.min_workers
                    );
                    if backend.acts() {
                        let managed = backend.managed();
                        self.scale_down(n, snap, cfg, &why, "manual", None, Some(&managed))
                            .await?;
                        if n > 0 {
                            size -= n;
                            self.remember_manual(snap.now_ms, size, false).await?;
                        }
                    }
                }
                ManualCommand::Remove { worker } => {
                    if size <= cfg.min_workers {
                        self.event(
                            "command_refused",
                            &[
                                ("worker", worker),
                                (
                                    "reason",
                                    format!("would go below min_workers {}", cfg.min_workers),
                                ),
                            ],
                        )
                        .await;
                    } else if backend.acts() {
                        self.scale_down(
                            1,
                            snap,
                            cfg,
                            "manual remove",
                            "manual",
                            Some(&worker),
                            None,
                        )
                        .await?;
                        size -= 1;
                    } else {
                        self.event(
                            "command_refused",
                            &[
                                ("worker", worker),
                                ("reason", "backend 'none' only recommends".into()),
                            ],
                        )
                        .await;
                    }
                }
            }
        }
        Ok(applied)
    }

    /// A manual action counts for the policy like its own: it starts the cooldown and its size is
    /// a recommendation in the stabilization window, so the next tick does not undo it.
    async fn remember_manual(&self, now: u64, size: u32, up: bool) -> Result<(), Error> {
        let mut h = ops::history(&self.fleet).await?;
        if up {
            h.last_up_ms = Some(now);
        } else {
            h.last_down_ms = Some(now);
            // Older, higher recommendations would otherwise hold the fleet at its old size.
            h.recommendations.clear();
        }
        h.recommendations.push((now, size));
        let json = serde_json::to_string(&h).unwrap_or_default();
        ops::leader_op(&self.fleet, &self.cfg.id, "history", &[json]).await?;
        Ok(())
    }

    async fn scale<B: Backend>(
        &self,
        snap: &Snapshot,
        cfg: &PolicyConfig,
        backend: &mut B,
    ) -> Result<(), Error> {
        let metrics = snap.metrics(cfg);
        let history = ops::history(&self.fleet).await?;
        let (mut d, next) = policy::decide(&metrics, cfg, &history, snap.now_ms);
        let observing = self
            .leading_since
            .is_some_and(|t| t.elapsed() < cfg.worker_ttl);
        if observing && d.action != Action::Hold {
            d.reason = format!(
                "{}; holding: observing the fleet for one worker_ttl after taking the lease",
                d.reason
            );
            d.action = Action::Hold;
            d.desired = d.current;
        }
        let next = if observing { history.clone() } else { next };
        let inputs = serde_json::to_string(&metrics).unwrap_or_default();
        let mut next = next;
        if !backend.acts() {
            // Recommend only: remember the recommendation, not an action that did not happen.
            next.last_up_ms = history.last_up_ms;
            next.last_down_ms = history.last_down_ms;
        }
        let json = serde_json::to_string(&next).unwrap_or_default();
        ops::leader_op(&self.fleet, &self.cfg.id, "history", &[json]).await?;
        let action = match d.action {
            Action::Hold => "hold".to_owned(),
            Action::ScaleUp(n) => format!("scale_up:{n}"),
            Action::ScaleDown(n) => format!("scale_down:{n}"),
        };
        self.event(
            "decision",
            &[
                ("action", action),
                ("current", d.current.to_string()),
                ("desired", d.desired.to_string()),
                ("recommended", d.recommended.to_string()),
                ("inputs", inputs),
                ("backend", backend.name().into()),
                ("reason", d.reason.clone()),
            ],
        )
        .await;
        match d.action {
            Action::Hold => Ok(()),
            Action::ScaleUp(n) => self.scale_up(n, backend, &d.reason, "policy").await,
            Action::ScaleDown(_) if !backend.acts() => Ok(()),
            Action::ScaleDown(n) => {
                // The policy only drains workers its backend manages: others (compose services,
                // hand-started agents) would be restarted by whoever runs them.
                let managed = backend.managed();
                self.scale_down(n, snap, cfg, &d.reason, "policy", None, Some(&managed))
                    .await
            }
        }
    }

    async fn scale_up<B: Backend>(
        &self,
        n: u32,
        backend: &mut B,
        why: &str,
        by: &str,
    ) -> Result<(), Error> {
        if n == 0 || !backend.acts() || !self.may_act() {
            return Ok(());
        }
        match backend.add(n).await {
            Ok(ids) => {
                for id in &ids {
                    ops::leader_op(
                        &self.fleet,
                        &self.cfg.id,
                        "warming",
                        std::slice::from_ref(id),
                    )
                    .await?;
                }
                info!(workers = ?ids, reason = %why, "scaled up");
                ops::count(&self.fleet, &format!("scale_up:{by}"), 1).await;
                self.event(
                    "scale_up",
                    &[
                        ("by", by.into()),
                        ("workers", ids.join(",")),
                        ("reason", why.into()),
                    ],
                )
                .await;
            }
            Err(e) => {
                warn!(error = %e, "backend could not add workers");
                self.event(
                    "scale_up_failed",
                    &[("by", by.into()), ("reason", format!("{e:#}"))],
                )
                .await;
            }
        }
        Ok(())
    }

    /// Ask `n` workers to drain: idle ones first, then the newest (or exactly `only`).
    #[allow(clippy::too_many_arguments)]
    async fn scale_down(
        &self,
        n: u32,
        snap: &Snapshot,
        cfg: &PolicyConfig,
        why: &str,
        by: &str,
        only: Option<&str>,
        among: Option<&[String]>,
    ) -> Result<(), Error> {
        if n == 0 || !self.may_act() {
            return Ok(());
        }
        let mut candidates: Vec<_> = snap
            .workers
            .iter()
            .filter(|w| {
                matches!(
                    w.health,
                    Health::Healthy | Health::Degraded | Health::Unhealthy
                )
            })
            .filter(|w| !snap.draining.contains_key(&w.id))
            .filter(|w| only.is_none_or(|o| o == w.id))
            .filter(|w| among.is_none_or(|a| a.contains(&w.id)))
            .collect();
        candidates.sort_by_key(|w| (w.running > 0, std::cmp::Reverse(w.started_at_ms)));
        let victims: Vec<String> = candidates
            .iter()
            .take(n as usize)
            .map(|w| w.id.clone())
            .collect();
        if victims.is_empty() {
            self.event(
                "command_refused",
                &[("reason", format!("no worker to drain for: {why}"))],
            )
            .await;
            return Ok(());
        }
        let deadline = snap.now_ms + cfg.drain_timeout.as_millis() as u64;
        // The request outlives the deadline so a slow agent still sees it.
        let ttl = (cfg.drain_timeout.as_millis() as u64).max(1000) * 4 + 60_000;
        for id in &victims {
            ops::leader_op(
                &self.fleet,
                &self.cfg.id,
                "drain",
                &[
                    id.clone(),
                    ttl.to_string(),
                    deadline.to_string(),
                    why.to_owned(),
                ],
            )
            .await?;
        }
        info!(workers = ?victims, reason = %why, "asked workers to drain");
        ops::count(&self.fleet, &format!("scale_down:{by}"), 1).await;
        self.event(
            "scale_down",
            &[
                ("by", by.into()),
                ("workers", victims.join(",")),
                ("reason", why.into()),
            ],
        )
        .await;
        Ok(())
    }
}
