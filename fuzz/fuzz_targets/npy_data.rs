//! Fuzz target: a whole float32 `.npy` read into memory, both as a file of
//! known length and as a pipe (length unknown), which must agree.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.npy");
    let known = gpulanes::npy::read_f32_from(&mut &data[..], name, Some(data.len() as u64));
    let piped = gpulanes::npy::read_f32_from(&mut &data[..], name, None);
    assert_eq!(known.is_ok(), piped.is_ok(), "{known:?} vs {piped:?}");
    if let (Ok(a), Ok(b)) = (&known, &piped) {
        assert_eq!(a.shape(), b.shape());
    }
});
