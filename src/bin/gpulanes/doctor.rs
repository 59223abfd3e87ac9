//! `gpulanes doctor`: a GPU diagnosis in one run, for finding why a device
//! runs the reductions slower than its memory allows. It records every run's
//! time (not only medians, so bimodal timings show) for
//! - the floors: upload (`write_buffer`), the engine's upload (through its
//!   staging ring), buffer copy and shader copy at the largest size;
//! - sum/mean/max (and any op) over device-resident arrays of each size and
//!   dtype, run *isolated* (encode, submit, wait, read back; GPU timestamps
//!   around the reduction and the wall clock around the round trip) and
//!   *back to back* (several reductions in one submission, a timestamp
//!   between each), after a warm-up of GPU work;
//! - a sweep of float32 sums over `units` x 8192 values, to see how the
//!   time grows with the number of workgroups;
//! - each of those on engine *variants*: wgpu's workgroup zero-initialisation
//!   off, shader runtime checks off, and the kernel shapes.
//!
//! Every result is checked against the CPU's exact result first. The table
//! goes to stdout, the full report to `--json FILE` (`-` for stdout).
//! `scripts/gpu-doctor.sh` runs it beside the GPU's clock log and PyTorch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::measure::check::same_value;
use crate::measure::gpu;
use crate::measure::size;
use crate::measure::stats::{Budget, gbps, summarize};
use clap::Args;
use gpulanes::{
    AdapterSummary, DeviceArray, Dtype, Element, Engine, EngineOptions, GpuTimer, KernelShape,
    NanPolicy, Op, Partitions, Reduction, Scalar, State, StateKind,
};
use serde::Serialize;

use crate::Failure;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Input sizes in bytes, comma-separated (binary units). Default
    /// 16M,256M,1G on a GPU, 4M,16M on a software adapter.
    #[arg(long, value_name = "LIST")]
    sizes: Option<String>,
    /// Dtypes, comma-separated: float32, float64, int32, uint32, int64.
    #[arg(long, value_name = "LIST", default_value = "float32,float64")]
    dtype: String,
    /// Ops, comma-separated: sum, mean, max, min, count.
    #[arg(long, value_name = "LIST", default_value = "sum,mean,max")]
    ops: String,
    /// Isolated runs per case.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Reductions in the back-to-back submission of each case (0 skips it).
    #[arg(long, default_value_t = 10)]
    back_to_back: u32,
    /// GPU work (milliseconds of repeated reductions) before a case's
    /// timed runs.
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
    /// Workgroup counts of the float32 sum sweep (units of 8192 values),
    /// comma-separated ("none" skips it). Default 132,264,528,1056,2112 on a
    /// GPU (1 to 16 units per H100 multiprocessor), 8,32,128 on a software
    /// adapter.
    #[arg(long, value_name = "LIST")]
    units: Option<String>,
    /// Engine variants, comma-separated: default, no-zero-init (wgpu does
    /// not zero workgroup memory; the kernels clear their own), unchecked
    /// (no shader runtime bounds checks), bare (both), narrow, workgroup,
    /// subgroup (kernel shapes), persistent-N (at most N workgroups per
    /// dispatch, each taking several units).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "default,no-zero-init,unchecked,bare"
    )]
    variants: String,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the full report as JSON to FILE ("-" for stdout, replacing the table).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// An engine variant: a name and how to open it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Default,
    NoZeroInit,
    Unchecked,
    Bare,
    Shape(KernelShape),
    Persistent(u32),
}

