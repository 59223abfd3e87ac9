//! What a reduction computes: the operation, the NaN policy, and the result
//! type with its documented semantics.
//!
//! | op      | empty partition | NaN (propagate) | NaN (ignore)        | infinities          |
//! |---------|-----------------|-----------------|---------------------|---------------------|
//! | `sum`   | `Some(0.0)`     | `NaN`           | skipped             | IEEE (+inf + -inf = NaN) |
//! | `mean`  | `None`          | `NaN`           | skipped (not counted) | IEEE              |
//! | `max`   | `None`          | `NaN`           | skipped; all-NaN is `None` | ordinary values |
//! | `min`   | `None`          | `NaN`           | skipped; all-NaN is `None` | ordinary values |
//! | `count` | `Some(0.0)`     | counts NaN      | NaN not counted     | counted             |
//!
//! `max`/`min` order `-0.0` below `+0.0`. A `sum` of only `-0.0` values is
//! `-0.0`, as IEEE addition gives, and so is their `mean` (as in NumPy);
//! values that cancel exactly sum to `+0.0`. Sums whose running total passes
//! f32's range stay exact: inputs of magnitude >= 2^100 are summed apart, scaled by 2^-64,
//! and the two sums are added in f64 on the host, so `[MAX, MAX, -MAX]` sums
//! to `MAX` and the mean of `[MAX, MAX]` is `MAX`; only a result outside f32's
//! range becomes ±inf.
//!
//! Subnormals: WGSL lets a device flush subnormal floats to zero in
//! arithmetic, and NVIDIA GPUs do. There, subnormal inputs (and subnormal
//! intermediate sums) count as zero in `sum`/`mean` (an absolute error below
//! n × 2^-126); `max`/`min` compare bits and keep them.
//! [`crate::AdapterSummary::flushes_subnormals`] says which kind of device
//! you have (measured when the engine starts).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A reduction operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Compensated sum.
    Sum,
    /// Compensated sum divided by the count.
    Mean,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
    /// Number of elements (non-NaN elements under [`NanPolicy::Ignore`]).
    Count,
}

impl Op {
    /// All operations, in CLI order.
    pub const ALL: [Op; 5] = [Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Count];

    /// The CLI / JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Sum => "sum",
            Op::Mean => "mean",
            Op::Max => "max",
            Op::Min => "min",
            Op::Count => "count",
        }
    }

    /// The GPU kernel family that computes this op.
    pub(crate) fn kernel(self) -> KernelOp {
        match self {
            Op::Sum | Op::Mean | Op::Count => KernelOp::Sum,
            Op::Max => KernelOp::Max,
            Op::Min => KernelOp::Min,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Op::ALL
            .into_iter()
            .find(|op| op.name() == s)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown op {s:?}: expected one of sum, mean, max, min, count"
                ))
            })
    }
}

/// The shader-side operation (`OP` override constant of `reduce.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KernelOp {
    Sum = 0,
    Max = 1,
    Min = 2,
}

/// What to do with NaN inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NanPolicy {
    /// Any NaN makes the result NaN (NumPy).
    #[default]
    Propagate,
    /// NaNs are skipped as if absent (Arrow, Polars).
    Ignore,
}

impl FromStr for NanPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "propagate" => Ok(NanPolicy::Propagate),
            "ignore" => Ok(NanPolicy::Ignore),
            _ => Err(Error::InvalidInput(format!(
                "unknown NaN policy {s:?}: expected propagate or ignore"
            ))),
        }
    }
}

/// The result of one reduction: one entry per partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduction {
    /// The operation that produced it.
    pub op: Op,
    /// One value per partition; `None` where the op has no value (see the
    /// module table). For [`Op::Count`] the value is the count as `f32`;
    /// use [`Reduction::counts`] for the exact integer.
    pub values: Vec<Option<f32>>,
    /// Elements that took part, per partition (all elements under
    /// [`NanPolicy::Propagate`], non-NaN ones under [`NanPolicy::Ignore`]).
    pub counts: Vec<u64>,
}

impl Reduction {
    /// The single value of a whole-buffer reduction.
    pub fn value(&self) -> Option<f32> {
        self.values.first().copied().flatten()
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no partitions.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
