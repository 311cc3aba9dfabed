//! The scaling policy: a pure function of (metrics, config, history, now). No I/O here; the
//! coordinator gathers the inputs, calls [`decide`], and acts on the result.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PolicyConfig;

/// What the policy sees of the fleet at one tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Workers with a fresh heartbeat that are not draining.
    pub active: u32,
    /// Workers the backend started that have not sent their first heartbeat yet (warm-up): they
    /// count as capacity, not as idle.
    pub warming: u32,
    /// Active workers running nothing (candidates for scale-in).
    pub idle: u32,
    /// Jobs running on active workers.
    pub running: u32,
    /// Capacity of active workers plus the assumed capacity of warming ones.
    pub capacity: u32,
    /// Jobs waiting for a worker: undelivered stream entries plus due retries.
    pub backlog: u64,
    /// Some heartbeat is older than two intervals, or a worker's record is unreadable:
    /// the picture may be incomplete.
    pub stale: bool,
}

impl Metrics {
    /// Running / capacity (0 when there is no capacity).
    pub fn utilization(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.running as f64 / self.capacity as f64
        }
    }
    /// Workers the fleet has now (active + warming).
    pub fn size(&self) -> u32 {
        self.active + self.warming
    }
}

/// What the policy remembers between ticks (kept in Redis so a new leader inherits it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Last scale-up and scale-down (ms).
    pub last_up_ms: Option<u64>,
    pub last_down_ms: Option<u64>,
    /// Recent raw recommendations: (time ms, desired size).
    pub recommendations: Vec<(u64, u32)>,
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "by")]
pub enum Action {
    Hold,
    ScaleUp(u32),
    ScaleDown(u32),
}

/// The policy's answer, with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    /// Size the fleet should have after the action.
    pub desired: u32,
    /// This tick's raw recommendation, before cooldowns and stabilization.
    pub recommended: u32,
    pub current: u32,
    pub reason: String,
}

fn since(now: u64, t: Option<u64>) -> Option<Duration> {
    t.map(|t| Duration::from_millis(now.saturating_sub(t)))
}

/// The raw recommendation of one tick (no memory): the size the fleet should have now.
pub fn recommend(m: &Metrics, c: &PolicyConfig) -> (u32, String) {
    let size = m.size();
    let util = m.utilization();
    let (raw, why) = if size < c.min_workers {
        (
            c.min_workers,
            format!("{size} workers is below min_workers {}", c.min_workers),
        )
    } else if size > c.max_workers {
        (
            c.max_workers,
            format!("{size} workers is above max_workers {}", c.max_workers),
        )
    } else if size > 0 && util >= c.scale_up_fast_utilization {
        (
            size + 2,
            format!(
                "utilization {:.2} >= scale_up_fast_utilization {}",
                util, c.scale_up_fast_utilization
            ),
        )
    } else if size > 0 && util >= c.scale_up_utilization {
        (
            size + 1,
            format!(
                "utilization {:.2} >= scale_up_utilization {}",
                util, c.scale_up_utilization
            ),
        )
    } else if m.backlog >= c.scale_up_backlog {
        (
            size + 1,
            format!(
                "backlog {} >= scale_up_backlog {}",
                m.backlog, c.scale_up_backlog
            ),
        )
    } else if util <= c.scale_down_utilization && m.backlog == 0 {
        (
            size.saturating_sub(1),
            format!(
                "utilization {:.2} <= scale_down_utilization {} and no backlog",
                util, c.scale_down_utilization
            ),
        )
    } else {
        (
            size,
            format!(
                "utilization {:.2}, backlog {}: within bounds",
                util, m.backlog
            ),
        )
    };
    (raw.clamp(c.min_workers, c.max_workers), why)
}

