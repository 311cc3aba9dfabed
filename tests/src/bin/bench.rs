//! `renderfleet-bench`: queue throughput, spawn throughput, dispatch latency and agent idle RSS,
//! measured against one fresh redis-server (AOF on, `appendfsync everysec`, noeviction) together
//! with `redis-benchmark` on that same server, so the figures are ratios taken in one run.
//!
//! Build and run: `cargo build --release --workspace --bins && target/release/renderfleet-bench`
//! (see docs/benchmarks.md).
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use renderfleet_shared::job::JobSpec;
use renderfleet_shared::Fleet;
use renderfleet_tests::{bin, Agent, AgentOpts, Site, TestRedis};

#[derive(Parser, Debug)]
#[command(about = "renderfleet benchmarks (see docs/benchmarks.md)")]
struct Args {
    /// No-op jobs for the queue-path figure
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Agent processes
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Capacity of each agent
    #[arg(long, default_value_t = 8)]
    capacity: u32,
    /// Jobs running /bin/true for the spawn-path figure
    #[arg(long, default_value_t = 2_000)]
    spawn_jobs: usize,
    /// Submit-to-running samples for the latency figure
    #[arg(long, default_value_t = 500)]
    latency_samples: usize,
    /// Concurrent submitters
    #[arg(long, default_value_t = 64)]
    submitters: usize,
    /// Which figures: all, queue (core issue), coordinator, http, docker or map
    #[arg(long, default_value = "all")]
    suite: String,
    /// Agent kills for the failure-detection figure
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Map suite: side of the sample world in regions (N x N)
    #[arg(long, default_value_t = 8)]
    map_regions: u32,
    /// Map suite: runs of each sharded configuration (the median is reported)
    #[arg(long, default_value_t = 3)]
    map_repeats: usize,
    /// Map suite: fastanvil's `anvil` binary (from owengage/fastnbt's tools crate), to time its
    /// `tiles` command on the same region files; skipped when unset
    #[arg(long)]
    anvil: Option<std::path::PathBuf>,
    /// Map suite: the palette (tar.gz) `anvil` needs
    #[arg(long)]
    anvil_palette: Option<std::path::PathBuf>,
}

fn redis_benchmark_set(port: u16) -> anyhow::Result<f64> {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "-n",
            "200000",
            "-t",
            "set",
            "-c",
            "50",
            "-P",
            "1",
        ])
        .output()
        .context("running redis-benchmark (apt-get install redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 95238.10 requests per second, p50=0.271 msec" (after \r-separated progress updates)
    let line = text
        .rsplit('\r')
        .find(|l| l.contains("SET:"))
        .unwrap_or(&text);
    let rps = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("unexpected redis-benchmark output: {text}"))?;
    Ok(rps)
}

async fn start_agents(
    redis: &TestRedis,
    ns: &str,
    site: &Site,
    n: usize,
    capacity: u32,
) -> anyhow::Result<Vec<Agent>> {
    let mut agents = Vec::new();
    for i in 0..n {
        let log = if std::env::var_os("BENCH_AGENT_LOG_INFO").is_some() {
            "info"
        } else {
            "warn"
        };
        let opts = AgentOpts {
            worker_id: format!("bench-{i}"),
            capacity,
            drain_timeout: "5s",
            extra: Vec::new(),
            log,
        };
        agents.push(Agent::start_ready(&redis.url(), ns, site, opts).await?);
    }
    Ok(agents)
}

async fn succeeded(fleet: &Fleet, agents: usize) -> anyhow::Result<u64> {
    let mut total = 0;
    for i in 0..agents {
        total += fleet
            .worker_stats(&format!("bench-{i}"))
            .await?
            .get("jobs_succeeded")
            .copied()
            .unwrap_or(0);
    }
    Ok(total)
}