impl Variant {
    fn parse(s: &str) -> Result<Self, Failure> {
        Ok(match s.trim() {
            "default" => Variant::Default,
            "no-zero-init" => Variant::NoZeroInit,
            "unchecked" => Variant::Unchecked,
            "bare" => Variant::Bare,
            other if other.starts_with("persistent-") => {
                match other["persistent-".len()..].parse::<u32>() {
                    Ok(n) if n > 0 => Variant::Persistent(n),
                    _ => {
                        return Err(Failure::Input(format!(
                            "--variants: {other:?}: persistent-N takes a positive workgroup count"
                        )));
                    }
                }
            }
            other => match KernelShape::parse(other) {
                Some(shape) => Variant::Shape(shape),
                None => {
                    return Err(Failure::Input(format!(
                        "--variants: unknown variant {other:?} (default, no-zero-init, unchecked, bare, narrow, workgroup, subgroup, persistent-N)"
                    )));
                }
            },
        })
    }

    fn name(self) -> String {
        match self {
            Variant::Default => "default".into(),
            Variant::NoZeroInit => "no-zero-init".into(),
            Variant::Unchecked => "unchecked".into(),
            Variant::Bare => "bare".into(),
            Variant::Shape(s) => s.name().into(),
            Variant::Persistent(n) => format!("persistent-{n}"),
        }
    }

    fn open(self) -> gpulanes::Result<Engine> {
        let base = EngineOptions::default();
        let options = match self {
            Variant::Default => base,
            Variant::NoZeroInit => base.zero_initialize_workgroup_memory(false),
            // SAFETY: a diagnosis run; every result of an unchecked engine is
            // checked against the CPU's exact result before it is timed.
            Variant::Unchecked => unsafe { base.unchecked_shaders() },
            Variant::Bare => unsafe {
                base.zero_initialize_workgroup_memory(false)
                    .unchecked_shaders()
            },
            Variant::Shape(shape) => base.kernels(shape),
            Variant::Persistent(n) => base.persistent_workgroups(n),
        };
        Engine::with_options(options)
    }
}

/// The JSON report.
#[derive(Serialize)]
struct Report {
    schema: &'static str,
    date: String,
    adapter: AdapterSummary,
    timer: &'static str,
    warmup_ms: u64,
    floors: Vec<gpu::Bandwidth>,
    floor_names: Vec<&'static str>,
    cases: Vec<Case>,
    sweep: Vec<SweepPoint>,
    /// Variants that could not be opened on this device, and why.
    skipped: Vec<(String, String)>,
}

/// One op over one array on one variant.
#[derive(Serialize)]
struct Case {
    variant: String,
    kernels: String,
    dtype: String,
    op: String,
    bytes: u64,
    /// Isolated runs: GPU time between timestamps around the reduction
    /// (empty without timestamps) and host wall clock from submit to result.
    isolated_gpu_ns: Vec<f64>,
    isolated_wall_ns: Vec<f64>,
    /// Back to back: each reduction's GPU time inside one submission, and
    /// the wall clock of the whole submission.
    back_to_back_gpu_ns: Vec<f64>,
    back_to_back_wall_ns: f64,
    /// Medians as GB/s of input bytes.
    isolated_gbps: f64,
    back_to_back_gbps: f64,
    check: &'static str,
}

/// One point of the workgroup sweep (float32 sum).
#[derive(Serialize)]
struct SweepPoint {
    variant: String,
    units: u64,
    bytes: u64,
    gpu_ns: Vec<f64>,
    gbps: f64,
}

fn list<T>(
    flag: &str,
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, Failure> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(s.trim()).map_err(|e| Failure::Input(format!("--{flag}: {e}"))))
        .collect()
}