/// Decide what to do now. Also returns the history to keep (this tick's recommendation added,
/// entries older than the stabilization window dropped, action times updated).
pub fn decide(m: &Metrics, c: &PolicyConfig, h: &History, now: u64) -> (Decision, History) {
    let current = m.size();
    let (recommended, why) = recommend(m, c);
    let window = c.stabilization_window.as_millis() as u64;
    let mut next = h.clone();
    next.recommendations
        .retain(|(t, _)| now.saturating_sub(*t) <= window);
    next.recommendations.push((now, recommended));
    let hold = |reason: String| Decision {
        action: Action::Hold,
        desired: current,
        recommended,
        current,
        reason,
    };

    // Bounds are enforced at once, whatever the cooldowns or the window say (scale-in still
    // drains: a render is never killed).
    if current > c.max_workers {
        next.last_down_ms = Some(now);
        let d = Decision {
            action: Action::ScaleDown(current - c.max_workers),
            desired: c.max_workers,
            recommended,
            current,
            reason: why,
        };
        return (d, next);
    }
    if current < c.min_workers {
        // Reaching the floor does not start the scale-up cooldown: a burst right after start-up
        // must not wait for it.
        let d = Decision {
            action: Action::ScaleUp(c.min_workers - current),
            desired: c.min_workers,
            recommended,
            current,
            reason: why,
        };
        return (d, next);
    }
    if recommended > current {
        if let Some(ago) = since(now, h.last_up_ms).filter(|a| *a < c.scale_up_cooldown) {
            return (
                hold(format!(
                    "{why}; scale-up cooldown ({} of {} left)",
                    human(c.scale_up_cooldown - ago),
                    human(c.scale_up_cooldown)
                )),
                next,
            );
        }
        next.last_up_ms = Some(now);
        let d = Decision {
            action: Action::ScaleUp(recommended - current),
            desired: recommended,
            recommended,
            current,
            reason: why,
        };
        return (d, next);
    }
    // Scale-down acts on the highest recommendation over the stabilization window (HPA-style), so
    // a single quiet tick between spikes cannot shrink the fleet.
    let stabilized = next
        .recommendations
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(recommended)
        .max(c.min_workers);
    if stabilized < current {
        if m.stale {
            return (
                hold(format!(
                    "{why}; heartbeats are stale or missing: never scale down on missing data"
                )),
                next,
            );
        }
        if m.warming > 0 {
            return (
                hold(format!("{why}; {} worker(s) still warming up", m.warming)),
                next,
            );
        }
        if let Some(ago) = since(now, h.last_down_ms).filter(|a| *a < c.scale_down_cooldown) {
            return (
                hold(format!(
                    "{why}; scale-down cooldown ({} of {} left)",
                    human(c.scale_down_cooldown - ago),
                    human(c.scale_down_cooldown)
                )),
                next,
            );
        }
        let by = (current - stabilized).min(m.idle);
        if by == 0 {
            return (hold(format!("{why}; no idle worker to remove")), next);
        }
        next.last_down_ms = Some(now);
        let d = Decision {
            action: Action::ScaleDown(by),
            desired: current - by,
            recommended,
            current,
            reason: format!(
                "{why}; highest recommendation over the {} window is {stabilized}",
                human(c.stabilization_window)
            ),
        };
        return (d, next);
    }
    if recommended < current {
        return (hold(format!("{why}; held by the stabilization window (highest recent recommendation {stabilized})")), next);
    }
    (hold(why), next)
}

