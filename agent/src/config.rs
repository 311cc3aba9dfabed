//! `renderfleet-agent` flags. Every flag has an environment twin (`RENDERFLEET_<FLAG>`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use renderfleet_shared::cli::Common;
use renderfleet_shared::time::parse_duration;

/// renderfleet worker agent: heartbeats into Redis, pulls render jobs while it has free capacity,
/// and supervises the renderer processes.
#[derive(Parser, Debug)]
#[command(name = "renderfleet-agent", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent until SIGTERM/SIGINT, then drain.
    Run(RunArgs),
    /// Exit 0 when Redis is reachable and this worker's heartbeat is fresh, else 1 (for HEALTHCHECK).
    Health(HealthArgs),
    /// The built-in map renderer's steps (run by the agent for `builtin` jobs; usable by hand).
    #[command(subcommand)]
    Map(crate::map::MapCommand),
}

/// Options of `renderfleet-agent run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Worker id; the consumer name in Redis [default: the hostname]
    #[arg(long, env = "RENDERFLEET_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Jobs run at once
    #[arg(long, env = "RENDERFLEET_CAPACITY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub capacity: u32,
    /// Time between heartbeats
    #[arg(long, env = "RENDERFLEET_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Lifetime of the worker's state hash [default: 3 x heartbeat interval]
    #[arg(long, env = "RENDERFLEET_WORKER_TTL", value_parser = parse_duration)]
    pub worker_ttl: Option<Duration>,
    /// Directory holding one sub-directory per world
    #[arg(long, env = "RENDERFLEET_WORLDS_DIR", default_value = "worlds")]
    pub worlds_dir: PathBuf,
    /// Directory renders are written under (`<output-dir>/<world>/<renderer>`)
    #[arg(long, env = "RENDERFLEET_OUTPUT_DIR", default_value = "output")]
    pub output_dir: PathBuf,
    /// Full renderer logs go here, one file per attempt [default: <output-dir>/.renderfleet-logs]
    #[arg(long, env = "RENDERFLEET_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// TOML file of renderer profiles (added to the built-in `overviewer` and `noop`)
    #[arg(long, env = "RENDERFLEET_RENDERERS")]
    pub renderers: Option<PathBuf>,
    /// On SIGTERM, how long running jobs may take to finish before they are stopped and handed back
    #[arg(long, env = "RENDERFLEET_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a renderer is stopped
    #[arg(long, env = "RENDERFLEET_KILL_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// Memory use (fraction of the limit) above which the agent is degraded and stops pulling
    #[arg(long, env = "RENDERFLEET_MEMORY_THRESHOLD", default_value_t = 0.9)]
    pub memory_threshold: f64,
    /// How often running jobs are checked for cancellation or loss of their lease
    #[arg(long, env = "RENDERFLEET_CHECK_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub check_interval: Duration,
    /// Longest blocking read on the job streams
    #[arg(long, env = "RENDERFLEET_BLOCK", default_value = "1s", value_parser = parse_duration)]
    pub block: Duration,
}

/// Options of `renderfleet-agent health`.
#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    /// Worker id to check [default: the hostname]
    #[arg(long, env = "RENDERFLEET_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Oldest acceptable heartbeat
    #[arg(long, env = "RENDERFLEET_HEALTH_MAX_AGE", default_value = "10s", value_parser = parse_duration)]
    pub max_age: Duration,
}

/// The hostname, or "worker" when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub redis_url: String,
    pub namespace: String,
    pub worker_id: String,
    pub capacity: u32,
    pub heartbeat_interval: Duration,
    pub worker_ttl: Duration,
    pub worlds_dir: PathBuf,
    pub output_dir: PathBuf,
    pub log_dir: PathBuf,
    pub renderers: Option<PathBuf>,
    pub drain_timeout: Duration,
    pub kill_grace: Duration,
    pub memory_threshold: f64,
    pub check_interval: Duration,
    pub block: Duration,
}

impl AgentConfig {
    /// Check the flags before anything starts.
    pub fn from_args(common: &Common, a: &RunArgs) -> anyhow::Result<Self> {
        let worker_id = a.worker_id.clone().unwrap_or_else(hostname);
        renderfleet_shared::job::validate_job_id(&worker_id).map_err(|_| {
            anyhow::anyhow!(
                "--worker-id '{worker_id}' must be 1-128 characters of A-Z a-z 0-9 _ . : -"
            )
        })?;
        renderfleet_shared::Keys::new(&common.namespace)?;
        anyhow::ensure!(
            a.heartbeat_interval >= Duration::from_millis(50),
            "--heartbeat-interval must be at least 50ms"
        );
        let worker_ttl = a.worker_ttl.unwrap_or(a.heartbeat_interval * 3);
        anyhow::ensure!(
            worker_ttl > a.heartbeat_interval,
            "--worker-ttl must be longer than --heartbeat-interval"
        );
        anyhow::ensure!(
            a.memory_threshold > 0.0 && a.memory_threshold <= 1.0,
            "--memory-threshold must be in (0, 1]"
        );
        anyhow::ensure!(
            a.block >= Duration::from_millis(10),
            "--block must be at least 10ms"
        );
        let log_dir = a
            .log_dir
            .clone()
            .unwrap_or_else(|| a.output_dir.join(".renderfleet-logs"));
        Ok(Self {
            redis_url: common.redis_url.clone(),
            namespace: common.namespace.clone(),
            worker_id,
            capacity: a.capacity,
            heartbeat_interval: a.heartbeat_interval,
            worker_ttl,
            worlds_dir: a.worlds_dir.clone(),
            output_dir: a.output_dir.clone(),
            log_dir,
            renderers: a.renderers.clone().filter(|p| !p.as_os_str().is_empty()),
            drain_timeout: a.drain_timeout,
            kill_grace: a.kill_grace,
            memory_threshold: a.memory_threshold,
            check_interval: a.check_interval,
            block: a.block,
        })
    }
}
