//! Jobs: the spec a submitter writes, its validation, and the record kept in Redis.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::{human, rfc3339};

/// Largest accepted job spec, serialized as JSON.
pub const MAX_JOB_BYTES: usize = 16 * 1024;
/// Longest accepted parameter value.
pub const MAX_PARAM_LEN: usize = 1024;
/// Most parameters a job may set.
pub const MAX_PARAMS: usize = 32;
/// Default attempts before a job is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default base of the exponential retry backoff (doubles each attempt, capped at 1h).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// Default time a finished job's record stays inspectable.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Queue priority; `high` is always drained first, FIFO within a priority.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// All priorities, in the order agents drain them.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];
    /// Name used in keys and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl FromStr for Priority {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(Error::InvalidJob(format!(
                "priority '{s}' is not one of high, normal, low"
            ))),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting in a stream (or for its world's lock).
    Queued,
    /// An attempt is running on a worker.
    Running,
    /// The last attempt failed; a retry is scheduled (`next_attempt_at`).
    Failed,
    /// Finished successfully.
    Succeeded,
    /// Out of attempts (or not runnable at all); kept for inspection and `retry`.
    Dead,
    /// Cancelled by an operator.
    Cancelled,
    /// A sharded render whose shards are rendering; its final step is queued when the last ends.
    Sharded,
}

impl JobState {
    /// All states, for `jobs --state` help.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Sharded,
        JobState::Failed,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];
    /// Name used in records and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Failed => "failed",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Sharded => "sharded",
        }
    }
    /// True for states a job never leaves on its own.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidJob(format!(
                    "state '{s}' is not one of queued, running, sharded, failed, succeeded, dead, cancelled"
                ))
            })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a submitter asks for. Also the JSON accepted by `renderfleet submit --spec FILE`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// World directory name under the agents' `--worlds-dir`.
    pub world: String,
    /// Renderer profile name.
    pub renderer: String,
    /// Values for the profile's declared params.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: Priority,
    /// Per-attempt timeout; the profile's when absent.
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Base of the exponential retry backoff.
    #[serde(default, with = "opt_duration")]
    pub backoff: Option<Duration>,
    /// How long the record stays after the job finished.
    #[serde(default, with = "opt_duration")]
    pub retention: Option<Duration>,
    /// Idempotency key: the job id to use. A second submit with a live id returns that job.
    #[serde(default)]
    pub id: Option<String>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::time::human(*d)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Check a world name: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`, never `.` or `..`.
pub fn validate_world(world: &str) -> Result<()> {
    let bytes = world.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && world != "."
        && world != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidJob(format!(
            "world '{}' must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit (no '/' or '..')",
            world.escape_debug()
        )))
    }
}

/// Check a job id / idempotency key: `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`.
pub fn validate_job_id(id: &str) -> Result<()> {
    let bytes = id.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidJob(format!(
            "job id '{}' must be 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit",
            id.escape_debug()
        )))
    }
}

/// Check a renderer or param name: `^[a-z][a-z0-9_-]{0,31}$`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidJob(format!(
            "{kind} '{}' must be 1-32 characters of a-z 0-9 _ - starting with a letter",
            name.escape_debug()
        )))
    }
}

impl JobSpec {
    /// Parse a spec from JSON text, refusing oversized or malformed input.
    pub fn from_json(text: &str) -> Result<Self> {
        if text.len() > MAX_JOB_BYTES {
            return Err(Error::InvalidJob(format!(
                "job spec is {} bytes; the limit is {MAX_JOB_BYTES}",
                text.len()
            )));
        }
        serde_json::from_str(text)
            .map_err(|e| Error::InvalidJob(format!("malformed job JSON: {e}")))
    }

    /// Checks that need no renderer profile: names, sizes, numbers.
    pub fn validate_shape(&self) -> Result<()> {
        validate_world(&self.world)?;
        validate_name("renderer", &self.renderer)?;
        if let Some(id) = &self.id {
            validate_job_id(id)?;
        }
        if self.params.len() > MAX_PARAMS {
            return Err(Error::InvalidJob(format!(
                "{} params; at most {MAX_PARAMS}",
                self.params.len()
            )));
        }
        for (k, v) in &self.params {
            validate_name("param", k)?;
            if v.len() > MAX_PARAM_LEN {
                return Err(Error::InvalidJob(format!(
                    "param '{k}' is {} bytes; at most {MAX_PARAM_LEN}",
                    v.len()
                )));
            }
        }
        if let Some(n) = self.max_attempts {
            if !(1..=100).contains(&n) {
                return Err(Error::InvalidJob(format!(
                    "max_attempts {n} is outside 1..=100"
                )));
            }
        }
        if let Some(t) = self.timeout {
            if t < Duration::from_secs(1) || t > Duration::from_secs(30 * 24 * 3600) {
                return Err(Error::InvalidJob(format!(
                    "timeout {} is outside 1s..=30days",
                    human(t)
                )));
            }
        }
        if let Some(b) = self.backoff {
            if b > Duration::from_secs(3600) {
                return Err(Error::InvalidJob(format!(
                    "backoff {} is over 1h",
                    human(b)
                )));
            }
        }
        if let Some(r) = self.retention {
            if r < Duration::from_secs(1) || r > Duration::from_secs(365 * 24 * 3600) {
                return Err(Error::InvalidJob(format!(
                    "retention {} is outside 1s..=365days",
                    human(r)
                )));
            }
        }
        let size = serde_json::to_vec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_JOB_BYTES {
            return Err(Error::InvalidJob(format!(
                "job spec is {size} bytes; the limit is {MAX_JOB_BYTES}"
            )));
        }
        Ok(())
    }
}

/// A job as stored in Redis (`{ns}:job:<id>`), in the shape `job --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub world: String,
    pub renderer: String,
    pub params: BTreeMap<String, String>,
    pub priority: Priority,
    pub state: JobState,
    /// Number of the current (or last) attempt; the fencing token of a delivery.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Worker running (or that last ran) the job.
    pub worker: Option<String>,
    /// Percent, 0-100, never going backwards within an attempt.
    pub progress: f64,
    /// Renderer phase, when the progress parser knows it (e.g. "2: 300/4096").
    pub phase: Option<String>,
    pub timeout: Option<String>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    /// Set while the job waits for another job of the same (world, renderer).
    pub waiting_on: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Sharded renders: the parent's shard counts (shards are jobs of their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardCounts>,
    /// A shard: its parent job and its part (e.g. `r.-1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Last lines of the renderer's output (only filled by `job ID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}

