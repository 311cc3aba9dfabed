//! Sharded world renders with the built-in renderer: one world spread over several agents through
//! the job queue, surviving `kill -9`, identical to a single-agent render, incremental, cancellable,
//! reporting corrupt regions; and the viewer in headless Chromium.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use renderfleet_map::sample::{self, Terrain};
use renderfleet_map::RegionId;
use renderfleet_shared::job::{JobRecord, JobState};
use renderfleet_shared::Fleet;
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(60);

/// Write a sample world of `n` x `n` regions into `site`'s worlds through the CLI.
fn site_world(site: &Site, world: &str, n: u32, seed: u64) -> PathBuf {
    let dir = site.path().join("worlds").join(world);
    sample_world(&dir, n, seed);
    dir
}

fn submit(redis: &TestRedis, ns: &str, world: &str, extra: &[&str]) -> String {
    let mut args = vec!["submit", "--world", world, "--renderer", "builtin"];
    args.extend_from_slice(extra);
    cli_ok(&redis.url(), ns, &args)
}

async fn wait_final(fleet: &Fleet, id: &str) -> JobRecord {
    wait_for(T, &format!("job {id} to end"), || async {
        fleet
            .job(id)
            .await
            .ok()
            .flatten()
            .filter(|j| j.state.is_final())
    })
    .await
}

async fn shard_records(fleet: &Fleet, parent: &str) -> Vec<JobRecord> {
    let mut out = Vec::new();
    for id in fleet.shards(parent).await.unwrap() {
        out.push(fleet.job(&id).await.unwrap().unwrap());
    }
    out
}

/// Every file of the rendered map (tiles of all levels, index, viewer): path -> bytes.
fn map_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, acc: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, acc);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                acc.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut acc = BTreeMap::new();
    walk(out, out, &mut acc);
    acc
}

fn tile_times(out: &Path) -> BTreeMap<String, SystemTime> {
    map_files(out)
        .keys()
        .filter(|k| k.starts_with("tiles/"))
        .map(|k| {
            let t = std::fs::metadata(out.join(k)).unwrap().modified().unwrap();
            (k.clone(), t)
        })
        .collect()
}

