//! [`Fleet`]: the typed client of one fleet's keys. Every read and every state transition the
//! agent, the coordinator and the CLI perform goes through here; transitions are Lua scripts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, ErrorKind, RedisError};
use serde::Deserialize;

use crate::cli::redis_addr;
use crate::error::{Error, Result};
use crate::job::{
    JobRecord, JobSpec, JobState, Priority, DEFAULT_BACKOFF, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETENTION,
};
use crate::keys::{Keys, GROUP, HEARTBEAT_STREAM_LEN};
use crate::renderer::{Profile, Profiles};
use crate::scripts::scripts;
use crate::worker::{Heartbeat, WorkerInfo};

/// The shared connection, counting round trips (a pipeline or a script call is one).
#[derive(Clone)]
pub struct Conn {
    inner: ConnectionManager,
    trips: Arc<AtomicU64>,
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.inner.req_packed_command(cmd)
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.inner.req_packed_commands(pipeline, offset, count)
    }
    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Connected client of one fleet (namespace) on one Redis.
#[derive(Clone)]
pub struct Fleet {
    conn: Conn,
    client: Client,
    keys: Keys,
    addr: String,
}

/// A job an agent now runs: the delivery and its fencing token.
#[derive(Clone, Debug, Deserialize)]
pub struct Claim {
    pub id: String,
    /// Fencing token of this delivery.
    pub attempt: u32,
    pub world: String,
    pub renderer: String,
    /// The job's params as JSON text (validated again by the agent).
    pub params: String,
    #[serde(default)]
    pub timeout_ms: String,
    pub priority: String,
    pub created_at: u64,
    pub started_at: u64,
    /// `finalize` for a sharded render's final step, else empty.
    #[serde(default)]
    pub stage: String,
    /// For a shard: its parent job.
    #[serde(default)]
    pub parent: String,
    /// For a sharded render's final step: the attempt that planned it.
    #[serde(default)]
    pub run: u32,
    #[serde(default)]
    pub shard: String,
}

/// An attempt found running on this worker from an earlier life of the agent.
#[derive(Clone, Debug, Deserialize)]
pub struct Orphan {
    pub id: String,
    pub attempt: u32,
    pub pid: String,
    pub pstart: String,
    pub host: String,
}

/// How an attempt ended, as the agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Retry with backoff while attempts remain, then dead.
    Failed,
    /// Not runnable at all (unknown renderer, bad params, world escapes): dead at once.
    Fatal,
    /// Given back unfinished (drain); queued again without charging an attempt.
    Handback,
    /// The worker lost the attempt (crash, restart): queued again at once, attempt charged.
    Lost,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Fatal => "fatal",
            Outcome::Handback => "handback",
            Outcome::Lost => "lost",
        }
    }
}

/// What `finish` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Recorded; the job's state is now this.
    Recorded(String),
    /// The attempt is stale (fencing): nothing was changed. Holds the job's current state.
    Stale(String),
}

/// Result of a submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    /// False when the id already named a job (idempotent submit).
    pub created: bool,
    pub state: String,
}

/// Result of a cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// Done: the job will not run.
    Cancelled,
    /// The job was running; its agent stops the renderer and confirms.
    Stopping,
}

fn map_err(addr: &str, e: RedisError) -> Error {
    let auth = e.kind() == ErrorKind::AuthenticationFailed
        || matches!(
            e.code(),
            Some("NOAUTH") | Some("WRONGPASS") | Some("NOPERM")
        );
    if auth {
        let detail = e
            .detail()
            .map(str::to_owned)
            .unwrap_or_else(|| e.to_string());
        return Error::RedisAuth {
            addr: addr.to_owned(),
            detail,
        };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        return Error::RedisUnreachable {
            addr: addr.to_owned(),
            detail: e.to_string(),
        };
    }
    Error::Redis(e)
}

fn json<T: for<'de> Deserialize<'de>>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

