//! The built-in renderer on real region files: exact pixels, corrupt input, incremental planning,
//! the pyramid, and the sample world read back by an independent reader (fastanvil).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use renderfleet_map::output::{
    self, build_pyramid, plan, render_region_to, tile_path, RegionFailure,
};
use renderfleet_map::palette::{self, WATER};
use renderfleet_map::region::{ChunkError, RegionError};
use renderfleet_map::render::{render_region, SHADE_HIGH, SHADE_LEVEL, SHADE_LOW, WATER_STEP};
use renderfleet_map::sample::{self, write_region_file, ChunkBlocks, Terrain};
use renderfleet_map::tile::Tile;
use renderfleet_map::{Action, RegionId};

fn shade(c: [u8; 3], f: u32) -> [u8; 4] {
    let s = |v: u8| (u32::from(v) * f / 256) as u8;
    [s(c[0]), s(c[1]), s(c[2]), 255]
}

/// A region with one chunk at local (0, 0) holding the given columns.
fn region_with(chunk: &ChunkBlocks) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.0.0.mca");
    write_region_file(&path, &[((0, 0), chunk.to_nbt(0, 0).unwrap())]).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn exact_pixels_water_and_a_step() {
    let mut c = ChunkBlocks::new();
    let stone = c.block("minecraft:stone");
    let sand = c.block("minecraft:sand");
    let water = c.block("minecraft:water");
    let grass = c.block("minecraft:grass_block");
    // Column x=0 walks north to south: 70, 70, 71 (a step up), 71, 69 (a step down).
    for (z, h) in [(0usize, 70), (1, 70), (2, 71), (3, 71), (4, 69)] {
        c.column(0, z, 0, h, stone);
    }
    // x=5: three blocks of water over sand; x=6: twenty blocks of water (deeper than the cap).
    c.column(5, 0, 0, 59, sand);
    c.column(5, 0, 60, 62, water);
    c.column(6, 0, 30, 40, sand);
    c.column(6, 0, 41, 62, water);
    // x=7: grass, level with its northern neighbour (a flat field).
    c.column(7, 0, 0, 64, grass);
    c.column(7, 1, 0, 64, grass);
    let r = render_region(region_with(&c)).unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.chunks, 1);
    let stone_c = [125, 125, 125];
    let t = &r.tile;
    // Row 0 extrapolates its northern neighbour from the row south of it (level here).
    assert_eq!(t.get(0, 0), shade(stone_c, SHADE_LEVEL));
    assert_eq!(t.get(0, 1), shade(stone_c, SHADE_LEVEL));
    assert_eq!(t.get(0, 2), shade(stone_c, SHADE_HIGH), "a step up is lit");
    assert_eq!(t.get(0, 3), shade(stone_c, SHADE_LEVEL));
    assert_eq!(
        t.get(0, 4),
        shade(stone_c, SHADE_LOW),
        "a step down is shaded"
    );
    // Water is blue, darker with depth: 3 deep, then the 16-block cap.
    let w3 = t.get(5, 0);
    assert_eq!(w3, shade(WATER, 256 - 3 * WATER_STEP));
    assert!(
        w3[2] > w3[0] + 100 && w3[2] > w3[1] + 60,
        "water is blue: {w3:?}"
    );
    assert_eq!(t.get(6, 0), shade(WATER, 256 - 16 * WATER_STEP));
    let palette::Class::Solid(g) = palette::classify("minecraft:grass_block") else {
        panic!()
    };
    assert_eq!(t.get(7, 1), shade(g, SHADE_LEVEL));
    // Columns with nothing, and chunks that do not exist, are transparent.
    assert_eq!(t.get(15, 15), [0, 0, 0, 0]);
    assert_eq!(t.get(300, 300), [0, 0, 0, 0]);
    assert!(r.unknown.is_empty());
}

