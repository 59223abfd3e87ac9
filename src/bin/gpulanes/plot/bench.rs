//! The charts of `gpulanes bench --plot DIR`:
//! - `throughput-DTYPE-OP.svg`: throughput (GB/s) against input size, one
//!   panel per partitioning, with the device-resident and from-host GPU
//!   rows, the CPU baselines measured in the same run, and the buffer-copy,
//!   shader-copy and upload floors as horizontal lines, and the PyTorch rows
//!   of a `scripts/gpu-peers.py` report where one is given (float32 only,
//!   as that script measures), as a roofline-style
//!   view (a reduction reads each byte once, so the copy floors, which count
//!   bytes read and written, are what streaming the input could reach);
//! - `group-by.svg`: the keyed and small-partition rows against their
//!   number of groups, in GB/s and as a share of the whole-buffer sum of the
//!   same values.

use std::path::{Path, PathBuf};

use crate::measure::{BenchReport, GpuRow, Source};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::{
    BLUE, Drawn, FONT, GREEN, GREY, ORANGE, PURPLE, SKY, VERMILION, create_dir, fmt_bytes, fmt_num,
    legend, legend_line, log_range, mesh, subtitle, svg,
};
use crate::Failure;

/// Panel height of a throughput chart.
const PANEL: u32 = 430;

/// Writes every chart of `report` (with the PyTorch rows of `peers`, a
/// `gpulanes-peers/1` report, where given) into `dir`; returns their paths.
pub fn bench(
    report: &BenchReport,
    peers: Option<&Value>,
    dir: &Path,
) -> Result<Vec<PathBuf>, Failure> {
    create_dir(dir)?;
    let sub = subtitle(&report.adapter, &report.date_utc);
    let mut written = Vec::new();
    for (dtype, op) in cases(report) {
        let parts = partitionings(report, dtype, op);
        let rows = parts.len().div_ceil(2) as u32;
        let title = format!("gpulanes bench: {op} of {dtype}, throughput against input size");
        let name = format!("throughput-{dtype}-{op}.svg");
        let series = series(report, peers, dtype, op);
        written.push(svg(dir, &name, rows * PANEL + 70, &title, &sub, |body| {
            let (plots, key) = body.split_horizontally(body.dim_in_pixel().0 - LEGEND);
            shared_legend(&key, &series)?;
            let panels = plots.split_evenly((rows as usize, parts.len().min(2)));
            for (area, part) in panels.iter().zip(&parts) {
                throughput_panel(area, report, peers, dtype, op, *part, &series)?;
            }
            Ok(())
        })?);
    }
    if !report.group_by.is_empty() {
        let title = "gpulanes bench: group-by and small partitions against the whole-buffer sum";
        written.push(svg(dir, "group-by.svg", 520, title, &sub, |body| {
            group_by(body, report)
        })?);
    }
    Ok(written)
}

/// Width of the legend beside the panels of a throughput chart.
const LEGEND: u32 = 290;

/// The (dtype, op) pairs measured, in the report's order.
fn cases(report: &BenchReport) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for r in &report.results {
        if !out.contains(&(r.dtype, r.op)) {
            out.push((r.dtype, r.op));
        }
    }
    out
}

/// The partitionings (`None`: whole buffer) measured for one case, in the
/// report's order.
fn partitionings(report: &BenchReport, dtype: &str, op: &str) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for r in report
        .results
        .iter()
        .filter(|r| r.dtype == dtype && r.op == op)
    {
        if !out.contains(&r.partition_size) {
            out.push(r.partition_size);
        }
    }
    out
}

/// A panel's caption: the partitioning.
fn part_label(part: Option<u64>) -> String {
    match part {
        None => "whole buffer".into(),
        Some(p) => format!("partitions of {} elements", fmt_bytes(p as f64)),
    }
}

