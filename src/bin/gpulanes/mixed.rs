//! `gpulanes mixed`: real-time lane alone, batch lane alone, both together;
//! one table (and JSON) with the latency and throughput ratios, and SVG
//! charts with `--plot DIR`.

use std::time::Duration;

use crate::experiment::{self, MIN_RT_RATE_HZ, MixedConfig, MixedReport, PhaseReport};
use gpulanes::lanes::LaneSnapshot;
use gpulanes::{Dtype, Engine};

use crate::Failure;

pub struct Args {
    pub duration: Option<f64>,
    pub rounds: Option<usize>,
    pub rt_in_flight: Option<usize>,
    pub rt_rate: Option<f64>,
    pub dtype: Option<String>,
    pub rt_size: Option<usize>,
    pub batch_size: Option<usize>,
    pub batch_groups: Option<u64>,
    pub quantum_us: Option<u64>,
    pub lead_us: Option<u64>,
    pub batch_in_flight: Option<usize>,
    pub cold_starts: Option<usize>,
    pub json: bool,
    pub plot: Option<std::path::PathBuf>,
}

/// The `--dtype` flag's element type (float32 when absent).
fn dtype_flag(args: &Args) -> Result<Dtype, Failure> {
    args.dtype.as_deref().map_or(Ok(Dtype::F32), |name| {
        name.parse()
            .map_err(|e: gpulanes::Error| Failure::Input(format!("--dtype: {e}")))
    })
}

/// Checks the flags before a device is opened, so bad input fails fast
/// with one line.
fn validate(args: &Args) -> Result<(), Failure> {
    dtype_flag(args)?;
    for (flag, v, what) in [
        ("--duration", args.duration, "a positive number of seconds"),
        ("--rt-rate", args.rt_rate, "positive"),
    ] {
        if let Some(x) = v
            && !(x > 0.0 && x.is_finite())
        {
            return Err(Failure::Input(format!("{flag} must be {what}, got {x}")));
        }
    }
    if let Some(d) = args.duration {
        duration_flag(d)?;
    }
    if let Some(r) = args.rt_rate
        && r < MIN_RT_RATE_HZ
    {
        return Err(Failure::Input(format!(
            "--rt-rate must be at least {MIN_RT_RATE_HZ} (one request per 1000 s), got {r}"
        )));
    }
    for (flag, v) in [
        ("--rt-size", args.rt_size),
        ("--batch-size", args.batch_size),
        ("--rounds", args.rounds),
        ("--batch-in-flight", args.batch_in_flight),
        ("--rt-in-flight", args.rt_in_flight),
    ] {
        if v == Some(0) {
            return Err(Failure::Input(format!("{flag} must be at least 1")));
        }
    }
    if let Some(g) = args.batch_groups
        && !(1..=1 << 31).contains(&g)
    {
        return Err(Failure::Input(format!(
            "--batch-groups must be in 1..=2147483648 (int32 keys), got {g}"
        )));
    }
    if let (Some(q), Some(l)) = (args.quantum_us, args.lead_us)
        && l > q
    {
        return Err(Failure::Input(format!(
            "--lead-us ({l}) must not exceed --quantum-us ({q})"
        )));
    }
    Ok(())
}

/// `--duration` in seconds as a [`Duration`] (positive and finite already).
fn duration_flag(seconds: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| Failure::Input(format!("--duration {seconds} is too long to be a duration")))
}

pub fn run(args: Args) -> Result<(), Failure> {
    validate(&args)?;
    if let Some(dir) = &args.plot {
        crate::plot::create_dir(dir)?;
    }
    let engine = Engine::new()?;
    let mut cfg = MixedConfig::for_adapter(engine.adapter());
    if let Some(d) = args.duration {
        cfg.duration = duration_flag(d)?;
    }
    cfg.rt_rate_hz = args.rt_rate.unwrap_or(cfg.rt_rate_hz);
    cfg.dtype = dtype_flag(&args)?;
    cfg.rt_size = args.rt_size.unwrap_or(cfg.rt_size);
    cfg.batch_size = args.batch_size.unwrap_or(cfg.batch_size);
    cfg.batch_groups = args.batch_groups;
    cfg.rounds = args.rounds.unwrap_or(cfg.rounds);
    cfg.cold_starts = args.cold_starts.unwrap_or(cfg.cold_starts);
    if let Some(n) = args.batch_in_flight {
        cfg.lanes.max_batch_in_flight = n;
    }
    if let Some(n) = args.rt_in_flight {
        cfg.lanes.max_realtime_in_flight = n;
    }
    if let Some(q) = args.quantum_us {
        cfg.lanes.quantum = Some(Duration::from_micros(q));
    }
    if let Some(l) = args.lead_us {
        cfg.lanes.submit_lead = Some(Duration::from_micros(l));
    }
    let json = args.json;
    let report = experiment::run(&engine, cfg, |phase| {
        if !json {
            eprintln!("gpulanes mixed: {phase} ...");
        }
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        );
    } else {
        print_table(&report);
    }
    if let Some(dir) = &args.plot {
        for path in crate::plot::mixed(&report, dir)? {
            eprintln!("gpulanes mixed: wrote {}", path.display());
        }
    }
    Ok(())
}

