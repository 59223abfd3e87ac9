//! `gpulanes bench` run as a real process with tiny sizes: the JSON report
//! holds every figure the benchmark promises (adapter, floors, device and
//! host rows for every dtype, op, size and partitioning, CPU baselines,
//! checks), the table goes to stdout, and bad arguments exit with code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gpulanes");

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run gpulanes")
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

fn positive(v: &Value, path: &str) {
    let x = num(v, path);
    assert!(x > 0.0 && x.is_finite(), "{path} = {x}");
}

#[test]
fn quick_bench_json_has_every_field() {
    let dir = scratch("quick");
    let json = dir.join("out.json");
    let out = run(&[
        "bench",
        "--quick",
        "--sizes",
        "4K,64K",
        "--partitions",
        "64",
        "--seed",
        "7",
        "--no-progress",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    // Every row's results pass their check (the bench's own correctness
    // check against the exact reference), and the exit code says so.
    let all_pass = r["all_checks_pass"].as_bool().expect("all_checks_pass");
    let failures = r["failures"].as_array().expect("failures");
    assert!(all_pass, "bench checks failed: {}", r["failures"]);
    assert!(failures.is_empty(), "{}", r["failures"]);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // Identity: what ran, where, when; software adapters are flagged.
    assert_eq!(r["schema"], "gpulanes-bench/1");
    for key in ["gpulanes_version", "date_utc", "note"] {
        assert!(r[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    assert!(r["command"].as_array().is_some_and(|c| !c.is_empty()));
    let software = r["software"].as_bool().expect("software");
    assert_eq!(r["adapter"]["software"].as_bool(), Some(software));
    for key in ["name", "backend", "device_type", "driver"] {
        assert!(r["adapter"][key].is_string(), "adapter.{key}");
    }
    assert!(r["adapter"]["timestamps"].is_boolean());
    assert_eq!(stdout.contains("SOFTWARE ADAPTER"), software, "{stdout}");
    positive(&r, "host.threads");
    assert!(["timestamps", "wall"].contains(&r["timer"].as_str().unwrap()));
    assert_eq!(r["config"]["sizes"], serde_json::json!([4096, 65536]));
    assert_eq!(
        r["config"]["ops"],
        serde_json::json!(["sum", "mean", "max"])
    );
    // float32 and float64 by default.
    assert_eq!(
        r["config"]["dtypes"],
        serde_json::json!(["float32", "float64"])
    );
    assert_eq!(r["config"]["seed"], 7);

    // Floors.
    for floor in ["copy", "upload"] {
        positive(&r, &format!("floors.{floor}.gbps"));
        positive(&r, &format!("floors.{floor}.bytes"));
        positive(&r, &format!("floors.{floor}.time.median_ns"));
    }
    assert_eq!(
        num(&r, "floors.copy.bytes_moved"),
        2.0 * num(&r, "floors.copy.bytes"),
        "a copy counts bytes read + written"
    );
    positive(&r, "floors.shader_copy.gbps");
    assert!(r["floors"]["shader_copy_error"].is_null());
    positive(&r, "floors.bandwidth.gbps");
    let best = num(&r, "floors.copy.gbps").max(num(&r, "floors.shader_copy.gbps"));
    assert_eq!(num(&r, "floors.bandwidth.gbps"), best);
    for rt in ["empty_submit", "readback_4_bytes"] {
        positive(&r, &format!("floors.round_trip.{rt}.median_ns"));
        positive(&r, &format!("floors.round_trip.{rt}.p99_ns"));
    }

    // One device and one host row per dtype, op, size and partitioning,
    // and nothing else.
    let rows = r["results"].as_array().expect("results");
    assert_eq!(rows.len(), 2 * 3 * 2 * 2 * 2, "rows");
    for (dtype, value_bytes) in [("float32", 4u64), ("float64", 8)] {
        for op in ["sum", "mean", "max"] {
            for bytes in [4096u64, 65536] {
                for part in [Value::Null, Value::from(64)] {
                    for source in ["device", "host"] {
                        let matching: Vec<&Value> = rows
                            .iter()
                            .filter(|x| {
                                x["dtype"] == dtype
                                    && x["op"] == op
                                    && x["bytes"] == bytes
                                    && x["partition_size"] == part
                                    && x["source"] == source
                            })
                            .collect();
                        let what = format!("{dtype} {op} {bytes} {part} {source}");
                        assert_eq!(matching.len(), 1, "{what}");
                        let row = matching[0];
                        // GB/s counts input bytes: elements x the value's size.
                        assert_eq!(num(row, "elements") as u64, bytes / value_bytes, "{what}");
                        let gbps_from_time = bytes as f64 / num(row, "time.median_ns");
                        assert!(
                            (num(row, "gbps") - gbps_from_time).abs() <= 1e-9 * gbps_from_time,
                            "{what}: gbps"
                        );
                        assert!(row["error"].is_null(), "{what}: {}", row["error"]);
                        for f in [
                            "gbps",
                            "ratio_to_copy",
                            "ratio_to_upload",
                            "time.median_ns",
                            "wall.median_ns",
                        ] {
                            positive(row, f);
                        }
                        assert!(num(row, "time.runs") >= 3.0, "{what}: runs");
                        assert!(num(row, "inputs") >= 2.0, "{what}: rotated inputs");
                        positive(row, "ratio_to_buffer_copy");
                        let per_input = row["per_input_median_ns"]
                            .as_array()
                            .expect("per_input_median_ns");
                        assert_eq!(per_input.len() as f64, num(row, "inputs"), "{what}");
                        // Every input counted was timed.
                        assert!(
                            per_input.iter().all(|t| t.as_f64().unwrap() > 0.0),
                            "{what}: {per_input:?}"
                        );
                        let expected_parts = if part.is_null() {
                            1
                        } else {
                            bytes / value_bytes / 64
                        };
                        assert_eq!(row["partitions"], expected_parts, "{what}");
                        let c = &row["check"];
                        assert!(
                            c["pass"].is_boolean() && c["timed_runs_match"].is_boolean(),
                            "{what}"
                        );
                        assert!(num(c, "inputs_checked") >= 1.0, "{what}");
                        assert!(c["rule"].is_string() && c["max_ulps"].is_u64(), "{what}");
                        assert!(c["max_err_over_tol"].is_number(), "{what}");
                        if source == "host" {
                            assert_eq!(
                                row["timer"], "wall",
                                "{what}: host rows include the upload"
                            );
                        }
                        assert_eq!(c["pass"], true, "{what}");
                        // Sums are exact: the reference's bits.
                        assert_eq!(c["max_ulps"], 0, "{what}");
                        assert_eq!(num(c, "max_err_over_tol"), 0.0, "{what}");
                    }
                    // CPU baselines on the same data.
                    for implementation in ["loop_1t", "loop_threads", "ndarray_1t"] {
                        let row = r["cpu"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|x| {
                                x["dtype"] == dtype
                                    && x["op"] == op
                                    && x["bytes"] == bytes
                                    && x["partition_size"] == part
                                    && x["implementation"] == implementation
                            })
                            .unwrap_or_else(|| {
                                panic!("no cpu row {dtype} {op} {bytes} {part} {implementation}")
                            });
                        positive(row, "gbps");
                        positive(row, "time.median_ns");
                        positive(row, "threads");
                        assert!(
                            num(row, "rel_err") < 1e-3,
                            "{dtype} {op} {bytes} {part} {implementation}"
                        );
                    }
                }
            }
        }
    }
    assert!(stdout.contains("dev GB/s"), "table on stdout:\n{stdout}");
    // The table has a row per dtype.
    for dtype in ["float32", "float64"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(dtype) && l.contains("sum") && l.contains("ok 0ulp")),
            "no {dtype} sum row in the table:\n{stdout}"
        );
    }
}

#[test]
fn dtypes_are_chosen_and_every_one_is_checked() {
    let dir = scratch("dtypes");
    let json = dir.join("out.json");
    let out = run(&[
        "bench",
        "--quick",
        "--dtype",
        "int32,u4,<i8,f8,int32",
        "--sizes",
        "64K",
        "--ops",
        "sum,max,count",
        "--partitions",
        "64",
        "--no-host",
        "--seed",
        "3",
        "--no-progress",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["all_checks_pass"], true, "{}", r["failures"]);
    // In the order given, each once.
    let dtypes = ["int32", "uint32", "int64", "float64"];
    assert_eq!(r["config"]["dtypes"], serde_json::json!(dtypes));
    let rows = r["results"].as_array().unwrap();
    assert_eq!(rows.len(), dtypes.len() * 3 * 2, "device rows only");
    for (i, row) in rows.iter().enumerate() {
        // Rows come dtype by dtype.
        assert_eq!(row["dtype"], dtypes[i / 6], "row {i}");
        assert_eq!(row["source"], "device");
        assert_eq!(row["check"]["pass"], true, "row {i}");
        assert_eq!(row["check"]["max_ulps"], 0, "row {i}");
        let size = if ["int64", "float64"].contains(&row["dtype"].as_str().unwrap()) {
            8
        } else {
            4
        };
        assert_eq!(num(row, "elements"), (65536 / size) as f64, "row {i}");
        let parts = if row["partition_size"].is_null() {
            1
        } else {
            65536 / size / 64
        };
        assert_eq!(row["partitions"], parts, "row {i}");
        positive(row, "gbps");
    }
    // CPU baselines exist for float64 only of these.
    let cpu = r["cpu"].as_array().unwrap();
    assert_eq!(cpu.len(), 3 * 2 * 3);
    assert!(cpu.iter().all(|c| c["dtype"] == "float64"));
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["bench", "--sizes", "3"][..],
        &["bench", "--sizes", "4X"],
        &["bench", "--ops", "median"],
        &["bench", "--partitions", "0"],
        &["bench", "--dtype", "float16"],
        &["bench", "--dtype", ""],
        // float64 values are 8 bytes.
        &["bench", "--dtype", "float64", "--sizes", "4100"],
        // About a petabyte: larger than any adapter's buffer limit.
        &["bench", "--copy-size", "1000000G"],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("gpulanes:"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
