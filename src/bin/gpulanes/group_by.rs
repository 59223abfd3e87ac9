//! `gpulanes reduce --keys KEYS.npy`: keyed reductions (group-by) of a 1-D
//! `.npy` of values by a 1-D `.npy` of int32, uint32 or int64 keys of the
//! same length, several ops in one pass. Prints the distinct keys in
//! ascending order with one result per op and one count per key, as a
//! table or one JSON object. Files whose rows fit half the budget are read
//! into memory; larger ones are streamed in chunks within the budget (the
//! same bits).

use std::path::Path;

use gpulanes::stream::MIN_BUDGET_BYTES;
use gpulanes::{
    Column, Dtype, Element, Engine, FileFormat, Grouped, InputFile, Key, NanPolicy, Op,
    StreamOptions, npy,
};
use serde::Serialize;

use crate::Failure;
use crate::reduce::{JsonValue, json_value};

/// What a keyed reduction asks for.
pub struct KeyedArgs<'a> {
    pub ops: Vec<Op>,
    pub nan: NanPolicy,
    pub budget: u64,
    pub json: bool,
    pub keys: &'a Path,
    pub values: &'a Path,
}

/// Opens a 1-D `.npy` (header only), naming the file and its role in errors.
fn open_1d(path: &Path, role: &str) -> Result<(InputFile, u64), Failure> {
    // The reader's errors (a missing file, a bad header, its own shape
    // rule for data: 1-D or 2-D) come after the input's role and rule.
    let file =
        InputFile::open_typed(path, FileFormat::Npy, Dtype::F32).map_err(
            |e| match Failure::from(e) {
                Failure::Input(m) if role == "--keys" && m.contains("unsupported dtype") => {
                    // The reader lists the value dtypes it takes; keys take fewer.
                    let m = m.split(" (supported:").next().unwrap_or(&m);
                    Failure::Input(format!(
                        "{role} (a 1-D .npy array of int32, uint32 or int64): {m}"
                    ))
                }
                Failure::Input(m) => Failure::Input(format!("{role} (a 1-D .npy array): {m}")),
                runtime => runtime,
            },
        )?;
    let name = file.path.display().to_string();
    match file.shape.as_deref() {
        Some(&[n]) => Ok((file, n)),
        Some(shape) => {
            // A Fortran-order file's shape, as the file gives it.
            let mut shape = shape.to_vec();
            if file.transposed {
                shape.reverse();
            }
            Err(Failure::Input(format!(
                "{name}: {role} must be a 1-D array, found shape {shape:?}"
            )))
        }
        None => Err(Failure::Input(format!(
            "{name}: {role} must be a .npy file"
        ))),
    }
}

pub fn run(args: KeyedArgs<'_>) -> Result<(), Failure> {
    if npy::is_stdin(args.keys) && npy::is_stdin(args.values) {
        return Err(Failure::Input(
            "--keys and the values cannot both be standard input ('-')".into(),
        ));
    }
    let (keys, nk) = open_1d(args.keys, "--keys")?;
    let (values, nv) = open_1d(args.values, "the values")?;
    if nk != nv {
        return Err(Failure::Input(format!(
            "--keys has {nk} keys but the values have {nv} (they must be the same length)"
        )));
    }
    match keys.dtype {
        Dtype::I32 => with_keys::<i32>(&args, keys, values, nk),
        Dtype::U32 => with_keys::<u32>(&args, keys, values, nk),
        Dtype::I64 => with_keys::<i64>(&args, keys, values, nk),
        other => Err(Failure::Input(format!(
            "{}: --keys must be int32, uint32 or int64, found {other}",
            keys.path.display()
        ))),
    }
}

fn with_keys<K: Key + Element + Serialize + std::fmt::Display>(
    args: &KeyedArgs<'_>,
    keys: InputFile,
    values: InputFile,
    len: u64,
) -> Result<(), Failure> {
    // Rows held twice (host and device) must fit the budget to be read
    // whole; otherwise they stream.
    let bytes = len * (keys.dtype.size() + values.dtype.size());
    if bytes.saturating_mul(2) > args.budget {
        if args.budget < MIN_BUDGET_BYTES {
            return Err(Failure::Input(format!(
                "--budget {} is too small: at least {MIN_BUDGET_BYTES} bytes (512K)",
                args.budget
            )));
        }
        return match values.dtype {
            Dtype::F32 => stream::<K, f32>(args, keys, values, len),
            Dtype::F64 => stream::<K, f64>(args, keys, values, len),
            Dtype::I32 => stream::<K, i32>(args, keys, values, len),
            Dtype::U32 => stream::<K, u32>(args, keys, values, len),
            Dtype::I64 => stream::<K, i64>(args, keys, values, len),
        };
    }
    let keys: Vec<K> = keys.read_to_vec_typed()?;
    match values.dtype {
        Dtype::F32 => reduce::<K, f32>(args, &keys, values),
        Dtype::F64 => reduce::<K, f64>(args, &keys, values),
        Dtype::I32 => reduce::<K, i32>(args, &keys, values),
        Dtype::U32 => reduce::<K, u32>(args, &keys, values),
        Dtype::I64 => reduce::<K, i64>(args, &keys, values),
    }
}