/// What one series of a throughput chart draws.
#[derive(Clone, Copy)]
enum Kind {
    /// A floor, in GB/s: a dashed horizontal line.
    Floor(f64),
    /// The GPU rows from this source.
    Gpu(Source),
    /// A CPU baseline: implementation and threads.
    Cpu(&'static str, usize),
    /// PyTorch's rows from this source (`device` or `host`).
    Peer(&'static str),
}

/// A series of a throughput chart, drawn the same way in every panel.
struct Series {
    label: String,
    style: ShapeStyle,
    kind: Kind,
}

/// The series of one case's chart: the floors, the GPU rows by source, and
/// each CPU baseline measured.
fn series(report: &BenchReport, peers: Option<&Value>, dtype: &str, op: &str) -> Vec<Series> {
    let floors = &report.floors;
    let floor = |name: &str, gbps: f64, colour: RGBColor| Series {
        label: format!("{name} floor: {} GB/s", fmt_num(round3(gbps))),
        style: colour.stroke_width(2),
        kind: Kind::Floor(gbps),
    };
    let mut out = vec![floor("buffer copy", floors.copy.gbps, VERMILION)];
    if let Some(sc) = &floors.shader_copy {
        out.push(floor("shader copy", sc.gbps, PURPLE));
    }
    out.push(floor("upload", floors.upload.gbps, ORANGE));
    let rows = report
        .results
        .iter()
        .filter(|r| r.dtype == dtype && r.op == op);
    for (source, label, colour) in [
        (Source::Device, "GPU, device-resident", BLUE),
        (Source::Host, "GPU, from host (upload included)", SKY),
    ] {
        if rows.clone().any(|r| r.source == source) {
            out.push(Series {
                label: label.into(),
                style: colour.stroke_width(3),
                kind: Kind::Gpu(source),
            });
        }
    }
    if let Some(peers) = peers.filter(|_| dtype == "float32") {
        let version = peers["torch_version"].as_str().unwrap_or("?");
        let date = peers["date_utc"]
            .as_str()
            .unwrap_or("")
            .get(..10)
            .unwrap_or("");
        for (source, what, colour) in [
            ("device", "device-resident", TORCH),
            ("host", "from host", TORCH_HOST),
        ] {
            let rows = peers["results"].as_array().into_iter().flatten();
            if rows.clone().any(|r| r["op"] == op && r["source"] == source) {
                out.push(Series {
                    label: format!("PyTorch {version}, {what} ({date})"),
                    style: colour.stroke_width(3),
                    kind: Kind::Peer(source),
                });
            }
        }
    }
    let colours = [GREEN, BLACK, GREY];
    let mut impls = Vec::new();
    for r in report.cpu.iter().filter(|r| r.dtype == dtype && r.op == op) {
        if !impls.contains(&(r.implementation.name(), r.threads)) {
            impls.push((r.implementation.name(), r.threads));
        }
    }
    for (i, (name, threads)) in impls.into_iter().enumerate() {
        out.push(Series {
            label: format!("CPU {name} ({threads} thread{})", plural(threads)),
            style: colours[i % colours.len()].stroke_width(2),
            kind: Kind::Cpu(name, threads),
        });
    }
    out
}

/// The legend of every panel, drawn once beside them.
fn shared_legend(area: &DrawingArea<SVGBackend, Shift>, series: &[Series]) -> Drawn {
    let font = (FONT, 14).into_font().color(&BLACK);
    let mut y = 48;
    for s in series {
        let sample: Vec<(i32, i32)> = if matches!(s.kind, Kind::Floor(_)) {
            vec![(8, y), (16, y), (22, y), (30, y)]
        } else {
            vec![(8, y), (30, y)]
        };
        if matches!(s.kind, Kind::Floor(_)) {
            area.draw(&PathElement::new(vec![sample[0], sample[1]], s.style))?;
            area.draw(&PathElement::new(vec![sample[2], sample[3]], s.style))?;
        } else {
            area.draw(&PathElement::new(sample, s.style))?;
            area.draw(&Circle::new((19, y), 3, s.style.color.filled()))?;
        }
        area.draw(&Text::new(s.label.as_str(), (38, y - 8), font.clone()))?;
        y += 24;
    }
    Ok(())
}

/// PyTorch's colours: a dark red, lighter from host.
const TORCH: RGBColor = RGBColor(136, 34, 85);
const TORCH_HOST: RGBColor = RGBColor(204, 102, 153);

/// (log2 bytes, GB/s) of the peers' rows of `op` and `part` from `source`.
fn peer_points(peers: &Value, op: &str, part: Option<u64>, source: &str) -> Vec<(f64, f64)> {
    peers["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["op"] == op && r["source"] == source && r["partition_size"].as_u64() == part)
        .filter_map(|r| Some(((r["bytes"].as_u64()? as f64).log2(), r["gbps"].as_f64()?)))
        .filter(|(_, g)| *g > 0.0 && g.is_finite())
        .collect()
}

fn throughput_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &BenchReport,
    peers: Option<&Value>,
    dtype: &str,
    op: &str,
    part: Option<u64>,
    series: &[Series],
) -> Drawn {
    let case: Vec<&GpuRow> = report
        .results
        .iter()
        .filter(|r| r.dtype == dtype && r.op == op)
        .collect();
    let rows: Vec<&GpuRow> = case
        .iter()
        .copied()
        .filter(|r| r.partition_size == part)
        .collect();
    let cpu: Vec<_> = report
        .cpu
        .iter()
        .filter(|r| r.dtype == dtype && r.op == op && r.partition_size == part && r.gbps > 0.0)
        .collect();
    let peer_rows: Vec<(&'static str, Vec<(f64, f64)>)> = series
        .iter()
        .filter_map(|s| match (s.kind, peers) {
            (Kind::Peer(source), Some(p)) => Some((source, peer_points(p, op, part, source))),
            _ => None,
        })
        .collect();
    // Every panel of a case spans the same sizes.
    let all_peers = |p: &Value| {
        ["device", "host"]
            .into_iter()
            .flat_map(|s| peer_points(p, op, None, s))
            .map(|(x, _)| x)
            .collect::<Vec<_>>()
    };
    let sizes: Vec<f64> = case
        .iter()
        .map(|r| (r.bytes as f64).log2())
        .chain(
            peers
                .filter(|_| !peer_rows.is_empty())
                .map(all_peers)
                .into_iter()
                .flatten(),
        )
        .collect();
    let x_lo = sizes.iter().copied().fold(f64::INFINITY, f64::min);
    let x_hi = sizes.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (x_lo, x_hi) = if x_lo.is_finite() {
        (x_lo - 0.5, x_hi + 0.5)
    } else {
        (11.5, 12.5)
    };
    // Sizes left out for their number of partitions (`config.max_partitions`)
    // are named, so a short line does not read as a missing measurement.
    let mut caption = part_label(part);
    if let (Some(p), Some(max)) = (part, report.config.max_partitions)
        && case
            .iter()
            .any(|r| r.elements > p && r.elements.div_ceil(p) > max)
    {
        caption += &format!(" (sizes of over {max} partitions skipped)");
    }
    let y = log_range(
        rows.iter()
            .map(|r| r.gbps)
            .chain(cpu.iter().map(|r| r.gbps))
            .chain(peer_rows.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)))
            .chain(series.iter().filter_map(|s| match s.kind {
                Kind::Floor(g) => Some(g),
                _ => None,
            })),
        (0.01, 10.0),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_lo..x_hi, y.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("input size (bytes, log scale)")
        .y_desc("throughput (GB/s, log scale)")
        .x_labels(((x_hi - x_lo) as usize + 1).min(16))
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                fmt_bytes(2f64.powf(v.round()))
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| fmt_num(*v))
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .light_line_style(GREY.mix(0.08))
        .max_light_lines(4)
        .bold_line_style(GREY.mix(0.2))
        .draw()?;

    for s in series {
        let points: Vec<(f64, f64)> = match s.kind {
            Kind::Floor(gbps) => {
                let line = [(x_lo, gbps), (x_hi, gbps)];
                chart.draw_series(DashedLineSeries::new(line, 8, 5, s.style))?;
                continue;
            }
            Kind::Gpu(source) => gpu_points(&rows, source),
            Kind::Peer(source) => peer_rows
                .iter()
                .find(|(s, _)| *s == source)
                .map_or_else(Vec::new, |(_, p)| p.clone()),
            Kind::Cpu(name, threads) => cpu
                .iter()
                .filter(|r| r.implementation.name() == name && r.threads == threads)
                .map(|r| ((r.bytes as f64).log2(), r.gbps))
                .collect(),
        };
        chart.draw_series(LineSeries::new(points.clone(), s.style))?;
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, s.style.color.filled())),
        )?;
    }
    Ok(())
}