async fn wait_done(
    fleet: &Fleet,
    agents: usize,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if succeeded(fleet, agents).await? >= n as u64 {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} jobs succeeded within {limit:?}",
                succeeded(fleet, agents).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Submit `n` jobs from `submitters` concurrent tasks sharing one multiplexed connection.
async fn submit_many(
    fleet: &Fleet,
    renderer: &str,
    n: usize,
    submitters: usize,
    tag: &str,
) -> anyhow::Result<()> {
    let profiles = fleet.profiles().await?;
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let fleet = fleet.clone();
        let profiles = profiles.clone();
        let renderer = renderer.to_owned();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut i = s;
            while i < n {
                let spec = JobSpec {
                    world: format!("{tag}{i}"),
                    renderer: renderer.clone(),
                    ..Default::default()
                };
                fleet.submit(&spec, &profiles).await?;
                i += submitters;
            }
            Ok::<_, renderfleet_shared::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn rss_kib(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.suite == "all" || a.suite == "queue" {
        queue_suite(&a).await?;
    }
    if a.suite == "all" || a.suite == "coordinator" {
        coordinator_suite(&a).await?;
    }
    if a.suite == "all" || a.suite == "http" {
        http_suite().await?;
    }
    if a.suite == "all" || a.suite == "docker" {
        docker_suite().await?;
    }
    if a.suite == "all" || a.suite == "map" {
        map_suite(&a).await?;
    }
    Ok(())
}

/// CPU seconds of process `pid` and its reaped children (utime + stime + cutime + cstime).
fn proc_cpu_secs(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    // Fields after the command: state is field 3; utime..cstime are fields 14..17.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11..15].iter().filter_map(|v| v.parse::<f64>().ok()).sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks / hz
}

async fn redis_cpu_secs(redis: &TestRedis) -> anyhow::Result<f64> {
    let mut c = redis.conn().await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut c).await?;
    let get = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(get("used_cpu_user:") + get("used_cpu_sys:"))
}

/// Timed run of a command; returns wall seconds and the children's CPU seconds.
fn timed(cmd: &mut Command) -> anyhow::Result<(f64, f64, String)> {
    let before = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let t = Instant::now();
    let out = cmd.output()?;
    let wall = t.elapsed().as_secs_f64();
    let after = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let secs = |r: &nix::sys::resource::Usage| {
        let (u, s) = (r.user_time(), r.system_time());
        u.tv_sec() as f64 + u.tv_usec() as f64 / 1e6 + s.tv_sec() as f64 + s.tv_usec() as f64 / 1e6
    };
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        wall,
        secs(&after) - secs(&before),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// One forced sharded render of the bench world on `agents` fresh agents: (wall s, agents' and
/// renderers' CPU s, Redis CPU s).
async fn sharded_run(
    redis: &TestRedis,
    site: &Site,
    agents: usize,
    rep: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let ns = format!("mapbench{agents}r{rep}");
    let fleet = redis.fleet(&ns).await?;
    let mut procs = Vec::new();
    for i in 0..agents {
        procs.push(
            Agent::start_ready(
                &redis.url(),
                &ns,
                site,
                AgentOpts::new(&format!("m{agents}r{rep}-{i}")).capacity(1),
            )
            .await?,
        );
    }
    let cpu0: f64 = procs.iter().map(|p| proc_cpu_secs(p.pid())).sum();
    let rcpu0 = redis_cpu_secs(redis).await?;
    let t = Instant::now();
    let out = renderfleet_tests::cli(
        &redis.url(),
        &ns,
        &[
            "submit",
            "--world",
            "bench",
            "--renderer",
            "builtin",
            "--param",
            "force=true",
        ],
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let job = loop {
        if let Some(j) = fleet.job(&id).await? {
            if j.state.is_final() {
                break j;
            }
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("sharded render did not finish in 10 min");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wall = t.elapsed().as_secs_f64();
    let cpu: f64 = procs.iter().map(|p| proc_cpu_secs(p.pid())).sum::<f64>() - cpu0;
    let rcpu = redis_cpu_secs(redis).await? - rcpu0;
    if job.state.as_str() != "succeeded" {
        bail!("sharded render ended {}: {:?}", job.state, job.error);
    }
    Ok((wall, cpu, rcpu))
}

/// The built-in renderer: one process, then a sharded render on 1, 2 and 3 agents, of the same
/// sample world; optionally fastanvil's `anvil tiles` on the same region files.
async fn map_suite(a: &Args) -> anyhow::Result<()> {
    let n = a.map_regions;
    let regions = f64::from(n * n);
    let site = Site::new(&[])?;
    let world = site.path().join("worlds").join("bench");
    let (gen, _, _) = timed(
        Command::new(bin("renderfleet"))
            .arg("sample-world")
            .arg(&world)
            .args(["--regions", &n.to_string(), "--seed", "1"]),
    )?;
    println!("map: sample world {n}x{n} = {regions} regions written in {gen:.1} s");

    // One process, one thread: the renderer's own cost per region (parse, draw, PNG).
    let solo_out = site.path().join("solo");
    let (wall, cpu, _) = timed(
        Command::new(bin("renderfleet-agent"))
            .args(["map", "render", "--threads", "1", "--force", "--world"])
            .arg(&world)
            .arg("--out")
            .arg(&solo_out),
    )?;
    println!(
        "map: one process, 1 thread: {:.2} s = {:.2} regions/s, {:.1} ms CPU per region",
        wall,
        regions / wall,
        cpu / regions * 1000.0
    );
    let (wall2, cpu2, _) = timed(
        Command::new(bin("renderfleet-agent"))
            .args(["map", "render", "--threads", "2", "--force", "--world"])
            .arg(&world)
            .arg("--out")
            .arg(&solo_out),
    )?;
    println!(
        "map: one process, 2 threads: {:.2} s = {:.2} regions/s, {:.1} ms CPU per region",
        wall2,
        regions / wall2,
        cpu2 / regions * 1000.0
    );

    if let (Some(anvil), Some(palette)) = (&a.anvil, &a.anvil_palette) {
        let out = site.path().join("anvil-tiles");
        std::fs::create_dir_all(&out)?;
        let (aw, acpu, _) = timed(
            Command::new(anvil)
                .arg("tiles")
                .arg(&world)
                .arg("--palette")
                .arg(palette)
                .arg("--out")
                .arg(&out)
                .arg("--calculate-heights")
                // Its default bounds leave out the last row and column of regions; these cover
                // the sample world (centred on 0,0) exactly.
                .args(["--size", &format!("{n},{n}"), "--offset", "0,0"])
                .env("RAYON_NUM_THREADS", "1")
                .env("RUST_LOG", "warn"),
        )?;
        let tiles = std::fs::read_dir(&out)?.count();
        println!(
            "map: fastanvil `anvil tiles`, 1 thread: {aw:.2} s for {tiles} tiles = {:.2} regions/s, {:.1} ms CPU per region; renderfleet / anvil time per region = {:.2}",
            f64::from(tiles as u32) / aw,
            acpu / f64::from(tiles as u32) * 1000.0,
            (wall / regions) / (aw / f64::from(tiles as u32))
        );
    }

    let redis = TestRedis::start()?;
    let mut base = f64::NAN;
    for agents in 1..=3usize {
        let mut runs = Vec::new();
        for rep in 0..a.map_repeats.max(1) {
            runs.push(sharded_run(&redis, &site, agents, rep).await?);
        }
        runs.sort_by(|x, y| x.0.total_cmp(&y.0));
        let walls: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.0)).collect();
        let (wall, cpu, rcpu) = runs[runs.len() / 2];
        let rate = regions / wall;
        if agents == 1 {
            base = rate;
        }
        println!(
            "map: sharded render, {agents} agent(s) x capacity 1: median {wall:.2} s of [{}] = {rate:.2} regions/s = {:.2}x one agent; CPU {:.1} ms/region (agents + renderers), Redis {:.2} ms/region",
            walls.join(", "),
            rate / base,
            cpu / regions * 1000.0,
            rcpu / regions * 1000.0
        );
    }

    // Planning's one script: fan a parent out into 10,000 shards.
    let ns = "mapfanout";
    let fleet = redis.fleet(ns).await?;
    fleet.ensure_groups().await?;
    let profiles = renderfleet_shared::renderer::Profiles::builtin();
    let spec = JobSpec {
        world: "bench".into(),
        renderer: "builtin".into(),
        ..Default::default()
    };
    let parent = fleet.submit(&spec, &profiles).await?;
    let (claims, _) = fleet.claim("fanout-bench", 1).await?;
    let claim = claims.first().context("no claim")?;
    let shards: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            (
                format!("r.{}.{}", i % 100, i / 100),
                format!(
                    "{{\"region\":\"{},{}\",\"force\":\"false\"}}",
                    i % 100,
                    i / 100
                ),
            )
        })
        .collect();
    let t = Instant::now();
    let n = fleet
        .fanout(&parent.id, claim.attempt, "fanout-bench", &shards)
        .await?
        .map_err(|e| anyhow::anyhow!("fanout refused: {e:?}"))?;
    let el = t.elapsed().as_secs_f64();
    println!(
        "map: fanout of {n} shards in one script: {:.0} ms = {:.1} us per shard",
        el * 1000.0,
        el * 1e6 / n as f64
    );
    Ok(())
}

/// Write `n` simulated workers' heartbeat keys directly (fresh for an hour).
async fn simulate_workers(fleet: &Fleet, n: usize) -> anyhow::Result<()> {
    let mut c = fleet.conn();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
    let now = secs * 1000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            let id = format!("sim-{i}");
            p.cmd("HSET")
                .arg(fleet.keys().worker(&id))
                .arg(
                    &[
                        ("id", id.clone()),
                        ("status", "healthy".into()),
                        ("running", (i % 3).to_string()),
                        ("capacity", "2".into()),
                        ("utilization", "0.5".into()),
                        ("memory_used", "10485760".into()),
                        ("memory_limit", "1073741824".into()),
                        ("started_at", now.to_string()),
                        ("last_heartbeat", (now + 3_600_000).to_string()),
                    ][..],
                )
                .ignore();
            p.zadd(fleet.keys().workers(), &id, now + 3_600_000)
                .ignore();
        }
        let _: () = p.query_async(&mut c).await?;
    }
    Ok(())
}

