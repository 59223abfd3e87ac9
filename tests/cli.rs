//! The `gpulanes` command line, run as a real process on real `.npy` files:
//! the `--json` contract (one object; keys op, results, counts, adapter; one
//! entry per partition; null for empty partitions except sum and count;
//! NaN/inf/-inf as strings; floats that parse back to the library's exact
//! f32 bits) and the bad-input contract (exit code 2, exactly one non-empty
//! stderr line naming the problem, never a panic).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use gpulanes::{NanPolicy, Op, Partitions, Reduction};
use ndarray::{Array1, Array2, Array3, Axis};
use ndarray_npy::write_npy;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gpulanes");

/// A fresh directory for one test under Cargo's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the gpulanes binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn op_arg(op: Op) -> &'static str {
    op.name()
}

fn nan_arg(nan: NanPolicy) -> &'static str {
    match nan {
        NanPolicy::Propagate => "propagate",
        NanPolicy::Ignore => "ignore",
    }
}

/// Raw text of the entries of the top-level `"results": [...]` array
/// (scalars only: numbers, strings, null), so floats are parsed straight to
/// f32 without going through f64.
fn raw_results(stdout: &str) -> Vec<String> {
    let start = stdout.find("\"results\":[").expect("results array") + "\"results\":[".len();
    let end = start + stdout[start..].find(']').expect("end of results");
    let body = &stdout[start..end];
    if body.trim().is_empty() {
        return Vec::new();
    }
    body.split(',').map(|s| s.trim().to_string()).collect()
}

/// Runs `gpulanes reduce ... --json` and checks the output against the
/// library's result `want`, entry by entry and bit by bit.
fn check_json(args: &[&str], want: &Reduction, what: &str) {
    check_json_output(&run(args), args, want, what);
}

/// Runs `gpulanes args...` with `input` written to its stdin.
fn run_with_stdin(args: &[&str], input: Vec<u8>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the gpulanes binary");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A writer thread: the pipe is smaller than the input.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // an early exit closes the pipe
    });
    let out = child.wait_with_output().expect("gpulanes ends");
    writer.join().unwrap();
    out
}

/// [`check_json`] on the output of a run already made.
fn check_json_output(out: &Output, args: &[&str], want: &Reduction, what: &str) {
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{what}: {args:?} failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "{what}: one line of JSON: {stdout}"
    );
    // Exactly one JSON object, nothing after it.
    let v: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"));
    let obj = v.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["adapter", "counts", "op", "results"], "{what}");
    assert_eq!(obj["op"], want.op.name(), "{what}");
    assert!(obj["adapter"]["name"].is_string(), "{what}: adapter");
    let counts: Vec<u64> = obj["counts"]
        .as_array()
        .expect("counts array")
        .iter()
        .map(|c| c.as_u64().expect("integer count"))
        .collect();
    assert_eq!(counts, want.counts, "{what}: counts");
    let results = obj["results"].as_array().expect("results array");
    assert_eq!(results.len(), want.len(), "{what}: one entry per partition");
    let raw = raw_results(&stdout);
    assert_eq!(raw.len(), want.len(), "{what}: raw results");
    for (i, (r, w)) in results.iter().zip(&want.values).enumerate() {
        let at = format!("{what}: entry {i}: {r} vs {w:?}");
        if want.op == Op::Count {
            assert_eq!(
                r.as_u64(),
                Some(want.counts[i]),
                "{at}: count is an integer"
            );
            continue;
        }
        match w {
            None => assert!(r.is_null(), "{at}: empty is null"),
            Some(x) if x.is_nan() => assert_eq!(r, "NaN", "{at}"),
            Some(x) if *x == f32::INFINITY => assert_eq!(r, "inf", "{at}"),
            Some(x) if *x == f32::NEG_INFINITY => assert_eq!(r, "-inf", "{at}"),
            Some(x) => {
                assert!(r.is_number(), "{at}: a number");
                let parsed: f32 = raw[i].parse().unwrap_or_else(|e| panic!("{at}: {e}"));
                assert_eq!(parsed.to_bits(), x.to_bits(), "{at}: same f32 bits");
            }
        }
    }
}

/// Data whose partitions hold everything the JSON must express: finite
/// values of many magnitudes, -0.0, NaN, +inf, -inf, empty partitions.
fn interesting_data() -> (Vec<f32>, Vec<u64>) {
    let mut data = mixed_data(&mut SplitMix::new(31), 9000, 0);
    data[10] = f32::NAN; // partition 1
    data[20] = f32::INFINITY; // partition 2
    data[30] = f32::NEG_INFINITY; // partition 3
    data[40] = f32::INFINITY; // partition 4: +inf and -inf
    data[41] = f32::NEG_INFINITY;
    data[50] = -0.0; // partition 5: only -0.0
    data[51] = -0.0;
    data[60] = f32::NAN; // partition 6: only NaN
    data[61] = f32::NAN;
    let offsets = vec![
        0, 0, 15, 25, 35, 45, 45, 50, 52, 60, 62, 62, 5000, 9000, 9000,
    ];
    (data, offsets)
}

#[test]
fn json_matches_the_library_bit_for_bit() {
    let dir = scratch("json");
    let (data, offsets) = interesting_data();
    let input = dir.join("data.npy");
    write_npy(&input, &Array1::from(data.clone())).unwrap();
    let off64 = dir.join("offsets64.npy");
    write_npy(
        &off64,
        &Array1::from(offsets.iter().map(|&o| o as i64).collect::<Vec<_>>()),
    )
    .unwrap();
    let off32 = dir.join("offsets32.npy");
    write_npy(
        &off32,
        &Array1::from(offsets.iter().map(|&o| o as i32).collect::<Vec<_>>()),
    )
    .unwrap();
    let input_s = input.to_str().unwrap();
    let parts = Partitions::Offsets(offsets.clone());
    for op in Op::ALL {
        for nan in POLICIES {
            let (o, n) = (op_arg(op), nan_arg(nan));
            let lib = reduce(engine(), &data, op, &parts, nan);
            // The library itself is checked against the exact reference.
            assert_matches_reference(&lib, &data, op, &parts, nan, "library");
            check_json(
                &[
                    "reduce",
                    "--op",
                    o,
                    "--nan",
                    n,
                    "--offsets",
                    off64.to_str().unwrap(),
                    "--json",
                    input_s,
                ],
                &lib,
                &format!("{o} {n} int64 offsets"),
            );
            // int32 offsets give the same; whole and equal-size partitions.
            check_json(
                &[
                    "reduce",
                    "--op",
                    o,
                    "--nan",
                    n,
                    "--json",
                    "--offsets",
                    off32.to_str().unwrap(),
                    input_s,
                ],
                &lib,
                &format!("{o} {n} int32 offsets"),
            );
            let lib = reduce(engine(), &data, op, &Partitions::EqualSize(1000), nan);
            check_json(
                &[
                    "reduce",
                    "--op",
                    o,
                    "--nan",
                    n,
                    "--partition-size",
                    "1000",
                    "--json",
                    input_s,
                ],
                &lib,
                &format!("{o} {n} partition size"),
            );
            let lib = reduce(engine(), &data, op, &Partitions::Whole, nan);
            check_json(
                &["reduce", "--json", "--nan", n, "--op", o, input_s],
                &lib,
                &format!("{o} {n} whole"),
            );
        }
        // Default policy is propagate.
        let lib = reduce(
            engine(),
            &data,
            op,
            &Partitions::Whole,
            NanPolicy::Propagate,
        );
        check_json(
            &["reduce", "--op", op_arg(op), "--json", input_s],
            &lib,
            "default policy",
        );
    }
}