#[test]
fn unknown_blocks_are_magenta_and_counted() {
    let mut c = ChunkBlocks::new();
    let odd = c.block("somemod:glowing_thing");
    let stone = c.block("minecraft:stone");
    c.column(0, 0, 0, 10, stone);
    c.column(1, 0, 0, 10, odd);
    c.column(2, 0, 0, 10, odd);
    let r = render_region(region_with(&c)).unwrap();
    let [m0, m1, m2] = palette::UNKNOWN;
    assert_eq!(r.tile.get(1, 0), [m0, m1, m2, 255]);
    assert_eq!(r.unknown.get("somemod:glowing_thing"), Some(&2));
    assert_eq!(r.unknown.len(), 1);
}

fn world_with_sample(regions: &[RegionId], seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for &id in regions {
        sample::write_sample_region(dir.path(), Terrain { seed }, id).unwrap();
    }
    dir
}

#[test]
fn sample_world_reads_back_with_fastanvil_and_renders_cleanly() {
    let id = RegionId { x: -1, z: 0 };
    let world = world_with_sample(&[id], 7);
    let path = output::region_dir(world.path()).join(id.file_name());
    let bytes = std::fs::read(&path).unwrap();
    // An independent reader agrees with the generator on every 97th column's top block.
    let terrain = Terrain { seed: 7 };
    let mut region = fastanvil::Region::from_stream(std::io::Cursor::new(bytes.clone())).unwrap();
    use fastanvil::Chunk as _;
    let mut kinds = std::collections::BTreeSet::new();
    for i in (0..512 * 512).step_by(97) {
        let (x, z) = (i % 512, i / 512);
        let nbt = region.read_chunk(x / 16, z / 16).unwrap().unwrap();
        let chunk: fastanvil::CurrentJavaChunk = fastnbt::from_bytes(&nbt).unwrap();
        let h = terrain.height(id.x * 512 + x as i32, id.z * 512 + z as i32);
        let top = chunk
            .block(x % 16, h as isize, z % 16)
            .unwrap()
            .name()
            .to_owned();
        kinds.insert(top.clone());
        assert_ne!(top, "minecraft:air", "column {x},{z} at {h}");
    }
    let r = render_region(bytes).unwrap();
    assert!(r.failures.is_empty());
    assert_eq!(r.chunks, 1024);
    assert!(r.unknown.is_empty(), "{:?}", r.unknown);
    // Every pixel drawn.
    assert!(r.tile.rgba.chunks_exact(4).all(|p| p[3] == 255));
    assert!(kinds.len() >= 2, "{kinds:?}");
}

#[test]
fn corrupt_regions_fail_with_the_reason_and_the_rest_still_renders() {
    let world = world_with_sample(&[RegionId { x: 0, z: 0 }], 3);
    let path = output::region_dir(world.path()).join("r.0.0.mca");
    let good = std::fs::read(&path).unwrap();

    // Empty and header-truncated files: the region cannot be read, and says so.
    assert!(matches!(render_region(vec![]), Err(RegionError::Empty)));
    assert!(matches!(
        render_region(good[..5000].to_vec()),
        Err(RegionError::Truncated(5000))
    ));
    // Cut in the middle of the chunk data: the chunks before the cut still draw.
    let cut = render_region(good[..good.len() / 2].to_vec()).unwrap();
    assert!(cut.chunks > 100, "{}", cut.chunks);
    assert!(!cut.failures.is_empty());
    assert!(cut
        .failures
        .iter()
        .all(|f| matches!(f.error, ChunkError::PastEnd { .. } | ChunkError::Inflate(_))));

    // One chunk of garbage NBT among good ones.
    let terrain = Terrain { seed: 3 };
    let mut chunks = terrain.region_chunks(RegionId { x: 0, z: 0 }).unwrap();
    chunks[4 * 32 + 3].1 = b"\x0a\x00\x00\x03\x00\x04junk".to_vec();
    let bad = world.path().join("bad.mca");
    write_region_file(&bad, &chunks).unwrap();
    let r = render_region(std::fs::read(&bad).unwrap()).unwrap();
    assert_eq!(r.chunks, 1023);
    assert_eq!(r.failures.len(), 1);
    assert_eq!((r.failures[0].cx, r.failures[0].cz), (3, 4));
    assert!(matches!(r.failures[0].error, ChunkError::Nbt(_)));

    // Through the output layer: the tile is written, the failure names region and chunk.
    std::fs::copy(&bad, &path).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = render_region_to(world.path(), out.path(), RegionId { x: 0, z: 0 }).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RegionFailure::BadChunks { bad: 1, .. }),
        "{text}"
    );
    assert!(
        text.starts_with("r.0.0: 1 of 1024 chunks unreadable: chunk 3,4: bad NBT"),
        "{text}"
    );
    assert!(tile_path(out.path(), 0, 0, 0).is_file());
    // ...and no state, so the next render tries it again.
    let p = plan(world.path(), out.path(), false).unwrap();
    assert_eq!(p.regions[0].action, Action::Render);
}

