//! Reading Anvil region files (`r.<x>.<z>.mca`) and the 1.18+ chunk format inside them.
//!
//! The container is read here rather than with `fastanvil::Region`: a renderer fed worlds from
//! players' servers must survive any bytes. Every offset and length is checked against the file,
//! inflated chunks are capped in size (a zlib bomb cannot take the agent's memory), and each failure
//! says which chunk and why. NBT is decoded by `fastnbt` (serde, borrowing from the inflated buffer).

use std::borrow::Cow;
use std::io::Read;

use serde::Deserialize;

/// Bytes of a region file's two header tables (chunk locations, then timestamps).
pub const HEADER: usize = 8192;
const SECTOR: usize = 4096;
/// Largest inflated chunk accepted. Real chunks are well under 1 MiB of NBT.
pub const MAX_CHUNK_NBT: usize = 16 << 20;
/// First data version of the 1.18 chunk format (21w43a).
pub const MIN_DATA_VERSION: i32 = 2844;
/// Blocks along one side of a region.
pub const REGION_BLOCKS: usize = 512;

/// Why a region file cannot be read at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegionError {
    #[error("empty region file (0 bytes)")]
    Empty,
    #[error("truncated region file: {0} bytes, shorter than its 8192-byte header")]
    Truncated(usize),
}

/// Why one chunk cannot be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum ChunkError {
    #[error("points at sectors {offset}+{sectors}, past the end of the file ({len} bytes): truncated region file")]
    PastEnd {
        offset: usize,
        sectors: usize,
        len: usize,
    },
    #[error("points into the header (sector {0})")]
    InHeader(usize),
    #[error("length {len} does not fit its {sectors} sectors")]
    BadLength { len: usize, sectors: usize },
    #[error("stored in an external .mcc file, which is not supported")]
    External,
    #[error("unknown compression type {0}")]
    UnknownCompression(u8),
    #[error("LZ4-compressed chunks are not supported")]
    Lz4,
    #[error("cannot inflate: {0}")]
    Inflate(String),
    #[error("inflates to more than {} MiB", MAX_CHUNK_NBT >> 20)]
    TooLarge,
    #[error("bad NBT: {0}")]
    Nbt(String),
    #[error(
        "chunk format older than 1.18 (data version {0}); re-save the world with 1.18 or newer"
    )]
    TooOld(i32),
    #[error("section {y}: {why}")]
    Section { y: i8, why: String },
}

/// A region file held in memory.
pub struct RegionFile {
    data: Vec<u8>,
}

impl RegionFile {
    pub fn parse(data: Vec<u8>) -> Result<Self, RegionError> {
        if data.is_empty() {
            return Err(RegionError::Empty);
        }
        if data.len() < HEADER {
            return Err(RegionError::Truncated(data.len()));
        }
        Ok(Self { data })
    }

    /// Is there a chunk at (`cx`, `cz`), both in `0..32`?
    pub fn has_chunk(&self, cx: usize, cz: usize) -> bool {
        let i = 4 * ((cx & 31) + (cz & 31) * 32);
        self.data[i..i + 4] != [0, 0, 0, 0]
    }

    /// The chunk's NBT, inflated; `Ok(None)` when the chunk was never generated.
    pub fn chunk_nbt(&self, cx: usize, cz: usize) -> Result<Option<Vec<u8>>, ChunkError> {
        let i = 4 * ((cx & 31) + (cz & 31) * 32);
        let h = &self.data[i..i + 4];
        let offset = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let sectors = usize::from(h[3]);
        if offset == 0 && sectors == 0 {
            return Ok(None);
        }
        if offset < 2 {
            return Err(ChunkError::InHeader(offset));
        }
        let start = offset * SECTOR;
        let len = self.data.len();
        if start + 5 > len {
            return Err(ChunkError::PastEnd {
                offset,
                sectors,
                len,
            });
        }
        let d = &self.data[start..];
        let clen = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        let scheme = d[4];
        // The length counts the compression byte; a chunk fits the sectors the header gives it.
        if clen == 0 || clen + 4 > sectors.max(1) * SECTOR {
            return Err(ChunkError::BadLength { len: clen, sectors });
        }
        if start + 4 + clen > len {
            return Err(ChunkError::PastEnd {
                offset,
                sectors,
                len,
            });
        }
        let body = &d[5..4 + clen];
        if scheme & 0x80 != 0 {
            return Err(ChunkError::External);
        }
        let mut out = Vec::new();
        let cap = MAX_CHUNK_NBT as u64 + 1;
        let read = match scheme {
            1 => flate2::read::GzDecoder::new(body)
                .take(cap)
                .read_to_end(&mut out),
            2 => flate2::read::ZlibDecoder::new(body)
                .take(cap)
                .read_to_end(&mut out),
            3 => {
                out.extend_from_slice(body);
                Ok(body.len())
            }
            4 => return Err(ChunkError::Lz4),
            other => return Err(ChunkError::UnknownCompression(other)),
        };
        read.map_err(|e| ChunkError::Inflate(e.to_string()))?;
        if out.len() > MAX_CHUNK_NBT {
            return Err(ChunkError::TooLarge);
        }
        Ok(Some(out))
    }
}

