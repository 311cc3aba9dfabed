//! Worker state as agents heartbeat it (`{ns}:worker:<id>`) and as `workers --json` prints it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::time::rfc3339;

/// Health an agent reports about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Pulling jobs while it has free capacity.
    Healthy,
    /// Memory above the threshold: runs what it has, pulls nothing new.
    Degraded,
    /// Cannot run jobs (e.g. renderer missing).
    Unhealthy,
    /// Shutting down: pulls nothing, finishing or handing back its jobs.
    Draining,
    /// Exited cleanly (last record before the key expires).
    Stopped,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Healthy => "healthy",
            WorkerStatus::Degraded => "degraded",
            WorkerStatus::Unhealthy => "unhealthy",
            WorkerStatus::Draining => "draining",
            WorkerStatus::Stopped => "stopped",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [
            Self::Healthy,
            Self::Degraded,
            Self::Unhealthy,
            Self::Draining,
            Self::Stopped,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
    }
}

/// One worker's last heartbeat plus its counters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub status: WorkerStatus,
    pub running: u32,
    pub capacity: u32,
    pub utilization: f64,
    /// Bytes in use against `memory_limit` (the cgroup's when the agent runs in one).
    pub memory_used: u64,
    pub memory_limit: u64,
    /// CPU use of the machine or container, percent of one core times cores.
    pub cpu: f64,
    pub version: String,
    pub host: String,
    pub pid: u32,
    /// Jobs running now, as `id` strings.
    pub jobs: Vec<String>,
    /// Renderer profiles whose program this worker can run.
    pub renderers: Vec<String>,
    pub last_heartbeat: String,
    pub last_heartbeat_ms: u64,
    pub started_at: Option<String>,
    /// Why the agent is unhealthy or degraded, when it is.
    pub reason: Option<String>,
    /// Counters kept beside the heartbeat (`{ns}:worker:<id>:stats`).
    pub jobs_taken: u64,
    pub jobs_succeeded: u64,
    pub jobs_failed: u64,
    pub max_running: u32,
}

impl WorkerInfo {
    /// Build from the worker hash and its stats hash. `None` when the hash holds no usable record
    /// (expired, or garbage written by hand).
    pub fn from_hashes(
        id: &str,
        h: &HashMap<String, String>,
        stats: &HashMap<String, String>,
    ) -> Option<Self> {
        let n = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok());
        let s = |k: &str| {
            stats
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let last = n("last_heartbeat")?;
        Some(WorkerInfo {
            id: id.to_owned(),
            status: WorkerStatus::parse(h.get("status")?)?,
            running: n("running")? as u32,
            capacity: n("capacity")? as u32,
            utilization: h
                .get("utilization")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            memory_used: n("memory_used").unwrap_or(0),
            memory_limit: n("memory_limit").unwrap_or(0),
            cpu: h.get("cpu").and_then(|v| v.parse().ok()).unwrap_or(0.0),
            version: h.get("version").cloned().unwrap_or_default(),
            host: h.get("host").cloned().unwrap_or_default(),
            pid: n("pid").unwrap_or(0) as u32,
            jobs: h
                .get("jobs")
                .map(|j| {
                    j.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            renderers: h
                .get("renderers")
                .map(|j| {
                    j.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            last_heartbeat: rfc3339(last),
            last_heartbeat_ms: last,
            started_at: n("started_at").map(rfc3339),
            reason: h.get("reason").filter(|r| !r.is_empty()).cloned(),
            jobs_taken: s("jobs_taken"),
            jobs_succeeded: s("jobs_succeeded"),
            jobs_failed: s("jobs_failed") + s("jobs_fatal"),
            max_running: s("max_running") as u32,
        })
    }
}

/// What an agent reports each heartbeat.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    pub worker: String,
    pub status: WorkerStatus,
    pub reason: String,
    pub running: u32,
    pub capacity: u32,
    pub memory_used: u64,
    pub memory_limit: u64,
    pub cpu: f64,
    pub host: String,
    pub pid: u32,
    pub started_at_ms: u64,
    pub jobs: Vec<String>,
    /// Renderer profiles whose program is available on this worker.
    pub renderers: Vec<String>,
    /// Highest number of jobs this agent has run at once (kept as the worker's peak).
    pub max_running: u32,
}

impl Heartbeat {
    /// Field/value pairs for the worker hash.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let util = if self.capacity == 0 {
            0.0
        } else {
            self.running as f64 / self.capacity as f64
        };
        vec![
            ("status", self.status.as_str().to_owned()),
            ("reason", self.reason.clone()),
            ("running", self.running.to_string()),
            ("capacity", self.capacity.to_string()),
            ("utilization", format!("{util:.3}")),
            ("memory_used", self.memory_used.to_string()),
            ("memory_limit", self.memory_limit.to_string()),
            ("cpu", format!("{:.1}", self.cpu)),
            ("version", crate::VERSION.to_owned()),
            ("host", self.host.clone()),
            ("pid", self.pid.to_string()),
            ("started_at", self.started_at_ms.to_string()),
            ("jobs", self.jobs.join(",")),
            ("renderers", self.renderers.join(",")),
        ]
    }
}
