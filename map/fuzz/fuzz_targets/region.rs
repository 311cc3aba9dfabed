//! A whole region file: header, chunk locations, compression, NBT, sections, drawing.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = renderfleet_map::render::render_region(data.to_vec());
});