fn human(d: Duration) -> String {
    renderfleet_shared::time::human(Duration::from_secs(d.as_secs().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;
    const M: u64 = 60 * S;

    fn cfg() -> PolicyConfig {
        PolicyConfig::default()
    }

    fn m(active: u32, running: u32, backlog: u64) -> Metrics {
        let capacity = active * 2;
        Metrics {
            active,
            warming: 0,
            idle: active.saturating_sub(running.div_ceil(2)),
            running,
            capacity,
            backlog,
            stale: false,
        }
    }

    #[test]
    fn defaults_match_the_original_design() {
        let c = cfg();
        assert_eq!((c.min_workers, c.max_workers), (1, 10));
        assert_eq!(
            (
                c.scale_up_utilization,
                c.scale_up_backlog,
                c.scale_up_fast_utilization,
                c.scale_down_utilization
            ),
            (0.8, 5, 0.9, 0.3)
        );
        assert_eq!(c.scale_up_cooldown, Duration::from_secs(300));
        assert_eq!(c.scale_down_cooldown, Duration::from_secs(600));
        assert_eq!(c.stabilization_window, Duration::from_secs(300));
    }

    #[test]
    fn table() {
        let now = 100 * M;
        // (name, metrics, history, expected action)
        let old = History {
            last_up_ms: Some(now - 60 * M),
            last_down_ms: Some(now - 60 * M),
            recommendations: vec![],
        };
        let cases: Vec<(&str, Metrics, History, Action)> = vec![
            (
                "empty fleet grows to min",
                m(0, 0, 0),
                History::default(),
                Action::ScaleUp(1),
            ),
            (
                "above max shrinks to max",
                m(12, 0, 0),
                old.clone(),
                Action::ScaleDown(2),
            ),
            (
                "utilization 0.8 adds one",
                m(5, 8, 0),
                old.clone(),
                Action::ScaleUp(1),
            ),
            (
                "utilization 0.9 adds two",
                m(5, 9, 0),
                old.clone(),
                Action::ScaleUp(2),
            ),
            (
                "backlog 5 adds one",
                m(2, 2, 5),
                old.clone(),
                Action::ScaleUp(1),
            ),
            ("backlog 4 holds", m(2, 2, 4), old.clone(), Action::Hold),
            (
                "up is capped by max",
                m(10, 20, 50),
                old.clone(),
                Action::Hold,
            ),
            (
                "fast up capped by max",
                m(9, 18, 0),
                old.clone(),
                Action::ScaleUp(1),
            ),
            (
                "idle shrinks by one",
                m(4, 0, 0),
                old.clone(),
                Action::ScaleDown(1),
            ),
            (
                "idle never below min",
                m(1, 0, 0),
                old.clone(),
                Action::Hold,
            ),
            (
                "low util but backlog holds",
                m(4, 1, 1),
                old.clone(),
                Action::Hold,
            ),
            (
                "up cooldown",
                m(5, 9, 0),
                History {
                    last_up_ms: Some(now - 4 * M),
                    ..old.clone()
                },
                Action::Hold,
            ),
            (
                "down cooldown",
                m(4, 0, 0),
                History {
                    last_down_ms: Some(now - 9 * M),
                    ..old.clone()
                },
                Action::Hold,
            ),
            (
                "down cooldown does not block up",
                m(4, 8, 0),
                History {
                    last_down_ms: Some(now - M),
                    ..old.clone()
                },
                Action::ScaleUp(2),
            ),
            (
                "stabilization: a recent higher recommendation holds the size",
                m(4, 0, 0),
                History {
                    recommendations: vec![(now - 2 * M, 5)],
                    ..old.clone()
                },
                Action::Hold,
            ),
            (
                "stabilization: old recommendations are forgotten",
                m(4, 0, 0),
                History {
                    recommendations: vec![(now - 6 * M, 5)],
                    ..old.clone()
                },
                Action::ScaleDown(1),
            ),
            (
                "stale data never scales down",
                Metrics {
                    stale: true,
                    ..m(4, 0, 0)
                },
                old.clone(),
                Action::Hold,
            ),
            (
                "stale data may still scale up",
                Metrics {
                    stale: true,
                    ..m(2, 4, 9)
                },
                old.clone(),
                Action::ScaleUp(2),
            ),
            (
                "warming workers count as capacity",
                Metrics {
                    active: 2,
                    warming: 2,
                    idle: 0,
                    running: 4,
                    capacity: 8,
                    backlog: 0,
                    stale: false,
                },
                old.clone(),
                Action::Hold,
            ),
            (
                "warming workers block scale-down",
                Metrics {
                    active: 3,
                    warming: 1,
                    idle: 3,
                    running: 0,
                    capacity: 8,
                    backlog: 0,
                    stale: false,
                },
                old.clone(),
                Action::Hold,
            ),
            (
                "only idle workers are removed",
                Metrics {
                    active: 6,
                    warming: 0,
                    idle: 1,
                    running: 3,
                    capacity: 12,
                    backlog: 0,
                    stale: false,
                },
                History {
                    recommendations: vec![],
                    ..old.clone()
                },
                Action::ScaleDown(1),
            ),
            (
                "no idle worker: hold",
                Metrics {
                    active: 6,
                    warming: 0,
                    idle: 0,
                    running: 3,
                    capacity: 12,
                    backlog: 0,
                    stale: false,
                },
                old.clone(),
                Action::Hold,
            ),
        ];
        for (name, metrics, history, want) in cases {
            let (d, _) = decide(&metrics, &cfg(), &history, now);
            assert_eq!(d.action, want, "{name}: {}", d.reason);
            assert!(!d.reason.is_empty());
        }
    }

    #[test]
    fn flapping_input_does_not_oscillate() {
        // Spikes and quiet ticks alternate every 2s for 20 minutes.
        let c = PolicyConfig {
            scale_up_cooldown: Duration::from_secs(60),
            ..cfg()
        };
        let mut h = History::default();
        let mut size = 3u32;
        let mut ups = 0;
        let mut downs = 0;
        let mut now = 10 * M;
        for i in 0..600 {
            let metrics = if i % 2 == 0 {
                m(size, size * 2, 10)
            } else {
                m(size, 0, 0)
            };
            let (d, next) = decide(&metrics, &c, &h, now);
            h = next;
            match d.action {
                Action::ScaleUp(n) => {
                    size += n;
                    ups += 1;
                }
                Action::ScaleDown(n) => {
                    size -= n;
                    downs += 1;
                }
                Action::Hold => {}
            }
            assert!(size <= c.max_workers && size >= c.min_workers);
            now += 2 * S;
        }
        assert_eq!(
            downs, 0,
            "a quiet tick every other tick must not shrink the fleet"
        );
        assert!(ups <= 21, "scale-ups are limited by the cooldown: {ups}");
        assert_eq!(size, c.max_workers);
    }

    #[test]
    fn quiet_after_burst_shrinks_one_step_per_cooldown_to_min() {
        let c = PolicyConfig {
            scale_down_cooldown: Duration::from_secs(60),
            stabilization_window: Duration::from_secs(120),
            ..cfg()
        };
        let mut h = History::default();
        let mut size = 6u32;
        let mut now = 0;
        let mut downs = Vec::new();
        for _ in 0..600 {
            let (d, next) = decide(&m(size, 0, 0), &c, &h, now);
            h = next;
            if let Action::ScaleDown(n) = d.action {
                size -= n;
                downs.push(now);
            }
            now += 2 * S;
        }
        assert_eq!(size, 1);
        assert_eq!(downs.len(), 5);
        assert!(downs.windows(2).all(|w| w[1] - w[0] >= 60 * S));
    }

    #[test]
    fn history_is_bounded_by_the_window() {
        let c = cfg();
        let mut h = History::default();
        for i in 0..1000u64 {
            h = decide(&m(3, 3, 0), &c, &h, i * 2 * S).1;
        }
        assert!(
            h.recommendations.len() <= 151,
            "{}",
            h.recommendations.len()
        );
    }
}
