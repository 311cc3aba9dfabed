//! A map's output directory: planning which regions to draw, drawing one region into its tile, and
//! building the zoom pyramid, the index (`map.js`) and the viewer (`index.html`).
//!
//! ```text
//! <out>/index.html                   the viewer (self-contained)
//! <out>/map.js                       the index: levels and the regions drawn
//! <out>/tiles/<level>/<x>_<z>.png    level 0: one tile per region; level L: 2^L x 2^L regions
//! <out>/.renderfleet/regions/<x>_<z>.json   what each region's tile was drawn from (incremental)
//! <out>/.renderfleet/plan-<job>.<run>.json  a sharded render's plan, read by its final step
//! ```
//! Every file is written to a temporary name and renamed into place, so a reader (or a render
//! killed half way) never sees half a tile.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::region::RegionError;
use crate::render::render_region;
use crate::tile::Tile;

/// Bumped whenever the same region would draw differently; tiles of an older version are redrawn.
pub const RENDER_VERSION: u32 = 1;
/// The viewer page, written as `index.html`.
pub const VIEWER_HTML: &str = include_str!("viewer.html");

/// A region's coordinates, as in its file name `r.<x>.<z>.mca`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegionId {
    pub x: i32,
    pub z: i32,
}

impl RegionId {
    /// Parse `r.<x>.<z>.mca`.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let mut parts = name.strip_prefix("r.")?.strip_suffix(".mca")?.split('.');
        let x = parts.next()?.parse().ok()?;
        let z = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self { x, z })
    }

    /// Parse `<x>,<z>` (the `region` param of a shard).
    pub fn parse(s: &str) -> Option<Self> {
        let (x, z) = s.split_once(',')?;
        Some(Self {
            x: x.trim().parse().ok()?,
            z: z.trim().parse().ok()?,
        })
    }

    pub fn file_name(&self) -> String {
        format!("r.{}.{}.mca", self.x, self.z)
    }

    /// The `region` param value: `<x>,<z>`.
    pub fn param(&self) -> String {
        format!("{},{}", self.x, self.z)
    }

    fn key(&self) -> String {
        format!("{}_{}", self.x, self.z)
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r.{}.{}", self.x, self.z)
    }
}

/// What a render does with one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Changed (or never drawn): draw it.
    Render,
    /// Unchanged since its tile was drawn.
    Skip,
    /// A 0-byte file (the game leaves these behind): nothing to draw.
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRegion {
    pub id: RegionId,
    pub action: Action,
}

/// Which regions a render draws.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub regions: Vec<PlannedRegion>,
}

impl Plan {
    pub fn to_render(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.regions
            .iter()
            .filter(|r| r.action == Action::Render)
            .map(|r| r.id)
    }

    pub fn count(&self, action: Action) -> usize {
        self.regions.iter().filter(|r| r.action == action).count()
    }
}

/// What a region's tile was drawn from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    pub render_version: u32,
    pub size: u64,
    pub mtime_ns: u128,
    pub chunks: u32,
    #[serde(default)]
    pub unknown: BTreeMap<String, u64>,
}

/// An error with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Other(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The world's region directory (overworld).
pub fn region_dir(world: &Path) -> PathBuf {
    world.join("region")
}

fn state_dir(out: &Path) -> PathBuf {
    out.join(".renderfleet").join("regions")
}

fn state_path(out: &Path, id: RegionId) -> PathBuf {
    state_dir(out).join(format!("{}.json", id.key()))
}

/// Path of a tile.
pub fn tile_path(out: &Path, level: u32, x: i32, z: i32) -> PathBuf {
    out.join("tiles")
        .join(level.to_string())
        .join(format!("{x}_{z}.png"))
}

/// Path of the plan of run `run` (the planning attempt) of job `job`.
pub fn plan_path(out: &Path, job: &str, run: u32) -> PathBuf {
    out.join(".renderfleet")
        .join(format!("plan-{job}.{run}.json"))
}

/// Write `bytes` to `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn file_meta(path: &Path) -> Result<(u64, u128), OutputError> {
    let m = fs::metadata(path).map_err(io_err(path))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((m.len(), mtime))
}

