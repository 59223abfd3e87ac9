//! Benchmarks users can run (`gpulanes bench`, `benches/reduce.rs`): the
//! measurement functions, and the serialisable report they fill.
//!
//! What is measured, per op, size and partitioning (whole, or equal
//! partitions of a few sizes):
//! - **device**: a reduction of a device-resident [`crate::DeviceArray`],
//!   timed with GPU timestamp queries around the recorded work where the
//!   device has `TIMESTAMP_QUERY` (wall clock from submit to result
//!   otherwise), rotating over several input buffers so caches do not
//!   flatter the result, after warm-up; the median of many runs;
//! - **host**: the same reduction from a host slice, upload included (wall
//!   clock);
//! - **CPU baselines** on the same data: the plain loop on one thread, the
//!   same loop on every core (`std::thread::scope`), and `ndarray`.
//!
//! Every GPU result is checked against the exact CPU reference before it is
//! timed, and every timed run must reproduce the checked result bit for bit.
//! Throughput (GB/s) is input bytes over the median time; it is compared with
//! two floors measured in the same run: the device's copy bandwidth (a large
//! buffer-to-buffer copy, bytes read + bytes written) and the host-to-device
//! upload bandwidth; the empty round trip is the latency floor.
//!
//! On a software adapter (lavapipe) every figure describes the CPU that runs
//! the driver, never a GPU: the report says so (`software`, `note`).

pub mod check;
pub mod cpu;
pub mod data;
pub mod gpu;
pub mod size;
pub mod stats;
mod table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::{AdapterSummary, Engine, Error, Op, Partitions, Reduction, Result};

use check::{Comparison, Reference, compare, same_bits};
use cpu::CpuImpl;
use gpu::{Bandwidth, GpuTimer, RoundTrip, TimerKind};
use stats::{Budget, Summary, gbps, summarize};

/// Identifies the JSON layout; bumped when fields change meaning.
pub const SCHEMA: &str = "gpulanes-bench/1";

/// Which timer to use for device-resident work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerChoice {
    /// Timestamp queries where available, wall clock otherwise.
    Auto,
    /// Always the wall clock (submit to result).
    Wall,
}

fn op_names<S: Serializer>(ops: &[Op], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(ops.iter().map(|o| o.name()))
}

