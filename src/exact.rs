//! An exact accumulator for f32 sums: every finite f32 is an integer multiple
//! of 2^-149, so a wide fixed-point integer holds any sum of them without
//! rounding. Rounding happens once, at the end, to nearest-even. This is the
//! reference that accuracy claims are tested against (never another float sum).

/// Bits below the binary point: the smallest subnormal f32 is 2^-149.
const FRACTION_BITS: i32 = 149;
/// 32-bit digits, stored in i64 so additions need no carry propagation.
/// 12 digits = 384 bits: 277 bits of f32 range plus headroom for 2^100 terms.
const DIGITS: usize = 12;
/// Normalise carries after this many additions (each adds < 2^32 per digit).
const NORMALISE_EVERY: u32 = 1 << 30;

/// Exact sum of finite f32 values; non-finite values are tracked as flags.
#[derive(Clone, Debug, Default)]
pub struct ExactSum {
    digits: [i64; DIGITS],
    pending: u32,
    nan: bool,
    pos_inf: bool,
    neg_inf: bool,
}

impl ExactSum {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value exactly.
    pub fn add(&mut self, x: f32) {
        if x.is_nan() {
            self.nan = true;
            return;
        }
        if x.is_infinite() {
            if x > 0.0 {
                self.pos_inf = true;
            } else {
                self.neg_inf = true;
            }
            return;
        }
        let bits = x.to_bits();
        let exp = ((bits >> 23) & 0xff) as i32;
        let frac = (bits & 0x7f_ffff) as u64;
        // value = mant * 2^(shift - 149)
        let (mant, shift) = if exp == 0 {
            (frac, 0)
        } else {
            (frac | 0x80_0000, exp - 1)
        };
        if mant == 0 {
            return;
        }
        let digit = (shift / 32) as usize;
        let wide = mant << (shift % 32); // < 2^55
        let sign = if bits >> 31 == 1 { -1 } else { 1 };
        self.digits[digit] += sign * (wide & 0xffff_ffff) as i64;
        self.digits[digit + 1] += sign * (wide >> 32) as i64;
        self.pending += 1;
        if self.pending >= NORMALISE_EVERY {
            self.normalise();
        }
    }

    fn normalise(&mut self) {
        let mut carry = 0i64;
        for d in self.digits.iter_mut() {
            let v = *d + carry;
            *d = v & 0xffff_ffff;
            carry = v >> 32; // arithmetic shift: floor division
        }
        self.digits[DIGITS - 1] += carry << 32;
        self.pending = 0;
    }

    /// True if a NaN was added.
    pub fn saw_nan(&self) -> bool {
        self.nan
    }

    /// The exact sum rounded once to the nearest f32 (ties to even), with
    /// IEEE rules for infinities and NaN. An empty or all-zero sum is +0.0.
    pub fn round_f32(&self) -> f32 {
        self.round(24, 127).map_or(f32::NAN, |v| v as f32)
    }

    /// The exact sum rounded once to the nearest f64.
    pub fn round_f64(&self) -> f64 {
        self.round(53, 1023).unwrap_or(f64::NAN)
    }