pub fn run(args: DoctorArgs) -> Result<(), Failure> {
    let dtypes = list("dtype", &args.dtype, |s| {
        s.parse::<Dtype>().map_err(|e| e.to_string())
    })?;
    let ops = list("ops", &args.ops, |s| {
        s.parse::<Op>().map_err(|e| e.to_string())
    })?;
    let variants = list("variants", &args.variants, |s| {
        Variant::parse(s).map_err(|f| match f {
            Failure::Input(m) | Failure::Runtime(m) => m,
        })
    })?;
    for (flag, empty) in [
        ("dtype", dtypes.is_empty()),
        ("ops", ops.is_empty()),
        ("variants", variants.is_empty()),
    ] {
        if empty {
            return Err(Failure::Input(format!("--{flag}: the list is empty")));
        }
    }
    if args.runs == 0 {
        return Err(Failure::Input("--runs must be at least 1".into()));
    }
    let base = Engine::new()?;
    let adapter = base.adapter().clone();
    let software = adapter.software;
    let sizes = match &args.sizes {
        Some(s) => size::parse_list(s).map_err(|e| Failure::Input(format!("--sizes: {e}")))?,
        None if software => vec![4 << 20, 16 << 20],
        None => vec![16 << 20, 256 << 20, 1 << 30],
    };
    for &b in &sizes {
        if let Some(d) = dtypes.iter().find(|d| b == 0 || b % d.size() != 0) {
            return Err(Failure::Input(format!(
                "--sizes: {b} bytes is not a positive multiple of {d}'s value size"
            )));
        }
    }
    let units: Vec<u64> = match args.units.as_deref() {
        Some("none") => Vec::new(),
        Some(s) => list("units", s, |u| u.parse::<u64>().map_err(|e| e.to_string()))?,
        None if software => vec![8, 32, 128],
        None => vec![132, 264, 528, 1056, 2112],
    };
    if software {
        eprintln!(
            "gpulanes doctor: software adapter {:?}: timings say nothing about GPU speed",
            adapter.name
        );
    }
    let largest = sizes.iter().copied().max().unwrap_or(16 << 20);
    let floor_data = values::<f32>(args.seed, (largest / 4) as usize);
    let timer = gpu::timer(&base, 2);
    let floor_budget = Budget::new(3, args.runs, args.runs, 0);
    let (upload, device_copy) = gpu::measure_upload(&base, &floor_data, &floor_budget)?;
    let engine_upload = gpu::measure_engine_upload(&base, &floor_data, &floor_budget)?;
    let copy = gpu::measure_copy(
        &base,
        timer.as_ref(),
        &device_copy,
        &floor_data,
        &floor_budget,
    )?;
    let shader_copy = gpu::measure_shader_copy(
        &base,
        timer.as_ref(),
        &device_copy,
        &floor_data,
        &floor_budget,
    )?;
    drop((device_copy, floor_data, timer));
    // The reductions read through shaders, so the shader copy is their floor.
    let copy_gbps = shader_copy.gbps;
    let mut report = Report {
        schema: "gpulanes-doctor/1",
        date: crate::measure::utc_date(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
        adapter,
        timer: if base.adapter().timestamps {
            "timestamps"
        } else {
            "wall"
        },
        warmup_ms: args.warmup_ms,
        floors: vec![upload, engine_upload, copy, shader_copy],
        floor_names: vec!["upload", "engine_upload", "buffer_copy", "shader_copy"],
        cases: Vec::new(),
        sweep: Vec::new(),
        skipped: Vec::new(),
    };
    drop(base);
    let warmup = Duration::from_millis(args.warmup_ms);
    for &variant in &variants {
        let engine = match variant.open() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("gpulanes doctor: variant {} skipped: {e}", variant.name());
                report.skipped.push((variant.name(), e.to_string()));
                continue;
            }
        };
        for &dtype in &dtypes {
            for &bytes in &sizes {
                let cases = match dtype {
                    Dtype::F32 => measure::<f32>(&engine, variant, bytes, &ops, &args, warmup),
                    Dtype::F64 => measure::<f64>(&engine, variant, bytes, &ops, &args, warmup),
                    Dtype::I32 => measure::<i32>(&engine, variant, bytes, &ops, &args, warmup),
                    Dtype::U32 => measure::<u32>(&engine, variant, bytes, &ops, &args, warmup),
                    Dtype::I64 => measure::<i64>(&engine, variant, bytes, &ops, &args, warmup),
                }?;
                report.cases.extend(cases);
            }
        }
        for &u in &units {
            report
                .sweep
                .push(sweep(&engine, variant, u, &args, warmup)?);
        }
    }
    match &args.json {
        Some(path) if path.as_os_str() == "-" => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(json_failure)?
            );
        }
        other => {
            if let Some(path) = other {
                let text = serde_json::to_string_pretty(&report).map_err(json_failure)?;
                std::fs::write(path, text)
                    .map_err(|e| Failure::Runtime(format!("writing {}: {e}", path.display())))?;
            }
            print_table(&report, copy_gbps);
        }
    }
    if report.cases.iter().any(|c| c.check != "ok") {
        return Err(Failure::Runtime(
            "some results differ from the CPU's exact result (see the check column)".into(),
        ));
    }
    Ok(())
}

