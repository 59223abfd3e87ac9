//! Exact sums: every finite float32 is an integer multiple of 2^-149 and
//! every finite float64 of 2^-1074, so a wide fixed-point integer holds any
//! sum of them without rounding; integers are their own grid. The sum is
//! rounded once, at the end, to nearest-even (`round_to_float`), or
//! divided by a count and rounded once (`divide_and_round`).
//!
//! [`ExactSum`] is the CPU accumulator: the crate's reference for every sum
//! the GPU computes (the kernels in `shaders/exact*.wgsl` produce the same
//! integer), and the arithmetic behind [`crate::State`].

use crate::dtype::Dtype;

/// Normalise carries after this many additions (each adds < 2^32 per digit).
const NORMALISE_EVERY: u32 = 1 << 30;

/// Limbs of the widest accumulator (float64's).
const MAX_LIMBS: usize = 68;

/// Exact sum of finite values of one dtype; NaN and infinities are not
/// added (the caller keeps them as flags).
#[derive(Clone, Debug)]
pub struct ExactSum {
    dtype: Dtype,
    /// 32-bit digits in i64, so additions need no carry propagation; one
    /// more than the dtype's limbs, for the spill of the widest addend.
    digits: Vec<i64>,
    pending: u32,
}

impl ExactSum {
    /// An empty sum of `dtype` values.
    pub fn new(dtype: Dtype) -> Self {
        ExactSum {
            dtype,
            digits: vec![0; dtype.limbs() + 3],
            pending: 0,
        }
    }

    /// The dtype summed.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Adds `±mag × 2^shift` (shift in grid units).
    fn add_shifted(&mut self, negative: bool, mag: u64, shift: u32) {
        if mag == 0 {
            return;
        }
        let digit = (shift / 32) as usize;
        let wide = (mag as u128) << (shift % 32);
        let sign = if negative { -1 } else { 1 };
        for k in 0..3 {
            let part = ((wide >> (32 * k)) & 0xffff_ffff) as i64;
            self.digits[digit + k] += sign * part;
        }
        self.pending += 1;
        if self.pending >= NORMALISE_EVERY {
            self.normalise();
        }
    }

    /// Adds a finite float32 exactly (NaN and infinities are ignored).
    pub fn add_f32(&mut self, x: f32) {
        debug_assert_eq!(self.dtype, Dtype::F32);
        let bits = x.to_bits();
        let exp = (bits >> 23) & 0xff;
        if exp == 0xff {
            return;
        }
        let frac = (bits & 0x7f_ffff) as u64;
        let (mant, shift) = if exp == 0 {
            (frac, 0)
        } else {
            (frac | 0x80_0000, exp - 1)
        };
        self.add_shifted(bits >> 31 == 1, mant, shift);
    }

    /// Adds a finite float64 exactly (NaN and infinities are ignored).
    pub fn add_f64(&mut self, x: f64) {
        debug_assert_eq!(self.dtype, Dtype::F64);
        let bits = x.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as u32;
        if exp == 0x7ff {
            return;
        }
        let frac = bits & ((1u64 << 52) - 1);
        let (mant, shift) = if exp == 0 {
            (frac, 0)
        } else {
            (frac | (1u64 << 52), exp - 1)
        };
        self.add_shifted(bits >> 63 == 1, mant, shift);
    }

    /// Adds an integer exactly.
    pub fn add_i64(&mut self, x: i64) {
        debug_assert!(!self.dtype.is_float());
        self.add_shifted(x < 0, x.unsigned_abs(), 0);
    }

    /// Adds another sum of the same dtype.
    pub fn merge(&mut self, other: &ExactSum) {
        debug_assert_eq!(self.dtype, other.dtype);
        let mut o = other.clone();
        o.normalise();
        self.normalise();
        for (d, x) in self.digits.iter_mut().zip(&o.digits) {
            *d += *x;
        }
        self.pending += 1;
    }

