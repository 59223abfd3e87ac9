//! The two lanes: a host scheduler that feeds small latency-first
//! **real-time** requests and large throughput-first **batch** jobs into the
//! one GPU queue wgpu gives a device.
//!
//! * Requests reduce float32 values ([`Request::host`], [`Request::device`])
//!   or values of any element type ([`Request::host_typed`],
//!   [`Request::device_typed`], each result in its op's result type). The
//!   first reduction of a dtype other than float32 runs its kernels once on
//!   the submitting thread, real-time keyed requests are recorded there,
//!   and a keyed batch job's pipelines are built there when it is planned,
//!   so building a new kind of request's pipelines never holds the
//!   dispatcher (and the real-time requests behind it).
//! * Real-time requests that arrive together are coalesced: one upload, one
//!   segmented dispatch per kernel and dtype, one submit, whatever their
//!   number. Each request's partitions keep their own reduction tree (the tree depends
//!   only on positions inside a partition), so a coalesced result has the
//!   same bits as the request run alone. A group shape seen before reuses
//!   the job prepared for it (buffers, tables, bind groups; see
//!   `job_cache`), so a repeat costs one upload.
//! * Batch jobs are prepared once, by the submitting thread (the dispatcher
//!   only submits), and submitted a chunk (one dispatch) at a time, each
//!   chunk sized to the quantum (less the submit lead) from the throughput
//!   observed on this device (GPU timestamps around one chunk in four where
//!   the adapter has them; until one chunk is observed, from the start-up
//!   calibration's seed slowed by its cold factor, so a fresh scheduler's
//!   first job does not hold real-time work longer than its warm chunks
//!   would). Chunking never changes the dispatches a
//!   job runs, so a job's result is bitwise the same as running it alone.
//!   A job with more partitions than one reduction may have on the device
//!   runs as consecutive groups of partitions, with the same bits (see
//!   `batch`).
//! * Submission is just in time: the dispatcher predicts when the GPU will
//!   finish what it has been given and submits the next batch chunk only
//!   when that is within `submit_lead`. So the GPU is kept fed while the
//!   prediction holds, yet a real-time request finds at most about one
//!   chunk ahead of it. Real-time requests that arrive while a chunk runs
//!   would only wait behind it, so they are held and coalesced until that
//!   point, where they go first. Every completion re-anchors the prediction
//!   to what is still in flight, and clears it when nothing is; a chunk that
//!   runs faster than estimated costs the GPU idle time until its
//!   completion is seen, never a held request beyond that.
//! * Keyed reductions (group-by, [`Request::keyed`]) run in both lanes
//!   with the bits of [`Engine::reduce_by_key`](crate::Engine::reduce_by_key)
//!   alone: a real-time one as a submission of its own (not coalesced), a
//!   batch one in steps of rows sized to the quantum at the job's own
//!   measured throughput, all adding into the same exact accumulators (see
//!   `keyed`).
//! * Real-time goes first, but the batch lane is guaranteed a share of GPU
//!   time (`batch_min_share`) under a real-time flood.
//! * Deadlines (a request still queued at its deadline leaves the queue
//!   and fails then), cancellation, bounded queues (block or reject;
//!   blocked submitters get space first come, first served), and failure
//!   isolation: a bad request is refused at submission and never enters a
//!   coalesced batch; a coalesced group stays within the device's largest
//!   buffer, so no request runs out of memory for its neighbours; and each
//!   kernel group of a submission is prepared in its own error scopes, a
//!   group that fails retried request by request, so an allocation or
//!   validation failure fails only the request it belongs to. One
//!   dispatcher thread submits; one poller thread completes handles, so
//!   submitting threads never block on readback.
//! * A lost device fails every request with [`Error::DeviceLost`]: queued
//!   work at once (the engine tells the scheduler), work on the GPU when its
//!   readback fails, new submissions when they are made; neither thread
//!   waits on the device for long, and dropping the scheduler still joins
//!   both.
//!
//! # Modules
//!
//! * `config`: [`LanesConfig`], its validation and the timing derived from
//!   it; `request`: [`Request`], [`Lane`], [`Submission`],
//!   [`TrySubmitError`]; `queued`: what the queues hold.
//! * `submit`: checking and queueing a request (on the caller's thread).
//! * `dispatcher`: the thread that decides what goes to the GPU next,
//!   with `realtime` (coalesced groups), `batch` (chunks) and `keyed`
//!   (keyed requests in either lane) submitting it,
//!   and `pacing`, `quantum`, `calibration` and the crate's
//!   [`GpuTimer`] (the GPU time of batch chunks) behind
//!   its decisions.
//! * `poller`: the thread that waits on the device and completes handles.
//! * `shared`: the state both threads and the facade share, and the one
//!   statement of the lock order.
//! * `shutdown`: the one shutdown sequence.

