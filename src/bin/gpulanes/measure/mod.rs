//! Benchmarks users can run (`gpulanes bench`, `benches/reduce.rs`): the
//! measurement functions, and the serialisable report they fill.
//!
//! What is measured, per dtype (float32 and float64 by default; any
//! [`gpulanes::Dtype`]), op, size and partitioning (whole, or equal partitions
//! of a few sizes):
//! - **device**: a reduction of a device-resident [`gpulanes::DeviceArray`],
//!   timed with GPU timestamp queries around the recorded work where the
//!   device has `TIMESTAMP_QUERY` (wall clock from submit to result
//!   otherwise), rotating over several input buffers so caches do not
//!   flatter the result, after warm-up; the median of many runs;
//! - **host**: the same reduction from a host slice, upload included (wall
//!   clock);
//! - **CPU baselines** on the same data (float32 and float64): the plain
//!   loop on one thread, the same loop on every core (`std::thread::scope`),
//!   and `ndarray`.
//!
//! Every GPU result is checked against the CPU reference (the same bits:
//! sums are exact) before it is timed, and every timed run must reproduce
//! the checked result bit for bit. Throughput (GB/s) is input bytes (8 per
//! float64 value) over the median time; it is compared with
//! floors measured in the same run: the device's copy bandwidth, both as a
//! large buffer-to-buffer copy and as a compute shader's copy
//! (`shaders/bench_copy.wgsl`; bytes read + bytes written in each), and the
//! host-to-device upload bandwidth; the empty round trip is the latency
//! floor.
//!
//! On a software adapter (lavapipe) every figure describes the CPU that runs
//! the driver, never a GPU: the report says so (`software`, `note`).

mod case;
pub mod check;
mod config;
pub mod cpu;
pub mod data;
mod date;
pub mod element;
pub mod gpu;
pub mod group_by;
mod report;
pub mod size;
pub mod stats;
mod table;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gpulanes::{Dtype, Engine, Error, GpuTimer, Result};

use case::{Case, case_label, failed_row, partitions_of, references};
use cpu::CpuImpl;
use element::BenchElement;
use gpu::TimerKind;

pub use config::{BenchConfig, TimerChoice};
pub use date::utc_date;
pub use report::{BandwidthFloor, BenchReport, CpuRow, Floors, GpuRow, HostInfo, SCHEMA, Source};