#[derive(Deserialize)]
struct ChunkNbt<'a> {
    #[serde(rename = "DataVersion")]
    data_version: Option<i32>,
    #[serde(rename = "Status", borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sections: Vec<SectionNbt<'a>>,
}

#[derive(Deserialize)]
struct SectionNbt<'a> {
    #[serde(rename = "Y")]
    y: i8,
    #[serde(borrow, default)]
    block_states: Option<BlockStatesNbt<'a>>,
}

#[derive(Deserialize)]
struct BlockStatesNbt<'a> {
    #[serde(borrow)]
    palette: Vec<BlockStateNbt<'a>>,
    #[serde(borrow, default)]
    data: Option<fastnbt::borrow::LongArray<'a>>,
}

#[derive(Deserialize)]
struct BlockStateNbt<'a> {
    #[serde(rename = "Name", borrow)]
    name: Cow<'a, str>,
}

/// One 16x16x16 section: a palette of block names and an index per block (`y*256 + z*16 + x`).
pub struct Section {
    pub y: i8,
    pub palette: Vec<String>,
    /// Empty when the palette has a single entry (the whole section is that block).
    pub indices: Vec<u16>,
}

impl Section {
    /// Palette index of the block at (`x`, `y`, `z`) within the section.
    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        if self.indices.is_empty() {
            0
        } else {
            usize::from(self.indices[(y << 8) | (z << 4) | x])
        }
    }
}

/// A decoded chunk: its sections from the top down. A chunk that is not fully generated yet (status
/// other than full) has no sections here, and draws as nothing.
pub struct Chunk {
    pub sections: Vec<Section>,
}

/// Deepest nesting of NBT lists and compounds accepted (the game's own limit).
pub const MAX_NBT_DEPTH: usize = 512;

/// Walk `data` as one NBT document without recursion, checking every length against the input and
/// the nesting depth against [`MAX_NBT_DEPTH`]. `fastnbt` recurses once per level (a few hundred
/// thousand nested lists overflow the stack and abort the process) and hits `unreachable!` on a
/// non-empty list of End tags; both were found by fuzzing and are refused here first.
pub fn check_nbt(data: &[u8]) -> Result<(), String> {
    struct Cur<'a> {
        d: &'a [u8],
        i: usize,
    }
    impl Cur<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            let end = self
                .i
                .checked_add(n)
                .filter(|&e| e <= self.d.len())
                .ok_or_else(|| format!("ends early (needs {n} bytes at {})", self.i))?;
            let s = &self.d[self.i..end];
            self.i = end;
            Ok(s)
        }
        fn u8(&mut self) -> Result<u8, String> {
            Ok(self.take(1)?[0])
        }
        fn len_u16(&mut self) -> Result<usize, String> {
            let b = self.take(2)?;
            Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
        }
        fn len_i32(&mut self) -> Result<usize, String> {
            let b = self.take(4)?;
            let n = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            usize::try_from(n).map_err(|_| format!("negative length {n} at {}", self.i - 4))
        }
    }
    /// What is left to read in an open list or compound.
    enum Open {
        Compound,
        List { tag: u8, left: usize },
    }
    let mut c = Cur { d: data, i: 0 };
    if c.u8()? != 10 {
        return Err("the root is not a compound".into());
    }
    let n = c.len_u16()?;
    c.take(n)?;
    let mut stack = vec![Open::Compound];
    while let Some(top) = stack.last_mut() {
        // The tag of the next value in the innermost open container, if any is left.
        let tag = match top {
            Open::Compound => {
                let t = c.u8()?;
                if t == 0 {
                    stack.pop();
                    continue;
                }
                let n = c.len_u16()?;
                c.take(n)?;
                t
            }
            Open::List { left: 0, .. } => {
                stack.pop();
                continue;
            }
            Open::List { tag, left } => {
                *left -= 1;
                *tag
            }
        };
        match tag {
            1 => drop(c.take(1)?),
            2 => drop(c.take(2)?),
            3 | 5 => drop(c.take(4)?),
            4 | 6 => drop(c.take(8)?),
            7 => {
                let n = c.len_i32()?;
                c.take(n)?;
            }
            8 => {
                let n = c.len_u16()?;
                c.take(n)?;
            }
            11 | 12 => {
                let n = c.len_i32()?;
                let size = if tag == 11 { 4 } else { 8 };
                c.take(n.checked_mul(size).ok_or("array too long")?)?;
            }
            9 => {
                let t = c.u8()?;
                let n = c.len_i32()?;
                if t == 0 && n > 0 {
                    return Err(format!("list of {n} End tags"));
                }
                if t > 12 {
                    return Err(format!("list of unknown tag {t}"));
                }
                stack.push(Open::List { tag: t, left: n });
            }
            10 => stack.push(Open::Compound),
            other => return Err(format!("unknown tag {other} at {}", c.i - 1)),
        }
        if stack.len() > MAX_NBT_DEPTH {
            return Err(format!("nested more than {MAX_NBT_DEPTH} deep"));
        }
    }
    Ok(())
}

