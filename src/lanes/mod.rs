//! The two lanes: a host scheduler that feeds small latency-first
//! **real-time** requests and large throughput-first **batch** jobs into the
//! one GPU queue wgpu gives a device.
//!
//! * Real-time requests that arrive together are coalesced: one upload, one
//!   segmented dispatch per kernel, one submit, whatever their number. Each
//!   request's partitions keep their own reduction tree (the tree depends
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

mod batch;
mod calibration;
mod chunk_timer;
mod deadlines;
mod handle;
mod job_cache;
mod metrics;
mod pacing;
mod quantum;
mod realtime;
mod space_line;
mod thread_slice;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use handle::Handle;
pub use metrics::{LaneSnapshot, LatencySummary, MetricsSnapshot};

use self::batch::{BatchEntry, run_batch_chunk};
use self::calibration::{calibrate, default_quantum};
use self::chunk_timer::ChunkTimer;
use self::deadlines::QueuedDeadlines;
use self::handle::{Slot, Wakeup};
use self::job_cache::JobCache;
pub(crate) use self::metrics::LaneMetrics;
use self::pacing::{Decision, IDLE_WAIT, MAX_PREDICTION, Pacing, Prediction, Queues, decide};
use self::quantum::Throughput;
use self::realtime::{RtEntry, check_realtime_plan, run_realtime};
use self::space_line::SpaceLine;
use crate::device_array::DeviceArray;
use crate::device_health::LostListener;
use crate::engine::{Context, Engine};
use crate::error::{Error, Result};
use crate::exec::max_partitions;
use crate::fit::Footprint;
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
    fn name(self) -> &'static str {
        match self {
            Lane::RealTime => "real-time",
            Lane::Batch => "batch",
        }
    }
}

/// Why [`Lanes::try_submit`] (or `try_realtime`, `try_batch`) did not
/// queue a request.
#[derive(Clone)]
pub enum TrySubmitError {
    /// The lane's queue is full: the request, untouched, to retry later
    /// or shed.
    Full(Request),
    /// The request cannot be queued: the error [`Lanes::submit`] gives
    /// (invalid request, shut down, device lost).
    Failed(Error),
}

impl TrySubmitError {
    /// The request back, if the queue was full.
    pub fn into_request(self) -> Option<Request> {
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

impl std::fmt::Debug for TrySubmitError {
    // The request's data is left out: it may be large.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("Full(..)"),
            TrySubmitError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl std::fmt::Display for TrySubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("the lane's queue is full"),
            TrySubmitError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TrySubmitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySubmitError::Full(_) => None,
            TrySubmitError::Failed(e) => Some(e),
        }
    }
}

/// What submission does when a lane's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for space.
    Block,
    /// Fail at once with [`Error::QueueFull`].
    Reject,
}

