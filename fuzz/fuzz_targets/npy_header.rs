//! Fuzz target: the `.npy` header parser (magic, version, length, the
//! Python-literal dict, dtype and shape checks) on arbitrary bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = gpulanes::npy::parse_header(data, Path::new("fuzz.npy")) {
        // A parsed header announces data that can exist.
        assert!(h.checked_data_bytes().is_some());
        assert!(h.data_end() >= h.data_offset);
        assert!(h.data_offset as usize <= data.len());
    }
});