#[test]
fn incremental_plan_and_pyramid_redraw_only_what_changed() {
    let ids = sample::sample_regions(4); // -2..=1 on both axes
    let world = world_with_sample(&ids, 11);
    let out = tempfile::tempdir().unwrap();
    let p = plan(world.path(), out.path(), false).unwrap();
    assert_eq!(p.count(Action::Render), 16);
    for id in p.to_render() {
        render_region_to(world.path(), out.path(), id).unwrap();
    }
    let rep = build_pyramid(out.path(), "w", &p).unwrap();
    // 16 regions -> level 1: 4 tiles (the 2x2 around the origin) -> top.
    assert_eq!(rep.max_level, 1);
    assert_eq!(rep.written, 4);
    let snapshot = |out: &Path| -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
        let mut v = Vec::new();
        for l in 0..=1 {
            let dir = out.join("tiles").join(l.to_string());
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                v.push((
                    format!("{l}/{}", e.file_name().to_string_lossy()),
                    std::fs::read(e.path()).unwrap(),
                    e.metadata().unwrap().modified().unwrap(),
                ));
            }
        }
        v.sort();
        v
    };
    let before = snapshot(out.path());
    assert_eq!(before.len(), 20);

    // Nothing changed: nothing to draw.
    let p2 = plan(world.path(), out.path(), false).unwrap();
    assert_eq!(p2.count(Action::Skip), 16);
    let rep2 = build_pyramid(out.path(), "w", &p2).unwrap();
    assert_eq!(rep2.written, 0);
    assert_eq!(snapshot(out.path()), before);

    // Change region (1, -2): only it and its ancestor (0, -1) at level 1 are redrawn.
    let changed = RegionId { x: 1, z: -2 };
    sample::write_sample_region(world.path(), Terrain { seed: 12 }, changed).unwrap();
    let p3 = plan(world.path(), out.path(), false).unwrap();
    assert_eq!(p3.to_render().collect::<Vec<_>>(), vec![changed]);
    render_region_to(world.path(), out.path(), changed).unwrap();
    let rep3 = build_pyramid(out.path(), "w", &p3).unwrap();
    assert_eq!(rep3.written, 1);
    let after = snapshot(out.path());
    let differing: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.1 != b.1 || a.2 != b.2)
        .map(|(a, _)| a.0.as_str())
        .collect();
    assert_eq!(differing, vec!["0/1_-2.png", "1/0_-1.png"]);
    // The viewer and its index are there.
    let js = std::fs::read_to_string(out.path().join("map.js")).unwrap();
    assert!(
        js.starts_with("window.RENDERFLEET_MAP = {\"name\":\"w\""),
        "{js}"
    );
    assert!(out.path().join("index.html").is_file());
    // A level-1 tile is the four regions under it, each shrunk by half.
    let parent = Tile::decode(&std::fs::read(tile_path(out.path(), 1, 0, -1)).unwrap()).unwrap();
    let child = Tile::decode(&std::fs::read(tile_path(out.path(), 0, 1, -2)).unwrap()).unwrap();
    let mut expect = Tile::empty();
    expect.draw_half(&child, 1, 0);
    for y in 0..256 {
        for x in 256..512 {
            assert_eq!(parent.get(x, y), expect.get(x, y));
        }
    }
}
