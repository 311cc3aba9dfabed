//! One chunk's NBT: the structure check, fastnbt, and section decoding.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = renderfleet_map::region::decode_chunk(data);
});
