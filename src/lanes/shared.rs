//! What the scheduler's threads and the [`Lanes`](super::Lanes) facade
//! share: the queues and counters under one state lock ([`State`]), the
//! metrics, the throughput estimate, and the small functions every side uses
//! to give back a GPU slot, predict GPU time and deliver wake-ups.
//!
//! # Lock order
//!
//! This is the one place that states which of the scheduler's mutexes may
//! be taken while holding which; code that nests locks follows it, so no
//! two threads can wait on each other. `A -> B` means B may be taken while
//! A is held, never A while B is held.
//!
//! * `state -> Slot`: the dispatcher settles queued requests (failing the
//!   queue, expiring deadlines) and drops cancelled ones while it holds the
//!   queues, so that no other thread sees them half-removed.
//! * `state -> device health`: the dispatcher, submitters and `wait_idle`
//!   look at whether the device is lost while they hold the queues. The
//!   health lock is released before its listeners run, and the listener
//!   ([`Shared::device_lost`](crate::device_health::LostListener::device_lost))
//!   takes `state` alone.
//! * `metrics -> Slot`: a result is counted and settled together, so a
//!   client woken by its result sees it counted.
//! * `state` and `metrics` are never held together: code that changes
//!   both releases one before it takes the other.
//! * Every other lock is a leaf, taken with nothing else held and released
//!   before any other is taken: `inflight`, `throughput`,
//!   `keyed_throughput`, `last_done`, the job cache's, the chunk timer's, a
//!   batch job's `results`, a keyed batch job's `rate`, a keyed request's
//!   gathered windows and its hand-over to a finishing thread (see
//!   `keyed`), and a `Slot` taken on its own.
//!
//! No lock is held while an `.await`ing task's waker runs (it is the
//! caller's code, and may call back into the scheduler: see
//! [`Slot::settle`](super::handle::Slot::settle)), nor while a thread
//! submits to the GPU queue or waits on the device (readback callbacks
//! run inside those waits, and take the locks above themselves).
//! Condition variables wait with their own lock: `work` and `space` with
//! `state`, `inflight_cv` with `inflight`, a slot's with the slot's.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::config::LanesConfig;
use super::deadlines::QueuedDeadlines;
use super::handle::Wakeup;
use super::job_cache::JobCache;
use super::metrics::LaneMetrics;
use super::pacing::{MAX_PREDICTION, Prediction, Queues};
use super::poller::Inflight;
use super::quantum::Throughput;
use super::queued::{BatchJob, RtJob};
use super::request::Lane;
use super::space_line::SpaceLine;
use crate::context::Context;
use crate::device_health::LostListener;
use crate::timing::GpuTimer;

/// The queues and everything the dispatcher decides with, under one lock
/// (`Shared::state`).
#[derive(Default)]
pub(super) struct State {
    pub(super) rt: VecDeque<RtJob>,
    pub(super) rt_bytes: u64,
    pub(super) batch: VecDeque<BatchJob>,
    /// A batch entry taken out by the dispatcher for its next chunk.
    pub(super) batch_taken: bool,
    /// Batch jobs given queue space and being prepared by their submitters.
    pub(super) batch_reserved: usize,
    /// Real-time keyed requests given queue space and being recorded by
    /// their submitters, and their bytes (held apart from `rt_bytes`,
    /// which the dispatcher recounts from the queue).
    pub(super) rt_reserved: usize,
    pub(super) rt_reserved_bytes: u64,
    pub(super) rt_in_flight: usize,
    pub(super) batch_in_flight: usize,
    /// Set once, by the shutdown sequence (see `shutdown`).
    pub(super) shutdown: bool,
    pub(super) last_batch_submit: Option<Instant>,
    /// When the GPU will be done with what it has been given.
    pub(super) pred: Prediction,
    /// A handle was cancelled since the dispatcher last dropped cancelled
    /// work from the queues (so it scans them only then).
    pub(super) cancelled_since_look: bool,
    /// Deadlines of queued real-time requests (kept only where late
    /// requests are rejected).
    pub(super) deadlines: QueuedDeadlines,
    /// Submitters blocked on a full queue, per lane, in arrival order.
    pub(super) rt_line: SpaceLine,
    pub(super) batch_line: SpaceLine,
}

impl State {
    /// Batch jobs that hold queue space: queued, taken by the dispatcher
    /// for their next chunk, or being prepared.
    pub(super) fn batch_jobs(&self) -> usize {
        self.batch.len() + self.batch_taken as usize + self.batch_reserved
    }

    /// What [`decide`] needs to know of the queues.
    pub(super) fn queues(&self) -> Queues {
        Queues {
            rt_waiting: !self.rt.is_empty(),
            rt_in_flight: self.rt_in_flight,
            batch_waiting: !self.batch.is_empty(),
            batch_in_flight: self.batch_in_flight,
            last_batch_submit: self.last_batch_submit,
        }
    }

    /// After a submission predicted at `busy` completed (its in-flight count
    /// already decremented).
    pub(super) fn note_completion(&mut self, now: Instant, busy: Duration) {
        let idle = self.rt_in_flight == 0 && self.batch_in_flight == 0;
        self.pred.note_completion(now, busy, idle);
    }
}

