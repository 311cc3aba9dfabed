//! The operation layer the CLI (and the HTTP API) share: everything here reads or writes Redis.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use renderfleet_shared::scripts::scripts;
use renderfleet_shared::time::rfc3339;
use renderfleet_shared::{Error, Fleet, Result};
use serde::{Deserialize, Serialize};

use crate::config::{self, PolicyConfig};
use crate::policy::{self, Decision, History, Metrics};
use crate::view::{self, Health, Queue};

/// A manual action for the leader, queued in `{ns}:commands`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ManualCommand {
    ScaleUp { by: u32 },
    ScaleDown { by: u32 },
    Remove { worker: String },
}

/// Queue a manual command for the leader. It is applied at the leader's next tick, within bounds.
pub async fn push_command(fleet: &Fleet, cmd: &ManualCommand) -> Result<()> {
    let json = serde_json::to_string(cmd).map_err(|e| Error::Protocol(e.to_string()))?;
    let _: () = fleet
        .conn()
        .lpush(fleet.keys().commands(), json)
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(())
}

/// One entry of the events stream.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub id: String,
    pub time: String,
    pub fields: BTreeMap<String, String>,
}

fn event_time(id: &str) -> String {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .map(rfc3339)
        .unwrap_or_default()
}

/// The last `count` events, oldest first.
pub async fn events(fleet: &Fleet, count: usize) -> Result<Vec<Event>> {
    let rows: Vec<StreamRow> = redis::cmd("XREVRANGE")
        .arg(fleet.keys().events())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut fleet.conn())
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|(id, kv)| Event {
            time: event_time(&id),
            id,
            fields: kv.into_iter().collect(),
        })
        .collect())
}

/// One stream entry: id and field/value pairs.
type StreamRow = (String, Vec<(String, String)>);

/// Events after `after` (blocking up to `block_ms`), for `events --follow`.
pub async fn events_after(
    fleet: &Fleet,
    conn: &mut redis::aio::MultiplexedConnection,
    after: &str,
    block_ms: u64,
) -> Result<Vec<Event>> {
    let reply: Option<Vec<(String, Vec<StreamRow>)>> = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(fleet.keys().events())
        .arg(after)
        .query_async(conn)
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(reply
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .map(|(id, kv)| Event {
            time: event_time(&id),
            id,
            fields: kv.into_iter().collect(),
        })
        .collect())
}

/// Who leads, if anyone.
#[derive(Clone, Debug, Serialize)]
pub struct Leader {
    pub id: String,
    pub epoch: u64,
    pub lease_ms_left: i64,
}

pub async fn leader(fleet: &Fleet) -> Result<Option<Leader>> {
    let k = fleet.keys();
    let (id, epoch, ttl): (Option<String>, Option<u64>, i64) = redis::pipe()
        .get(k.leader())
        .get(k.leader_epoch())
        .pttl(k.leader())
        .query_async(&mut fleet.conn())
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(id.map(|id| Leader {
        id,
        epoch: epoch.unwrap_or(0),
        lease_ms_left: ttl,
    }))
}

/// The policy's memory, as stored by the leader (empty when missing or unreadable).
pub async fn history(fleet: &Fleet) -> Result<History> {
    let json: Option<String> = fleet
        .conn()
        .hget(fleet.keys().scaling(), "history")
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(json
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default())
}

/// Append an event (leader only; returns false when `me` is not the leader).
pub async fn append_event(fleet: &Fleet, me: &str, fields: &[(&str, String)]) -> Result<bool> {
    let mut inv = scripts().leader.prepare_invoke();
    inv.arg(fleet.keys().prefix()).arg(me).arg("event");
    for (k, v) in fields {
        inv.arg(*k).arg(v);
    }
    let r: String = inv
        .invoke_async(&mut fleet.conn())
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(r == "ok")
}

/// Run a leader-checked write (`leader.lua` op). Returns false when `me` is not the leader.
pub async fn leader_op(fleet: &Fleet, me: &str, op: &str, args: &[String]) -> Result<bool> {
    let mut inv = scripts().leader.prepare_invoke();
    inv.arg(fleet.keys().prefix()).arg(me).arg(op);
    for a in args {
        inv.arg(a);
    }
    let r: String = inv
        .invoke_async(&mut fleet.conn())
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(r == "ok")
}

/// Fleet summary for `renderfleet status`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub workers: BTreeMap<String, u32>,
    pub warming: u32,
    pub running: u32,
    pub capacity: u32,
    pub utilization: f64,
    pub backlog: u64,
    pub queue: Queue,
    pub leader: Option<Leader>,
    pub policy: PolicyConfig,
    pub last_decision: Option<Event>,
}

pub async fn status(fleet: &Fleet) -> Result<Status> {
    let cfg = config::load(fleet).await?;
    let snap = view::snapshot(fleet, &cfg).await?;
    let m = snap.metrics(&cfg);
    let mut workers = BTreeMap::new();
    for w in &snap.workers {
        let name = match w.health {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
            Health::Draining => "draining",
            Health::Dead => "dead",
        };
        *workers.entry(name.to_owned()).or_insert(0) += 1;
    }
    let last_decision = events(fleet, 200)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.fields.get("type").map(String::as_str) == Some("decision"));
    Ok(Status {
        workers,
        warming: m.warming,
        running: m.running,
        capacity: m.capacity,
        utilization: m.utilization(),
        backlog: m.backlog,
        queue: snap.queue,
        leader: leader(fleet).await?,
        policy: cfg,
        last_decision,
    })
}

/// What the policy would do now, and why (nothing is changed).
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub decision: Decision,
    pub metrics: Metrics,
    pub utilization: f64,
}

pub async fn evaluate(fleet: &Fleet) -> Result<Evaluation> {
    let cfg = config::load(fleet).await?;
    let snap = view::snapshot(fleet, &cfg).await?;
    let m = snap.metrics(&cfg);
    let h = history(fleet).await?;
    let (decision, _) = policy::decide(&m, &cfg, &h, snap.now_ms);
    Ok(Evaluation {
        utilization: m.utilization(),
        decision,
        metrics: m,
    })
}

/// Add `n` to a fleet-wide counter (`{ns}:stats`), for metrics. Failures are logged, not fatal.
pub async fn count(fleet: &Fleet, field: &str, n: i64) {
    let r: redis::RedisResult<i64> = fleet.conn().hincr(fleet.keys().stats(), field, n).await;
    if let Err(e) = r {
        tracing::debug!(field, error = %e, "could not count");
    }
}

/// Per-worker share of the work, for `GET /api/scaling/load-balancer/stats`.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerLoad {
    pub id: String,
    pub status: String,
    pub jobs_taken: u64,
    pub running: u32,
    pub capacity: u32,
    pub utilization: f64,
    /// This worker's share of all jobs taken by live workers (0-1).
    pub share: f64,
}

pub async fn load_balancer_stats(fleet: &Fleet) -> Result<Vec<WorkerLoad>> {
    let ws = fleet.workers().await?;
    let total: u64 = ws.iter().map(|w| w.jobs_taken).sum();
    Ok(ws
        .into_iter()
        .map(|w| WorkerLoad {
            share: if total == 0 {
                0.0
            } else {
                w.jobs_taken as f64 / total as f64
            },
            id: w.id,
            status: w.status.as_str().to_owned(),
            jobs_taken: w.jobs_taken,
            running: w.running,
            capacity: w.capacity,
            utilization: w.utilization,
        })
        .collect())
}
