//! `gpulanes reduce`: reduce a `.npy` file of float32, float64, int32,
//! uint32 or int64 (or a raw little-endian file with `--raw`, of the type
//! `--dtype` names), whole, in equal partitions, by offsets, or along an
//! axis of a 2-D array. Inputs whose data does not fit the memory budget
//! twice (a host copy and a device copy) are streamed in chunks within the
//! budget (float32 with a progress bar on stderr); the results are the
//! same bits either way. Results follow NumPy's types: float sums keep the
//! input's type, integer sums are int64, integer means float64.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use gpulanes::stream::{DEFAULT_BUDGET_BYTES, MIN_BUDGET_BYTES};
use gpulanes::{
    Dtype, Element, Engine, FileFormat, InputFile, NanPolicy, Op, Partitions, Reduction, Scalar,
    StreamOptions, npy,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use ndarray::{Array2, Axis};
use serde::Serialize;

use crate::Failure;

/// `gpulanes reduce` options.
#[derive(Args, Debug)]
pub struct ReduceArgs {
    /// sum, mean, max, min or count.
    #[arg(long)]
    pub op: String,
    /// propagate (any NaN gives NaN) or ignore (skip NaN).
    #[arg(long, default_value = "propagate")]
    pub nan: String,
    /// Equal partitions of N elements (the last may be short).
    #[arg(long, value_name = "N")]
    pub partition_size: Option<u64>,
    /// Arrow-style offsets (int32 or int64 .npy): k+1 values, 0 .. length
    /// (`-` reads standard input).
    #[arg(long, value_name = "FILE.npy")]
    pub offsets: Option<PathBuf>,
    /// For 2-D input: 0 reduces each column, 1 reduces each row.
    #[arg(long)]
    pub axis: Option<usize>,
    /// The input is raw little-endian values (1-D), not a .npy.
    #[arg(long)]
    pub raw: bool,
    /// The type of a --raw input's values: float32 (default), float64,
    /// int32, uint32 or int64. A .npy says its own.
    #[arg(long, value_name = "TYPE")]
    pub dtype: Option<String>,
    /// Memory budget in bytes (suffixes K, M, G = KiB, MiB, GiB; default 512M,
    /// at least 512K). Inputs whose data is over half of it are streamed in
    /// chunks within it, except with --axis 0 (per column), which needs the
    /// whole array in memory.
    #[arg(long, visible_alias = "memory-budget", value_name = "BYTES", value_parser = parse_bytes)]
    pub budget: Option<u64>,
    /// Group keys (1-D .npy of int32, uint32 or int64, as long as the
    /// values): reduce the values of each distinct key; --op may then list
    /// several ops (sum,mean,max,min,count), computed in one pass.
    #[arg(long, value_name = "KEYS.npy")]
    pub keys: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Input file; `-` reads standard input (a pipe works too: it is streamed).
    pub input: PathBuf,
}

/// `123`, `64K`, `512M`, `2G`, `1GiB`, ... (binary multiples).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?} is not a byte count (e.g. 1048576, 64M, 2G)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a byte count (e.g. 1048576, 64M, 2G)"))
}

