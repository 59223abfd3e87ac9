//! The mixed-lanes experiment behind `gpulanes mixed`: real-time lane
//! alone, batch lane alone, and both together, on one device, in one run,
//! so the two ratios that matter are measured side by side:
//!
//! * real-time p99 under batch load / real-time p99 alone (target 1.5x on a
//!   GPU), and
//! * batch throughput under a real-time stream / batch throughput alone
//!   (target 95%).
//!
//! The real-time stream is open-loop (a request every 1/rate seconds,
//! whatever the latency), so queueing shows up in the latency. Batch jobs
//! reduce a device-resident array, two jobs kept in flight, so the batch
//! figure is GPU throughput rather than PCIe upload speed; or, with
//! `batch_groups`, they are group-by sums over host keys and values (the
//! analytics workload: each step uploads its rows, so the figure includes
//! the upload). Under load the
//! stream goes on until the last batch job of the phase is done, so every
//! batch byte counted there was reduced under the stream.
//!
//! The three phases run interleaved in `rounds` rounds, each phase's
//! figures merged over the rounds, so a slow drift of the machine (clocks, a
//! noisy neighbour on a shared host) weighs on all three phases alike
//! instead of on whichever ran last. Every round starts with the real-time
//! lane alone; the two batch phases swap places from one round to the next
//! (batch alone then together, then together then batch alone), so each
//! follows the idle-GPU phase equally often. In a fixed order the batch
//! phase right after the real-time phase ran slower on lavapipe: with a
//! near-zero real-time rate (`--rt-rate 0.001`, so both batch phases are
//! the batch lane alone), "together" came out faster than "alone" in 9 of
//! 10 runs of the fixed order (-2% to +26%, mean +11%), and 2-10% slower
//! with the two swapped. The default is an even number of rounds for that
//! reason. The per-round ratios keep the bias, alternating in sign from
//! round to round; the merged ones cancel it.
//!
//! Before those phases, a **cold start**: `cold_starts` fresh schedulers,
//! one after the other, each given one batch job at once and the real-time
//! stream at the configured rate until that first job is done, with no
//! warm-up of its own; the latencies of those requests are merged into one
//! figure (`cold_start`), set beside the warm real-time p99 alone. This is
//! what a service sees after each restart, which the warm phases hide.
//!
//! Every phase run also leaves a [`PhaseTrace`] on one clock for the whole
//! run: each real-time request's send time and latency, and each batch
//! job's completion time and chunk count, so a calibration, a cold start
//! or a drift shows in time, not only in the merged percentiles.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;

use gpulanes::lanes::{
    Handle, KeyedRequest, LaneMetrics, LaneSnapshot, Lanes, LanesConfig, Request,
};
use gpulanes::{
    AdapterSummary, DeviceArray, Dtype, Element, Engine, Grouped, NanPolicy, Op, Partitions,
    Reduction, Result, Scalar,
};

/// The lowest real-time rate: one request per 1000 s (a lower one would
/// overflow the period's `Duration`).
pub const MIN_RT_RATE_HZ: f64 = 1e-3;

/// Parameters of the experiment.
#[derive(Clone, Debug, Serialize)]
pub struct MixedConfig {
    /// Length of each of the three phases (over all rounds together).
    pub duration: Duration,
    /// Rounds of the three phases, interleaved (at least 1). The batch
    /// phases swap order every round, so an even number balances them.
    pub rounds: usize,
    /// Real-time requests per second (rates below [`MIN_RT_RATE_HZ`] count
    /// as that).
    pub rt_rate_hz: f64,
    /// The values' element type (both lanes).
    #[serde(serialize_with = "dtype_name")]
    pub dtype: Dtype,
    /// Values per real-time request.
    pub rt_size: usize,
    /// Values per batch job.
    pub batch_size: usize,
    /// Batch jobs group by this many distinct int32 keys, scattered over
    /// the rows (a sum per key, keys and values held on the host), instead
    /// of summing a device-resident column.
    pub batch_groups: Option<u64>,
    /// Fresh schedulers in the cold-start phase (0 skips it).
    pub cold_starts: usize,
    /// Scheduler settings used for all three phases.
    #[serde(skip)]
    pub lanes: LanesConfig,
}

