//! What is submitted: a [`Request`] (its input, op, partitions, NaN policy
//! and deadline) or a [`KeyedRequest`] for a [`Lane`] (both are a
//! [`Submission`]), and what a `try_` submission gives back when it cannot
//! queue one ([`TrySubmitError`]).
//!
//! A `Request<f32>` (made by [`Request::host`] or [`Request::device`])
//! reduces float32 values and yields float32 results; a `Request<Scalar>`
//! (made by [`Request::host_typed`] or [`Request::device_typed`]) reduces
//! values of any [`Element`] type and yields each value in its op's result
//! type, as [`Engine::reduce_slice`](crate::Engine::reduce_slice) does.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Lanes;
use super::answer::Answer;
use super::handle::{Handle, Slot};
use super::keyed::KeyedRequest;
use crate::device_array::DeviceArray;
use crate::dtype::{Dtype, Element, Scalar};
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
/// [`Reduction`], of `f32` or of [`Scalar`]) or a [`KeyedRequest`] (a keyed
/// reduction; its handle yields a [`Grouped`]). Sealed: the lanes run these
/// kinds only.
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
    impl Sealed for super::Request<f32> {}
    impl Sealed for super::Request<crate::dtype::Scalar> {}
    impl<K: crate::keyed::Key> Sealed for super::KeyedRequest<K> {}
}

impl Submission for Request<f32> {
    type Output = Reduction;

    fn enqueue(&self, lanes: &Lanes, lane: Lane, wait: bool) -> Result<Handle<Reduction>> {
        if let Input::Device(a) = &self.input
            && a.dtype() != Dtype::F32
        {
            return Err(Error::InvalidInput(format!(
                "Request::device takes float32 arrays; this DeviceArray holds {} \
                 (submit it as Request::device_typed)",
                a.dtype()
            )));
        }
        let slot = Slot::new();
        lanes.enqueue(lane, self, Answer::Floats(slot.clone()), wait)?;
        Ok(lanes.handle(lane, slot))
    }
}

impl Submission for Request<Scalar> {
    type Output = Reduction<Scalar>;

    fn enqueue(&self, lanes: &Lanes, lane: Lane, wait: bool) -> Result<Handle<Reduction<Scalar>>> {
        let slot = Slot::new();
        lanes.enqueue(lane, self, Answer::Typed(slot.clone()), wait)?;
        Ok(lanes.handle(lane, slot))
    }
}

impl<K: Key> Submission for KeyedRequest<K> {
    type Output = Grouped<K>;

    fn enqueue(&self, lanes: &Lanes, lane: Lane, wait: bool) -> Result<Handle<Grouped<K>>> {
        lanes.enqueue_keyed(lane, self, wait)
    }
}

/// A column of host data as the 32-bit words the kernels read.
pub(super) trait HostWords: Send + Sync {
    fn words(&self) -> &[u32];
}

/// Only keys and elements are wrapped (4- and 8-byte integers and floats),
/// so the cast always holds.
impl<T: bytemuck::Pod + Send + Sync> HostWords for Arc<[T]> {
    fn words(&self) -> &[u32] {
        bytemuck::cast_slice(&self[..])
    }
}

/// Host values of one dtype, shared with the request that holds them.
#[derive(Clone)]
pub(super) struct HostValues {
    words: Arc<dyn HostWords>,
    dtype: Dtype,
    len: u64,
}

impl HostValues {
    pub fn new<E: Element>(data: Arc<[E]>) -> Self {
        HostValues {
            len: data.len() as u64,
            words: Arc::new(data),
            dtype: E::DTYPE,
        }
    }

    /// The values as 32-bit words (two a value for 64-bit dtypes).
    pub fn words(&self) -> &[u32] {
        self.words.words()
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
}

/// Input of a request.
#[derive(Clone)]
pub(super) enum Input {
    /// Host memory (uploaded by the scheduler; for batch jobs chunk by
    /// chunk, through a ring of a few chunks' worth of device buffers, so a
    /// host job may be larger than GPU memory).
    Host(HostValues),
    /// Already on the device (batch lane only).
    Device(Arc<DeviceArray>),
}

impl Input {
    /// Values (not words).
    pub fn len(&self) -> u64 {
        match self {
            Input::Host(d) => d.len,
            Input::Device(a) => a.len(),
        }
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            Input::Host(d) => d.dtype,
            Input::Device(a) => a.dtype(),
        }
    }

