//! `gpulanes bench`: throughput of sum/mean/max, per dtype (float32 and
//! float64 by default), against the copy and upload floors measured in the
//! same run, the round-trip latency floor, and CPU
//! baselines on the same data. The table goes to stdout, a progress bar to
//! stderr, the full report to `--json FILE` (`-` for stdout), SVG charts
//! of it to `--plot DIR`.

use std::path::PathBuf;

use crate::measure::{self, BenchConfig, TimerChoice, size};
use clap::Args;
use gpulanes::{Dtype, Engine, Op};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Failure;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Fewer sizes and runs (well under two minutes on a software adapter).
    #[arg(long)]
    quick: bool,
    /// Dtypes, comma-separated: float32, float64, int32, uint32, int64 (or
    /// f32, f8, <f8, ...). Each is measured at every size (in bytes: 8 per
    /// float64 value), op and partitioning.
    #[arg(long, value_name = "LIST", default_value = "float32,float64")]
    dtype: String,
    /// Input sizes in bytes, comma-separated: 4K,64K,1M,16M,1G (binary
    /// units; multiples of every dtype's value size). Default: 4K up to 1G on a GPU, up to 64M on a software
    /// adapter (16M / 256M with --quick).
    #[arg(long, value_name = "LIST")]
    sizes: Option<String>,
    /// Largest default size (ignored with --sizes).
    #[arg(long, value_name = "BYTES")]
    max_size: Option<String>,
    /// Ops, comma-separated: sum, mean, max (also min, count).
    #[arg(long, value_name = "LIST", default_value = "sum,mean,max")]
    ops: String,
    /// Equal partition sizes in elements, comma-separated ("none" for whole only).
    #[arg(long, value_name = "LIST", default_value = "64,4K,1M")]
    partitions: String,
    /// Skip partitionings with more partitions than N (0: no cap). Default:
    /// no cap on a GPU; 4096 (16384 without --quick) on a software adapter.
    #[arg(long, value_name = "N")]
    max_partitions: Option<u64>,
    /// Write the full report as JSON to FILE ("-" for stdout, replacing the table).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Skip the from-host-memory rows.
    #[arg(long)]
    no_host: bool,
    /// Skip the CPU baselines.
    #[arg(long)]
    no_cpu: bool,
    /// Time device work with the wall clock even where timestamp queries exist.
    #[arg(long)]
    wall_clock: bool,
    /// Size of the copy and upload floors (default: the largest size, 16M..1G).
    #[arg(long, value_name = "BYTES")]
    copy_size: Option<String>,
    /// Threads for the multi-threaded CPU baseline (default: all).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the random inputs (default: from the clock; recorded in the JSON).
    #[arg(long)]
    seed: Option<u64>,
    /// Rows of the group-by and small-partition measurements (suffixes
    /// K, M = 2^10, 2^20; 0 skips them). Default 16M (1M with --quick).
    #[arg(long, value_name = "N")]
    group_by_rows: Option<String>,
    /// Write SVG charts into DIR (created if missing): throughput against
    /// input size per dtype and op, and the group-by rows.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// With --plot: draw the PyTorch rows of this report of
    /// `scripts/gpu-peers.py` (float32) as their own series.
    #[arg(long, value_name = "FILE", requires = "plot")]
    peers: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn parse_sizes(flag: &str, text: &str) -> Result<Vec<u64>, Failure> {
    size::parse_list(text).map_err(|e| Failure::Input(format!("--{flag}: {e}")))
}

fn parse_one(flag: &str, text: &str) -> Result<u64, Failure> {
    size::parse(text).map_err(|e| Failure::Input(format!("--{flag}: {e}")))
}

