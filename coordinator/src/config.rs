//! Policy configuration, stored in Redis (`{ns}:config`) and changed at runtime with
//! `renderfleet config set key=value ...`. Every key is validated; garbage written by hand into the
//! hash is logged and the default used for that key.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::AsyncCommands;
use renderfleet_shared::{Error, Fleet, Result};
use serde::Serialize;

/// The scaling policy's settings. Defaults are the original design's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyConfig {
    pub min_workers: u32,
    pub max_workers: u32,
    pub scale_up_utilization: f64,
    pub scale_up_backlog: u64,
    pub scale_up_fast_utilization: f64,
    pub scale_down_utilization: f64,
    #[serde(serialize_with = "ser_dur")]
    pub scale_up_cooldown: Duration,
    #[serde(serialize_with = "ser_dur")]
    pub scale_down_cooldown: Duration,
    #[serde(serialize_with = "ser_dur")]
    pub stabilization_window: Duration,
    /// A worker whose last heartbeat is older than this is dead; its jobs are handed back.
    #[serde(serialize_with = "ser_dur")]
    pub worker_ttl: Duration,
    /// Agents' heartbeat interval; a heartbeat older than two intervals makes the data stale.
    #[serde(serialize_with = "ser_dur")]
    pub heartbeat_interval: Duration,
    /// Time a worker asked to drain gets before it is removed (if it runs nothing by then).
    #[serde(serialize_with = "ser_dur")]
    pub drain_timeout: Duration,
    /// Capacity assumed for a worker that is still warming up.
    pub worker_capacity: u32,
}

fn ser_dur<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&renderfleet_shared::time::human(*d))
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            min_workers: 1,
            max_workers: 10,
            scale_up_utilization: 0.8,
            scale_up_backlog: 5,
            scale_up_fast_utilization: 0.9,
            scale_down_utilization: 0.3,
            scale_up_cooldown: Duration::from_secs(300),
            scale_down_cooldown: Duration::from_secs(600),
            stabilization_window: Duration::from_secs(300),
            worker_ttl: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
            worker_capacity: 2,
        }
    }
}

/// Every key `config set` accepts, with its help.
pub const KEYS: [(&str, &str); 13] = [
    ("min_workers", "integer 0-1000"),
    ("max_workers", "integer 1-1000, >= min_workers"),
    ("scale_up_utilization", "fraction in (0, 1]"),
    ("scale_up_backlog", "integer >= 1"),
    (
        "scale_up_fast_utilization",
        "fraction in (0, 1], >= scale_up_utilization",
    ),
    (
        "scale_down_utilization",
        "fraction in [0, 1), < scale_up_utilization",
    ),
    ("scale_up_cooldown", "duration <= 24h"),
    ("scale_down_cooldown", "duration <= 24h"),
    ("stabilization_window", "duration <= 24h"),
    ("worker_ttl", "duration 100ms-10m, > heartbeat_interval"),
    ("heartbeat_interval", "duration 50ms-1m"),
    ("drain_timeout", "duration <= 24h"),
    ("worker_capacity", "integer 1-256"),
];

fn bad(key: &str, value: &str, want: &str) -> Error {
    Error::Config(format!("{key}={value}: expected {want}"))
}

fn int<T: std::str::FromStr + PartialOrd>(
    key: &str,
    v: &str,
    lo: T,
    hi: T,
    want: &str,
) -> Result<T> {
    v.parse::<T>()
        .ok()
        .filter(|n| *n >= lo && *n <= hi)
        .ok_or_else(|| bad(key, v, want))
}

fn frac(key: &str, v: &str, lo_open: bool, hi_open: bool, want: &str) -> Result<f64> {
    let f: f64 = v.parse().map_err(|_| bad(key, v, want))?;
    let ok = f.is_finite()
        && (if lo_open { f > 0.0 } else { f >= 0.0 })
        && (if hi_open { f < 1.0 } else { f <= 1.0 });
    ok.then_some(f).ok_or_else(|| bad(key, v, want))
}

fn dur(key: &str, v: &str, lo: Duration, hi: Duration, want: &str) -> Result<Duration> {
    humantime::parse_duration(v)
        .ok()
        .filter(|d| *d >= lo && *d <= hi)
        .ok_or_else(|| bad(key, v, want))
}