/// A dtype in JSON: its name (`float32`, ...).
fn dtype_name<S: serde::Serializer>(dtype: &Dtype, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(dtype.name())
}

/// Default real-time rate on a GPU.
pub const GPU_RT_RATE_HZ: f64 = 1000.0;

/// Default real-time rate on a software adapter. On lavapipe (a 2-core VM)
/// a reduction of 4096 floats, one dispatch and its readback, cost about
/// 100-150 us even when 16 of them shared one submission: mostly, per the
/// perf profiles, lavapipe's threads handing work to each other (context
/// switches, futex wake-ups). An uncoalesced 1000 Hz stream then occupies
/// 10-15% of the device with such fixed costs; half the rate halves that
/// share. On a GPU the same costs are expected to be a few microseconds
/// (not measured here). On that VM the lavapipe bar (p99 within 3x, batch
/// at least 85%) was met in 3 of 12 runs at 1000 Hz and in 34 of 42 at
/// 500 Hz in one series of runs, and in 4 of 6 against 5 of 6 interleaved in a
/// later one (BENCHMARKS.md); `--rt-rate 1000` still runs the GPU rate.
pub const SOFTWARE_RT_RATE_HZ: f64 = 500.0;

impl MixedConfig {
    /// Defaults for `adapter`: on a GPU, 1 GiB batch jobs and 1000
    /// real-time requests per second; on a software adapter, 32 MiB jobs
    /// and 500 requests per second (see [`SOFTWARE_RT_RATE_HZ`]).
    pub fn for_adapter(adapter: &AdapterSummary) -> Self {
        MixedConfig {
            duration: Duration::from_secs(4),
            rounds: 4,
            rt_rate_hz: if adapter.software {
                SOFTWARE_RT_RATE_HZ
            } else {
                GPU_RT_RATE_HZ
            },
            dtype: Dtype::F32,
            rt_size: 4096,
            batch_size: if adapter.software { 8 << 20 } else { 256 << 20 },
            batch_groups: None,
            cold_starts: 8,
            lanes: LanesConfig::default(),
        }
    }
}

/// One phase's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    pub realtime: Option<LaneSnapshot>,
    pub batch: Option<LaneSnapshot>,
    /// Batch input bytes reduced per second of the phase.
    pub batch_bytes_per_s: f64,
    pub realtime_sent: u64,
}

/// The whole experiment.
#[derive(Clone, Debug, Serialize)]
pub struct MixedReport {
    pub adapter: AdapterSummary,
    pub config: MixedConfig,
    pub realtime_alone: PhaseReport,
    pub batch_alone: PhaseReport,
    pub together: PhaseReport,
    /// p99 under load / p99 alone.
    pub rt_p99_ratio: f64,
    /// Batch throughput with the real-time stream / alone.
    pub batch_throughput_ratio: f64,
    /// Real-time requests made during the first batch job of each of
    /// `cold_starts` fresh schedulers (absent with none).
    pub cold_start: Option<ColdStartReport>,
    /// Cold-start real-time p99 / warm real-time p99 alone.
    pub cold_rt_p99_ratio: f64,
    /// Every batch result equalled the first one bit for bit.
    pub batch_results_identical: bool,
    /// The batch quantum the scheduler used, in microseconds.
    pub quantum_us: f64,
    /// The just-in-time submission lead the scheduler used, in microseconds.
    pub submit_lead_us: f64,
    /// How late its timed waits ended at the end of the run (added to the
    /// lead), in microseconds.
    pub wake_lateness_us: f64,
    /// The device's submit blocks while its queue executes (a batch chunk
    /// then never goes behind another chunk).
    pub submit_blocks: bool,
    /// The scheduler's throughput estimate at the end, bytes/s.
    pub throughput_estimate_bytes_per_s: f64,
    /// The two ratios within each round (the headline ratios above are over
    /// all rounds merged), to show the spread on a noisy machine.
    pub per_round: Vec<RoundRatios>,
    /// Every phase run in the order it ran (cold-start schedulers first),
    /// on one clock from the start of the first.
    pub trace: Vec<PhaseTrace>,
}