/// Scheduler settings. The defaults suit a discrete GPU and still work on a
/// software adapter.
#[derive(Clone, Debug)]
pub struct LanesConfig {
    /// GPU time of the batch work that may be queued ahead of a real-time
    /// request. Batch chunks are sized to `quantum - submit_lead` of GPU time
    /// (at least half the quantum), measured with GPU timestamps where the
    /// device has them. `None` derives it from this device's measured
    /// real-time round trip RT, within 200 us ..= 4 ms:
    /// * where submissions queue (GPUs), chunks pipeline behind each other
    ///   and cost little beyond their work, so the quantum follows the
    ///   latency target alone: 1 RT, a chunk of about half a round trip,
    ///   which a request arriving as a chunk starts waits for on top of
    ///   its own round trip (the 1.5x-of-idle-p99 target);
    /// * where the driver's submit blocks while its queue executes
    ///   (lavapipe), each chunk also costs about one round trip of device
    ///   time, so chunks are longer to keep the batch lane's throughput:
    ///   3 RT, a chunk of about 2.5 RT (a request arriving as one starts
    ///   waits about 3.5 RT in all, against the 1.5-2 RT of an idle p99).
    pub quantum: Option<Duration>,
    /// Just-in-time submission: the next batch chunk is submitted when the
    /// work already queued on the GPU is predicted to end within this lead
    /// (so the GPU stays fed, yet a real-time request finds at most one
    /// chunk ahead of it), and real-time requests that arrive while a chunk
    /// runs are held and coalesced until that point, where they go first.
    /// Must not exceed the quantum. `None` derives it from the measured
    /// round trip (half of it, within 50 us ..= 500 us, and at most the
    /// quantum).
    pub submit_lead: Option<Duration>,
    /// Hard bound on batch chunks queued on the GPU at once; pacing keeps
    /// it at one except within the lead, or when a chunk overruns its
    /// predicted time. Where the driver's submit blocks while its queue
    /// executes (probed at start; lavapipe), a chunk never goes behind
    /// another chunk (onto an idle queue, or just in time behind real-time
    /// work), so one at a time.
    pub max_batch_in_flight: usize,
    /// Coalesced real-time submissions queued on the GPU at once.
    pub max_realtime_in_flight: usize,
    /// How long the first waiting real-time request may wait for others to
    /// coalesce with (dynamic batching delay). The default, zero, still
    /// coalesces: requests that arrive while `max_realtime_in_flight`
    /// submissions are on the GPU all go in the next one. A timed wait costs
    /// more than it saves at low rates (measured on lavapipe: 4096-float
    /// requests, p50 142 us with no delay, 259 us with a 20 us delay, since
    /// the OS sleeps longer than asked; the direct blocking path took 127 us).
    pub coalesce_delay: Duration,
    /// Most requests in one coalesced submission. (A group also stays
    /// within the device's partition limit per reduction, so a request
    /// never fails for the partitions of the others; one real-time request
    /// over that limit is refused when submitted; batch jobs take any
    /// number.)
    pub max_coalesced_requests: usize,
    /// Most input bytes in one coalesced submission.
    pub max_coalesced_bytes: u64,
    /// Largest real-time request; bigger ones belong in the batch lane.
    pub max_realtime_request_bytes: u64,
    /// Real-time queue bound, in input bytes.
    pub realtime_queue_bytes: u64,
    /// Real-time queue bound, in requests.
    pub realtime_queue_len: usize,
    /// Batch queue bound, in jobs.
    pub batch_queue_len: usize,
    /// Behaviour of a full queue.
    pub when_full: WhenFull,
    /// Share of GPU time the batch lane keeps under a real-time flood (0..1).
    /// With 0, steady real-time traffic may hold batch chunks back
    /// indefinitely.
    pub batch_min_share: f64,
    /// Fail real-time requests whose deadline passes (the default): a
    /// request still queued at its deadline leaves the queue and fails
    /// then (within the dispatcher's wake-up granularity, or once a blocking
    /// submit in progress returns), without running, and a result that
    /// arrives after it is replaced by the error; both with
    /// [`Error::DeadlineExceeded`]. With
    /// `false`, such requests run and their results are delivered late.
    /// Either way each one counts in the lane's `deadline_misses`.
    pub reject_late: bool,
    /// Chunk size bounds, in units of 8192 floats.
    pub min_chunk_units: u64,
    pub max_chunk_units: u64,
    /// CPU time slice the dispatcher and poller threads ask the OS for, so
    /// that when woken they preempt CPU-bound work promptly (Linux 6.12+,
    /// no privilege needed; elsewhere ignored). `None` leaves them alone.
    pub thread_slice: Option<Duration>,
}

impl Default for LanesConfig {
    fn default() -> Self {
        LanesConfig {
            quantum: None,
            submit_lead: None,
            max_batch_in_flight: 2,
            max_realtime_in_flight: 2,
            coalesce_delay: Duration::ZERO,
            max_coalesced_requests: 4096,
            max_coalesced_bytes: 64 << 20,
            max_realtime_request_bytes: 16 << 20,
            realtime_queue_bytes: 256 << 20,
            realtime_queue_len: 65536,
            batch_queue_len: 64,
            when_full: WhenFull::Block,
            batch_min_share: 0.2,
            reject_late: true,
            min_chunk_units: 4,
            max_chunk_units: 1 << 20,
            thread_slice: Some(Duration::from_micros(100)),
        }
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
    fn len(&self) -> u64 {
        match self {
            Input::Host(d) => d.len() as u64,
            Input::Device(a) => a.len(),
        }
    }
}

/// A reduction to submit to a lane.
#[derive(Clone)]
pub struct Request {
    input: Input,
    op: Op,
    partitions: Partitions,
    nan: NanPolicy,
    deadline: Option<Instant>,
    inject_failure: bool,
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
    /// `deadline` (see [`LanesConfig::reject_late`]). A request still
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

#[derive(Default)]
struct State {
    rt: VecDeque<RtEntry>,
    rt_bytes: u64,
    batch: VecDeque<BatchEntry>,
    /// A batch entry taken out by the dispatcher for its next chunk.
    batch_taken: bool,
    /// Batch jobs given queue space and being prepared by their submitters.
    batch_reserved: usize,
    rt_in_flight: usize,
    batch_in_flight: usize,
    shutdown: bool,
    last_batch_submit: Option<Instant>,
    /// When the GPU will be done with what it has been given.
    pred: Prediction,
    /// A handle was cancelled since the dispatcher last dropped cancelled
    /// work from the queues (so it scans them only then).
    cancelled_since_look: bool,
    /// Deadlines of queued real-time requests (kept only where late
    /// requests are rejected).
    deadlines: QueuedDeadlines,
    /// Submitters blocked on a full queue, per lane, in arrival order.
    rt_line: SpaceLine,
    batch_line: SpaceLine,
}

impl State {
    /// Batch jobs that hold queue space: queued, taken by the dispatcher
    /// for their next chunk, or being prepared.
    fn batch_jobs(&self) -> usize {
        self.batch.len() + self.batch_taken as usize + self.batch_reserved
    }

