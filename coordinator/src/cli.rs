//! `renderfleet`: the admin CLI. Every command reads or writes the fleet's Redis keys; nothing talks
//! to an agent directly. Exit codes: 0 ok, 1 error, 2 usage.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use renderfleet_shared::cli::Common;
use renderfleet_shared::job::{JobSpec, JobState, Priority};
use renderfleet_shared::renderer::Profiles;
use renderfleet_shared::time::parse_duration;
use renderfleet_shared::{Error, Fleet};

use crate::ops::{self, ManualCommand};
use crate::{config, output, schedule};

/// renderfleet admin CLI: submit and inspect render jobs, look at workers.
#[derive(Parser, Debug)]
#[command(name = "renderfleet", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Queue a render job; prints the job id alone on stdout
    Submit(Box<SubmitArgs>),
    /// Show one job with the tail of its renderer output
    Job {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List jobs, newest first
    Jobs {
        /// Only jobs in this state (queued, running, sharded, failed, succeeded, dead, cancelled)
        #[arg(long)]
        state: Option<String>,
        /// The shards of this sharded render instead (shards are not in the main list)
        #[arg(long)]
        shards_of: Option<String>,
        /// At most this many jobs
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued, retry-waiting or running job (a running renderer is stopped)
    Cancel { id: String },
    /// Requeue a dead, cancelled or retry-waiting job now, with a fresh attempt budget
    Retry { id: String },
    /// List workers with a live heartbeat, or add/remove workers through the leader
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
        #[arg(long)]
        json: bool,
    },
    /// Show one worker
    Worker {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Fleet summary: workers, utilization, backlog, policy, leader, last decision
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Ask the leader to scale (within min/max bounds)
    Scale {
        #[command(subcommand)]
        direction: ScaleDirection,
    },
    /// What the policy would do now, and why (changes nothing)
    Evaluate {
        #[arg(long)]
        json: bool,
    },
    /// Read or change the scaling policy (stored in Redis, applied at the next tick)
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Exit 0 when a coordinator leads and at least min_workers workers are healthy, else 1
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Coordinator decisions and actions, oldest first
    Events {
        /// Keep printing new events
        #[arg(long)]
        follow: bool,
        /// How many past events to show
        #[arg(long, default_value_t = 20)]
        count: usize,
        #[arg(long)]
        json: bool,
    },
    /// Scheduled renders
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Write a sample Minecraft world (1.18+ region files) for demos and tests; needs no Redis
    SampleWorld {
        /// World directory to create (region files go to DIR/region)
        dir: std::path::PathBuf,
        /// Side of the world in regions: N x N regions of 512 x 512 blocks, centred on 0,0
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
        regions: u32,
        /// Terrain seed (same seed, same bytes)
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkersAction {
    /// Start workers (through the leader's backend)
    Add {
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Drain one worker and remove it once its jobs are done
    Remove { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ScaleDirection {
    Up {
        #[arg(long, default_value_t = 1)]
        by: u32,
    },
    Down {
        #[arg(long, default_value_t = 1)]
        by: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print the policy (or one key)
    Get {
        key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set keys: `renderfleet config set min_workers=2 scale_up_cooldown=2m`
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleAction {
    /// Render a world every interval (never stacking: a slot is skipped while the last render is live)
    Add {
        #[arg(long)]
        world: String,
        #[arg(long)]
        renderer: String,
        #[arg(long, value_parser = parse_duration)]
        every: Duration,
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        priority: Option<String>,
        /// Schedule name [default: <world>-<renderer>]
        #[arg(long)]
        name: Option<String>,
        /// Fire the first render at the next tick instead of one interval from now
        #[arg(long)]
        now: bool,
    },
    /// List schedules
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule
    Remove { name: String },
}

/// Options of `renderfleet submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// World directory name (under the agents' --worlds-dir)
    #[arg(long, required_unless_present = "spec")]
    pub world: Option<String>,
    /// Renderer profile
    #[arg(long, required_unless_present = "spec")]
    pub renderer: Option<String>,
    /// A declared renderer param, KEY=VALUE (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// high, normal or low
    #[arg(long)]
    pub priority: Option<String>,
    /// Per-attempt timeout [default: the profile's]
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Attempts before the job is dead-lettered [default: 3]
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Base of the exponential retry backoff [default: 10s]
    #[arg(long, value_parser = parse_duration)]
    pub backoff: Option<Duration>,
    /// How long the finished job stays inspectable [default: 7days]
    #[arg(long, value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// Idempotency key used as the job id: submitting it again returns the same job
    #[arg(long)]
    pub id: Option<String>,
    /// Read the whole job as JSON from FILE ('-' for stdin); flags given beside it override it
    #[arg(long, value_name = "FILE")]
    pub spec: Option<String>,
    /// Extra renderer profiles (TOML) to validate against, besides built-ins and those agents published
    #[arg(long, env = "RENDERFLEET_RENDERERS")]
    pub renderers: Option<PathBuf>,
    /// Wait until the job finishes; exit 0 only if it succeeded
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (the job keeps going)
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    pub wait_timeout: Option<Duration>,
}

impl SubmitArgs {
    fn spec(&self) -> anyhow::Result<JobSpec> {
        let mut spec = match &self.spec {
            Some(path) => {
                let mut text = String::new();
                let limit = renderfleet_shared::job::MAX_JOB_BYTES as u64 + 1;
                if path == "-" {
                    std::io::stdin()
                        .take(limit)
                        .read_to_string(&mut text)
                        .context("reading the job from stdin")?;
                } else {
                    std::fs::File::open(path)
                        .and_then(|f| f.take(limit).read_to_string(&mut text))
                        .with_context(|| format!("reading {path}"))?;
                }
                JobSpec::from_json(&text)?
            }
            None => JobSpec::default(),
        };
        if let Some(w) = &self.world {
            spec.world = w.clone();
        }
        if let Some(r) = &self.renderer {
            spec.renderer = r.clone();
        }
        spec.params.extend(parse_params(&self.params)?);
        if let Some(p) = &self.priority {
            spec.priority = p.parse::<Priority>()?;
        }
        spec.timeout = self.timeout.or(spec.timeout);
        spec.max_attempts = self.max_attempts.or(spec.max_attempts);
        spec.backoff = self.backoff.or(spec.backoff);
        spec.retention = self.retention.or(spec.retention);
        spec.id = self.id.clone().or(spec.id);
        Ok(spec)
    }
}

/// `--param KEY=VALUE` flags as a map (shared by `submit` and `schedule add`).
fn parse_params(flags: &[String]) -> Result<BTreeMap<String, String>, Error> {
    flags
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Error::InvalidJob(format!("--param '{kv}' is not KEY=VALUE")))
        })
        .collect()
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Run one CLI command. Errors are returned for `main` to print as one line (exit 1).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::SampleWorld { dir, regions, seed } = &cli.command {
        let t = std::time::Instant::now();
        let ids = renderfleet_map::sample::write_sample_world(dir, *regions, *seed)?;
        eprintln!(
            "wrote {} regions ({r}x{r}, seed {seed}) to {} in {:.1} s",
            ids.len(),
            renderfleet_map::output::region_dir(dir).display(),
            t.elapsed().as_secs_f64(),
            r = regions
        );
        return Ok(());
    }
    // Validate input before touching Redis, so bad input fails the same with Redis up or down.
    let spec = match &cli.command {
        Command::Submit(a) => {
            let s = a.spec()?;
            s.validate_shape()?;
            Some(s)
        }
        _ => None,
    };
    let state = match &cli.command {
        Command::Jobs { state: Some(s), .. } => Some(s.parse::<JobState>()?),
        _ => None,
    };
    let fleet = Fleet::connect(&cli.common.redis_url, &cli.common.namespace).await?;
    match cli.command {
        Command::Submit(args) => {
            let Some(spec) = spec else {
                bail!("no job spec")
            };
            let mut profiles = fleet.profiles().await?;
            if let Some(path) = &args.renderers {
                for p in Profiles::load(Some(path))?.iter() {
                    profiles.insert(p.clone());
                }
            }
            profiles.validate(&spec)?;
            fleet.ensure_groups().await?;
            let s = fleet.submit(&spec, &profiles).await?;
            println!("{}", s.id);
            if !s.created {
                eprintln!(
                    "job {} already exists ({}); not submitted again",
                    s.id, s.state
                );
            }
            if args.wait {
                wait(&fleet, &s.id, args.wait_timeout).await?;
            }
        }
        Command::Job { id, json } => {
            let job = fleet.job_with_log(&id).await?.ok_or(Error::NoSuchJob(id))?;
            if json {
                print_json(&job)?;
            } else {
                print!("{}", output::job_detail(&job));
            }
        }
        Command::Jobs {
            limit,
            json,
            shards_of,
            ..
        } => {
            let jobs = match shards_of {
                None => fleet.jobs(state, limit).await?,
                Some(parent) => {
                    let mut out = Vec::new();
                    for id in fleet.shards(&parent).await?.into_iter().take(limit) {
                        if let Some(j) = fleet.job(&id).await? {
                            if state.is_none_or(|s| s == j.state) {
                                out.push(j);
                            }
                        }
                    }
                    out
                }
            };
            if json {
                print_json(&jobs)?;
            } else {
                print!("{}", output::jobs_table(&jobs));
            }
        }
        Command::Cancel { id } => match fleet.cancel(&id).await? {
            renderfleet_shared::fleet::Cancelled::Cancelled => println!("cancelled {id}"),
            renderfleet_shared::fleet::Cancelled::Stopping => {
                println!("cancelled {id}; its agent is stopping the renderer")
            }
        },
        Command::Retry { id } => {
            fleet.retry(&id).await?;
            println!("queued {id} again");
        }
        Command::Workers { action: None, json } => {
            let ws = fleet.workers().await?;
            if json {
                print_json(&ws)?;
            } else {
                print!("{}", output::workers_table(&ws));
            }
        }
        Command::Workers {
            action: Some(WorkersAction::Add { count }),
            ..
        } => {
            ops::push_command(&fleet, &ManualCommand::ScaleUp { by: count }).await?;
            println!("asked the leader to add {count} worker(s)");
        }
        Command::Workers {
            action: Some(WorkersAction::Remove { id }),
            ..
        } => {
            ops::push_command(&fleet, &ManualCommand::Remove { worker: id.clone() }).await?;
            println!("asked the leader to drain and remove {id}");
        }
        Command::Worker { id, json } => {
            let w = fleet
                .worker(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no worker '{id}' with a live heartbeat"))?;
            if json {
                print_json(&w)?;
            } else {
                print!("{}", output::worker_detail(&w));
            }
        }
        Command::Status { json } => {
            let st = ops::status(&fleet).await?;
            if json {
                print_json(&st)?;
            } else {
                print!("{}", output::status(&st));
            }
        }
        Command::Scale { direction } => {
            let (cmd, what) = match direction {
                ScaleDirection::Up { by } => {
                    (ManualCommand::ScaleUp { by }, format!("scale up by {by}"))
                }
                ScaleDirection::Down { by } => (
                    ManualCommand::ScaleDown { by },
                    format!("scale down by {by}"),
                ),
            };
            ops::push_command(&fleet, &cmd).await?;
            match ops::leader(&fleet).await? {
                Some(l) => println!(
                    "asked the leader ({}) to {what}; see `renderfleet events`",
                    l.id
                ),
                None => println!(
                    "queued: {what}; no coordinator leads right now, it applies when one does"
                ),
            }
        }
        Command::Evaluate { json } => {
            let ev = ops::evaluate(&fleet).await?;
            if json {
                print_json(&ev)?;
            } else {
                print!("{}", output::evaluation(&ev));
            }
        }
        Command::Config {
            action: ConfigAction::Get { key, json },
        } => {
            let cfg = config::load(&fleet).await?;
            let map = cfg.to_map();
            match key {
                Some(k) => {
                    let v = map
                        .get(&k)
                        .ok_or_else(|| anyhow::anyhow!("unknown key '{k}'"))?;
                    println!("{v}");
                }
                None if json => print_json(&map)?,
                None => {
                    for (k, v) in map {
                        println!("{k}={v}");
                    }
                }
            }
        }
        Command::Config {
            action: ConfigAction::Set { pairs },
        } => {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("'{p}' is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            config::set(&fleet, &pairs).await?;
            for (k, v) in &pairs {
                println!("{k}={v}");
            }
        }
        Command::Health { json } => {
            let st = ops::status(&fleet).await?;
            let healthy = st.workers.get("healthy").copied().unwrap_or(0);
            let ok = st.leader.is_some() && healthy >= st.policy.min_workers;
            if json {
                print_json(
                    &serde_json::json!({"ok": ok, "leader": st.leader, "healthy_workers": healthy, "min_workers": st.policy.min_workers}),
                )?;
            } else {
                let leader = st
                    .leader
                    .as_ref()
                    .map(|l| l.id.clone())
                    .unwrap_or_else(|| "none".into());
                println!(
                    "{}: leader {leader}, {healthy} healthy worker(s), min_workers {}",
                    if ok { "ok" } else { "unhealthy" },
                    st.policy.min_workers
                );
            }
            if !ok {
                bail!("fleet is unhealthy");
            }
        }
        Command::Events {
            follow,
            count,
            json,
        } => {
            let mut last = "$".to_owned();
            for e in ops::events(&fleet, count).await? {
                output::event(&e, json)?;
                last = e.id.clone();
            }
            if follow {
                let mut conn = fleet.blocking_connection(Duration::from_secs(5)).await?;
                loop {
                    for e in ops::events_after(&fleet, &mut conn, &last, 5000).await? {
                        output::event(&e, json)?;
                        last = e.id.clone();
                    }
                }
            }
        }
        // Handled before connecting.
        Command::SampleWorld { .. } => {}
        Command::Schedule { action } => match action {
            ScheduleAction::Add {
                world,
                renderer,
                every,
                params,
                priority,
                name,
                now,
            } => {
                let mut spec = JobSpec {
                    world,
                    renderer,
                    ..Default::default()
                };
                spec.params = parse_params(&params)?;
                if let Some(p) = priority {
                    spec.priority = p.parse::<Priority>()?;
                }
                let s = schedule::add(&fleet, &spec, name, every, now).await?;
                println!("{}", s.name);
            }
            ScheduleAction::List { json } => {
                let all = schedule::list(&fleet).await?;
                if json {
                    print_json(&all)?;
                } else {
                    print!("{}", output::schedules(&all));
                }
            }
            ScheduleAction::Remove { name } => {
                schedule::remove(&fleet, &name).await?;
                println!("removed {name}");
            }
        },
    }
    Ok(())
}

async fn wait(fleet: &Fleet, id: &str, limit: Option<Duration>) -> anyhow::Result<()> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut last = None;
    let mut last_shards = None;
    loop {
        let job = fleet
            .job(id)
            .await?
            .ok_or_else(|| Error::NoSuchJob(id.to_owned()))?;
        if last != Some(job.state) {
            eprintln!("{id}: {}", job.state);
            last = Some(job.state);
        }
        if let Some(sh) = &job.shards {
            let now = (sh.done, sh.failed, sh.total);
            if last_shards != Some(now) {
                eprintln!(
                    "{id}: shards {} done, {} failed of {}",
                    sh.done, sh.failed, sh.total
                );
                last_shards = Some(now);
            }
        }
        if job.state.is_final() {
            if job.state == JobState::Succeeded {
                return Ok(());
            }
            bail!(
                "job {id} ended {}{}",
                job.state,
                job.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            bail!("job {id} is still {} after the wait timeout", job.state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
