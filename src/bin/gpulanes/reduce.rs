//! `gpulanes reduce`: reduce a float32 `.npy` file, whole, in equal
//! partitions, by offsets, or along an axis of a 2-D array.

use std::path::PathBuf;

use gpulanes::{Engine, NanPolicy, Op, Partitions, Reduction, npy};
use ndarray::{Axis, Ix1, Ix2};
use serde::Serialize;

use crate::Failure;

pub fn run(
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
    // Check the shape, and the partitions against the length, before opening
    // a device: bad input then exits 2 whether or not a GPU is present, and
    // no driver chatter on stderr gets mixed into the one-line message.
    match (shape.len(), axis) {
        (1, None) => {
            partitions.offsets(shape[0] as u64)?;
        }
        (1, Some(_)) => {
            return Err(bad_shape(
                "--axis needs a 2-D array, this one is 1-D".into(),
            ));
        }
        (2, Some(_)) => {}
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
    }
    let engine = Engine::new()?;
    let result = match axis {
        None => {
            let data = data.into_dimensionality::<Ix1>().expect("checked 1-D");
            let slice = data.as_slice().expect("standard layout");
            engine.reduce_partitions(slice, op, &partitions, nan)?
        }
        Some(a) => {
            let data = data.into_dimensionality::<Ix2>().expect("checked 2-D");
            engine.reduce_axis(data.view(), Axis(a), op, nan)?
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
