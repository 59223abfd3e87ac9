//! CPU implementations of every op with the same semantics and the same
//! bits as the GPU path: the reference (through [`State`], whose sums are
//! exact integers rounded once) used by the tests and by `gpulanes bench`
//! to check results, a public fallback for any [`Element`] type, and a
//! plain single-pass loop that serves as the CPU speed baseline.

use crate::dtype::{Element, Scalar};
use crate::error::Result;
use crate::op::{NanPolicy, Op, Reduction};
use crate::partial::scalar_to_f32;
use crate::partition::Partitions;
use crate::state::{State, StateKind};

/// The reference for `op` over each partition of float32 `data`: sums
/// exact and rounded once, as on the GPU.
pub fn reference(
    data: &[f32],
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
) -> Result<Reduction> {
    let r = reduce(data, op, partitions, nan)?;
    Ok(Reduction {
        op,
        values: r.values.into_iter().map(|v| v.map(scalar_to_f32)).collect(),
        counts: r.counts,
    })
}

/// `op` over each partition of `data` of any [`Element`] type, on the CPU,
/// with the same results as [`crate::Engine::reduce_slice`].
pub fn reduce<E: Element>(
    data: &[E],
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
) -> Result<Reduction<Scalar>> {
    let offsets = partitions.offsets(data.len() as u64)?;
    let mut values = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut counts = Vec::with_capacity(values.capacity());
    for w in offsets.windows(2) {
        let s = State::of(&data[w[0] as usize..w[1] as usize], StateKind::for_op(op));
        values.push(s.finalize(op, nan)?);
        counts.push(s.count(nan));
    }
    Ok(Reduction { op, values, counts })
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