/// The world's region files, sorted.
pub fn scan_world(world: &Path) -> Result<Vec<RegionId>, OutputError> {
    let dir = region_dir(world);
    let mut ids = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(RegionId::from_file_name)
        {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

/// Decide for every region of `world` whether its tile in `out` is current. `force` redraws all.
pub fn plan(world: &Path, out: &Path, force: bool) -> Result<Plan, OutputError> {
    let mut regions = Vec::new();
    for id in scan_world(world)? {
        let (size, mtime_ns) = file_meta(&region_dir(world).join(id.file_name()))?;
        let action = if size == 0 {
            Action::Empty
        } else if !force && is_current(out, id, size, mtime_ns) {
            Action::Skip
        } else {
            Action::Render
        };
        regions.push(PlannedRegion { id, action });
    }
    Ok(Plan { regions })
}

fn is_current(out: &Path, id: RegionId, size: u64, mtime_ns: u128) -> bool {
    let Ok(text) = fs::read(state_path(out, id)) else {
        return false;
    };
    let Ok(state) = serde_json::from_slice::<RegionState>(&text) else {
        return false;
    };
    state.render_version == RENDER_VERSION
        && state.size == size
        && state.mtime_ns == mtime_ns
        && (state.chunks == 0 || tile_path(out, 0, id.x, id.z).is_file())
}

pub fn write_plan(out: &Path, job: &str, run: u32, plan: &Plan) -> Result<(), OutputError> {
    let bytes = serde_json::to_vec(plan).map_err(|e| OutputError::Other(e.to_string()))?;
    write_atomic(&plan_path(out, job, run), &bytes)
}

/// Read a plan written by [`write_plan`] (at [`plan_path`]).
pub fn read_plan(path: &Path) -> Result<Plan, OutputError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OutputError::Other(format!("{}: {e}", path.display())))
}

/// Why a region could not be (fully) drawn.
#[derive(Debug, thiserror::Error)]
pub enum RegionFailure {
    /// Worth retrying: the file could not be read or the tile not written.
    #[error(transparent)]
    Io(#[from] OutputError),
    /// The file itself is bad; retrying will not help until it changes.
    #[error("{region}: {error}")]
    Unreadable {
        region: RegionId,
        error: RegionError,
    },
    /// Some chunks are bad; the rest were drawn and the tile written.
    #[error("{region}: {bad} of {total} chunks unreadable: {first}")]
    BadChunks {
        region: RegionId,
        bad: usize,
        total: usize,
        first: String,
    },
}

/// What drawing one region did.
#[derive(Debug, Serialize)]
pub struct RegionReport {
    pub region: RegionId,
    pub chunks: u32,
    pub unknown: BTreeMap<String, u64>,
    /// False when the region has no drawable chunk (no tile).
    pub tile: bool,
}

/// Draw region `id` of `world` into `out`: its tile, then its state (so an interrupted render is
/// redone next time). A region with bad chunks still gets its tile but no state, and fails.
pub fn render_region_to(
    world: &Path,
    out: &Path,
    id: RegionId,
) -> Result<RegionReport, RegionFailure> {
    let src = region_dir(world).join(id.file_name());
    let (size, mtime_ns) = file_meta(&src)?;
    let data = fs::read(&src).map_err(|e| OutputError::Io {
        path: src.clone(),
        source: e,
    })?;
    let r = render_region(data).map_err(|error| RegionFailure::Unreadable { region: id, error })?;
    let tp = tile_path(out, 0, id.x, id.z);
    let tile = !r.tile.is_empty();
    if tile {
        let png = r
            .tile
            .encode()
            .map_err(|e| OutputError::Other(format!("encoding {}: {e}", tp.display())))?;
        write_atomic(&tp, &png)?;
    } else if tp.exists() {
        fs::remove_file(&tp).map_err(io_err(&tp))?;
    }
    if let Some(first) = r.failures.first() {
        return Err(RegionFailure::BadChunks {
            region: id,
            bad: r.failures.len(),
            total: r.failures.len() + r.chunks as usize,
            first: format!("chunk {},{}: {}", first.cx, first.cz, first.error),
        });
    }
    let state = RegionState {
        render_version: RENDER_VERSION,
        size,
        mtime_ns,
        chunks: r.chunks,
        unknown: r.unknown.clone(),
    };
    let bytes = serde_json::to_vec(&state).map_err(|e| OutputError::Other(e.to_string()))?;
    write_atomic(&state_path(out, id), &bytes)?;
    Ok(RegionReport {
        region: id,
        chunks: r.chunks,
        unknown: r.unknown,
        tile,
    })
}

/// What building the pyramid did.
#[derive(Debug, Default, Serialize)]
pub struct PyramidReport {
    /// Highest zoom-out level (0 = one tile per region).
    pub max_level: u32,
    /// Tiles at level 0 (regions drawn).
    pub regions: usize,
    /// Tiles above level 0 written in this run.
    pub written: usize,
    /// Tiles above level 0 left as they were (nothing under them changed).
    pub kept: usize,
    /// Tiles written, per level (index 0 is level 1).
    pub per_level: Vec<usize>,
}

fn parent(t: (i32, i32)) -> (i32, i32) {
    (t.0.div_euclid(2), t.1.div_euclid(2))
}

/// Build the levels above 0 for the regions of `plan`, redrawing only tiles above a region that was
/// (re)drawn and tiles that are missing; then write `map.js` and `index.html`.
pub fn build_pyramid(out: &Path, name: &str, plan: &Plan) -> Result<PyramidReport, OutputError> {
    let mut level: BTreeSet<(i32, i32)> = plan
        .regions
        .iter()
        .map(|r| (r.id.x, r.id.z))
        .filter(|&(x, z)| tile_path(out, 0, x, z).is_file())
        .collect();
    let regions: Vec<(i32, i32)> = level.iter().copied().collect();
    let mut dirty: BTreeSet<(i32, i32)> = plan.to_render().map(|r| (r.x, r.z)).collect();
    let mut report = PyramidReport {
        regions: regions.len(),
        ..Default::default()
    };
    // Levels are anchored at the origin (tile x at level L covers regions x*2^L .. x*2^L + 2^L-1),
    // so a tile's place never depends on the world's extent; the top level is the 2x2 tiles that
    // meet at the origin (or fewer).
    let top = |set: &BTreeSet<(i32, i32)>| {
        set.iter()
            .all(|&(x, z)| (-1..=0).contains(&x) && (-1..=0).contains(&z))
    };
    let mut l = 0u32;
    while !top(&level) {
        l += 1;
        let next: BTreeSet<(i32, i32)> = level.iter().map(|&t| parent(t)).collect();
        let above_dirty: BTreeSet<(i32, i32)> = dirty.iter().map(|&d| parent(d)).collect();
        let next_dirty: BTreeSet<(i32, i32)> = next
            .iter()
            .copied()
            .filter(|&(x, z)| above_dirty.contains(&(x, z)) || !tile_path(out, l, x, z).is_file())
            .collect();
        let mut written = 0;
        for &(x, z) in &next_dirty {
            let mut tile = Tile::empty();
            for (qx, qz) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let cp = tile_path(out, l - 1, 2 * x + qx, 2 * z + qz);
                let bytes = match fs::read(&cp) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&cp)(e)),
                };
                let child = Tile::decode(&bytes)
                    .map_err(|e| OutputError::Other(format!("{}: {e}", cp.display())))?;
                tile.draw_half(&child, qx as usize, qz as usize);
            }
            let tp = tile_path(out, l, x, z);
            let png = tile
                .encode()
                .map_err(|e| OutputError::Other(format!("encoding {}: {e}", tp.display())))?;
            write_atomic(&tp, &png)?;
            written += 1;
        }
        report.written += written;
        report.kept += next.len() - written;
        report.per_level.push(written);
        level = next;
        dirty = next_dirty;
    }
    report.max_level = l;
    write_index(out, name, l, &regions)?;
    Ok(report)
}

