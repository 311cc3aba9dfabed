//! `renderfleet-agent`: parse flags, set up logging and signals, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use renderfleet_agent::config::{hostname, AgentConfig, Cli, Command};
use renderfleet_shared::cli::init_tracing;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Map(cmd) = cli.command {
        return renderfleet_agent::map::run(cmd);
    }
    init_tracing(cli.common.log_format, "info");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("renderfleet-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run(args) => {
            let cfg = match AgentConfig::from_args(&cli.common, &args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("renderfleet-agent: {e:#}");
                    return ExitCode::from(64);
                }
            };
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                if let Err(e) = renderfleet_shared::signal::install(shutdown.clone()) {
                    eprintln!("renderfleet-agent: cannot install signal handlers: {e}");
                    return ExitCode::FAILURE;
                }
                match renderfleet_agent::run(cfg, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("renderfleet-agent: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Health(args) => {
            let worker = args.worker_id.unwrap_or_else(hostname);
            let r = runtime.block_on(renderfleet_agent::health::check(
                &cli.common.redis_url,
                &cli.common.namespace,
                &worker,
                args.max_age,
            ));
            match r {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("unhealthy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Map(_) => ExitCode::FAILURE,
    }
}
