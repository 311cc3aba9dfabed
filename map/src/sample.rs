//! Sample worlds: deterministic terrain (oceans, beaches, grassland with trees, stone mountains with
//! snow caps) written as real 1.18+ region files, for tests, benchmarks and the demo. Also the chunk
//! builder tests use to place exact blocks.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::output::{region_dir, write_atomic, OutputError, RegionId};
use crate::region::pack;

/// Data version written (1.20.1).
pub const DATA_VERSION: i32 = 3465;
/// Lowest block y of a 1.18+ overworld, and its number of sections.
pub const MIN_Y: i32 = -64;
const SECTIONS: i32 = 24;
/// Water fills up to this y.
pub const SEA_LEVEL: i32 = 62;

/// Blocks of one chunk, built up by `set`, then encoded with `to_nbt`.
pub struct ChunkBlocks {
    names: Vec<String>,
    /// Section y -> 4096 indices into `names` (index 0 is air).
    sections: BTreeMap<i8, Vec<u16>>,
}

impl Default for ChunkBlocks {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkBlocks {
    pub fn new() -> Self {
        Self {
            names: vec!["minecraft:air".into()],
            sections: BTreeMap::new(),
        }
    }

    /// Index of block `name`, added to the chunk's names if new.
    pub fn block(&mut self, name: &str) -> u16 {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i as u16;
        }
        self.names.push(name.to_owned());
        self.names.len() as u16 - 1
    }

    /// Set the block at chunk-local (`x`, `z`) in `0..16`, world `y`.
    pub fn set(&mut self, x: usize, y: i32, z: usize, block: u16) {
        let sy = y.div_euclid(16) as i8;
        let ly = y.rem_euclid(16) as usize;
        let s = self.sections.entry(sy).or_insert_with(|| vec![0; 4096]);
        s[(ly << 8) | (z << 4) | x] = block;
    }

    /// Set blocks `from..=to` (world y) of one column.
    pub fn column(&mut self, x: usize, z: usize, from: i32, to: i32, block: u16) {
        for y in from..=to {
            self.set(x, y, z, block);
        }
    }

    /// Make section `sy` all `block`.
    pub fn fill_section(&mut self, sy: i8, block: u16) {
        self.sections.insert(sy, vec![block; 4096]);
    }

    /// The chunk as uncompressed NBT, at absolute chunk coordinates (`cx`, `cz`).
    pub fn to_nbt(&self, cx: i32, cz: i32) -> Result<Vec<u8>, String> {
        let mut sections = Vec::new();
        for sy in (MIN_Y / 16)..(MIN_Y / 16 + SECTIONS) {
            let sy = sy as i8;
            let (palette, data) = match self.sections.get(&sy) {
                None => (
                    vec![BlockState {
                        name: "minecraft:air",
                    }],
                    None,
                ),
                Some(idx) => {
                    // Section palette in order of first appearance.
                    let mut local: Vec<u16> = Vec::new();
                    let mut map = vec![u16::MAX; self.names.len()];
                    let mut out = Vec::with_capacity(4096);
                    for &g in idx {
                        let g = usize::from(g);
                        if map[g] == u16::MAX {
                            map[g] = local.len() as u16;
                            local.push(g as u16);
                        }
                        out.push(map[g]);
                    }
                    let palette = local
                        .iter()
                        .map(|&g| BlockState {
                            name: &self.names[usize::from(g)],
                        })
                        .collect::<Vec<_>>();
                    let data = (palette.len() > 1)
                        .then(|| fastnbt::LongArray::new(pack(&out, palette.len())));
                    (palette, data)
                }
            };
            sections.push(SectionOut {
                y: sy,
                block_states: BlockStatesOut { palette, data },
                biomes: BiomesOut {
                    palette: vec!["minecraft:plains"],
                },
            });
        }
        let chunk = ChunkOut {
            data_version: DATA_VERSION,
            x_pos: cx,
            z_pos: cz,
            y_pos: (MIN_Y / 16),
            status: "minecraft:full",
            last_update: 0,
            inhabited_time: 0,
            sections,
        };
        fastnbt::to_bytes(&chunk).map_err(|e| e.to_string())
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    #[serde(rename = "DataVersion")]
    data_version: i32,
    #[serde(rename = "xPos")]
    x_pos: i32,
    #[serde(rename = "zPos")]
    z_pos: i32,
    #[serde(rename = "yPos")]
    y_pos: i32,
    #[serde(rename = "Status")]
    status: &'a str,
    #[serde(rename = "LastUpdate")]
    last_update: i64,
    #[serde(rename = "InhabitedTime")]
    inhabited_time: i64,
    sections: Vec<SectionOut<'a>>,
}

#[derive(Serialize)]
struct SectionOut<'a> {
    #[serde(rename = "Y")]
    y: i8,
    block_states: BlockStatesOut<'a>,
    biomes: BiomesOut<'a>,
}

