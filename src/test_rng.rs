//! A seeded generator for the crate's unit tests' random inputs.

/// A xorshift64 generator seeded with `x` (nonzero): each call gives the
/// next value.
pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