/// (log2 bytes, GB/s) of the measured GPU rows from `source`.
fn gpu_points(rows: &[&GpuRow], source: Source) -> Vec<(f64, f64)> {
    rows.iter()
        .filter(|r| r.source == source && r.error.is_none() && r.gbps > 0.0)
        .map(|r| ((r.bytes as f64).log2(), r.gbps))
        .collect()
}

/// A named series: a line through its points, and a dot on each.
fn line_with_points<CT>(
    chart: &mut ChartContext<SVGBackend, CT>,
    label: &str,
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
) -> Drawn
where
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    chart
        .draw_series(LineSeries::new(points.clone(), style))?
        .label(label)
        .legend(legend_line(style));
    chart.draw_series(
        points
            .into_iter()
            .map(|p| Circle::new(p, 3, style.color.filled())),
    )?;
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Three significant digits, for legend labels.
fn round3(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(2 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// Two panels: GB/s of each row against its number of groups, and its
/// share of the whole-buffer sum of the same values.
fn group_by(body: &DrawingArea<SVGBackend, Shift>, report: &BenchReport) -> Drawn {
    let panels = body.split_evenly((1, 2));
    let rows = &report.group_by;
    let mut kinds: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        if !kinds.contains(&(r.kind, r.dtype)) {
            kinds.push((r.kind, r.dtype));
        }
    }
    let x = log_range(rows.iter().map(|r| r.groups as f64), (1.0, 10.0));
    let styles = [BLUE, VERMILION, GREEN, PURPLE, ORANGE, SKY];
    let label = |kind: &str, dtype: &str| match kind {
        "group_by" => format!("keyed (group by), {dtype}"),
        "partitions" => format!("equal partitions, {dtype}"),
        other => format!("{other}, {dtype}"),
    };

    let y = log_range(
        rows.iter().flat_map(|r| [r.gbps, r.whole_gbps]),
        (0.01, 10.0),
    );
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("throughput (keys and values read)", (FONT, 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.clone().log_scale(), y.log_scale())?;
    mesh(
        &mut chart,
        "groups (log scale)",
        "throughput (GB/s, log scale)",
    )?;
    for (i, (kind, dtype)) in kinds.iter().enumerate() {
        let style = styles[i % styles.len()].stroke_width(3);
        let sel = || rows.iter().filter(|r| r.kind == *kind && r.dtype == *dtype);
        let points = sel().map(|r| (r.groups as f64, r.gbps)).collect();
        line_with_points(&mut chart, &label(kind, dtype), points, style)?;
        let whole: Vec<_> = sel().map(|r| (r.groups as f64, r.whole_gbps)).collect();
        let whole_style = styles[i % styles.len()].stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(whole, 6, 4, whole_style))?
            .label(format!(
                "whole-buffer sum, same values ({})",
                label(kind, dtype)
            ))
            .legend(legend_line(whole_style));
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;

    let (x_lo, x_hi) = (x.start, x.end);
    let top = rows
        .iter()
        .map(|r| r.ratio_to_whole)
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("share of the whole-buffer sum's throughput", (FONT, 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.log_scale(), 0.0..top)?;
    mesh(&mut chart, "groups (log scale)", "GB/s / whole-buffer GB/s")?;
    let one = GREY.stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new([(x_lo, 1.0), (x_hi, 1.0)], 6, 4, one))?
        .label("1.0 = as fast as the whole-buffer sum")
        .legend(legend_line(one));
    for (i, (kind, dtype)) in kinds.iter().enumerate() {
        let style = styles[i % styles.len()].stroke_width(3);
        let points = rows
            .iter()
            .filter(|r| r.kind == *kind && r.dtype == *dtype)
            .map(|r| (r.groups as f64, r.ratio_to_whole))
            .collect();
        line_with_points(&mut chart, &label(kind, dtype), points, style)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}