#[test]
fn json_empty_partitions_and_special_values() {
    let dir = scratch("empty");
    let (data, offsets) = interesting_data();
    let input = dir.join("data.npy");
    write_npy(&input, &Array1::from(data.clone())).unwrap();
    let off = dir.join("offsets.npy");
    write_npy(
        &off,
        &Array1::from(offsets.iter().map(|&o| o as i64).collect::<Vec<_>>()),
    )
    .unwrap();
    for op in Op::ALL {
        for nan in POLICIES {
            let out = run(&[
                "reduce",
                "--op",
                op_arg(op),
                "--nan",
                nan_arg(nan),
                "--offsets",
                off.to_str().unwrap(),
                "--json",
                input.to_str().unwrap(),
            ]);
            assert!(out.status.success());
            let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
            let r = v["results"].as_array().unwrap();
            assert_eq!(r.len(), offsets.len() - 1);
            // Partitions 0, 5, 10, 13 are empty.
            for i in [0, 5, 10, 13] {
                assert_eq!(v["counts"][i], 0);
                match op {
                    Op::Sum => assert_eq!(r[i].as_f64(), Some(0.0), "{op}: empty sum is 0"),
                    Op::Count => assert_eq!(r[i].as_u64(), Some(0), "count is an integer"),
                    _ => assert!(r[i].is_null(), "{op}: empty is null"),
                }
            }
            if op == Op::Count {
                continue;
            }
            match nan {
                NanPolicy::Propagate => {
                    assert_eq!(r[1], "NaN");
                    assert_eq!(r[9], "NaN");
                }
                NanPolicy::Ignore => {
                    // All-NaN partition: nothing left.
                    let want = if op == Op::Sum {
                        Value::from(0.0)
                    } else {
                        Value::Null
                    };
                    assert_eq!(r[9], want, "{op}: all-NaN partition under ignore");
                }
            }
            match op {
                Op::Sum | Op::Mean => {
                    assert_eq!(r[2], "inf");
                    assert_eq!(r[3], "-inf");
                    assert_eq!(r[4], "NaN", "+inf + -inf");
                }
                Op::Max => assert_eq!(r[4], "inf"),
                Op::Min => assert_eq!(r[4], "-inf"),
                Op::Count => unreachable!(),
            }
            if op != Op::Mean {
                // Only -0.0: sum, max and min are -0.0, printed so it parses back.
                let raw = raw_results(&text(&out.stdout));
                let x: f32 = raw[7].parse().unwrap();
                assert_eq!(x.to_bits(), 0x8000_0000, "{op} of [-0.0, -0.0]: {}", raw[7]);
            }
        }
    }
    // An empty file: one (empty) partition for the whole buffer.
    let empty = dir.join("empty.npy");
    write_npy(&empty, &Array1::<f32>::zeros(0)).unwrap();
    for op in Op::ALL {
        let lib = reduce(engine(), &[], op, &Partitions::Whole, NanPolicy::Propagate);
        check_json(
            &[
                "reduce",
                "--op",
                op_arg(op),
                "--json",
                empty.to_str().unwrap(),
            ],
            &lib,
            "empty file",
        );
    }
    // Equal partitions of an empty file: no partitions at all.
    let lib = reduce(
        engine(),
        &[],
        Op::Max,
        &Partitions::EqualSize(4),
        NanPolicy::Propagate,
    );
    assert!(lib.is_empty());
    check_json(
        &[
            "reduce",
            "--op",
            "max",
            "--partition-size",
            "4",
            "--json",
            empty.to_str().unwrap(),
        ],
        &lib,
        "empty file, partition size",
    );
}

#[test]
fn json_axis_reductions() {
    let dir = scratch("axis");
    let (rows, cols) = (7, 1300);
    let data = mixed_data(&mut SplitMix::new(41), rows * cols, 5);
    let a = Array2::from_shape_vec((rows, cols), data).unwrap();
    let input = dir.join("m.npy");
    write_npy(&input, &a).unwrap();
    for op in Op::ALL {
        for (axis, arg) in [(0, "0"), (1, "1")] {
            let nan = if axis == 0 {
                NanPolicy::Ignore
            } else {
                NanPolicy::Propagate
            };
            let lib = engine().reduce_axis(a.view(), Axis(axis), op, nan).unwrap();
            assert_eq!(lib.len(), if axis == 0 { cols } else { rows });
            check_json(
                &[
                    "reduce",
                    "--op",
                    op_arg(op),
                    "--axis",
                    arg,
                    "--nan",
                    nan_arg(nan),
                    "--json",
                    input.to_str().unwrap(),
                ],
                &lib,
                &format!("{op} axis {axis}"),
            );
        }
    }
}