/// Decode a 1.18+ chunk's NBT.
pub fn decode_chunk(nbt: &[u8]) -> Result<Chunk, ChunkError> {
    check_nbt(nbt).map_err(ChunkError::Nbt)?;
    // Defence in depth: a decoder panic on bytes the check let through is this chunk's error.
    let raw: ChunkNbt<'_> = std::panic::catch_unwind(|| fastnbt::from_bytes(nbt))
        .map_err(|_| ChunkError::Nbt("the NBT decoder failed on this input".into()))?
        .map_err(|e| ChunkError::Nbt(e.to_string()))?;
    let version = raw.data_version.unwrap_or(0);
    if version < MIN_DATA_VERSION {
        return Err(ChunkError::TooOld(version));
    }
    if let Some(s) = raw.status.as_deref() {
        if s != "minecraft:full" && s != "full" {
            return Ok(Chunk { sections: vec![] });
        }
    }
    let mut sections = Vec::with_capacity(raw.sections.len());
    for s in raw.sections {
        let Some(bs) = s.block_states else { continue };
        let err = |why: String| ChunkError::Section { y: s.y, why };
        let n = bs.palette.len();
        if n == 0 {
            return Err(err("empty block palette".into()));
        }
        if n > 4096 {
            return Err(err(format!("block palette of {n} entries")));
        }
        let palette: Vec<String> = bs.palette.iter().map(|b| b.name.to_string()).collect();
        let indices = if n == 1 {
            Vec::new()
        } else {
            let data = bs
                .data
                .ok_or_else(|| err(format!("palette of {n} blocks but no block data")))?;
            unpack(&data.iter().collect::<Vec<i64>>(), n).map_err(err)?
        };
        sections.push(Section {
            y: s.y,
            palette,
            indices,
        });
    }
    sections.sort_by_key(|s| std::cmp::Reverse(s.y));
    if sections.windows(2).any(|w| w[0].y == w[1].y) {
        return Err(ChunkError::Nbt("two sections with the same Y".into()));
    }
    Ok(Chunk { sections })
}

/// Bits per block index for a palette of `n` entries (at least 4, as the game writes them).
pub fn bits_for(n: usize) -> u32 {
    let needed = usize::BITS - (n.max(2) - 1).leading_zeros();
    needed.max(4)
}

/// Unpack 4096 indices packed the 1.16+ way: `64 / bits` per long, none spanning two longs.
fn unpack(longs: &[i64], palette_len: usize) -> Result<Vec<u16>, String> {
    let bits = bits_for(palette_len);
    let per = (64 / bits) as usize;
    let expected = 4096usize.div_ceil(per);
    if longs.len() != expected {
        return Err(format!(
            "block data has {} longs, expected {expected} for a palette of {palette_len}",
            longs.len()
        ));
    }
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(4096);
    'outer: for &l in longs {
        let mut v = l as u64;
        for _ in 0..per {
            let idx = (v & mask) as usize;
            if idx >= palette_len {
                return Err(format!(
                    "block index {idx} outside its palette of {palette_len}"
                ));
            }
            out.push(idx as u16);
            if out.len() == 4096 {
                break 'outer;
            }
            v >>= bits;
        }
    }
    Ok(out)
}

/// Pack 4096 indices (the inverse of `unpack`), for writing sample worlds and tests.
pub fn pack(indices: &[u16], palette_len: usize) -> Vec<i64> {
    let bits = bits_for(palette_len);
    let per = (64 / bits) as usize;
    indices
        .chunks(per)
        .map(|group| {
            let mut v = 0u64;
            for (i, &idx) in group.iter().enumerate() {
                v |= u64::from(idx) << (i as u32 * bits);
            }
            v as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bits() {
        assert_eq!(bits_for(1), 4);
        assert_eq!(bits_for(16), 4);
        assert_eq!(bits_for(17), 5);
        assert_eq!(bits_for(33), 6);
        assert_eq!(bits_for(4096), 12);
    }

    #[test]
    fn pack_unpack_roundtrip() {
        for n in [2usize, 16, 17, 100, 4096] {
            let idx: Vec<u16> = (0..4096).map(|i| ((i * 7919) % n) as u16).collect();
            let packed = pack(&idx, n);
            assert_eq!(unpack(&packed, n).unwrap(), idx);
        }
    }

    #[test]
    fn header_checks() {
        assert_eq!(RegionFile::parse(vec![]).err(), Some(RegionError::Empty));
        assert_eq!(
            RegionFile::parse(vec![0; 100]).err(),
            Some(RegionError::Truncated(100))
        );
        let mut data = vec![0u8; HEADER];
        // Chunk (1,0) claims sector 5, past the end.
        data[4..8].copy_from_slice(&[0, 0, 5, 1]);
        let r = RegionFile::parse(data).unwrap();
        assert_eq!(r.chunk_nbt(0, 0), Ok(None));
        assert!(matches!(r.chunk_nbt(1, 0), Err(ChunkError::PastEnd { .. })));
    }
}
