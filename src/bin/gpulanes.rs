//! The `gpulanes` command line: `info` shows the adapter, `reduce` reduces a
//! `.npy` file. Bad input exits with code 2 and one line on stderr; other
//! failures (no GPU, device errors) exit with code 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gpulanes::{Engine, Error, NanPolicy, Op, Partitions, Reduction, npy};
use ndarray::{Axis, Ix1, Ix2};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "gpulanes",
    version,
    about = "GPU reductions (sum, mean, max, min, count) over whole and partitioned f32 buffers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the adapter gpulanes picks and the limits that matter.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Reduce a float32 .npy file (1-D, or 2-D with --axis).
    Reduce {
        /// sum, mean, max, min or count.
        #[arg(long)]
        op: String,
        /// propagate (any NaN gives NaN) or ignore (skip NaN).
        #[arg(long, default_value = "propagate")]
        nan: String,
        /// Equal partitions of N elements (the last may be short).
        #[arg(long, value_name = "N")]
        partition_size: Option<u64>,
        /// Arrow-style offsets (int32 or int64 .npy): k+1 values, 0 .. length.
        #[arg(long, value_name = "FILE.npy")]
        offsets: Option<PathBuf>,
        /// For 2-D input: 0 reduces each column, 1 reduces each row.
        #[arg(long)]
        axis: Option<usize>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Input file.
        input: PathBuf,
    },
}

/// Why the command failed: bad input (exit 2) or a runtime failure (exit 1).
enum Failure {
    Input(String),
    Runtime(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidPartitions(_) | Error::InvalidInput(_) | Error::File { .. } => {
                Failure::Input(e.to_string())
            }
            other => Failure::Runtime(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("gpulanes: {line} (see gpulanes --help)");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Info { json } => info(json),
        Command::Reduce {
            op,
            nan,
            partition_size,
            offsets,
            axis,
            json,
            input,
        } => reduce(&op, &nan, partition_size, offsets, axis, json, input),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            eprintln!("gpulanes: {}", one_line(&msg));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("gpulanes: {}", one_line(&msg));
            ExitCode::from(1)
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn info(json: bool) -> Result<(), Failure> {
    let engine = Engine::new()?;
    let a = engine.adapter();
    if json {
        println!(
            "{}",
            serde_json::to_string(a).expect("adapter info serialises")
        );
    } else {
        println!("adapter:        {}", a.name);
        println!("backend:        {}", a.backend);
        println!(
            "device type:    {}{}",
            a.device_type,
            if a.software {
                " (software: timings say nothing about GPU speed)"
            } else {
                ""
            }
        );
        println!("driver:         {} {}", a.driver, a.driver_info);
        println!(
            "subgroups:      {} (size {}..{})",
            a.subgroups, a.subgroup_min_size, a.subgroup_max_size
        );
        println!("timestamps:     {}", a.timestamps);
        println!("max binding:    {} MiB", a.max_storage_binding_bytes >> 20);
        println!("max buffer:     {} MiB", a.max_buffer_bytes >> 20);
        println!(
            "max workgroups: {} per dimension",
            a.max_workgroups_per_dimension
        );
    }
    Ok(())
}

fn reduce(
    op: &str,
    nan: &str,
    partition_size: Option<u64>,
    offsets: Option<PathBuf>,
    axis: Option<usize>,
    json: bool,
    input: PathBuf,
) -> Result<(), Failure> {
    let op: Op = op.parse()?;
    let nan: NanPolicy = nan.parse()?;
    if partition_size.is_some() && offsets.is_some() {
        return Err(Failure::Input(
            "--partition-size and --offsets cannot be used together".into(),
        ));
    }
    if axis.is_some() && (partition_size.is_some() || offsets.is_some()) {
        return Err(Failure::Input(
            "--axis cannot be combined with --partition-size or --offsets".into(),
        ));
    }
    if let Some(a) = axis.filter(|&a| a > 1) {
        return Err(Failure::Input(format!("--axis must be 0 or 1, got {a}")));
    }
    let partitions = match (partition_size, &offsets) {
        (Some(0), _) => return Err(Failure::Input("--partition-size must be at least 1".into())),
        (Some(n), _) => Partitions::EqualSize(n),
        (None, Some(path)) => Partitions::from_signed_offsets(&npy::read_offsets(path)?)?,
        (None, None) => Partitions::Whole,
    };
    let data = npy::read_f32(&input)?;
    let shape = data.shape().to_vec();
    let bad_shape = |msg: String| Failure::Input(format!("{}: {msg}", input.display()));
    let engine = Engine::new()?;
    let result = match (shape.len(), axis) {
        (1, None) => {
            let data = data.into_dimensionality::<Ix1>().expect("checked 1-D");
            let slice = data.as_slice().expect("standard layout");
            engine.reduce_partitions(slice, op, &partitions, nan)?
        }
        (1, Some(_)) => {
            return Err(bad_shape(
                "--axis needs a 2-D array, this one is 1-D".into(),
            ));
        }
        (2, Some(a)) => {
            let data = data.into_dimensionality::<Ix2>().expect("checked 2-D");
            engine.reduce_axis(data.view(), Axis(a), op, nan)?
        }
        (2, None) => {
            return Err(bad_shape(format!(
                "2-D array of shape {shape:?} needs --axis 0 or 1"
            )));
        }
        (n, _) => {
            return Err(bad_shape(format!(
                "expected a 1-D or 2-D array, found {n}-D with shape {shape:?}"
            )));
        }
    };
    if json {
        print_json(&engine, &result);
    } else {
        print_table(&result);
    }
    Ok(())
}

/// A JSON result entry: a number, a string for NaN/inf, or null.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonValue {
    Float(f32),
    Int(u64),
    Text(&'static str),
    Null,
}

fn json_value(op: Op, v: Option<f32>, count: u64) -> JsonValue {
    match (op, v) {
        (Op::Count, _) => JsonValue::Int(count),
        (_, None) => JsonValue::Null,
        (_, Some(x)) if x.is_nan() => JsonValue::Text("NaN"),
        (_, Some(x)) if x == f32::INFINITY => JsonValue::Text("inf"),
        (_, Some(x)) if x == f32::NEG_INFINITY => JsonValue::Text("-inf"),
        (_, Some(x)) => JsonValue::Float(x),
    }
}

fn print_json(engine: &Engine, r: &Reduction) {
    #[derive(Serialize)]
    struct Out<'a> {
        op: &'static str,
        results: Vec<JsonValue>,
        counts: &'a [u64],
        adapter: &'a gpulanes::AdapterSummary,
    }
    let out = Out {
        op: r.op.name(),
        results: r
            .values
            .iter()
            .zip(&r.counts)
            .map(|(&v, &c)| json_value(r.op, v, c))
            .collect(),
        counts: &r.counts,
        adapter: engine.adapter(),
    };
    println!(
        "{}",
        serde_json::to_string(&out).expect("result serialises")
    );
}

fn print_table(r: &Reduction) {
    println!("{:>10}  {:>16}  {:>12}", "partition", r.op.name(), "count");
    for (i, (v, c)) in r.values.iter().zip(&r.counts).enumerate() {
        let v = match (r.op, v) {
            (Op::Count, _) => c.to_string(),
            (_, None) => "null".into(),
            (_, Some(x)) => format!("{x:?}"),
        };
        println!("{i:>10}  {v:>16}  {c:>12}");
    }
}
