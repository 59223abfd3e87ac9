//! Handles to submitted work: wait (blocking), `.await`, poll, cancel.
//! A handle dropped before its result arrives cancels the work.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use crate::error::{Error, Result};

enum State<T> {
    Pending { waker: Option<Waker> },
    Done(Result<T>),
    Taken,
}

/// The shared slot between a handle and the scheduler that completes it.
pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Slot<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Slot {
            state: Mutex::new(State::Pending { waker: None }),
            ready: Condvar::new(),
        })
    }

    /// Stores the result unless one is there already (a cancelled request
    /// keeps its `Cancelled`). Returns whether this call completed it.
    pub fn complete(&self, result: Result<T>) -> bool {
        match self.settle(result) {
            Some(wakeup) => {
                wakeup.wake();
                true
            }
            None => false,
        }
    }

    /// Like [`Slot::complete`], but the `.await`ing task's waker is handed
    /// back instead of called: the caller wakes it once it has released its
    /// own locks, since a waker may run the woken task on this very thread,
    /// and that task may call back into the scheduler. Blocked `wait()`ers
    /// (other threads) are notified at once. `None` if already settled.
    pub fn settle(&self, result: Result<T>) -> Option<Wakeup> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Pending { waker } = &mut *s else {
            return None;
        };
        let waker = waker.take();
        *s = State::Done(result);
        drop(s);
        self.ready.notify_all();
        Some(Wakeup(waker))
    }

    /// True once a result (or cancellation) is in.
    pub fn is_settled(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Pending { .. }
        )
    }
}

/// A slot as queues that hold work of several result types see it: it can
/// be failed and asked whether it is settled.
pub(crate) trait AnySlot: Send + Sync {
    /// [`Slot::settle`] with `error`.
    fn settle_err(&self, error: Error) -> Option<Wakeup>;
    /// [`Slot::is_settled`].
    fn is_settled(&self) -> bool;
}

impl<T: Send> AnySlot for Slot<T> {
    fn settle_err(&self, error: Error) -> Option<Wakeup> {
        self.settle(Err(error))
    }

    fn is_settled(&self) -> bool {
        Slot::is_settled(self)
    }
}

/// The wake-up of a settled slot's `.await`ing task, still to be delivered
/// (see [`Slot::settle`]).
#[must_use = "the awaiting task sleeps until woken"]
pub(crate) struct Wakeup(Option<Waker>);

impl Wakeup {
    /// Wakes the task. A waker is the caller's code: one that panics is
    /// logged, and does not take the scheduler thread that delivers
    /// results (nor every other request's result) down with it.
    pub fn wake(self) {
        if let Some(w) = self.0
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())).is_err()
        {
            log::error!("a task's waker panicked while gpulanes woke it; the scheduler goes on");
        }
    }
}

/// A submitted request or job. `wait()` blocks, `.await` suspends,
/// `try_result()` polls, `cancel()` cancels; dropping it unfinished cancels.
pub struct Handle<T> {
    slot: Arc<Slot<T>>,
    on_cancel: Option<Box<dyn Fn() + Send + Sync>>,
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

impl<T> Handle<T> {
    pub(crate) fn new(slot: Arc<Slot<T>>, on_cancel: impl Fn() + Send + Sync + 'static) -> Self {
        Handle {
            slot,
            on_cancel: Some(Box::new(on_cancel)),
        }
    }

    /// Blocks until the result is ready.
    pub fn wait(self) -> Result<T> {
        let mut s = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match std::mem::replace(&mut *s, State::Taken) {
                State::Done(r) => return r,
                State::Taken => return Err(Error::Cancelled),
                pending => *s = pending,
            }
            s = self.slot.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks up to `timeout`; gives the handle back if the result is not ready.
    pub fn wait_timeout(self, timeout: Duration) -> std::result::Result<Result<T>, Self> {
        let guard = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut s, _) = self
            .slot
            .ready
            .wait_timeout_while(guard, timeout, |s| matches!(s, State::Pending { .. }))
            .unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *s, State::Taken) {
            State::Done(r) => Ok(r),
            State::Taken => Ok(Err(Error::Cancelled)),
            pending => {
                *s = pending;
                drop(s);
                Err(self)
            }
        }
    }

    /// The result if it is ready (taking it), `None` otherwise. A result
    /// is delivered once: after it was taken (here or by polling the handle
    /// as a future), further `try_result`, `wait` or `.await` calls give
    /// `Err(Error::Cancelled)`.
    pub fn try_result(&mut self) -> Option<Result<T>> {
        let mut s = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *s, State::Taken) {
            State::Done(r) => Some(r),
            State::Taken => Some(Err(Error::Cancelled)),
            pending => {
                *s = pending;
                None
            }
        }
    }

    /// True once the result is ready (or the work was cancelled).
    pub fn is_finished(&self) -> bool {
        self.slot.is_settled()
    }

    /// Cancels the work: queued work never runs, a batch job stops at its
    /// next chunk, and the handle resolves to [`Error::Cancelled`] (unless
    /// the result was already in).
    pub fn cancel(&self) {
        if self.slot.complete(Err(Error::Cancelled))
            && let Some(f) = &self.on_cancel
        {
            f();
        }
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        if !self.slot.is_settled() {
            self.cancel();
        }
    }
}

impl<T> Future for Handle<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        let mut s = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *s, State::Taken) {
            State::Done(r) => Poll::Ready(r),
            State::Taken => Poll::Ready(Err(Error::Cancelled)),
            State::Pending { .. } => {
                *s = State::Pending {
                    waker: Some(cx.waker().clone()),
                };
                Poll::Pending
            }
        }
    }
}

impl<T> Unpin for Handle<T> {}