/// A progress update: `done` of `total` steps, and what runs next.
pub struct Progress<'a> {
    pub done: u64,
    pub total: u64,
    pub message: &'a str,
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
        TimerChoice::Auto => gpu::timer(engine, 2),
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

    let mut out = Collected::default();
    // What a case that cannot run also loses, for its failure message.
    let skipped_rows = match (config.host, config.cpu) {
        (true, true) => "; its host and CPU rows were skipped",
        (true, false) => "; its host row was skipped",
        (false, true) => "; its CPU rows were skipped",
        (false, false) => "",
    };
    let floors = FloorRatios {
        copy_gbps: bandwidth.gbps,
        buffer_copy_gbps: copy.gbps,
        upload_gbps: upload.gbps,
    };
    let mut run = DtypeRun {
        engine,
        config,
        timer,
        threads,
        floors,
        skipped_rows,
        step: &mut step,
        out: &mut out,
    };
    for &dtype in &config.dtypes {
        match dtype {
            Dtype::F32 => run.sizes::<f32>(),
            Dtype::F64 => run.sizes::<f64>(),
            Dtype::I32 => run.sizes::<i32>(),
            Dtype::U32 => run.sizes::<u32>(),
            Dtype::I64 => run.sizes::<i64>(),
        }
    }
    let Collected {
        mut failures,
        results,
        cpu_rows,
    } = out;
    let group_by = if config.group_by_rows > 0 {
        group_by::measure(engine, config, threads, &mut |m| step(m))?
    } else {
        Vec::new()
    };
    for r in group_by.iter().filter(|r| !r.check_pass) {
        failures.push(format!(
            "{} over {} rows ({} groups): differs from the CPU reference",
            r.kind, r.rows, r.groups
        ));
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
        group_by,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The rows of a run so far.
#[derive(Default)]
struct Collected {
    failures: Vec<String>,
    results: Vec<GpuRow>,
    cpu_rows: Vec<CpuRow>,
}

/// The floors the rows' ratios divide by.
#[derive(Clone, Copy)]
struct FloorRatios {
    copy_gbps: f64,
    buffer_copy_gbps: f64,
    upload_gbps: f64,
}

/// Measures every size, op and partitioning of one dtype at a time.
struct DtypeRun<'a, 'b> {
    engine: &'a Engine,
    config: &'a BenchConfig,
    timer: Option<&'a GpuTimer>,
    threads: usize,
    floors: FloorRatios,
    skipped_rows: &'static str,
    step: &'b mut dyn FnMut(&str),
    out: &'b mut Collected,
}

impl DtypeRun<'_, '_> {
    fn sizes<E: BenchElement>(&mut self) {
        let (engine, config, threads) = (self.engine, self.config, self.threads);
        let dtype = E::DTYPE;
        for &bytes in &config.sizes {
            let n = (bytes / dtype.size()) as usize;
            let r = config.inputs_for(bytes);
            // float32 inputs keep the seeds they had before other dtypes
            // were measured.
            let dtype_seed = match dtype {
                Dtype::F32 => 0,
                d => (d as u64 + 1) << 40,
            };
            let inputs: Vec<Vec<E>> = (0..r)
                .map(|i| {
                    let seed =
                        config.seed ^ bytes.rotate_left(17) ^ ((i as u64 + 1) << 48) ^ dtype_seed;
                    E::random(n, seed, threads)
                })
                .collect();
            let arrays: Result<Vec<_>> = inputs.iter().map(|d| engine.upload(d)).collect();
            let arrays = match arrays {
                Ok(a) => a,
                Err(e) => {
                    for &op in &config.ops {
                        for part in config.partitionings(n as u64) {
                            let label = case_label(dtype, op, bytes, part);
                            (self.step)(&label);
                            let msg = format!("{label}: upload failed: {e}{}", self.skipped_rows);
                            self.out.failures.push(msg.clone());
                            self.out.results.push(failed_row(
                                dtype,
                                op,
                                Source::Device,
                                bytes,
                                part,
                                r,
                                msg,
                            ));
                        }
                    }
                    continue;
                }
            };
            for &op in &config.ops {
                for part in config.partitionings(n as u64) {
                    let label = case_label(dtype, op, bytes, part);
                    (self.step)(&label);
                    let partitions = partitions_of(part);
                    // A case whose reference cannot be computed fails alone,
                    // as a case whose GPU run fails does.
                    let refs = match references(&inputs, op, part, threads) {
                        Ok(refs) => refs,
                        Err(e) => {
                            let msg =
                                format!("{label}: reference failed: {e}{}", self.skipped_rows);
                            self.out.failures.push(msg.clone());
                            self.out.results.push(failed_row(
                                dtype,
                                op,
                                Source::Device,
                                bytes,
                                part,
                                r,
                                msg,
                            ));
                            continue;
                        }
                    };
                    let case = Case {
                        engine,
                        timer: self.timer,
                        dtype,
                        op,
                        bytes,
                        part,
                        partitions: &partitions,
                        refs: &refs,
                        copy_gbps: self.floors.copy_gbps,
                        buffer_copy_gbps: self.floors.buffer_copy_gbps,
                        upload_gbps: self.floors.upload_gbps,
                    };
                    let row = case.device::<E>(&arrays, &config.device_budget);
                    self.push(&label, "device", row);
                    if config.host {
                        let row = case.host(&inputs, &config.host_budget);
                        self.push(&label, "host", row);
                    }
                    if config.cpu {
                        for which in CpuImpl::ALL {
                            if let Some(row) = case.cpu(which, &inputs, threads, &config.cpu_budget)
                            {
                                self.out.cpu_rows.push(row);
                            }
                        }
                    }
                }
            }
        }
    }

    fn push(&mut self, label: &str, source: &str, row: GpuRow) {
        if !row.check.pass {
            self.out.failures.push(format!(
                "{label} {source}: {}",
                row.check.detail.as_deref().unwrap_or("check failed")
            ));
        }
        self.out.results.push(row);
    }
}