    fn normalise(&mut self) {
        let mut carry = 0i64;
        let n = self.digits.len();
        for d in self.digits.iter_mut() {
            let v = *d + carry;
            *d = v & 0xffff_ffff;
            carry = v >> 32; // arithmetic shift: floor division
        }
        self.digits[n - 1] += carry << 32;
        self.pending = 0;
    }

    /// The sum as two's complement 32-bit limbs, `dtype.limbs()` of them
    /// (the layout of the GPU partial and of a serialised [`crate::State`]).
    pub fn to_limbs(&self) -> Vec<u32> {
        let mut n = self.clone();
        n.normalise();
        n.digits[..self.dtype.limbs()]
            .iter()
            .map(|&d| d as u32)
            .collect()
    }

    /// A sum from two's complement limbs (as [`ExactSum::to_limbs`] gives).
    pub fn from_limbs(dtype: Dtype, limbs: &[u32]) -> Self {
        let mut s = ExactSum::new(dtype);
        s.set_limbs(limbs);
        s
    }

    /// Makes this the sum given by two's complement limbs of its dtype,
    /// reusing its digits (no allocation: keyed reductions refill one sum
    /// per group).
    pub(crate) fn set_limbs(&mut self, limbs: &[u32]) {
        self.clear();
        let negative = limbs.last().is_some_and(|&l| l >> 31 == 1);
        for (d, &l) in self.digits.iter_mut().zip(limbs) {
            *d = l as i64;
        }
        if negative {
            // Sign-extend: subtract 2^(32 n).
            self.digits[limbs.len()] -= 1;
        }
        self.pending = 1;
    }

    /// Makes this the empty sum, keeping its digits' storage.
    pub(crate) fn clear(&mut self) {
        self.digits.fill(0);
        self.pending = 0;
    }

    /// The sum's two's complement limbs (as [`ExactSum::to_limbs`]),
    /// written into `out` without allocating.
    fn limbs_into<'a>(&self, out: &'a mut [u32; MAX_LIMBS]) -> &'a mut [u32] {
        let l = self.dtype.limbs();
        let mut carry = 0i64;
        for (o, &d) in out[..l].iter_mut().zip(&self.digits) {
            let v = d + carry;
            *o = (v & 0xffff_ffff) as u32;
            carry = v >> 32; // arithmetic shift: floor division
        }
        &mut out[..l]
    }

    /// Calls `f` with the sum's sign and magnitude (little-endian u32
    /// digits), without allocating: finishing a state is on the path of
    /// every group of a keyed reduction.
    fn with_sign_magnitude<R>(&self, f: impl FnOnce(bool, &[u32]) -> R) -> R {
        let mut buf = [0u32; MAX_LIMBS];
        let limbs = self.limbs_into(&mut buf);
        let negative = to_magnitude(limbs);
        f(negative, limbs)
    }

    /// The sum as sign and magnitude (little-endian u32 digits).
    pub fn sign_magnitude(&self) -> (bool, Vec<u32>) {
        self.with_sign_magnitude(|negative, mag| (negative, mag.to_vec()))
    }

    /// True when the sum is exactly zero.
    pub fn is_zero(&self) -> bool {
        let mut buf = [0u32; MAX_LIMBS];
        self.limbs_into(&mut buf).iter().all(|&l| l == 0)
    }

    /// The sum as an i64 (integer dtypes), `None` when it does not fit.
    pub fn to_i64(&self) -> Option<i64> {
        let (negative, mag) = self.sign_magnitude();
        if mag[2..].iter().any(|&d| d != 0) {
            return None;
        }
        let m = mag[0] as u64 | (mag[1] as u64) << 32;
        if negative {
            if m <= 1u64 << 63 {
                Some((m as i64).wrapping_neg())
            } else {
                None
            }
        } else {
            i64::try_from(m).ok()
        }
    }

    /// The exact sum rounded once to `target` (float32 or float64), as an
    /// f64 holding exactly the rounded value; ±inf when it overflows.
    pub fn round(&self, target: Dtype) -> f64 {
        let grid = self.dtype.grid_exponent();
        self.with_sign_magnitude(|negative, mag| round_to_float(negative, mag, false, grid, target))
    }

    /// The exact sum divided by `count`, rounded once to `target`.
    pub fn mean(&self, count: u64, target: Dtype) -> f64 {
        let grid = self.dtype.grid_exponent();
        self.with_sign_magnitude(|negative, mag| {
            divide_and_round(negative, mag, grid, count, target)
        })
    }
}

