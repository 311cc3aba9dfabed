//! Human-readable renderings of jobs and workers (the `--json` forms are the records themselves).

use std::fmt::Write as _;

use renderfleet_shared::job::JobRecord;

use crate::ops::{Evaluation, Event, Status};
use crate::schedule::Schedule;
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
    if let Some(sh) = &j.shards {
        let tail = if sh.finalizing && !j.state.is_final() {
            "; final step"
        } else {
            ""
        };
        row(
            "shards",
            &format!(
                "{} done, {} failed of {}{tail} (renderfleet jobs --shards-of {})",
                sh.done, sh.failed, sh.total, j.id
            ),
        );
    }
    if let (Some(p), Some(sh)) = (&j.parent, &j.shard) {
        row("shard", &format!("{sh} of {p}"));
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

/// `renderfleet status`.
pub fn status(st: &Status) -> String {
    let mut s = String::new();
    let workers: Vec<String> = st.workers.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(
        s,
        "{:<14}{}{}",
        "workers",
        if workers.is_empty() {
            "none".to_owned()
        } else {
            workers.join(", ")
        },
        if st.warming > 0 {
            format!(", {} warming up", st.warming)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "{:<14}{}/{} slots ({:.0}%)",
        "utilization",
        st.running,
        st.capacity,
        st.utilization * 100.0
    );
    let q = &st.queue;
    let _ = writeln!(
        s,
        "{:<14}{} (high {}, normal {}, low {}, due retries {}); {} running, {} waiting for a retry, {} dead",
        "backlog", st.backlog, q.undelivered[0], q.undelivered[1], q.undelivered[2], q.due, q.pending, q.delayed, q.dead
    );
    let p = &st.policy;
    let _ = writeln!(
        s,
        "{:<14}{}..{} workers; up at {:.0}% or backlog {} (+2 at {:.0}%), down at {:.0}%; cooldowns up {} / down {}; window {}",
        "policy",
        p.min_workers,
        p.max_workers,
        p.scale_up_utilization * 100.0,
        p.scale_up_backlog,
        p.scale_up_fast_utilization * 100.0,
        p.scale_down_utilization * 100.0,
        renderfleet_shared::time::human(p.scale_up_cooldown),
        renderfleet_shared::time::human(p.scale_down_cooldown),
        renderfleet_shared::time::human(p.stabilization_window)
    );
    match &st.leader {
        Some(l) => {
            let _ = writeln!(
                s,
                "{:<14}{} (epoch {}, lease {}ms left)",
                "leader", l.id, l.epoch, l.lease_ms_left
            );
        }
        None => {
            let _ = writeln!(s, "{:<14}none: no coordinator is running", "leader");
        }
    }
    if let Some(e) = &st.last_decision {
        let f = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<14}{} {} (current {}, desired {}): {}",
            "last decision",
            e.time,
            f("action"),
            f("current"),
            f("desired"),
            f("reason")
        );
    }
    s
}

/// `renderfleet evaluate`.
pub fn evaluation(ev: &Evaluation) -> String {
    let m = &ev.metrics;
    let d = &ev.decision;
    format!(
        "action        {:?}\ncurrent       {} workers ({} active, {} warming, {} idle)\ndesired       {}\nrecommended   {}\nutilization   {}/{} ({:.0}%)\nbacklog       {}\nstale data    {}\nreason        {}\n",
        d.action, d.current, m.active, m.warming, m.idle, d.desired, d.recommended, m.running, m.capacity, ev.utilization * 100.0, m.backlog, m.stale, d.reason
    )
}

/// One event line (or JSON object).
pub fn event(e: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
        return Ok(());
    }
    let kind = e.fields.get("type").cloned().unwrap_or_default();
    let rest: Vec<String> = e
        .fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "type" | "reason" | "inputs"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let reason = e.fields.get("reason").cloned().unwrap_or_default();
    println!("{} {:<16} {}  {}", e.time, kind, rest.join(" "), reason);
    Ok(())
}

/// `renderfleet schedule list`.
pub fn schedules(all: &[Schedule]) -> String {
    let mut s = format!(
        "{:<24} {:<16} {:<12} {:>10} {:<26} {:>7} {}\n",
        "NAME", "WORLD", "RENDERER", "EVERY", "NEXT", "SKIPPED", "LAST JOB"
    );
    for x in all {
        let _ = writeln!(
            s,
            "{:<24} {:<16} {:<12} {:>10} {:<26} {:>7} {}",
            x.name,
            x.world,
            x.renderer,
            renderfleet_shared::time::human(std::time::Duration::from_millis(x.every_ms)),
            renderfleet_shared::time::rfc3339(x.next_at_ms),
            x.skipped,
            x.last_job.as_deref().unwrap_or("-")
        );
    }
    s
}