/// The index the viewer loads: `map.js` (a script, so the page also works from `file://`).
#[derive(Serialize)]
struct Index<'a> {
    name: &'a str,
    tile_size: usize,
    max_level: u32,
    render_version: u32,
    regions: &'a [(i32, i32)],
}

fn write_index(
    out: &Path,
    name: &str,
    max_level: u32,
    regions: &[(i32, i32)],
) -> Result<(), OutputError> {
    let index = Index {
        name,
        tile_size: crate::tile::SIZE,
        max_level,
        render_version: RENDER_VERSION,
        regions,
    };
    let json = serde_json::to_string(&index).map_err(|e| OutputError::Other(e.to_string()))?;
    write_atomic(
        &out.join("map.js"),
        format!("window.RENDERFLEET_MAP = {json};\n").as_bytes(),
    )?;
    write_atomic(&out.join("index.html"), VIEWER_HTML.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        assert_eq!(
            RegionId::from_file_name("r.-1.20.mca"),
            Some(RegionId { x: -1, z: 20 })
        );
        assert_eq!(RegionId::from_file_name("r.1.2.mcc"), None);
        assert_eq!(RegionId::from_file_name("r.1.2.3.mca"), None);
        assert_eq!(RegionId::from_file_name("r.a.2.mca"), None);
        assert_eq!(RegionId::parse("-3,4"), Some(RegionId { x: -3, z: 4 }));
        assert_eq!(RegionId::parse("3"), None);
        assert_eq!(RegionId { x: -3, z: 4 }.to_string(), "r.-3.4");
    }

    #[test]
    fn parents_floor() {
        assert_eq!(parent((-1, -1)), (-1, -1));
        assert_eq!(parent((-2, 3)), (-1, 1));
        assert_eq!(parent((0, 1)), (0, 0));
    }
}
