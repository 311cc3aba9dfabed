//! One read of the fleet per tick: workers with their health, queue figures, and the policy's
//! inputs. A fixed number of round trips whatever the fleet size (everything is pipelined).

use std::collections::HashMap;

use redis::Value;
use renderfleet_shared::job::Priority;
use renderfleet_shared::{Fleet, Result};
use serde::Serialize;

use crate::config::PolicyConfig;
use crate::policy::Metrics;

/// A worker's health as the coordinator classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
    Draining,
    /// No heartbeat within `worker_ttl`: its jobs are handed back.
    Dead,
}

/// One worker as seen this tick.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub health: Health,
    pub running: u32,
    pub capacity: u32,
    pub started_at_ms: u64,
    pub last_heartbeat_ms: u64,
    /// Heartbeat age on the server clock.
    pub age_ms: u64,
    /// Heartbeat older than two intervals (but not yet dead), or a record we could not read.
    pub stale: bool,
    /// The agent exited cleanly (its last record says `stopped`).
    pub stopped: bool,
}

/// Queue figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Queue {
    /// Stream entries not delivered to any worker yet, per priority (high, normal, low).
    pub undelivered: [u64; 3],
    /// Entries delivered and not acknowledged (running attempts), all priorities.
    pub pending: u64,
    /// Failed jobs waiting for a retry, and how many of them are due.
    pub delayed: u64,
    pub due: u64,
    pub dead: u64,
}

impl Queue {
    /// Jobs waiting for a worker: undelivered entries plus due retries.
    pub fn backlog(&self) -> u64 {
        self.undelivered.iter().sum::<u64>() + self.due
    }
}

/// Everything one tick reads.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Redis server time (ms).
    pub now_ms: u64,
    pub workers: Vec<WorkerView>,
    /// Workers a backend started that have not heartbeated: id -> start (ms).
    pub warming: HashMap<String, u64>,
    /// Workers asked to drain: id -> deadline (ms).
    pub draining: HashMap<String, u64>,
    pub queue: Queue,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Read the fleet: two pipelined round trips.