    /// What [`decide`] needs to know of the queues.
    fn queues(&self) -> Queues {
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
    fn note_completion(&mut self, now: Instant, busy: Duration) {
        let idle = self.rt_in_flight == 0 && self.batch_in_flight == 0;
        self.pred.note_completion(now, busy, idle);
    }
}

#[derive(Default)]
struct Metrics {
    rt: LaneMetrics,
    batch: LaneMetrics,
}

/// What the poller runs once a submission is done.
type OnDone = Box<dyn FnOnce() + Send>;

struct Inflight {
    queue: VecDeque<(wgpu::SubmissionIndex, Option<OnDone>)>,
    stop: bool,
}

struct Shared {
    ctx: Arc<Context>,
    cfg: LanesConfig,
    /// The quantum in use (configured or derived at start).
    quantum: Duration,
    /// The just-in-time submission lead in use.
    lead: Duration,
    /// Predicted GPU time of a real-time submission besides its bytes.
    rt_fixed: Duration,
    /// The driver's submit waits while the queue executes (see
    /// `calibration::probe_blocking_submit`).
    submit_blocks: bool,
    state: Mutex<State>,
    /// Wakes the dispatcher: new work, freed GPU slots while work is queued,
    /// cancellation, shutdown.
    work: Condvar,
    /// Wakes submitters blocked on a full queue.
    space: Condvar,
    inflight: Mutex<Inflight>,
    inflight_cv: Condvar,
    metrics: Mutex<Metrics>,
    throughput: Mutex<Throughput>,
    /// GPU timestamps around batch chunks (`None` without TIMESTAMP_QUERY).
    timer: Option<Arc<ChunkTimer>>,
    /// Batch chunks submitted so far (picks the timed ones).
    chunks: AtomicU64,
    /// When the GPU last finished something (busy-time estimates for
    /// adapters without timestamps; unused where `timer` is set).
    last_done: Mutex<Instant>,
    /// Real-time jobs kept for groups of the same shape.
    jobs: JobCache,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The scheduler. Dropping it fails queued work with [`Error::Shutdown`],
/// lets work already on the GPU finish, and joins its threads.
pub struct Lanes {
    shared: Arc<Shared>,
    dispatcher: Option<JoinHandle<()>>,
    poller: Option<JoinHandle<()>>,
}

impl Lanes {
    /// Starts the scheduler on `engine`'s device. Runs one short calibration
    /// reduction to seed the throughput estimate.
    pub fn new(engine: &Engine, cfg: LanesConfig) -> Result<Self> {
        if !(0.0..1.0).contains(&cfg.batch_min_share) {
            return Err(Error::InvalidInput(format!(
                "batch_min_share must be in [0, 1), got {}",
                cfg.batch_min_share
            )));
        }
        if cfg.max_batch_in_flight == 0 || cfg.max_realtime_in_flight == 0 {
            return Err(Error::InvalidInput(
                "in-flight bounds must be at least 1".into(),
            ));
        }
        // A zero-length queue could never take a request: submitters would
        // block forever (or always be rejected).
        if cfg.realtime_queue_len == 0 || cfg.batch_queue_len == 0 {
            return Err(Error::InvalidInput(format!(
                "queue bounds must be at least 1 (realtime_queue_len {}, batch_queue_len {})",
                cfg.realtime_queue_len, cfg.batch_queue_len
            )));
        }
        engine.context().health.check()?;
        let calibration = calibrate(engine)?;
        let quantum = cfg
            .quantum
            .unwrap_or_else(|| default_quantum(calibration.round_trip, calibration.submit_blocks));
        let lead = match cfg.submit_lead {
            Some(lead) if lead > quantum => {
                return Err(Error::InvalidInput(format!(
                    "submit_lead ({} us) must not exceed the quantum ({} us)",
                    lead.as_micros(),
                    quantum.as_micros()
                )));
            }
            Some(lead) => lead,
            None => (calibration.round_trip / 2)
                .clamp(Duration::from_micros(50), Duration::from_micros(500))
                .min(quantum),
        };
        let rt_fixed = calibration.round_trip / 2;
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
            timer: ChunkTimer::new(&engine.context().device, &engine.context().queue),
            chunks: AtomicU64::new(0),
            last_done: Mutex::new(Instant::now()),
            jobs: JobCache::default(),
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
    pub fn realtime(&self, request: Request) -> Result<Handle<Reduction>> {
        self.submit(Lane::RealTime, request)
    }

    /// Submits a batch job (see [`Lanes::submit`]).
    ///
    /// # Errors
    /// As [`Lanes::submit`].
    pub fn batch(&self, request: Request) -> Result<Handle<Reduction>> {
        self.submit(Lane::Batch, request)
    }

    /// Submits `request` to `lane`. Invalid requests fail here, alone. When
    /// the lane's queue is full this waits for room (or, with
    /// [`WhenFull::Reject`], fails with [`Error::QueueFull`]); the `try_`
    /// forms never wait and hand the request back instead.
    ///
    /// # Errors
    /// [`Error::InvalidPartitions`] or [`Error::InvalidInput`] for a request
    /// that cannot run (bad partitions, device data on the real-time lane,
    /// an array of another engine or dtype, a deadline on the batch lane,
    /// a real-time request over `max_realtime_request_bytes`);
    /// [`Error::QueueFull`] under [`WhenFull::Reject`]; [`Error::Shutdown`]
    /// once the scheduler shuts down; [`Error::DeviceLost`] once the device
    /// is lost. Failures while the request runs come through its
    /// [`Handle`].
    pub fn submit(&self, lane: Lane, request: Request) -> Result<Handle<Reduction>> {
        self.enqueue(lane, &request, true)
    }

    /// Submits a real-time request unless its queue is full (see
    /// [`Lanes::try_submit`]).
    ///
    /// # Errors
    /// As [`Lanes::try_submit`].
    pub fn try_realtime(&self, request: Request) -> Result<Handle<Reduction>, TrySubmitError> {
        self.try_submit(Lane::RealTime, request)
    }

    /// Submits a batch job unless its queue is full (see
    /// [`Lanes::try_submit`]).
    ///
    /// # Errors
    /// As [`Lanes::try_submit`].
    pub fn try_batch(&self, request: Request) -> Result<Handle<Reduction>, TrySubmitError> {
        self.try_submit(Lane::Batch, request)
    }

    /// Submits `request` to `lane` without waiting: when the lane's queue
    /// is full (or other submitters are waiting for room, who keep their
    /// turn) the request comes back in [`TrySubmitError::Full`], whatever
    /// [`LanesConfig::when_full`] says, for the caller to retry, shed or
    /// send elsewhere.
    ///
    /// # Errors
    /// [`TrySubmitError::Full`] holding the request when the queue is full;
    /// [`TrySubmitError::Failed`] with the error [`Lanes::submit`] would
    /// give otherwise.
    pub fn try_submit(
        &self,
        lane: Lane,
        request: Request,
    ) -> Result<Handle<Reduction>, TrySubmitError> {
        match self.enqueue(lane, &request, false) {
            Ok(handle) => Ok(handle),
            Err(Error::QueueFull { .. }) => Err(TrySubmitError::Full(request)),
            Err(e) => Err(TrySubmitError::Failed(e)),
        }
    }

    /// Checks and queues `request` (its input shared, not copied). With
    /// `wait` false a full queue is [`Error::QueueFull`] at once.
    fn enqueue(&self, lane: Lane, request: &Request, wait: bool) -> Result<Handle<Reduction>> {
        let sh = &self.shared;
        sh.ctx.health.check()?;
        let offsets = request.partitions.offsets(request.input.len())?;
        let bytes = request.input.len() * 4;
        if let Input::Device(a) = &request.input
            && a.owner() != sh.ctx.id
        {
            return Err(Error::InvalidInput(
                "this DeviceArray was uploaded by another engine".into(),
            ));
        }
        if let Input::Device(a) = &request.input
            && a.dtype() != crate::Dtype::F32
        {
            return Err(Error::InvalidInput(format!(
                "the lanes reduce float32 arrays; this DeviceArray holds {} \
                 (use Engine::reduce_device_typed)",
                a.dtype()
            )));
        }
        let slot = Slot::new();
        match lane {
            Lane::RealTime => {
                let Input::Host(data) = &request.input else {
                    return Err(Error::InvalidInput(
                        "real-time requests take host data; submit device arrays to the batch lane"
                            .into(),
                    ));
                };
                if bytes > sh.cfg.max_realtime_request_bytes {
                    return Err(Error::InvalidInput(format!(
                        "real-time request of {bytes} bytes exceeds max_realtime_request_bytes ({}); use the batch lane",
                        sh.cfg.max_realtime_request_bytes
                    )));
                }
                // Validate the plan now so a bad request never joins a group.
                let footprint = check_realtime_plan(sh, &offsets)?;
                let mut st = self.wait_for_space(lane, bytes, wait)?;
                st.rt_bytes += bytes;
                if let Some(d) = request.deadline.filter(|_| sh.cfg.reject_late) {
                    st.deadlines.note(d);
                }
                st.rt.push_back(RtEntry {
                    data: data.clone(),
                    offsets,
                    op: request.op,
                    nan: request.nan,
                    deadline: request.deadline,
                    footprint,
                    enqueued: Instant::now(),
                    slot: slot.clone(),
                    inject_failure: request.inject_failure,
                });
            }
            Lane::Batch => {
                if request.deadline.is_some() {
                    return Err(Error::InvalidInput(
                        "deadlines apply to real-time requests only".into(),
                    ));
                }
                // Any number of partitions: over the per-reduction limit the
                // job runs in groups (see `batch`), each planned when it
                // starts (the offsets are checked above).
                let mut entry = BatchEntry::new(
                    sh,
                    request.input.clone(),
                    offsets,
                    request.op,
                    request.nan,
                    slot.clone(),
                );
                // Prepared here, not by the dispatcher, once it has queue
                // space (held meanwhile, so a rejected job costs nothing);
                // a job that cannot be prepared (out of memory) fails
                // alone, through its handle, as it would have when it
                // started.
                let mut st = self.wait_for_space(lane, bytes, wait)?;
                st.batch_reserved += 1;
                drop(st);
                let prepared = entry.prepare_first(sh);
                st = lock(&sh.state);
                st.batch_reserved -= 1;
                if st.shutdown {
                    // The dispatcher has failed the queue and left.
                    return Err(Error::Shutdown);
                }
                if let Err(e) = prepared {
                    drop(st);
                    sh.space.notify_all();
                    if slot.complete(Err(e)) {
                        lock(&sh.metrics).batch.failed += 1;
                    }
                    return Ok(Handle::new(slot, || {}));
                }
                // Its latency counts from here, as a real-time request's
                // does.
                entry.mark_enqueued();
                st.batch.push_back(entry);
            }
        }
        sh.work.notify_all();
        let weak: Weak<Shared> = Arc::downgrade(sh);
        Ok(Handle::new(slot, move || {
            if let Some(sh) = weak.upgrade() {
                let mut m = lock(&sh.metrics);
                match lane {
                    Lane::RealTime => m.rt.cancelled += 1,
                    Lane::Batch => m.batch.cancelled += 1,
                }
                drop(m);
                // The slot is settled outside the state lock; taking it
                // here orders this wake-up after any look the dispatcher
                // is taking at the queues, so the wake-up is not lost
                // between its look and its wait.
                lock(&sh.state).cancelled_since_look = true;
                sh.work.notify_all();
            }
        }))
    }

    /// Waits for room for `bytes` in `lane`'s queue (or fails, see
    /// [`WhenFull`]; at once unless `wait`), and returns the state lock to
    /// queue the request with. Blocked submitters get room in the order they came (see
    /// `space_line`).
    fn wait_for_space(&self, lane: Lane, bytes: u64, wait: bool) -> Result<MutexGuard<'_, State>> {
        let sh = &self.shared;
        let cfg = &sh.cfg;
        let mut st = lock(&sh.state);
        let mut ticket: Option<u64> = None;
        let outcome = loop {
            if st.shutdown {
                break Err(Error::Shutdown);
            }
            if let Err(lost) = sh.ctx.health.check() {
                break Err(lost);
            }
            let full = match lane {
                Lane::RealTime => {
                    st.rt.len() >= cfg.realtime_queue_len
                        || (!st.rt.is_empty() && st.rt_bytes + bytes > cfg.realtime_queue_bytes)
                }
                Lane::Batch => st.batch_jobs() >= cfg.batch_queue_len,
            };
            let line = match lane {
                Lane::RealTime => &mut st.rt_line,
                Lane::Batch => &mut st.batch_line,
            };
            if !full && line.is_first(ticket) {
                break Ok(());
            }
            if cfg.when_full == WhenFull::Reject || !wait {
                let detail = match lane {
                    Lane::RealTime => {
                        format!("{} requests, {} bytes queued", st.rt.len(), st.rt_bytes)
                    }
                    Lane::Batch => {
                        format!("{} jobs queued", st.batch_jobs())
                    }
                };
                break Err(Error::QueueFull {
                    lane: lane.name(),
                    detail,
                });
            }
            if ticket.is_none() {
                ticket = Some(line.join());
            }
            st = sh.space.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        if let Some(t) = ticket {
            let line = match lane {
                Lane::RealTime => &mut st.rt_line,
                Lane::Batch => &mut st.batch_line,
            };
            line.leave(t);
            // The next in line looks again: there may be room for it too
            // (or it is first now that this one gave up).
            if !line.is_empty() {
                sh.space.notify_all();
            }
        }
        outcome.map(|()| st)
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
    pub(crate) fn take_lane_metrics(&self) -> (LaneMetrics, LaneMetrics) {
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
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        self.shared.space.notify_all();
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        lock(&self.shared.inflight).stop = true;
        self.shared.inflight_cv.notify_all();
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
    }
}

/// Runs a scheduler thread's loop; should it panic (a bug in gpulanes),
/// the scheduler shuts down instead of leaving every handle waiting:
/// queued work fails with [`Error::Shutdown`], new submissions are refused
/// and blocked submitters are released.
fn survive_panic(sh: &Shared, thread: &str, run: impl FnOnce()) {
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

fn request_thread_slice(cfg: &LanesConfig, thread: &str) {
    if let Some(slice) = cfg.thread_slice {
        let granted = thread_slice::request_for_current_thread(slice);
        log::debug!("{thread} thread: {slice:?} time slice requested, granted: {granted}");
    }
}

enum Action {
    Realtime(Vec<RtEntry>),
    Batch(Box<BatchEntry>),
    Exit,
}

fn dispatcher_loop(sh: &Arc<Shared>) {
    loop {
        match next_action(sh) {
            Action::Exit => return,
            Action::Realtime(reqs) => run_realtime(sh, reqs),
            Action::Batch(entry) => {
                let _fail_on_panic = FailOnPanic(entry.slot.clone());
                let unfinished = run_batch_chunk(sh, *entry);
                let mut st = lock(&sh.state);
                st.batch_taken = false;
                if let Some(e) = unfinished {
                    st.batch.push_front(e);
                }
                drop(st);
                sh.space.notify_all();
            }
        }
    }
}

/// Waits for something to do, real-time first.
fn next_action(sh: &Arc<Shared>) -> Action {
    let cfg = &sh.cfg;
    // With share s, a batch chunk (about one quantum) may wait at most
    // quantum * (1 - s) / s behind real-time work.
    let pacing = Pacing {
        lead: sh.lead,
        submit_blocks: sh.submit_blocks,
        max_realtime_in_flight: cfg.max_realtime_in_flight,
        max_batch_in_flight: cfg.max_batch_in_flight,
        batch_max_wait: if cfg.batch_min_share > 0.0 {
            let factor = (1.0 - cfg.batch_min_share) / cfg.batch_min_share;
            Duration::try_from_secs_f64(sh.quantum.as_secs_f64() * factor).unwrap_or(Duration::MAX)
        } else {
            Duration::MAX
        },
    };
    let max_group_partitions = max_partitions(&sh.ctx);
    let mut st = lock(&sh.state);
    loop {
        if st.shutdown {
            fail_queued(sh, st, &Error::Shutdown);
            return Action::Exit;
        }
        // A lost device: queued work fails now (new submissions are
        // refused); the dispatcher stays, idle, until the scheduler drops.
        if let Err(lost) = sh.ctx.health.check()
            && (!st.rt.is_empty() || !st.batch.is_empty())
        {
            fail_queued(sh, st, &lost);
            st = lock(&sh.state);
            continue;
        }
        // Drop cancelled work from the queues (and free its queue space);
        // only after a cancellation, so that a long queue is not scanned
        // on every wake-up.
        if std::mem::take(&mut st.cancelled_since_look) {
            let before = (st.rt.len(), st.batch.len());
            st.rt.retain(|r| !r.slot.is_settled());
            st.batch.retain(|b| !b.slot.is_settled());
            if (st.rt.len(), st.batch.len()) != before {
                st.rt_bytes = st.rt.iter().map(|r| r.data.len() as u64 * 4).sum();
                sh.space.notify_all();
            }
        }
        // Real-time requests past their deadline leave the queue now (where
        // late requests are rejected), not when the dispatcher reaches them.
        let now = Instant::now();
        if st.rt.is_empty() {
            st.deadlines.clear();
        } else if st.deadlines.take_passed(now) {
            st = expire_queued(sh, st, now);
            continue;
        }
        let wake = match decide(&st.queues(), &st.pred, now, &pacing) {
            Decision::Realtime => {
                let age = now.duration_since(st.rt.front().expect("non-empty").enqueued);
                let big = st.rt.len() >= cfg.max_coalesced_requests
                    || st.rt_bytes >= cfg.max_coalesced_bytes;
                if age < cfg.coalesce_delay && !big {
                    let hold = cfg.coalesce_delay - age;
                    let hold = st.deadlines.until_next(now).map_or(hold, |d| d.min(hold));
                    st = sh
                        .work
                        .wait_timeout(st, hold)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                let mut reqs = Vec::new();
                let mut bytes = 0;
                // A group is one reduction: its partitions together must
                // stay within the device's limit, and its partials and
                // tables within the device's largest buffer, or every
                // request in it would fail for the size of the others.
                // (Each request alone was checked when submitted.)
                let mut partitions = 0;
                let mut footprint = Footprint::default();
                while let Some(r) = st.rt.front() {
                    let b = r.data.len() as u64 * 4;
                    let k = r.offsets.len() as u64 - 1;
                    let grown = footprint.with(r.footprint);
                    if !reqs.is_empty()
                        && (reqs.len() >= cfg.max_coalesced_requests
                            || bytes + b > cfg.max_coalesced_bytes
                            || partitions + k > max_group_partitions
                            || !grown.fits_in(&sh.ctx))
                    {
                        break;
                    }
                    bytes += b;
                    partitions += k;
                    footprint = grown;
                    reqs.push(st.rt.pop_front().expect("front exists"));
                }
                st.rt_bytes -= bytes;
                st.rt_in_flight += 1;
                drop(st);
                sh.space.notify_all();
                return Action::Realtime(reqs);
            }
            Decision::Batch => {
                let entry = st.batch.pop_front().expect("non-empty");
                st.batch_taken = true;
                st.last_batch_submit = Some(now);
                return Action::Batch(Box::new(entry));
            }
            Decision::Wait(wake) => match st.deadlines.until_next(now) {
                Some(until) => wake.min(until),
                None => wake,
            },
        };
        if st.batch.is_empty() {
            st.last_batch_submit = None;
        } else if st.last_batch_submit.is_none() {
            st.last_batch_submit = Some(now);
        }
        let (guard, waited) = sh
            .work
            .wait_timeout(st, wake)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        if waited.timed_out() && wake < IDLE_WAIT {
            // A hold ended on its timer: learn how late such wake-ups are.
            let late = Instant::now().saturating_duration_since(now + wake);
            st.pred.observe_wake_late(late, sh.quantum / 2);
        }
    }
}

/// Fails the handle of the batch job the dispatcher holds, should the
/// dispatcher panic meanwhile (a bug in gpulanes), instead of leaving it
/// waiting forever; [`survive_panic`] fails the queued work. (Real-time
/// requests do the same on their own: see `RtEntry`'s `Drop`.)
struct FailOnPanic(Arc<Slot<Reduction>>);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(w) = self.0.settle(Err(Error::Shutdown))
        {
            w.wake();
        }
    }
}

/// Fails the real-time requests still queued past their deadline with
/// [`Error::DeadlineExceeded`] (outside the state lock, as every failure
/// is settled), frees their queue space, and returns the lock.
fn expire_queued<'a>(
    sh: &'a Shared,
    mut st: MutexGuard<'a, State>,
    now: Instant,
) -> MutexGuard<'a, State> {
    let (expired, live): (VecDeque<RtEntry>, VecDeque<RtEntry>) = std::mem::take(&mut st.rt)
        .into_iter()
        .partition(|r| r.deadline.is_some_and(|d| d <= now));
    st.rt = live;
    if expired.is_empty() {
        return st;
    }
    st.rt_bytes -= expired.iter().map(|r| r.data.len() as u64 * 4).sum::<u64>();
    drop(st);
    sh.space.notify_all();
    let mut m = lock(&sh.metrics);
    let mut wakeups = Vec::new();
    for r in &expired {
        let late_by = now.saturating_duration_since(r.deadline.expect("expired has a deadline"));
        // A request cancelled meanwhile counts as cancelled only.
        if let Some(w) = r.slot.settle(Err(Error::DeadlineExceeded { late_by })) {
            m.rt.deadline_misses += 1;
            m.rt.failed += 1;
            wakeups.push(w);
        }
    }
    drop(m);
    wake_all(wakeups);
    drop(expired);
    lock(&sh.state)
}

/// Fails everything queued with `error` ([`Error::Shutdown`], or
/// [`Error::DeviceLost`]), then releases the state lock and wakes the
/// awaiting tasks.
fn fail_queued(sh: &Shared, mut st: MutexGuard<'_, State>, error: &Error) {
    let mut wakeups: Vec<Wakeup> = st
        .rt
        .drain(..)
        .filter_map(|r| r.slot.settle(Err(error.clone())))
        .collect();
    let rt_failed = wakeups.len() as u64;
    st.rt_bytes = 0;
    wakeups.extend(
        st.batch
            .drain(..)
            .filter_map(|b| b.slot.settle(Err(error.clone()))),
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

/// Delivers wake-ups held back while locks were held (see [`Slot::settle`]).
fn wake_all(wakeups: Vec<Wakeup>) {
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
fn release_slot(sh: &Shared, lane: Lane, busy: Duration) {
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

/// Hands a submission to the poller, which completes its callbacks and
/// then runs `on_done`. (Not `Queue::on_submitted_work_done`: that attaches
/// to the queue's latest submission when it is called, which another thread
/// sharing the device may have made meanwhile, and whose callbacks run only
/// when someone polls past it; with nobody left to, a batch chunk's slot
/// stayed taken and its job hung.)
fn track(sh: &Shared, index: wgpu::SubmissionIndex, on_done: Option<OnDone>) {
    lock(&sh.inflight).queue.push_back((index, on_done));
    sh.inflight_cv.notify_all();
}

fn poller_loop(sh: &Arc<Shared>) {
    loop {
        let index = {
            let mut inf = lock(&sh.inflight);
            loop {
                if let Some((i, _)) = inf.queue.front() {
                    break i.clone();
                }
                if inf.stop {
                    return;
                }
                inf = sh.inflight_cv.wait(inf).unwrap_or_else(|e| e.into_inner());
            }
        };
        let waited = sh.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(Duration::from_secs(1)),
        });
        let done = match waited {
            Ok(_) => lock(&sh.inflight).queue.pop_front(),
            Err(wgpu::PollError::Timeout) => None,
            Err(e) => {
                // A refused submission (a lost device refuses them all):
                // found lost, the device fails the queued work (see
                // `device_health`).
                if sh.ctx.health.confirm_loss(&sh.ctx.device, &sh.ctx.queue) {
                    log::debug!("device poll failed on a lost device: {e}");
                } else {
                    log::error!("device poll failed: {e}");
                }
                lock(&sh.inflight).queue.pop_front()
            }
        };
        if let Some((_, Some(on_done))) = done {
            on_done();
        }
    }
}

/// Records when the GPU finished something and returns how long the
/// submission made at `submitted` kept it busy.
fn mark_done(sh: &Shared, submitted: Instant) -> Duration {
    let now = Instant::now();
    let mut last = lock(&sh.last_done);
    let start = (*last).max(submitted);
    *last = now;
    now.saturating_duration_since(start)
}

/// Predicted GPU time to reduce `bytes` at the observed throughput.
fn busy_for(sh: &Shared, bytes: u64) -> Duration {
    let rate = lock(&sh.throughput).bytes_per_s();
    Duration::try_from_secs_f64(bytes as f64 / rate).unwrap_or(MAX_PREDICTION)
}
