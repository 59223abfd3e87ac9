//! CPU implementations of every op with the same semantics as the GPU path:
//! the exact reference (sums through [`ExactSum`], rounded once) used by the
//! tests and by `gpulanes bench` to check results, and a plain single-pass
//! loop that serves as the CPU speed baseline.

use crate::error::Result;
use crate::exact::ExactSum;
use crate::op::{NanPolicy, Op, Reduction};
use crate::partition::Partitions;

/// The exactly rounded reference for `op` over each partition of `data`.
///
/// `sum` is the exact sum rounded once to f32; `mean` is the exact sum
/// rounded to f64, divided by the count and rounded to f32.
pub fn reference(
    data: &[f32],
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
) -> Result<Reduction> {
    let offsets = partitions.offsets(data.len() as u64)?;
    let mut values = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut counts = Vec::with_capacity(values.capacity());
    for w in offsets.windows(2) {
        let part = &data[w[0] as usize..w[1] as usize];
        let (v, c) = reference_one(part, op, nan);
        values.push(v);
        counts.push(c);
    }
    Ok(Reduction { op, values, counts })
}

fn reference_one(part: &[f32], op: Op, nan: NanPolicy) -> (Option<f32>, u64) {
    let nans = part.iter().filter(|x| x.is_nan()).count() as u64;
    let count = match nan {
        NanPolicy::Propagate => part.len() as u64,
        NanPolicy::Ignore => part.len() as u64 - nans,
    };
    let propagate_nan = nan == NanPolicy::Propagate && nans > 0;
    let valid = part.iter().copied().filter(|x| !x.is_nan());
    let value = match op {
        Op::Count => Some(count as f32),
        _ if propagate_nan => Some(f32::NAN),
        Op::Sum | Op::Mean => {
            let mut s = ExactSum::new();
            valid.for_each(|x| s.add(x));
            // IEEE: a sum of only -0.0 values is -0.0 (and so is their mean);
            // an exact cancellation is +0.0.
            let all_neg_zero = count > 0
                && part
                    .iter()
                    .filter(|x| !x.is_nan())
                    .all(|x| x.to_bits() == 0x8000_0000);
            if op == Op::Sum {
                Some(if all_neg_zero { -0.0 } else { s.round_f32() })
            } else if count == 0 {
                None
            } else if all_neg_zero {
                Some(-0.0)
            } else {
                Some((s.round_f64() / count as f64) as f32)
            }
        }
        Op::Max => valid.reduce(|a, b| if total_gt(b, a) { b } else { a }),
        Op::Min => valid.reduce(|a, b| if total_gt(a, b) { b } else { a }),
    };
    (value, count)
}

/// `a > b` for non-NaN floats, with -0.0 < +0.0.
fn total_gt(a: f32, b: f32) -> bool {
    a > b || (a == 0.0 && b == 0.0 && a.is_sign_positive() && b.is_sign_negative())
}

/// The CPU speed baseline: one plain pass per partition, f64 accumulation for
/// sums (what a careful CPU implementation does), NaN propagated.
pub fn baseline(data: &[f32], op: Op) -> f64 {
    match op {
        Op::Sum => data.iter().map(|&x| x as f64).sum(),
        Op::Mean => data.iter().map(|&x| x as f64).sum::<f64>() / data.len() as f64,
        Op::Max => data.iter().fold(
            f32::NEG_INFINITY,
            |a, &b| if b > a || b.is_nan() { b } else { a },
        ) as f64,
        Op::Min => data.iter().fold(
            f32::INFINITY,
            |a, &b| if b < a || b.is_nan() { b } else { a },
        ) as f64,
        Op::Count => data.len() as f64,
    }
}
