//! Which limbs of a group's exact sum its accumulators hold.
//!
//! A dtype's full accumulator spans every bit a sum of its values can have
//! ([`Dtype::limbs`] 32-bit limbs a side: 11 for float32, 68 for float64),
//! so a group takes 31 words of float32 values and 145 of float64. Most
//! columns use a sliver of that range: values in [-1, 1) with 24 bits of
//! mantissa sit in three limbs with room for 2^24 rows. Where the host
//! knows the values' grid positions (host-held floats, scanned once; every
//! integer column) a pass keeps only limbs `base .. base + len` of the full
//! grid, in one of a few narrow size classes, so that a group fits one or
//! two 64-byte cache lines and a million float64 groups fit one binding.
//! Device-resident floats, whose range is unknown, keep the full layout.
//!
//! The rule that makes a narrow span exact: every nonzero word a kernel adds
//! lies at limb `base` or above (each value's magnitude starts at its grid
//! position, `lo` or above), and neither the positive nor the negative
//! magnitude reaches the span's top bit (rows x 2^(hi + magnitude bits) <
//! 2^(32 (base + len) - 1)), so carries stay inside the span and the top bit
//! of positive minus negative limbs is the sign. Readers widen the span back
//! into full limbs ([`super::accumulators`]); the finishing kernel shifts
//! its grid by `32 base` bits.

use crate::dtype::Dtype;

/// Narrow size classes (limbs a side), narrowest first; a class is used
/// only where it is narrower than the dtype's full layout. 3 limbs make a
/// 16-word (64-byte) group, 11 limbs a 32-word one.
pub const NARROW_LIMBS: [u32; 2] = [3, 11];

/// The limbs a pass's accumulators hold: limb `i` of a group's positive
/// (and negative) limbs is limb `base + i` of the dtype's full grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limbs {
    /// The first limb of the full grid held (0 for the full layout).
    pub base: u32,
    /// Limbs held a side (`LIMBS` in group.wgsl and finish_groups.wgsl).
    pub len: u32,
    /// Words of one group's accumulator (`STRIDE`): 2 `len` + 9, padded
    /// to a multiple of 16 for the narrow classes so that a group starts
    /// on a 64-byte line.
    pub stride: u32,
}

/// The grid positions of a column's nonzero finite values: the position of
/// each value's magnitude bit 0 (group.wgsl's `Value::pos`: the biased
/// exponent less one, 0 for subnormals; 0 for integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Not known (device-resident floats).
    Unknown,
    /// No nonzero finite value: nothing reaches the limbs.
    Nothing,
    /// Every nonzero finite value's position lies in `lo ..= hi`.
    Within { lo: u32, hi: u32 },
}

impl Limbs {
    /// The full layout of `dtype`.
    pub fn full(dtype: Dtype) -> Self {
        let len = dtype.limbs() as u32;
        Limbs {
            base: 0,
            len,
            stride: 2 * len + 9,
        }
    }

    /// A narrow class of `len` limbs from limb `base`.
    fn narrow(base: u32, len: u32) -> Self {
        Limbs {
            base,
            len,
            stride: (2 * len + 9).next_multiple_of(16),
        }
    }

    /// Every layout a pass of `dtype` may use, at base 0: the full one and
    /// the narrow classes narrower than it (for building and checking
    /// each kernel variant).
    pub fn classes(dtype: Dtype) -> Vec<Self> {
        let full = Self::full(dtype);
        NARROW_LIMBS
            .iter()
            .filter(|&&len| len < full.len)
            .map(|&len| Self::narrow(0, len))
            .chain(std::iter::once(full))
            .collect()
    }

    /// The layout of passes that add nothing to the limbs (no sum wanted):
    /// the narrowest class.
    pub fn unsummed(dtype: Dtype) -> Self {
        Self::classes(dtype)[0]
    }

    /// Whether this is the dtype's full layout.
    pub fn is_full(self, dtype: Dtype) -> bool {
        self.len as usize == dtype.limbs()
    }

    /// The narrowest layout that holds exactly the sums of `rows` values of
    /// `dtype` spread as `spread` says (the module's rule), or the full one.
    pub fn for_values(dtype: Dtype, spread: Spread, rows: u64) -> Self {
        let full = Self::full(dtype);
        let (lo, hi) = match spread {
            Spread::Unknown => return full,
            Spread::Nothing => (0, 0),
            Spread::Within { lo, hi } => (lo, hi),
        };
        // Each magnitude is under 2^(hi + bits); a sum of `rows` of them
        // under 2^(hi + bits + bit_len(rows)); one more bit for the sign.
        let rows_bits = 64 - rows.leading_zeros();
        let top = hi as u64 + magnitude_bits(dtype) as u64 + rows_bits as u64 + 1;
        let base = lo / 32;
        for len in NARROW_LIMBS.into_iter().filter(|&len| len < full.len) {
            if 32 * (base + len) as u64 >= top {
                // Lowered where the span would pass the full grid's top
                // (which `top` never passes), so widening stays inside it.
                return Self::narrow(base.min(full.len - len), len);
            }
        }
        full
    }
}