/// What to measure and for how long.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    pub quick: bool,
    /// Input sizes in bytes (f32, so multiples of 4).
    pub sizes: Vec<u64>,
    #[serde(serialize_with = "op_names")]
    pub ops: Vec<Op>,
    /// Equal partition sizes in elements; each is used for inputs with
    /// more elements than it.
    pub partition_sizes: Vec<u64>,
    /// Skip partitionings with more partitions than this (`None`: no cap);
    /// skipped cases are listed in the report.
    pub max_partitions: Option<u64>,
    /// Also measure from host memory (upload included).
    pub host: bool,
    /// Also measure the CPU baselines.
    pub cpu: bool,
    pub timer: TimerChoice,
    /// Size of the buffer for the copy and upload floors.
    pub copy_bytes: u64,
    /// Rotate over enough input buffers to hold at least this many bytes
    /// (between 2 and `max_inputs` buffers).
    pub rotate_bytes: u64,
    pub max_inputs: usize,
    /// Threads for the multi-threaded CPU baseline (and for data set-up).
    pub threads: usize,
    /// Seed of the random inputs (uniform in [-1, 1)).
    pub seed: u64,
    pub device_budget: Budget,
    pub host_budget: Budget,
    pub cpu_budget: Budget,
    pub copy_budget: Budget,
    pub latency_warmup: usize,
    pub latency_runs: usize,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl BenchConfig {
    /// The largest default size: 1 GiB on a GPU (256 MiB with `quick`),
    /// 64 MiB on a software adapter (16 MiB with `quick`).
    pub fn default_max_bytes(software: bool, quick: bool) -> u64 {
        match (software, quick) {
            (false, false) => GIB,
            (false, true) => 256 * MIB,
            (true, false) => 64 * MIB,
            (true, true) => 16 * MIB,
        }
    }

    /// Defaults for this adapter: sizes from 4 KiB to
    /// [`Self::default_max_bytes`] (x4 steps, x16 with `quick`), ops sum,
    /// mean and max, partitions of 64, 4096 and 1Mi elements.
    pub fn new(adapter: &AdapterSummary, quick: bool) -> Self {
        let software = adapter.software;
        let max = Self::default_max_bytes(software, quick);
        let sizes = size::ladder(4 * KIB, max, if quick { 16 } else { 4 });
        let (device_budget, host_budget, cpu_budget, copy_budget) = if quick {
            (
                Budget::new(2, 5, 50, 100),
                Budget::new(1, 3, 20, 100),
                Budget::new(1, 3, 10, 60),
                Budget::new(2, 5, 20, 150),
            )
        } else {
            (
                Budget::new(3, 10, 200, 300),
                Budget::new(2, 5, 50, 400),
                Budget::new(1, 3, 20, 200),
                Budget::new(3, 10, 100, 500),
            )
        };
        BenchConfig {
            quick,
            copy_bytes: default_copy_bytes(&sizes, adapter),
            sizes,
            ops: vec![Op::Sum, Op::Mean, Op::Max],
            partition_sizes: vec![64, 4096, 1 << 20],
            // Software adapters run many small partitions very slowly.
            max_partitions: match (software, quick) {
                (false, _) => None,
                (true, true) => Some(4096),
                (true, false) => Some(16384),
            },
            host: true,
            cpu: true,
            timer: TimerChoice::Auto,
            rotate_bytes: if software { 64 * MIB } else { 512 * MIB },
            max_inputs: 64,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            device_budget,
            host_budget,
            cpu_budget,
            copy_budget,
            latency_warmup: if quick { 10 } else { 50 },
            latency_runs: if quick { 100 } else { 500 },
        }
    }

    /// Replaces the sizes and sizes the copy floor to match.
    pub fn set_sizes(&mut self, sizes: Vec<u64>, adapter: &AdapterSummary) {
        self.copy_bytes = default_copy_bytes(&sizes, adapter);
        self.sizes = sizes;
    }

    /// Checks the configuration; the message names the problem.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.sizes.is_empty() {
            return Err("no sizes to measure".into());
        }
        if let Some(s) = self.sizes.iter().find(|&&s| s < 4 || !s.is_multiple_of(4)) {
            return Err(format!(
                "size {s} bytes is not a positive multiple of 4 (f32 elements)"
            ));
        }
        if self.ops.is_empty() {
            return Err("no ops to measure".into());
        }
        if self.partition_sizes.contains(&0) {
            return Err("partition sizes must be at least 1 element".into());
        }
        if self.copy_bytes < 4 || !self.copy_bytes.is_multiple_of(4) {
            return Err(format!(
                "copy size {} is not a positive multiple of 4",
                self.copy_bytes
            ));
        }
        Ok(())
    }

    /// Number of input buffers rotated over for inputs of `bytes`.
    pub fn inputs_for(&self, bytes: u64) -> usize {
        (self.rotate_bytes.div_ceil(bytes.max(1)) as usize).clamp(2, self.max_inputs.max(2))
    }

    /// The partitionings measured for inputs of `elements`: whole, then each
    /// partition size below `elements` (within `max_partitions`).
    pub fn partitionings(&self, elements: u64) -> Vec<Option<u64>> {
        std::iter::once(None)
            .chain(
                self.partition_sizes
                    .iter()
                    .filter(|&&p| p < elements && !self.over_cap(elements, p))
                    .map(|&p| Some(p)),
            )
            .collect()
    }

    fn over_cap(&self, elements: u64, p: u64) -> bool {
        self.max_partitions
            .is_some_and(|m| elements.div_ceil(p.max(1)) > m)
    }

    /// Partitionings left out by `max_partitions`, as readable lines.
    pub fn skipped(&self) -> Vec<String> {
        let mut out = Vec::new();
        for &bytes in &self.sizes {
            let n = bytes / 4;
            for &p in &self.partition_sizes {
                if p < n && self.over_cap(n, p) {
                    out.push(format!(
                        "{} p={}: {} partitions > max_partitions {}",
                        size::label(bytes),
                        size::label(p),
                        n.div_ceil(p),
                        self.max_partitions.unwrap_or(0)
                    ));
                }
            }
        }
        out
    }

    /// Progress steps of a run (for a progress bar).
    pub fn steps(&self) -> u64 {
        4 + self
            .sizes
            .iter()
            .map(|&b| (self.ops.len() * self.partitionings(b / 4).len()) as u64)
            .sum::<u64>()
    }
}