    /// Rounds to `precision` significant bits; `max_exp` is the largest
    /// binary exponent of the target format. The returned f64 is exactly the
    /// rounded value (so converting it to f32 for precision 24 is exact).
    fn round(&self, precision: u32, max_exp: i32) -> Option<f64> {
        if self.nan || (self.pos_inf && self.neg_inf) {
            return None;
        }
        if self.pos_inf {
            return Some(f64::INFINITY);
        }
        if self.neg_inf {
            return Some(f64::NEG_INFINITY);
        }
        let mut n = self.clone();
        n.normalise();
        let negative = n.digits[DIGITS - 1] < 0;
        // Magnitude as little-endian u32 digits (two's complement negate).
        let mut mag = [0u32; DIGITS];
        let mut borrow = 1u64;
        for (i, &d) in n.digits.iter().enumerate() {
            let d = d as u32;
            if negative {
                let v = (!d) as u64 + borrow;
                mag[i] = v as u32;
                borrow = v >> 32;
            } else {
                mag[i] = d;
            }
        }
        let Some(top_digit) = mag.iter().rposition(|&d| d != 0) else {
            return Some(0.0);
        };
        let top_bit = top_digit as i32 * 32 + 31 - mag[top_digit].leading_zeros() as i32;
        let bit = |i: i32| -> u64 {
            if i < 0 {
                0
            } else {
                ((mag[(i / 32) as usize] >> (i % 32)) & 1) as u64
            }
        };
        let sticky_below = |i: i32| -> bool { (0..i.max(0)).any(|j| bit(j) == 1) };
        // Keep `precision` bits, but never below 2^-149 for f32 / the target's
        // subnormal grid; our grid is 2^-149, so for f32 subnormals the
        // integer is exact already.
        let lowest_kept = (top_bit - precision as i32 + 1).max(0);
        let mut mant: u64 = 0;
        for i in (lowest_kept..=top_bit).rev() {
            mant = (mant << 1) | bit(i);
        }
        let round_bit = if lowest_kept > 0 {
            bit(lowest_kept - 1)
        } else {
            0
        };
        let sticky = lowest_kept > 1 && sticky_below(lowest_kept - 1);
        let mut exp2 = lowest_kept - FRACTION_BITS;
        if round_bit == 1 && (sticky || mant & 1 == 1) {
            mant += 1;
            if mant == 1u64 << precision {
                mant >>= 1;
                exp2 += 1;
            }
        }
        // value = mant * 2^exp2, mant < 2^precision.
        let top_exp = exp2 + 63 - mant.leading_zeros() as i32;
        let magnitude = if top_exp > max_exp {
            f64::INFINITY
        } else {
            mant as f64 * 2f64.powi(exp2)
        };
        Some(if negative { -magnitude } else { magnitude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(xs: &[f32]) -> f32 {
        let mut s = ExactSum::new();
        xs.iter().for_each(|&x| s.add(x));
        s.round_f32()
    }

    #[test]
    fn exact_where_floats_are_not() {
        assert_eq!(exact(&[1e30, 1.0, -1e30]), 1.0);
        assert_eq!(exact(&[16777216.0, 1.0, 1.0]), 16777218.0);
        assert_eq!(
            exact(&[0.1, 0.2, -0.3]),
            (0.1f64 as f32 as f64 + 0.2f32 as f64 - 0.3f32 as f64) as f32
        );
        assert_eq!(exact(&[]), 0.0);
        assert_eq!(exact(&[f32::MAX, f32::MAX]), f32::INFINITY);
        assert_eq!(exact(&[f32::MAX, f32::MAX, -f32::MAX]), f32::MAX);
        assert_eq!(exact(&[-f32::MAX, -f32::MAX]), f32::NEG_INFINITY);
        assert_eq!(
            exact(&[f32::from_bits(1), f32::from_bits(1)]),
            f32::from_bits(2)
        );
        assert!(exact(&[f32::INFINITY, f32::NEG_INFINITY]).is_nan());
        assert!(exact(&[1.0, f32::NAN]).is_nan());
    }

    #[test]
    fn ties_round_to_even() {
        // 2^24 + 1 is a tie between 2^24 and 2^24 + 2: even wins.
        assert_eq!(exact(&[16777216.0, 1.0]), 16777216.0);
        // 2^24 + 3 is a tie between 2^24 + 2 and 2^24 + 4: even mantissa is + 4.
        assert_eq!(exact(&[16777216.0, 3.0]), 16777220.0);
        // Just above the tie rounds up.
        assert_eq!(exact(&[16777216.0, 1.0, 1e-3]), 16777218.0);
    }

    #[test]
    fn matches_f64_sum_when_f64_is_exact() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32) * 0.5 - 100.25).collect();
        let f64sum: f64 = xs.iter().map(|&x| x as f64).sum();
        assert_eq!(exact(&xs), f64sum as f32);
        let mut s = ExactSum::new();
        xs.iter().for_each(|&x| s.add(x));
        assert_eq!(s.round_f64(), f64sum);
    }
}