pub fn run(args: ReduceArgs) -> Result<(), Failure> {
    let ReduceArgs {
        op,
        nan,
        partition_size,
        offsets,
        axis,
        raw,
        dtype,
        budget,
        keys,
        json,
        input,
    } = args;
    if let Some(keys) = &keys {
        if partition_size.is_some() || offsets.is_some() || axis.is_some() || raw {
            return Err(Failure::Input(
                "--keys cannot be combined with --partition-size, --offsets, --axis or --raw"
                    .into(),
            ));
        }
        return crate::group_by::run(crate::group_by::KeyedArgs {
            ops: crate::group_by::parse_ops(&op)?,
            nan: nan.parse()?,
            budget: budget.unwrap_or(DEFAULT_BUDGET_BYTES),
            json,
            keys,
            values: &input,
        });
    }
    let raw_dtype: Dtype = match (&dtype, raw) {
        (None, _) => Dtype::F32,
        (Some(d), true) => d.parse()?,
        (Some(_), false) => {
            return Err(Failure::Input(
                "--dtype is for --raw input; a .npy header names its own dtype".into(),
            ));
        }
    };
    if op.split(',').filter(|o| !o.trim().is_empty()).count() > 1 {
        return Err(Failure::Input(format!(
            "--op {op:?}: several ops in one run are for --keys; without keys give one op"
        )));
    }
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
    if raw && axis.is_some() {
        return Err(Failure::Input(
            "--axis needs a 2-D .npy; a --raw file is 1-D".into(),
        ));
    }
    let budget = budget.unwrap_or(DEFAULT_BUDGET_BYTES);
    if budget < MIN_BUDGET_BYTES {
        return Err(Failure::Input(format!(
            "--budget {budget} is too small: at least {MIN_BUDGET_BYTES} bytes (512K)"
        )));
    }
    if offsets.as_deref().is_some_and(npy::is_stdin) && npy::is_stdin(&input) {
        return Err(Failure::Input(
            "--offsets and the input cannot both be standard input ('-')".into(),
        ));
    }
    let partitions = match (partition_size, &offsets) {
        (Some(0), _) => return Err(Failure::Input("--partition-size must be at least 1".into())),
        (Some(n), _) => Partitions::EqualSize(n),
        (None, Some(path)) => Partitions::from_signed_offsets(&npy::read_offsets(path)?)?,
        (None, None) => Partitions::Whole,
    };
    // Header (or size) only: the data is read later, in memory or streamed.
    let format = if raw {
        FileFormat::RawF32
    } else {
        FileFormat::Npy
    };
    let mut file = InputFile::open_typed(&input, format, raw_dtype)?;
    // A Fortran-order 2-D file is read as the C-order array of its
    // transpose: the file's axis 0 is that array's axis 1.
    let axis = axis.map(|a| if file.transposed { 1 - a } else { a });
    let name = file.path.clone();
    let bad_shape = |msg: String| Failure::Input(format!("{}: {msg}", name.display()));
    // Results not backed by data the file was checked to hold (empty rows
    // or columns of any number, or a count a pipe's header claims) must fit
    // the budget, so a tiny file cannot ask for terabytes of results.
    let verified = npy::available_bytes(&mut file.file).is_some();
    if let Some(shape) = file.shape.as_deref() {
        let count = result_count(shape, axis, &partitions);
        let backed = verified && file.len().is_some_and(|n| n >= count);
        check_result_fits(count, backed, budget).map_err(bad_shape)?;
    }
    // Check the shape, and the partitions against the length, before opening
    // a device: bad input then exits 2 whether or not a GPU is present, and
    // no driver chatter on stderr gets mixed into the one-line message.
    let shape = file.shape.clone();
    let partitions = match (shape.as_deref(), axis) {
        (None, _) => partitions, // a raw pipe: checked as it streams
        (Some(&[len]), None) => {
            partitions.offsets(len)?;
            partitions
        }
        (Some(&[_]), Some(_)) => {
            return Err(bad_shape(
                "--axis needs a 2-D array, this one is 1-D".into(),
            ));
        }
        // Per-row results: rows are contiguous, so they stream as partitions
        // (the same offsets `reduce_axis` uses, so the same bits).
        (Some(&[rows, cols]), Some(1)) => {
            Partitions::Offsets(row_offsets(rows, cols).map_err(bad_shape)?)
        }
        (Some(&[_, _]), Some(_)) => partitions,
        (Some(&[rows, cols]), None) => {
            let shape = if file.transposed {
                [cols, rows]
            } else {
                [rows, cols]
            };
            return Err(bad_shape(format!(
                "2-D array of shape {shape:?} needs --axis 0 or 1"
            )));
        }
        (Some(shape), _) => {
            return Err(bad_shape(format!(
                "expected a 1-D or 2-D array, found {}-D with shape {shape:?}",
                shape.len()
            )));
        }
    };
    // An empty 2-D array has only empty rows or columns: the answer is known
    // without reading or reducing anything.
    if let (Some(a), Some(&[rows, cols])) = (axis, shape.as_deref())
        && (rows == 0 || cols == 0)
    {
        let lanes = if a == 1 { rows } else { cols };
        let result = empty_result(op, lanes, file.dtype).map_err(bad_shape)?;
        let engine = Engine::new()?;
        print_result(&engine, &result, json);
        return Ok(());
    }
    if file.dtype != Dtype::F32 {
        let typed = Typed {
            op,
            nan,
            axis,
            shape: shape.as_deref(),
            partitions: &partitions,
            budget,
            json,
        };
        return match file.dtype {
            Dtype::F64 => typed.run::<f64>(file),
            Dtype::I32 => typed.run::<i32>(file),
            Dtype::U32 => typed.run::<u32>(file),
            Dtype::I64 => typed.run::<i64>(file),
            Dtype::F32 => unreachable!("float32 takes the path below"),
        };
    }
    // Columns (axis 0) need the whole array; everything else streams when
    // the data (held twice in memory: host and device) exceeds the budget.
    let stream = axis != Some(0)
        && file
            .data_bytes()
            .is_none_or(|bytes| bytes.saturating_mul(2) > budget);
    // In memory: read from the file already open (its header read), so a
    // pipe works too, and before the device opens, so a short file is bad
    // input with nothing else on stderr.
    let (file, data) = if stream {
        (Some(file), Vec::new())
    } else {
        (None, file.read_to_vec()?)
    };
    let engine = Engine::new()?;
    let result = if let Some(file) = file {
        let options = StreamOptions::with_budget(budget);
        stream_file(&engine, file, op, &partitions, nan, options)?
    } else {
        match (axis, shape.as_deref()) {
            (Some(a), Some(&[rows, cols])) => {
                let matrix = Array2::from_shape_vec((rows as usize, cols as usize), data)
                    .map_err(|e| bad_shape(format!("shape {rows} x {cols}: {e}")))?;
                engine.reduce_axis(matrix.view(), Axis(a), op, nan)?
            }
            _ => engine.reduce_partitions(&data, op, &partitions, nan)?,
        }
    };
    print_result(&engine, &as_scalars(result), json);
    Ok(())
}

