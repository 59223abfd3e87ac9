//! `gpulanes bench --plot` and `gpulanes mixed --plot` run as real processes
//! with tiny settings: every chart is written, parses as XML (SVG), names
//! every series the JSON report has, and draws as many points as the report
//! holds for the series that can be told apart by their colour.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gpulanes");

/// The charts' colours of the series counted below.
const DEVICE: &str = "#0072B2";
const HOST: &str = "#56B4E9";
const COLD: &str = "#D55E00";
const ALONE: &str = "#0072B2";
const TOGETHER: &str = "#CC79A7";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("plots-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run gpulanes")
}

/// What a chart holds: its text, and each polyline's stroke colour and
/// number of points.
struct Svg {
    text: Vec<String>,
    lines: Vec<(String, usize)>,
}

impl Svg {
    /// Parses `path` (panicking unless it is well-formed XML whose root is
    /// an `<svg>` element).
    fn read(path: &Path) -> Svg {
        let source =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc = roxmltree::Document::parse(&source)
            .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let mut text = Vec::new();
        let mut lines = Vec::new();
        for n in doc.descendants() {
            match n.tag_name().name() {
                "text" => text.push(n.text().unwrap_or("").trim().to_string()),
                "polyline" => {
                    let points = n.attribute("points").unwrap_or("");
                    lines.push((
                        n.attribute("stroke").unwrap_or("").to_uppercase(),
                        points.split_whitespace().count(),
                    ));
                }
                _ => {}
            }
        }
        Svg { text, lines }
    }

    fn has_text(&self, want: &str) -> bool {
        self.text.iter().any(|t| t.contains(want))
    }

    fn assert_text(&self, want: &str, what: &str) {
        assert!(
            self.has_text(want),
            "{what}: no text {want:?} in {:?}",
            self.text
        );
    }

