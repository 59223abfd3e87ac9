//! Shutting the scheduler down, in one place: the order below is the only
//! one the scheduler uses, whether [`Lanes`] is dropped or a scheduler
//! thread panics.
//!
//! # Sequence
//!
//! 1. **Refuse new work.** `State::shutdown` is set under the state lock,
//!    and the dispatcher (`work`) and every thread waiting for queue space
//!    or idleness (`space`) are woken. From here on `submit` and the `try_`
//!    forms fail with [`Error::Shutdown`], submitters blocked on a full
//!    queue are released with it, a batch job its submitter was preparing
//!    is not queued (its submitter gets [`Error::Shutdown`]), and
//!    `wait_idle` returns.
//! 2. **Fail the queues.** The dispatcher, at its next look (after the
//!    chunk or group it is submitting, if any: a batch job between chunks
//!    goes back to its queue first), fails every queued real-time request
//!    and batch job with [`Error::Shutdown`] and exits. Nothing is submitted
//!    to the GPU after that.
//! 3. **Join the dispatcher** (on drop).
//! 4. **Drain the GPU.** The poller is told to stop (`Inflight::stop`), but
//!    it first waits for every submission already made, so work on the GPU
//!    finishes and its handles get their results (or the device's error).
//! 5. **Join the poller** (on drop).
//!
//! A scheduler thread that panics (a bug in gpulanes) runs steps 1 and 2 at
//! once on its way out (see [`survive_panic`]); the other thread goes on
//! until the scheduler is dropped, which runs the whole sequence (steps 1
//! and 2 again find nothing to do). A batch job held by a panicking
//! dispatcher fails with [`Error::Shutdown`] ([`FailOnPanic`]), as does a
//! real-time request dropped without an answer (`RtEntry`'s `Drop`).
//!
//! A lost device is not a shutdown: queued work fails with
//! [`Error::DeviceLost`] (the dispatcher calls [`fail_queued`] with it, and
//! new submissions are refused), but the threads stay until the scheduler
//! is dropped, which then runs this sequence.

use std::sync::{Arc, MutexGuard};

use super::Lanes;
use super::handle::{AnySlot, Wakeup};
use super::shared::{Shared, State, lock, wake_all};
use crate::error::Error;

/// Runs the shutdown sequence (see the module documentation) for a
/// dropped [`Lanes`]: refuses new work, lets the dispatcher fail the queues
/// and exit, joins it, lets the poller drain the GPU, and joins it.
pub(super) fn shut_down(lanes: &mut Lanes) {
    let sh = &lanes.shared;
    refuse_new_work(sh);
    if let Some(d) = lanes.dispatcher.take() {
        let _ = d.join();
    }
    lock(&sh.inflight).stop = true;
    sh.inflight_cv.notify_all();
    if let Some(p) = lanes.poller.take() {
        let _ = p.join();
    }
}

/// Step 1: sets the shutdown flag and wakes every thread that waits on the
/// state (the dispatcher, blocked submitters, `wait_idle`).
fn refuse_new_work(sh: &Shared) {
    lock(&sh.state).shutdown = true;
    sh.work.notify_all();
    sh.space.notify_all();
}

/// Step 2, the dispatcher's last act: fails everything queued with
/// [`Error::Shutdown`] (releasing the state lock).
pub(super) fn dispatcher_exits(sh: &Shared, st: MutexGuard<'_, State>) {
    fail_queued(sh, st, &Error::Shutdown);
}

/// Runs a scheduler thread's loop; should it panic (a bug in gpulanes),
/// the scheduler shuts down instead of leaving every handle waiting: steps
/// 1 and 2 run at once (queued work fails with [`Error::Shutdown`], new
/// submissions are refused and blocked submitters are released).
pub(super) fn survive_panic(sh: &Shared, thread: &str, run: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
        log::error!(
            "the gpulanes {thread} thread panicked (a bug in gpulanes); shutting the scheduler down"
        );
        let mut st = lock(&sh.state);
        st.shutdown = true;
        fail_queued(sh, st, &Error::Shutdown);
        sh.work.notify_all();
        sh.space.notify_all();
    }
}

/// Fails the handle of the batch job the dispatcher holds, should the
/// dispatcher panic meanwhile (a bug in gpulanes), instead of leaving it
/// waiting forever; [`survive_panic`] fails the queued work. (Real-time
/// requests do the same on their own: see `RtEntry`'s `Drop`.)
pub(super) struct FailOnPanic(pub(super) Arc<dyn AnySlot>);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(w) = self.0.settle_err(Error::Shutdown)
        {
            w.wake();
        }
    }
}

/// Fails everything queued with `error` ([`Error::Shutdown`] at shutdown,
/// or [`Error::DeviceLost`] on a lost device), then releases the state lock and wakes the
/// awaiting tasks.
pub(super) fn fail_queued(sh: &Shared, mut st: MutexGuard<'_, State>, error: &Error) {
    let mut wakeups: Vec<Wakeup> = st
        .rt
        .drain(..)
        .filter_map(|r| r.slot().settle_err(error.clone()))
        .collect();
    let rt_failed = wakeups.len() as u64;
    st.rt_bytes = 0;
    wakeups.extend(
        st.batch
            .drain(..)
            .filter_map(|b| b.slot().settle_err(error.clone())),
    );
    let batch_failed = wakeups.len() as u64 - rt_failed;
    drop(st);
    {
        let mut m = lock(&sh.metrics);
        m.rt.failed += rt_failed;
        m.batch.failed += batch_failed;
    }
    sh.space.notify_all();
    wake_all(wakeups);
}