/// The PyTorch peers' report (`scripts/gpu-peers.py --json FILE`), checked
/// for its schema before any device is opened.
fn read_peers(path: &std::path::Path) -> Result<serde_json::Value, Failure> {
    let bad = |why: String| Failure::Input(format!("--peers {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let peers: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if peers["schema"] != "gpulanes-peers/1" || !peers["results"].is_array() {
        return Err(bad(
            "not a report of scripts/gpu-peers.py (schema gpulanes-peers/1)".into(),
        ));
    }
    Ok(peers)
}

pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let mut dtypes: Vec<Dtype> = Vec::new();
    for name in args.dtype.split(',').filter(|s| !s.trim().is_empty()) {
        let d: Dtype = name
            .parse()
            .map_err(|e: gpulanes::Error| Failure::Input(format!("--dtype: {e}")))?;
        if !dtypes.contains(&d) {
            dtypes.push(d);
        }
    }
    let ops: Vec<Op> = args
        .ops
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<Op>())
        .collect::<Result<_, _>>()?;
    // "none" (alone or in the list) means whole buffers only.
    let partition_list: Vec<&str> = args
        .partitions
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .collect();
    let partitions = parse_sizes("partitions", &partition_list.join(","))?;
    let sizes = match &args.sizes {
        Some(s) => Some(parse_sizes("sizes", s)?),
        None => None,
    };
    let max_size = args
        .max_size
        .as_deref()
        .map(|s| parse_one("max-size", s))
        .transpose()?;
    let group_by_rows = args
        .group_by_rows
        .as_deref()
        .map(|s| parse_one("group-by-rows", s))
        .transpose()?;
    let copy_size = args
        .copy_size
        .as_deref()
        .map(|s| parse_one("copy-size", s))
        .transpose()?;

    let peers = args.peers.as_deref().map(read_peers).transpose()?;
    if let Some(dir) = &args.plot {
        crate::plot::create_dir(dir)?;
    }

    let engine = Engine::new()?;
    let adapter = engine.adapter().clone();
    let mut config = BenchConfig::new(&adapter, args.quick);
    match (sizes, max_size) {
        (Some(s), _) => config.set_sizes(s, &adapter),
        (None, Some(max)) => config.set_sizes(
            size::ladder(4096.min(max), max, if args.quick { 16 } else { 4 }),
            &adapter,
        ),
        (None, None) => {}
    }
    config.dtypes = dtypes;
    config.ops = ops;
    config.partition_sizes = partitions;
    config.host = !args.no_host;
    config.cpu = !args.no_cpu;
    if args.wall_clock {
        config.timer = TimerChoice::Wall;
    }
    if let Some(c) = copy_size {
        // The copy floor needs two buffers of this size.
        if c > adapter.max_buffer_bytes {
            return Err(Failure::Input(format!(
                "--copy-size {c} bytes exceeds this adapter's largest buffer ({} bytes)",
                adapter.max_buffer_bytes
            )));
        }
        config.copy_bytes = c;
    }
    if let Some(m) = args.max_partitions {
        config.max_partitions = (m > 0).then_some(m);
    }
    if let Some(t) = args.threads {
        config.threads = t.max(1);
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(r) = group_by_rows {
        config.group_by_rows = r;
    }
    config.validate().map_err(Failure::Input)?;

    if adapter.software {
        eprintln!(
            "gpulanes bench: software adapter {:?}: timings say nothing about GPU speed",
            adapter.name
        );
    }
    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(config.steps())
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let report = measure::run(&engine, &config, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(p.message.to_string());
    });
    bar.finish_and_clear();
    let report = report?;

    let json_to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        if json_to_stdout {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    if !json_to_stdout {
        print!("{}", report.table());
    }
    if let Some(dir) = &args.plot {
        for path in crate::plot::bench(&report, peers.as_ref(), dir)? {
            eprintln!("gpulanes bench: wrote {}", path.display());
        }
    }
    if report.all_checks_pass {
        Ok(())
    } else {
        Err(Failure::Runtime(format!(
            "{} benchmarked results did not match the CPU reference: {}",
            report.failures.len(),
            report.failures.first().map_or("", String::as_str)
        )))
    }
}