mod answer;
mod batch;
mod calibration;
mod config;
mod deadlines;
mod dispatcher;
mod handle;
mod job_cache;
mod keyed;
mod metrics;
mod pacing;
mod poller;
mod quantum;
mod queued;
mod realtime;
mod request;
mod shared;
mod shutdown;
mod space_line;
mod submit;
mod thread_slice;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use self::config::{LanesConfig, WhenFull};
pub use self::handle::Handle;
pub use self::keyed::KeyedRequest;
#[doc(hidden)]
pub use self::metrics::LaneMetrics;
pub use self::metrics::{LaneSnapshot, LatencySummary, MetricsSnapshot};
pub use self::request::{Lane, Request, Submission, TrySubmitError};

use self::calibration::{calibrate, warm_dtype};
use self::config::Timing;
use self::dispatcher::dispatcher_loop;
use self::job_cache::JobCache;
use self::poller::{Inflight, poller_loop};
use self::quantum::Throughput;
use self::shared::{Metrics, Shared, State, lock};
use self::shutdown::survive_panic;
use crate::device_health::LostListener;
use crate::dtype::Dtype;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::timing::GpuTimer;

/// How much slower than a plain reduction's the keyed estimate assumes a
/// keyed pass's input bytes (keys and values) are until a keyed step has
/// been observed. Group passes ran at about half the reduction's bytes per
/// second on a CPU driver with a thousand groups, and slower with more
/// groups or wider values; the first steps are kept short rather than
/// long, and the estimate follows the steps that run.
const KEYED_SEED_SLOWDOWN: f64 = 4.0;

/// The scheduler. Dropping it fails queued work with [`Error::Shutdown`],
/// lets work already on the GPU finish, and joins its threads (in the order
/// `shutdown` documents).
pub struct Lanes {
    shared: Arc<Shared>,
    dispatcher: Option<JoinHandle<()>>,
    poller: Option<JoinHandle<()>>,
}

impl Lanes {
    /// Starts the scheduler on `engine`'s device. Runs one short calibration
    /// reduction to seed the throughput estimate.
    pub fn new(engine: &Engine, cfg: LanesConfig) -> Result<Self> {
        cfg.validate()?;
        engine.context().health.check()?;
        let calibration = calibrate(engine)?;
        let mut warmed = [false; 5];
        warmed[Dtype::F32.code() as usize] = true;
        for &dtype in &cfg.warm_dtypes {
            if !warmed[dtype.code() as usize] {
                warm_dtype(engine, dtype)?;
                warmed[dtype.code() as usize] = true;
            }
        }
        let Timing {
            quantum,
            lead,
            rt_fixed,
        } = cfg.timing(&calibration)?;
        log::debug!(
            "lanes calibrated: round trip {:?}, {:.3} GB/s, cold factor {:.2}, submit blocks: {}, quantum {quantum:?}, lead {lead:?}",
            calibration.round_trip,
            calibration.bytes_per_s / 1e9,
            calibration.cold_factor,
            calibration.submit_blocks
        );
        let seed = calibration.bytes_per_s;
        let shared = Arc::new(Shared {
            ctx: engine.context().clone(),
            quantum,
            lead,
            rt_fixed,
            submit_blocks: calibration.submit_blocks,
            cfg,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            space: Condvar::new(),
            inflight: Mutex::new(Inflight {
                queue: VecDeque::new(),
                stop: false,
            }),
            inflight_cv: Condvar::new(),
            metrics: Mutex::new(Metrics::default()),
            throughput: Mutex::new(Throughput::new(seed, calibration.cold_factor)),
            keyed_throughput: Mutex::new(Throughput::new(
                seed / KEYED_SEED_SLOWDOWN,
                calibration.cold_factor,
            )),
            timer: GpuTimer::new(
                &engine.context().device,
                &engine.context().queue,
                2,
                batch::TIMER_SLOTS,
            ),
            chunks: AtomicU64::new(0),
            last_done: Mutex::new(Instant::now()),
            jobs: JobCache::default(),
            warmed: Mutex::new(warmed),
        });
        let listener: Weak<dyn LostListener> = Arc::downgrade(&shared) as Weak<Shared>;
        shared.ctx.health.subscribe(listener);
        let s = shared.clone();
        let dispatcher = std::thread::Builder::new()
            .name("gpulanes-dispatch".into())
            .spawn(move || {
                request_thread_slice(&s.cfg, "dispatcher");
                survive_panic(&s, "dispatcher", || dispatcher_loop(&s));
            })
            .map_err(|e| Error::Thread {
                thread: "dispatcher",
                source: Arc::new(e),
            })?;
        // From here on, dropping `lanes` shuts the dispatcher down.
        let mut lanes = Lanes {
            shared: shared.clone(),
            dispatcher: Some(dispatcher),
            poller: None,
        };
        let s = shared;
        let poller = std::thread::Builder::new()
            .name("gpulanes-poll".into())
            .spawn(move || {
                request_thread_slice(&s.cfg, "poller");
                survive_panic(&s, "poller", || poller_loop(&s));
            })
            .map_err(|e| Error::Thread {
                thread: "poller",
                source: Arc::new(e),
            })?;
        lanes.poller = Some(poller);
        Ok(lanes)
    }