fn json_failure(e: serde_json::Error) -> Failure {
    Failure::Runtime(format!("writing the JSON report: {e}"))
}

/// Inputs of `n` values from `seed`: mixed signs over several binades (so
/// sums cancel and the exact accumulator's windows move).
fn values<E: Generate>(seed: u64, n: usize) -> Vec<E> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            E::from_bits64(x)
        })
        .collect()
}

/// A value of the element type from 64 random bits.
trait Generate: Element {
    fn from_bits64(x: u64) -> Self;
}

impl Generate for f32 {
    fn from_bits64(x: u64) -> f32 {
        let m = (x >> 40) as f32 / (1u64 << 24) as f32;
        let e = ((x >> 8) % 24) as i32 - 12;
        let s = if x & 1 == 1 { -1.0 } else { 1.0 };
        s * m * 2f32.powi(e)
    }
}

impl Generate for f64 {
    fn from_bits64(x: u64) -> f64 {
        let m = (x >> 11) as f64 / (1u64 << 53) as f64;
        let e = ((x >> 3) % 48) as i32 - 24;
        let s = if x & 1 == 1 { -1.0 } else { 1.0 };
        s * m * 2f64.powi(e)
    }
}

impl Generate for i32 {
    fn from_bits64(x: u64) -> i32 {
        (x >> 40) as i32 - (1 << 23)
    }
}

impl Generate for u32 {
    fn from_bits64(x: u64) -> u32 {
        (x >> 40) as u32
    }
}

impl Generate for i64 {
    fn from_bits64(x: u64) -> i64 {
        (x >> 24) as i64 - (1 << 39)
    }
}

/// The exact result of `op` over `data` on the CPU, on several threads.
fn reference<E: Element>(data: &[E], op: Op) -> gpulanes::Result<Option<Scalar>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = data.len().div_ceil(threads).max(1);
    let kind = StateKind::for_op(op);
    let states: Vec<State> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .chunks(chunk)
            .map(|c| s.spawn(move || State::of(c, kind)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = State::of(&data[..0], kind);
    for st in &states {
        total.merge(st)?;
    }
    total.finalize(op, NanPolicy::Propagate)
}

/// Whether `r` is one value with `want`'s bits (or both NaN, or both empty).
fn is_exactly(r: &Reduction<Scalar>, want: Option<Scalar>) -> bool {
    match (r.values.as_slice(), want) {
        ([None], None) => true,
        ([Some(got)], Some(want)) => same_value(*got, want),
        _ => false,
    }
}

/// Runs `op` once over `array` in its own submission.
fn isolated(
    engine: &Engine,
    timer: Option<&GpuTimer>,
    array: &DeviceArray,
    op: Op,
) -> gpulanes::Result<gpu::DeviceRun> {
    gpu::run_device_typed(engine, timer, array, op, &Partitions::Whole)
}

/// Runs `op` `count` times over `array` in one submission, a stamp between
/// each: per-reduction GPU times, the wall clock of the submission, and
/// whether every result had `want`'s bits.
fn back_to_back(
    engine: &Engine,
    array: &DeviceArray,
    op: Op,
    count: u32,
    want: Option<Scalar>,
) -> gpulanes::Result<(Vec<f64>, f64, bool)> {
    // One stamp before each reduction and one after the last; more than
    // a query set holds leaves the submission timed by the wall clock.
    let timer = gpu::timer(engine, count.saturating_add(1));
    let slot = timer.as_ref().and_then(GpuTimer::claim);
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gpulanes doctor back to back"),
        });
    let mut pending = Vec::new();
    for i in 0..count {
        if let Some(s) = &slot {
            s.stamp(&mut encoder, i);
        }
        pending.push(engine.encode_typed(
            &mut encoder,
            array,
            op,
            &Partitions::Whole,
            NanPolicy::Propagate,
        )?);
    }
    if let Some(s) = &slot {
        s.stamp(&mut encoder, count);
        s.resolve(&mut encoder);
    }
    let start = Instant::now();
    let index = engine.queue().submit([encoder.finish()]);
    let mut same = true;
    for p in pending {
        let r = p.wait(engine, index.clone())?;
        same &= is_exactly(&r, want);
    }
    let wall = start.elapsed().as_nanos() as f64;
    let gpu_ns = match slot {
        Some(s) => s.read_blocking(engine.device())?.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok((gpu_ns, wall, same))
}