    /// Bytes of the values: what queue bounds, metrics and time estimates
    /// count.
    pub fn bytes(&self) -> u64 {
        self.len() * self.dtype().size()
    }
}

/// A reduction to submit to a lane. `T` is the type of its result's
/// values: `f32` for a request over float32 values ([`Request::host`],
/// [`Request::device`]), [`Scalar`] for one over values of any
/// [`Element`] type ([`Request::host_typed`], [`Request::device_typed`]).
///
/// ```
/// use gpulanes::{Engine, Lanes, LanesConfig, Op, Request, Scalar};
///
/// let engine = Engine::new()?;
/// let lanes = Lanes::new(&engine, LanesConfig::default())?;
/// let floats = lanes.realtime(Request::host(vec![1.5f32, 2.5], Op::Sum))?;
/// let doubles = lanes.realtime(Request::host_typed(vec![0.1f64, 0.2, 0.3], Op::Sum))?;
/// let ints = lanes.batch(Request::host_typed(vec![i64::MAX, -1], Op::Sum))?;
/// assert_eq!(floats.wait()?.value(), Some(4.0));
/// // The exact sum rounded once (adding the doubles one by one gives
/// // 0.6000000000000001).
/// assert_eq!(doubles.wait()?.value(), Some(Scalar::F64(0.6)));
/// assert_eq!(ints.wait()?.value(), Some(Scalar::I64(i64::MAX - 1)));
/// # Ok::<(), gpulanes::Error>(())
/// ```
pub struct Request<T = f32> {
    pub(super) input: Input,
    pub(super) op: Op,
    pub(super) partitions: Partitions,
    pub(super) nan: NanPolicy,
    pub(super) deadline: Option<Instant>,
    pub(super) inject_failure: bool,
    result: PhantomData<fn() -> T>,
}

// Not derived: a derive would ask `T: Clone`, which the marker needs not.
impl<T> Clone for Request<T> {
    fn clone(&self) -> Self {
        Request {
            input: self.input.clone(),
            op: self.op,
            partitions: self.partitions.clone(),
            nan: self.nan,
            deadline: self.deadline,
            inject_failure: self.inject_failure,
            result: PhantomData,
        }
    }
}

impl Request<f32> {
    /// `op` over float32 host data (whole buffer, NaN propagated, no
    /// deadline). Values of other types: [`Request::host_typed`].
    pub fn host(data: impl Into<Arc<[f32]>>, op: Op) -> Self {
        Request::over(Input::Host(HostValues::new(data.into())), op)
    }

    /// `op` over a device-resident float32 array (batch lane). Arrays of
    /// other dtypes: [`Request::device_typed`] (this one is refused when
    /// submitted).
    pub fn device(array: Arc<DeviceArray>, op: Op) -> Self {
        Request::over(Input::Device(array), op)
    }
}

impl Request<Scalar> {
    /// `op` over host values of any [`Element`] type (`f32`, `f64`, `i32`,
    /// `u32`, `i64`; whole buffer, NaN propagated, no deadline). The
    /// handle yields each value in its op's result type (see
    /// [`crate::dtype`]): float sums and means are exact sums rounded once,
    /// integer sums exact int64 (a partition whose sum passes int64 fails
    /// the request with [`Error::Overflow`]), with the bits
    /// [`Engine::reduce_slice`](crate::Engine::reduce_slice) gives.
    pub fn host_typed<E: Element>(data: impl Into<Arc<[E]>>, op: Op) -> Self {
        Request::over(Input::Host(HostValues::new(data.into())), op)
    }

    /// `op` over a device-resident array of any dtype (batch lane), as
    /// [`Engine::reduce_device_typed`](crate::Engine::reduce_device_typed)
    /// computes it.
    pub fn device_typed(array: Arc<DeviceArray>, op: Op) -> Self {
        Request::over(Input::Device(array), op)
    }
}

impl<T> Request<T> {
    fn over(input: Input, op: Op) -> Self {
        Request {
            input,
            op,
            partitions: Partitions::Whole,
            nan: NanPolicy::Propagate,
            deadline: None,
            inject_failure: false,
            result: PhantomData,
        }
    }

    /// The element type of the request's values.
    pub fn dtype(&self) -> Dtype {
        self.input.dtype()
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