/// A sharded render's progress over its shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardCounts {
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    /// Set once the shards are all in and the final step (zoom pyramid, index) is queued or running.
    pub finalizing: bool,
}

fn nonempty(h: &HashMap<String, String>, k: &str) -> Option<String> {
    h.get(k).filter(|v| !v.is_empty()).cloned()
}

fn num<T: FromStr>(h: &HashMap<String, String>, k: &str) -> Option<T> {
    h.get(k).and_then(|v| v.parse().ok())
}

impl JobRecord {
    /// Build from the fields of a job hash. `None` when the hash is empty (no such job).
    pub fn from_hash(id: &str, h: &HashMap<String, String>) -> Result<Option<Self>> {
        if h.is_empty() {
            return Ok(None);
        }
        let bad = |what: &str| Error::Protocol(format!("job '{id}': {what}"));
        let state: JobState = h
            .get("state")
            .ok_or_else(|| bad("no state"))?
            .parse()
            .map_err(|_| bad("unknown state"))?;
        // Params that are not a JSON object (written by hand) do not hide the rest of the record;
        // the agent dead-letters such a job with an error saying why.
        let params = h
            .get("params")
            .filter(|p| !p.is_empty())
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        let ms = |k: &str| num::<u64>(h, k);
        Ok(Some(JobRecord {
            id: id.to_owned(),
            world: h.get("world").cloned().ok_or_else(|| bad("no world"))?,
            renderer: h
                .get("renderer")
                .cloned()
                .ok_or_else(|| bad("no renderer"))?,
            params,
            priority: h
                .get("priority")
                .and_then(|p| p.parse().ok())
                .unwrap_or_default(),
            state,
            attempt: num(h, "attempt").unwrap_or(0),
            max_attempts: num(h, "max_attempts").unwrap_or(DEFAULT_MAX_ATTEMPTS),
            worker: nonempty(h, "worker"),
            progress: num(h, "progress").unwrap_or(0.0),
            phase: nonempty(h, "phase"),
            timeout: ms("timeout_ms").map(|t| human(Duration::from_millis(t))),
            error: nonempty(h, "error"),
            exit_code: num(h, "exit_code"),
            waiting_on: nonempty(h, "waiting_on"),
            created_at: ms("created_at").map(rfc3339),
            started_at: ms("started_at").map(rfc3339),
            finished_at: ms("finished_at").map(rfc3339),
            next_attempt_at: ms("next_attempt_at").map(rfc3339),
            created_at_ms: ms("created_at").unwrap_or(0),
            started_at_ms: ms("started_at"),
            finished_at_ms: ms("finished_at"),
            shards: num::<u64>(h, "children_total").map(|total| ShardCounts {
                total,
                done: num(h, "children_done").unwrap_or(0),
                failed: num(h, "children_failed").unwrap_or(0),
                finalizing: h.get("stage").is_some_and(|s| s == "finalize"),
            }),
            parent: nonempty(h, "parent"),
            shard: nonempty(h, "shard"),
            log: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_names() {
        for good in ["world", "My_World-2.0", "a", &"w".repeat(64)] {
            assert!(validate_world(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "/abs",
            ".hidden",
            "-x",
            "a b",
            "wörld",
            "a\0b",
            &"w".repeat(65),
        ] {
            assert!(validate_world(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_ids() {
        assert!(validate_job_id("nightly:world:2026-12-04").is_ok());
        for bad in ["", ":x", "a b", "a/b", &"i".repeat(129)] {
            assert!(validate_job_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_json_malformed_and_oversized() {
        assert!(
            matches!(JobSpec::from_json("{\"world\":"), Err(Error::InvalidJob(m)) if m.contains("malformed"))
        );
        assert!(JobSpec::from_json(r#"{"world":"w","renderer":"r","bogus":1}"#).is_err());
        let big = format!(
            r#"{{"world":"w","renderer":"r","params":{{"a":"{}"}}}}"#,
            "x".repeat(MAX_JOB_BYTES)
        );
        assert!(
            matches!(JobSpec::from_json(&big), Err(Error::InvalidJob(m)) if m.contains("limit"))
        );
        let spec = JobSpec::from_json(
            r#"{"world":"w","renderer":"noop","timeout":"5m","priority":"high"}"#,
        )
        .expect("valid");
        assert_eq!(spec.timeout, Some(Duration::from_secs(300)));
        assert_eq!(spec.priority, Priority::High);
    }

    #[test]
    fn shape_checks() {
        let ok = JobSpec {
            world: "w".into(),
            renderer: "overviewer".into(),
            ..Default::default()
        };
        assert!(ok.validate_shape().is_ok());
        let cases: Vec<(JobSpec, &str)> = vec![
            (
                JobSpec {
                    world: "../etc".into(),
                    ..ok.clone()
                },
                "world",
            ),
            (
                JobSpec {
                    renderer: "Bad Name".into(),
                    ..ok.clone()
                },
                "renderer",
            ),
            (
                JobSpec {
                    max_attempts: Some(0),
                    ..ok.clone()
                },
                "max_attempts",
            ),
            (
                JobSpec {
                    timeout: Some(Duration::from_millis(10)),
                    ..ok.clone()
                },
                "timeout",
            ),
            (
                JobSpec {
                    id: Some("a/b".into()),
                    ..ok.clone()
                },
                "job id",
            ),
            (
                JobSpec {
                    params: [("x".to_string(), "y".repeat(MAX_PARAM_LEN + 1))].into(),
                    ..ok.clone()
                },
                "param",
            ),
        ];
        for (spec, needle) in cases {
            let err = spec.validate_shape().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