/// Precision, lowest exponent (of the subnormal ulp) and largest finite
/// exponent of a float dtype.
fn format_of(target: Dtype) -> (i32, i32, i32) {
    match target {
        Dtype::F32 => (24, -149, 127),
        _ => (53, -1074, 1023),
    }
}

/// `mant × 2^exp` as an f64, exactly (the caller ensures it is representable).
fn ldexp(mant: u64, exp: i32) -> f64 {
    if mant == 0 {
        return 0.0;
    }
    // A normal f64 (every value of this crate's results but float64
    // subnormals) is put together from its bits.
    let top = 63 - mant.leading_zeros() as i32;
    let e = top + exp;
    if top <= 52 && (-1022..=1023).contains(&e) {
        let frac = (mant << (52 - top)) & ((1u64 << 52) - 1);
        return f64::from_bits(((e + 1023) as u64) << 52 | frac);
    }
    let mut v = mant as f64;
    let mut exp = exp;
    while exp > 0 {
        let step = exp.min(1000);
        v *= 2f64.powi(step);
        exp -= step;
    }
    while exp < 0 {
        let step = (-exp).min(1000);
        // Keep intermediate values exact: divide by the power as long as the
        // result stays normal, which holds because mant × 2^exp is a value
        // of the target format.
        v /= 2f64.powi(step);
        exp += step;
    }
    v
}

/// `n` (at most 64) bits of `mag` (little-endian u32 digits) from bit `lo`
/// up, as an integer; bits under 0 or above the digits read as 0.
fn bits_at(mag: &[u32], lo: i64, n: u32) -> u64 {
    debug_assert!(n <= 64);
    if n == 0 || lo + n as i64 <= 0 {
        return 0;
    }
    if lo < 0 {
        return bits_at(mag, 0, (n as i64 + lo) as u32) << (-lo) as u32;
    }
    let (word, shift) = ((lo / 32) as usize, (lo % 32) as u32);
    // shift + n <= 95: three digits hold every wanted bit.
    let window = (0..3).fold(0u128, |acc, k| {
        acc | (mag.get(word + k).copied().unwrap_or(0) as u128) << (32 * k)
    });
    let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    (window >> shift) as u64 & mask
}

/// Whether any bit of `mag` under bit `end` is set.
fn any_below(mag: &[u32], end: i64) -> bool {
    if end <= 0 {
        return false;
    }
    let (word, shift) = ((end / 32) as usize, (end % 32) as u32);
    mag[..word.min(mag.len())].iter().any(|&d| d != 0)
        || (shift > 0
            && mag
                .get(word)
                .is_some_and(|&d| d & ((1u32 << shift) - 1) != 0))
}