    /// Submits a real-time request (see [`Lanes::submit`]).
    ///
    /// # Errors
    /// As [`Lanes::submit`].
    pub fn realtime<R: Submission>(&self, request: R) -> Result<Handle<R::Output>> {
        self.submit(Lane::RealTime, request)
    }

    /// Submits a batch job (see [`Lanes::submit`]).
    ///
    /// # Errors
    /// As [`Lanes::submit`].
    pub fn batch<R: Submission>(&self, request: R) -> Result<Handle<R::Output>> {
        self.submit(Lane::Batch, request)
    }

    /// Submits `request` to `lane`: a [`Request`] (its handle yields a
    /// [`Reduction`](crate::Reduction), of `f32` or of
    /// [`Scalar`](crate::Scalar) for a typed request) or a keyed
    /// [`Request::keyed`] (its handle yields a [`Grouped`](crate::Grouped)).
    /// Invalid requests fail here, alone. When the lane's queue is full this
    /// waits for room (or, with [`WhenFull::Reject`], fails with
    /// [`Error::QueueFull`]); the `try_` forms never wait for room and hand
    /// the request back instead.
    ///
    /// The first reduction of a dtype other than float32 (whose kernels run
    /// when the scheduler starts) runs that dtype's kernels once, here, on
    /// the calling thread, before it is queued: some drivers build a
    /// pipeline on its first dispatch (a first float64 reduction took
    /// 100 ms on lavapipe), and that wait is the new dtype's submitter's,
    /// not the queue's. For the same reason a keyed batch job builds the
    /// pipelines of its passes here, before it is queued: a job of a kind
    /// not seen before waits for those builds (about 100 ms each on
    /// lavapipe) in this call, `try_batch` included.
    ///
    /// # Errors
    /// [`Error::InvalidPartitions`] or [`Error::InvalidInput`] for a request
    /// that cannot run (bad partitions, device data on the real-time lane,
    /// an array of another engine or dtype, a deadline on the batch lane,
    /// a real-time request over `max_realtime_request_bytes`, keys and
    /// values of different lengths, no ops);
    /// [`Error::QueueFull`] under [`WhenFull::Reject`]; [`Error::Shutdown`]
    /// once the scheduler shuts down; [`Error::DeviceLost`] once the device
    /// is lost. Failures while the request runs come through its
    /// [`Handle`].
    pub fn submit<R: Submission>(&self, lane: Lane, request: R) -> Result<Handle<R::Output>> {
        request.enqueue(self, lane, true)
    }

    /// Submits a real-time request unless its queue is full (see
    /// [`Lanes::try_submit`]).
    ///
    /// # Errors
    /// As [`Lanes::try_submit`].
    pub fn try_realtime<R: Submission>(
        &self,
        request: R,
    ) -> Result<Handle<R::Output>, TrySubmitError<R>> {
        self.try_submit(Lane::RealTime, request)
    }

    /// Submits a batch job unless its queue is full (see
    /// [`Lanes::try_submit`]).
    ///
    /// # Errors
    /// As [`Lanes::try_submit`].
    pub fn try_batch<R: Submission>(
        &self,
        request: R,
    ) -> Result<Handle<R::Output>, TrySubmitError<R>> {
        self.try_submit(Lane::Batch, request)
    }