/// What one phase run (or one cold-start scheduler) did, in time. Times
/// are seconds from the start of the run's first phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseTrace {
    /// `cold start`, `real-time alone`, `batch alone` or `both together`.
    pub phase: &'static str,
    /// The round (from 1; the scheduler's number for a cold start).
    pub round: usize,
    pub start_s: f64,
    pub end_s: f64,
    /// When each real-time request was sent.
    pub rt_sent_s: Vec<f64>,
    /// Its latency, from the send to the result being ready (the lane's
    /// own latency figure, taken per request), in microseconds.
    pub rt_latency_us: Vec<f64>,
    /// When each batch job's result was ready.
    pub batch_done_s: Vec<f64>,
    /// Input bytes of each batch job.
    pub batch_job_bytes: u64,
    /// GPU submissions (chunks) the batch lane made between the previous
    /// job's result and this one's: the job's chunk count where jobs run
    /// one after another (a chunk of the next job already queued counts
    /// with the next).
    pub batch_chunks: Vec<u64>,
}

/// The cold-start phase's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ColdStartReport {
    /// Fresh schedulers started.
    pub schedulers: usize,
    /// Real-time requests made during their first batch jobs, merged.
    pub realtime: LaneSnapshot,
    pub realtime_sent: u64,
}

/// The two ratios of one round.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRatios {
    pub rt_p99_ratio: f64,
    pub batch_throughput_ratio: f64,
}

impl RoundRatios {
    /// The ratios of the three phases' runs (real-time alone, batch alone,
    /// both together).
    fn of([alone, batch_alone, together]: &[PhaseRun; 3]) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        RoundRatios {
            rt_p99_ratio: ratio(together.realtime_p99_us(), alone.realtime_p99_us()),
            batch_throughput_ratio: ratio(
                together.batch_bytes_per_s(),
                batch_alone.batch_bytes_per_s(),
            ),
        }
    }
}

/// A result as bits, to compare with the reference's.
fn bits(r: &Reduction<Scalar>) -> Vec<Option<u64>> {
    r.values
        .iter()
        .map(|v| {
            v.map(|s| match s {
                Scalar::F32(x) => u64::from(x.to_bits()),
                Scalar::F64(x) => x.to_bits(),
                Scalar::I32(x) => x as u32 as u64,
                Scalar::U32(x) => u64::from(x),
                Scalar::I64(x) => x as u64,
            })
        })
        .collect()
}

/// What every batch job of the experiment computes, and the bits each run
/// of it must give (the engine's own reduction of the same input).
#[derive(Clone)]
struct BatchWork {
    job: BatchJob,
    /// Input bytes of one job (values, and keys).
    bytes: u64,
}

#[derive(Clone)]
enum BatchJob {
    /// A sum over a device-resident column.
    Sum {
        array: Arc<DeviceArray>,
        reference: Reduction<Scalar>,
    },
    /// A group-by sum over host keys and values.
    GroupBy {
        request: KeyedRequest<i32>,
        reference: Arc<Grouped<i32>>,
    },
}

/// A submitted batch job.
enum PendingJob {
    Sum(Handle<Reduction<Scalar>>),
    GroupBy(Handle<Grouped<i32>>),
}

impl BatchWork {
    fn submit(&self, lanes: &Lanes) -> Result<PendingJob> {
        Ok(match &self.job {
            BatchJob::Sum { array, .. } => {
                PendingJob::Sum(lanes.batch(Request::device_typed(array.clone(), Op::Sum))?)
            }
            BatchJob::GroupBy { request, .. } => PendingJob::GroupBy(lanes.batch(request.clone())?),
        })
    }
}

impl PendingJob {
    fn is_finished(&self) -> bool {
        match self {
            PendingJob::Sum(h) => h.is_finished(),
            PendingJob::GroupBy(h) => h.is_finished(),
        }
    }