    /// Points of every polyline stroked in `colour`.
    fn points(&self, colour: &str) -> Vec<usize> {
        self.lines
            .iter()
            .filter(|(c, _)| c == colour)
            .map(|(_, n)| *n)
            .collect()
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string"))
        .collect()
}

#[test]
fn bench_plot_draws_every_series_of_the_report() {
    let dir = scratch("bench");
    let json = dir.join("out.json");
    let charts = dir.join("charts");
    let out = run(&[
        "bench",
        "--quick",
        "--sizes",
        "4K,16K,64K",
        "--ops",
        "sum,max",
        "--partitions",
        "64",
        "--group-by-rows",
        "64K",
        "--seed",
        "3",
        "--no-progress",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        charts.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let adapter = r["adapter"]["name"].as_str().unwrap();
    let date = &r["date_utc"].as_str().unwrap()[..10];
    let results = r["results"].as_array().unwrap();
    let cpu = r["cpu"].as_array().unwrap();
    assert!(!results.is_empty() && !cpu.is_empty());

    for dtype in strs(&r["config"]["dtypes"]) {
        for op in strs(&r["config"]["ops"]) {
            let path = charts.join(format!("throughput-{dtype}-{op}.svg"));
            let svg = Svg::read(&path);
            let what = path.display().to_string();
            svg.assert_text(adapter, &what);
            svg.assert_text(date, &what);
            svg.assert_text(&format!("{op} of {dtype}"), &what);
            svg.assert_text("throughput (GB/s, log scale)", &what);
            svg.assert_text("input size (bytes, log scale)", &what);
            for floor in ["buffer copy floor", "upload floor"] {
                svg.assert_text(floor, &what);
            }
            if !r["floors"]["shader_copy"].is_null() {
                svg.assert_text("shader copy floor", &what);
            }
            let rows: Vec<&Value> = results
                .iter()
                .filter(|x| x["dtype"] == dtype && x["op"] == op)
                .collect();
            // One panel per partitioning, each captioned.
            let mut parts: Vec<&Value> = rows.iter().map(|x| &x["partition_size"]).collect();
            parts.dedup();
            for p in &parts {
                let caption = match p.as_u64() {
                    None => "whole buffer".to_string(),
                    Some(64) => "partitions of 64 elements".to_string(),
                    Some(other) => panic!("unexpected partition size {other}"),
                };
                svg.assert_text(&caption, &what);
            }
            // Device-resident and from-host rows: one line per panel, one
            // point per measured row.
            for (source, label, colour) in [
                ("device", "GPU, device-resident", DEVICE),
                ("host", "GPU, from host (upload included)", HOST),
            ] {
                let measured = rows
                    .iter()
                    .filter(|x| x["source"] == source && x["error"].is_null())
                    .count();
                assert!(measured > 0, "{what}: no {source} rows");
                svg.assert_text(label, &what);
                // Less the legend's two-point sample.
                let drawn = svg.points(colour).iter().sum::<usize>() - 2;
                assert_eq!(drawn, measured, "{what}: {source} points");
            }
            // Every CPU baseline of this case is a named series.
            for c in cpu.iter().filter(|x| x["dtype"] == dtype && x["op"] == op) {
                let name = c["implementation"].as_str().unwrap();
                svg.assert_text(&format!("CPU {name} ("), &what);
            }
        }
    }

    let group_by = r["group_by"].as_array().unwrap();
    assert!(!group_by.is_empty());
    let path = charts.join("group-by.svg");
    let svg = Svg::read(&path);
    let what = path.display().to_string();
    svg.assert_text(adapter, &what);
    svg.assert_text("groups (log scale)", &what);
    for kind in ["group_by", "partitions"] {
        let n = group_by.iter().filter(|x| x["kind"] == kind).count();
        if n > 0 {
            let label = if kind == "group_by" {
                "keyed (group by)"
            } else {
                "equal partitions"
            };
            svg.assert_text(label, &what);
        }
    }
}

#[test]
fn mixed_plot_draws_the_latency_distribution_and_the_run_in_time() {
    let dir = scratch("mixed");
    let charts = dir.join("charts");
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
        "--cold-starts",
        "2",
        "--plot",
        charts.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mixed failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let adapter = r["adapter"]["name"].as_str().unwrap();
    let trace = r["trace"].as_array().expect("trace");
    // Two cold starts, then three phases in each of two rounds.
    assert_eq!(trace.len(), 2 + 3 * 2, "{trace:?}");
    let requests = |phase: &str| -> usize {
        trace
            .iter()
            .filter(|t| t["phase"] == phase)
            .map(|t| t["rt_latency_us"].as_array().unwrap().len())
            .sum()
    };
    for t in trace {
        let sent = t["rt_sent_s"].as_array().unwrap().len();
        assert_eq!(sent, t["rt_latency_us"].as_array().unwrap().len());
        let jobs = t["batch_done_s"].as_array().unwrap().len();
        assert_eq!(jobs, t["batch_chunks"].as_array().unwrap().len());
        let batch = t["phase"] != "real-time alone";
        assert_eq!(jobs > 0, batch, "{t}");
        assert_eq!(sent > 0, t["phase"] != "batch alone", "{t}");
    }
    // Every request the lanes completed was traced.
    assert_eq!(
        requests("both together") as u64,
        r["together"]["realtime"]["completed"].as_u64().unwrap()
    );

    let path = charts.join("latency-cdf.svg");
    let svg = Svg::read(&path);
    let what = path.display().to_string();
    svg.assert_text(adapter, &what);
    svg.assert_text("latency (us, log scale)", &what);
    for (phase, label, colour) in [
        ("cold start", "cold start:", COLD),
        ("real-time alone", "real-time alone:", ALONE),
        ("both together", "under batch load:", TOGETHER),
    ] {
        let n = requests(phase);
        assert!(n > 0, "no {phase} requests");
        svg.assert_text(&format!("{label} {n} requests"), &what);
        // The CDF and the tail, one point per request each, and a
        // two-point sample in each panel's legend.
        let mut lines = svg.points(colour);
        lines.sort();
        let mut want = vec![2, 2, n, n];
        want.sort();
        assert_eq!(lines, want, "{what}: {phase}");
    }

    let path = charts.join("timeline.svg");
    let svg = Svg::read(&path);
    let what = path.display().to_string();
    svg.assert_text(adapter, &what);
    for label in [
        "time since the run began (s)",
        "latency (us, log scale)",
        "batch input (GB/s)",
        "KiB per chunk",
        "cold start",
        "real-time alone",
        "batch alone",
        "both together",
    ] {
        svg.assert_text(label, &what);
    }
}

/// `--peers FILE` (a `scripts/gpu-peers.py` report) adds PyTorch's rows to
/// the float32 charts as their own series, one point per row; a file that
/// is not such a report is bad input (exit 2) before any device opens.
#[test]
fn bench_plot_draws_the_pytorch_rows_it_is_given() {
    let dir = scratch("peers");
    let charts = dir.join("charts");
    let peers = dir.join("peers.json");
    let row = |source: &str, bytes: u64, gbps: f64| {
        serde_json::json!({
            "op": "sum", "source": source, "bytes": bytes,
            "partition_size": null, "gbps": gbps,
        })
    };
    let report = serde_json::json!({
        "schema": "gpulanes-peers/1",
        "date_utc": "2026-01-02T03:04:05Z",
        "torch_version": "2.9.0",
        "results": [
            row("device", 4096, 0.5), row("device", 16384, 2.0), row("device", 65536, 8.0),
            row("host", 4096, 0.1), row("host", 65536, 1.0),
        ],
    });
    std::fs::write(&peers, report.to_string()).unwrap();
    let out = run(&[
        "bench",
        "--quick",
        "--dtype",
        "float32",
        "--sizes",
        "4K,16K,64K",
        "--ops",
        "sum",
        "--partitions",
        "none",
        "--no-cpu",
        "--group-by-rows",
        "0",
        "--no-progress",
        "--peers",
        peers.to_str().unwrap(),
        "--plot",
        charts.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let path = charts.join("throughput-float32-sum.svg");
    let svg = Svg::read(&path);
    let what = path.display().to_string();
    svg.assert_text("PyTorch 2.9.0, device-resident (2026-01-02)", &what);
    svg.assert_text("PyTorch 2.9.0, from host (2026-01-02)", &what);
    // One line through the rows, and the legend's two-point sample.
    assert_eq!(svg.points("#882255").iter().sum::<usize>(), 3 + 2, "{what}");
    assert_eq!(svg.points("#CC6699").iter().sum::<usize>(), 2 + 2, "{what}");
    assert!(!charts.join("group-by.svg").exists());

    std::fs::write(&peers, "{\"schema\": \"something else\"}").unwrap();
    let out = run(&[
        "bench",
        "--peers",
        peers.to_str().unwrap(),
        "--plot",
        charts.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--peers"), "{stderr}");
}

/// A chart folder that cannot be made is bad input, found before the run.
#[test]
fn a_plot_folder_that_cannot_be_made_exits_2() {
    let dir = scratch("bad-dir");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let inside = file.join("charts");
    for args in [
        vec!["bench", "--quick", "--plot", inside.to_str().unwrap()],
        vec!["mixed", "--plot", inside.to_str().unwrap()],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--plot"), "{stderr}");
    }
}