    /// Submits `request` to `lane` without waiting: when the lane's queue
    /// is full (or other submitters are waiting for room, who keep their
    /// turn) the request comes back in [`TrySubmitError::Full`], whatever
    /// [`LanesConfig::when_full`](LanesConfig#structfield.when_full) says, for the caller to retry, shed or
    /// send elsewhere.
    ///
    /// # Errors
    /// [`TrySubmitError::Full`] holding the request when the queue is full;
    /// [`TrySubmitError::Failed`] with the error [`Lanes::submit`] would
    /// give otherwise.
    pub fn try_submit<R: Submission>(
        &self,
        lane: Lane,
        request: R,
    ) -> Result<Handle<R::Output>, TrySubmitError<R>> {
        match request.enqueue(self, lane, false) {
            Ok(handle) => Ok(handle),
            Err(Error::QueueFull { .. }) => Err(TrySubmitError::Full(request)),
            Err(e) => Err(TrySubmitError::Failed(e)),
        }
    }

    /// Metrics of both lanes.
    pub fn metrics(&self) -> MetricsSnapshot {
        let (rt_depth, batch_depth) = {
            let st = lock(&self.shared.state);
            (
                st.rt.len() as u64,
                (st.batch.len() + st.batch_taken as usize) as u64,
            )
        };
        let m = lock(&self.shared.metrics);
        MetricsSnapshot {
            realtime: m.rt.snapshot(rt_depth),
            batch: m.batch.snapshot(batch_depth),
        }
    }

    /// Clears the metrics (e.g. between benchmark phases).
    pub fn reset_metrics(&self) {
        *lock(&self.shared.metrics) = Metrics::default();
    }

    /// The real-time and batch metrics gathered since the last reset,
    /// leaving them cleared (for experiments that merge several intervals).
    /// Not meant for apps, which read [`Lanes::metrics`].
    #[doc(hidden)]
    pub fn take_lane_metrics(&self) -> (LaneMetrics, LaneMetrics) {
        let m = std::mem::take(&mut *lock(&self.shared.metrics));
        (m.rt, m.batch)
    }

    /// The batch quantum in use (configured, or derived from the measured
    /// round trip).
    pub fn quantum(&self) -> Duration {
        self.shared.quantum
    }

    /// Whether this device's submit was found to block while the queue
    /// executes earlier work (lavapipe); a batch chunk then never goes
    /// behind another chunk.
    pub fn submit_blocks(&self) -> bool {
        self.shared.submit_blocks
    }

    /// The just-in-time submission lead in use (configured, or derived from
    /// the measured round trip).
    pub fn submit_lead(&self) -> Duration {
        self.shared.lead
    }

    /// How late the dispatcher's timed waits have been ending (moving
    /// average); the scheduler adds it to the submit lead.
    pub fn wake_lateness(&self) -> Duration {
        lock(&self.shared.state).pred.wake_late()
    }

    /// Current estimate of this device's reduction throughput (bytes/s).
    pub fn throughput_estimate(&self) -> f64 {
        lock(&self.shared.throughput).bytes_per_s()
    }

    /// Blocks until both queues are empty and nothing is on the GPU, or
    /// until the scheduler has shut down after an internal failure, or the
    /// device is lost.
    pub fn wait_idle(&self) {
        let sh = &self.shared;
        let mut st = lock(&sh.state);
        let idle = |st: &State| {
            st.rt.is_empty()
                && st.batch.is_empty()
                && !st.batch_taken
                && st.batch_reserved == 0
                && st.rt_reserved == 0
                && st.rt_in_flight == 0
                && st.batch_in_flight == 0
        };
        while !st.shutdown && !sh.ctx.health.is_lost() && !idle(&st) {
            st = sh
                .space
                .wait_timeout(st, Duration::from_millis(5))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Lanes {
    /// Runs the shutdown sequence (see `shutdown`).
    fn drop(&mut self) {
        shutdown::shut_down(self);
    }
}

/// Asks the OS for the configured CPU time slice for the calling scheduler
/// thread (see [`LanesConfig::thread_slice`](LanesConfig#structfield.thread_slice)).
fn request_thread_slice(cfg: &LanesConfig, thread: &str) {
    if let Some(slice) = cfg.thread_slice {
        let granted = thread_slice::request_for_current_thread(slice);
        log::debug!("{thread} thread: {slice:?} time slice requested, granted: {granted}");
    }
}