    /// Waits for the job; true when its result has `work`'s reference
    /// bits.
    fn wait_same(self, work: &BatchWork) -> Result<bool> {
        Ok(match (self, &work.job) {
            (PendingJob::Sum(h), BatchJob::Sum { reference, .. }) => {
                bits(&h.wait()?) == bits(reference)
            }
            (PendingJob::GroupBy(h), BatchJob::GroupBy { reference, .. }) => {
                let got = h.wait()?;
                got.keys == reference.keys
                    && got.reductions.len() == reference.reductions.len()
                    && got
                        .reductions
                        .iter()
                        .zip(&reference.reductions)
                        .all(|(g, r)| bits(g) == bits(r) && g.counts == r.counts)
            }
            _ => false,
        })
    }
}

/// The batch jobs' work and the real-time request (a sum over
/// `cfg.rt_size` values), of `cfg.dtype`: small integers, scaled by a
/// quarter for the float types.
fn workload(engine: &Engine, cfg: &MixedConfig) -> Result<(BatchWork, Request<Scalar>)> {
    fn of<E: Element>(
        engine: &Engine,
        cfg: &MixedConfig,
        value: impl Fn(i32) -> E,
    ) -> Result<(BatchWork, Request<Scalar>)> {
        let batch: Vec<E> = (0..cfg.batch_size)
            .map(|i| value((i % 4099) as i32 - 2048))
            .collect();
        let rt: Arc<[E]> = (0..cfg.rt_size).map(|i| value((i % 97) as i32)).collect();
        let values_bytes = batch.len() as u64 * E::DTYPE.size();
        let work = match cfg.batch_groups {
            None => {
                let array = Arc::new(engine.upload(&batch)?);
                let reference = engine.reduce_device_typed(
                    &array,
                    Op::Sum,
                    &Partitions::Whole,
                    NanPolicy::Propagate,
                )?;
                BatchWork {
                    job: BatchJob::Sum { array, reference },
                    bytes: values_bytes,
                }
            }
            Some(groups) => {
                // Scattered: consecutive rows fall in far-apart groups.
                let keys: Arc<[i32]> = (0..cfg.batch_size as u64)
                    .map(|i| (i.wrapping_mul(2_654_435_761) % groups) as i32)
                    .collect();
                let reference =
                    engine.reduce_by_key(&keys, &batch, &[Op::Sum], NanPolicy::Propagate)?;
                let keys_bytes = keys.len() as u64 * 4;
                BatchWork {
                    job: BatchJob::GroupBy {
                        request: Request::keyed(keys, batch, &[Op::Sum], NanPolicy::Propagate),
                        reference: Arc::new(reference),
                    },
                    bytes: values_bytes + keys_bytes,
                }
            }
        };
        Ok((work, Request::host_typed(rt, Op::Sum)))
    }
    match cfg.dtype {
        Dtype::F32 => of(engine, cfg, |v| v as f32 * 0.25),
        Dtype::F64 => of(engine, cfg, |v| f64::from(v) * 0.25),
        Dtype::I32 => of(engine, cfg, |v| v),
        Dtype::U32 => of(engine, cfg, |v| v.unsigned_abs()),
        Dtype::I64 => of(engine, cfg, i64::from),
    }
}

