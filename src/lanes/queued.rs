//! What the lanes' queues hold: each lane takes reductions and keyed
//! reductions, in one queue per lane, so that both kinds keep their order
//! of arrival, their queue bounds and their deadlines alike.

use std::sync::Arc;
use std::time::Instant;

use super::batch::BatchEntry;
use super::handle::AnySlot;
use super::keyed::{KeyedBatch, KeyedEntry};
use super::realtime::RtEntry;

/// A queued real-time request.
pub(super) enum RtJob {
    /// A reduction (coalesced with the reductions queued next to it).
    Reduce(RtEntry),
    /// A keyed reduction (a submission of its own).
    Keyed(KeyedEntry),
}

impl RtJob {
    /// Input bytes, what the queue's byte bound counts.
    pub fn bytes(&self) -> u64 {
        match self {
            RtJob::Reduce(r) => r.bytes(),
            RtJob::Keyed(k) => k.bytes,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self {
            RtJob::Reduce(r) => r.deadline,
            RtJob::Keyed(k) => k.deadline,
        }
    }

    pub fn enqueued(&self) -> Instant {
        match self {
            RtJob::Reduce(r) => r.enqueued,
            RtJob::Keyed(k) => k.enqueued,
        }
    }

    pub fn slot(&self) -> &dyn AnySlot {
        match self {
            RtJob::Reduce(r) => r.answer.as_any(),
            RtJob::Keyed(k) => &*k.slot,
        }
    }
}

/// A queued batch job.
pub(super) enum BatchJob {
    Reduce(BatchEntry),
    Keyed(KeyedBatch),
}

impl BatchJob {
    pub fn slot(&self) -> Arc<dyn AnySlot> {
        match self {
            BatchJob::Reduce(b) => b.answer.shared(),
            BatchJob::Keyed(k) => k.entry.slot.clone(),
        }
    }
}
