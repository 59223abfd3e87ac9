//! CPU baselines on the same data as the GPU runs, for float32 and float64
//! inputs: the plain single-threaded loop ([`gpulanes::cpu::baseline`] for
//! float32, the same loop for float64: f64 accumulation), the same loop over
//! `std::thread::scope` chunks, and `ndarray`'s own reductions (single
//! threaded, accumulating in the input's type: what an `ndarray` user gets
//! by default).

use ndarray::{ArrayView1, ArrayView2, Axis, NdFloat};
use serde::Serialize;

use gpulanes::Op;

/// A float type with CPU baselines.
pub trait CpuFloat: NdFloat {
    /// The plain loop over `data`: one pass, f64 accumulation for sums, NaN
    /// propagated.
    fn baseline(data: &[Self], op: Op) -> f64;
    fn to_f64(self) -> f64;
    /// `n` in this type (for means: ndarray's `mean` is the sum over `n`).
    fn from_len(n: usize) -> Self;
}

impl CpuFloat for f32 {
    fn baseline(data: &[f32], op: Op) -> f64 {
        gpulanes::cpu::baseline(data, op)
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_len(n: usize) -> Self {
        n as f32
    }
}

impl CpuFloat for f64 {
    fn baseline(data: &[f64], op: Op) -> f64 {
        match op {
            Op::Sum => data.iter().sum(),
            Op::Mean => data.iter().sum::<f64>() / data.len() as f64,
            Op::Max => data.iter().fold(
                f64::NEG_INFINITY,
                |a, &b| if b > a || b.is_nan() { b } else { a },
            ),
            Op::Min => data.iter().fold(
                f64::INFINITY,
                |a, &b| if b < a || b.is_nan() { b } else { a },
            ),
            Op::Count => data.len() as f64,
        }
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_len(n: usize) -> Self {
        n as f64
    }
}

fn baseline<T: CpuFloat>(data: &[T], op: Op) -> f64 {
    T::baseline(data, op)
}

/// Which CPU implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuImpl {
    /// `gpulanes::cpu::baseline`, one thread.
    #[serde(rename = "loop_1t")]
    Loop1t,
    /// The same loop, one contiguous chunk per thread.
    LoopThreads,
    /// `ndarray` `sum` / `mean` / `fold` (and `*_axis` for partitions), one thread.
    #[serde(rename = "ndarray_1t")]
    Ndarray1t,
}

impl CpuImpl {
    pub const ALL: [CpuImpl; 3] = [CpuImpl::Loop1t, CpuImpl::LoopThreads, CpuImpl::Ndarray1t];

    pub fn name(self) -> &'static str {
        match self {
            CpuImpl::Loop1t => "loop_1t",
            CpuImpl::LoopThreads => "loop_threads",
            CpuImpl::Ndarray1t => "ndarray_1t",
        }
    }
}

/// `op` over `data`, whole (`part = None`) or in partitions of `part`
/// elements (the last may be short): one value per partition.
pub fn reduce<T: CpuFloat>(
    which: CpuImpl,
    data: &[T],
    op: Op,
    part: Option<u64>,
    threads: usize,
) -> Vec<f64> {
    match which {
        CpuImpl::Loop1t => match part {
            None => vec![baseline(data, op)],
            Some(p) => data.chunks(p as usize).map(|c| baseline(c, op)).collect(),
        },
        CpuImpl::LoopThreads => threaded(data, op, part, threads),
        CpuImpl::Ndarray1t => with_ndarray(data, op, part),
    }
}

fn combine(op: Op, parts: &[f64], n: usize) -> f64 {
    match op {
        Op::Sum | Op::Count => parts.iter().sum(),
        Op::Mean => parts.iter().sum::<f64>() / n as f64,
        Op::Max => {
            parts.iter().copied().fold(
                f64::NEG_INFINITY,
                |a, b| if b > a || b.is_nan() { b } else { a },
            )
        }
        Op::Min => {
            parts.iter().copied().fold(
                f64::INFINITY,
                |a, b| if b < a || b.is_nan() { b } else { a },
            )
        }
    }
}

