//! Scheduled renders (`renderfleet schedule add --world W --renderer R --every 1h`). The leader
//! fires due schedules each tick; a schedule never queues a second copy while one of the same
//! (world, renderer) is queued, running or waiting for a retry.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::AsyncCommands;
use renderfleet_shared::job::{validate_job_id, JobSpec, JobState, Priority};
use renderfleet_shared::scripts::scripts;
use renderfleet_shared::{Error, Fleet, Result};
use serde::{Deserialize, Serialize};

/// One scheduled render, stored as JSON in `{ns}:schedules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub world: String,
    pub renderer: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: Priority,
    pub every_ms: u64,
    /// When it fires next (server ms).
    pub next_at_ms: u64,
    /// The job it queued last.
    #[serde(default)]
    pub last_job: Option<String>,
    /// Slots skipped because the previous render was still live.
    #[serde(default)]
    pub skipped: u64,
}

/// What firing did, for the events stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Fired {
    Queued { schedule: String, job: String },
    Skipped { schedule: String, because: String },
}

/// Validate and store a schedule; it fires first at `now + every` unless `now_too`.
pub async fn add(
    fleet: &Fleet,
    spec: &JobSpec,
    name: Option<String>,
    every: Duration,
    now_too: bool,
) -> Result<Schedule> {
    let profiles = fleet.profiles().await?;
    profiles.validate(spec)?;
    if every < Duration::from_secs(1) {
        return Err(Error::InvalidJob("--every must be at least 1s".into()));
    }
    let name = name.unwrap_or_else(|| format!("{}-{}", spec.world, spec.renderer));
    validate_job_id(&name).map_err(|_| {
        Error::InvalidJob(format!(
            "schedule name '{name}' must be 1-128 characters of A-Z a-z 0-9 _ . : -"
        ))
    })?;
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut fleet.conn())
        .await
        .map_err(|e| fleet.err(e))?;
    let now = secs * 1000 + micros / 1000;
    let every_ms = every.as_millis() as u64;
    let s = Schedule {
        name: name.clone(),
        world: spec.world.clone(),
        renderer: spec.renderer.clone(),
        params: spec.params.clone(),
        priority: spec.priority,
        every_ms,
        next_at_ms: if now_too { now } else { now + every_ms },
        last_job: None,
        skipped: 0,
    };
    let json = serde_json::to_string(&s).map_err(|e| Error::Protocol(e.to_string()))?;
    let _: () = fleet
        .conn()
        .hset(fleet.keys().schedules(), &name, json)
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(s)
}

/// Every schedule (unreadable entries are skipped with a warning).
pub async fn list(fleet: &Fleet) -> Result<Vec<Schedule>> {
    let h: HashMap<String, String> = fleet
        .conn()
        .hgetall(fleet.keys().schedules())
        .await
        .map_err(|e| fleet.err(e))?;
    let mut out: Vec<Schedule> = h
        .iter()
        .filter_map(|(name, json)| match serde_json::from_str(json) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(schedule = %name, error = %e, "skipping unreadable schedule");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Remove a schedule; error when there is none of that name.
pub async fn remove(fleet: &Fleet, name: &str) -> Result<()> {
    let n: u64 = fleet
        .conn()
        .hdel(fleet.keys().schedules(), name)
        .await
        .map_err(|e| fleet.err(e))?;
    if n == 0 {
        return Err(Error::Config(format!("no schedule named '{name}'")));
    }
    Ok(())
}

/// Fire every due schedule (leader only: the schedule update is a leader-checked compare-and-set,
/// and the job id is derived from the slot, so a second leader firing the same slot is a no-op).
pub async fn fire_due(fleet: &Fleet, leader: &str, now: u64) -> Result<Vec<Fired>> {
    let h: HashMap<String, String> = fleet
        .conn()
        .hgetall(fleet.keys().schedules())
        .await
        .map_err(|e| fleet.err(e))?;
    let mut out = Vec::new();
    let mut profiles = None;
    for (name, json) in h {
        let Ok(mut s) = serde_json::from_str::<Schedule>(&json) else {
            tracing::warn!(schedule = %name, "skipping unreadable schedule");
            continue;
        };
        if s.next_at_ms > now || s.every_ms == 0 {
            continue;
        }
        let slot = s.next_at_ms;
        // The next slot strictly in the future: missed slots are not caught up on.
        let missed = (now - slot) / s.every_ms;
        s.next_at_ms = slot + (missed + 1) * s.every_ms;
        let live = live_render(fleet, &s).await?;
        let fired = if let Some(because) = live {
            s.skipped += 1;
            Fired::Skipped {
                schedule: name.clone(),
                because,
            }
        } else {
            if profiles.is_none() {
                profiles = Some(fleet.profiles().await?);
            }
            let spec = JobSpec {
                world: s.world.clone(),
                renderer: s.renderer.clone(),
                params: s.params.clone(),
                priority: s.priority,
                id: Some(format!("sched:{name}:{slot}")),
                ..Default::default()
            };
            let profiles = profiles
                .as_ref()
                .ok_or_else(|| Error::Protocol("profiles".into()))?;
            match fleet.submit(&spec, profiles).await {
                Ok(sub) => {
                    s.last_job = Some(sub.id.clone());
                    Fired::Queued {
                        schedule: name.clone(),
                        job: sub.id,
                    }
                }
                Err(e) if !e.is_transient() => {
                    s.skipped += 1;
                    Fired::Skipped {
                        schedule: name.clone(),
                        because: e.to_string(),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let new = serde_json::to_string(&s).map_err(|e| Error::Protocol(e.to_string()))?;
        let r: String = scripts()
            .leader
            .arg(fleet.keys().prefix())
            .arg(leader)
            .arg("schedule")
            .arg(&name)
            .arg(&json)
            .arg(&new)
            .invoke_async(&mut fleet.conn())
            .await
            .map_err(|e| fleet.err(e))?;
        if r == "ok" {
            out.push(fired);
        }
    }
    Ok(out)
}

/// Why a schedule must not queue another copy now, if it must not.
async fn live_render(fleet: &Fleet, s: &Schedule) -> Result<Option<String>> {
    if let Some(id) = &s.last_job {
        if let Some(j) = fleet.job(id).await? {
            if matches!(
                j.state,
                JobState::Queued | JobState::Running | JobState::Failed
            ) {
                return Ok(Some(format!("its last job {id} is still {}", j.state)));
            }
        }
    }
    let holder: Option<String> = fleet
        .conn()
        .get(fleet.keys().lock(&s.world, &s.renderer))
        .await
        .map_err(|e| fleet.err(e))?;
    if let Some(h) = holder {
        if let Some(j) = fleet.job(&h).await? {
            if j.state == JobState::Running {
                return Ok(Some(format!(
                    "job {h} is rendering {} with {}",
                    s.world, s.renderer
                )));
            }
        }
    }
    Ok(None)
}