fn reduce<K: Key + Serialize + std::fmt::Display, E: Element>(
    args: &KeyedArgs<'_>,
    keys: &[K],
    values: InputFile,
) -> Result<(), Failure> {
    let values: Vec<E> = values.read_to_vec_typed()?;
    let engine = Engine::new()?;
    let grouped = engine.reduce_by_key(keys, &values, &args.ops, args.nan)?;
    print(&engine, &grouped, args.json);
    Ok(())
}

/// Streams both files in chunks within the budget.
fn stream<K: Key + Serialize + std::fmt::Display, E: Element>(
    args: &KeyedArgs<'_>,
    keys: InputFile,
    values: InputFile,
    len: u64,
) -> Result<(), Failure> {
    let engine = Engine::new()?;
    let (kname, vname) = (keys.path.clone(), values.path.clone());
    let (kend, vend) = (
        keys.data_offset + len * K::WORDS as u64 * 4,
        values.data_offset + len * E::DTYPE.size(),
    );
    let mut kreader = std::io::BufReader::new(keys.file);
    let mut vreader = std::io::BufReader::new(values.file);
    let grouped = engine.reduce_by_key_readers::<K, E, _, _>(
        Column {
            reader: &mut kreader,
            name: &kname,
            data_offset: keys.data_offset,
        },
        Column {
            reader: &mut vreader,
            name: &vname,
            data_offset: values.data_offset,
        },
        len,
        &args.ops,
        args.nan,
        &StreamOptions::with_budget(args.budget),
    )?;
    let end_error =
        |name: &std::path::Path, m: String| Failure::Input(format!("{}: {m}", name.display()));
    npy::check_end(&mut kreader, kend).map_err(|m| end_error(&kname, m))?;
    npy::check_end(&mut vreader, vend).map_err(|m| end_error(&vname, m))?;
    print(&engine, &grouped, args.json);
    Ok(())
}

fn print<K: Serialize + std::fmt::Display>(engine: &Engine, g: &Grouped<K>, json: bool) {
    if json {
        print_json(engine, g);
    } else {
        print_table(g);
    }
}

fn print_json<K: Serialize>(engine: &Engine, g: &Grouped<K>) {
    #[derive(Serialize)]
    struct Out<'a, K> {
        ops: Vec<&'static str>,
        keys: &'a [K],
        results: serde_json::Map<String, serde_json::Value>,
        counts: &'a [u64],
        adapter: &'a gpulanes::AdapterSummary,
    }
    let mut results = serde_json::Map::new();
    for r in &g.reductions {
        let column: Vec<JsonValue> = r
            .values
            .iter()
            .zip(&r.counts)
            .map(|(&v, &c)| json_value(r.op, v, c))
            .collect();
        results.insert(
            r.op.name().into(),
            serde_json::to_value(column).expect("results serialise"),
        );
    }
    let out = Out {
        ops: g.reductions.iter().map(|r| r.op.name()).collect(),
        keys: &g.keys,
        results,
        counts: g.reductions.first().map_or(&[], |r| &r.counts),
        adapter: engine.adapter(),
    };
    println!(
        "{}",
        serde_json::to_string(&out).expect("result serialises")
    );
}

fn print_table<K: std::fmt::Display>(g: &Grouped<K>) {
    let mut header = format!("{:>20}", "key");
    for r in &g.reductions {
        header += &format!("  {:>24}", r.op.name());
    }
    // Each key's count closes the line, unless `count` was asked for
    // (then its own column is that count).
    let count_column = !g.reductions.iter().any(|r| r.op == Op::Count);
    if count_column {
        header += &format!("  {:>12}", "count");
    }
    println!("{header}");
    for (i, k) in g.keys.iter().enumerate() {
        let mut line = format!("{k:>20}");
        for r in &g.reductions {
            let v = crate::reduce::table_value(r.op, r.values[i], r.counts[i]);
            line += &format!("  {v:>24}");
        }
        if count_column {
            let count = g.reductions.first().map_or(0, |r| r.counts[i]);
            line += &format!("  {count:>12}");
        }
        println!("{line}");
    }
}

/// `sum` or a comma-separated list (`sum,mean,max`).
pub fn parse_ops(s: &str) -> Result<Vec<Op>, Failure> {
    let ops: Vec<Op> = s
        .split(',')
        .map(|o| o.trim().parse::<Op>().map_err(Failure::from))
        .collect::<Result<_, _>>()?;
    // The JSON output keys its results by op name: one entry each.
    for (i, op) in ops.iter().enumerate() {
        if ops[..i].contains(op) {
            return Err(Failure::Input(format!("--op lists {op} twice")));
        }
    }
    Ok(ops)
}