fn median(v: &[f64]) -> f64 {
    summarize(v).median_ns
}

fn measure<E: Generate>(
    engine: &Engine,
    variant: Variant,
    bytes: u64,
    ops: &[Op],
    args: &DoctorArgs,
    warmup: Duration,
) -> Result<Vec<Case>, Failure> {
    let n = (bytes / E::DTYPE.size()) as usize;
    let data = values::<E>(args.seed ^ bytes, n);
    let array = engine.upload(&data)?;
    let timer = gpu::timer(engine, 2);
    let mut cases = Vec::new();
    for &op in ops {
        let want = reference(&data, op)?;
        let first = isolated(engine, timer.as_ref(), &array, op)?;
        let mut check = if is_exactly(&first.result, want) {
            "ok"
        } else {
            "differs from the CPU"
        };
        let start = Instant::now();
        while start.elapsed() < warmup {
            isolated(engine, None, &array, op)?;
        }
        let mut gpu_ns = Vec::with_capacity(args.runs);
        let mut wall_ns = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let r = isolated(engine, timer.as_ref(), &array, op)?;
            if !is_exactly(&r.result, want) && check == "ok" {
                check = "a timed run differs";
            }
            wall_ns.push(r.wall_ns);
            if let Some(g) = r.gpu_ns {
                gpu_ns.push(g);
            }
        }
        let (b2b_gpu, b2b_wall, same) = if args.back_to_back > 0 {
            back_to_back(engine, &array, op, args.back_to_back, want)?
        } else {
            (Vec::new(), 0.0, true)
        };
        if !same && check == "ok" {
            check = "a back-to-back run differs";
        }
        let iso = if gpu_ns.is_empty() { &wall_ns } else { &gpu_ns };
        let b2b = if b2b_gpu.is_empty() {
            b2b_wall / args.back_to_back.max(1) as f64
        } else {
            median(&b2b_gpu)
        };
        cases.push(Case {
            variant: variant.name(),
            kernels: engine.adapter().kernels.name().into(),
            dtype: E::DTYPE.to_string(),
            op: op.to_string(),
            bytes,
            isolated_gbps: gbps(bytes, median(iso)),
            back_to_back_gbps: if args.back_to_back > 0 {
                gbps(bytes, b2b)
            } else {
                0.0
            },
            isolated_gpu_ns: gpu_ns,
            isolated_wall_ns: wall_ns,
            back_to_back_gpu_ns: b2b_gpu,
            back_to_back_wall_ns: b2b_wall,
            check,
        });
    }
    Ok(cases)
}

