//! The host side of a GPU partial (shaders/exact.wgsl): the fixed-size
//! float32 partial that the streaming paths keep between submissions, and
//! how a final partial becomes the value the user sees (through
//! [`State`], which applies the NaN policy and IEEE rules).

use bytemuck::{Pod, Zeroable};

use crate::dtype::{Dtype, Scalar};
use crate::op::{NanPolicy, Op};
use crate::state::{State, StateKind};

/// One float32 partial as the kernels write it (16 words: limbs, count,
/// flags, key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct Partial {
    pub words: [u32; 16],
}

/// A float32 result value: the f32 itself, or a count as f32.
pub(crate) fn scalar_to_f32(s: Scalar) -> f32 {
    match s {
        Scalar::F32(v) => v,
        other => other.as_f64() as f32,
    }
}

/// The value and count of one float32 partition of `len` items whose final
/// partial is `p` (`None` when the partition is empty).
pub fn finalize(op: Op, nan: NanPolicy, len: u64, p: Option<&Partial>) -> (Option<f32>, u64) {
    let kind = StateKind::for_op(op);
    let state = match p {
        Some(p) => State::from_gpu(Dtype::F32, kind, len, &p.words),
        None => State::empty(Dtype::F32, kind),
    };
    let value = state
        .finalize(op, nan)
        .expect("float32 states always finalise")
        .map(scalar_to_f32);
    (value, state.count(nan))
}