impl PolicyConfig {
    /// Set one key (without cross-key checks; see [`PolicyConfig::validate`]).
    pub fn set(&mut self, key: &str, v: &str) -> Result<()> {
        let want = KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, w)| *w)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown key '{key}' (known: {})",
                    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ))
            })?;
        let day = Duration::from_secs(24 * 3600);
        match key {
            "min_workers" => self.min_workers = int(key, v, 0, 1000, want)?,
            "max_workers" => self.max_workers = int(key, v, 1, 1000, want)?,
            "scale_up_utilization" => self.scale_up_utilization = frac(key, v, true, false, want)?,
            "scale_up_backlog" => self.scale_up_backlog = int(key, v, 1, u64::MAX, want)?,
            "scale_up_fast_utilization" => {
                self.scale_up_fast_utilization = frac(key, v, true, false, want)?
            }
            "scale_down_utilization" => {
                self.scale_down_utilization = frac(key, v, false, true, want)?
            }
            "scale_up_cooldown" => self.scale_up_cooldown = dur(key, v, Duration::ZERO, day, want)?,
            "scale_down_cooldown" => {
                self.scale_down_cooldown = dur(key, v, Duration::ZERO, day, want)?
            }
            "stabilization_window" => {
                self.stabilization_window = dur(key, v, Duration::ZERO, day, want)?
            }
            "worker_ttl" => {
                self.worker_ttl = dur(
                    key,
                    v,
                    Duration::from_millis(100),
                    Duration::from_secs(600),
                    want,
                )?
            }
            "heartbeat_interval" => {
                self.heartbeat_interval = dur(
                    key,
                    v,
                    Duration::from_millis(50),
                    Duration::from_secs(60),
                    want,
                )?
            }
            "drain_timeout" => self.drain_timeout = dur(key, v, Duration::ZERO, day, want)?,
            "worker_capacity" => self.worker_capacity = int(key, v, 1, 256, want)?,
            _ => return Err(Error::Config(format!("unknown key '{key}'"))),
        }
        Ok(())
    }

    /// Cross-key rules.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.min_workers > self.max_workers {
            return fail(format!(
                "min_workers {} is above max_workers {}",
                self.min_workers, self.max_workers
            ));
        }
        if self.scale_up_fast_utilization < self.scale_up_utilization {
            return fail(format!(
                "scale_up_fast_utilization {} is below scale_up_utilization {}",
                self.scale_up_fast_utilization, self.scale_up_utilization
            ));
        }
        if self.scale_down_utilization >= self.scale_up_utilization {
            return fail(format!(
                "scale_down_utilization {} must be below scale_up_utilization {}",
                self.scale_down_utilization, self.scale_up_utilization
            ));
        }
        if self.worker_ttl <= self.heartbeat_interval {
            return fail("worker_ttl must be longer than heartbeat_interval".into());
        }
        Ok(())
    }

    /// The settings as stored (`key -> value` strings).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let v = serde_json::to_value(self).unwrap_or_default();
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Build from the stored hash: unknown keys and bad values are logged and skipped; if the
    /// result breaks a cross-key rule the defaults are used (and logged).
    pub fn from_hash(h: &HashMap<String, String>) -> (Self, Vec<String>) {
        let mut c = Self::default();
        let mut problems = Vec::new();
        let mut keys: Vec<_> = h.iter().collect();
        keys.sort();
        for (k, v) in keys {
            if let Err(e) = c.set(k, v) {
                problems.push(e.to_string());
            }
        }
        if let Err(e) = c.validate() {
            problems.push(format!("{e}; using the defaults"));
            c = Self::default();
        }
        (c, problems)
    }
}

fn key(fleet: &Fleet) -> String {
    fleet.keys().config()
}

/// Read the config; problems in the stored hash are logged, never fatal.
pub async fn load(fleet: &Fleet) -> Result<PolicyConfig> {
    let h: HashMap<String, String> = fleet
        .conn()
        .hgetall(key(fleet))
        .await
        .map_err(|e| fleet.err(e))?;
    let (c, problems) = PolicyConfig::from_hash(&h);
    for p in problems {
        tracing::warn!(problem = %p, "ignoring bad policy config in Redis");
    }
    Ok(c)
}

/// Validate `pairs` on top of the current config and store them. Nothing is written on error.
pub async fn set(fleet: &Fleet, pairs: &[(String, String)]) -> Result<PolicyConfig> {
    let mut c = load(fleet).await?;
    for (k, v) in pairs {
        c.set(k, v)?;
    }
    c.validate()?;
    let _: () = fleet
        .conn()
        .hset_multiple(key(fleet), pairs)
        .await
        .map_err(|e| fleet.err(e))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_validates_each_key() {
        let mut c = PolicyConfig::default();
        for (k, v, needle) in [
            ("min_workers", "-1", "integer 0-1000"),
            ("max_workers", "0", "integer 1-1000"),
            ("scale_up_utilization", "1.5", "fraction"),
            ("scale_up_utilization", "NaN", "fraction"),
            ("scale_down_utilization", "1", "fraction in [0, 1)"),
            ("scale_up_cooldown", "forever", "duration"),
            ("scale_up_cooldown", "2days", "duration <= 24h"),
            ("bogus", "1", "unknown key 'bogus'"),
        ] {
            let e = c.set(k, v).expect_err(k).to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
        c.set("scale_up_cooldown", "90s").expect("valid");
        assert_eq!(c.scale_up_cooldown, Duration::from_secs(90));
    }

    #[test]
    fn cross_key_rules() {
        let mut c = PolicyConfig::default();
        c.set("min_workers", "5").expect("in range");
        c.set("max_workers", "3").expect("in range");
        assert!(c
            .validate()
            .expect_err("min > max")
            .to_string()
            .contains("above max_workers"));
        let mut c = PolicyConfig::default();
        c.set("scale_down_utilization", "0.85").expect("in range");
        assert!(c.validate().is_err());
    }

    #[test]
    fn garbage_in_the_hash_is_skipped() {
        let h: HashMap<String, String> = [
            ("min_workers".into(), "2".into()),
            ("max_workers".into(), "lots".into()),
            ("color".into(), "blue".into()),
        ]
        .into();
        let (c, problems) = PolicyConfig::from_hash(&h);
        assert_eq!(c.min_workers, 2);
        assert_eq!(c.max_workers, 10);
        assert_eq!(problems.len(), 2);
        let bad_combo: HashMap<String, String> = [("min_workers".into(), "20".into())].into();
        let (c, problems) = PolicyConfig::from_hash(&bad_combo);
        assert_eq!(c, PolicyConfig::default());
        assert!(problems[0].contains("using the defaults"));
    }

    #[test]
    fn map_round_trip() {
        let c = PolicyConfig {
            scale_up_cooldown: Duration::from_secs(90),
            min_workers: 3,
            ..Default::default()
        };
        let h: HashMap<String, String> = c.to_map().into_iter().collect();
        assert_eq!(PolicyConfig::from_hash(&h), (c, vec![]));
    }
}
