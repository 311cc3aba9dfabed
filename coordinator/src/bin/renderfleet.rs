//! `renderfleet`: the admin CLI. Prints one line on error and exits 1 (2 for usage errors).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use renderfleet_coordinator::cli::{run, Cli};
use renderfleet_shared::cli::init_tracing;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.common.log_format, "warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("renderfleet: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("renderfleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
