//! Human-readable renderings of jobs and workers (the `--json` forms are the records themselves).

use std::fmt::Write as _;

use renderfleet_shared::job::JobRecord;
use renderfleet_shared::worker::WorkerInfo;

fn mib(bytes: u64) -> String {
    format!("{:.0}MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A table of jobs, newest first.
pub fn jobs_table(jobs: &[JobRecord]) -> String {
    let mut s = format!(
        "{:<28} {:<10} {:<6} {:>7} {:<16} {:<12} {:<10} {}\n",
        "ID", "STATE", "PRIO", "ATTEMPT", "WORLD", "RENDERER", "PROGRESS", "WORKER"
    );
    for j in jobs {
        let _ = writeln!(
            s,
            "{:<28} {:<10} {:<6} {:>7} {:<16} {:<12} {:<10} {}",
            j.id,
            j.state.as_str(),
            j.priority.as_str(),
            format!("{}/{}", j.attempt, j.max_attempts),
            j.world,
            j.renderer,
            format!("{:.1}%", j.progress),
            j.worker.as_deref().unwrap_or("-")
        );
    }
    s
}

/// One job in detail, with its log tail.
pub fn job_detail(j: &JobRecord) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: &str| {
        let _ = writeln!(s, "{k:<16}{v}");
    };
    row("id", &j.id);
    row("state", j.state.as_str());
    row("world", &j.world);
    row("renderer", &j.renderer);
    if !j.params.is_empty() {
        let p: Vec<String> = j.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        row("params", &p.join(" "));
    }
    row("priority", j.priority.as_str());
    row("attempt", &format!("{} of {}", j.attempt, j.max_attempts));
    row("worker", j.worker.as_deref().unwrap_or("-"));
    row("progress", &format!("{:.1}%", j.progress));
    let opt = [
        ("phase", &j.phase),
        ("timeout", &j.timeout),
        ("waiting on", &j.waiting_on),
        ("created", &j.created_at),
        ("started", &j.started_at),
        ("finished", &j.finished_at),
        ("next attempt", &j.next_attempt_at),
        ("error", &j.error),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            row(k, v);
        }
    }
    if let Some(c) = j.exit_code {
        row("exit code", &c.to_string());
    }
    if !j.log.is_empty() {
        s.push_str("log:\n");
        for l in &j.log {
            let _ = writeln!(s, "  {l}");
        }
    }
    s
}

/// A table of workers.
pub fn workers_table(ws: &[WorkerInfo]) -> String {
    let mut s = format!(
        "{:<20} {:<10} {:>7} {:>6} {:>15} {:>6} {:<24} {}\n",
        "ID", "STATUS", "RUNNING", "UTIL", "MEMORY", "CPU", "LAST HEARTBEAT", "JOBS"
    );
    for w in ws {
        let _ = writeln!(
            s,
            "{:<20} {:<10} {:>7} {:>5.0}% {:>15} {:>5.0}% {:<24} {}",
            w.id,
            w.status.as_str(),
            format!("{}/{}", w.running, w.capacity),
            w.utilization * 100.0,
            format!("{}/{}", mib(w.memory_used), mib(w.memory_limit)),
            w.cpu,
            w.last_heartbeat,
            if w.jobs.is_empty() {
                "-".to_owned()
            } else {
                w.jobs.join(",")
            }
        );
    }
    s
}

/// One worker in detail.
pub fn worker_detail(w: &WorkerInfo) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<16}{v}");
    };
    row("id", w.id.clone());
    row("status", w.status.as_str().to_owned());
    if let Some(r) = &w.reason {
        row("reason", r.clone());
    }
    row("running", format!("{} of {}", w.running, w.capacity));
    row("utilization", format!("{:.0}%", w.utilization * 100.0));
    row(
        "memory",
        format!("{} of {}", mib(w.memory_used), mib(w.memory_limit)),
    );
    row("cpu", format!("{:.0}%", w.cpu));
    row("host", format!("{} (pid {})", w.host, w.pid));
    row("version", w.version.clone());
    row("last heartbeat", w.last_heartbeat.clone());
    if let Some(t) = &w.started_at {
        row("started", t.clone());
    }
    row(
        "jobs",
        if w.jobs.is_empty() {
            "-".to_owned()
        } else {
            w.jobs.join(", ")
        },
    );
    row("jobs taken", w.jobs_taken.to_string());
    row("succeeded", w.jobs_succeeded.to_string());
    row("failed", w.jobs_failed.to_string());
    row("peak running", w.max_running.to_string());
    s
}