/// A reduction of a file of another dtype than float32.
struct Typed<'a> {
    op: Op,
    nan: NanPolicy,
    axis: Option<usize>,
    shape: Option<&'a [u64]>,
    partitions: &'a Partitions,
    budget: u64,
    json: bool,
}

impl Typed<'_> {
    /// Reads `file` into memory and reduces it, or streams it within the
    /// budget (chunks reduced to partial states and merged: the same bits).
    fn run<E: Element>(self, file: InputFile) -> Result<(), Failure> {
        let name = file.path.clone();
        let stream = self.axis != Some(0)
            && file.len().is_some_and(|_| {
                file.data_bytes()
                    .is_none_or(|b| b.saturating_mul(2) > self.budget)
            });
        let (file, data) = if stream {
            (Some(file), Vec::new())
        } else {
            (None, file.read_to_vec_typed::<E>()?)
        };
        let engine = Engine::new()?;
        let result = match (file, self.axis, self.shape) {
            (Some(file), _, _) => {
                let options = StreamOptions::with_budget(self.budget);
                engine.reduce_input_file_typed::<E>(
                    file,
                    self.op,
                    self.partitions,
                    self.nan,
                    &options,
                )?
            }
            (None, Some(a), Some(&[rows, cols])) => {
                let matrix =
                    Array2::from_shape_vec((rows as usize, cols as usize), data).map_err(|e| {
                        Failure::Input(format!("{}: shape {rows} x {cols}: {e}", name.display()))
                    })?;
                engine.reduce_axis_typed(matrix.view(), Axis(a), self.op, self.nan)?
            }
            (None, _, _) => engine.reduce_slice(&data, self.op, self.partitions, self.nan)?,
        };
        print_result(&engine, &result, self.json);
        Ok(())
    }
}

/// A float32 result as result-typed values (counts as int64).
fn as_scalars(r: Reduction) -> Reduction<Scalar> {
    let values = r
        .values
        .iter()
        .zip(&r.counts)
        .map(|(v, &c)| match r.op {
            Op::Count => Some(Scalar::I64(c as i64)),
            _ => v.map(Scalar::F32),
        })
        .collect();
    Reduction {
        op: r.op,
        values,
        counts: r.counts,
    }
}

/// Bytes one result entry costs while it is made: its offset, value and count.
const RESULT_ENTRY_BYTES: u64 = 24;

/// The number of results a reduction of an array of `shape` gives.
fn result_count(shape: &[u64], axis: Option<usize>, partitions: &Partitions) -> u64 {
    let len = if shape.contains(&0) {
        0
    } else {
        shape.iter().product()
    };
    match (axis, shape) {
        (Some(1), &[rows, _]) => rows,
        (Some(_), &[_, cols]) => cols,
        _ => match partitions {
            Partitions::Whole => 1,
            Partitions::EqualSize(n) => len.div_ceil((*n).max(1)),
            Partitions::Offsets(o) => o.len().saturating_sub(1) as u64,
        },
    }
}

/// Results backed by checked data are never refused (the stream's budget
/// does not count the result); others must fit the budget.
fn check_result_fits(count: u64, backed: bool, budget: u64) -> Result<(), String> {
    let bytes = count.saturating_mul(RESULT_ENTRY_BYTES);
    if backed || count <= 1 || bytes <= budget {
        return Ok(());
    }
    Err(format!(
        "the result would have {count} entries ({bytes} bytes), more than the memory \
         budget of {budget} bytes allows for results the data does not hold: raise --budget"
    ))
}

/// Offsets of `rows` rows of `cols` values, or an error if they cannot be held.
fn row_offsets(rows: u64, cols: u64) -> Result<Vec<u64>, String> {
    let n = usize::try_from(rows)
        .ok()
        .and_then(|r| r.checked_add(1))
        .ok_or_else(|| format!("{rows} rows do not fit in memory"))?;
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| format!("the offsets of {rows} rows do not fit in memory"))?;
    out.extend((0..=rows).map(|r| r * cols));
    Ok(out)
}