pub async fn snapshot(fleet: &Fleet, cfg: &PolicyConfig) -> Result<Snapshot> {
    let k = fleet.keys();
    let mut c = fleet.conn();
    let mut p = redis::pipe();
    // A stream or group that does not exist yet (no agent or submit so far) reads as empty.
    p.ignore_errors();
    p.cmd("TIME")
        .cmd("ZRANGE")
        .arg(k.workers())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES");
    p.hgetall(k.warming()).hgetall(k.draining());
    for pr in Priority::ALL {
        p.cmd("XLEN").arg(k.stream(pr));
        p.cmd("XPENDING")
            .arg(k.stream(pr))
            .arg(renderfleet_shared::keys::GROUP);
    }
    p.cmd("ZCARD").arg(k.delayed()).cmd("ZCARD").arg(k.dead());
    let replies: Vec<Value> = p.query_async(&mut c).await.map_err(|e| fleet.err(e))?;
    let (secs, micros): (u64, u64) = redis::from_redis_value(replies[0].clone())
        .map_err(|e| renderfleet_shared::Error::Protocol(format!("TIME: {e}")))?;
    let now_ms = secs * 1000 + micros / 1000;
    let members: Vec<(String, f64)> =
        redis::from_redis_value(replies[1].clone()).unwrap_or_default();
    let warming: HashMap<String, String> =
        redis::from_redis_value(replies[2].clone()).unwrap_or_default();
    let draining: HashMap<String, String> =
        redis::from_redis_value(replies[3].clone()).unwrap_or_default();
    let mut queue = Queue::default();
    for (i, _) in Priority::ALL.iter().enumerate() {
        let len: u64 = redis::from_redis_value(replies[4 + 2 * i].clone()).unwrap_or(0);
        // XPENDING summary: [count, min id, max id, consumers] (an error when the group is missing).
        let pending = match &replies[5 + 2 * i] {
            Value::Array(a) => a
                .first()
                .and_then(text)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0u64),
            _ => 0,
        };
        queue.undelivered[i] = len.saturating_sub(pending);
        queue.pending += pending;
    }
    queue.delayed = redis::from_redis_value(replies[10].clone()).unwrap_or(0);
    queue.dead = redis::from_redis_value(replies[11].clone()).unwrap_or(0);

    // Second round trip: every worker hash, and how many retries are due.
    let mut p = redis::pipe();
    for (id, _) in &members {
        p.cmd("HMGET").arg(k.worker(id)).arg(
            &[
                "status",
                "running",
                "capacity",
                "started_at",
                "last_heartbeat",
            ][..],
        );
    }
    p.cmd("ZCOUNT").arg(k.delayed()).arg("-inf").arg(now_ms);
    let rows: Vec<Value> = p.query_async(&mut c).await.map_err(|e| fleet.err(e))?;
    queue.due = rows
        .last()
        .and_then(|v| redis::from_redis_value(v.clone()).ok())
        .unwrap_or(0);
    let stale_after = cfg.heartbeat_interval.as_millis() as u64 * 2;
    let ttl = cfg.worker_ttl.as_millis() as u64;
    let mut workers = Vec::with_capacity(members.len());
    for ((id, score), row) in members.iter().zip(rows.iter()) {
        let f: Vec<Option<String>> = redis::from_redis_value(row.clone()).unwrap_or_default();
        let get = |i: usize| f.get(i).cloned().flatten();
        let last = get(4)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(*score as u64);
        let age = now_ms.saturating_sub(last);
        let status = get(0);
        let parsed = (
            get(1).and_then(|v| v.parse().ok()),
            get(2).and_then(|v| v.parse().ok()),
        );
        let readable = status.is_some() && parsed.0.is_some() && parsed.1.is_some();
        let health = if age > ttl {
            Health::Dead
        } else {
            match status.as_deref() {
                Some("healthy") => Health::Healthy,
                Some("degraded") => Health::Degraded,
                Some("draining") | Some("stopped") => Health::Draining,
                Some("unhealthy") => Health::Unhealthy,
                // Unknown status or hash gone before its TTL: not trusted, counted as stale.
                _ => Health::Unhealthy,
            }
        };
        if !readable && health != Health::Dead {
            tracing::warn!(worker = %id, "worker state hash is missing or unreadable; treating the worker as stale");
        }
        workers.push(WorkerView {
            id: id.clone(),
            health,
            running: parsed.0.unwrap_or(0),
            capacity: parsed.1.unwrap_or(0),
            started_at_ms: get(3).and_then(|v| v.parse().ok()).unwrap_or(0),
            last_heartbeat_ms: last,
            age_ms: age,
            stale: health != Health::Dead && (age > stale_after || !readable),
            stopped: status.as_deref() == Some("stopped"),
        });
    }
    let parse_map = |m: HashMap<String, String>| {
        m.into_iter()
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
            .collect()
    };
    Ok(Snapshot {
        now_ms,
        workers,
        warming: parse_map(warming),
        draining: parse_map(draining),
        queue,
    })
}

impl Snapshot {
    /// The policy's inputs. Warming workers whose id already heartbeats are not counted twice.
    pub fn metrics(&self, cfg: &PolicyConfig) -> Metrics {
        let mut m = Metrics {
            backlog: self.queue.backlog(),
            ..Default::default()
        };
        for w in &self.workers {
            if w.stale {
                m.stale = true;
            }
            let active = matches!(
                w.health,
                Health::Healthy | Health::Degraded | Health::Unhealthy
            ) && !self.draining.contains_key(&w.id);
            if active {
                m.active += 1;
                m.running += w.running;
                m.capacity += w.capacity;
                if w.running == 0 && !w.stale {
                    m.idle += 1;
                }
            }
        }
        let beating: std::collections::HashSet<&str> =
            self.workers.iter().map(|w| w.id.as_str()).collect();
        let warming = self
            .warming
            .keys()
            .filter(|id| !beating.contains(id.as_str()))
            .count() as u32;
        m.warming = warming;
        m.capacity += warming * cfg.worker_capacity;
        m
    }
}
