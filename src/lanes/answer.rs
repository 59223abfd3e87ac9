//! Where a reduction's result goes: the handle of a float32 [`Request`]
//! (values as `f32`) or of a typed one (values as [`Scalar`], in their
//! op's result type). The lanes compute every result in its result type
//! and convert only at the end, so a float32 request gets the bits it
//! would get alone, whatever it is coalesced with.
//!
//! [`Request`]: super::Request

use std::sync::Arc;

use super::handle::{AnySlot, Slot, Wakeup};
use crate::dtype::Scalar;
use crate::error::{Error, Result};
use crate::op::Reduction;
use crate::partial::scalar_to_f32;

/// The slot of a submitted reduction.
#[derive(Clone)]
pub(super) enum Answer {
    Floats(Arc<Slot<Reduction>>),
    Typed(Arc<Slot<Reduction<Scalar>>>),
}

impl Answer {
    /// Settles the slot with `result` (float32 values for a float32
    /// request); `None` if it was settled already.
    pub fn settle(&self, result: Result<Reduction<Scalar>>) -> Option<Wakeup> {
        match self {
            Answer::Floats(slot) => slot.settle(result.map(|r| Reduction {
                op: r.op,
                values: r.values.into_iter().map(|v| v.map(scalar_to_f32)).collect(),
                counts: r.counts,
            })),
            Answer::Typed(slot) => slot.settle(result),
        }
    }

    /// Fails the slot with `error`; true when this call settled it.
    pub fn fail(&self, error: Error) -> bool {
        match self.as_any().settle_err(error) {
            Some(w) => {
                w.wake();
                true
            }
            None => false,
        }
    }

    pub fn as_any(&self) -> &dyn AnySlot {
        match self {
            Answer::Floats(slot) => &**slot,
            Answer::Typed(slot) => &**slot,
        }
    }

    pub fn shared(&self) -> Arc<dyn AnySlot> {
        match self {
            Answer::Floats(slot) => slot.clone(),
            Answer::Typed(slot) => slot.clone(),
        }
    }

    pub fn is_settled(&self) -> bool {
        self.as_any().is_settled()
    }
}
