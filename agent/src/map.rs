//! `renderfleet-agent map ...`: the built-in renderer's steps as child processes of the agent.
//!
//! The agent runs a `builtin` shard as `renderfleet-agent map region ...` and a sharded render's
//! final step as `renderfleet-agent map pyramid ...`, through the same supervision as any external
//! renderer (own process group, log capture, timeout, cancellation, kill on lease loss), and keeps
//! its async runtime free of CPU-bound work. `map render` draws a whole world in one process, for
//! operators without a fleet and as the benchmark's single-process baseline.
//!
//! Exit codes: 0 done; 1 an I/O problem worth retrying; 3 bad input (a corrupt region file), which
//! the agent records as a final failure: retrying the same bytes cannot help.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use renderfleet_map::output::{self, RegionFailure};
use renderfleet_map::{Action, RegionId};

/// Exit code for input that cannot render (not worth a retry).
pub const EXIT_BAD_INPUT: u8 = 3;

#[derive(Subcommand, Debug)]
pub enum MapCommand {
    /// Draw one region's tile (what one shard of a sharded render runs)
    Region {
        /// The world's directory (holding `region/`)
        #[arg(long)]
        world: PathBuf,
        /// The map's output directory
        #[arg(long)]
        out: PathBuf,
        /// Region coordinates `X,Z` (file `r.X.Z.mca`)
        #[arg(long, allow_hyphen_values = true)]
        region: String,
    },
    /// Build the zoom pyramid, index and viewer for a plan (a sharded render's final step)
    Pyramid {
        #[arg(long)]
        out: PathBuf,
        /// The plan written when the render was sharded
        #[arg(long)]
        plan: PathBuf,
        /// Map name shown by the viewer
        #[arg(long)]
        name: String,
    },
    /// Render a whole world in this process: plan, changed regions, pyramid (no Redis)
    Render {
        #[arg(long)]
        world: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Map name shown by the viewer [default: the world directory's name]
        #[arg(long)]
        name: Option<String>,
        /// Redraw every region, changed or not
        #[arg(long)]
        force: bool,
        /// Regions drawn at once [default: the number of cores]
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// Run a map command; prints one summary line per step, errors as one line on stderr.
pub fn run(cmd: MapCommand) -> ExitCode {
    match cmd {
        MapCommand::Region { world, out, region } => {
            let Some(id) = RegionId::parse(&region) else {
                eprintln!("renderfleet-agent: region '{region}' is not X,Z");
                return ExitCode::from(EXIT_BAD_INPUT);
            };
            region_step(&world, &out, id)
        }
        MapCommand::Pyramid { out, plan, name } => {
            let plan = match output::read_plan(&plan) {
                Ok(p) => p,
                Err(e @ output::OutputError::Io { .. }) => {
                    eprintln!("renderfleet-agent: cannot read the plan: {e}");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("renderfleet-agent: bad plan: {e}");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            };
            pyramid_step(&out, &name, &plan)
        }
        MapCommand::Render {
            world,
            out,
            name,
            force,
            threads,
        } => render_all(&world, &out, name, force, threads),
    }
}

fn region_step(world: &Path, out: &Path, id: RegionId) -> ExitCode {
    let t = Instant::now();
    match output::render_region_to(world, out, id) {
        Ok(r) => {
            println!(
                "{id}: {} chunks, {} unknown-block pixels, {} ms",
                r.chunks,
                r.unknown.values().sum::<u64>(),
                t.elapsed().as_millis()
            );
            if !r.unknown.is_empty() {
                let names: Vec<String> =
                    r.unknown.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{id}: unknown blocks: {}", names.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(e @ RegionFailure::Io(_)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn pyramid_step(out: &Path, name: &str, plan: &output::Plan) -> ExitCode {
    let t = Instant::now();
    match output::build_pyramid(out, name, plan) {
        Ok(r) => {
            println!(
                "zoom levels 1..{}: {} tiles redrawn {:?}, {} kept; {} regions on the map; {} ms",
                r.max_level,
                r.written,
                r.per_level,
                r.kept,
                r.regions,
                t.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("building the zoom levels: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render_all(
    world: &Path,
    out: &Path,
    name: Option<String>,
    force: bool,
    threads: Option<usize>,
) -> ExitCode {
    let name = name.unwrap_or_else(|| {
        world
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "map".into())
    });
    let t = Instant::now();
    let plan = match output::plan(world, out, force) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("renderfleet-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let todo: Vec<RegionId> = plan.to_render().collect();
    println!(
        "{} regions: {} to draw, {} unchanged, {} empty files",
        plan.regions.len(),
        todo.len(),
        plan.count(Action::Skip),
        plan.count(Action::Empty)
    );
    let threads = threads.unwrap_or_else(renderfleet_map::cores);
    let failures = renderfleet_map::for_each_parallel(&todo, threads, |&id| {
        output::render_region_to(world, out, id)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    for f in &failures {
        eprintln!("{f}");
    }
    let code = pyramid_step(out, &name, &plan);
    println!(
        "drew {} regions in {:.2} s ({} failed)",
        todo.len() - failures.len(),
        t.elapsed().as_secs_f64(),
        failures.len()
    );
    if !failures.is_empty() {
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    code
}
