//! Fuzz target: the partition offsets reader (int32/int64 `.npy`), both
//! as a file of known length and as a pipe, which must agree.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("offsets.npy");
    let known = gpulanes::npy::read_offsets_from(&mut &data[..], name, Some(data.len() as u64));
    let piped = gpulanes::npy::read_offsets_from(&mut &data[..], name, None);
    assert_eq!(known.is_ok(), piped.is_ok(), "{known:?} vs {piped:?}");
    if let (Ok(a), Ok(b)) = (&known, &piped) {
        assert_eq!(a, b);
    }
});