#[tokio::test]
async fn three_agents_with_a_kill9_render_the_same_bytes_as_one_agent() {
    let redis = TestRedis::start().unwrap();
    let fleet_ns = ns("shard3");
    let solo_ns = ns("shard1");
    let site = Site::new(&[]).unwrap();
    let solo_site = Site::new(&[]).unwrap();
    site_world(&site, "w", 4, 21);
    site_world(&solo_site, "w", 4, 21);
    let fleet = redis.fleet(&fleet_ns).await.unwrap();
    let solo_fleet = redis.fleet(&solo_ns).await.unwrap();
    cli_ok(
        &redis.url(),
        &fleet_ns,
        &[
            "config",
            "set",
            "min_workers=0",
            "heartbeat_interval=200ms",
            "worker_ttl=1s",
        ],
    );
    let _coord = Coordinator::start(&redis.url(), &fleet_ns, &site, "c1", "none", &[]).unwrap();
    let mut agents = Vec::new();
    for id in ["a1", "a2", "a3"] {
        agents.push(
            Agent::start_ready(&redis.url(), &fleet_ns, &site, AgentOpts::new(id))
                .await
                .unwrap(),
        );
    }
    let _solo = Agent::start_ready(&redis.url(), &solo_ns, &solo_site, AgentOpts::new("solo"))
        .await
        .unwrap();

    let id = submit(&redis, &fleet_ns, "w", &[]);
    let solo_id = submit(&redis, &solo_ns, "w", &[]);

    // Pull the plug on a2 while it renders a shard (its renderer process has started).
    let victim = wait_for(T, "a shard rendering on a2", || async {
        for j in shard_records(&fleet, &id).await {
            if j.state == JobState::Running && j.worker.as_deref() == Some("a2") {
                let mut c = redis.conn().await.ok()?;
                let pid: Option<String> =
                    redis::AsyncCommands::hget(&mut c, fleet.keys().job(&j.id), "pid")
                        .await
                        .ok()?;
                if pid.is_some_and(|p| !p.is_empty()) {
                    return Some(j.id);
                }
            }
        }
        None
    })
    .await;
    agents[1].kill9();
    let at_kill = fleet.job(&victim).await.unwrap().unwrap();

    let parent = wait_final(&fleet, &id).await;
    assert_eq!(parent.state, JobState::Succeeded, "{parent:?}");
    // The render's start is its planning, before any shard started.
    let first_shard = shard_records(&fleet, &id)
        .await
        .iter()
        .filter_map(|s| s.started_at_ms)
        .min()
        .unwrap();
    assert!(parent.started_at_ms.unwrap() <= first_shard);
    let counts = parent.shards.clone().unwrap();
    assert_eq!((counts.total, counts.done, counts.failed), (16, 16, 0));
    // Every region is one shard, and every shard succeeded.
    let shards = shard_records(&fleet, &id).await;
    assert_eq!(shards.len(), 16);
    let mut regions: Vec<String> = shards.iter().map(|s| s.shard.clone().unwrap()).collect();
    regions.sort();
    regions.dedup();
    assert_eq!(regions.len(), 16);
    assert!(shards.iter().all(|s| s.state == JobState::Succeeded));
    assert!(shards
        .iter()
        .all(|s| s.parent.as_deref() == Some(id.as_str())));
    // The shard that was rendering on a2 was handed to another agent.
    let v = fleet.job(&victim).await.unwrap().unwrap();
    if at_kill.state == JobState::Running {
        assert!(v.attempt >= 2, "{v:?}");
        assert_ne!(v.worker.as_deref(), Some("a2"));
    }
    // The work was spread: more than one agent rendered shards.
    let workers: std::collections::BTreeSet<_> =
        shards.iter().filter_map(|s| s.worker.clone()).collect();
    assert!(workers.len() >= 2, "{workers:?}");

    let solo = wait_final(&solo_fleet, &solo_id).await;
    assert_eq!(solo.state, JobState::Succeeded, "{solo:?}");
    let ours = map_files(&site.output("w", "builtin"));
    let theirs = map_files(&solo_site.output("w", "builtin"));
    let tiles0 = ours.keys().filter(|k| k.starts_with("tiles/0/")).count();
    assert_eq!(tiles0, 16);
    assert_eq!(ours.keys().filter(|k| k.starts_with("tiles/1/")).count(), 4);
    assert!(ours.contains_key("index.html") && ours.contains_key("map.js"));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (k, v) in &ours {
        assert!(v == &theirs[k], "{k} differs from the single-agent render");
    }
}

#[tokio::test]
async fn rerender_draws_only_changed_regions_and_their_ancestors() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("incr");
    let site = Site::new(&[]).unwrap();
    let world = site_world(&site, "w", 4, 5);
    let fleet = redis.fleet(&ns).await.unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let first = submit(&redis, &ns, "w", &[]);
    assert_eq!(wait_final(&fleet, &first).await.state, JobState::Succeeded);
    let out = site.output("w", "builtin");
    let files0 = map_files(&out);
    let times0 = tile_times(&out);
    assert_eq!(times0.len(), 20);

    // Nothing changed: no shards, no tile rewritten.
    let second = submit(&redis, &ns, "w", &[]);
    let j = wait_final(&fleet, &second).await;
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.shards.unwrap().total, 0);
    assert_eq!(tile_times(&out), times0);

    // One region changes: one shard; that tile and its ancestor are the only ones redrawn.
    sample::write_sample_region(&world, Terrain { seed: 99 }, RegionId { x: 1, z: 1 }).unwrap();
    let third = submit(&redis, &ns, "w", &[]);
    let j = wait_final(&fleet, &third).await;
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.shards.unwrap().total, 1);
    let shards = shard_records(&fleet, &third).await;
    assert_eq!(shards[0].shard.as_deref(), Some("r.1.1"));
    let times = tile_times(&out);
    let rewritten: Vec<&str> = times
        .iter()
        .filter(|(k, t)| times0[*k] != **t)
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(rewritten, vec!["tiles/0/1_1.png", "tiles/1/0_0.png"]);
    let files = map_files(&out);
    assert_ne!(files["tiles/0/1_1.png"], files0["tiles/0/1_1.png"]);
    assert_eq!(files["tiles/0/0_0.png"], files0["tiles/0/0_0.png"]);

    // force=true redraws everything.
    let fourth = submit(&redis, &ns, "w", &["--param", "force=true"]);
    let j = wait_final(&fleet, &fourth).await;
    assert_eq!(j.shards.unwrap().total, 16);
}