/// The copy floor uses a buffer as large as the largest size, between
/// 16 MiB and 1 GiB, within the device's buffer limit.
fn default_copy_bytes(sizes: &[u64], adapter: &AdapterSummary) -> u64 {
    let largest = sizes.iter().copied().max().unwrap_or(16 * MIB);
    largest
        .clamp(16 * MIB, GIB)
        .min(adapter.max_buffer_bytes & !255)
        .max(4)
}

/// Where a timed reduction read its input from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A device-resident array (no upload).
    Device,
    /// A host slice (upload included).
    Host,
}

/// The correctness check of one row.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Every checked input within tolerance, and every timed run identical
    /// to the checked result.
    pub pass: bool,
    pub inputs_checked: usize,
    pub partitions_checked: u64,
    /// The acceptance rule ([`check::RULE`]).
    pub rule: &'static str,
    pub max_ulps: u64,
    /// Worst |gpu − reference| / tolerance (≤ 1 passes).
    pub max_err_over_tol: f64,
    /// ‖gpu − reference‖₂ / ‖reference‖₂, worst over the inputs.
    pub max_rel_err: f64,
    /// Every timed run returned exactly the checked result.
    pub timed_runs_match: bool,
    /// What went wrong, if anything.
    pub detail: Option<String>,
}

/// One GPU measurement.
#[derive(Clone, Debug, Serialize)]
pub struct GpuRow {
    pub op: &'static str,
    pub source: Source,
    pub bytes: u64,
    pub size: String,
    pub elements: u64,
    /// `None` for a whole-buffer reduction.
    pub partition_size: Option<u64>,
    pub partitions: u64,
    /// Input buffers rotated over.
    pub inputs: usize,
    /// The timer behind `time` and `gbps`.
    pub timer: TimerKind,
    pub time: Summary,
    /// Submit-to-result wall clock (the same samples as `time` when the timer is wall).
    pub wall: Summary,
    /// Input bytes / median time, GB/s.
    pub gbps: f64,
    /// `gbps` / the bandwidth floor's GB/s (`floors.bandwidth`: the faster
    /// of the buffer copy and the shader copy, read + write counted): 1.0 = a
    /// reduction streaming input bytes as fast as the device copies bytes.
    pub ratio_to_copy: f64,
    /// `gbps` / the buffer-to-buffer copy's GB/s alone.
    pub ratio_to_buffer_copy: f64,
    /// Median time per rotated input (index = input), to expose any
    /// dependence on where a buffer was placed.
    pub per_input_median_ns: Vec<f64>,
    /// `gbps` / upload-floor GB/s.
    pub ratio_to_upload: f64,
    pub check: CheckReport,
    /// Set when the measurement could not be made.
    pub error: Option<String>,
}

