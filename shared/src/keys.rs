//! The Redis key schema: every key a fleet uses is named here and nowhere else.
//! `docs/redis-keys.md` documents each key, its type and who writes it.
//!
//! All keys start with `{<ns>}:`. The hash tag keeps a fleet in one Redis Cluster slot, which keeps
//! the Lua scripts (that build job, lock and worker keys from the prefix) legal on a cluster.

use crate::error::{Error, Result};
use crate::job::Priority;

/// Consumer group every agent reads the job streams through.
pub const GROUP: &str = "workers";
/// Lines of renderer output kept on a job (`job:<id>:log`); must match `LOG_LINES` in `lib.lua`.
pub const LOG_LINES: usize = 200;
/// Upper bounds (seconds) of the job duration histogram; must match `DURATION_BUCKETS` in `lib.lua`.
pub const DURATION_BUCKETS: [u64; 9] = [1, 10, 60, 300, 900, 3600, 14400, 43200, 86400];
/// Approximate length the heartbeat stream is trimmed to.
pub const HEARTBEAT_STREAM_LEN: usize = 10_000;

/// Key names of one fleet (namespace).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    ns: String,
}

impl Keys {
    /// Keys of namespace `ns` (1-64 characters of `A-Za-z0-9_.-`).
    pub fn new(ns: &str) -> Result<Self> {
        let ok = !ns.is_empty()
            && ns.len() <= 64
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(Error::Config(format!(
                "namespace '{ns}' must be 1-64 characters of A-Z a-z 0-9 _ . -"
            )));
        }
        Ok(Self {
            prefix: format!("{{{ns}}}:"),
            ns: ns.to_owned(),
        })
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.ns
    }
    /// `{ns}:`, passed to every script as ARGV[1].
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Hash: one job record.
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }
    /// List: the last [`LOG_LINES`] lines of a job's renderer output.
    pub fn job_log(&self, id: &str) -> String {
        format!("{}job:{id}:log", self.prefix)
    }
    /// Stream: queued jobs of one priority, read through consumer group [`GROUP`].
    pub fn stream(&self, p: Priority) -> String {
        format!("{}stream:{}", self.prefix, p.as_str())
    }
    /// Sorted set: every job id by creation time (ms).
    pub fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }
    /// Sorted set: finished job ids by the time their record expires.
    pub fn expiry(&self) -> String {
        format!("{}expiry", self.prefix)
    }
    /// Sorted set: failed jobs waiting for their retry, by due time (ms).
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }
    /// Sorted set: dead-lettered job ids by time of death.
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }
    /// String: id of the job running for (world, renderer).
    pub fn lock(&self, world: &str, renderer: &str) -> String {
        format!("{}lock:{world}:{renderer}", self.prefix)
    }
    /// List: jobs waiting for the (world, renderer) lock, FIFO.
    pub fn waiting(&self, world: &str, renderer: &str) -> String {
        format!("{}waiting:{world}:{renderer}", self.prefix)
    }
    /// Hash with TTL: a worker's last heartbeat.
    pub fn worker(&self, id: &str) -> String {
        format!("{}worker:{id}", self.prefix)
    }
    /// Hash: a worker's counters (jobs taken, outcomes, peak concurrency).
    pub fn worker_stats(&self, id: &str) -> String {
        format!("{}worker:{id}:stats", self.prefix)
    }
    /// Sorted set: worker ids by last heartbeat (ms).
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }
    /// Stream: every heartbeat, trimmed to about [`HEARTBEAT_STREAM_LEN`].
    pub fn heartbeats(&self) -> String {
        format!("{}heartbeats", self.prefix)
    }
    /// Hash: renderer name -> profile JSON, published by agents so submitters can validate.
    pub fn renderers(&self) -> String {
        format!("{}renderers", self.prefix)
    }
    /// String with TTL: a drain request for a worker (set by the coordinator, read by the agent's
    /// heartbeat).
    pub fn drain(&self, worker: &str) -> String {
        format!("{}worker:{worker}:drain", self.prefix)
    }
    /// String with TTL (the lease): id of the coordinator that acts.
    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }
    /// Integer: incremented on every new leader (the lease's fencing token).
    pub fn leader_epoch(&self) -> String {
        format!("{}leader:epoch", self.prefix)
    }
    /// Hash: policy configuration (`renderfleet config set`).
    pub fn config(&self) -> String {
        format!("{}config", self.prefix)
    }
    /// Stream: coordinator decisions with inputs and reasons, trimmed.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    /// List: manual commands for the leader (`scale up`, `workers remove`, ...), JSON each.
    pub fn commands(&self) -> String {
        format!("{}commands", self.prefix)
    }
    /// Hash: the policy's memory (last scale times, recent recommendations), JSON.
    pub fn scaling(&self) -> String {
        format!("{}scaling", self.prefix)
    }
    /// Hash: workers started by a backend that have not heartbeated yet -> start time (ms).
    pub fn warming(&self) -> String {
        format!("{}warming", self.prefix)
    }
    /// Hash: workers asked to drain -> deadline (ms).
    pub fn draining(&self) -> String {
        format!("{}draining", self.prefix)
    }
    /// Hash: fleet-wide counters for metrics (jobs by final state, attempts failed, reclaims,
    /// scaling actions by direction and reason).
    pub fn stats(&self) -> String {
        format!("{}stats", self.prefix)
    }
    /// Hash: histogram of succeeded jobs' run time: `b_<seconds>` / `b_inf` per-bucket counts (each
    /// job in the smallest bucket that fits) and `sum_ms`.
    pub fn durations(&self) -> String {
        format!("{}stats:durations", self.prefix)
    }
    /// Hash: scheduled renders, name -> JSON.
    pub fn schedules(&self) -> String {
        format!("{}schedules", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_hash_tag() {
        let k = Keys::new("rf").expect("valid namespace");
        for key in [
            k.job("a"),
            k.job_log("a"),
            k.stream(Priority::High),
            k.jobs(),
            k.expiry(),
            k.delayed(),
            k.dead(),
            k.lock("w", "r"),
            k.waiting("w", "r"),
            k.worker("1"),
            k.worker_stats("1"),
            k.workers(),
            k.heartbeats(),
            k.renderers(),
            k.drain("1"),
            k.leader(),
            k.leader_epoch(),
            k.config(),
            k.events(),
            k.commands(),
            k.scaling(),
            k.warming(),
            k.draining(),
            k.schedules(),
            k.stats(),
            k.durations(),
        ] {
            assert!(key.starts_with("{rf}:"), "{key}");
        }
    }

    #[test]
    fn namespace_is_validated() {
        for bad in ["", "a b", "a}b", "x{", &"n".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad:?}");
        }
        assert!(Keys::new("fleet-1.prod_a").is_ok());
    }
}
