//! Renderer processes: each runs in its own process group so that a stop reaches the renderer and
//! everything it started. Stop = SIGTERM to the group, then SIGKILL after a grace period.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

/// Send `sig` to process group `pgid`. A group that is already gone is not an error.
pub fn signal_group(pgid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid, signal = ?sig, error = %e, "could not signal renderer process group")
        }
    }
}

/// True while any process of group `pgid` exists.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    raw > 1 && killpg(Pid::from_raw(raw), None).is_ok()
}

/// SIGTERM the child's group, SIGKILL it after `grace`, and reap the child.
pub async fn stop(
    child: &mut Child,
    pgid: u32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            // The leader exited; take down anything it left in its group.
            signal_group(pgid, Signal::SIGKILL);
            status.ok()
        }
        Err(_) => {
            tracing::warn!(pgid, "renderer ignored SIGTERM; sending SIGKILL");
            signal_group(pgid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), used to
/// tell a leftover renderer from an unrelated process that reused its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kill a renderer left behind by an earlier life of this agent, if it is still the same process.
/// Returns true when something was killed.
pub async fn kill_leftover(pid: u32, pstart: u64) -> bool {
    if pid <= 1 || start_time(pid) != Some(pstart) {
        return false;
    }
    signal_group(pid, Signal::SIGKILL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while group_alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id();
        let a = start_time(me).expect("own /proc entry");
        assert_eq!(start_time(me), Some(a));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group() {
        let mut cmd = tokio::process::Command::new("sh");
        // The shell starts a grandchild that ignores nothing; both must be gone after stop().
        cmd.args(["-c", "sleep 30 & sleep 30; wait"])
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn sh");
        let pgid = child.id().expect("pid");
        assert!(group_alive(pgid));
        stop(&mut child, pgid, Duration::from_secs(2)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!group_alive(pgid), "process group {pgid} survived");
    }
}