/// One CPU baseline measurement.
#[derive(Clone, Debug, Serialize)]
pub struct CpuRow {
    pub op: &'static str,
    pub implementation: CpuImpl,
    pub threads: usize,
    pub bytes: u64,
    pub size: String,
    pub elements: u64,
    pub partition_size: Option<u64>,
    pub partitions: u64,
    pub inputs: usize,
    pub time: Summary,
    pub gbps: f64,
    pub ratio_to_copy: f64,
    /// ‖cpu − reference‖₂ / ‖reference‖₂ (informational: f32 ndarray sums drift).
    pub rel_err: f64,
}

/// The floors measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Floors {
    /// `copy_buffer_to_buffer` (read + write counted).
    pub copy: Bandwidth,
    /// The WGSL copy kernel (`shaders/bench_copy.wgsl`), read + write counted.
    pub shader_copy: Option<Bandwidth>,
    pub shader_copy_error: Option<String>,
    /// The faster of the two copies: what `ratio_to_copy` divides by.
    pub bandwidth: BandwidthFloor,
    pub upload: Bandwidth,
    pub round_trip: RoundTrip,
}

/// The device bandwidth a reduction is compared with.
#[derive(Clone, Debug, Serialize)]
pub struct BandwidthFloor {
    /// Bytes read + written per second, 10^9.
    pub gbps: f64,
    /// `buffer_copy` or `shader_copy`.
    pub source: &'static str,
}

/// The machine the CPU baselines (and, on lavapipe, the "GPU") ran on.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub os: &'static str,
    pub arch: &'static str,
    pub cpu_model: Option<String>,
    pub threads: usize,
}

impl HostInfo {
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        HostInfo {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpu_model,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Everything one `gpulanes bench` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema: &'static str,
    pub gpulanes_version: &'static str,
    pub date_utc: String,
    pub unix_time: u64,
    pub command: Vec<String>,
    /// True on a software adapter: the timings say nothing about GPU speed.
    pub software: bool,
    pub note: String,
    pub adapter: AdapterSummary,
    pub host: HostInfo,
    pub config: BenchConfig,
    /// The timer used for device-resident rows (host rows are always wall clock).
    pub timer: TimerKind,
    pub timestamp_period_ns: Option<f64>,
    pub floors: Floors,
    pub results: Vec<GpuRow>,
    pub cpu: Vec<CpuRow>,
    pub all_checks_pass: bool,
    pub failures: Vec<String>,
    /// Cases not measured (see `config.max_partitions`).
    pub skipped: Vec<String>,
    pub elapsed_s: f64,
}

impl BenchReport {
    /// The human-readable table (what `gpulanes bench` prints on stdout).
    pub fn table(&self) -> String {
        table::render(self)
    }
}

/// A progress update: `done` of `total` steps, and what runs next.
pub struct Progress<'a> {
    pub done: u64,
    pub total: u64,
    pub message: &'a str,
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn partitions_of(part: Option<u64>) -> Partitions {
    part.map_or(Partitions::Whole, Partitions::EqualSize)
}

fn case_label(op: Op, bytes: u64, part: Option<u64>) -> String {
    match part {
        None => format!("{op} {} whole", size::label(bytes)),
        Some(p) => format!("{op} {} p={}", size::label(bytes), size::label(p)),
    }
}

/// The exact references of `op` for every input, computed on `threads`
/// threads (partitioned inputs are split at partition boundaries).
fn references(
    inputs: &[Vec<f32>],
    op: Op,
    part: Option<u64>,
    threads: usize,
) -> Result<Vec<Reference>> {
    // Jobs: (input, element range); ranges of one input are consecutive.
    let mut jobs: Vec<(usize, usize, usize)> = Vec::new();
    for (i, data) in inputs.iter().enumerate() {
        let n = data.len();
        match part {
            Some(p) if n > 0 => {
                let p = p as usize;
                let per_job = n.div_ceil(p).div_ceil(threads.max(1)).max(1) * p;
                let mut start = 0;
                while start < n {
                    let end = (start + per_job).min(n);
                    jobs.push((i, start, end));
                    start = end;
                }
            }
            _ => jobs.push((i, 0, n)),
        }
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<Reference>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, jobs.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, a, b)) = jobs.get(j) else {
                            break;
                        };
                        out.push((
                            j,
                            check::reference(&inputs[i][a..b], op, &partitions_of(part)),
                        ));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("reference worker"))
            .collect()
    });
    done.sort_by_key(|d| d.0);
    let mut out: Vec<Reference> = (0..inputs.len())
        .map(|_| Reference {
            exact: Reduction {
                op,
                values: Vec::new(),
                counts: Vec::new(),
            },
            abs_sums: Vec::new(),
        })
        .collect();
    for (j, r) in done {
        let r = r?;
        let target = &mut out[jobs[j].0];
        target.exact.values.extend(r.exact.values);
        target.exact.counts.extend(r.exact.counts);
        target.abs_sums.extend(r.abs_sums);
    }
    Ok(out)
}