fn lat(s: &Option<LaneSnapshot>) -> (f64, f64, f64) {
    s.as_ref().map_or((0.0, 0.0, 0.0), |s| {
        (s.latency.p50_us, s.latency.p99_us, s.latency.p999_us)
    })
}

fn print_table(r: &MixedReport) {
    let a = &r.adapter;
    println!(
        "adapter: {} ({}, {}){}",
        a.name,
        a.backend,
        a.device_type,
        if a.software {
            "  [software adapter: ratios only, not GPU speed]"
        } else {
            ""
        }
    );
    println!(
        "real-time: {} {} values at {} Hz; batch: {} values ({} MiB) per job, {}; {:.1} s per phase in {} interleaved rounds",
        r.config.rt_size,
        r.config.dtype,
        r.config.rt_rate_hz,
        r.config.batch_size,
        (r.config.batch_size as u64 * r.config.dtype.size()) >> 20,
        match r.config.batch_groups {
            None => "device-resident, summed".to_string(),
            Some(g) => format!("host-held, summed by {g} int32 keys"),
        },
        r.config.duration.as_secs_f64(),
        r.config.rounds
    );
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>14}",
        "phase", "rt p50 (us)", "rt p99 (us)", "rt p99.9 (us)", "batch (GB/s)"
    );
    let row = |name: &str, p: &PhaseReport, rt: bool, batch: bool| {
        let (p50, p99, p999) = lat(&p.realtime);
        let f = |x: f64, on: bool| if on { format!("{x:.1}") } else { "-".into() };
        println!(
            "{:<28} {:>12} {:>12} {:>12} {:>14}",
            name,
            f(p50, rt),
            f(p99, rt),
            f(p999, rt),
            if batch {
                format!("{:.2}", p.batch_bytes_per_s / 1e9)
            } else {
                "-".into()
            }
        );
    };
    if let Some(c) = &r.cold_start {
        let l = &c.realtime.latency;
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>12.1} {:>14}",
            format!("cold start (x{})", c.schedulers),
            l.p50_us,
            l.p99_us,
            l.p999_us,
            "-"
        );
    }
    row("real-time alone", &r.realtime_alone, true, false);
    row("batch alone", &r.batch_alone, false, true);
    row("both together", &r.together, true, true);
    println!();
    println!(
        "real-time p99 under load / alone:   {:.2}x  (target <= 1.5x on a GPU)",
        r.rt_p99_ratio
    );
    println!(
        "batch throughput with rt / alone:   {:.1}%  (target >= 95% on a GPU)",
        r.batch_throughput_ratio * 100.0
    );
    if let Some(c) = &r.cold_start {
        println!(
            "cold-start real-time p99 / alone:   {:.2}x  ({} requests during the first batch job of {} fresh schedulers; max {:.0} us)",
            r.cold_rt_p99_ratio, c.realtime.latency.count, c.schedulers, c.realtime.latency.max_us
        );
    }
    if r.per_round.len() > 1 {
        let rounds: Vec<String> = r
            .per_round
            .iter()
            .map(|x| {
                format!(
                    "{:.2}x / {:.1}%",
                    x.rt_p99_ratio,
                    x.batch_throughput_ratio * 100.0
                )
            })
            .collect();
        println!("the two ratios per round:            {}", rounds.join(", "));
    }
    let m = r.together.realtime.as_ref();
    if let Some(m) = m {
        println!(
            "real-time under load: {} completed, {} submits (coalescing), {} deadline misses, {} failed",
            m.completed, m.submits, m.deadline_misses, m.failed
        );
    }
    println!(
        "batch quantum: {:.0} us of GPU time queued ahead of real-time work at most; submit lead {:.0} us (+{:.0} us timer lateness){}",
        r.quantum_us,
        r.submit_lead_us,
        r.wake_lateness_us,
        if r.submit_blocks {
            "; this device's submit blocks while its queue is busy, so a chunk never goes behind another"
        } else {
            ""
        }
    );
    if let Some(b) = r.together.batch.as_ref() {
        println!(
            "batch chunks: p50 {} KiB, max {} KiB",
            b.chunk_bytes_p50 >> 10,
            b.chunk_bytes_max >> 10
        );
    }
    println!(
        "batch results bitwise identical across all runs: {}",
        r.batch_results_identical
    );
}
