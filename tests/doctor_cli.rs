//! `gpulanes doctor` run as a real process with tiny sizes: the JSON report
//! holds every run's time for the floors, the isolated and back-to-back
//! runs of every variant, dtype, size and op, and the workgroup sweep, every
//! result checked against the CPU's exact one; bad arguments exit with
//! code 2.

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gpulanes");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run gpulanes")
}

fn len(v: &Value) -> usize {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .len()
}

#[test]
fn doctor_json_has_every_run() {
    let out = run(&[
        "doctor",
        "--sizes",
        "64K,256K",
        "--dtype",
        "float32,float64",
        "--ops",
        "sum,max",
        "--runs",
        "2",
        "--back-to-back",
        "3",
        "--warmup-ms",
        "1",
        "--units",
        "2,4",
        "--variants",
        "default,bare,workgroup",
        "--json",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["schema"], "gpulanes-doctor/1");
    let timestamps = r["timer"] == "timestamps";
    assert_eq!(len(&r["floors"]), 4);
    for f in r["floors"].as_array().unwrap() {
        assert_eq!(len(&f["runs_ns"]), 2, "{f}");
        assert!(f["gbps"].as_f64().unwrap() > 0.0, "{f}");
    }
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3 * 2 * 2 * 2);
    for c in cases {
        assert_eq!(c["check"], "ok", "{c}");
        assert_eq!(len(&c["isolated_wall_ns"]), 2, "{c}");
        let per_run = if timestamps { 2 } else { 0 };
        assert_eq!(len(&c["isolated_gpu_ns"]), per_run, "{c}");
        assert_eq!(
            len(&c["back_to_back_gpu_ns"]),
            if timestamps { 3 } else { 0 },
            "{c}"
        );
        assert!(c["isolated_gbps"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["back_to_back_gbps"].as_f64().unwrap() > 0.0, "{c}");
    }
    let kernels: Vec<&str> = cases
        .iter()
        .map(|c| c["kernels"].as_str().unwrap())
        .collect();
    assert!(kernels.contains(&"workgroup"));
    let sweep = r["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 3 * 2);
    for p in sweep {
        assert_eq!(len(&p["gpu_ns"]), 2, "{p}");
        assert_eq!(
            p["bytes"].as_u64().unwrap(),
            p["units"].as_u64().unwrap() * 8192 * 4
        );
    }
}

#[test]
fn doctor_bad_arguments_exit_2_with_one_line() {
    for args in [
        &["doctor", "--variants", "fastest"][..],
        &["doctor", "--variants", ""],
        &["doctor", "--runs", "0"],
        &["doctor", "--dtype", ""],
        &["doctor", "--ops", "median"],
        &["doctor", "--units", "many"],
        // float64 values are 8 bytes.
        &["doctor", "--dtype", "float64", "--sizes", "4100"],
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
