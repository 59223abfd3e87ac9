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
//! **Exactness.** A float `sum` is the exact sum of the values rounded once
//! to the input's type (nearest, ties to even); `mean` is the exact sum
//! divided by the count, rounded once. The kernels decode every value from
//! its bits into an integer accumulator, so the result does not depend on
//! the order of the values, the chunking, the lane, the kernel shape or the
//! device, and subnormals count even on devices that flush them in float
//! arithmetic. Only a rounded sum outside the type's range becomes ±inf
//! (`[MAX, MAX, -MAX]` sums to `MAX`). Integer sums are exact int64;
//! one that does not fit is [`crate::Error::Overflow`].
//!
//! `max`/`min` order `-0.0` below `+0.0`. A `sum` of only `-0.0` values is
//! `-0.0`, as IEEE addition gives, and so is their `mean` (as in NumPy);
//! values that cancel exactly sum to `+0.0`.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A reduction operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Exact sum, rounded once.
    Sum,
    /// Exact sum divided by the count, rounded once.
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

/// The result of one reduction: one entry per partition. Float32 inputs
/// give `Reduction<f32>` (the default); the dtype-generic entry points
/// give `Reduction<Scalar>`, each value in its op's result type.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduction<T = f32> {
    /// The operation that produced it.
    pub op: Op,
    /// One value per partition; `None` where the op has no value (see the
    /// module table). For [`Op::Count`] the value is the count as `f32`;
    /// use [`Reduction::counts`] for the exact integer.
    pub values: Vec<Option<T>>,
    /// Elements that took part, per partition (all elements under
    /// [`NanPolicy::Propagate`], non-NaN ones under [`NanPolicy::Ignore`]).
    pub counts: Vec<u64>,
}

impl<T> Reduction<T> {
    /// No partitions yet.
    pub(crate) fn empty(op: Op) -> Self {
        Reduction {
            op,
            values: Vec::new(),
            counts: Vec::new(),
        }
    }
}

impl<T: Copy> Reduction<T> {
    /// The single value of a whole-buffer reduction.
    pub fn value(&self) -> Option<T> {
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