/// Two's complement limbs (little-endian) made their magnitude in place;
/// true when they were negative.
pub(crate) fn to_magnitude(limbs: &mut [u32]) -> bool {
    let negative = limbs.last().is_some_and(|&l| l >> 31 == 1);
    if negative {
        let mut carry = 1u64;
        for l in limbs.iter_mut() {
            let v = (!*l) as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
    }
    negative
}

/// Rounds `±mag × 2^grid` (mag little-endian u32 digits; `sticky` says a
/// nonzero remainder lies below bit 0) to nearest-even in `target`.
pub(crate) fn round_to_float(
    negative: bool,
    mag: &[u32],
    sticky_below: bool,
    grid: i32,
    target: Dtype,
) -> f64 {
    let (precision, min_exp, max_exp) = format_of(target);
    let signed = |v: f64| if negative { -v } else { v };
    let Some(top_digit) = mag.iter().rposition(|&d| d != 0) else {
        return signed(0.0);
    };
    let top = top_digit as i64 * 32 + 31 - mag[top_digit].leading_zeros() as i64;
    // Lowest kept bit: `precision` bits from the top, but not under the
    // target's subnormal ulp.
    let lowest = (top - precision as i64 + 1).max(min_exp as i64 - grid as i64);
    let mut mant = if lowest > top {
        0
    } else {
        bits_at(mag, lowest, (top - lowest + 1) as u32)
    };
    let round_bit = bits_at(mag, lowest - 1, 1);
    let sticky = sticky_below || any_below(mag, lowest - 1);
    let mut exp = lowest + grid as i64;
    if round_bit == 1 && (sticky || mant & 1 == 1) {
        mant += 1;
        if mant == 1u64 << precision {
            mant >>= 1;
            exp += 1;
        }
    }
    if mant == 0 {
        return signed(0.0);
    }
    let top_exp = exp + 63 - mant.leading_zeros() as i64;
    if top_exp > max_exp as i64 {
        return signed(f64::INFINITY);
    }
    signed(ldexp(mant, exp as i32))
}

/// Divides `±mag × 2^grid` by `count` and rounds the quotient once, to
/// nearest-even in `target`.
///
/// Only the dividend's top 128 bits are divided: with `mag = H × 2^k + L`
/// (H its top 128 bits, bit 127 set; L < 2^k the bits under them) and
/// `H = q × count + r`, `mag / count = 2^k × (q + (r × 2^k + L) / (count ×
/// 2^k))`, where the fraction lies in [0, 1) and is zero only when r and L
/// are. So `q × 2^k` is the quotient truncated, with at least 64
/// significant bits (q >= 2^127 / count >= 2^63), more than any precision
/// needs, and a nonzero r or L is exactly the sticky bit.
pub(crate) fn divide_and_round(
    negative: bool,
    mag: &[u32],
    grid: i32,
    count: u64,
    target: Dtype,
) -> f64 {
    assert!(count > 0, "mean of no values");
    let Some(top_digit) = mag.iter().rposition(|&d| d != 0) else {
        return if negative { -0.0 } else { 0.0 };
    };
    let top = top_digit as i64 * 32 + 31 - mag[top_digit].leading_zeros() as i64;
    // H: bits k .. k + 127 of mag (k < 0 shifts zeros in under mag).
    let k = top - 127;
    let head = (bits_at(mag, k + 64, 64) as u128) << 64 | bits_at(mag, k, 64) as u128;
    let q = head / count as u128;
    let sticky = !head.is_multiple_of(count as u128) || any_below(mag, k);
    let digits = [
        q as u32,
        (q >> 32) as u32,
        (q >> 64) as u32,
        (q >> 96) as u32,
    ];
    round_to_float(negative, &digits, sticky, grid + k as i32, target)
}

/// `value << shift` as `len` little-endian 32-bit words (the bits past
/// them dropped): dividends and sums the tests build at chosen positions.
#[cfg(test)]
pub(crate) fn shifted_words(value: u128, shift: u32, len: usize) -> Vec<u32> {
    (0..len)
        .map(|k| {
            let lo = 32 * k as i64 - shift as i64;
            if lo <= -32 || lo >= 128 {
                0
            } else if lo < 0 {
                (value << (-lo) as u32) as u32
            } else {
                (value >> lo as u32) as u32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_buffers_hold_every_dtype() {
        for d in Dtype::ALL {
            assert!(d.limbs() <= MAX_LIMBS, "{d}");
        }
    }

    /// Round to nearest-even bit by bit, the definition `round_to_float`
    /// implements word by word.
    fn round_bitwise(
        negative: bool,
        mag: &[u32],
        sticky_below: bool,
        grid: i32,
        target: Dtype,
    ) -> f64 {
        let (precision, min_exp, max_exp) = format_of(target);
        let bit = |i: i64| -> u64 {
            if i < 0 || (i / 32) as usize >= mag.len() {
                0
            } else {
                ((mag[(i / 32) as usize] >> (i % 32)) & 1) as u64
            }
        };
        let sign = if negative { -1.0 } else { 1.0 };
        let Some(top) = (0..mag.len() as i64 * 32).rev().find(|&i| bit(i) == 1) else {
            return sign * 0.0;
        };
        let lowest = (top - precision as i64 + 1).max(min_exp as i64 - grid as i64);
        let mut mant = 0u64;
        for i in (lowest..=top).rev() {
            mant = (mant << 1) | bit(i);
        }
        let sticky = sticky_below || (0..lowest - 1).any(|j| bit(j) == 1);
        let mut exp = lowest + grid as i64;
        if bit(lowest - 1) == 1 && (sticky || mant & 1 == 1) {
            mant += 1;
            if mant == 1u64 << precision {
                mant >>= 1;
                exp += 1;
            }
        }
        if mant == 0 {
            return sign * 0.0;
        }
        if exp + 63 - mant.leading_zeros() as i64 > max_exp as i64 {
            return sign * f64::INFINITY;
        }
        sign * ldexp(mant, exp as i32)
    }

    /// `divide_and_round` as plain u128 long division over every digit.
    fn divide_u128(negative: bool, mag: &[u32], grid: i32, count: u64, target: Dtype) -> f64 {
        let mut scaled = vec![0u32; 4];
        scaled.extend_from_slice(mag);
        let mut quot = vec![0u32; scaled.len()];
        let mut rem: u128 = 0;
        for i in (0..scaled.len()).rev() {
            let cur = (rem << 32) | scaled[i] as u128;
            quot[i] = (cur / count as u128) as u32;
            rem = cur % count as u128;
        }
        round_to_float(negative, &quot, rem != 0, grid - 128, target)
    }

    use crate::test_rng::xorshift;

    #[test]
    fn division_matches_plain_long_division() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for case in 0..20_000 {
            let len = 1 + (next() % 12) as usize;
            let mut mag: Vec<u32> = (0..len).map(|_| next() as u32).collect();
            // Leading zero digits, as most accumulators have.
            for d in mag.iter_mut().skip(1 + (next() % len as u64) as usize) {
                *d = 0;
            }
            let count = match case % 4 {
                0 => 1 + next() % 7,
                1 => 1 + next() % (1 << 32),
                2 => u32::MAX as u64 + 1 + next() % 1000,
                _ => next() | 1,
            };
            let grid = [-1074, -149, 0][case % 3];
            for target in [Dtype::F32, Dtype::F64] {
                let got = divide_and_round(case % 2 == 0, &mag, grid, count, target);
                let want = divide_u128(case % 2 == 0, &mag, grid, count, target);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{mag:x?} / {count} grid {grid} {target}"
                );
            }
        }
    }

    #[test]
    fn ldexp_puts_normal_floats_together_exactly() {
        // mant × 2^exp by exact steps of powers of two.
        fn by_steps(mant: u64, mut exp: i32) -> f64 {
            let mut v = mant as f64;
            while exp > 0 {
                v *= 2.0;
                exp -= 1;
            }
            while exp < 0 {
                v /= 2.0;
                exp += 1;
            }
            v
        }
        let mut next = xorshift(0x1405_7b7e_f767_814f);
        for case in 0..20_000 {
            let bits = 1 + case % 53;
            let mant = (next() >> (64 - bits)) | 1 << (bits - 1);
            // Results across float64's subnormal, normal and top binades.
            let top = [-1080, -1030, -1022, -1021, -500, 0, 500, 1023][case as usize % 8]
                + (next() % 8) as i32;
            let exp = top - (bits - 1);
            if top > 1023 || exp < -1074 {
                continue;
            }
            assert_eq!(
                ldexp(mant, exp).to_bits(),
                by_steps(mant, exp).to_bits(),
                "{mant:#x} {exp}"
            );
        }
        assert_eq!(ldexp(0, 5).to_bits(), 0);
    }

    #[test]
    fn division_sees_remainders_under_the_top_128_bits() {
        // Dividends count × tie × 2^shift (+ 1): the quotient is exactly
        // halfway between two floats of the target, so a lone bit far under
        // the dividend's top 128 bits decides the rounding.
        let mut next = xorshift(0x5851_f42d_4c95_7f2d);
        for case in 0..4_000 {
            let target = if case % 2 == 0 {
                Dtype::F32
            } else {
                Dtype::F64
            };
            let precision = if target == Dtype::F32 { 24 } else { 53 };
            let mant = (next() >> (64 - precision)) | 1 << (precision - 1);
            let tie = (mant as u128) << 1 | 1;
            let count = match case % 3 {
                0 => 1 + next() % 1000,
                1 => 1 + next() % (1 << 32),
                _ => 1 + (next() >> 1) % (1 << 62),
            };
            let product = tie * count as u128;
            let shift = 1 + (next() % 160) as u32;
            let mut mag = shifted_words(product, shift, 10);
            mag[0] |= (case / 3 % 2) as u32;
            let grid = -(shift as i32) - precision;
            let got = divide_and_round(false, &mag, grid, count, target);
            let want = divide_u128(false, &mag, grid, count, target);
            assert_eq!(got.to_bits(), want.to_bits(), "{mag:x?} / {count} {target}");
        }
    }

    #[test]
    fn word_rounding_matches_bitwise_rounding() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for case in 0..20_000 {
            let len = 1 + (next() % 12) as usize;
            // Sparse bit patterns make ties, exact fits and lone sticky bits common.
            let mag: Vec<u32> = (0..len)
                .map(|_| match next() % 4 {
                    0 => 0,
                    1 => 1 << (next() % 32),
                    2 => u32::MAX,
                    _ => next() as u32,
                })
                .collect();
            let grid = [-1074, -149, -200, 0, 900, 1000][case % 6];
            for target in [Dtype::F32, Dtype::F64] {
                for sticky in [false, true] {
                    let got = round_to_float(case % 2 == 0, &mag, sticky, grid, target);
                    let want = round_bitwise(case % 2 == 0, &mag, sticky, grid, target);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{mag:x?} grid {grid} {target} sticky {sticky}"
                    );
                }
            }
        }
    }

    fn sum32(xs: &[f32]) -> f32 {
        let mut s = ExactSum::new(Dtype::F32);
        xs.iter().for_each(|&x| s.add_f32(x));
        s.round(Dtype::F32) as f32
    }

    fn sum64(xs: &[f64]) -> f64 {
        let mut s = ExactSum::new(Dtype::F64);
        xs.iter().for_each(|&x| s.add_f64(x));
        s.round(Dtype::F64)
    }

    #[test]
    fn exact_where_floats_are_not() {
        assert_eq!(sum32(&[1e30, 1.0, -1e30]), 1.0);
        assert_eq!(sum32(&[16777216.0, 1.0, 1.0]), 16777218.0);
        assert_eq!(sum32(&[]), 0.0);
        assert_eq!(sum32(&[f32::MAX, f32::MAX]), f32::INFINITY);
        assert_eq!(sum32(&[f32::MAX, f32::MAX, -f32::MAX]), f32::MAX);
        assert_eq!(sum32(&[-f32::MAX, -f32::MAX]), f32::NEG_INFINITY);
        assert_eq!(
            sum32(&[f32::from_bits(1), f32::from_bits(1)]),
            f32::from_bits(2)
        );
        assert_eq!(sum64(&[1e300, 1.0, -1e300]), 1.0);
        assert_eq!(sum64(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(sum64(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert_eq!(
            sum64(&[f64::from_bits(1), f64::from_bits(3)]),
            f64::from_bits(4)
        );
        assert_eq!(sum64(&[0.1, 0.2, -0.3]), 2.7755575615628914e-17);
    }

    #[test]
    fn ties_round_to_even() {
        assert_eq!(sum32(&[16777216.0, 1.0]), 16777216.0);
        assert_eq!(sum32(&[16777216.0, 3.0]), 16777220.0);
        assert_eq!(sum32(&[16777216.0, 1.0, 1e-3]), 16777218.0);
        let two53 = 9007199254740992.0f64;
        assert_eq!(sum64(&[two53, 1.0]), two53);
        assert_eq!(sum64(&[two53, 3.0]), two53 + 4.0);
        assert_eq!(sum64(&[two53, 1.0, 1e-300]), two53 + 2.0);
    }

    #[test]
    fn float32_sums_round_to_float64_exactly_when_they_fit() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32) * 0.5 - 100.25).collect();
        let f64sum: f64 = xs.iter().map(|&x| x as f64).sum();
        let mut s = ExactSum::new(Dtype::F32);
        xs.iter().for_each(|&x| s.add_f32(x));
        assert_eq!(s.round(Dtype::F64), f64sum);
        assert_eq!(s.round(Dtype::F32) as f32, f64sum as f32);
    }

    #[test]
    fn integers_sum_exactly_and_report_overflow() {
        let mut s = ExactSum::new(Dtype::I64);
        s.add_i64(i64::MAX);
        s.add_i64(1);
        assert_eq!(s.to_i64(), None);
        s.add_i64(-2);
        assert_eq!(s.to_i64(), Some(i64::MAX - 1));
        let mut m = ExactSum::new(Dtype::I64);
        m.add_i64(i64::MIN);
        assert_eq!(m.to_i64(), Some(i64::MIN));
        m.add_i64(-1);
        assert_eq!(m.to_i64(), None);
    }

    #[test]
    fn limbs_round_trip_and_merge() {
        let mut a = ExactSum::new(Dtype::F64);
        a.add_f64(-3.5);
        a.add_f64(1e-300);
        let b = ExactSum::from_limbs(Dtype::F64, &a.to_limbs());
        assert_eq!(b.to_limbs(), a.to_limbs());
        let mut c = ExactSum::new(Dtype::F64);
        c.add_f64(3.5);
        c.merge(&b);
        assert_eq!(c.round(Dtype::F64), 1e-300);
    }

    #[test]
    fn means_round_once() {
        // (2^53 + 1) / 1 would round to 2^53 if the sum were rounded first;
        // divided by 2 it is 2^52 + 0.5, exactly representable.
        let mut s = ExactSum::new(Dtype::I64);
        s.add_i64((1 << 53) + 1);
        assert_eq!(s.mean(2, Dtype::F64), 4503599627370496.5);
        let mut t = ExactSum::new(Dtype::F64);
        t.add_f64(1.0);
        assert_eq!(t.mean(3, Dtype::F64), 1.0 / 3.0);
        let mut u = ExactSum::new(Dtype::F32);
        u.add_f32(1.0);
        assert_eq!(u.mean(3, Dtype::F32) as f32, 1.0f32 / 3.0);
        // Subnormal quotient.
        let mut v = ExactSum::new(Dtype::F32);
        v.add_f32(f32::from_bits(3));
        assert_eq!(v.mean(2, Dtype::F32) as f32, f32::from_bits(2)); // 1.5 ulp -> 2 (even)
    }
}