/// Both lanes' metrics (`Shared::metrics`).
#[derive(Default)]
pub(super) struct Metrics {
    pub(super) rt: LaneMetrics,
    pub(super) batch: LaneMetrics,
}

/// Everything the scheduler's threads and the [`Lanes`](super::Lanes)
/// facade share; its locks are taken in the order the module documents.
pub(super) struct Shared {
    pub(super) ctx: Arc<Context>,
    pub(super) cfg: LanesConfig,
    /// The quantum in use (configured or derived at start).
    pub(super) quantum: Duration,
    /// The just-in-time submission lead in use.
    pub(super) lead: Duration,
    /// Predicted GPU time of a real-time submission besides its bytes.
    pub(super) rt_fixed: Duration,
    /// The driver's submit waits while the queue executes (see
    /// `calibration::probe_blocking_submit`).
    pub(super) submit_blocks: bool,
    pub(super) state: Mutex<State>,
    /// Wakes the dispatcher: new work, freed GPU slots while work is queued,
    /// cancellation, shutdown.
    pub(super) work: Condvar,
    /// Wakes submitters blocked on a full queue.
    pub(super) space: Condvar,
    /// Submissions handed to the poller.
    pub(super) inflight: Mutex<Inflight>,
    /// Wakes the poller: a new submission to wait for, or the stop.
    pub(super) inflight_cv: Condvar,
    pub(super) metrics: Mutex<Metrics>,
    pub(super) throughput: Mutex<Throughput>,
    /// Keyed batch steps' throughput (input bytes, keys and values, a
    /// second), learnt from every keyed job's steps: where the next keyed
    /// job's own estimate starts.
    pub(super) keyed_throughput: Mutex<Throughput>,
    /// GPU timestamps around batch chunks (`None` without TIMESTAMP_QUERY).
    pub(super) timer: Option<GpuTimer>,
    /// Batch chunks submitted so far (picks the timed ones).
    pub(super) chunks: AtomicU64,
    /// When the GPU last finished something (busy-time estimates for
    /// adapters without timestamps; unused where `timer` is set).
    pub(super) last_done: Mutex<Instant>,
    /// Real-time jobs kept for groups of the same shape.
    pub(super) jobs: JobCache,
    /// The dtypes whose kernels have run once (by [`Dtype::code`]; see
    /// `calibration::warm_dtype`). Taken alone, never with another lock.
    ///
    /// [`Dtype::code`]: crate::Dtype::code
    pub(super) warmed: Mutex<[bool; 5]>,
}

impl LostListener for Shared {
    /// Wakes the dispatcher (which fails the queued work), blocked
    /// submitters (who fail) and `wait_idle`. The state lock is taken
    /// first so that the wake-up is not lost between a thread's look at
    /// the device and its wait.
    fn device_lost(&self) {
        drop(lock(&self.state));
        self.work.notify_all();
        self.space.notify_all();
    }
}

/// Takes `m`, also after a thread panicked holding it: a panicking
/// scheduler thread shuts the scheduler down (see `shutdown`), which still
/// needs the state to fail the queued work.
pub(super) use crate::sync::lock;

/// Delivers wake-ups held back while locks were held (see [`Slot::settle`]).
pub(super) fn wake_all(wakeups: Vec<Wakeup>) {
    for w in wakeups {
        w.wake();
    }
}

/// A submission of `lane`, predicted at `busy` of GPU time (zero when
/// nothing was submitted), is done: frees its in-flight slot, re-anchors
/// the prediction and wakes blocked submitters, and the dispatcher where
/// work waits (with both queues empty only a new submission, which wakes
/// it, gives it something to do: a real-time stream alone would otherwise
/// wake it twice per request).
pub(super) fn release_slot(sh: &Shared, lane: Lane, busy: Duration) {
    let mut st = lock(&sh.state);
    match lane {
        Lane::RealTime => st.rt_in_flight -= 1,
        Lane::Batch => st.batch_in_flight -= 1,
    }
    st.note_completion(Instant::now(), busy);
    let work_waits = !st.rt.is_empty() || !st.batch.is_empty();
    drop(st);
    if work_waits {
        sh.work.notify_all();
    }
    sh.space.notify_all();
}

/// Records when the GPU finished something and returns how long the
/// submission made at `submitted` kept it busy.
pub(super) fn mark_done(sh: &Shared, submitted: Instant) -> Duration {
    let now = Instant::now();
    let mut last = lock(&sh.last_done);
    let start = (*last).max(submitted);
    *last = now;
    now.saturating_duration_since(start)
}

/// Predicted GPU time to reduce `bytes` at the observed throughput.
pub(super) fn busy_for(sh: &Shared, bytes: u64) -> Duration {
    busy_at(bytes, lock(&sh.throughput).bytes_per_s())
}

/// GPU time of `bytes` at `bytes_per_s`.
pub(super) fn busy_at(bytes: u64, bytes_per_s: f64) -> Duration {
    Duration::try_from_secs_f64(bytes as f64 / bytes_per_s).unwrap_or(MAX_PREDICTION)
}