#[tokio::test]
async fn corrupt_regions_are_reported_and_the_rest_is_drawn() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("corrupt");
    let site = Site::new(&[]).unwrap();
    let world = site_world(&site, "w", 2, 8); // regions -1..=0 on both axes
    let region = |x: i32, z: i32| world.join("region").join(format!("r.{x}.{z}.mca"));
    // Truncated inside its header.
    let bytes = std::fs::read(region(-1, -1)).unwrap();
    std::fs::write(region(-1, -1), &bytes[..5000]).unwrap();
    // One chunk of bad NBT.
    let terrain = Terrain { seed: 8 };
    let mut chunks = terrain.region_chunks(RegionId { x: 0, z: -1 }).unwrap();
    chunks[4 * 32 + 3].1 = b"\x0a\x00\x00\x03\x00\x04junk".to_vec();
    sample::write_region_file(&region(0, -1), &chunks).unwrap();
    // An empty file, as the game leaves behind.
    std::fs::write(region(3, 3), b"").unwrap();

    let fleet = redis.fleet(&ns).await.unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let id = submit(&redis, &ns, "w", &[]);
    let parent = wait_final(&fleet, &id).await;
    assert_eq!(parent.state, JobState::Dead, "{parent:?}");
    let err = parent.error.clone().unwrap();
    assert!(
        err.starts_with("2 of 4 shards failed (first: shard r."),
        "{err}"
    );
    assert!(err.ends_with("the rest are in the output"), "{err}");
    let by_region: BTreeMap<String, JobRecord> = shard_records(&fleet, &id)
        .await
        .into_iter()
        .map(|s| (s.shard.clone().unwrap(), s))
        .collect();
    assert_eq!(by_region.len(), 4, "the empty file is not a shard");
    let trunc = &by_region["r.-1.-1"];
    assert_eq!(trunc.state, JobState::Dead);
    assert_eq!(trunc.attempt, 1, "bad input is not retried");
    assert!(
        trunc.error.as_deref().unwrap().ends_with(
            "r.-1.-1: truncated region file: 5000 bytes, shorter than its 8192-byte header"
        ),
        "{:?}",
        trunc.error
    );
    let bad = &by_region["r.0.-1"];
    assert_eq!(bad.state, JobState::Dead);
    assert!(
        bad.error
            .as_deref()
            .unwrap()
            .contains("r.0.-1: 1 of 1024 chunks unreadable: chunk 3,4: bad NBT"),
        "{:?}",
        bad.error
    );
    assert_eq!(by_region["r.-1.0"].state, JobState::Succeeded);
    assert_eq!(by_region["r.0.0"].state, JobState::Succeeded);
    // The parent's log names the empty file and each failed shard.
    let log = fleet
        .job_with_log(&id)
        .await
        .unwrap()
        .unwrap()
        .log
        .join("\n");
    assert!(log.contains("r.3.3: empty file (0 bytes)"), "{log}");
    assert!(log.contains("shard r.-1.-1 dead"), "{log}");
    // The map holds what could be drawn: three tiles (the bad-chunk region minus one chunk).
    let files = map_files(&site.output("w", "builtin"));
    let tiles0: Vec<&String> = files.keys().filter(|k| k.starts_with("tiles/0/")).collect();
    assert_eq!(
        tiles0,
        vec!["tiles/0/-1_0.png", "tiles/0/0_-1.png", "tiles/0/0_0.png"]
    );
    assert!(files.contains_key("index.html"));

    // Fixing the file and retrying the parent redraws only the regions that failed.
    sample::write_sample_region(&world, terrain, RegionId { x: -1, z: -1 }).unwrap();
    sample::write_sample_region(&world, terrain, RegionId { x: 0, z: -1 }).unwrap();
    cli_ok(&redis.url(), &ns, &["retry", &id]);
    let parent = wait_for(T, "retried parent to succeed", || async {
        fleet
            .job(&id)
            .await
            .ok()
            .flatten()
            .filter(|j| j.state == JobState::Succeeded)
    })
    .await;
    assert_eq!(parent.shards.unwrap().total, 2);
}

