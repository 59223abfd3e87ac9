//! Benchmark inputs, generated in parallel and reproducibly from a seed (the
//! same seed gives the same values whatever the thread count), for every
//! dtype: uniform random float32 or float64 in [-1, 1), random int32 and
//! uint32 over their whole range, int64 in [-2^32, 2^32) (so that no sum of
//! up to 2^27 of them, 1 GiB, overflows int64). Never all zeros: zeros hide
//! unwritten outputs and can run faster than real data.

const BLOCK: usize = 1 << 16;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill_block<T>(out: &mut [T], seed: u64, block: u64, value: fn(u64) -> T) {
    let mut state = seed ^ block.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for x in out {
        *x = value(splitmix64(&mut state));
    }
}

/// `n` values `value(r)` of 64-bit random words `r` from `seed`, on up to
/// `threads` threads.
fn random_with<T: Copy + Default + Send>(
    n: usize,
    seed: u64,
    threads: usize,
    value: fn(u64) -> T,
) -> Vec<T> {
    let mut out = vec![T::default(); n];
    let blocks: Vec<(usize, &mut [T])> = out.chunks_mut(BLOCK).enumerate().collect();
    let per_thread = blocks.len().div_ceil(threads.max(1)).max(1);
    let mut groups: Vec<Vec<(usize, &mut [T])>> = Vec::new();
    let mut it = blocks.into_iter().peekable();
    while it.peek().is_some() {
        groups.push(it.by_ref().take(per_thread).collect());
    }
    std::thread::scope(|s| {
        for group in groups {
            s.spawn(move || {
                for (i, chunk) in group {
                    fill_block(chunk, seed, i as u64, value);
                }
            });
        }
    });
    out
}

/// `n` uniform float32 values in [-1, 1) from `seed` (24 random bits each:
/// exactly representable), using up to `threads` threads.
pub fn random_f32(n: usize, seed: u64, threads: usize) -> Vec<f32> {
    random_with(n, seed, threads, |r| {
        (r >> 40) as f32 * (1.0 / (1u32 << 23) as f32) - 1.0
    })
}

/// `n` uniform float64 values in [-1, 1) from `seed` (53 random bits each).
pub fn random_f64(n: usize, seed: u64, threads: usize) -> Vec<f64> {
    random_with(n, seed, threads, |r| {
        (r >> 11) as f64 * (1.0 / (1u64 << 52) as f64) - 1.0
    })
}

/// `n` int32 values over the whole range.
pub fn random_i32(n: usize, seed: u64, threads: usize) -> Vec<i32> {
    random_with(n, seed, threads, |r| (r >> 32) as u32 as i32)
}

/// `n` uint32 values over the whole range.
pub fn random_u32(n: usize, seed: u64, threads: usize) -> Vec<u32> {
    random_with(n, seed, threads, |r| (r >> 32) as u32)
}

/// `n` int64 values in [-2^32, 2^32).
pub fn random_i64(n: usize, seed: u64, threads: usize) -> Vec<i64> {
    random_with(n, seed, threads, |r| (r >> 31) as i64 - (1i64 << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_in_range() {
        let a = random_f32(200_000, 7, 1);
        let b = random_f32(200_000, 7, 3);
        assert_eq!(a, b);
        assert!(a.iter().all(|&x| (-1.0..1.0).contains(&x)));
        assert!(a.iter().any(|&x| x < -0.5) && a.iter().any(|&x| x > 0.5));
        assert_ne!(random_f32(1000, 8, 1), a[..1000]);
    }

    #[test]
    fn every_dtype_is_reproducible_and_in_range() {
        let d = random_f64(200_000, 7, 1);
        assert_eq!(d, random_f64(200_000, 7, 3));
        assert!(d.iter().all(|&x| (-1.0..1.0).contains(&x)));
        assert!(d.iter().any(|&x| x < -0.5) && d.iter().any(|&x| x > 0.5));
        // Values use more than float32's 24 bits.
        assert!(d.iter().any(|&x| x as f32 as f64 != x));
        let i = random_i64(200_000, 7, 2);
        assert_eq!(i, random_i64(200_000, 7, 1));
        assert!(i.iter().all(|&x| (-(1i64 << 32)..1i64 << 32).contains(&x)));
        assert!(i.iter().any(|&x| x < -(1i64 << 31)) && i.iter().any(|&x| x > 1i64 << 31));
        let s = random_i32(100_000, 7, 2);
        assert!(s.iter().any(|&x| x < -(1 << 30)) && s.iter().any(|&x| x > 1 << 30));
        let u = random_u32(100_000, 7, 2);
        assert!(u.iter().any(|&x| x > 3 << 30) && u.iter().any(|&x| x < 1 << 30));
    }
}