/// p99 latency (ms) and requests/s from `wrk --latency` output.
fn parse_wrk(text: &str) -> (f64, f64) {
    let ms = |v: &str| -> f64 {
        let v = v.trim();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().unwrap_or(f64::NAN)
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
        } else {
            f64::NAN
        }
    };
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%").map(ms))
        .unwrap_or(f64::NAN);
    let rps = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Requests/sec:")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(f64::NAN);
    (p99, rps)
}

/// The HTTP API under wrk with 1,000 simulated workers, and the tick's regularity meanwhile.
async fn http_suite() -> anyhow::Result<()> {
    let redis = TestRedis::start()?;
    let ns = "bench-http";
    let fleet = Fleet::connect(&redis.url(), ns).await?;
    fleet.ensure_groups().await?;
    simulate_workers(&fleet, 1000).await?;
    let _: () = redis::cmd("HSET")
        .arg(fleet.keys().config())
        .arg(
            &[
                ("min_workers", "0"),
                ("max_workers", "1000"),
                ("worker_ttl", "10m"),
            ][..],
        )
        .query_async(&mut fleet.conn())
        .await?;
    let site = Site::new(&[])?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _coord = renderfleet_tests::Coordinator::start(
        &redis.url(),
        ns,
        &site,
        "bench",
        "none",
        &["--http", &addr, "--http-public-reads"],
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rows = Vec::new();
    for path in ["/api/scaling/status", "/metrics"] {
        let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut fleet.conn()).await?;
        let out = Command::new("wrk")
            .args([
                "-t2",
                "-c16",
                "-d8s",
                "--latency",
                &format!("http://{addr}{path}"),
            ])
            .output()
            .context("running wrk (apt-get install wrk)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (p99, rps) = parse_wrk(&text);
        // Decision events the leader wrote during the load (one per 250ms tick expected).
        let rows_ev: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(fleet.keys().events())
            .arg(secs * 1000)
            .arg("+")
            .query_async(&mut fleet.conn())
            .await?;
        let times: Vec<u64> = rows_ev
            .iter()
            .filter(|(_, f)| f.iter().any(|(k, v)| k == "type" && v == "decision"))
            .filter_map(|(id, _)| id.split('-').next()?.parse().ok())
            .collect();
        let max_gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        println!("wrk {path} (1,000 simulated workers, 16 connections, 8s): p99 {p99:.1} ms, {rps:.0} req/s; ticks meanwhile: {}, largest gap {max_gap} ms (tick 250 ms)", times.len());
        rows.push((path, p99, rps, times.len(), max_gap));
    }
    println!();
    println!("| endpoint | p99 | req/s | ticks during the run | largest gap between ticks |");
    println!("|---|---|---|---|---|");
    for (path, p99, rps, n, gap) in rows {
        println!("| `{path}` | {p99:.1} ms | {rps:.0} | {n} | {gap} ms |");
    }
    Ok(())
}

/// `docker stats` memory of a container, in MiB.
fn container_mem_mib(name: &str) -> anyhow::Result<f64> {
    let out = renderfleet_tests::stack::docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        name,
    ]);
    let used = out.split('/').next().unwrap_or("").trim().to_owned();
    let (num, unit) = used.split_at(
        used.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(used.len()),
    );
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("docker stats said {out:?}"))?;
    Ok(match unit {
        "GiB" => n * 1024.0,
        "KiB" => n / 1024.0,
        "B" => n / 1024.0 / 1024.0,
        _ => n,
    })
}

