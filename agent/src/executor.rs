//! Running one attempt: resolve the world, expand the profile's argv (no shell), spawn the renderer
//! in its own process group, stream its output into a log file and the job's bounded log tail,
//! parse progress, enforce the timeout, obey stop requests, and record the outcome (fenced).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use renderfleet_map::output::{self, plan_path};
use renderfleet_map::Action;
use renderfleet_shared::fleet::{Claim, Finished, Outcome};
use renderfleet_shared::job::validate_world;
use renderfleet_shared::keys::LOG_LINES;
use renderfleet_shared::progress::ProgressParser;
use renderfleet_shared::renderer::{Expansion, Profile, Runner};
use renderfleet_shared::time::human;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tracing::{info, info_span, warn, Instrument};

use crate::agent::{Agent, StopReason};
use crate::process;

/// Longest line kept in Redis; the log file keeps the whole line.
const MAX_LINE: usize = 2048;
/// How often progress and output are written to the job.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

struct Ending {
    outcome: Outcome,
    exit_code: Option<i32>,
    error: String,
}

impl Ending {
    fn new(outcome: Outcome, exit_code: Option<i32>, error: impl Into<String>) -> Self {
        Self {
            outcome,
            exit_code,
            error: error.into(),
        }
    }
}

/// Run one claimed attempt to its end and record the outcome.
pub async fn execute(agent: &Agent, claim: Claim, stop: watch::Receiver<Option<StopReason>>) {
    let span = info_span!("job", id = %claim.id, world = %claim.world, renderer = %claim.renderer, attempt = claim.attempt);
    async {
        info!("job started");
        let ending = match plan(agent, &claim) {
            Err(e) => e,
            Ok(Prepared::Done) => Ending::new(Outcome::Succeeded, Some(0), ""),
            Ok(Prepared::Run(plan)) => run_command(agent, &claim, plan, stop).await,
            Ok(Prepared::Shard(s)) => match shard(agent, &claim, s).await {
                // The parent now waits for its shards; nothing to record.
                Ok(()) => return,
                Err(e) => e,
            },
        };
        let done = claim.stage == "finalize" && ending.outcome == Outcome::Succeeded;
        record(agent, &claim, ending).await;
        if done {
            // The render has ended: its plan is no longer needed (a retry plans afresh).
            let plan = plan_path(&output_dir(agent, &claim), &claim.id, claim.run);
            let _ = tokio::fs::remove_file(plan).await;
        }
    }
    .instrument(span)
    .await
}

struct Plan<'a> {
    profile: &'a Profile,
    argv: Vec<String>,
    timeout: Duration,
}

/// A `builtin` render to split into one shard job per changed region.
struct Sharding {
    world_dir: PathBuf,
    output_dir: PathBuf,
    force: bool,
}

enum Prepared<'a> {
    /// The in-process `noop` renderer: nothing to run.
    Done,
    Run(Plan<'a>),
    Shard(Sharding),
}

/// Everything that can be checked before spawning.
fn plan<'a>(agent: &'a Agent, claim: &Claim) -> Result<Prepared<'a>, Ending> {
    let fatal = |m: String| Ending::new(Outcome::Fatal, None, m);
    let profile = agent
        .profiles
        .get(&claim.renderer)
        .map_err(|e| fatal(format!("{e} on worker {}", agent.cfg.worker_id)))?;
    let given: BTreeMap<String, String> = serde_json::from_str(&claim.params)
        .map_err(|e| fatal(format!("params are not a JSON object of strings: {e}")))?;
    let params = profile
        .resolve_params(&given)
        .map_err(|e| fatal(e.to_string()))?;
    validate_world(&claim.world).map_err(|e| fatal(e.to_string()))?;
    if matches!(profile.runner, Runner::Noop) {
        return Ok(Prepared::Done);
    }
    let world_dir = resolve_world(&agent.cfg.worlds_dir, &claim.world)?;
    let output_dir = output_dir(agent, claim);
    std::fs::create_dir_all(&output_dir).map_err(|e| {
        Ending::new(
            Outcome::Failed,
            None,
            format!("cannot create output dir {}: {e}", output_dir.display()),
        )
    })?;
    let output_dir = output_dir.canonicalize().unwrap_or(output_dir);
    let timeout = claim
        .timeout_ms
        .parse::<u64>()
        .map(Duration::from_millis)
        .unwrap_or(profile.timeout);
    if matches!(profile.runner, Runner::Map) {
        let region = params.get("region").map(String::as_str).unwrap_or("");
        let argv = if claim.stage == "finalize" {
            map_argv(&[
                "pyramid",
                "--out",
                &output_dir.to_string_lossy(),
                "--plan",
                &plan_path(&output_dir, &claim.id, claim.run).to_string_lossy(),
                "--name",
                &claim.world,
            ])?
        } else if !region.is_empty() {
            map_argv(&[
                "region",
                "--world",
                &world_dir.to_string_lossy(),
                "--out",
                &output_dir.to_string_lossy(),
                "--region",
                region,
            ])?
        } else {
            return Ok(Prepared::Shard(Sharding {
                world_dir,
                output_dir,
                force: params.get("force").is_some_and(|f| f == "true"),
            }));
        };
        return Ok(Prepared::Run(Plan {
            profile,
            argv,
            timeout,
        }));
    }
    let argv = profile
        .argv(
            &params,
            &Expansion {
                world_dir: &world_dir,
                output_dir: &output_dir,
                job_id: &claim.id,
                attempt: claim.attempt,
            },
        )
        .map_err(|e| fatal(e.to_string()))?;
    Ok(Prepared::Run(Plan {
        profile,
        argv,
        timeout,
    }))
}