fn threaded<T: CpuFloat>(data: &[T], op: Op, part: Option<u64>, threads: usize) -> Vec<f64> {
    let threads = threads.max(1);
    match part {
        None => {
            // Mean is combined from partial sums.
            let chunk_op = if op == Op::Mean { Op::Sum } else { op };
            let chunk = data.len().div_ceil(threads).max(1);
            let partials: Vec<f64> = std::thread::scope(|s| {
                let handles: Vec<_> = data
                    .chunks(chunk)
                    .map(|c| s.spawn(move || baseline(c, chunk_op)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("worker"))
                    .collect()
            });
            vec![combine(op, &partials, data.len())]
        }
        Some(p) => {
            let p = p as usize;
            let parts = data.len().div_ceil(p);
            let per_thread = parts.div_ceil(threads).max(1) * p;
            std::thread::scope(|s| {
                let handles: Vec<_> = data
                    .chunks(per_thread)
                    .map(|c| {
                        s.spawn(move || c.chunks(p).map(|x| baseline(x, op)).collect::<Vec<_>>())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("worker"))
                    .collect()
            })
        }
    }
}

fn nd_one<T: CpuFloat>(v: ArrayView1<T>, op: Op) -> f64 {
    match op {
        Op::Sum => v.sum().to_f64(),
        // What ndarray's `mean` computes (its bound needs num-traits).
        Op::Mean if v.is_empty() => f64::NAN,
        Op::Mean => (v.sum() / T::from_len(v.len())).to_f64(),
        Op::Max => v
            .fold(
                T::neg_infinity(),
                |a, &b| if b > a || b.is_nan() { b } else { a },
            )
            .to_f64(),
        Op::Min => v
            .fold(
                T::infinity(),
                |a, &b| if b < a || b.is_nan() { b } else { a },
            )
            .to_f64(),
        Op::Count => v.len() as f64,
    }
}

fn with_ndarray<T: CpuFloat>(data: &[T], op: Op, part: Option<u64>) -> Vec<f64> {
    let Some(p) = part else {
        return vec![nd_one(ArrayView1::from(data), op)];
    };
    let p = p as usize;
    let rows = data.len() / p;
    let (full, rest) = data.split_at(rows * p);
    let view = ArrayView2::from_shape((rows, p), full).expect("rows * p elements");
    let mut out: Vec<f64> = match op {
        Op::Sum => view.sum_axis(Axis(1)).iter().map(|&x| x.to_f64()).collect(),
        // What ndarray's `mean_axis` computes.
        Op::Mean if p == 0 => Vec::new(),
        Op::Mean => (view.sum_axis(Axis(1)) / T::from_len(p))
            .iter()
            .map(|&x| x.to_f64())
            .collect(),
        _ => view.rows().into_iter().map(|r| nd_one(r, op)).collect(),
    };
    if !rest.is_empty() {
        out.push(nd_one(ArrayView1::from(rest), op));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementations_agree() {
        let data: Vec<f32> = (0..10_001)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        let wide: Vec<f64> = data.iter().map(|&x| x as f64).collect();
        for op in [Op::Sum, Op::Mean, Op::Max] {
            for part in [None, Some(100), Some(333)] {
                let a = reduce(CpuImpl::Loop1t, &data, op, part, 1);
                for which in [CpuImpl::LoopThreads, CpuImpl::Ndarray1t] {
                    for threads in [1, 3] {
                        let b = reduce(which, &data, op, part, threads);
                        assert_eq!(a.len(), b.len(), "{which:?} {op} {part:?}");
                        for (x, y) in a.iter().zip(&b) {
                            assert!(
                                (x - y).abs() <= 1e-3 * x.abs().max(1.0),
                                "{which:?} {op} {part:?}: {x} vs {y}"
                            );
                        }
                        // The same values as float64: the same results.
                        let c = reduce(which, &wide, op, part, threads);
                        assert_eq!(a.len(), c.len(), "{which:?} {op} {part:?} f64");
                        for (x, y) in a.iter().zip(&c) {
                            assert!(
                                (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                                "{which:?} {op} {part:?} f64: {x} vs {y}"
                            );
                        }
                    }
                }
            }
        }
    }
}
