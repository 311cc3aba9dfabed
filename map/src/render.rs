//! One region file -> one 512x512 top-down tile, one pixel per block column.
//!
//! A pixel is the colour of the column's top block (see `palette`), shaded by the slope towards the
//! north as on in-game maps: brighter where the column is higher than its northern neighbour, darker
//! where it is lower. Water is drawn by depth instead. The northern row of a region has no neighbour
//! inside the file; its slope is extrapolated from the row south of it, so a region renders from its
//! own file alone (regions are independent work units, and an unchanged region's tile stays valid).

use std::collections::{BTreeMap, HashMap};

use crate::palette::{self, Class};
use crate::region::{decode_chunk, Chunk, ChunkError, RegionError, RegionFile, REGION_BLOCKS};
use crate::tile::Tile;

/// Shade factors out of 256: column higher than / level with / lower than its northern neighbour.
pub const SHADE_HIGH: u32 = 256;
pub const SHADE_LEVEL: u32 = 220;
pub const SHADE_LOW: u32 = 184;
/// Water darkens by this much (out of 256) per block of depth, down to `MAX_DEPTH` blocks.
pub const WATER_STEP: u32 = 8;
pub const MAX_DEPTH: i32 = 16;

/// A chunk that could not be drawn, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkFailure {
    pub cx: usize,
    pub cz: usize,
    pub error: ChunkError,
}

/// The result of rendering one region.
pub struct RegionRender {
    pub tile: Tile,
    /// Chunks drawn.
    pub chunks: u32,
    /// Chunks present in the file but unreadable; their area stays transparent.
    pub failures: Vec<ChunkFailure>,
    /// Pixels drawn in the fallback colour, by block id.
    pub unknown: BTreeMap<String, u64>,
}

#[derive(Clone, Copy)]
enum Top {
    Nothing,
    Solid([u8; 3]),
    Unknown(u32),
    Water(i32),
}

#[derive(Clone, Copy)]
struct Column {
    top: Top,
    height: i32,
}

const NOTHING: Column = Column {
    top: Top::Nothing,
    height: i32::MIN,
};

/// Render a region file's bytes.
pub fn render_region(data: Vec<u8>) -> Result<RegionRender, RegionError> {
    let region = RegionFile::parse(data)?;
    let mut cols = vec![NOTHING; REGION_BLOCKS * REGION_BLOCKS];
    let mut classes: HashMap<String, (Class, u32)> = HashMap::new();
    let mut unknown_names: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let mut chunks = 0;
    for cz in 0..32 {
        for cx in 0..32 {
            let chunk = match region.chunk_nbt(cx, cz) {
                Ok(None) => continue,
                Ok(Some(nbt)) => decode_chunk(&nbt),
                Err(e) => Err(e),
            };
            match chunk {
                Ok(chunk) => {
                    chunks += 1;
                    draw_chunk(&chunk, cx, cz, &mut cols, &mut classes, &mut unknown_names);
                }
                Err(error) => failures.push(ChunkFailure { cx, cz, error }),
            }
        }
    }
    let mut unknown = BTreeMap::new();
    let tile = shade(&cols, |i| {
        *unknown
            .entry(unknown_names[i as usize].clone())
            .or_insert(0u64) += 1
    });
    Ok(RegionRender {
        tile,
        chunks,
        failures,
        unknown,
    })
}

fn draw_chunk(
    chunk: &Chunk,
    cx: usize,
    cz: usize,
    cols: &mut [Column],
    classes: &mut HashMap<String, (Class, u32)>,
    unknown_names: &mut Vec<String>,
) {
    // Classify each section's palette once.
    let resolved: Vec<Vec<(Class, u32)>> = chunk
        .sections
        .iter()
        .map(|s| {
            s.palette
                .iter()
                .map(|name| {
                    *classes.entry(name.clone()).or_insert_with(|| {
                        let class = palette::classify(name);
                        let idx = if class == Class::Unknown {
                            unknown_names.push(name.clone());
                            unknown_names.len() as u32 - 1
                        } else {
                            0
                        };
                        (class, idx)
                    })
                })
                .collect()
        })
        .collect();
    for z in 0..16 {
        for x in 0..16 {
            let mut water_top: Option<i32> = None;
            let mut found = NOTHING;
            'scan: for (s, pal) in chunk.sections.iter().zip(&resolved) {
                if s.indices.is_empty() && pal[0].0 == Class::Clear {
                    continue;
                }
                for ly in (0..16).rev() {
                    let y = i32::from(s.y) * 16 + ly as i32;
                    let (class, uidx) = pal[s.index(x, ly, z)];
                    match class {
                        Class::Clear => {}
                        Class::Water => {
                            let top = *water_top.get_or_insert(y);
                            if top - y >= MAX_DEPTH {
                                break 'scan;
                            }
                        }
                        Class::Solid(c) => {
                            found = Column {
                                top: Top::Solid(c),
                                height: y,
                            };
                            break 'scan;
                        }
                        Class::Unknown => {
                            found = Column {
                                top: Top::Unknown(uidx),
                                height: y,
                            };
                            break 'scan;
                        }
                    }
                }
            }
            if let Some(top) = water_top {
                let depth = if matches!(found.top, Top::Nothing) {
                    MAX_DEPTH
                } else {
                    top - found.height
                };
                found = Column {
                    top: Top::Water(depth.clamp(1, MAX_DEPTH)),
                    height: top,
                };
            }
            cols[(cz * 16 + z) * REGION_BLOCKS + cx * 16 + x] = found;
        }
    }
}

fn scale(c: [u8; 3], f: u32) -> [u8; 4] {
    let s = |v: u8| (u32::from(v) * f / 256).min(255) as u8;
    [s(c[0]), s(c[1]), s(c[2]), 255]
}

fn shade(cols: &[Column], mut on_unknown: impl FnMut(u32)) -> Tile {
    let mut tile = Tile::empty();
    let n = REGION_BLOCKS;
    for z in 0..n {
        for x in 0..n {
            let col = cols[z * n + x];
            let px = match col.top {
                Top::Nothing => [0, 0, 0, 0],
                Top::Unknown(i) => {
                    on_unknown(i);
                    let [r, g, b] = palette::UNKNOWN;
                    [r, g, b, 255]
                }
                Top::Water(depth) => scale(palette::WATER, 256 - WATER_STEP * depth as u32),
                Top::Solid(c) => {
                    let north = if z > 0 {
                        Some(cols[(z - 1) * n + x])
                    } else {
                        // Extrapolate from the south: north ~ 2h - h(south).
                        let south = cols[n + x];
                        (south.height != i32::MIN).then(|| Column {
                            top: south.top,
                            height: 2 * col.height - south.height,
                        })
                    };
                    let f = match north {
                        Some(nb) if nb.height != i32::MIN && col.height > nb.height => SHADE_HIGH,
                        Some(nb) if nb.height != i32::MIN && col.height < nb.height => SHADE_LOW,
                        _ => SHADE_LEVEL,
                    };
                    scale(c, f)
                }
            };
            tile.set(x, z, px);
        }
    }
    tile
}
