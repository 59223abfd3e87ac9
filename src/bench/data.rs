//! Benchmark inputs: uniform random f32 in [-1, 1), generated in parallel
//! and reproducibly from a seed (the same seed gives the same values whatever
//! the thread count). Never zeros: zeros hide unwritten outputs and can run
//! faster than real data.

const BLOCK: usize = 1 << 16;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill_block(out: &mut [f32], seed: u64, block: u64) {
    let mut state = seed ^ block.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for x in out {
        // 24 random bits: exactly representable, uniform on [-1, 1).
        let r = (splitmix64(&mut state) >> 40) as f32;
        *x = r * (1.0 / (1u32 << 23) as f32) - 1.0;
    }
}

/// `n` uniform values in [-1, 1) from `seed`, using up to `threads` threads.
pub fn random_f32(n: usize, seed: u64, threads: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    let blocks: Vec<(usize, &mut [f32])> = out.chunks_mut(BLOCK).enumerate().collect();
    let per_thread = blocks.len().div_ceil(threads.max(1)).max(1);
    let mut groups: Vec<Vec<(usize, &mut [f32])>> = Vec::new();
    let mut it = blocks.into_iter().peekable();
    while it.peek().is_some() {
        groups.push(it.by_ref().take(per_thread).collect());
    }
    std::thread::scope(|s| {
        for group in groups {
            s.spawn(move || {
                for (i, chunk) in group {
                    fill_block(chunk, seed, i as u64);
                }
            });
        }
    });
    out
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
}