#[test]
fn npy_through_a_pipe_whole_and_per_column_and_truncated() {
    // Small enough to be reduced in memory: read from the open pipe after
    // its header (it used to reopen the pipe, whose header was gone).
    let dir = scratch("npy-pipe");
    let (rows, cols) = (5, 1000);
    let data = mixed_data(&mut SplitMix::new(43), rows * cols, 5);
    let flat = dir.join("v.npy");
    write_npy(&flat, &Array1::from_vec(data.clone())).unwrap();
    let matrix = dir.join("m.npy");
    let a = Array2::from_shape_vec((rows, cols), data.clone()).unwrap();
    write_npy(&matrix, &a).unwrap();
    let stdin = "/dev/stdin";

    let args = ["reduce", "--op", "sum", "--json", stdin];
    let out = run_with_stdin(&args, std::fs::read(&flat).unwrap());
    let want = engine()
        .reduce_partitions(&data, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap();
    check_json_output(&out, &args, &want, "1-D .npy through a pipe");

    let args = ["reduce", "--op", "max", "--axis", "0", "--json", stdin];
    let out = run_with_stdin(&args, std::fs::read(&matrix).unwrap());
    let want = engine()
        .reduce_axis(a.view(), Axis(0), Op::Max, NanPolicy::Propagate)
        .unwrap();
    check_json_output(&out, &args, &want, "2-D .npy through a pipe, per column");

    // A pipe that ends before the announced data: bad input, one line.
    let mut bytes = std::fs::read(&flat).unwrap();
    bytes.truncate(bytes.len() - 100);
    let out = run_with_stdin(&["reduce", "--op", "sum", stdin], bytes);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("truncated") && err.contains(stdin), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let ours = err.lines().filter(|l| l.starts_with("gpulanes:")).count();
    assert_eq!(ours, 1, "{err}");
}

#[test]
fn text_output_and_info() {
    let dir = scratch("text");
    let input = dir.join("d.npy");
    write_npy(&input, &Array1::from(vec![1.0f32, 2.0, 3.0, 4.0, 5.0])).unwrap();
    let out = run(&[
        "reduce",
        "--op",
        "sum",
        "--partition-size",
        "2",
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // A header line and one line per partition.
    assert_eq!(stdout.trim_end().lines().count(), 1 + 3, "{stdout}");
    assert!(stdout.lines().nth(3).unwrap().contains('5'), "{stdout}");

    let out = run(&["info", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).expect("one JSON object");
    assert_eq!(v["name"], engine().adapter().name.as_str());
    assert!(v["backend"].is_string());
    let out = run(&["info"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(&engine().adapter().name));

    // GPULANES_KERNELS picks the kernel shape; a bad name is a clear error.
    let out = Command::new(BIN)
        .args(["info", "--json"])
        .env("GPULANES_KERNELS", "workgroup")
        .output()
        .expect("run gpulanes");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).expect("one JSON object");
    assert_eq!(v["kernels"], "workgroup");
    let out = Command::new(BIN)
        .args(["info"])
        .env("GPULANES_KERNELS", "wide")
        .output()
        .expect("run gpulanes");
    assert_eq!(out.status.code(), Some(2), "a bad environment is bad input");
    let err = text(&out.stderr);
    assert!(
        err.contains("GPULANES_KERNELS") && err.contains("\"wide\"") && err.contains("narrow"),
        "{err}"
    );
    // So is an adapter name that matches no adapter.
    let out = Command::new(BIN)
        .args(["info"])
        .env("WGPU_ADAPTER_NAME", "no such adapter, surely")
        .output()
        .expect("run gpulanes");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("WGPU_ADAPTER_NAME"));
}

#[test]
fn output_into_a_pipe_closed_early_ends_quietly() {
    use std::io::Read;
    // 100000 one-item partitions: far more text than a pipe buffer holds,
    // so the writer meets the closed pipe (`gpulanes reduce ... | head`).
    let dir = scratch("pipe");
    let path = dir.join("many.npy");
    write_npy(&path, &Array1::from_vec(vec![1.5f32; 100_000])).unwrap();
    let mut child = Command::new(BIN)
        .args(["reduce", "--op", "sum", "--partition-size", "1"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run gpulanes");
    let mut first = [0u8; 16];
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_exact(&mut first)
        .expect("some output before the pipe closes");
    // The read end is dropped here.
    let out = child.wait_with_output().expect("gpulanes ends");
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// Writes a `.npy` by hand: magic, version 1.0, the given header dict
/// (padded to a 64-byte boundary) and `data` as raw bytes.
fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_problem() {
    let dir = scratch("bad");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let good = p("good.npy");
    write_npy(&good, &Array1::from(vec![1.0f32, 2.0, 3.0, 4.0, 5.0])).unwrap();
    raw_npy(
        Path::new(&p("f16.npy")),
        "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }",
        &[0u8; 8],
    );
    raw_npy(
        Path::new(&p("be_f8.npy")),
        "{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }",
        &[0u8; 8],
    );
    write_npy(p("ovf.npy"), &Array1::from(vec![i64::MAX, 1])).unwrap();
    write_npy(p("3d.npy"), &Array3::<f32>::zeros((2, 2, 2))).unwrap();
    write_npy(p("2d.npy"), &Array2::<f32>::zeros((2, 3))).unwrap();
    raw_npy(
        Path::new(&p("truncated.npy")),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }",
        &[0u8; 40],
    );
    raw_npy(
        Path::new(&p("corrupt_header.npy")),
        "{'descr': '<f4', 'fortran_order': Fal",
        &[0u8; 8],
    );
    raw_npy(
        Path::new(&p("bad_shape.npy")),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }",
        &[],
    );
    std::fs::write(
        p("garbage.npy"),
        b"this is not a numpy file at all, just text\n",
    )
    .unwrap();
    std::fs::write(p("zero_bytes.npy"), b"").unwrap();
    let offsets = |name: &str, v: Vec<i64>| write_npy(p(name), &Array1::from(v)).unwrap();
    offsets("decreasing.npy", vec![0, 3, 2, 5]);
    offsets("beyond.npy", vec![0, 3, 6]);
    offsets("short.npy", vec![0, 3, 4]);
    offsets("first.npy", vec![1, 3, 5]);
    offsets("negative.npy", vec![0, -1, 5]);
    offsets("empty_offsets.npy", vec![]);
    write_npy(
        p("float_offsets.npy"),
        &Array1::from(vec![0.0f32, 2.0, 5.0]),
    )
    .unwrap();
    write_npy(p("offsets_2d.npy"), &Array2::<i64>::zeros((2, 2))).unwrap();
    let dir_s = dir.to_str().unwrap().to_string();

    let cases: Vec<(&str, Vec<String>, &[&str])> = vec![
        (
            "missing file",
            vec!["--op", "sum", &p("nope.npy")]
                .into_iter()
                .map(String::from)
                .collect(),
            &["nope.npy"],
        ),
        // clap rejects an empty value before gpulanes sees it.
        (
            "empty path",
            args(&["--op", "sum", ""]),
            &["empty path|value is required for '<INPUT>'"],
        ),
        (
            "empty offsets path",
            args(&["--op", "sum", "--offsets", "", &good]),
            &["empty path|--offsets"],
        ),
        ("directory", args(&["--op", "sum", &dir_s]), &["directory"]),
        (
            "float16 data",
            args(&["--op", "sum", &p("f16.npy")]),
            &["dtype", "f2"],
        ),
        (
            "big-endian float64 data",
            args(&["--op", "sum", &p("be_f8.npy")]),
            &["dtype", ">f8"],
        ),
        (
            "int64 sum outside int64",
            args(&["--op", "sum", &p("ovf.npy")]),
            &["overflow", "int64"],
        ),
        (
            "--dtype without --raw",
            args(&["--op", "sum", "--dtype", "float64", &good]),
            &["--dtype", "--raw"],
        ),
        (
            "unknown --dtype",
            args(&["--op", "sum", "--raw", "--dtype", "float16", &good]),
            &["dtype", "float16"],
        ),
        ("3-D array", args(&["--op", "sum", &p("3d.npy")]), &["3-D"]),
        (
            "2-D without --axis",
            args(&["--op", "sum", &p("2d.npy")]),
            &["--axis"],
        ),
        (
            "--axis with 1-D",
            args(&["--op", "sum", "--axis", "0", &good]),
            &["1-D"],
        ),
        (
            "--axis 2",
            args(&["--op", "sum", "--axis", "2", &p("2d.npy")]),
            &["axis", "2"],
        ),
        (
            "truncated file",
            args(&["--op", "sum", &p("truncated.npy")]),
            &["truncated"],
        ),
        (
            "corrupt header",
            args(&["--op", "sum", &p("corrupt_header.npy")]),
            &["corrupt_header.npy", "header"],
        ),
        (
            "negative shape",
            args(&["--op", "sum", &p("bad_shape.npy")]),
            &["bad_shape.npy"],
        ),
        (
            "garbage file",
            args(&["--op", "sum", &p("garbage.npy")]),
            &["garbage.npy"],
        ),
        (
            "zero-byte file",
            args(&["--op", "sum", &p("zero_bytes.npy")]),
            &["zero_bytes.npy"],
        ),
        (
            "offsets decreasing",
            args(&["--op", "sum", "--offsets", &p("decreasing.npy"), &good]),
            &["decrease"],
        ),
        (
            "offsets beyond the end",
            args(&["--op", "sum", "--offsets", &p("beyond.npy"), &good]),
            &["last offset", "5"],
        ),
        (
            "offsets short of the end",
            args(&["--op", "sum", "--offsets", &p("short.npy"), &good]),
            &["last offset"],
        ),
        (
            "offsets first not 0",
            args(&["--op", "sum", "--offsets", &p("first.npy"), &good]),
            &["first offset"],
        ),
        (
            "negative offsets",
            args(&["--op", "sum", "--offsets", &p("negative.npy"), &good]),
            &["negative"],
        ),
        (
            "empty offsets",
            args(&["--op", "sum", "--offsets", &p("empty_offsets.npy"), &good]),
            &["empty"],
        ),
        (
            "float offsets",
            args(&["--op", "sum", "--offsets", &p("float_offsets.npy"), &good]),
            &["dtype", "f4"],
        ),
        (
            "2-D offsets",
            args(&["--op", "sum", "--offsets", &p("offsets_2d.npy"), &good]),
            &["offsets_2d.npy"],
        ),
        (
            "missing offsets file",
            args(&["--op", "sum", "--offsets", &p("none.npy"), &good]),
            &["none.npy"],
        ),
        (
            "unknown op",
            args(&["--op", "median", &good]),
            &["unknown op", "median"],
        ),
        (
            "unknown --nan",
            args(&["--op", "max", "--nan", "skip", &good]),
            &["NaN policy", "skip"],
        ),
        (
            "--partition-size 0",
            args(&["--op", "sum", "--partition-size", "0", &good]),
            &["--partition-size", "at least 1"],
        ),
        (
            "--partition-size not a number",
            args(&["--op", "sum", "--partition-size", "ten", &good]),
            &["ten"],
        ),
        (
            "--partition-size -1",
            args(&["--op", "sum", "--partition-size", "-1", &good]),
            &["-1"],
        ),
        (
            "--partition-size with --offsets",
            args(&[
                "--op",
                "sum",
                "--partition-size",
                "2",
                "--offsets",
                &p("short.npy"),
                &good,
            ]),
            &["--partition-size", "--offsets"],
        ),
        (
            "--axis with --partition-size",
            args(&[
                "--op",
                "sum",
                "--axis",
                "1",
                "--partition-size",
                "2",
                &p("2d.npy"),
            ]),
            &["--axis", "--partition-size"],
        ),
        (
            "--axis with --offsets",
            args(&[
                "--op",
                "sum",
                "--axis",
                "1",
                "--offsets",
                &p("short.npy"),
                &p("2d.npy"),
            ]),
            &["--axis", "--offsets"],
        ),
        (
            "unknown flag",
            args(&["--op", "sum", "--bogus", &good]),
            &["--bogus"],
        ),
        ("missing --op", args(&[&good]), &["--op"]),
        ("missing input", args(&["--op", "sum"]), &["INPUT"]),
    ];
    for (what, rest, needles) in &cases {
        let mut argv = vec!["reduce".to_string()];
        argv.extend(rest.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_bad_input(&argv, what, needles);
    }
    assert_bad_input(&["frobnicate"], "unknown subcommand", &["frobnicate"]);
    assert_bad_input(
        &["info", "--verbose"],
        "unknown flag to info",
        &["--verbose"],
    );
    // The good file really is good (the failures above are about the flags).
    let ok = run(&["reduce", "--op", "sum", "--json", &good]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}

/// A `.npy` header (version 1.0) with the given dict, then `data`.
fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_dict(shape: &str) -> String {
    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
}

/// Exit code 2, one stderr line containing every needle, nothing on stdout.
fn assert_one_line_error(out: &Output, what: &str, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
    assert_eq!(err.lines().count(), 1, "{what}: {err:?}");
    for n in needles {
        assert!(err.contains(n), "{what}: {err:?} should contain {n:?}");
    }
}

#[test]
fn dash_is_standard_input_and_every_path_checks_the_end_of_the_data() {
    let dir = scratch("stdin");
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25).collect();
    let small = dir.join("small.npy");
    write_npy(&small, &Array1::from(data.clone())).unwrap();
    let small_bytes = std::fs::read(&small).unwrap();
    let want = engine()
        .reduce_partitions(&data, Op::Sum, &Partitions::Whole, NanPolicy::Propagate)
        .unwrap();
    let args = ["reduce", "--op", "sum", "--json", "-"];
    check_json_output(
        &run_with_stdin(&args, small_bytes.clone()),
        &args,
        &want,
        "-",
    );

    // Junk after the data: a regular file, a small pipe (read in memory)
    // and a big pipe (streamed within a small budget) all refuse it.
    let mut junk = small_bytes.clone();
    junk.extend_from_slice(b"junk");
    let junk_file = dir.join("junk.npy");
    std::fs::write(&junk_file, &junk).unwrap();
    let out = run(&["reduce", "--op", "sum", junk_file.to_str().unwrap()]);
    assert_one_line_error(&out, "junk in a file", &["junk.npy", "corrupt"]);
    let out = run_with_stdin(&["reduce", "--op", "sum", "-"], junk);
    assert_one_line_error(&out, "junk in a small pipe", &["<stdin>", "corrupt"]);
    let big: Vec<f32> = (0..400_000).map(|i| (i % 97) as f32).collect();
    let big_file = dir.join("big.npy");
    write_npy(&big_file, &Array1::from(big)).unwrap();
    let mut big_junk = std::fs::read(&big_file).unwrap();
    big_junk.extend_from_slice(b"junk");
    let out = run_with_stdin(
        &["reduce", "--op", "sum", "--budget", "512K", "-"],
        big_junk,
    );
    assert_one_line_error(&out, "junk in a streamed pipe", &["<stdin>", "corrupt"]);
    // Cut short: the same, in memory and streamed.
    let cut = small_bytes[..small_bytes.len() - 6].to_vec();
    let out = run_with_stdin(&["reduce", "--op", "max", "-"], cut);
    assert_one_line_error(&out, "cut pipe", &["<stdin>", "truncated"]);
    let mut cut = std::fs::read(&big_file).unwrap();
    cut.truncate(cut.len() - 6);
    let out = run_with_stdin(&["reduce", "--op", "max", "--budget", "512K", "-"], cut);
    assert_one_line_error(&out, "cut streamed pipe", &["<stdin>", "truncated"]);
    // Raw data through `-`: a value cut short is named.
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = run_with_stdin(
        &["reduce", "--op", "count", "--raw", "--json", "-"],
        raw.clone(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["counts"][0], 1000);
    let out = run_with_stdin(
        &["reduce", "--op", "sum", "--raw", "-"],
        raw[..3999].to_vec(),
    );
    assert_one_line_error(&out, "raw pipe cut mid-value", &["<stdin>", "3999"]);

    // Offsets through `-`, the data from a file; both from `-` is refused.
    let offsets = dir.join("offsets.npy");
    write_npy(&offsets, &Array1::from(vec![0i64, 10, 1000])).unwrap();
    let args = [
        "reduce",
        "--op",
        "sum",
        "--offsets",
        "-",
        "--json",
        small.to_str().unwrap(),
    ];
    let want = engine()
        .reduce_partitions(
            &data,
            Op::Sum,
            &Partitions::Offsets(vec![0, 10, 1000]),
            NanPolicy::Propagate,
        )
        .unwrap();
    let out = run_with_stdin(&args, std::fs::read(&offsets).unwrap());
    check_json_output(&out, &args, &want, "offsets from -");
    let out = run_with_stdin(
        &["reduce", "--op", "sum", "--offsets", "-", "-"],
        Vec::new(),
    );
    assert_one_line_error(&out, "two stdins", &["standard input"]);
}

#[test]
fn headers_that_claim_more_than_the_input_holds_fail_before_allocating() {
    let dir = scratch("lying");
    let good = dir.join("good.npy");
    write_npy(&good, &Array1::from(vec![1.0f32; 8])).unwrap();
    let good = good.to_str().unwrap();
    // Offsets headers announcing 2^31..2^40 values over 16 bytes of data:
    // as a file and through a pipe.
    for (descr, n) in [("<i4", 1u64 << 31), ("<i8", 1 << 33), ("<i8", 1 << 40)] {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
        let bytes = npy_bytes(&dict, &[0; 16]);
        let path = dir.join(format!("off-{descr}-{n}.npy").replace('<', ""));
        std::fs::write(&path, &bytes).unwrap();
        let out = run(&[
            "reduce",
            "--op",
            "sum",
            "--offsets",
            path.to_str().unwrap(),
            good,
        ]);
        assert_one_line_error(&out, "lying offsets file", &["offsets: truncated"]);
        let out = run_with_stdin(&["reduce", "--op", "sum", "--offsets", "-", good], bytes);
        assert_one_line_error(
            &out,
            "lying offsets pipe",
            &["<stdin>", "offsets: truncated"],
        );
    }
    // A pipe whose header claims terabytes: 2-D with either axis, 1-D with
    // a budget large enough to take it in memory.
    let tb_2d = npy_bytes(&f32_dict("(1099511627776, 4)"), &[0; 16]);
    let out = run_with_stdin(
        &["reduce", "--op", "sum", "--axis", "0", "-"],
        tb_2d.clone(),
    );
    assert_one_line_error(&out, "2-D claim, axis 0", &["<stdin>", "truncated"]);
    let out = run_with_stdin(&["reduce", "--op", "sum", "--axis", "1", "-"], tb_2d);
    assert_one_line_error(&out, "2-D claim, axis 1", &["<stdin>", "--budget"]);
    let tb_1d = npy_bytes(&f32_dict("(1099511627776,)"), &[0; 16]);
    for budget in ["512M", "100T"] {
        let out = run_with_stdin(
            &["reduce", "--op", "sum", "--budget", budget, "-"],
            tb_1d.clone(),
        );
        assert_one_line_error(&out, "1-D claim", &["<stdin>", "truncated"]);
    }
    // Shapes whose data cannot exist.
    for shape in [
        "(9223372036854775807, 9223372036854775807)",
        "(4611686018427387904,)",
    ] {
        let path = dir.join("impossible.npy");
        std::fs::write(&path, npy_bytes(&f32_dict(shape), &[0; 16])).unwrap();
        let out = run(&[
            "reduce",
            "--op",
            "sum",
            "--axis",
            "1",
            path.to_str().unwrap(),
        ]);
        assert_one_line_error(&out, shape, &["too large to exist"]);
    }
}

#[test]
fn empty_arrays_with_huge_dimensions_answer_at_once() {
    let dir = scratch("huge-empty");
    let write = |name: &str, shape: &str| {
        let path = dir.join(name);
        std::fs::write(&path, npy_bytes(&f32_dict(shape), &[])).unwrap();
        path.to_str().unwrap().to_string()
    };
    let tall = write("tall.npy", "(1099511627776, 0)");
    let tall8 = write("tall8.npy", "(100000000, 0)");
    let wide = write("wide.npy", "(0, 1099511627776)");
    // No columns, or no rows: an empty result.
    for (path, axis) in [(&tall, "0"), (&tall8, "0"), (&wide, "1")] {
        let out = run(&["reduce", "--op", "mean", "--axis", axis, "--json", path]);
        assert!(
            out.status.success(),
            "{path} axis {axis}: {}",
            text(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["results"], serde_json::json!([]), "{path}");
        assert_eq!(r["counts"], serde_json::json!([]), "{path}");
    }
    // 2^40 (or 10^8) empty rows or columns: a result too large to hold
    // within the budget, said so.
    for (path, axis, n) in [
        (&tall, "1", "1099511627776"),
        (&tall8, "1", "100000000"),
        (&wide, "0", "1099511627776"),
    ] {
        let out = run(&["reduce", "--op", "sum", "--axis", axis, path]);
        assert_one_line_error(&out, path, &[n, "--budget"]);
    }
    // A few empty rows: the engine's answer for empty partitions.
    let rows = write("rows.npy", "(3, 0)");
    let cols = write("cols.npy", "(0, 2)");
    for op in Op::ALL {
        for (path, axis, lanes) in [(&rows, "1", 3usize), (&cols, "0", 2)] {
            let want = engine()
                .reduce_partitions(
                    &[],
                    op,
                    &Partitions::Offsets(vec![0; lanes + 1]),
                    NanPolicy::Propagate,
                )
                .unwrap();
            check_json(
                &["reduce", "--op", op_arg(op), "--axis", axis, "--json", path],
                &want,
                &format!("{op} over empty lanes"),
            );
        }
    }
}

#[test]
fn inputs_of_unknown_size_and_no_subcommand() {
    // /proc reports size 0 for files that hold data: they are read to
    // their end. The process reads its own command line, padded with
    // slashes in the path to a whole number of float32 values.
    let mut path = String::from("/proc/self/cmdline");
    let argv_len = |p: &str| {
        [BIN, "reduce", "--op", "count", "--raw", "--json", p]
            .iter()
            .map(|a| a.len() + 1)
            .sum::<usize>()
    };
    while argv_len(&path) % 4 != 0 {
        path.insert(5, '/');
    }
    let out = run(&["reduce", "--op", "count", "--raw", "--json", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["counts"][0].as_u64(), Some(argv_len(&path) as u64 / 4));
    // A FIFO: the same, through the pipe path.
    let dir = scratch("fifo");
    let fifo = dir.join("f");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let bytes: Vec<u8> = (0..100).flat_map(|i| (i as f32).to_le_bytes()).collect();
            std::fs::write(writer_path, bytes).unwrap();
        });
        let out = run(&[
            "reduce",
            "--op",
            "sum",
            "--raw",
            "--json",
            fifo.to_str().unwrap(),
        ]);
        writer.join().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["results"][0].as_f64(), Some(4950.0));
    }
    // An empty offsets file is named as empty, not as a read error.
    let dir2 = scratch("devnull");
    let good = dir2.join("good.npy");
    write_npy(&good, &Array1::from(vec![1.0f32; 4])).unwrap();
    let out = run(&[
        "reduce",
        "--op",
        "sum",
        "--offsets",
        "/dev/null",
        good.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "/dev/null offsets", &["/dev/null", "empty"]);
    // No subcommand: say so (exit 2), not the description.
    let out = run(&[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("subcommand"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn successful_commands_keep_stderr_empty() {
    // Mesa's device-select layer printed an XDG_RUNTIME_DIR error on
    // machines with no Wayland display running; nothing a user should read.
    let dir = scratch("quiet");
    let input = dir.join("d.npy");
    write_npy(&input, &Array1::from(vec![1.0f32, 2.0])).unwrap();
    for args in [
        vec!["info"],
        vec!["reduce", "--op", "sum", input.to_str().unwrap()],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NODEVICE_SELECT")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert_eq!(text(&out.stderr), "", "{args:?}");
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn assert_bad_input(argv: &[&str], what: &str, needles: &[&str]) {
    let out = run(argv);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit code for {argv:?}; stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: nothing on stdout, got {}",
        text(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: exactly one stderr line, got {stderr:?}"
    );
    assert!(
        lines[0].trim().len() > 10,
        "{what}: a real message: {stderr:?}"
    );
    // Each needle must appear (case-insensitive); `a|b` accepts either.
    for needle in needles {
        let line = lines[0].to_lowercase();
        assert!(
            needle.split('|').any(|n| line.contains(&n.to_lowercase())),
            "{what}: {:?} should name the problem ({needle:?})",
            lines[0]
        );
    }
}

/// `gpulanes mixed --json`: a short run in interleaved rounds completes every
/// request it sent, fails none, and reports the two ratios and the merged
/// per-phase figures; bad flags exit 2 naming the flag.
#[test]
fn mixed_json_reports_merged_rounds_and_rejects_bad_flags() {
    let out = run(&[
        "mixed",
        "--json",
        "--duration",
        "0.6",
        "--rounds",
        "2",
        "--rt-rate",
        "200",
        "--rt-size",
        "1000",
        "--batch-size",
        "300000",
        "--rt-in-flight",
        "1",
        "--lead-us",
        "150",
        "--cold-starts",
        "2",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "mixed failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["config"]["rounds"], 2);
    assert_eq!(r["batch_results_identical"], true);
    for (phase, rt, batch) in [
        ("realtime_alone", true, false),
        ("batch_alone", false, true),
        ("together", true, true),
    ] {
        let p = &r[phase];
        if rt {
            let lane = &p["realtime"];
            let sent = p["realtime_sent"].as_u64().expect("realtime_sent");
            // 0.6 s of each phase (two rounds of 0.3 s) at 200 Hz: 120
            // requests are due, none after a round's slice ends (a late
            // sleeper may send fewer, never more), except that under batch
            // load the stream goes on until the last batch job is done.
            assert!(sent >= 40, "{phase}: only {sent} requests sent");
            if !batch {
                assert!(sent <= 120, "{phase}: {sent} requests sent, 120 were due");
            }
            assert_eq!(lane["completed"].as_u64(), Some(sent), "{phase}: {lane}");
            assert_eq!(lane["failed"], 0, "{phase}");
            assert!(lane["latency"]["count"].as_u64() == Some(sent), "{phase}");
            assert!(lane["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{phase}");
            assert!(lane["submits"].as_u64().unwrap() <= sent, "{phase}");
        } else {
            assert!(p["realtime"].is_null(), "{phase}: {}", p["realtime"]);
        }
        if batch {
            let lane = &p["batch"];
            assert!(lane["completed"].as_u64().unwrap() >= 2, "{phase}: {lane}");
            assert_eq!(lane["failed"], 0, "{phase}");
            assert!(p["batch_bytes_per_s"].as_f64().unwrap() > 0.0, "{phase}");
        } else {
            assert!(p["batch"].is_null(), "{phase}");
        }
    }
    for key in ["rt_p99_ratio", "batch_throughput_ratio", "quantum_us"] {
        let v = r[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key} = {}", r[key]);
    }
    assert_eq!(r["submit_lead_us"].as_f64(), Some(150.0));
    // The cold start: two fresh schedulers, at least one request during
    // each one's first batch job, every one completed.
    let cold = &r["cold_start"];
    assert_eq!(cold["schedulers"], 2, "{cold}");
    let sent = cold["realtime_sent"].as_u64().expect("realtime_sent");
    assert!(sent >= 2, "{cold}");
    assert_eq!(cold["realtime"]["completed"].as_u64(), Some(sent), "{cold}");
    assert_eq!(cold["realtime"]["failed"], 0, "{cold}");
    let ratio = r["cold_rt_p99_ratio"].as_f64().unwrap_or(f64::NAN);
    assert!(
        ratio.is_finite() && ratio > 0.0,
        "cold_rt_p99_ratio = {ratio}"
    );
    let rounds = r["per_round"].as_array().expect("per_round");
    assert_eq!(rounds.len(), 2, "{}", r["per_round"]);
    for round in rounds {
        for key in ["rt_p99_ratio", "batch_throughput_ratio"] {
            let v = round[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "per round {key} = {}", round[key]);
        }
    }
    // At a rate far below one request per phase, batch work under load
    // still runs the whole phase (it used to stop once the next request
    // was due after the phase: at once, with no batch job done). Values of
    // another dtype run the same way.
    let out = run(&[
        "mixed",
        "--json",
        "--duration",
        "0.5",
        "--rounds",
        "1",
        "--rt-rate",
        "0.001",
        "--dtype",
        "int64",
        "--rt-size",
        "1000",
        "--batch-size",
        "300000",
        "--cold-starts",
        "0",
    ]);
    assert!(out.status.success(), "mixed failed: {}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["config"]["dtype"], "int64");
    assert_eq!(r["batch_results_identical"], true);
    assert_eq!(r["together"]["realtime"]["failed"], 0);
    assert!(r["cold_start"].is_null(), "{}", r["cold_start"]);
    assert_eq!(r["together"]["realtime_sent"], 1);
    let jobs = r["together"]["batch"]["completed"].as_u64().unwrap_or(0);
    assert!(jobs > 2, "only {jobs} batch jobs under load in 0.5 s");
    assert!(r["batch_throughput_ratio"].as_f64().unwrap_or(0.0) > 0.0);

    // Group-by batch jobs: keyed results checked bit for bit against the
    // engine's own reduce_by_key, their bytes counting keys and values.
    let out = run(&[
        "mixed",
        "--json",
        "--duration",
        "0.5",
        "--rounds",
        "1",
        "--batch-groups",
        "100",
        "--batch-size",
        "200000",
        "--cold-starts",
        "1",
    ]);
    assert!(out.status.success(), "mixed failed: {}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["config"]["batch_groups"], 100);
    assert_eq!(r["batch_results_identical"], true);
    assert_eq!(r["together"]["realtime"]["failed"], 0);
    assert_eq!(r["together"]["batch"]["failed"], 0);
    let jobs = r["together"]["batch"]["completed"].as_u64().unwrap_or(0);
    assert!(jobs >= 2, "only {jobs} group-by jobs under load");
    let cold = &r["trace"][0];
    assert_eq!(cold["phase"], "cold start", "{cold}");
    assert_eq!(
        cold["batch_job_bytes"].as_u64(),
        Some(200_000 * 8),
        "{cold}"
    );

    assert_bad_input(
        &["mixed", "--quantum-us", "100", "--lead-us", "200"],
        "mixed",
        &["--lead-us", "--quantum-us"],
    );

    for (flag, value) in [
        ("--rounds", "0"),
        ("--rt-in-flight", "0"),
        ("--batch-in-flight", "0"),
        ("--duration", "-1"),
        ("--duration", "1e20"),
        ("--rt-rate", "0"),
        ("--rt-rate", "1e-6"),
        ("--dtype", "complex64"),
        ("--batch-groups", "0"),
        ("--batch-groups", "4294967296"),
    ] {
        let arg = format!("{flag}={value}");
        assert_bad_input(&["mixed", &arg], "mixed", &[flag]);
    }
}

/// Every dtype through `gpulanes reduce`: `.npy` files of float64, int32,
/// uint32 and int64 and raw files with `--dtype`, in memory and streamed
/// within a small budget, give the library's results in NumPy's result
/// types (integers as JSON integers, floats that parse back to their bits).
#[test]
fn every_dtype_through_the_cli() {
    use gpulanes::{Engine, Scalar};
    let dir = scratch("dtypes");
    let engine = Engine::new().unwrap();
    let n = 300_001usize;
    let f64s: Vec<f64> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f64 * 1e-3 * if i % 3 == 0 { -1e10 } else { 1.0 })
        .collect();
    let i64s: Vec<i64> = (0..n as i64)
        .map(|i| (i * 1_000_003) % (1 << 40) - (1 << 39))
        .collect();
    let i32s: Vec<i32> = (0..n as i32).map(|i| i.wrapping_mul(48_271)).collect();
    let u32s: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let f64_path = dir.join("x.f64.npy");
    write_npy(&f64_path, &Array1::from(f64s.clone())).unwrap();
    let raw_path = dir.join("x.f64.raw");
    std::fs::write(&raw_path, bytemuck::cast_slice::<f64, u8>(&f64s)).unwrap();
    let i64_path = dir.join("x.i64.npy");
    write_npy(&i64_path, &Array1::from(i64s.clone())).unwrap();
    let i32_path = dir.join("x.i32.npy");
    write_npy(&i32_path, &Array1::from(i32s.clone())).unwrap();
    let u32_path = dir.join("x.u32.npy");
    write_npy(&u32_path, &Array1::from(u32s.clone())).unwrap();
    let show = |v: &Option<Scalar>| match v {
        None => "null".to_string(),
        Some(Scalar::F64(x)) => format!("{x:?}"),
        Some(Scalar::I64(x)) => x.to_string(),
        Some(Scalar::I32(x)) => x.to_string(),
        Some(Scalar::U32(x)) => x.to_string(),
        Some(Scalar::F32(x)) => format!("{x:?}"),
    };
    for op in [Op::Sum, Op::Mean, Op::Max, Op::Min] {
        let whole = gpulanes::Partitions::Whole;
        let cases: Vec<(Vec<String>, Vec<Option<Scalar>>)> = vec![
            (
                vec![f64_path.to_str().unwrap().into()],
                engine
                    .reduce_slice(&f64s, op, &whole, NanPolicy::Propagate)
                    .unwrap()
                    .values,
            ),
            (
                vec![
                    "--raw".into(),
                    "--dtype".into(),
                    "float64".into(),
                    raw_path.to_str().unwrap().into(),
                ],
                engine
                    .reduce_slice(&f64s, op, &whole, NanPolicy::Propagate)
                    .unwrap()
                    .values,
            ),
            (
                vec![
                    "--budget".into(),
                    "512K".into(),
                    f64_path.to_str().unwrap().into(),
                ],
                engine
                    .reduce_slice(&f64s, op, &whole, NanPolicy::Propagate)
                    .unwrap()
                    .values,
            ),
            (
                vec![
                    "--budget".into(),
                    "512K".into(),
                    i64_path.to_str().unwrap().into(),
                ],
                engine
                    .reduce_slice(&i64s, op, &whole, NanPolicy::Propagate)
                    .unwrap()
                    .values,
            ),
            (
                vec![i32_path.to_str().unwrap().into()],
                engine
                    .reduce_slice(&i32s, op, &whole, NanPolicy::Propagate)
                    .unwrap()
                    .values,
            ),
            (
                vec![u32_path.to_str().unwrap().into()],
                engine
                    .reduce_slice(&u32s, op, &whole, NanPolicy::Propagate)
                    .unwrap()
                    .values,
            ),
        ];
        for (extra, want) in cases {
            let mut argv = vec![
                "reduce".to_string(),
                "--op".into(),
                op.name().into(),
                "--json".into(),
            ];
            argv.extend(extra);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = run(&argv);
            assert!(out.status.success(), "{argv:?}: {}", text(&out.stderr));
            let got = raw_results(&text(&out.stdout));
            let want: Vec<String> = want.iter().map(show).collect();
            assert_eq!(got, want, "{argv:?}");
        }
    }
    // Integer sums are JSON integers, exact beyond 2^53.
    let out = run(&[
        "reduce",
        "--op",
        "sum",
        "--json",
        i64_path.to_str().unwrap(),
    ]);
    let exact: i128 = i64s.iter().map(|&x| x as i128).sum();
    assert_eq!(raw_results(&text(&out.stdout)), [exact.to_string()]);
}

#[test]
fn group_by_keys_through_the_cli() {
    let dir = scratch("keys");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let keys: Vec<i64> = vec![30, -1, 30, 7, -1, 30, i64::MAX];
    let values: Vec<f64> = vec![0.1, 2.0, f64::NAN, 4.0, -0.0, 0.2, 1e300];
    write_npy(p("k.npy"), &Array1::from(keys.clone())).unwrap();
    write_npy(p("v.npy"), &Array1::from(values.clone())).unwrap();
    let (k, v) = (p("k.npy"), p("v.npy"));
    let out = run(&[
        "reduce",
        "--op",
        "sum,mean,max,count",
        "--nan",
        "ignore",
        "--keys",
        &k,
        "--json",
        &v,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_str(&text(&out.stdout)).expect("one JSON object");
    let want = common::engine()
        .reduce_by_key(
            &keys,
            &values,
            &[Op::Sum, Op::Mean, Op::Max, Op::Count],
            NanPolicy::Ignore,
        )
        .unwrap();
    assert_eq!(
        got["ops"],
        serde_json::json!(["sum", "mean", "max", "count"])
    );
    assert_eq!(got["keys"], serde_json::json!([-1, 7, 30, i64::MAX]));
    assert_eq!(got["counts"], serde_json::json!([2, 1, 2, 1]));
    for r in &want.reductions {
        let column = got["results"][r.op.name()].as_array().unwrap();
        for (i, (cell, value)) in column.iter().zip(&r.values).enumerate() {
            match (r.op, value) {
                (Op::Count, _) => assert_eq!(cell.as_u64(), Some(r.counts[i])),
                (_, Some(gpulanes::Scalar::F64(x))) => {
                    assert_eq!(cell.as_f64().map(f64::to_bits), Some(x.to_bits()), "{r:?}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // The table names every op and key, and closes each line with the
    // key's count unless `count` has its own column.
    let out = run(&["reduce", "--op", "sum,min", "--keys", &k, &v]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("sum") && table.contains("min") && table.contains("9223372036854775807")
    );
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["key", "sum", "min", "count"]);
    let out = run(&["reduce", "--op", "count,max", "--keys", &k, &v]);
    let table = text(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["key", "count", "max"]);
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.split_whitespace().count() == 3),
        "{table}"
    );
    // Several ops without keys are named as such.
    assert_one_line_error(
        &run(&["reduce", "--op", "sum,mean", &v]),
        "several ops without keys",
        &["--keys", "sum,mean"],
    );
    let one = run(&["reduce", "--op", "sum,", &v]);
    assert!(
        !text(&one.stderr).contains("several"),
        "{}",
        text(&one.stderr)
    );
    let err = run(&["reduce", "--op", "sum", "--keys", &p("i8.npy"), &v]);
    assert!(
        !text(&err.stderr).contains("supported:"),
        "{}",
        text(&err.stderr)
    );
    // Bad keys exit 2 naming the problem.
    write_npy(p("short.npy"), &Array1::from(vec![1i32, 2])).unwrap();
    write_npy(p("float.npy"), &Array1::from(vec![1.0f32; 7])).unwrap();
    write_npy(p("2d.npy"), &Array2::<i32>::zeros((7, 1))).unwrap();
    write_npy(p("0d.npy"), &ndarray::arr0(7i32)).unwrap();
    write_npy(p("3d.npy"), &Array3::<i32>::zeros((7, 1, 1))).unwrap();
    write_npy(p("i8.npy"), &Array1::from(vec![1i8; 7])).unwrap();
    let cases: [(&[&str], &str, &[&str]); 9] = [
        (
            &["--keys", &p("i8.npy"), &v],
            "int8 keys",
            &[
                "int32, uint32 or int64): ",
                "i8.npy: unsupported dtype \"|i1\"",
            ],
        ),
        (
            &["--keys", &p("short.npy"), &v],
            "short keys",
            &["2 keys", "7"],
        ),
        (
            &["--keys", &p("float.npy"), &v],
            "float keys",
            &["int32, uint32 or int64", "float32"],
        ),
        (
            &["--keys", &p("2d.npy"), &v],
            "2-D keys",
            &["1-D", "[7, 1]"],
        ),
        (
            &["--keys", &p("0d.npy"), &v],
            "0-D keys",
            &["--keys (a 1-D .npy array)", "0d.npy", "0-D"],
        ),
        (
            &["--keys", &p("3d.npy"), &v],
            "3-D keys",
            &["--keys (a 1-D .npy array)", "3d.npy", "[7, 1, 1]"],
        ),
        (
            &["--keys", &k, "--partition-size", "2", &v],
            "keys and partitions",
            &["--keys"],
        ),
        (
            &["--keys", &k, "--op", "sum,median", &v],
            "unknown op",
            &["median"],
        ),
        (
            &["--keys", &k, "--op", "sum,max,sum", &v],
            "an op twice (the JSON keys results by op)",
            &["sum twice"],
        ),
    ];
    for (extra, what, needles) in cases {
        let mut argv = vec!["reduce"];
        if !extra.contains(&"--op") {
            argv.extend(["--op", "sum"]);
        }
        argv.extend(extra.iter().copied());
        assert_one_line_error(&run(&argv), what, needles);
    }
}

#[test]
fn group_by_streams_inputs_over_the_budget_with_the_same_bits() {
    let dir = scratch("keys-stream");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut rng = SplitMix::new(5);
    let n = 150_000;
    let keys: Vec<i64> = (0..n).map(|_| rng.below(3000) as i64 * 7 - 9000).collect();
    let values: Vec<f64> = (0..n)
        .map(|_| rng.range(-1e6, 1e6) * if rng.below(50) == 0 { 1e-300 } else { 1.0 })
        .collect();
    write_npy(p("k.npy"), &Array1::from(keys)).unwrap();
    write_npy(p("v.npy"), &Array1::from(values)).unwrap();
    let (k, v) = (p("k.npy"), p("v.npy"));
    let args = |budget: &str| {
        run(&[
            "reduce",
            "--op",
            "sum,mean,min,max,count",
            "--keys",
            &k,
            "--json",
            "--budget",
            budget,
            &v,
        ])
    };
    // 2.4 MB of rows: whole within 1G, streamed in chunks within 512K.
    let (whole, streamed) = (args("1G"), args("512K"));
    assert!(whole.status.success(), "{}", text(&whole.stderr));
    assert!(streamed.status.success(), "{}", text(&streamed.stderr));
    let (a, b): (Value, Value) = (
        serde_json::from_str(&text(&whole.stdout)).unwrap(),
        serde_json::from_str(&text(&streamed.stdout)).unwrap(),
    );
    assert_eq!(a["keys"].as_array().unwrap().len(), 3000);
    for field in ["keys", "results", "counts"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    // A values file cut short is named, whether read whole or streamed.
    let bytes = std::fs::read(&v).unwrap();
    std::fs::write(p("short.npy"), &bytes[..bytes.len() - 12]).unwrap();
    for budget in ["1G", "512K"] {
        let out = run(&[
            "reduce",
            "--op",
            "sum",
            "--keys",
            &k,
            "--budget",
            budget,
            &p("short.npy"),
        ]);
        assert_one_line_error(&out, "short values", &["short.npy"]);
    }
}

#[test]
fn fortran_order_files_reduce_along_their_own_axes() {
    // A column-major file of an array reduces as the row-major file of the
    // same array: --axis names the file's axes, whatever its layout.
    let dir = scratch("fortran");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut rng = SplitMix::new(41);
    let (rows, cols) = (37usize, 5usize);
    let logical = Array2::from_shape_fn((rows, cols), |_| rng.range(-1e3, 1e3) as f32);
    write_npy(p("c.npy"), &logical).unwrap();
    // `as_standard_layout` of the transpose, transposed back: the same
    // array held column-major, which write_npy saves with
    // fortran_order True.
    let column_major = logical
        .t()
        .as_standard_layout()
        .into_owned()
        .reversed_axes();
    assert!(!column_major.is_standard_layout());
    write_npy(p("f.npy"), &column_major).unwrap();
    let header = std::fs::read(p("f.npy")).unwrap();
    assert!(String::from_utf8_lossy(&header[..128]).contains("'fortran_order': True"));
    for axis in ["0", "1"] {
        for op in ["sum", "max"] {
            let c = run(&["reduce", "--op", op, "--axis", axis, "--json", &p("c.npy")]);
            let f = run(&["reduce", "--op", op, "--axis", axis, "--json", &p("f.npy")]);
            assert!(
                c.status.success() && f.status.success(),
                "{}",
                text(&f.stderr)
            );
            let parse = |o: &Output| serde_json::from_slice::<Value>(&o.stdout).unwrap();
            let (c, f) = (parse(&c), parse(&f));
            assert_eq!(c["results"], f["results"], "axis {axis} {op}");
            let want = if axis == "0" { cols } else { rows };
            assert_eq!(f["results"].as_array().unwrap().len(), want);
        }
    }
    let err = run(&["reduce", "--op", "sum", &p("f.npy")]);
    assert!(
        text(&err.stderr).contains("[37, 5]"),
        "{}",
        text(&err.stderr)
    );
    // As keys, a 2-D file is named by the shape it gives.
    write_npy(p("fk.npy"), &Array2::<i32>::zeros((3, 2)).reversed_axes()).unwrap();
    let err = run(&["reduce", "--op", "sum", "--keys", &p("fk.npy"), &p("c.npy")]);
    assert!(
        text(&err.stderr).contains("found shape [2, 3]"),
        "{}",
        text(&err.stderr)
    );
}
