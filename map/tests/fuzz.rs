//! A brief mutation fuzz of the region reader and chunk decoder: seeded random damage to real
//! region files and chunk NBT must end in an error or a render, never a panic or a hang. (A
//! coverage-guided run with cargo-fuzz is described in docs/benchmarks.md; this one runs in CI.)
#![allow(clippy::unwrap_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use renderfleet_map::region::decode_chunk;
use renderfleet_map::render::render_region;
use renderfleet_map::sample::{write_region_file, Terrain};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(8) {
        if data.is_empty() {
            data.push(rng.next() as u8);
            continue;
        }
        let i = rng.below(data.len());
        match rng.below(7) {
            0 => data[i] ^= 1 << rng.below(8),
            1 => data[i] = rng.next() as u8,
            2 => data.truncate(i),
            3 => data.insert(i, rng.next() as u8),
            4 => {
                data.remove(i);
            }
            // Interesting values: lengths and counts.
            5 => data[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)],
            _ => {
                let j = rng.below(data.len());
                let (a, b) = (i.min(j), i.max(j));
                let chunk: Vec<u8> = data[a..b].to_vec();
                let at = rng.below(data.len());
                data.splice(at..at, chunk.into_iter().take(64));
            }
        }
    }
}

#[test]
fn mutated_chunk_nbt_never_panics() {
    let terrain = Terrain { seed: 4 };
    let seeds: Vec<Vec<u8>> = [(0, 0), (3, -2), (-7, 9)]
        .iter()
        .map(|&(x, z)| terrain.chunk(x, z).to_nbt(x, z).unwrap())
        .collect();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut errors = 0;
    for i in 0..40_000 {
        let mut data = seeds[i % seeds.len()].clone();
        mutate(&mut rng, &mut data);
        let r = catch_unwind(AssertUnwindSafe(|| decode_chunk(&data).is_err()));
        match r {
            Ok(true) => errors += 1,
            Ok(false) => {}
            Err(_) => panic!(
                "decode_chunk panicked on input #{i}: {:02x?}",
                &data[..data.len().min(64)]
            ),
        }
    }
    // The mutations do reach the error paths (a fuzz that never fails parsing tests nothing).
    assert!(errors > 5000, "{errors}");
}

#[test]
fn deeply_nested_nbt_is_an_error_not_a_stack_overflow() {
    // Root compound { "x": list of list of list ... } 100k deep, then junk.
    let mut data = vec![0x0a, 0x00, 0x00, 0x09, 0x00, 0x01, b'x'];
    for _ in 0..100_000 {
        data.extend_from_slice(&[0x09, 0x00, 0x00, 0x00, 0x01]);
    }
    assert!(decode_chunk(&data).is_err());
}

#[test]
fn mutated_region_files_never_panic() {
    let terrain = Terrain { seed: 9 };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.0.0.mca");
    // A small region (a few chunks) keeps each iteration fast.
    let chunks: Vec<_> = [(0usize, 0usize), (1, 0), (5, 7), (31, 31)]
        .iter()
        .map(|&(x, z)| {
            (
                (x, z),
                terrain
                    .chunk(x as i32, z as i32)
                    .to_nbt(x as i32, z as i32)
                    .unwrap(),
            )
        })
        .collect();
    write_region_file(&path, &chunks).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for i in 0..1500 {
        let mut data = good.clone();
        // Damage concentrated where it matters: the header and the chunk headers.
        if rng.below(2) == 0 {
            let k = rng.below(8192.min(data.len()));
            data[k] = rng.next() as u8;
        }
        mutate(&mut rng, &mut data);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = render_region(data.clone());
        }));
        assert!(r.is_ok(), "render_region panicked on mutation #{i}");
    }
}
