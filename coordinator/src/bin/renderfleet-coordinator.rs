//! `renderfleet-coordinator`: the sidecar that decides health, hands back jobs of dead workers,
//! fires scheduled renders and scales the fleet through a backend. Any number may run; one leads.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use renderfleet_coordinator::backend::docker::{DockerBackend, Template};
use renderfleet_coordinator::backend::swarm::SwarmBackend;
use renderfleet_coordinator::backend::{none::NoneBackend, process::ProcessBackend};
use renderfleet_coordinator::coordinator::{run, CoordinatorConfig};
use renderfleet_shared::cli::{init_tracing, Common};
use renderfleet_shared::time::parse_duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// Local renderfleet-agent child processes
    Process,
    /// Worker containers through the Docker Engine API
    Docker,
    /// Replicas of a Docker Swarm service (multi-host)
    Swarm,
    /// Recommend only: decisions are recorded, nothing is started or stopped
    None,
}

fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b').trim_end_matches('i');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n >= 0.0)
        .map(|n| (n * mult as f64) as i64)
        .ok_or_else(|| format!("'{s}' is not a size like 512m or 1g"))
}

/// renderfleet coordinator: health, reclaim, scheduled renders and autoscaling, through Redis.
#[derive(Parser, Debug)]
#[command(name = "renderfleet-coordinator", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// This coordinator's id in the leader lease [default: <hostname>-<pid>]
    #[arg(long, env = "RENDERFLEET_COORDINATOR_ID")]
    id: Option<String>,
    /// Time between ticks
    #[arg(long, env = "RENDERFLEET_TICK", default_value = "2s", value_parser = parse_duration)]
    tick: Duration,
    /// Leader lease lifetime; a standby takes over within this after the leader dies
    #[arg(long, env = "RENDERFLEET_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    lease_ttl: Duration,
    /// Scaling backend
    #[arg(long, env = "RENDERFLEET_BACKEND", value_enum, default_value_t = BackendKind::Process)]
    backend: BackendKind,
    /// Agent binary for the process backend [default: renderfleet-agent beside this binary, else on PATH]
    #[arg(long, env = "RENDERFLEET_AGENT_BIN")]
    agent_bin: Option<PathBuf>,
    /// Extra argument for agents the process backend starts (repeatable, e.g. --agent-arg=--capacity=4)
    #[arg(
        long = "agent-arg",
        env = "RENDERFLEET_AGENT_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    agent_args: Vec<String>,
    /// Worker id prefix for the process backend [default: <hostname>-<pid>]
    #[arg(long, env = "RENDERFLEET_WORKER_PREFIX")]
    worker_prefix: Option<String>,
    /// How long local agents get to drain when the coordinator stops
    #[arg(long, env = "RENDERFLEET_AGENT_STOP_GRACE", default_value = "60s", value_parser = parse_duration)]
    agent_stop_grace: Duration,
    /// Docker backend: worker image
    #[arg(
        long,
        env = "RENDERFLEET_DOCKER_IMAGE",
        default_value = "renderfleet/agent:latest"
    )]
    docker_image: String,
    /// Docker backend: KEY=VALUE for workers (repeatable; comma-separated in the env var)
    #[arg(
        long = "docker-env",
        env = "RENDERFLEET_DOCKER_ENV",
        value_delimiter = ','
    )]
    docker_env: Vec<String>,
    /// Docker backend: volume or bind, SOURCE:TARGET[:ro] (repeatable; comma-separated in the env var)
    #[arg(
        long = "docker-volume",
        env = "RENDERFLEET_DOCKER_VOLUMES",
        value_delimiter = ','
    )]
    docker_volumes: Vec<String>,
    /// Docker backend: networks for workers (repeatable; comma-separated in the env var)
    #[arg(
        long = "docker-network",
        env = "RENDERFLEET_DOCKER_NETWORKS",
        value_delimiter = ','
    )]
    docker_networks: Vec<String>,
    /// Docker backend: memory limit per worker
    #[arg(long, env = "RENDERFLEET_DOCKER_MEMORY", default_value = "1g", value_parser = parse_bytes)]
    docker_memory: i64,
    /// Docker backend: CPUs per worker
    #[arg(long, env = "RENDERFLEET_DOCKER_CPUS", default_value_t = 0.5)]
    docker_cpus: f64,
    /// Docker backend: `docker stop` timeout; keep it at least the agents' --drain-timeout
    #[arg(long, env = "RENDERFLEET_DOCKER_STOP_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    docker_stop_timeout: Duration,
    /// Serve the HTTP admin API, dashboard and /metrics on this address (off when unset)
    #[arg(long, env = "RENDERFLEET_HTTP")]
    http: Option<String>,
    /// File holding the bearer token for the HTTP API (required for writes)
    #[arg(long, env = "RENDERFLEET_HTTP_TOKEN_FILE")]
    http_token_file: Option<PathBuf>,
    /// Serve GET requests without a token
    #[arg(long, env = "RENDERFLEET_HTTP_PUBLIC_READS")]
    http_public_reads: bool,
    /// Serve the maps rendered under this directory (the agents' --output-dir) at /maps/
    #[arg(long, env = "RENDERFLEET_MAPS_DIR")]
    maps_dir: Option<PathBuf>,
    /// Serve /maps/ without a token (a browser cannot send one for map tiles)
    #[arg(long, env = "RENDERFLEET_HTTP_PUBLIC_MAPS")]
    http_public_maps: bool,
    /// Docker and swarm backends: the engine's socket
    #[arg(
        long,
        env = "RENDERFLEET_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    docker_socket: String,
    /// Swarm backend: the service whose replicas are the workers
    #[arg(
        long,
        env = "RENDERFLEET_SWARM_SERVICE",
        default_value = "renderfleet_agent"
    )]
    swarm_service: String,
    /// Docker backend: container names (= worker ids) are <prefix>-<n> [default: rf-<namespace>-worker]
    #[arg(long, env = "RENDERFLEET_DOCKER_NAME_PREFIX")]
    docker_name_prefix: Option<String>,
}

fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "coordinator".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.common.log_format, "info");
    if cli.lease_ttl <= cli.tick * 2 {
        eprintln!("renderfleet-coordinator: --lease-ttl must be more than twice --tick");
        return ExitCode::from(64);
    }
    if let Err(e) = renderfleet_shared::Keys::new(&cli.common.namespace) {
        eprintln!("renderfleet-coordinator: {e}");
        return ExitCode::from(64);
    }
    let http = match &cli.http {
        None => None,
        Some(addr) => {
            // A bare port means loopback: exposing the API is a choice, not a default.
            let with_host = if addr.starts_with(':') {
                format!("127.0.0.1{addr}")
            } else {
                addr.clone()
            };
            let addr = match with_host.parse::<std::net::SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    eprintln!("renderfleet-coordinator: --http '{addr}' is not an address like 127.0.0.1:8080");
                    return ExitCode::from(64);
                }
            };
            let token = match &cli.http_token_file {
                None => None,
                Some(p) => match std::fs::read_to_string(p) {
                    Ok(t) if t.trim().len() >= 16 => Some(t.trim().to_owned()),
                    Ok(_) => {
                        eprintln!("renderfleet-coordinator: the token in {} must be at least 16 characters", p.display());
                        return ExitCode::from(64);
                    }
                    Err(e) => {
                        eprintln!(
                            "renderfleet-coordinator: cannot read --http-token-file {}: {e}",
                            p.display()
                        );
                        return ExitCode::from(64);
                    }
                },
            };
            Some(renderfleet_coordinator::http::HttpConfig {
                addr,
                token,
                public_reads: cli.http_public_reads,
                maps_dir: cli.maps_dir.clone(),
                public_maps: cli.http_public_maps,
            })
        }
    };
    let me = format!("{}-{}", host(), std::process::id());
    let cfg = CoordinatorConfig {
        redis_url: cli.common.redis_url.clone(),
        namespace: cli.common.namespace.clone(),
        id: cli.id.clone().unwrap_or_else(|| me.clone()),
        tick: cli.tick,
        lease_ttl: cli.lease_ttl,
        http,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("renderfleet-coordinator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        renderfleet_shared::signal::install(shutdown.clone())?;
        match cli.backend {
            BackendKind::None => run(cfg, NoneBackend, shutdown).await,
            BackendKind::Swarm => {
                run(
                    cfg,
                    SwarmBackend::new(&cli.swarm_service, &cli.docker_socket),
                    shutdown,
                )
                .await
            }
            BackendKind::Docker => {
                let template = Template {
                    image: cli.docker_image.clone(),
                    env: cli.docker_env.clone(),
                    volumes: cli.docker_volumes.clone(),
                    networks: cli.docker_networks.clone(),
                    memory_bytes: cli.docker_memory,
                    nano_cpus: (cli.docker_cpus * 1e9) as i64,
                    stop_timeout: cli.docker_stop_timeout,
                    name_prefix: cli
                        .docker_name_prefix
                        .clone()
                        .unwrap_or_else(|| format!("rf-{}-worker", cli.common.namespace)),
                    socket: cli.docker_socket.clone(),
                };
                run(
                    cfg,
                    DockerBackend::new(template, &cli.common.namespace),
                    shutdown,
                )
                .await
            }
            BackendKind::Process => {
                let bin = cli.agent_bin.clone().unwrap_or_else(|| {
                    std::env::current_exe()
                        .ok()
                        .and_then(|e| e.parent().map(|d| d.join("renderfleet-agent")))
                        .filter(|p| p.is_file())
                        .unwrap_or_else(|| PathBuf::from("renderfleet-agent"))
                });
                let prefix = cli.worker_prefix.clone().unwrap_or(me);
                let backend =
                    ProcessBackend::new(bin, cli.agent_args.clone(), prefix, cli.agent_stop_grace);
                run(cfg, backend, shutdown).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("renderfleet-coordinator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