impl Fleet {
    /// Connect to the fleet `ns` at `url`, failing with a one-line error when Redis is unreachable or
    /// refuses the credentials. The connection reconnects by itself afterwards.
    pub async fn connect(url: &str, ns: &str) -> Result<Self> {
        let keys = Keys::new(ns)?;
        let addr = redis_addr(url);
        if url.starts_with("rediss://") {
            // rediss:// uses rustls with the ring provider; trusted roots come from the system
            // (or SSL_CERT_FILE / SSL_CERT_DIR). Installing twice is harmless. The ring provider
            // lacks post-quantum key exchange (hence the deprecation); aws-lc-rs would need cmake.
            #[allow(deprecated)]
            let provider = rustls::crypto::ring::default_provider();
            let _ = provider.install_default();
        }
        let client = Client::open(url).map_err(|e| Error::Config(format!("Redis URL: {e}")))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = ConnectionManager::new_with_config(client.clone(), cfg)
            .await
            .map_err(|e| map_err(&addr, e))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(&addr, e))?;
        let conn = Conn {
            inner: conn,
            trips: Arc::new(AtomicU64::new(0)),
        };
        Ok(Self {
            conn,
            client,
            keys,
            addr,
        })
    }

    /// The fleet's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// host:port of the Redis server, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A clone of the shared (multiplexed, reconnecting) connection.
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Round trips made through [`Fleet::conn`] (by this client and its clones) so far.
    pub fn round_trips(&self) -> u64 {
        self.conn.trips.load(Ordering::Relaxed)
    }

    /// A separate connection for blocking reads, whose replies may take `block` to arrive.
    pub async fn blocking_connection(&self, block: Duration) -> Result<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(block + Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| self.err(e))
    }

    /// Map a Redis error to a one-line [`Error`].
    pub fn err(&self, e: RedisError) -> Error {
        map_err(&self.addr, e)
    }

    /// Create the consumer group on every job stream (idempotent).
    pub async fn ensure_groups(&self) -> Result<()> {
        let mut c = self.conn();
        for p in Priority::ALL {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys.stream(p))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Publish an agent's renderer profiles so that submitters can validate against them.
    pub async fn publish_profiles(&self, profiles: &Profiles) -> Result<()> {
        let pairs: Vec<(String, String)> = profiles
            .iter()
            .map(|p| (p.name.clone(), p.to_json()))
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let mut c = self.conn();
        let _: () = c
            .hset_multiple(self.keys.renderers(), &pairs)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The built-in profiles plus every profile an agent of this fleet published.
    /// A malformed published profile is skipped with a warning.
    pub async fn profiles(&self) -> Result<Profiles> {
        let mut c = self.conn();
        let published: HashMap<String, String> = c
            .hgetall(self.keys.renderers())
            .await
            .map_err(|e| self.err(e))?;
        let mut all = Profiles::builtin();
        for (name, json) in published {
            match Profile::from_json(&name, &json) {
                Ok(p) => all.insert(p),
                Err(e) => {
                    tracing::warn!(renderer = %name, error = %e, "skipping malformed published profile")
                }
            }
        }
        Ok(all)
    }

    /// Validate `spec` against `profiles` and queue it. With `spec.id` set, a second submit of the
    /// same id returns the existing job instead of creating one. Nothing is written on error.
    pub async fn submit(&self, spec: &JobSpec, profiles: &Profiles) -> Result<Submitted> {
        profiles.validate(spec)?;
        let profile = profiles.get(&spec.renderer)?;
        let id = spec
            .id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        let params =
            serde_json::to_string(&spec.params).map_err(|e| Error::InvalidJob(e.to_string()))?;
        let timeout = spec.timeout.unwrap_or(profile.timeout);
        let fields: Vec<String> = vec![
            "world".into(),
            spec.world.clone(),
            "renderer".into(),
            spec.renderer.clone(),
            "params".into(),
            params,
            "priority".into(),
            spec.priority.as_str().into(),
            "timeout_ms".into(),
            timeout.as_millis().to_string(),
            "max_attempts".into(),
            spec.max_attempts
                .unwrap_or(DEFAULT_MAX_ATTEMPTS)
                .to_string(),
            "backoff_ms".into(),
            spec.backoff
                .unwrap_or(DEFAULT_BACKOFF)
                .as_millis()
                .to_string(),
            "retention_ms".into(),
            spec.retention
                .unwrap_or(DEFAULT_RETENTION)
                .as_millis()
                .to_string(),
        ];
        let (created, state): (i64, String) = scripts()
            .submit
            .arg(self.keys.prefix())
            .arg(&id)
            .arg(spec.priority.as_str())
            .arg(fields)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(Submitted {
            id,
            created: created == 1,
            state,
        })
    }

    /// One job's record, or `None`.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let mut c = self.conn();
        let h: HashMap<String, String> = c
            .hgetall(self.keys.job(id))
            .await
            .map_err(|e| self.err(e))?;
        JobRecord::from_hash(id, &h)
    }

    /// One job's record with the tail of its renderer output.
    pub async fn job_with_log(&self, id: &str) -> Result<Option<JobRecord>> {
        let mut c = self.conn();
        let (h, log): (HashMap<String, String>, Vec<String>) = redis::pipe()
            .hgetall(self.keys.job(id))
            .lrange(self.keys.job_log(id), 0, -1)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(JobRecord::from_hash(id, &h)?.map(|mut j| {
            j.log = log;
            j
        }))
    }

    /// The newest `limit` jobs (optionally only those in `state`), newest first. Records that
    /// expired or cannot be parsed are skipped.
    pub async fn jobs(&self, state: Option<JobState>, limit: usize) -> Result<Vec<JobRecord>> {
        let mut c = self.conn();
        let mut out = Vec::new();
        let page = 500isize;
        let mut start = 0isize;
        loop {
            let ids: Vec<String> = c
                .zrevrange(self.keys.jobs(), start, start + page - 1)
                .await
                .map_err(|e| self.err(e))?;
            if ids.is_empty() {
                return Ok(out);
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(self.keys.job(id));
            }
            let hashes: Vec<HashMap<String, String>> =
                pipe.query_async(&mut c).await.map_err(|e| self.err(e))?;
            for (id, h) in ids.iter().zip(hashes) {
                match JobRecord::from_hash(id, &h) {
                    Ok(Some(j)) if state.is_none_or(|s| s == j.state) => {
                        out.push(j);
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "skipping unreadable job record")
                    }
                }
            }
            start += page;
        }
    }

    /// Cancel a job (queued, waiting for a retry, or running).
    pub async fn cancel(&self, id: &str) -> Result<Cancelled> {
        let r: String = scripts()
            .cancel
            .arg(self.keys.prefix())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        match r.as_str() {
            "cancelled" => Ok(Cancelled::Cancelled),
            "cancelling" => Ok(Cancelled::Stopping),
            "missing" => Err(Error::NoSuchJob(id.to_owned())),
            other => Err(Error::WrongState {
                id: id.to_owned(),
                state: other.trim_start_matches("final:").to_owned(),
                what: "only queued, failed or running jobs can be cancelled",
            }),
        }
    }

    /// Requeue a dead, cancelled or retry-waiting job now, with a fresh attempt budget.
    pub async fn retry(&self, id: &str) -> Result<()> {
        let r: String = scripts()
            .retry
            .arg(self.keys.prefix())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        match r.as_str() {
            "queued" => Ok(()),
            "missing" => Err(Error::NoSuchJob(id.to_owned())),
            other => Err(Error::WrongState {
                id: id.to_owned(),
                state: other.trim_start_matches("invalid:").to_owned(),
                what: "only dead, cancelled or failed jobs (and shards of a render still waiting for its shards) can be retried",
            }),
        }
    }

    /// Workers with a live heartbeat, sorted by id. Garbage in a worker hash is skipped with a warning.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut c = self.conn();
        let ids: Vec<String> = c
            .zrange(self.keys.workers(), 0, -1)
            .await
            .map_err(|e| self.err(e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.worker(id))
                .hgetall(self.keys.worker_stats(id));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut c).await.map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for (id, pair) in ids.iter().zip(hashes.chunks(2)) {
            if pair[0].is_empty() {
                continue;
            }
            match WorkerInfo::from_hashes(id, &pair[0], &pair[1]) {
                Some(w) => out.push(w),
                None => tracing::warn!(worker = %id, "skipping unreadable worker record"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One worker, if it has a live heartbeat.
    pub async fn worker(&self, id: &str) -> Result<Option<WorkerInfo>> {
        let mut c = self.conn();
        let (h, s): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(self.keys.worker(id))
            .hgetall(self.keys.worker_stats(id))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        if h.is_empty() {
            return Ok(None);
        }
        WorkerInfo::from_hashes(id, &h, &s)
            .map(Some)
            .ok_or_else(|| Error::Protocol(format!("worker '{id}' has an unreadable state hash")))
    }

    /// A worker's counters (jobs taken, outcomes, peak concurrency), even after its heartbeat expired.
    pub async fn worker_stats(&self, id: &str) -> Result<HashMap<String, u64>> {
        let mut c = self.conn();
        let s: HashMap<String, String> = c
            .hgetall(self.keys.worker_stats(id))
            .await
            .map_err(|e| self.err(e))?;
        Ok(s.into_iter()
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
            .collect())
    }

    // ----- agent side -----

    /// Promote due retries, then claim up to `free` runnable jobs for `worker`, high priority first.
    /// Returns the claims and when the next retry is due (server ms), if any is waiting.
    pub async fn claim(&self, worker: &str, free: usize) -> Result<(Vec<Claim>, Option<u64>)> {
        let r: Vec<String> = scripts()
            .claim
            .arg(self.keys.prefix())
            .arg(worker)
            .arg(free)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        let next = r
            .first()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as u64);
        let claims = r
            .iter()
            .skip(1)
            .map(|s| json("claim", s))
            .collect::<Result<Vec<Claim>>>()?;
        Ok((claims, next))
    }

    /// Block up to `block` on `conn` for new entries of any job stream delivered to `worker`, and
    /// start them. Entries left undelivered stay in the stream.
    pub async fn read_blocking(
        &self,
        conn: &mut MultiplexedConnection,
        worker: &str,
        free: usize,
        block: Duration,
    ) -> Result<Vec<Claim>> {
        let streams: Vec<String> = Priority::ALL.iter().map(|p| self.keys.stream(*p)).collect();
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(worker)
            .arg("COUNT")
            .arg(free)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&streams)
            .arg(&[">", ">", ">"][..])
            .query_async(conn)
            .await
            .map_err(|e| self.err(e))?;
        let entries = parse_xread(&reply, &streams);
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().start.prepare_invoke();
        inv.arg(self.keys.prefix()).arg(worker);
        for (prio, eid, job) in &entries {
            inv.arg(prio.as_str())
                .arg(eid)
                .arg(job.as_deref().unwrap_or(""));
        }
        let r: Vec<String> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        r.iter().map(|s| json("claim", s)).collect()
    }

    /// Fenced update of a running attempt: whitelisted fields (`progress`, `phase`, `pid`, `pstart`,
    /// `host`) and output lines. Returns the job's state; anything but `running` means the attempt
    /// has been superseded, cancelled or finished and its renderer must stop.
    pub async fn update(
        &self,
        id: &str,
        attempt: u32,
        worker: &str,
        fields: &[(&str, String)],
        lines: &[String],
    ) -> Result<String> {
        let mut inv = scripts().progress.prepare_invoke();
        inv.arg(self.keys.prefix())
            .arg(id)
            .arg(attempt)
            .arg(worker)
            .arg(fields.len());
        for (k, v) in fields {
            inv.arg(*k).arg(v);
        }
        for l in lines {
            inv.arg(l);
        }
        inv.invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    /// Record how attempt `attempt` of job `id` ended. Stale attempts are rejected (fencing).
    pub async fn finish(
        &self,
        id: &str,
        attempt: u32,
        worker: &str,
        outcome: Outcome,
        exit_code: Option<i32>,
        error: &str,
    ) -> Result<Finished> {
        let r: String = scripts()
            .finish
            .arg(self.keys.prefix())
            .arg(id)
            .arg(attempt)
            .arg(worker)
            .arg(outcome.as_str())
            .arg(exit_code.map(|c| c.to_string()).unwrap_or_default())
            .arg(error)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(match r.strip_prefix("stale:") {
            Some(state) => Finished::Stale(state.to_owned()),
            None if r == "missing" => Finished::Stale(r),
            None => Finished::Recorded(r),
        })
    }

    /// Turn running attempt `attempt` of sharded render `id` into shard jobs (suffix, params JSON)
    /// queued through the same streams; the parent waits in state `sharded` (see `fanout.lua`).
    /// Returns the number of shards, or `Finished::Stale` when the attempt is no longer current.
    pub async fn fanout(
        &self,
        id: &str,
        attempt: u32,
        worker: &str,
        shards: &[(String, String)],
    ) -> Result<std::result::Result<u64, Finished>> {
        let mut inv = scripts().fanout.prepare_invoke();
        inv.arg(self.keys.prefix()).arg(id).arg(attempt).arg(worker);
        for (suffix, params) in shards {
            inv.arg(suffix).arg(params);
        }
        let r: redis::Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        match r {
            redis::Value::Int(n) => Ok(Ok(n.max(0) as u64)),
            other => {
                let text: String = redis::from_redis_value(other)
                    .map_err(|e| Error::Protocol(format!("fanout reply: {e}")))?;
                Ok(Err(Finished::Stale(
                    text.strip_prefix("stale:").unwrap_or(&text).to_owned(),
                )))
            }
        }
    }

    /// Ids of a sharded render's shard jobs (its current run).
    pub async fn shards(&self, id: &str) -> Result<Vec<String>> {
        let mut c = self.conn();
        c.lrange(format!("{}:children", self.keys.job(id)), 0, -1)
            .await
            .map_err(|e| self.err(e))
    }

    /// Entries delivered to `worker` and not yet acknowledged, on every job stream.
    pub async fn pending_entries(&self, worker: &str) -> Result<Vec<(Priority, String)>> {
        let mut c = self.conn();
        let mut out = Vec::new();
        for p in Priority::ALL {
            loop {
                let start = out
                    .last()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, id): &(Priority, String)| format!("({id}"));
                let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(self.keys.stream(p))
                    .arg(GROUP)
                    .arg(start.as_deref().unwrap_or("-"))
                    .arg("+")
                    .arg(500)
                    .arg(worker)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.err(e))?;
                let n = rows.len();
                out.extend(rows.into_iter().map(|(id, ..)| (p, id)));
                if n < 500 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Settle `entries` pending for `worker`: requeue never-started ones, drop stale ones, and return
    /// the attempts that were running (the caller stops leftovers, then finishes them as lost).
    pub async fn settle(
        &self,
        worker: &str,
        entries: &[(Priority, String)],
    ) -> Result<Vec<Orphan>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().settle.prepare_invoke();
        inv.arg(self.keys.prefix()).arg(worker);
        for (p, id) in entries {
            inv.arg(p.as_str()).arg(id);
        }
        let r: Vec<String> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        r.iter().map(|s| json("settle", s)).collect()
    }

    /// Write a heartbeat; the worker hash lives for `ttl`. Returns the server time it was stamped
    /// with and the coordinator's drain request for this worker, if any.
    pub async fn heartbeat(&self, hb: &Heartbeat, ttl: Duration) -> Result<(u64, Option<String>)> {
        let mut inv = scripts().heartbeat.prepare_invoke();
        inv.arg(self.keys.prefix())
            .arg(&hb.worker)
            .arg(ttl.as_millis() as u64)
            .arg(HEARTBEAT_STREAM_LEN)
            .arg(hb.max_running);
        for (k, v) in hb.fields() {
            inv.arg(k).arg(v);
        }
        let (now, drain): (u64, String) = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok((now, Some(drain).filter(|d| !d.is_empty())))
    }

    /// Queue failed jobs whose retry is due (agents do this too when they pull).
    pub async fn promote_due(&self) -> Result<()> {
        self.claim("", 0).await.map(|_| ())
    }

    /// Hand back everything dead worker `worker` held: attempts it was running are recorded as lost
    /// (charged; requeued at once, or dead when out of attempts; fenced by attempt number),
    /// entries it received but never started are queued again, and the worker is dropped from
    /// the consumer group and the worker index. Returns (job id, resulting state) per attempt.
    pub async fn reclaim_worker(&self, worker: &str) -> Result<Vec<(String, String)>> {
        let entries = self.pending_entries(worker).await?;
        let orphans = self.settle(worker, &entries).await?;
        let mut out = Vec::new();
        for o in orphans {
            let why = format!(
                "worker {worker} stopped heartbeating; attempt {} handed back",
                o.attempt
            );
            let r = self
                .finish(&o.id, o.attempt, worker, Outcome::Lost, None, &why)
                .await?;
            out.push((
                o.id,
                match r {
                    Finished::Recorded(s) => s,
                    Finished::Stale(s) => format!("stale:{s}"),
                },
            ));
        }
        let mut c = self.conn();
        let mut p = redis::pipe();
        for pr in Priority::ALL {
            p.cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(self.keys.stream(pr))
                .arg(GROUP)
                .arg(worker)
                .ignore();
        }
        p.zrem(self.keys.workers(), worker).ignore();
        p.del(self.keys.drain(worker)).ignore();
        let _: () = p.query_async(&mut c).await.map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Remove a worker from the index (clean exit); its state hash keeps `stopped` until its TTL.
    pub async fn forget_worker(&self, id: &str) -> Result<()> {
        let mut c = self.conn();
        let _: () = c
            .zrem(self.keys.workers(), id)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Flatten an XREADGROUP reply into (priority, entry id, job id) triples.
fn parse_xread(v: &redis::Value, streams: &[String]) -> Vec<(Priority, String, Option<String>)> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    let per_stream: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some((&kv[0], &kv[1])),
                _ => None,
            })
            .collect(),
        Value::Map(kv) => kv.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    for (name, entries) in per_stream {
        let Some(name) = text(name) else { continue };
        let Some(pi) = streams.iter().position(|s| *s == name) else {
            continue;
        };
        let prio = Priority::ALL[pi];
        let Value::Array(entries) = entries else {
            continue;
        };
        for e in entries {
            let Value::Array(parts) = e else { continue };
            let Some(eid) = parts.first().and_then(text) else {
                continue;
            };
            let job = match parts.get(1) {
                Some(Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some("job"))
                    .and_then(|kv| text(&kv[1])),
                _ => None,
            };
            out.push((prio, eid, job));
        }
    }
    out
}
