//! The table `gpulanes bench` prints on stdout.

use std::fmt::Write;

use super::cpu::CpuImpl;
use super::{BenchReport, CpuRow, GpuRow, Source, size};

/// `812ns`, `12.3us`, `4.56ms`, `1.23s`.
pub fn fmt_ns(ns: f64) -> String {
    if ns <= 0.0 {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

fn fmt_gbps(g: f64) -> String {
    if g <= 0.0 {
        "-".into()
    } else if g < 10.0 {
        format!("{g:.2}")
    } else {
        format!("{g:.1}")
    }
}

fn pct(r: f64) -> String {
    if r <= 0.0 {
        "-".into()
    } else {
        format!("{:.0}%", r * 100.0)
    }
}

type Key<'a> = (&'a str, &'a str, u64, Option<u64>);

fn key_gpu(r: &GpuRow) -> Key<'_> {
    (r.dtype, r.op, r.bytes, r.partition_size)
}

fn key_cpu(r: &CpuRow) -> Key<'_> {
    (r.dtype, r.op, r.bytes, r.partition_size)
}

pub fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    let a = &r.adapter;
    let _ = writeln!(
        out,
        "gpulanes bench {}  {}  adapter: {} ({}, {})",
        r.gpulanes_version, r.date_utc, a.name, a.backend, a.device_type
    );
    if r.software {
        let _ = writeln!(
            out,
            "*** SOFTWARE ADAPTER ({}): every figure below is CPU speed, not GPU speed ***",
            a.driver
        );
    }
    let _ = writeln!(
        out,
        "host: {} ({} threads)",
        r.host.cpu_model.as_deref().unwrap_or("unknown CPU"),
        r.host.threads
    );
    let _ = writeln!(
        out,
        "timer: device rows {}, host rows wall clock (upload included); medians; GB/s = input bytes / time",
        match r.timer {
            super::TimerKind::Timestamps => "GPU timestamp queries",
            super::TimerKind::Wall => "wall clock (submit to result)",
        }
    );
    let f = &r.floors;
    let _ = writeln!(
        out,
        "floors: buffer copy {} GB/s, shader copy {} GB/s ({} buffer, read+write counted, {}) | upload {} GB/s ({}) | empty submit {} | 4-byte readback {} (p99 {})",
        fmt_gbps(f.copy.gbps),
        f.shader_copy
            .as_ref()
            .map_or("-".into(), |s| fmt_gbps(s.gbps)),
        size::label(f.copy.bytes),
        f.copy.timer.name(),
        fmt_gbps(f.upload.gbps),
        size::label(f.upload.bytes),
        fmt_ns(f.round_trip.empty_submit.median_ns),
        fmt_ns(f.round_trip.readback_4_bytes.median_ns),
        fmt_ns(f.round_trip.readback_4_bytes.p99_ns),
    );
    let _ = writeln!(out);
    let header = [
        "dtype",
        "op",
        "size",
        "parts",
        "dev time",
        "dev min",
        "dev GB/s",
        "of copy",
        "host time",
        "host GB/s",
        "of upload",
        "cpu 1t",
        "cpu Nt",
        "ndarray",
        "check",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let mut seen: Vec<Key> = Vec::new();
    for g in &r.results {
        let key = key_gpu(g);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let dev = r
            .results
            .iter()
            .find(|x| key_gpu(x) == key && x.source == Source::Device);
        let host = r
            .results
            .iter()
            .find(|x| key_gpu(x) == key && x.source == Source::Host);
        let cpu = |which: CpuImpl| {
            r.cpu
                .iter()
                .find(|c| key_cpu(c) == key && c.implementation == which)
                .map_or("-".to_string(), |c| fmt_gbps(c.gbps))
        };
        let check = {
            let rows: Vec<&GpuRow> = dev.iter().chain(host.iter()).copied().collect();
            if rows.iter().any(|x| x.error.is_some()) {
                "ERROR".to_string()
            } else if rows.iter().all(|x| x.check.pass) {
                let ulps = rows.iter().map(|x| x.check.max_ulps).max().unwrap_or(0);
                format!("ok {ulps}ulp")
            } else {
                "FAIL".to_string()
            }
        };
        rows.push(vec![
            g.dtype.to_string(),
            g.op.to_string(),
            g.size.clone(),
            g.partition_size.map_or("whole".into(), |p| {
                format!("{}x{}", g.partitions, size::label(p))
            }),
            dev.map_or("-".into(), |d| fmt_ns(d.time.median_ns)),
            dev.map_or("-".into(), |d| fmt_ns(d.time.min_ns)),
            dev.map_or("-".into(), |d| fmt_gbps(d.gbps)),
            dev.map_or("-".into(), |d| pct(d.ratio_to_copy)),
            host.map_or("-".into(), |h| fmt_ns(h.time.median_ns)),
            host.map_or("-".into(), |h| fmt_gbps(h.gbps)),
            host.map_or("-".into(), |h| pct(h.ratio_to_upload)),
            cpu(CpuImpl::Loop1t),
            cpu(CpuImpl::LoopThreads),
            cpu(CpuImpl::Ndarray1t),
            check,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c < 4 || c == header.len() - 1 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "\"dev min\": fastest device run; \"of copy\": median device GB/s over the faster copy floor ({}); \"of upload\": host GB/s over the upload floor's; cpu columns (float32 and float64 only): GB/s of the plain loop (f64 accumulation) on 1 and {} threads and of ndarray (accumulating in the input's type)",
        r.floors.bandwidth.source, r.config.threads
    );
    if !r.skipped.is_empty() {
        let _ = writeln!(
            out,
            "skipped (too many partitions for this adapter; raise --max-partitions): {}",
            r.skipped.join("; ")
        );
    }
    if !r.group_by.is_empty() {
        render_group_by(&mut out, &r.group_by);
    }
    if r.all_checks_pass {
        let _ = writeln!(
            out,
            "checks: all {} GPU rows match the CPU reference ({}) and every timed run reproduced its checked result",
            r.results.len(),
            super::check::RULE
        );
    } else {
        let _ = writeln!(out, "CHECKS FAILED ({}):", r.failures.len());
        for f in &r.failures {
            let _ = writeln!(out, "  {f}");
        }
    }
    out
}

/// The group-by and small-partition rows: GB/s of keys and values, and the
/// ratio to the whole-buffer sum timed alternately with each row.
fn render_group_by(out: &mut String, rows: &[super::group_by::GroupByRow]) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "group-by (int32 keys, float32 values, ops {}) and small partitions (sum), from host memory, upload included:",
        rows.iter()
            .find(|r| r.kind == "group_by")
            .map_or("-".into(), |r| r.ops.join(","))
    );
    let _ = writeln!(
        out,
        "{:>12}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>9}  check",
        "rows", "what", "groups", "median", "GB/s", "whole", "of whole"
    );
    for r in rows {
        let what = match (r.cardinality, r.partition_size) {
            (Some(c), _) => format!("{c} keys"),
            (_, Some(p)) => format!("p={p}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:>12}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>9}  {}",
            r.rows,
            what,
            r.groups,
            fmt_ns(r.time.median_ns),
            fmt_gbps(r.gbps),
            fmt_gbps(r.whole_gbps),
            pct(r.ratio_to_whole),
            if r.check_pass { "ok" } else { "FAILED" }
        );
    }
    let _ = writeln!(
        out,
        "GB/s = keys + values bytes / median; \"whole\": the whole-buffer sum of the same values, timed alternately with each row"
    );
}