/// Bits of a value's magnitude on its grid (the mantissa with its hidden
/// bit, or the integer's magnitude).
pub(crate) fn magnitude_bits(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => 24,
        Dtype::F64 => 53,
        Dtype::I32 | Dtype::U32 => 32,
        Dtype::I64 => 64,
    }
}

/// Values per thread below which [`spread_of_words`] scans on one thread.
const PARALLEL_VALUES: usize = 1 << 20;

/// The spread of host-held values of `dtype` given as their words (two per
/// value for 64-bit dtypes, low word first); integers sit at position 0.
pub(crate) fn spread_of_words(dtype: Dtype, words: &[u32]) -> Spread {
    if !dtype.is_float() {
        return Spread::Within { lo: 0, hi: 0 };
    }
    let wpe = dtype.words() as usize;
    let values = words.len() / wpe;
    let threads = crate::threads::threads_for(values, PARALLEL_VALUES);
    let per = values.div_ceil(threads).max(1) * wpe;
    // A part whose own thread panicked reads as every position, so the
    // layout falls back to the full one.
    let parts: Vec<(u32, u32)> =
        crate::threads::on_threads(words.chunks(per).collect(), |part| positions(dtype, part))
            .into_iter()
            .map(|p| p.unwrap_or((0, u32::MAX)))
            .collect();
    let (lo, top) = parts
        .into_iter()
        .fold((u32::MAX, 0), |(lo, top), (l, t)| (lo.min(l), top.max(t)));
    if top == 0 {
        Spread::Nothing
    } else {
        Spread::Within { lo, hi: top - 1 }
    }
}