/// Folds the comparisons of one row into its check report.
fn fold_checks(comparisons: &[Comparison]) -> CheckReport {
    let mut c = CheckReport {
        pass: true,
        inputs_checked: comparisons.len(),
        rule: check::RULE,
        timed_runs_match: true,
        ..Default::default()
    };
    for (i, cmp) in comparisons.iter().enumerate() {
        c.partitions_checked += cmp.partitions;
        c.max_ulps = c.max_ulps.max(cmp.max_ulps);
        c.max_err_over_tol = c.max_err_over_tol.max(cmp.max_err_over_tol);
        c.max_rel_err = c.max_rel_err.max(cmp.rel_err);
        if let (None, Some(bad)) = (&c.detail, &cmp.first_bad) {
            c.pass = false;
            c.detail = Some(format!("input {i}: {bad}"));
        }
    }
    c
}

fn failed_row(
    op: Op,
    source: Source,
    bytes: u64,
    part: Option<u64>,
    inputs: usize,
    error: String,
) -> GpuRow {
    let elements = bytes / 4;
    GpuRow {
        op: op.name(),
        source,
        bytes,
        size: size::label(bytes),
        elements,
        partition_size: part,
        partitions: part.map_or(1, |p| elements.div_ceil(p)),
        inputs,
        timer: TimerKind::Wall,
        time: Summary::default(),
        wall: Summary::default(),
        gbps: 0.0,
        ratio_to_copy: 0.0,
        ratio_to_buffer_copy: 0.0,
        per_input_median_ns: Vec::new(),
        ratio_to_upload: 0.0,
        check: CheckReport {
            detail: Some(error.clone()),
            ..Default::default()
        },
        error: Some(error),
    }
}