#[derive(Serialize)]
struct BlockStatesOut<'a> {
    palette: Vec<BlockState<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<fastnbt::LongArray>,
}

#[derive(Serialize)]
struct BlockState<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
}

#[derive(Serialize)]
struct BiomesOut<'a> {
    palette: Vec<&'a str>,
}

/// One chunk of a region file: (local cx, local cz) in 0..32, and its uncompressed NBT.
pub type RegionChunk = ((usize, usize), Vec<u8>);

/// Write a region file from its chunks.
pub fn write_region_file(path: &Path, chunks: &[RegionChunk]) -> Result<(), OutputError> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut region = fastanvil::Region::create(&mut buf)
            .map_err(|e| OutputError::Other(format!("{}: {e}", path.display())))?;
        for ((cx, cz), nbt) in chunks {
            region
                .write_chunk(*cx, *cz, nbt)
                .map_err(|e| OutputError::Other(format!("{}: {e}", path.display())))?;
        }
    }
    write_atomic(path, buf.get_ref())
}

/// Deterministic terrain.
#[derive(Clone, Copy)]
pub struct Terrain {
    pub seed: u64,
}

fn mix(mut v: u64) -> u64 {
    // splitmix64's finaliser.
    v = (v ^ (v >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    v ^ (v >> 31)
}

impl Terrain {
    fn hash(&self, salt: u64, x: i32, z: i32) -> u64 {
        mix(self.seed
            ^ salt.wrapping_mul(0xa076_1d64_78bd_642f)
            ^ (x as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (z as u32 as u64)
                .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                .rotate_left(29))
    }

    fn lattice(&self, salt: u64, x: i32, z: i32) -> f64 {
        (self.hash(salt, x, z) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Smooth value noise in [0, 1) with lattice spacing `scale` blocks.
    fn noise(&self, salt: u64, x: i32, z: i32, scale: i32) -> f64 {
        let (gx, gz) = (x.div_euclid(scale), z.div_euclid(scale));
        let fx = f64::from(x.rem_euclid(scale)) / f64::from(scale);
        let fz = f64::from(z.rem_euclid(scale)) / f64::from(scale);
        let s = |t: f64| t * t * (3.0 - 2.0 * t);
        let (sx, sz) = (s(fx), s(fz));
        let a = self.lattice(salt, gx, gz);
        let b = self.lattice(salt, gx + 1, gz);
        let c = self.lattice(salt, gx, gz + 1);
        let d = self.lattice(salt, gx + 1, gz + 1);
        let top = a + (b - a) * sx;
        let bottom = c + (d - c) * sx;
        top + (bottom - top) * sz
    }

    /// Surface height of column (`x`, `z`).
    pub fn height(&self, x: i32, z: i32) -> i32 {
        let n = 0.55 * self.noise(1, x, z, 256)
            + 0.27 * self.noise(2, x, z, 96)
            + 0.13 * self.noise(3, x, z, 32)
            + 0.05 * self.noise(4, x, z, 8);
        (64.0 + (n - 0.5) * 170.0).floor() as i32
    }

    /// Is there a tree rooted at column (`x`, `z`)?
    fn tree(&self, x: i32, z: i32) -> bool {
        self.hash(5, x, z) % 53 == 0
    }

    /// Build chunk (`cx`, `cz`) (absolute chunk coordinates).
    pub fn chunk(&self, cx: i32, cz: i32) -> ChunkBlocks {
        let mut c = ChunkBlocks::new();
        let stone = c.block("minecraft:stone");
        let dirt = c.block("minecraft:dirt");
        let grass = c.block("minecraft:grass_block");
        let sand = c.block("minecraft:sand");
        let gravel = c.block("minecraft:gravel");
        let water = c.block("minecraft:water");
        let snow = c.block("minecraft:snow_block");
        let log = c.block("minecraft:oak_log");
        let leaves = c.block("minecraft:oak_leaves");
        let bedrock = c.block("minecraft:bedrock");
        let mut heights = [[0i32; 16]; 16];
        for (z, row) in heights.iter_mut().enumerate() {
            for (x, h) in row.iter_mut().enumerate() {
                *h = self.height(cx * 16 + x as i32, cz * 16 + z as i32);
            }
        }
        let min_h = heights.iter().flatten().copied().min().unwrap_or(0);
        // Sections wholly under every column's top few blocks are plain stone.
        let solid_to = (min_h - 4).div_euclid(16);
        for sy in (MIN_Y / 16)..solid_to {
            c.fill_section(sy as i8, stone);
        }
        let first_free = solid_to * 16;
        for (z, row) in heights.iter().enumerate() {
            for (x, &h) in row.iter().enumerate() {
                c.set(x, MIN_Y, z, bedrock);
                c.column(x, z, first_free.max(MIN_Y + 1), h - 4, stone);
                let (wx, wz) = (cx * 16 + x as i32, cz * 16 + z as i32);
                if h < SEA_LEVEL - 2 {
                    let floor = if self.hash(6, wx, wz) % 3 == 0 {
                        gravel
                    } else {
                        sand
                    };
                    c.column(x, z, h - 3, h, floor);
                    c.column(x, z, h + 1, SEA_LEVEL, water);
                } else if h <= SEA_LEVEL + 2 {
                    c.column(x, z, h - 3, h, sand);
                    if h < SEA_LEVEL {
                        c.column(x, z, h + 1, SEA_LEVEL, water);
                    }
                } else if h > 118 {
                    c.column(x, z, h - 3, h - 1, stone);
                    c.set(x, h, z, snow);
                } else if h > 100 {
                    c.column(x, z, h - 3, h, stone);
                } else {
                    c.column(x, z, h - 3, h - 1, dirt);
                    c.set(x, h, z, grass);
                    if (2..14).contains(&x) && (2..14).contains(&z) && self.tree(wx, wz) {
                        let trunk = 4 + (self.hash(7, wx, wz) % 2) as i32;
                        let top = h + trunk;
                        for dy in -2i32..=1 {
                            let r = if dy >= 0 { 1 } else { 2 };
                            for dz in -r..=r {
                                for dx in -r..=r {
                                    if dx * dx + dz * dz > r * r + 1 {
                                        continue;
                                    }
                                    let (lx, lz) = (x as i32 + dx, z as i32 + dz);
                                    c.set(lx as usize, top + dy, lz as usize, leaves);
                                }
                            }
                        }
                        c.column(x, z, h + 1, top - 1, log);
                    }
                }
            }
        }
        c
    }

    /// All 1024 chunks of region `id`, as NBT.
    pub fn region_chunks(&self, id: RegionId) -> Result<Vec<RegionChunk>, String> {
        let mut out = Vec::with_capacity(1024);
        for lz in 0..32 {
            for lx in 0..32 {
                let (cx, cz) = (id.x * 32 + lx as i32, id.z * 32 + lz as i32);
                out.push(((lx, lz), self.chunk(cx, cz).to_nbt(cx, cz)?));
            }
        }
        Ok(out)
    }
}

/// The regions of an `n` x `n` sample world, centred on the origin.
pub fn sample_regions(n: u32) -> Vec<RegionId> {
    let n = n as i32;
    let lo = -(n / 2);
    let mut ids = Vec::new();
    for z in lo..lo + n {
        for x in lo..lo + n {
            ids.push(RegionId { x, z });
        }
    }
    ids
}

/// Write one region of the sample world.
pub fn write_sample_region(
    world: &Path,
    terrain: Terrain,
    id: RegionId,
) -> Result<(), OutputError> {
    let chunks = terrain.region_chunks(id).map_err(OutputError::Other)?;
    write_region_file(&region_dir(world).join(id.file_name()), &chunks)
}

/// Write an `n` x `n`-region sample world (and a minimal `level.dat`) into `world`, using every core.
pub fn write_sample_world(world: &Path, n: u32, seed: u64) -> Result<Vec<RegionId>, OutputError> {
    let ids = sample_regions(n);
    let terrain = Terrain { seed };
    let errors = crate::for_each_parallel(&ids, crate::cores(), |&id| {
        write_sample_region(world, terrain, id)
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    write_level_dat(world, seed)?;
    Ok(ids)
}

#[derive(Serialize)]
struct LevelDat<'a> {
    #[serde(rename = "Data")]
    data: LevelData<'a>,
}

#[derive(Serialize)]
struct LevelData<'a> {
    #[serde(rename = "LevelName")]
    level_name: &'a str,
    #[serde(rename = "DataVersion")]
    data_version: i32,
    version: i32,
    #[serde(rename = "Version")]
    version_info: VersionInfo<'a>,
    #[serde(rename = "RandomSeed")]
    seed: i64,
}

#[derive(Serialize)]
struct VersionInfo<'a> {
    #[serde(rename = "Id")]
    id: i32,
    #[serde(rename = "Name")]
    name: &'a str,
}

fn write_level_dat(world: &Path, seed: u64) -> Result<(), OutputError> {
    let dat = LevelDat {
        data: LevelData {
            level_name: "renderfleet sample",
            data_version: DATA_VERSION,
            version: 19133,
            version_info: VersionInfo {
                id: DATA_VERSION,
                name: "1.20.1",
            },
            seed: seed as i64,
        },
    };
    let nbt = fastnbt::to_bytes(&dat).map_err(|e| OutputError::Other(e.to_string()))?;
    let path = world.join("level.dat");
    let io = |e: std::io::Error| OutputError::Io {
        path: path.clone(),
        source: e,
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&nbt).map_err(io)?;
    let bytes = gz.finish().map_err(io)?;
    fs::write(&path, bytes).map_err(io)
}