/// Where a job's renderer writes: `<output-dir>/<world>/<renderer>`.
fn output_dir(agent: &Agent, claim: &Claim) -> PathBuf {
    agent
        .cfg
        .output_dir
        .join(&claim.world)
        .join(&claim.renderer)
}

/// argv running this agent binary's `map` subcommand (the built-in renderer's steps).
fn map_argv(args: &[&str]) -> Result<Vec<String>, Ending> {
    let exe = std::env::current_exe().map_err(|e| {
        Ending::new(
            Outcome::Failed,
            None,
            format!("cannot find the agent's own binary to run the built-in renderer: {e}"),
        )
    })?;
    let mut argv = vec![exe.to_string_lossy().into_owned(), "map".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    Ok(argv)
}

/// Plan a `builtin` render (which regions changed since their tiles were drawn), write the plan
/// where the final step will read it, and turn the attempt into one shard job per region to draw.
async fn shard(agent: &Agent, claim: &Claim, s: Sharding) -> Result<(), Ending> {
    let (world, out) = (s.world_dir.clone(), s.output_dir.clone());
    let id = claim.id.clone();
    // This attempt becomes the render's run (fanout.lua records it); the final step reads the
    // plan of its own run, never one an outdated planner wrote.
    let run = claim.attempt;
    let planned = tokio::task::spawn_blocking(move || {
        let plan = output::plan(&world, &out, s.force)?;
        output::write_plan(&out, &id, run, &plan)?;
        Ok::<_, output::OutputError>(plan)
    })
    .await
    .map_err(|e| Ending::new(Outcome::Failed, None, format!("planning stopped: {e}")))?
    .map_err(|e| Ending::new(Outcome::Failed, None, format!("planning: {e}")))?;
    let force = if s.force { "true" } else { "false" };
    let shards: Vec<(String, String)> = planned
        .to_render()
        .map(|r| {
            let params = serde_json::json!({ "region": r.param(), "force": force });
            (r.to_string(), params.to_string())
        })
        .collect();
    let summary = format!(
        "planned {} regions: {} to draw, {} unchanged, {} empty files",
        planned.regions.len(),
        shards.len(),
        planned.count(Action::Skip),
        planned.count(Action::Empty)
    );
    info!(shards = shards.len(), "{summary}");
    let mut lines = vec![summary];
    for r in planned.regions.iter().filter(|r| r.action == Action::Empty) {
        lines.push(format!("{}: empty file (0 bytes), nothing to draw", r.id));
    }
    let cfg = &agent.cfg;
    if let Err(e) = agent
        .fleet
        .update(&claim.id, claim.attempt, &cfg.worker_id, &[], &lines)
        .await
    {
        warn!(error = %e, "could not write the plan summary to the job");
    }
    match agent
        .fleet
        .fanout(&claim.id, claim.attempt, &cfg.worker_id, &shards)
        .await
    {
        Ok(Ok(n)) => {
            info!(shards = n, "render sharded");
            Ok(())
        }
        // Cancelled while planning (or superseded): recording the attempt lets finish.lua end a
        // cancelled parent and free its world; a superseded attempt is refused there, harmlessly.
        Ok(Err(stale)) => Err(Ending::new(
            Outcome::Failed,
            None,
            format!(
                "the render moved on while it was being planned ({stale:?}); shards not queued"
            ),
        )),
        Err(e) => Err(Ending::new(
            Outcome::Failed,
            None,
            format!("could not queue the shards: {e}"),
        )),
    }
}

/// The world's directory under `worlds_dir`; refuses anything that escapes it (e.g. a symlink).
fn resolve_world(worlds_dir: &Path, world: &str) -> Result<PathBuf, Ending> {
    let base = worlds_dir.canonicalize().map_err(|e| {
        Ending::new(
            Outcome::Failed,
            None,
            format!("worlds dir {} is not usable: {e}", worlds_dir.display()),
        )
    })?;
    let dir = base.join(world).canonicalize().map_err(|e| {
        Ending::new(
            Outcome::Failed,
            None,
            format!("world '{world}' not found under {}: {e}", base.display()),
        )
    })?;
    if !dir.starts_with(&base) || dir == base {
        return Err(Ending::new(
            Outcome::Fatal,
            None,
            format!("world '{world}' resolves outside the worlds dir"),
        ));
    }
    if !dir.is_dir() {
        return Err(Ending::new(
            Outcome::Fatal,
            None,
            format!("world '{world}' is not a directory"),
        ));
    }
    Ok(dir)
}

fn clip(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_owned();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

async fn read_lines<R: AsyncRead + Unpin>(r: R, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                // Progress bars redraw with '\r'; keep the last state of the line.
                let line = line.rsplit('\r').next().unwrap_or(line);
                if tx.send(line.to_owned()).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Sink<'a> {
    agent: &'a Agent,
    claim: &'a Claim,
    parser: ProgressParser,
    lines: Vec<String>,
    progress: Option<(f64, Option<String>)>,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    /// The renderer's last non-blank line, quoted in the job's error when it fails.
    last: String,
}

impl Sink<'_> {
    async fn line(&mut self, line: String) {
        if !line.trim().is_empty() {
            self.last = clip(line.trim());
        }
        if let Some(p) = self.parser.feed(&line) {
            self.progress = Some((p.percent, p.phase));
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(line.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
        }
        if self.lines.len() >= LOG_LINES {
            self.lines.remove(0);
        }
        self.lines.push(clip(&line));
    }

    /// Write buffered progress and lines to the job. Returns false when the job moved on.
    async fn flush(&mut self) -> bool {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush().await;
        }
        if self.lines.is_empty() && self.progress.is_none() {
            return true;
        }
        let mut fields = Vec::new();
        if let Some((pct, phase)) = &self.progress {
            fields.push(("progress", format!("{pct}")));
            if let Some(ph) = phase {
                fields.push(("phase", ph.clone()));
            }
        }
        match self
            .agent
            .fleet
            .update(
                &self.claim.id,
                self.claim.attempt,
                &self.agent.cfg.worker_id,
                &fields,
                &self.lines,
            )
            .await
        {
            Ok(state) => {
                self.lines.clear();
                self.progress = None;
                state == "running"
            }
            Err(e) => {
                warn!(error = %e, "could not write progress; will retry");
                true
            }
        }
    }
}

async fn open_log(agent: &Agent, claim: &Claim) -> Option<tokio::io::BufWriter<tokio::fs::File>> {
    let dir = &agent.cfg.log_dir;
    if let Err(e) = tokio::fs::create_dir_all(dir).await {
        warn!(dir = %dir.display(), error = %e, "cannot create log dir; renderer output is kept only in Redis");
        return None;
    }
    let path = dir.join(format!("{}.{}.log", claim.id, claim.attempt));
    match tokio::fs::File::create(&path).await {
        Ok(f) => Some(tokio::io::BufWriter::new(f)),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot create log file");
            None
        }
    }
}

