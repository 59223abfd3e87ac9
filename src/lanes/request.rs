//! What is submitted: a [`Request`] (its input, op, partitions, NaN policy
//! and deadline) or a [`KeyedRequest`] for a [`Lane`] (both are a
//! [`Submission`]), and what a `try_` submission gives back when it cannot
//! queue one ([`TrySubmitError`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Lanes;
use super::handle::Handle;
use super::keyed::KeyedRequest;
use crate::device_array::DeviceArray;
use crate::error::{Error, Result};
use crate::keyed::{Grouped, Key};
use crate::op::{NanPolicy, Op, Reduction};
use crate::partition::Partitions;

/// Which lane a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Small requests, latency first.
    RealTime,
    /// Large jobs, throughput first.
    Batch,
}

impl Lane {
    pub(super) fn name(self) -> &'static str {
        match self {
            Lane::RealTime => "real-time",
            Lane::Batch => "batch",
        }
    }
}

/// Why [`Lanes::try_submit`](super::Lanes::try_submit) (or `try_realtime`, `try_batch`) did not
/// queue a request (`R`: the request's type, [`Request`] or a
/// [`KeyedRequest`]).
#[derive(Clone)]
pub enum TrySubmitError<R = Request> {
    /// The lane's queue is full: the request, untouched, to retry later
    /// or shed.
    Full(R),
    /// The request cannot be queued: the error [`Lanes::submit`](super::Lanes::submit) gives
    /// (invalid request, shut down, device lost).
    Failed(Error),
}

impl<R> TrySubmitError<R> {
    /// The request back, if the queue was full.
    pub fn into_request(self) -> Option<R> {
        match self {
            TrySubmitError::Full(r) => Some(r),
            TrySubmitError::Failed(_) => None,
        }
    }

    /// True when the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySubmitError::Full(_))
    }
}

impl<R> std::fmt::Debug for TrySubmitError<R> {
    // The request's data is left out: it may be large.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("Full(..)"),
            TrySubmitError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<R> std::fmt::Display for TrySubmitError<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("the lane's queue is full"),
            TrySubmitError::Failed(e) => e.fmt(f),
        }
    }
}

impl<R> std::error::Error for TrySubmitError<R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySubmitError::Full(_) => None,
            TrySubmitError::Failed(e) => Some(e),
        }
    }
}

/// What a lane takes: a [`Request`] (a reduction; its handle yields a
/// [`Reduction`]) or a [`KeyedRequest`] (a keyed reduction; its handle
/// yields a [`Grouped`]). Sealed: the lanes run these two kinds only.
pub trait Submission: sealed::Sealed {
    /// What the request's [`Handle`] yields.
    type Output;

    /// Checks and queues the request on `lane` of `lanes` (with `wait`
    /// false a full queue is [`Error::QueueFull`] at once). Use
    /// [`Lanes::submit`](super::Lanes::submit) and its relatives.
    #[doc(hidden)]
    fn enqueue(&self, lanes: &Lanes, lane: Lane, wait: bool) -> Result<Handle<Self::Output>>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Request {}
    impl<K: crate::keyed::Key> Sealed for super::KeyedRequest<K> {}
}

impl Submission for Request {
    type Output = Reduction;

    fn enqueue(&self, lanes: &Lanes, lane: Lane, wait: bool) -> Result<Handle<Reduction>> {
        lanes.enqueue(lane, self, wait)
    }
}

impl<K: Key> Submission for KeyedRequest<K> {
    type Output = Grouped<K>;

    fn enqueue(&self, lanes: &Lanes, lane: Lane, wait: bool) -> Result<Handle<Grouped<K>>> {
        lanes.enqueue_keyed(lane, self, wait)
    }
}

/// Input of a request.
#[derive(Clone)]
pub enum Input {
    /// Host memory (uploaded by the scheduler; for batch jobs chunk by
    /// chunk, through a ring of a few chunks' worth of device buffers, so a
    /// host job may be larger than GPU memory).
    Host(Arc<[f32]>),
    /// Already on the device (batch lane only).
    Device(Arc<DeviceArray>),
}

impl Input {
    pub(super) fn len(&self) -> u64 {
        match self {
            Input::Host(d) => d.len() as u64,
            Input::Device(a) => a.len(),
        }
    }
}

/// A reduction to submit to a lane.
#[derive(Clone)]
pub struct Request {
    pub(super) input: Input,
    pub(super) op: Op,
    pub(super) partitions: Partitions,
    pub(super) nan: NanPolicy,
    pub(super) deadline: Option<Instant>,
    pub(super) inject_failure: bool,
}

impl Request {
    /// `op` over host data (whole buffer, NaN propagated, no deadline).
    pub fn host(data: impl Into<Arc<[f32]>>, op: Op) -> Self {
        Request {
            input: Input::Host(data.into()),
            op,
            partitions: Partitions::Whole,
            nan: NanPolicy::Propagate,
            deadline: None,
            inject_failure: false,
        }
    }

    /// `op` over a device-resident array (batch lane).
    pub fn device(array: Arc<DeviceArray>, op: Op) -> Self {
        Request {
            input: Input::Device(array),
            op,
            partitions: Partitions::Whole,
            nan: NanPolicy::Propagate,
            deadline: None,
            inject_failure: false,
        }
    }

    pub fn partitions(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    pub fn nan(mut self, nan: NanPolicy) -> Self {
        self.nan = nan;
        self
    }

    /// Real-time only: fail with [`Error::DeadlineExceeded`] after
    /// `deadline` (see [`LanesConfig::reject_late`](super::LanesConfig#structfield.reject_late)). A request still
    /// queued at its deadline fails then; one dispatched fails if its
    /// result arrives after it.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// For tests of failure isolation (real-time only): preparing this
    /// request on the device raises a real wgpu validation error (a buffer
    /// with an invalid usage), in whatever coalesced group it lands. The
    /// request fails with [`Error::Validation`]; the others in its group do not.
    #[doc(hidden)]
    pub fn inject_failure(mut self) -> Self {
        self.inject_failure = true;
        self
    }

    /// Real-time only: a deadline `timeout` from now. A timeout too long
    /// for the clock to represent means no deadline.
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.deadline(deadline),
            None => self,
        }
    }
}