/// Runs the three phases; `progress` is told each phase's name as it starts.
pub fn run(
    engine: &Engine,
    cfg: MixedConfig,
    mut progress: impl FnMut(&str),
) -> Result<MixedReport> {
    let (work, rt_data) = workload(engine, &cfg)?;
    let mut identical = true;
    let clock = Instant::now();
    let mut trace = Vec::new();
    let cold_start = if cfg.cold_starts > 0 {
        progress(&format!(
            "cold start ({} fresh schedulers)",
            cfg.cold_starts
        ));
        let (report, same) = cold_start(engine, &cfg, &work, &rt_data, clock, &mut trace)?;
        identical &= same;
        Some(report)
    } else {
        None
    };
    let lanes = Arc::new(Lanes::new(engine, cfg.lanes.clone())?);

    // Warm-up: pipelines, pools and the throughput estimate.
    for _ in 0..20 {
        lanes.realtime(rt_data.clone())?.wait()?;
    }
    work.submit(&lanes)?.wait_same(&work)?;

    let rounds = cfg.rounds.max(1);
    let slice = cfg.duration / u32::try_from(rounds).unwrap_or(u32::MAX);
    let mut merged: [PhaseRun; 3] = Default::default();
    let mut per_round = Vec::new();
    for round in 1..=rounds {
        let mut round_runs: [PhaseRun; 3] = Default::default();
        for (i, name) in phase_order(round) {
            progress(&if rounds > 1 {
                format!("round {round}/{rounds}: {name}")
            } else {
                name.to_string()
            });
            let rt = (i != 1).then_some(&rt_data);
            let batch = (i != 0).then_some(&work);
            let (run, mut t) = phase(&lanes, &cfg, slice, rt, batch, clock)?;
            (t.phase, t.round) = (name, round);
            trace.push(t);
            round_runs[i] = run;
            identical &= round_runs[i].batch_identical;
        }
        per_round.push(RoundRatios::of(&round_runs));
        for (into, run) in merged.iter_mut().zip(round_runs) {
            into.merge(run);
        }
    }
    let headline = RoundRatios::of(&merged);
    let [realtime_alone, batch_alone, together] = merged.map(PhaseRun::report);
    let idle_p99 = realtime_alone
        .realtime
        .as_ref()
        .map_or(0.0, |s| s.latency.p99_us);
    let cold_rt_p99_ratio = match &cold_start {
        Some(c) if idle_p99 > 0.0 => c.realtime.latency.p99_us / idle_p99,
        _ => f64::NAN,
    };

    Ok(MixedReport {
        cold_start,
        cold_rt_p99_ratio,
        adapter: engine.adapter().clone(),
        rt_p99_ratio: headline.rt_p99_ratio,
        batch_throughput_ratio: headline.batch_throughput_ratio,
        batch_results_identical: identical,
        quantum_us: lanes.quantum().as_secs_f64() * 1e6,
        submit_lead_us: lanes.submit_lead().as_secs_f64() * 1e6,
        wake_lateness_us: lanes.wake_lateness().as_secs_f64() * 1e6,
        submit_blocks: lanes.submit_blocks(),
        throughput_estimate_bytes_per_s: lanes.throughput_estimate(),
        per_round,
        trace,
        config: cfg,
        realtime_alone,
        batch_alone,
        together,
    })
}

