//! Fuzz target: the raw float32 reader, as a file of known length and as
//! a pipe, which must agree (whole 4-byte values, nothing else).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("data.f32");
    let known = gpulanes::npy::read_raw_f32_from(&mut &data[..], name, Some(data.len() as u64));
    let piped = gpulanes::npy::read_raw_f32_from(&mut &data[..], name, None);
    assert_eq!(known.is_ok(), data.len() % 4 == 0);
    assert_eq!(known.is_ok(), piped.is_ok());
    if let (Ok(a), Ok(b)) = (&known, &piped) {
        assert_eq!(a.len(), data.len() / 4);
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
});
