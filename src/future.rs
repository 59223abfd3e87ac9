//! [`ReductionFuture`]: the result of an async reduction, resolved from
//! its readback callback, with no runtime behind it (any executor, or
//! none, can await it).
//!
//! The request is recorded and submitted when the async method is called;
//! the future only waits for the result. The engine's poller thread (see
//! `poller`) drives the device, so the future needs no one else to poll
//! wgpu. Dropping the future does not cancel the GPU work: it finishes,
//! and its buffers return to the engine, unobserved.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::sync::lock;

/// The result of one of the engine's async reductions (see
/// [`Engine::reduce_partitions_async`](crate::Engine::reduce_partitions_async)):
/// `Send`, `'static`, and independent of the input it was made from (the
/// input was copied to the GPU, or is a [`DeviceArray`](crate::DeviceArray)
/// the GPU work holds).
///
/// Errors (bad input, a lost device, out of memory, ...) come out of the
/// future as `Err`, never as a panic. Polling it again after it returned
/// its result gives [`Error::Internal`].
#[must_use = "the result of an async reduction is in the future; dropping it discards the result"]
pub struct ReductionFuture<T> {
    slot: Arc<Slot<T>>,
}

/// Where the readback callback (or the poller, on a failed wait) puts the
/// result for the future to take; the first result put stays.
pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    result: Option<Result<T>>,
    settled: bool,
    waker: Option<Waker>,
}

impl<T> Slot<T> {
    /// Puts the result and wakes the task awaiting it; later results are
    /// ignored.
    pub fn settle(&self, result: Result<T>) {
        let waker = {
            let mut s = lock(&self.state);
            if s.settled {
                return;
            }
            s.settled = true;
            s.result = Some(result);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The promise to settle a slot, held by a readback callback: dropped
/// without being kept (a callback wgpu dropped without running it), it
/// settles the slot with [`Error::Internal`], so no future waits forever.
pub(crate) struct Promise<T>(Arc<Slot<T>>);

impl<T> Promise<T> {
    pub fn new(slot: &Arc<Slot<T>>) -> Self {
        Promise(slot.clone())
    }

    /// Puts the result (see [`Slot::settle`]).
    pub fn keep(self, result: Result<T>) {
        self.0.settle(result);
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        // A no-op after `keep`: the first result stays.
        self.0
            .settle(Err(Error::Internal("a readback callback never ran".into())));
    }
}

impl<T> ReductionFuture<T> {
    /// A future still waiting, and the slot that settles it.
    pub(crate) fn pending() -> (Self, Arc<Slot<T>>) {
        let slot = Arc::new(Slot {
            state: Mutex::new(State {
                result: None,
                settled: false,
                waker: None,
            }),
        });
        (ReductionFuture { slot: slot.clone() }, slot)
    }

    /// A future that is already settled (an error found before any GPU
    /// work, or a result that needed none).
    pub(crate) fn ready(result: Result<T>) -> Self {
        let (future, slot) = Self::pending();
        slot.settle(result);
        future
    }
}

impl<T> Future for ReductionFuture<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut s = lock(&self.slot.state);
        if let Some(result) = s.result.take() {
            return Poll::Ready(result);
        }
        if s.settled {
            return Poll::Ready(Err(Error::Internal(
                "a ReductionFuture was polled after it returned its result".into(),
            )));
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> std::fmt::Debug for ReductionFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settled = lock(&self.slot.state).settled;
        f.debug_struct("ReductionFuture")
            .field("settled", &settled)
            .finish()
    }
}
