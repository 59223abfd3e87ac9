//! The host side of a `Partial` (reduce.wgsl): its layout, and how the final
//! partial of a partition becomes the value the user sees, applying the NaN
//! policy and IEEE rules for infinities.

use bytemuck::{Pod, Zeroable};

use crate::op::{NanPolicy, Op};

const FLAG_NAN: u32 = 1;
const FLAG_POS_INF: u32 = 2;
const FLAG_NEG_INF: u32 = 4;

/// `Partial` in reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct Partial {
    pub a: f32,
    pub b: f32,
    pub count_lo: u32,
    pub hi_flags: u32,
    /// Sum of the inputs of magnitude >= 2^100, scaled by 2^-64.
    pub big_a: f32,
    pub big_b: f32,
    pub _pad: [u32; 2],
}

impl Partial {
    /// Non-NaN inputs seen.
    pub fn count(&self) -> u64 {
        self.count_lo as u64 | ((self.hi_flags >> 8) as u64) << 32
    }

    fn has(&self, flag: u32) -> bool {
        self.hi_flags & flag != 0
    }

    /// The sum in f64: the double-single small part plus the big part
    /// scaled back by 2^64 (f64's range holds any f32 sum).
    fn total(&self) -> f64 {
        let small = self.a as f64 + self.b as f64;
        let big = (self.big_a as f64 + self.big_b as f64) * 2f64.powi(64);
        small + big
    }

    /// The sum rounded to f32. Where both parts are zero apart from `a`,
    /// the f32 sum `a + big_a` keeps IEEE's sign of zero: both high words
    /// start at -0.0 in the shader, so the sum is -0.0 only when every
    /// value added was -0.0, and +0.0 when values cancelled exactly (in
    /// either part). (`total`, in f64, would turn -0.0 + 0.0 into +0.0.)
    fn sum(&self) -> f32 {
        if self.b == 0.0 && self.big_a == 0.0 {
            self.a + self.big_a
        } else {
            self.total() as f32
        }
    }
}

/// The value and count of one partition of `len` items whose final partial
/// is `p` (`None` when the partition is empty).
pub fn finalize(op: Op, nan: NanPolicy, len: u64, p: Option<&Partial>) -> (Option<f32>, u64) {
    let p = p.copied().unwrap_or_default();
    let count = match nan {
        NanPolicy::Propagate => len,
        NanPolicy::Ignore => p.count(),
    };
    if op == Op::Count {
        return (Some(count as f32), count);
    }
    if len > 0 && nan == NanPolicy::Propagate && p.has(FLAG_NAN) {
        return (Some(f32::NAN), count);
    }
    let valid = p.count();
    let value = match op {
        Op::Sum | Op::Mean => {
            let total = if p.has(FLAG_POS_INF) && p.has(FLAG_NEG_INF) {
                f32::NAN
            } else if p.has(FLAG_POS_INF) {
                f32::INFINITY
            } else if p.has(FLAG_NEG_INF) {
                f32::NEG_INFINITY
            } else if valid == 0 {
                0.0
            } else {
                p.sum()
            };
            if op == Op::Sum {
                Some(total)
            } else if valid == 0 {
                None
            } else if total.is_nan() || p.has(FLAG_POS_INF) || p.has(FLAG_NEG_INF) {
                Some(total)
            } else if total == 0.0 {
                // Zero over the count, with the sum's sign: the mean of only
                // -0.0 values is -0.0, as in NumPy.
                Some(total)
            } else {
                Some((p.total() / valid as f64) as f32)
            }
        }
        Op::Max | Op::Min => (valid > 0).then_some(p.a),
        Op::Count => unreachable!("handled above"),
    };
    (value, count)
}
