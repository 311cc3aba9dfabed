//! Memory and CPU readings for the heartbeat, cgroup-aware: inside a container the limit is the
//! cgroup's, not the host's.

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// One reading.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    pub used: u64,
    pub limit: u64,
    /// Total CPU use in percent (100 = one core busy... times cores).
    pub cpu: f64,
}

impl Reading {
    /// Fraction of the limit in use.
    pub fn fraction(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            self.used as f64 / self.limit as f64
        }
    }
}

/// Keeps the sysinfo state between readings (CPU use is a difference of two samples).
pub struct Meter {
    sys: Option<System>,
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}

impl Meter {
    pub fn new() -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_memory(MemoryRefreshKind::nothing().with_ram())
                .with_cpu(CpuRefreshKind::nothing().with_usage()),
        )
        .ok();
        Self { sys }
    }

    /// Take a reading now.
    pub fn read(&mut self) -> Reading {
        let Some(sys) = self.sys.as_mut() else {
            return Reading::default();
        };
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        sys.refresh_cpu_usage();
        let cpu = sys.global_cpu_usage() as f64 * sys.cpus().len().max(1) as f64;
        match sys.cgroup_limits() {
            Some(cg) if cg.total_memory > 0 => Reading {
                used: cg.total_memory.saturating_sub(cg.free_memory),
                limit: cg.total_memory,
                cpu,
            },
            _ => Reading {
                used: sys.used_memory(),
                limit: sys.total_memory(),
                cpu,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_something_plausible() {
        let r = Meter::new().read();
        assert!(r.limit > 0);
        assert!(r.used > 0 && r.used <= r.limit, "{r:?}");
        assert!((0.0..=1.0).contains(&r.fraction()));
    }
}