enum Stopped {
    Timeout,
    Reason(StopReason),
}

async fn run_command(
    agent: &Agent,
    claim: &Claim,
    plan: Plan<'_>,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> Ending {
    let mut cmd = tokio::process::Command::new(&plan.argv[0]);
    cmd.args(&plan.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env("RENDERFLEET_JOB_ID", &claim.id)
        .env("RENDERFLEET_ATTEMPT", claim.attempt.to_string())
        .env("RENDERFLEET_WORKER_ID", &agent.cfg.worker_id);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ending::new(
                Outcome::Failed,
                None,
                format!(
                    "cannot start '{}' on worker {}: {e}",
                    plan.argv[0], agent.cfg.worker_id
                ),
            )
        }
    };
    let pgid = child.id().unwrap_or(0);
    let pstart = process::start_time(pgid)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let (tx, mut rx) = mpsc::channel(1024);
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(read_lines(o, tx.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(read_lines(e, tx.clone()))),
    ];
    drop(tx);
    let mut sink = Sink {
        agent,
        claim,
        parser: ProgressParser::new(&plan.profile.progress),
        lines: Vec::new(),
        progress: None,
        file: open_log(agent, claim).await,
        last: String::new(),
    };
    let mut still_ours = match agent
        .fleet
        .update(
            &claim.id,
            claim.attempt,
            &agent.cfg.worker_id,
            &[
                ("pid", pgid.to_string()),
                ("pstart", pstart),
                ("host", agent.host.clone()),
            ],
            &[],
        )
        .await
    {
        Ok(state) => state == "running",
        Err(e) => {
            warn!(error = %e, "could not record the renderer's pid");
            true
        }
    };
    info!(pid = pgid, argv = ?plan.argv, timeout = %human(plan.timeout), "renderer started");

    let deadline = tokio::time::sleep(plan.timeout);
    tokio::pin!(deadline);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopped = None;
    let mut status: Option<ExitStatus> = None;
    if !still_ours {
        stopped = Some(Stopped::Reason(StopReason::MovedOn));
    }
    while stopped.is_none() {
        tokio::select! {
            s = child.wait() => {
                status = s.ok();
                break;
            }
            Some(line) = rx.recv() => sink.line(line).await,
            _ = flush.tick() => {
                still_ours = sink.flush().await;
                if !still_ours {
                    stopped = Some(Stopped::Reason(StopReason::MovedOn));
                }
            }
            _ = &mut deadline => stopped = Some(Stopped::Timeout),
            r = stop.changed() => {
                let reason = if r.is_ok() { *stop.borrow() } else { None };
                stopped = Some(Stopped::Reason(reason.unwrap_or(StopReason::Drain)));
            }
        }
    }
    if stopped.is_some() {
        info!(pid = pgid, "stopping renderer");
        status = process::stop(&mut child, pgid, agent.cfg.kill_grace).await;
    } else {
        // The renderer exited; anything it left running in its group goes too.
        process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    // Collect the output still in the pipes (bounded: the group is gone, so the pipes close).
    let drain = async {
        while let Some(line) = rx.recv().await {
            sink.line(line).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    for r in readers.into_iter().flatten() {
        r.abort();
    }
    let _ = sink.flush().await;

    let code = status.and_then(|s| s.code());
    match stopped {
        Some(Stopped::Timeout) => Ending::new(
            Outcome::Failed,
            code,
            format!("timed out after {}", human(plan.timeout)),
        ),
        Some(Stopped::Reason(StopReason::Drain)) => {
            Ending::new(Outcome::Handback, code, "handed back: worker draining")
        }
        Some(Stopped::Reason(StopReason::MovedOn)) => {
            Ending::new(Outcome::Failed, code, "stopped: the job moved on")
        }
        None => match status {
            Some(s) if s.success() => Ending::new(Outcome::Succeeded, Some(0), ""),
            Some(s) => {
                use std::os::unix::process::ExitStatusExt;
                let mut what = match (s.code(), s.signal()) {
                    (Some(c), _) => format!("renderer exited with code {c}"),
                    (None, Some(sig)) => format!("renderer killed by signal {sig}"),
                    _ => "renderer failed".to_owned(),
                };
                if !sink.last.is_empty() {
                    what = format!("{what}: {}", sink.last);
                }
                // The built-in renderer says when its input is bad: retrying cannot help.
                let bad_input = matches!(plan.profile.runner, Runner::Map)
                    && s.code() == Some(i32::from(crate::map::EXIT_BAD_INPUT));
                let outcome = if bad_input {
                    Outcome::Fatal
                } else {
                    Outcome::Failed
                };
                Ending::new(outcome, code, what)
            }
            None => Ending::new(Outcome::Failed, None, "lost track of the renderer process"),
        },
    }
}

/// Record the ending; retried while Redis is unreachable. Stale attempts are logged and dropped.
async fn record(agent: &Agent, claim: &Claim, ending: Ending) {
    let mut delay = Duration::from_millis(100);
    for _ in 0..60 {
        match agent
            .fleet
            .finish(
                &claim.id,
                claim.attempt,
                &agent.cfg.worker_id,
                ending.outcome,
                ending.exit_code,
                &ending.error,
            )
            .await
        {
            Ok(Finished::Recorded(state)) => {
                info!(outcome = ?ending.outcome, state = %state, error = %ending.error, "job attempt recorded");
                return;
            }
            Ok(Finished::Stale(state)) => {
                info!(outcome = ?ending.outcome, state = %state, "attempt is stale; outcome not recorded");
                return;
            }
            Err(e) => {
                warn!(error = %e, "could not record job outcome; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    warn!("gave up recording the outcome; the job will be reclaimed");
}