/// (lowest position, highest position + 1) of the nonzero finite values in
/// `words`; (u32::MAX, 0) where there is none. Branch-free, so it vectorises.
fn positions(dtype: Dtype, words: &[u32]) -> (u32, u32) {
    let (mut lo, mut top) = (u32::MAX, 0u32);
    match dtype {
        Dtype::F32 => {
            for &b in words {
                let e = (b >> 23) & 0xff;
                let counted = e != 0xff && (b & 0x7fff_ffff) != 0;
                let pos = e.max(1) - 1;
                lo = lo.min(if counted { pos } else { u32::MAX });
                top = top.max(if counted { pos + 1 } else { 0 });
            }
        }
        Dtype::F64 => {
            for w in words.chunks_exact(2) {
                let (low, high) = (w[0], w[1]);
                let e = (high >> 20) & 0x7ff;
                let counted = e != 0x7ff && ((high & 0x7fff_ffff) | low) != 0;
                let pos = e.max(1) - 1;
                lo = lo.min(if counted { pos } else { u32::MAX });
                top = top.max(if counted { pos + 1 } else { 0 });
            }
        }
        _ => return (0, 1),
    }
    (lo, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread_f32(values: &[f32]) -> Spread {
        spread_of_words(Dtype::F32, bytemuck::cast_slice(values))
    }

    fn spread_f64(values: &[f64]) -> Spread {
        spread_of_words(Dtype::F64, bytemuck::cast_slice(values))
    }

    #[test]
    fn spreads_count_nonzero_finite_values_only() {
        assert_eq!(
            spread_f32(&[0.0, -0.0, f32::NAN, f32::INFINITY]),
            Spread::Nothing
        );
        assert_eq!(spread_f32(&[]), Spread::Nothing);
        // 1.0: exponent 127, position 126; 0.5: 125; the smallest
        // subnormal and the smallest normal both sit at position 0.
        assert_eq!(
            spread_f32(&[1.0, -0.5, f32::NEG_INFINITY]),
            Spread::Within { lo: 125, hi: 126 }
        );
        assert_eq!(
            spread_f32(&[f32::from_bits(1), f32::MIN_POSITIVE, f32::MAX]),
            Spread::Within { lo: 0, hi: 253 }
        );
        assert_eq!(
            spread_f64(&[-1.0, 2.0, f64::NAN, 0.0]),
            Spread::Within { lo: 1022, hi: 1023 }
        );
        assert_eq!(
            spread_f64(&[f64::from_bits(1), f64::MAX]),
            Spread::Within { lo: 0, hi: 2045 }
        );
        // A NaN whose low word alone is nonzero stays out.
        assert_eq!(
            spread_f64(&[f64::from_bits(0x7ff0_0000_0000_0001)]),
            Spread::Nothing
        );
        assert_eq!(
            spread_of_words(Dtype::I64, &[1, 2, 3, 4]),
            Spread::Within { lo: 0, hi: 0 }
        );
    }

    #[test]
    fn threaded_scans_agree_with_one_thread() {
        let n = 5 * PARALLEL_VALUES + 3;
        let mut values = vec![0.25f32; n];
        values[7] = 3.0e-30;
        values[n - 1] = -7.0e20;
        values[PARALLEL_VALUES + 1] = f32::NAN;
        let words: &[u32] = bytemuck::cast_slice(&values);
        let (lo, top) = positions(Dtype::F32, words);
        assert_eq!(spread_f32(&values), Spread::Within { lo, hi: top - 1 });
        assert_eq!(lo, (3.0e-30f32.to_bits() >> 23) - 1);
        assert_eq!(top, (7.0e20f32.to_bits() >> 23));
        // Float64 values are two words: shares never split one.
        let mut values = vec![-0.25f64; n];
        values[n / 2 + 1] = 1.0e-300;
        values[3] = f64::from_bits(0x7ff0_0000_0000_0001);
        values[n - 2] = 3.0e300;
        let words: &[u32] = bytemuck::cast_slice(&values);
        let (lo, top) = positions(Dtype::F64, words);
        assert_eq!(spread_f64(&values), Spread::Within { lo, hi: top - 1 });
        assert_eq!(lo, (1.0e-300f64.to_bits() >> 52) as u32 - 1);
        assert_eq!(top, (3.0e300f64.to_bits() >> 52) as u32);
    }

    /// The exact rule: the span starts at or under `lo`, and its top bit
    /// lies above every magnitude a sum can reach.
    fn holds(dtype: Dtype, limbs: Limbs, lo: u32, hi: u32, rows: u64) -> bool {
        let full = Limbs::full(dtype);
        let top = hi as u128 + magnitude_bits(dtype) as u128 + (64 - rows.leading_zeros()) as u128;
        32 * limbs.base <= lo
            && 32 * (limbs.base + limbs.len) as u128 > top
            && limbs.base + limbs.len <= full.len
    }

    #[test]
    fn chosen_spans_hold_every_sum_and_are_the_narrowest() {
        for dtype in Dtype::ALL {
            let full = Limbs::full(dtype);
            let max_pos = match dtype {
                Dtype::F32 => 253,
                Dtype::F64 => 2045,
                _ => 0,
            };
            let mut cases = vec![(0, 0), (0, max_pos), (max_pos, max_pos)];
            for lo in (0..=max_pos).step_by(7) {
                for width in [0, 1, 5, 20, 31, 32, 33, 60, 200, 300] {
                    cases.push((lo, (lo + width).min(max_pos)));
                }
            }
            for (lo, hi) in cases {
                for rows in [
                    0,
                    1,
                    2,
                    3,
                    1 << 24,
                    (1 << 24) + 1,
                    u32::MAX as u64,
                    u64::MAX,
                ] {
                    let limbs = Limbs::for_values(dtype, Spread::Within { lo, hi }, rows);
                    // (The full layout is the dtype's own, whatever the sum.)
                    assert!(
                        limbs.is_full(dtype) || holds(dtype, limbs, lo, hi, rows),
                        "{dtype} {lo}..={hi} x {rows}: {limbs:?}"
                    );
                    // No narrower class at any base would hold it.
                    for len in NARROW_LIMBS.into_iter().filter(|&l| l < limbs.len) {
                        for base in 0..full.len.saturating_sub(len) + 1 {
                            assert!(
                                !holds(dtype, Limbs::narrow(base, len), lo, hi, rows),
                                "{dtype} {lo}..={hi} x {rows}: {len} limbs from {base} would do"
                            );
                        }
                    }
                }
            }
            assert_eq!(Limbs::for_values(dtype, Spread::Unknown, 5), full);
            let nothing = Limbs::for_values(dtype, Spread::Nothing, u64::MAX);
            assert!(nothing.len <= full.len && nothing.base == 0);
        }
    }

    #[test]
    fn narrow_classes_start_groups_on_cache_lines() {
        for dtype in Dtype::ALL {
            for limbs in Limbs::classes(dtype) {
                assert!(limbs.stride >= 2 * limbs.len + 9);
                if !limbs.is_full(dtype) {
                    assert_eq!(limbs.stride % 16, 0, "{dtype}: {limbs:?}");
                }
            }
        }
        // Uniform float32 values in [-1, 1) on a 2^-23 grid, 16M rows: one
        // 64-byte group; float64 on a 2^-52 grid: 128 bytes instead of 580.
        let f32_limbs = Limbs::for_values(Dtype::F32, Spread::Within { lo: 103, hi: 125 }, 1 << 24);
        assert_eq!((f32_limbs.len, f32_limbs.stride), (3, 16));
        let f64_limbs =
            Limbs::for_values(Dtype::F64, Spread::Within { lo: 970, hi: 1021 }, 1 << 24);
        assert_eq!((f64_limbs.len, f64_limbs.stride), (11, 32));
    }
}