#[tokio::test]
async fn cancelling_a_sharded_render_stops_its_shards_and_frees_the_world() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("shardcancel");
    let site = Site::new(&[]).unwrap();
    site_world(&site, "w", 6, 3);
    let fleet = redis.fleet(&ns).await.unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1").capacity(1))
        .await
        .unwrap();
    let id = submit(&redis, &ns, "w", &[]);
    // A second render of the same world, queued behind the first one's shards.
    let next = submit(&redis, &ns, "w", &[]);
    wait_for(T, "some shards done", || async {
        let j = fleet.job(&id).await.ok()??;
        (j.shards?.done >= 3).then_some(())
    })
    .await;
    // The second render has not started: the world is taken.
    let waiting = fleet.job(&next).await.unwrap().unwrap();
    assert_eq!(waiting.state, JobState::Queued, "{waiting:?}");
    cli_ok(&redis.url(), &ns, &["cancel", &id]);
    assert_eq!(
        fleet.job(&id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    // Every shard ends (queued ones cancelled at once, the running one once its renderer stops).
    wait_for(T, "all shards final", || async {
        let s = shard_records(&fleet, &id).await;
        s.iter().all(|j| j.state.is_final()).then_some(())
    })
    .await;
    let shards = shard_records(&fleet, &id).await;
    let done = shards
        .iter()
        .filter(|s| s.state == JobState::Succeeded)
        .count();
    assert!(
        shards.iter().any(|s| s.state == JobState::Cancelled),
        "{shards:?}"
    );
    // The waiting render now runs, drawing only what the cancelled one had not (the shard that was
    // stopped may or may not have finished its tile first).
    let j = wait_final(&fleet, &next).await;
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    let cancelled_at = fleet
        .job(&id)
        .await
        .unwrap()
        .unwrap()
        .finished_at_ms
        .unwrap();
    assert!(j.started_at_ms.unwrap() >= cancelled_at);
    let total = j.shards.unwrap().total as usize;
    assert!(
        total == 36 - done || total == 36 - done - 1,
        "{total} shards after {done} were done"
    );
}

fn chromium(url: &str, extra: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--window-size=1000,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

fn assert_viewer_shows_tiles(url: &str, shot: &Path) {
    let out = chromium(url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let drawn = dom
        .split("data-tiles-drawn=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        drawn.is_some_and(|n| n >= 1),
        "no tiles drawn ({drawn:?}) at {url}:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("data-tiles-failed=\"0\""), "{dom}");
    let log = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("rror")))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let _ = std::fs::remove_file(shot);
    let out = chromium(url, &[&format!("--screenshot={}", shot.display())]);
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The screenshot shows the map: water blue and grass green, not just the page background.
    let img = std::fs::read(shot).unwrap();
    let dec = png_pixels(&img);
    let blue = dec
        .iter()
        .map(|p| p.map(u16::from))
        .filter(|p| p[2] > 100 && p[2] > p[0] + 50 && p[2] > p[1] + 30)
        .count();
    let green = dec
        .iter()
        .map(|p| p.map(u16::from))
        .filter(|p| p[1] > 100 && p[1] > p[0] + 20 && p[1] > p[2] + 40)
        .count();
    assert!(
        blue > 1000 && green > 1000,
        "map colours missing (blue {blue}, green {green})"
    );
}