/// Runs the whole benchmark on `engine`, calling `progress` before each step.
pub fn run(
    engine: &Engine,
    config: &BenchConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<BenchReport> {
    config.validate().map_err(Error::InvalidInput)?;
    let started = Instant::now();
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let total = config.steps();
    let mut done = 0u64;
    let mut step = |msg: &str| {
        progress(&Progress {
            done,
            total,
            message: msg,
        });
        done += 1;
    };
    let timer = match config.timer {
        TimerChoice::Auto => GpuTimer::new(engine),
        TimerChoice::Wall => None,
    };
    let timer = timer.as_ref();
    let threads = config.threads.max(1);

    // Floors.
    step("round trip");
    let round_trip = gpu::measure_round_trip(engine, config.latency_warmup, config.latency_runs)?;
    step("upload floor");
    let host = data::random_f32(
        (config.copy_bytes / 4) as usize,
        config.seed ^ 0xF100,
        threads,
    );
    let (upload, copy_src) = gpu::measure_upload(engine, &host, &config.copy_budget)?;
    step("copy floor");
    let copy = gpu::measure_copy(engine, timer, &copy_src, &host, &config.copy_budget)?;
    step("shader copy floor");
    let (shader_copy, shader_copy_error) =
        match gpu::measure_shader_copy(engine, timer, &copy_src, &host, &config.copy_budget) {
            Ok(b) => (Some(b), None),
            Err(e) => (None, Some(e.to_string())),
        };
    drop(copy_src);
    drop(host);
    let bandwidth = match &shader_copy {
        Some(sc) if sc.gbps > copy.gbps => BandwidthFloor {
            gbps: sc.gbps,
            source: "shader_copy",
        },
        _ => BandwidthFloor {
            gbps: copy.gbps,
            source: "buffer_copy",
        },
    };

    let mut failures: Vec<String> = Vec::new();
    let mut results = Vec::new();
    let mut cpu_rows = Vec::new();
    for &bytes in &config.sizes {
        let n = (bytes / 4) as usize;
        let r = config.inputs_for(bytes);
        let inputs: Vec<Vec<f32>> = (0..r)
            .map(|i| {
                let seed = config.seed ^ bytes.rotate_left(17) ^ ((i as u64 + 1) << 48);
                data::random_f32(n, seed, threads)
            })
            .collect();
        let arrays: Result<Vec<_>> = inputs.iter().map(|d| engine.upload(d)).collect();
        let arrays = match arrays {
            Ok(a) => a,
            Err(e) => {
                for &op in &config.ops {
                    for part in config.partitionings(n as u64) {
                        step(&case_label(op, bytes, part));
                        let msg = format!("{}: upload failed: {e}", case_label(op, bytes, part));
                        failures.push(msg.clone());
                        results.push(failed_row(op, Source::Device, bytes, part, r, msg));
                    }
                }
                continue;
            }
        };
        for &op in &config.ops {
            for part in config.partitionings(n as u64) {
                let label = case_label(op, bytes, part);
                step(&label);
                let partitions = partitions_of(part);
                let refs = references(&inputs, op, part, threads)?;
                let case = Case {
                    engine,
                    timer,
                    op,
                    bytes,
                    part,
                    partitions: &partitions,
                    refs: &refs,
                    copy_gbps: bandwidth.gbps,
                    buffer_copy_gbps: copy.gbps,
                    upload_gbps: upload.gbps,
                };
                let row = case.device(&arrays, &config.device_budget);
                if !row.check.pass {
                    failures.push(format!(
                        "{label} device: {}",
                        row.check.detail.as_deref().unwrap_or("check failed")
                    ));
                }
                results.push(row);
                if config.host {
                    let row = case.host(&inputs, &config.host_budget);
                    if !row.check.pass {
                        failures.push(format!(
                            "{label} host: {}",
                            row.check.detail.as_deref().unwrap_or("check failed")
                        ));
                    }
                    results.push(row);
                }
                if config.cpu {
                    for which in CpuImpl::ALL {
                        cpu_rows.push(case.cpu(which, &inputs, threads, &config.cpu_budget));
                    }
                }
            }
        }
    }
    let software = engine.adapter().software;
    Ok(BenchReport {
        schema: SCHEMA,
        gpulanes_version: env!("CARGO_PKG_VERSION"),
        date_utc: utc_date(unix_time),
        unix_time,
        command: std::env::args().collect(),
        software,
        note: if software {
            "software adapter (CPU): these timings say nothing about GPU speed".into()
        } else {
            "hardware adapter".into()
        },
        adapter: engine.adapter().clone(),
        host: HostInfo::detect(),
        config: config.clone(),
        timer: if timer.is_some() {
            TimerKind::Timestamps
        } else {
            TimerKind::Wall
        },
        timestamp_period_ns: timer.map(|t| t.period_ns()),
        floors: Floors {
            copy,
            shader_copy,
            shader_copy_error,
            bandwidth,
            upload,
            round_trip,
        },
        all_checks_pass: failures.is_empty(),
        failures,
        skipped: config.skipped(),
        results,
        cpu: cpu_rows,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// One (op, size, partitioning) case with its references.
struct Case<'a> {
    engine: &'a Engine,
    timer: Option<&'a GpuTimer>,
    op: Op,
    bytes: u64,
    part: Option<u64>,
    partitions: &'a Partitions,
    refs: &'a [Reference],
    copy_gbps: f64,
    buffer_copy_gbps: f64,
    upload_gbps: f64,
}

impl Case<'_> {
    fn elements(&self) -> u64 {
        self.bytes / 4
    }

    fn row(
        &self,
        source: Source,
        timer: TimerKind,
        time: Summary,
        wall: Summary,
        per_input_median_ns: Vec<f64>,
        check: CheckReport,
    ) -> GpuRow {
        let g = gbps(self.bytes, time.median_ns);
        GpuRow {
            op: self.op.name(),
            source,
            bytes: self.bytes,
            size: size::label(self.bytes),
            elements: self.elements(),
            partition_size: self.part,
            partitions: self.refs.first().map_or(0, |r| r.exact.values.len() as u64),
            inputs: self.refs.len(),
            timer,
            time,
            wall,
            gbps: g,
            ratio_to_copy: ratio(g, self.copy_gbps),
            ratio_to_buffer_copy: ratio(g, self.buffer_copy_gbps),
            per_input_median_ns,
            ratio_to_upload: ratio(g, self.upload_gbps),
            check,
            error: None,
        }
    }

    /// Times `run(k)` rotating over the inputs k. Before an input is first
    /// timed, one untimed run of it is checked against its reference; every
    /// timed run must then reproduce that result bit for bit.
    fn checked_runs<T>(
        &self,
        budget: &Budget,
        mut run: impl FnMut(usize) -> Result<(Reduction, T)>,
    ) -> Result<(Vec<(usize, T)>, CheckReport)> {
        let n = self.refs.len();
        let mut checked: Vec<Option<Reduction>> = vec![None; n];
        let mut comparisons = Vec::new();
        let mut mismatch = false;
        let samples = budget.sample(|i| {
            let k = i % n;
            if checked[k].is_none() {
                let (r, _) = run(k)?;
                comparisons.push(compare(&r, &self.refs[k]));
                checked[k] = Some(r);
            }
            let (r, t) = run(k)?;
            mismatch |= checked[k].as_ref().is_none_or(|c| !same_bits(&r, c));
            Ok::<_, Error>((k, t))
        })?;
        let mut check = fold_checks(&comparisons);
        if mismatch {
            check.pass = false;
            check.timed_runs_match = false;
            check
                .detail
                .get_or_insert_with(|| "a timed run differed from the checked result".into());
        }
        Ok((samples, check))
    }

    /// A device-resident reduction, rotating over `arrays`.
    fn device(&self, arrays: &[crate::DeviceArray], budget: &Budget) -> GpuRow {
        let scope = self
            .engine
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let outcome = self.checked_runs(budget, |k| {
            let run = gpu::run_device(
                self.engine,
                self.timer,
                &arrays[k],
                self.op,
                self.partitions,
            )?;
            Ok((run.result, (run.wall_ns, run.gpu_ns)))
        });
        let scope_error = pollster::block_on(scope.pop());
        let (runs, check) = match (outcome, scope_error) {
            (Ok(o), None) => o,
            (Err(e), _) => return self.failed(Source::Device, e.to_string()),
            (Ok(_), Some(e)) => return self.failed(Source::Device, e.to_string()),
        };
        let walls: Vec<f64> = runs.iter().map(|r| r.1.0).collect();
        let (kind, chosen): (TimerKind, Vec<(usize, f64)>) =
            if self.timer.is_some() && runs.iter().all(|r| r.1.1.is_some()) {
                let gpu = runs
                    .iter()
                    .map(|&(k, (w, g))| (k, g.unwrap_or(w)))
                    .collect();
                (TimerKind::Timestamps, gpu)
            } else {
                (
                    TimerKind::Wall,
                    runs.iter().map(|&(k, (w, _))| (k, w)).collect(),
                )
            };
        let times: Vec<f64> = chosen.iter().map(|r| r.1).collect();
        self.row(
            Source::Device,
            kind,
            summarize(&times),
            summarize(&walls),
            per_input_medians(self.refs.len(), &chosen),
            check,
        )
    }

    /// The same reduction from host slices (upload included), rotating over `inputs`.
    fn host(&self, inputs: &[Vec<f32>], budget: &Budget) -> GpuRow {
        let outcome = self.checked_runs(budget, |k| {
            gpu::run_host(self.engine, &inputs[k], self.op, self.partitions)
        });
        match outcome {
            Ok((runs, check)) => {
                let times: Vec<f64> = runs.iter().map(|r| r.1).collect();
                let time = summarize(&times);
                let per_input = per_input_medians(self.refs.len(), &runs);
                self.row(
                    Source::Host,
                    TimerKind::Wall,
                    time.clone(),
                    time,
                    per_input,
                    check,
                )
            }
            Err(e) => self.failed(Source::Host, e.to_string()),
        }
    }

    fn failed(&self, source: Source, error: String) -> GpuRow {
        failed_row(
            self.op,
            source,
            self.bytes,
            self.part,
            self.refs.len(),
            error,
        )
    }

    fn cpu(&self, which: CpuImpl, inputs: &[Vec<f32>], threads: usize, budget: &Budget) -> CpuRow {
        let threads = if which == CpuImpl::LoopThreads {
            threads
        } else {
            1
        };
        let mut first: Option<Vec<f64>> = None;
        let samples = budget
            .sample(|i| {
                let k = i % inputs.len();
                let start = Instant::now();
                let out = cpu::reduce(
                    which,
                    std::hint::black_box(&inputs[k]),
                    self.op,
                    self.part,
                    threads,
                );
                let ns = start.elapsed().as_nanos() as f64;
                if k == 0 && first.is_none() {
                    first = Some(out);
                } else {
                    std::hint::black_box(out);
                }
                Ok::<_, ()>(ns)
            })
            .unwrap_or_default();
        let first =
            first.unwrap_or_else(|| cpu::reduce(which, &inputs[0], self.op, self.part, threads));
        let time = summarize(&samples);
        let g = gbps(self.bytes, time.median_ns);
        CpuRow {
            op: self.op.name(),
            implementation: which,
            threads,
            bytes: self.bytes,
            size: size::label(self.bytes),
            elements: self.elements(),
            partition_size: self.part,
            partitions: first.len() as u64,
            inputs: inputs.len(),
            time,
            gbps: g,
            ratio_to_copy: ratio(g, self.copy_gbps),
            rel_err: check::rel_err_f64(&first, &self.refs[0].exact),
        }
    }
}

/// The median time of each of `n` inputs (0 for an input never timed).
fn per_input_medians(n: usize, runs: &[(usize, f64)]) -> Vec<f64> {
    (0..n)
        .map(|k| {
            let mine: Vec<f64> = runs.iter().filter(|r| r.0 == k).map(|r| r.1).collect();
            summarize(&mine).median_ns
        })
        .collect()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_763_889_000), "2025-11-23T09:10:00Z");
    }

    #[test]
    fn references_split_at_partition_boundaries() {
        let a = data::random_f32(10_007, 1, 1);
        let b = data::random_f32(5_000, 2, 1);
        let inputs = vec![a, b];
        for part in [None, Some(64), Some(1000)] {
            for op in [Op::Sum, Op::Max] {
                let split = references(&inputs, op, part, 3).unwrap();
                for (d, r) in inputs.iter().zip(&split) {
                    let whole = check::reference(d, op, &partitions_of(part)).unwrap();
                    assert_eq!(whole.exact, r.exact);
                    assert_eq!(whole.abs_sums.len(), r.abs_sums.len());
                    for (x, y) in whole.abs_sums.iter().zip(&r.abs_sums) {
                        assert!((x - y).abs() <= 1e-9 * x.abs());
                    }
                }
            }
        }
    }
}