/// The result of `lanes` empty partitions of `dtype` values: sum and count
/// 0, no value for mean, max and min (as the engine gives for an empty
/// partition).
fn empty_result(op: Op, lanes: u64, dtype: Dtype) -> Result<Reduction<Scalar>, String> {
    let n = usize::try_from(lanes).map_err(|_| format!("{lanes} results do not fit in memory"))?;
    let value = match (op, dtype) {
        (Op::Count, _) => Some(Scalar::I64(0)),
        (Op::Sum, Dtype::F32) => Some(Scalar::F32(0.0)),
        (Op::Sum, Dtype::F64) => Some(Scalar::F64(0.0)),
        (Op::Sum, _) => Some(Scalar::I64(0)),
        _ => None,
    };
    let mut values = Vec::new();
    let mut counts = Vec::new();
    values
        .try_reserve_exact(n)
        .and_then(|()| counts.try_reserve_exact(n))
        .map_err(|_| format!("{lanes} results do not fit in memory"))?;
    values.resize(n, value);
    counts.resize(n, 0);
    Ok(Reduction { op, values, counts })
}

fn print_result(engine: &Engine, result: &Reduction<Scalar>, json: bool) {
    if json {
        print_json(engine, result);
    } else {
        print_table(result);
    }
}

/// Streams `file` with a progress bar (bytes, GB/s) on stderr when stderr
/// is a terminal.
fn stream_file(
    engine: &Engine,
    file: InputFile,
    op: Op,
    partitions: &Partitions,
    nan: NanPolicy,
    mut options: StreamOptions,
) -> Result<Reduction, Failure> {
    let bar = match file.data_bytes() {
        Some(bytes) => ProgressBar::new(bytes),
        None => ProgressBar::no_length(),
    };
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {gbps}",
        )
        .expect("valid template")
        .with_key("gbps", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let secs = s.elapsed().as_secs_f64().max(1e-9);
            let _ = write!(w, "{:.2} GB/s", s.pos() as f64 / secs / 1e9);
        });
        bar.set_style(style);
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let progress = bar.clone();
    options.progress = Some(std::sync::Arc::new(move |bytes| {
        progress.set_position(bytes)
    }));
    let result = engine.reduce_input_file(file, op, partitions, nan, &options);
    bar.finish_and_clear();
    Ok(result?.0)
}

/// A JSON result entry: a number (floats printed so they parse back to
/// the same bits of their type), a string for NaN/inf, or null.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum JsonValue {
    F32(f32),
    F64(f64),
    Int(i64),
    Count(u64),
    Text(&'static str),
    Null,
}

pub(crate) fn json_value(op: Op, v: Option<Scalar>, count: u64) -> JsonValue {
    let special = |x: f64| {
        if x.is_nan() {
            Some(JsonValue::Text("NaN"))
        } else if x == f64::INFINITY {
            Some(JsonValue::Text("inf"))
        } else if x == f64::NEG_INFINITY {
            Some(JsonValue::Text("-inf"))
        } else {
            None
        }
    };
    match (op, v) {
        (Op::Count, _) => JsonValue::Count(count),
        (_, None) => JsonValue::Null,
        (_, Some(Scalar::F32(x))) => special(x as f64).unwrap_or(JsonValue::F32(x)),
        (_, Some(Scalar::F64(x))) => special(x).unwrap_or(JsonValue::F64(x)),
        (_, Some(Scalar::I32(x))) => JsonValue::Int(x as i64),
        (_, Some(Scalar::U32(x))) => JsonValue::Int(x as i64),
        (_, Some(Scalar::I64(x))) => JsonValue::Int(x),
    }
}

fn print_json(engine: &Engine, r: &Reduction<Scalar>) {
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

fn print_table(r: &Reduction<Scalar>) {
    println!("{:>10}  {:>16}  {:>12}", "partition", r.op.name(), "count");
    for (i, (v, c)) in r.values.iter().zip(&r.counts).enumerate() {
        let v = table_value(r.op, *v, *c);
        println!("{i:>10}  {v:>16}  {c:>12}");
    }
}

/// One result as a table cell (floats as their shortest round-trip form).
pub(crate) fn table_value(op: Op, v: Option<Scalar>, count: u64) -> String {
    match (op, v) {
        (Op::Count, _) => count.to_string(),
        (_, None) => "null".into(),
        (_, Some(Scalar::F32(x))) => format!("{x:?}"),
        (_, Some(Scalar::F64(x))) => format!("{x:?}"),
        (_, Some(x)) => x.to_string(),
    }
}