/// The phases of round `round` (from 1) in the order they run, with their
/// index in a round's `[real-time alone, batch alone, together]`: the
/// real-time lane alone first, then the two batch phases, whose order
/// alternates from round to round.
fn phase_order(round: usize) -> [(usize, &'static str); 3] {
    const RT: (usize, &str) = (0, "real-time alone");
    const BATCH: (usize, &str) = (1, "batch alone");
    const TOGETHER: (usize, &str) = (2, "both together");
    if round % 2 == 1 {
        [RT, BATCH, TOGETHER]
    } else {
        [RT, TOGETHER, BATCH]
    }
}

/// One phase's raw figures, mergeable over rounds.
#[derive(Default)]
struct PhaseRun {
    realtime: Option<LaneMetrics>,
    batch: Option<LaneMetrics>,
    batch_bytes: u64,
    batch_span: Duration,
    realtime_sent: u64,
    batch_identical: bool,
}

impl PhaseRun {
    fn merge(&mut self, other: PhaseRun) {
        fn add(into: &mut Option<LaneMetrics>, from: Option<LaneMetrics>) {
            match (into.as_mut(), from) {
                (Some(a), Some(b)) => a.merge(&b),
                (None, b) => *into = b,
                (Some(_), None) => {}
            }
        }
        add(&mut self.realtime, other.realtime);
        add(&mut self.batch, other.batch);
        self.batch_bytes += other.batch_bytes;
        self.batch_span += other.batch_span;
        self.realtime_sent += other.realtime_sent;
    }

    /// Real-time p99 in microseconds (0 without a real-time stream).
    fn realtime_p99_us(&self) -> f64 {
        self.realtime
            .as_ref()
            .map_or(0.0, |m| m.snapshot(0).latency.p99_us)
    }

    fn batch_bytes_per_s(&self) -> f64 {
        if self.batch_span > Duration::ZERO {
            self.batch_bytes as f64 / self.batch_span.as_secs_f64()
        } else {
            0.0
        }
    }

    fn report(self) -> PhaseReport {
        let batch_bytes_per_s = self.batch_bytes_per_s();
        PhaseReport {
            realtime: self.realtime.map(|m| m.snapshot(0)),
            batch: self.batch.map(|m| m.snapshot(0)),
            batch_bytes_per_s,
            realtime_sent: self.realtime_sent,
        }
    }
}

fn phase(
    lanes: &Arc<Lanes>,
    cfg: &MixedConfig,
    duration: Duration,
    rt: Option<&Request<Scalar>>,
    batch: Option<&BatchWork>,
    clock: Instant,
) -> Result<(PhaseRun, PhaseTrace)> {
    lanes.wait_idle();
    lanes.reset_metrics();
    let mut rt_trace = RtTrace::default();
    let stop = Arc::new(AtomicBool::new(false));
    // However the phase ends (an error included), the batch driver stops.
    let _stop_driver = SetOnDrop(stop.clone());
    let start = Instant::now();

    // Batch driver: two jobs in flight until the phase ends, then the jobs
    // in flight finish. `batch_done` says the driver has returned.
    let batch_done = Arc::new(AtomicBool::new(batch.is_none()));
    let batch_thread = batch.map(|work| {
        let (lanes, work, stop, done) = (
            lanes.clone(),
            work.clone(),
            stop.clone(),
            batch_done.clone(),
        );
        std::thread::spawn(move || -> Result<(BatchDriven, Vec<f64>, Vec<u64>)> {
            // Set however the driver returns, a panic included.
            let _done = SetOnDrop(done);
            drive_batch(&lanes, &work, &stop, start, clock)
        })
    });

    // Real-time generator: open loop at the configured rate. With batch
    // work, it runs on until the last batch job is done, so every batch
    // byte of the phase is reduced under the real-time stream (the jobs in
    // flight at the end of the phase would otherwise finish alone, and
    // flatter the throughput under load). Without a stream (batch alone)
    // this thread waits in the same 5 ms steps, so the two batch phases
    // differ in the real-time requests only.
    const STEP: Duration = Duration::from_millis(5);
    let mut sent = 0u64;
    let mut handles = Vec::new();
    let period = Duration::from_secs_f64(1.0 / cfg.rt_rate_hz.max(MIN_RT_RATE_HZ));
    let end = start + duration;
    let mut next = Instant::now();
    loop {
        // Once the phase is over, the batch driver stops queueing jobs,
        // and requests go on only while its last jobs run (at a low rate
        // the phase would otherwise run a whole period long).
        let now = Instant::now();
        if now >= end {
            stop.store(true, Ordering::Relaxed);
            if batch_done.load(Ordering::Acquire) {
                break;
            }
        }
        let Some(request) = rt.filter(|_| now >= next) else {
            // In short steps, to see the phase end and the batch driver
            // finish.
            let until_end = end.saturating_duration_since(now);
            let until_next = if rt.is_some() { next - now } else { STEP };
            std::thread::sleep(
                until_next
                    .min(STEP)
                    .min(until_end.max(Duration::from_millis(1))),
            );
            continue;
        };
        next += period;
        let sent_at = Instant::now();
        let h = lanes.realtime(request.clone())?;
        handles.push(rt_trace.watch(h, sent_at));
        sent += 1;
        // Collect finished ones so memory stays flat on long runs.
        if handles.len() > 4096 {
            handles.retain(|h| !h.is_finished());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.wait()?;
    }
    let (rt_sent_s, rt_latency_us) = rt_trace.finish(clock);
    let mut trace = PhaseTrace {
        start_s: (start - clock).as_secs_f64(),
        end_s: clock.elapsed().as_secs_f64(),
        rt_sent_s,
        rt_latency_us,
        batch_job_bytes: batch.map_or(0, |w| w.bytes),
        ..Default::default()
    };
    let mut run = PhaseRun {
        realtime_sent: sent,
        batch_identical: true,
        ..Default::default()
    };
    if let Some(t) = batch_thread {
        let (driven, done_s, chunks) = t.join().expect("batch driver thread")?;
        run.batch_identical = driven.same;
        run.batch_bytes = driven.bytes;
        run.batch_span = driven.span;
        trace.batch_done_s = done_s;
        trace.batch_chunks = chunks;
    }
    let (rt_metrics, batch_metrics) = lanes.take_lane_metrics();
    run.realtime = rt.map(|_| rt_metrics);
    run.batch = batch.map(|_| batch_metrics);
    Ok((run, trace))
}

/// The completion time of each watched real-time request, stamped by the
/// waker the scheduler calls as it settles the request's result.
#[derive(Default)]
struct RtTrace {
    requests: Vec<(Instant, Arc<Stamp>)>,
}

/// Set once, when the request's result is ready.
#[derive(Default)]
struct Stamp(OnceLock<Instant>);

impl Wake for Stamp {
    fn wake(self: Arc<Self>) {
        let _ = self.0.set(Instant::now());
    }
}

/// A handle polled once with a [`Stamp`]'s waker: still pending (the
/// stamp is set when it settles), or already settled at that poll.
enum Watched {
    Pending(Handle<Reduction<Scalar>>),
    Ready(Result<Reduction<Scalar>>),
}

impl Watched {
    fn is_finished(&self) -> bool {
        match self {
            Watched::Pending(h) => h.is_finished(),
            Watched::Ready(_) => true,
        }
    }

    fn wait(self) -> Result<Reduction<Scalar>> {
        match self {
            Watched::Pending(h) => h.wait(),
            Watched::Ready(r) => r,
        }
    }
}

impl RtTrace {
    /// Polls `handle` once with a waker that stamps its completion.
    fn watch(&mut self, mut handle: Handle<Reduction<Scalar>>, sent: Instant) -> Watched {
        let stamp = Arc::new(Stamp::default());
        let waker = Waker::from(stamp.clone());
        let polled = std::pin::Pin::new(&mut handle).poll(&mut Context::from_waker(&waker));
        if let Poll::Ready(r) = polled {
            let _ = stamp.0.set(Instant::now());
            self.requests.push((sent, stamp));
            return Watched::Ready(r);
        }
        self.requests.push((sent, stamp));
        Watched::Pending(handle)
    }

    /// Send times (seconds from `clock`) and latencies (us) of the requests
    /// whose results were stamped.
    fn finish(self, clock: Instant) -> (Vec<f64>, Vec<f64>) {
        self.requests
            .into_iter()
            .filter_map(|(sent, stamp)| {
                let done = *stamp.0.get()?;
                Some((
                    sent.duration_since(clock).as_secs_f64(),
                    done.duration_since(sent).as_secs_f64() * 1e6,
                ))
            })
            .unzip()
    }
}

/// The cold-start phase: `cfg.cold_starts` fresh schedulers, one at a time.
/// Each is given one batch job over `array` as soon as it is made, and the
/// open-loop real-time stream runs while that job lasts (at least one
/// request per scheduler). Returns the merged real-time figures, and
/// whether every job had the bits of `reference`.
fn cold_start(
    engine: &Engine,
    cfg: &MixedConfig,
    work: &BatchWork,
    rt_data: &Request<Scalar>,
    clock: Instant,
    trace: &mut Vec<PhaseTrace>,
) -> Result<(ColdStartReport, bool)> {
    let period = Duration::from_secs_f64(1.0 / cfg.rt_rate_hz.max(MIN_RT_RATE_HZ));
    let mut merged = LaneMetrics::default();
    let mut sent = 0u64;
    let mut same = true;
    for scheduler in 1..=cfg.cold_starts {
        let start = Instant::now();
        let lanes = Lanes::new(engine, cfg.lanes.clone())?;
        let job = work.submit(&lanes)?;
        let mut rt_trace = RtTrace::default();
        let mut handles = Vec::new();
        let mut next = Instant::now();
        while handles.is_empty() || !job.is_finished() {
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(Duration::from_millis(1)));
                continue;
            }
            next += period;
            let sent_at = Instant::now();
            let h = lanes.realtime(rt_data.clone())?;
            handles.push(rt_trace.watch(h, sent_at));
        }
        sent += handles.len() as u64;
        for h in handles {
            h.wait()?;
        }
        same &= job.wait_same(work)?;
        let done = Instant::now();
        let (rt_sent_s, rt_latency_us) = rt_trace.finish(clock);
        trace.push(PhaseTrace {
            phase: "cold start",
            round: scheduler,
            start_s: (start - clock).as_secs_f64(),
            end_s: (done - clock).as_secs_f64(),
            rt_sent_s,
            rt_latency_us,
            batch_done_s: vec![(done - clock).as_secs_f64()],
            batch_job_bytes: work.bytes,
            batch_chunks: vec![lanes.metrics().batch.submits],
        });
        let (rt, _) = lanes.take_lane_metrics();
        merged.merge(&rt);
    }
    Ok((
        ColdStartReport {
            schedulers: cfg.cold_starts,
            realtime: merged.snapshot(0),
            realtime_sent: sent,
        },
        same,
    ))
}