/// Scale-up reaction time of the docker backend, and agent container memory.
async fn docker_suite() -> anyhow::Result<()> {
    use renderfleet_tests::stack::Stack;
    let worlds: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let stack = Stack::new(
        "bench",
        &worlds.iter().map(String::as_str).collect::<Vec<_>>(),
        "docker",
    )?;
    stack.up(&["redis"])?;
    let admin = stack.url("admin");
    renderfleet_tests::cli_ok(
        &admin,
        &stack.ns,
        &[
            "config",
            "set",
            "min_workers=1",
            "max_workers=2",
            "heartbeat_interval=500ms",
            "worker_ttl=2s",
            "scale_up_cooldown=0s",
            "scale_down_cooldown=1s",
            "stabilization_window=2s",
            "drain_timeout=5s",
        ],
    );
    stack.up(&["redis", "coordinator"])?;
    let fleet = Fleet::connect(&admin, &stack.ns).await?;
    let profiles = loop {
        if fleet.workers().await?.len() == 1 {
            break fleet.profiles().await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let worker = fleet.workers().await?[0].id.clone();
    let idle = container_mem_mib(&worker)?;

    let mut reactions = Vec::new();
    let mut busy = f64::NAN;
    for round in 0..5 {
        // One worker, idle.
        let deadline = Instant::now() + Duration::from_secs(120);
        while fleet.workers().await?.len() != 1 || fleet.workers().await?[0].running > 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "fleet did not settle back to one idle worker"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before: Vec<String> = fleet.workers().await?.into_iter().map(|w| w.id).collect();
        let mut ids = Vec::new();
        for w in &worlds {
            let spec = JobSpec {
                world: w.clone(),
                renderer: "fake".into(),
                params: [("seconds".to_string(), "30".to_string())].into(),
                ..Default::default()
            };
            ids.push(fleet.submit(&spec, &profiles).await?.id);
        }
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut fleet.conn()).await?;
        let crossed = secs * 1000 + micros / 1000;
        let new = loop {
            if let Some(w) = fleet
                .workers()
                .await?
                .into_iter()
                .find(|w| !before.contains(&w.id))
            {
                break w;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no new worker within the deadline"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Its first heartbeat in the heartbeat stream (server time).
        let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(fleet.keys().heartbeats())
            .arg(crossed)
            .arg("+")
            .query_async(&mut fleet.conn())
            .await?;
        let first = rows
            .iter()
            .find(|(_, f)| f.iter().any(|(k, v)| k == "worker" && *v == new.id))
            .and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok())
            .unwrap_or(new.last_heartbeat_ms);
        reactions.push(first.saturating_sub(crossed) as f64);
        if round == 0 {
            busy = container_mem_mib(&worker)?;
        }
        for id in &ids {
            let _ = fleet.cancel(id).await;
        }
    }
    reactions.sort_by(|x, y| x.total_cmp(y));
    let med = percentile(&reactions, 50.0);
    println!("docker backend scale-up reaction (backlog over threshold -> new container's first heartbeat), 5 runs: median {med:.0} ms, all {reactions:?}");
    println!("agent container memory (docker stats): idle {idle:.1} MiB (target < 20), supervising a render {busy:.1} MiB");
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| scale-up reaction, median of 5 | {med:.0} ms |");
    println!("| agent container memory idle | {idle:.1} MiB (target < 20 MiB) |");
    println!("| agent container memory supervising a render | {busy:.1} MiB |");
    Ok(())
}

/// Coordinator tick cost against fleet size, and failure detection to job running elsewhere.
async fn coordinator_suite(a: &Args) -> anyhow::Result<()> {
    use renderfleet_coordinator::backend::none::NoneBackend;
    use renderfleet_coordinator::coordinator::{Coordinator, CoordinatorConfig};
    let redis = TestRedis::start_with(None, &["--appendonly", "yes", "--appendfsync", "everysec"])?;
    let mut rows = Vec::new();
    for n in [10usize, 100, 1_000, 10_000] {
        let ns = format!("bench-tick-{n}");
        let fleet = Fleet::connect(&redis.url(), &ns).await?;
        fleet.ensure_groups().await?;
        // Simulated workers: heartbeat keys written directly, as agents would.
        simulate_workers(&fleet, n).await?;
        let mut c = fleet.conn();
        let _: () = redis::cmd("HSET")
            .arg(fleet.keys().config())
            .arg(
                &[
                    ("min_workers", "0"),
                    ("max_workers", "1000"),
                    ("worker_ttl", "10m"),
                ][..],
            )
            .query_async(&mut c)
            .await?;
        let cfg = CoordinatorConfig {
            redis_url: redis.url(),
            namespace: ns.clone(),
            id: "bench".into(),
            tick: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            http: None,
        };
        let mut coord = Coordinator::new(fleet.clone(), cfg);
        let mut backend = NoneBackend;
        coord.tick(&mut backend).await?; // take the lease, load scripts
        let ticks = if n >= 10_000 { 10 } else { 30 };
        let before = fleet.round_trips();
        let t0 = Instant::now();
        for _ in 0..ticks {
            coord.tick(&mut backend).await?;
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0 / ticks as f64;
        let trips = (fleet.round_trips() - before) as f64 / ticks as f64;
        println!(
            "coordinator tick, {n} simulated workers: {ms:.2} ms/tick, {trips:.1} round trips/tick"
        );
        rows.push((n, ms, trips));
    }

    // Failure detection: kill -9 an agent mid-render, time until the job runs elsewhere.
    let ns = "bench-detect";
    let site = Site::new(&["w"])?;
    let fleet = Fleet::connect(&redis.url(), ns).await?;
    fleet.ensure_groups().await?;
    let _: () = redis::cmd("HSET")
        .arg(fleet.keys().config())
        .arg(
            &[
                ("min_workers", "0"),
                ("heartbeat_interval", "200ms"),
                ("worker_ttl", "1s"),
            ][..],
        )
        .query_async(&mut fleet.conn())
        .await?;
    let _coord =
        renderfleet_tests::Coordinator::start(&redis.url(), ns, &site, "bench", "none", &[])?;
    let _b = Agent::start_ready(&redis.url(), ns, &site, AgentOpts::new("b").capacity(1)).await?;
    let profiles = fleet.profiles().await?;
    let mut since_kill = Vec::new();
    let mut since_beat = Vec::new();
    for k in 0..a.kills {
        let mut victim = Agent::start_ready(
            &redis.url(),
            ns,
            &site,
            AgentOpts::new(&format!("victim-{k}")).capacity(1),
        )
        .await?;
        // Keep b busy-free: the job goes to the victim when b is... b is idle, so pin by timing:
        // submit, wait until it runs on the victim (retry with a fresh job otherwise).
        let id = loop {
            let spec = JobSpec {
                world: "w".into(),
                renderer: "fake".into(),
                params: [("seconds".to_string(), "30".to_string())].into(),
                ..Default::default()
            };
            let id = fleet.submit(&spec, &profiles).await?.id;
            let j = loop {
                if let Some(j) = fleet
                    .job(&id)
                    .await?
                    .filter(|j| j.state.as_str() == "running")
                {
                    break j;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            if j.worker.as_deref() == Some(victim.worker_id.as_str()) {
                break id;
            }
            fleet.cancel(&id).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let last_beat = fleet
            .worker(&victim.worker_id)
            .await?
            .map(|w| w.last_heartbeat_ms)
            .unwrap_or(0);
        let killed = renderfleet_shared::time::now_ms();
        victim.kill9();
        let started = loop {
            if let Some(j) = fleet
                .job(&id)
                .await?
                .filter(|j| j.attempt == 2 && j.state.as_str() == "running")
            {
                break j.started_at_ms.unwrap_or(0);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        since_kill.push(started.saturating_sub(killed) as f64);
        since_beat.push(started.saturating_sub(last_beat) as f64);
        fleet.cancel(&id).await?;
        // Wait until b is free again.
        while fleet
            .job(&id)
            .await?
            .is_some_and(|j| j.finished_at_ms.is_none())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    since_kill.sort_by(|x, y| x.total_cmp(y));
    since_beat.sort_by(|x, y| x.total_cmp(y));
    let (k50, kmax) = (
        percentile(&since_kill, 50.0),
        since_kill.last().copied().unwrap_or(f64::NAN),
    );
    let (b50, bmax) = (
        percentile(&since_beat, 50.0),
        since_beat.last().copied().unwrap_or(f64::NAN),
    );
    println!("failure detection over {} kills (worker_ttl 1s, tick 250ms, heartbeat 200ms): kill->running elsewhere median {k50:.0} ms, max {kmax:.0} ms; last heartbeat->running elsewhere median {b50:.0} ms, max {bmax:.0} ms", a.kills);
    println!();
    println!("| simulated workers | ms per tick | round trips per tick |");
    println!("|---|---|---|");
    for (n, ms, trips) in rows {
        println!("| {n} | {ms:.2} | {trips:.1} |");
    }
    println!("| failure detection (ms) | median | max |");
    println!("| kill -> running elsewhere | {k50:.0} | {kmax:.0} |");
    println!("| last heartbeat -> running elsewhere (target <= worker_ttl + tick = 1250) | {b50:.0} | {bmax:.0} |");
    Ok(())
}

async fn queue_suite(a: &Args) -> anyhow::Result<()> {
    println!(
        "renderfleet-bench: agent binary {}",
        bin("renderfleet-agent").display()
    );
    let redis = TestRedis::start_with(None, &["--appendonly", "yes", "--appendfsync", "everysec"])?;
    let set = redis_benchmark_set(redis.port)?;
    println!("redis-benchmark SET (50 clients, no pipelining): {set:.0} ops/s");
    let n_worlds = a.spawn_jobs.max(1);
    let worlds: Vec<String> = (0..n_worlds).map(|i| format!("s{i}")).collect();
    let site = Site::new(&worlds.iter().map(String::as_str).collect::<Vec<_>>())?;

    // 1. Queue path, end to end: agents idle and ready, then submit everything concurrently.
    let ns = "bench-queue";
    let fleet = Fleet::connect(&redis.url(), ns).await?;
    fleet.ensure_groups().await?;
    let agents = start_agents(&redis, ns, &site, a.agents, a.capacity).await?;
    let t0 = Instant::now();
    submit_many(&fleet, "noop", a.jobs, a.submitters, "q").await?;
    let t_submit = t0.elapsed();
    let t_done = wait_done(&fleet, a.agents, a.jobs, Duration::from_secs(600)).await? - t0;
    drop(agents);
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut fleet.conn())
        .await?;
    if let Some(line) = stats.lines().find(|l| l.starts_with("cmdstat_evalsha:")) {
        println!("redis script cost so far: {line}");
    }
    let e2e = a.jobs as f64 / t_done.as_secs_f64();
    println!(
        "queue path (noop, {} agents x {}): {} jobs submitted in {:.2}s ({:.0}/s), all succeeded after {:.2}s: {e2e:.0} jobs/s = {:.3} x SET",
        a.agents, a.capacity, a.jobs, t_submit.as_secs_f64(), a.jobs as f64 / t_submit.as_secs_f64(), t_done.as_secs_f64(), e2e / set
    );

    // 2. Queue path, drain only: the backlog is queued first, then the agents start.
    let ns = "bench-drain";
    let fleet = Fleet::connect(&redis.url(), ns).await?;
    fleet.ensure_groups().await?;
    submit_many(&fleet, "noop", a.jobs, a.submitters, "d").await?;
    let t0 = Instant::now();
    let agents = start_agents(&redis, ns, &site, a.agents, a.capacity).await?;
    let t_done = wait_done(&fleet, a.agents, a.jobs, Duration::from_secs(600)).await? - t0;
    drop(agents);
    let drain = a.jobs as f64 / t_done.as_secs_f64();
    println!("queue path, pre-queued backlog: {} jobs in {:.2}s (agent start included): {drain:.0} jobs/s = {:.3} x SET", a.jobs, t_done.as_secs_f64(), drain / set);

    // 3. Spawn path: a profile running /bin/true.
    let ns = "bench-spawn";
    let fleet = Fleet::connect(&redis.url(), ns).await?;
    fleet.ensure_groups().await?;
    let agents = start_agents(&redis, ns, &site, a.agents, a.capacity).await?;
    let t0 = Instant::now();
    submit_many(&fleet, "true", a.spawn_jobs, a.submitters, "s").await?;
    let t_done = wait_done(&fleet, a.agents, a.spawn_jobs, Duration::from_secs(600)).await? - t0;
    drop(agents);
    let spawn = a.spawn_jobs as f64 / t_done.as_secs_f64();
    println!(
        "spawn path (/bin/true): {} jobs in {:.2}s: {spawn:.0} jobs/s = {:.4} x SET",
        a.spawn_jobs,
        t_done.as_secs_f64(),
        spawn / set
    );

    // 4. Dispatch latency: idle agents blocked on the streams; one job at a time.
    let ns = "bench-latency";
    let fleet = Fleet::connect(&redis.url(), ns).await?;
    fleet.ensure_groups().await?;
    let agents = start_agents(&redis, ns, &site, a.agents, a.capacity).await?;
    let profiles = fleet.profiles().await?;
    let mut lat = Vec::with_capacity(a.latency_samples);
    let mut conn = fleet.conn();
    for i in 0..a.latency_samples {
        let spec = JobSpec {
            world: format!("l{i}"),
            renderer: "noop".into(),
            ..Default::default()
        };
        let id = fleet.submit(&spec, &profiles).await?.id;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (state, created, started): (Option<String>, Option<u64>, Option<u64>) =
                redis::cmd("HMGET")
                    .arg(fleet.keys().job(&id))
                    .arg("state")
                    .arg("created_us")
                    .arg("started_us")
                    .query_async(&mut conn)
                    .await?;
            if state.as_deref() == Some("succeeded") {
                let (c, s) = (
                    created.context("created_us")?,
                    started.context("started_us")?,
                );
                lat.push(s.saturating_sub(c) as f64 / 1000.0);
                break;
            }
            if Instant::now() > deadline {
                bail!("latency job {id} did not finish");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        // Let the agents go back to their blocking read.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    drop(agents);
    lat.sort_by(|x, y| x.total_cmp(y));
    let (p50, p99, max) = (
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    println!("dispatch latency submit->running ({} samples, idle agents): p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms", lat.len());

    // 5. Agent idle RSS.
    let ns = "bench-rss";
    let agents = start_agents(&redis, ns, &site, 1, 2).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = rss_kib(agents[0].pid())?;
    println!("agent idle RSS: {:.1} MiB", rss as f64 / 1024.0);
    drop(agents);

    println!();
    println!("| figure | value | ratio / target |");
    println!("|---|---|---|");
    println!("| redis-benchmark SET, 50 clients, -P 1 | {set:.0} ops/s | 1.00 (baseline) |");
    println!("| queue path end to end ({} noop jobs, {}x{}) | {e2e:.0} jobs/s | {:.3} x SET (target >= 0.30; BullMQ 0.21) |", a.jobs, a.agents, a.capacity, e2e / set);
    println!(
        "| queue path, pre-queued backlog | {drain:.0} jobs/s | {:.3} x SET |",
        drain / set
    );
    println!(
        "| spawn path (/bin/true) | {spawn:.0} jobs/s | {:.4} x SET |",
        spawn / set
    );
    println!("| dispatch latency p50 / p99 / max | {p50:.3} / {p99:.3} / {max:.3} ms | p99 target < 2 ms (BullMQ p50 1.3, p99 3.2) |");
    println!(
        "| agent idle RSS | {:.1} MiB | target < 15 MiB |",
        rss as f64 / 1024.0
    );
    Ok(())
}