/// RGB pixels of an 8-bit RGB or RGBA PNG (what Chromium writes).
fn png_pixels(bytes: &[u8]) -> Vec<[u8; 3]> {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

#[tokio::test]
async fn viewer_shows_tiles_from_disk_and_from_the_coordinator() {
    let redis = TestRedis::start().unwrap();
    let ns = ns("viewer");
    let site = Site::new(&[]).unwrap();
    site_world(&site, "w", 2, 1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maps = site.path().join("output");
    let _coord = Coordinator::start(
        &redis.url(),
        &ns,
        &site,
        "c1",
        "none",
        &[
            "--http",
            &format!("127.0.0.1:{port}"),
            "--maps-dir",
            &maps.to_string_lossy(),
            "--http-public-maps",
            "--http-public-reads",
        ],
    )
    .unwrap();
    let fleet = redis.fleet(&ns).await.unwrap();
    let _a = Agent::start_ready(&redis.url(), &ns, &site, AgentOpts::new("a1"))
        .await
        .unwrap();
    let id = submit(&redis, &ns, "w", &[]);
    assert_eq!(wait_final(&fleet, &id).await.state, JobState::Succeeded);
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();

    // Straight from disk (any static server would do the same).
    let file_url = format!(
        "file://{}",
        site.output("w", "builtin").join("index.html").display()
    );
    assert_viewer_shows_tiles(&file_url, &artifacts.join("viewer-file.png"));

    // Through the coordinator: the index lists the map, the viewer loads its tiles.
    let base = format!("http://127.0.0.1:{port}");
    let index = Command::new("curl")
        .args(["-sf", &format!("{base}/maps/")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&index.stdout).contains("href=\"/maps/w/builtin/\""));
    // A file that exists, in a dot-directory: never served.
    assert!(site
        .output("w", "builtin")
        .join(".renderfleet/regions/0_0.json")
        .is_file());
    let hidden = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/maps/w/builtin/.renderfleet/regions/0_0.json"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hidden.stdout), "404");
    assert_viewer_shows_tiles(
        &format!("{base}/maps/w/builtin/"),
        &artifacts.join("viewer-http.png"),
    );
    // The dashboard shows the render's shards and links its map.
    let dash = chromium(&format!("{base}/"), &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dash.stdout);
    assert!(dom.contains("shards 4/4"), "{dom}");
    assert!(dom.contains("href=\"/maps/w/builtin/\""), "{dom}");
}

/// The protocol alone (no agents): a parent's final step that is lost keeps the world's lock, so
/// a second render of the world cannot plan before the first one's zoom levels are built.
#[tokio::test]
async fn a_lost_final_step_keeps_the_world_until_it_is_done() {
    use renderfleet_shared::fleet::{Finished, Outcome};
    use renderfleet_shared::job::JobSpec;
    let redis = TestRedis::start().unwrap();
    let ns = ns("finallock");
    let fleet = redis.fleet(&ns).await.unwrap();
    fleet.ensure_groups().await.unwrap();
    let profiles = renderfleet_shared::renderer::Profiles::builtin();
    let spec = JobSpec {
        world: "w".into(),
        renderer: "builtin".into(),
        ..Default::default()
    };
    let first = fleet.submit(&spec, &profiles).await.unwrap().id;
    let (c, _) = fleet.claim("w1", 1).await.unwrap();
    assert_eq!(c[0].id, first);
    let shards = vec![("r.0.0".to_owned(), r#"{"region":"0,0"}"#.to_owned())];
    let n = fleet
        .fanout(&first, c[0].attempt, "w1", &shards)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    // A stale planner cannot fan out again.
    assert!(matches!(
        fleet
            .fanout(&first, c[0].attempt, "w1", &shards)
            .await
            .unwrap(),
        Err(Finished::Stale(_))
    ));
    let (s, _) = fleet.claim("w1", 1).await.unwrap();
    assert_eq!(s[0].parent, first);
    assert_eq!(s[0].shard, "r.0.0");
    succeed(&fleet, &s[0], "w1").await;
    // The last shard queued the final step; it is lost with its worker.
    let (f, _) = fleet.claim("w1", 1).await.unwrap();
    assert_eq!(
        (f[0].id.as_str(), f[0].stage.as_str()),
        (first.as_str(), "finalize")
    );
    fleet
        .finish(
            &f[0].id,
            f[0].attempt,
            "w1",
            Outcome::Lost,
            None,
            "worker gone",
        )
        .await
        .unwrap();
    let lock_key = format!("{}lock:w:builtin", fleet.keys().prefix());
    let mut conn = redis.conn().await.unwrap();
    let holder: Option<String> = redis::AsyncCommands::get(&mut conn, &lock_key)
        .await
        .unwrap();
    assert_eq!(holder.as_deref(), Some(first.as_str()));
    // A second render of the world waits behind the final step...
    let second = fleet.submit(&spec, &profiles).await.unwrap().id;
    let (got, _) = fleet.claim("w2", 2).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec![first.as_str()], "only the final step may start");
    let waiting = fleet.job(&second).await.unwrap().unwrap();
    assert_eq!(waiting.waiting_on.as_deref(), Some(first.as_str()));
    // ...and starts once it is done.
    succeed(&fleet, &got[0], "w2").await;
    assert_eq!(
        fleet.job(&first).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
    let (next, _) = fleet.claim("w2", 1).await.unwrap();
    assert_eq!(next[0].id, second);
}

/// Record attempt `c` as succeeded by `worker`.
async fn succeed(fleet: &Fleet, c: &renderfleet_shared::fleet::Claim, worker: &str) {
    use renderfleet_shared::fleet::Outcome;
    fleet
        .finish(&c.id, c.attempt, worker, Outcome::Succeeded, Some(0), "")
        .await
        .unwrap();
}

async fn protocol_fleet(test: &str) -> (TestRedis, Fleet, renderfleet_shared::renderer::Profiles) {
    let redis = TestRedis::start().unwrap();
    let fleet = redis.fleet(&ns(test)).await.unwrap();
    fleet.ensure_groups().await.unwrap();
    (
        redis,
        fleet,
        renderfleet_shared::renderer::Profiles::builtin(),
    )
}

fn builtin_spec(world: &str) -> renderfleet_shared::job::JobSpec {
    renderfleet_shared::job::JobSpec {
        world: world.into(),
        renderer: "builtin".into(),
        max_attempts: Some(3),
        ..Default::default()
    }
}

fn region_shards(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("r.{i}.0"), format!(r#"{{"region":"{i},0"}}"#)))
        .collect()
}

/// Cancelled while planning: the planner's late fan-out is refused, recording its attempt ends
/// the render, and the world is free for the next one.
#[tokio::test]
async fn cancel_while_planning_frees_the_world() {
    use renderfleet_shared::fleet::{Finished, Outcome};
    let (_redis, fleet, profiles) = protocol_fleet("cancelplan").await;
    let first = fleet
        .submit(&builtin_spec("w"), &profiles)
        .await
        .unwrap()
        .id;
    let (c, _) = fleet.claim("w1", 1).await.unwrap();
    fleet.cancel(&first).await.unwrap();
    let r = fleet
        .fanout(&first, c[0].attempt, "w1", &region_shards(2))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(Finished::Stale(ref s)) if s == "cancelled"),
        "{r:?}"
    );
    assert!(fleet.shards(&first).await.unwrap().is_empty());
    let second = fleet
        .submit(&builtin_spec("w"), &profiles)
        .await
        .unwrap()
        .id;
    let (none, _) = fleet.claim("w2", 1).await.unwrap();
    assert!(
        none.is_empty(),
        "the world is still the first render's until its agent reports"
    );
    fleet
        .finish(
            &first,
            c[0].attempt,
            "w1",
            Outcome::Failed,
            None,
            "moved on while planning",
        )
        .await
        .unwrap();
    assert_eq!(
        fleet.job(&first).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    let (next, _) = fleet.claim("w2", 1).await.unwrap();
    assert_eq!(next[0].id, second);
}

/// A dead shard retried while its render waits is no longer counted as failed: the render waits
/// for it and succeeds. Once the render has moved on, retrying a shard is refused.
#[tokio::test]
async fn retrying_a_dead_shard_while_its_render_waits() {
    use renderfleet_shared::fleet::Outcome;
    let (_redis, fleet, profiles) = protocol_fleet("shardretry").await;
    let parent = fleet
        .submit(&builtin_spec("w"), &profiles)
        .await
        .unwrap()
        .id;
    let (c, _) = fleet.claim("w1", 1).await.unwrap();
    fleet
        .fanout(&parent, c[0].attempt, "w1", &region_shards(2))
        .await
        .unwrap()
        .unwrap();
    let (s, _) = fleet.claim("w1", 2).await.unwrap();
    assert_eq!(s.len(), 2);
    fleet
        .finish(
            &s[0].id,
            s[0].attempt,
            "w1",
            Outcome::Fatal,
            Some(3),
            "bad region",
        )
        .await
        .unwrap();
    let p = fleet.job(&parent).await.unwrap().unwrap();
    assert_eq!(p.shards.as_ref().map(|x| x.failed), Some(1));
    fleet.retry(&s[0].id).await.unwrap();
    let p = fleet.job(&parent).await.unwrap().unwrap();
    assert_eq!(p.shards.as_ref().map(|x| x.failed), Some(0));
    // The other shard ends: the render still waits for the retried one.
    succeed(&fleet, &s[1], "w1").await;
    assert_eq!(
        fleet.job(&parent).await.unwrap().unwrap().state,
        JobState::Sharded
    );
    let (again, _) = fleet.claim("w1", 1).await.unwrap();
    assert_eq!(again[0].id, s[0].id);
    succeed(&fleet, &again[0], "w1").await;
    let (f, _) = fleet.claim("w1", 1).await.unwrap();
    assert_eq!(f[0].stage, "finalize");
    assert_eq!(f[0].run, c[0].attempt);
    succeed(&fleet, &f[0], "w1").await;
    let p = fleet.job(&parent).await.unwrap().unwrap();
    assert_eq!(p.state, JobState::Succeeded, "{p:?}");
    assert_eq!(p.shards.map(|x| (x.done, x.failed)), Some((2, 0)));
    // Shards are not in the main list, even after a retry.
    let listed = fleet.jobs(None, 100).await.unwrap();
    assert_eq!(listed.len(), 1);
    // The render has ended: its shards are retried through it.
    assert!(fleet.retry(&s[1].id).await.is_err());
}

/// A final step waiting for its retry keeps its world when retried by hand (it runs the final
/// step now), and a job waiting for a lock whose waker was cancelled is not stranded.
#[tokio::test]
async fn retry_of_a_final_step_and_cancel_of_a_woken_waiter() {
    use renderfleet_shared::fleet::Outcome;
    let (redis, fleet, profiles) = protocol_fleet("finalretry").await;
    let parent = fleet
        .submit(&builtin_spec("w"), &profiles)
        .await
        .unwrap()
        .id;
    let (c, _) = fleet.claim("w1", 1).await.unwrap();
    fleet
        .fanout(&parent, c[0].attempt, "w1", &[])
        .await
        .unwrap()
        .unwrap();
    let (f, _) = fleet.claim("w1", 1).await.unwrap();
    assert_eq!(f[0].stage, "finalize");
    fleet
        .finish(
            &f[0].id,
            f[0].attempt,
            "w1",
            Outcome::Failed,
            Some(1),
            "disk full",
        )
        .await
        .unwrap();
    // Two more renders of the world wait behind it.
    let b = fleet
        .submit(&builtin_spec("w"), &profiles)
        .await
        .unwrap()
        .id;
    let cc = fleet
        .submit(&builtin_spec("w"), &profiles)
        .await
        .unwrap()
        .id;
    let (none, _) = fleet.claim("w2", 2).await.unwrap();
    assert!(none.is_empty());
    fleet.retry(&parent).await.unwrap();
    let (f2, _) = fleet.claim("w1", 1).await.unwrap();
    assert_eq!(
        (f2[0].id.as_str(), f2[0].stage.as_str()),
        (parent.as_str(), "finalize")
    );
    succeed(&fleet, &f2[0], "w1").await;
    // Its end woke b; b is cancelled before it starts: c must be woken in its place.
    fleet.cancel(&b).await.unwrap();
    let (next, _) = fleet.claim("w2", 1).await.unwrap();
    assert_eq!(next.first().map(|c| c.id.as_str()), Some(cc.as_str()));
    drop(redis);
}