/// What the batch driver did in one phase.
struct BatchDriven {
    /// Bytes reduced.
    bytes: u64,
    /// From the phase's start to the last completion.
    span: Duration,
    /// Every result had the reference's bits.
    same: bool,
}

/// Keeps two batch jobs of `work` in flight until `stop`, then lets the
/// last ones finish. Returns what it did, and for each job the time its
/// result was taken (seconds from `clock`) and the batch lane's
/// submissions since the previous one (see [`PhaseTrace::batch_chunks`]).
fn drive_batch(
    lanes: &Lanes,
    work: &BatchWork,
    stop: &AtomicBool,
    start: Instant,
    clock: Instant,
) -> Result<(BatchDriven, Vec<f64>, Vec<u64>)> {
    let mut pending = std::collections::VecDeque::new();
    let mut bytes = 0u64;
    let mut same = true;
    let mut last = start;
    let (mut done_s, mut chunks) = (Vec::new(), Vec::new());
    let mut submits = 0u64;
    while !stop.load(Ordering::Relaxed) || !pending.is_empty() {
        if !stop.load(Ordering::Relaxed) && pending.len() < 2 {
            pending.push_back(work.submit(lanes)?);
            continue;
        }
        let job = pending.pop_front().expect("non-empty");
        same &= job.wait_same(work)?;
        // Jobs finishing after the stop flag ran inside the phase too; the
        // span ends at the last completion.
        bytes += work.bytes;
        last = Instant::now();
        let now_submits = lanes.metrics().batch.submits;
        done_s.push((last - clock).as_secs_f64());
        chunks.push(now_submits.saturating_sub(submits));
        submits = now_submits;
    }
    let driven = BatchDriven {
        bytes,
        span: last.duration_since(start),
        same,
    };
    Ok((driven, done_s, chunks))
}

/// Sets its flag when dropped, on every way out of a scope.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_batch_phase_follows_the_idle_phase_in_half_of_an_even_number_of_rounds() {
        let mut after_idle = [0usize; 3];
        for round in 1..=4 {
            let order = phase_order(round);
            // Every phase once per round, the real-time lane alone first.
            let mut seen: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
            seen.sort();
            assert_eq!(seen, [0, 1, 2]);
            assert_eq!(order[0], (0, "real-time alone"));
            after_idle[order[1].0] += 1;
        }
        assert_eq!(after_idle, [0, 2, 2]);
        assert_eq!(phase_order(1)[1].1, "batch alone");
        assert_eq!(phase_order(2)[1].1, "both together");
    }
}