/// Float32 sums over `units` x 8192 values (one workgroup each).
fn sweep(
    engine: &Engine,
    variant: Variant,
    units: u64,
    args: &DoctorArgs,
    warmup: Duration,
) -> Result<SweepPoint, Failure> {
    let n = (units * gpulanes::kernels::BLOCK) as usize;
    let data = values::<f32>(args.seed ^ units, n);
    let array = engine.upload(&data)?;
    let timer = gpu::timer(engine, 2);
    let start = Instant::now();
    while start.elapsed() < warmup / 4 {
        isolated(engine, None, &array, Op::Sum)?;
    }
    let mut gpu_ns = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let r = isolated(engine, timer.as_ref(), &array, Op::Sum)?;
        gpu_ns.push(r.gpu_ns.unwrap_or(r.wall_ns));
    }
    let bytes = n as u64 * 4;
    Ok(SweepPoint {
        variant: variant.name(),
        units,
        bytes,
        gbps: gbps(bytes, median(&gpu_ns)),
        gpu_ns,
    })
}

fn print_table(report: &Report, copy_gbps: f64) {
    let a = &report.adapter;
    println!(
        "gpulanes doctor  {}  adapter: {} ({}, {}), driver {} {}",
        report.date, a.name, a.backend, a.device_type, a.driver, a.driver_info
    );
    if a.software {
        println!("*** SOFTWARE ADAPTER: every figure below is CPU speed, not GPU speed ***");
    }
    println!(
        "timer: {} (isolated and back-to-back GPU times; wall clock where there are none); warm-up {} ms per case",
        report.timer, report.warmup_ms
    );
    for (name, f) in report.floor_names.iter().zip(&report.floors) {
        let min = f.runs_ns.iter().copied().fold(f64::INFINITY, f64::min);
        let max = f.runs_ns.iter().copied().fold(0.0, f64::max);
        println!(
            "floor {name:<13} {:>9} bytes: {:>8.2} GB/s median ({} runs, {:.1}..{:.1} us)",
            f.bytes,
            f.gbps,
            f.runs_ns.len(),
            min / 1e3,
            max / 1e3
        );
    }
    println!();
    println!(
        "{:<15} {:<9} {:<8} {:<5} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8}  check",
        "variant",
        "kernels",
        "dtype",
        "op",
        "size",
        "iso med",
        "iso min",
        "iso max",
        "iso GB/s",
        "b2b GB/s",
        "of scopy"
    );
    for c in &report.cases {
        let iso = if c.isolated_gpu_ns.is_empty() {
            &c.isolated_wall_ns
        } else {
            &c.isolated_gpu_ns
        };
        let s = summarize(iso);
        println!(
            "{:<15} {:<9} {:<8} {:<5} {:>6} {:>8.1}us {:>8.1}us {:>8.1}us {:>9.2} {:>9.2} {:>7.0}%  {}",
            c.variant,
            c.kernels,
            c.dtype,
            c.op,
            size::label(c.bytes),
            s.median_ns / 1e3,
            s.min_ns / 1e3,
            s.max_ns / 1e3,
            c.isolated_gbps,
            c.back_to_back_gbps,
            100.0 * c.isolated_gbps.max(c.back_to_back_gbps) / copy_gbps.max(1e-9),
            c.check
        );
    }
    if !report.sweep.is_empty() {
        println!();
        println!("workgroup sweep (float32 sum, 8192 values per workgroup):");
        println!(
            "{:<15} {:>7} {:>8} {:>10} {:>9}",
            "variant", "units", "size", "median", "GB/s"
        );
        for p in &report.sweep {
            println!(
                "{:<15} {:>7} {:>8} {:>8.1}us {:>9.2}",
                p.variant,
                p.units,
                size::label(p.bytes),
                median(&p.gpu_ns) / 1e3,
                p.gbps
            );
        }
    }
    for (v, why) in &report.skipped {
        println!("variant {v} skipped: {why}");
    }
}
