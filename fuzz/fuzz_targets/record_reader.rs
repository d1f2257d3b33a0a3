//! The journal's record reader must turn any bytes into records, a clean end or an error with
//! an offset — never a panic, never an offset that goes backwards or out of bounds.
//! Run: `cargo +nightly fuzz run record_reader` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut offset = 0;
    while let Ok(Some((_, next))) = c10k_store::record::read_record(data, offset) {
        assert!(next > offset && next <= data.len());
        offset = next;
    }
});
