//! The charts of `gpulanes bench --plot DIR`:
//! - `throughput-DTYPE-OP.svg`: throughput (GB/s) against input size, one
//!   panel per partitioning, with the device-resident and from-host GPU
//!   rows, the CPU baselines measured in the same run, and the buffer-copy,
//!   shader-copy and upload floors as horizontal lines (a roofline-style
//!   view: a reduction reads each byte once, so the copy floors, which count
//!   bytes read and written, are what streaming the input could reach);
//! - `group-by.svg`: the keyed and small-partition rows against their
//!   number of groups, in GB/s and as a share of the whole-buffer sum of the
//!   same values.

use std::path::{Path, PathBuf};

use gpulanes::bench::{BenchReport, GpuRow, Source};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    BLUE, Drawn, FONT, GREEN, GREY, ORANGE, PURPLE, SKY, VERMILION, create_dir, fmt_bytes, fmt_num,
    legend, legend_line, log_range, mesh, subtitle, svg,
};
use crate::Failure;

/// Panel height of a throughput chart.
const PANEL: u32 = 430;

/// Writes every chart of `report` into `dir`; returns their paths.
pub fn bench(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    create_dir(dir)?;
    let sub = subtitle(&report.adapter, &report.date_utc);
    let mut written = Vec::new();
    for (dtype, op) in cases(report) {
        let parts = partitionings(report, dtype, op);
        let rows = parts.len().div_ceil(2) as u32;
        let title = format!("gpulanes bench: {op} of {dtype}, throughput against input size");
        let name = format!("throughput-{dtype}-{op}.svg");
        written.push(svg(dir, &name, rows * PANEL + 70, &title, &sub, |body| {
            let panels = body.split_evenly((rows as usize, parts.len().min(2)));
            for (area, part) in panels.iter().zip(&parts) {
                throughput_panel(area, report, dtype, op, *part)?;
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

/// (log2 bytes, GB/s) of the measured GPU rows from `source`.
fn gpu_points(rows: &[&GpuRow], source: Source) -> Vec<(f64, f64)> {
    rows.iter()
        .filter(|r| r.source == source && r.error.is_none() && r.gbps > 0.0)
        .map(|r| ((r.bytes as f64).log2(), r.gbps))
        .collect()
}

fn throughput_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &BenchReport,
    dtype: &str,
    op: &str,
    part: Option<u64>,
) -> Drawn {
    let rows: Vec<&GpuRow> = report
        .results
        .iter()
        .filter(|r| r.dtype == dtype && r.op == op && r.partition_size == part)
        .collect();
    let cpu: Vec<_> = report
        .cpu
        .iter()
        .filter(|r| r.dtype == dtype && r.op == op && r.partition_size == part && r.gbps > 0.0)
        .collect();
    let floors = &report.floors;
    let mut lines: Vec<(String, f64, ShapeStyle)> = vec![(
        format!(
            "buffer copy floor ({} GB/s)",
            fmt_num(round3(floors.copy.gbps))
        ),
        floors.copy.gbps,
        VERMILION.stroke_width(2),
    )];
    if let Some(sc) = &floors.shader_copy {
        lines.push((
            format!("shader copy floor ({} GB/s)", fmt_num(round3(sc.gbps))),
            sc.gbps,
            PURPLE.stroke_width(2),
        ));
    }
    lines.push((
        format!(
            "upload floor ({} GB/s)",
            fmt_num(round3(floors.upload.gbps))
        ),
        floors.upload.gbps,
        ORANGE.stroke_width(2),
    ));

    let sizes: Vec<f64> = rows.iter().map(|r| (r.bytes as f64).log2()).collect();
    let x_lo = sizes.iter().copied().fold(f64::INFINITY, f64::min);
    let x_hi = sizes.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (x_lo, x_hi) = if x_lo.is_finite() {
        (x_lo - 0.5, x_hi + 0.5)
    } else {
        (11.5, 12.5)
    };
    let y = log_range(
        rows.iter()
            .map(|r| r.gbps)
            .chain(cpu.iter().map(|r| r.gbps))
            .chain(lines.iter().map(|l| l.1)),
        (0.01, 10.0),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(part_label(part), (FONT, 17))
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
        .bold_line_style(GREY.mix(0.2))
        .draw()?;

    for (label, gbps, style) in &lines {
        let dashed = DashedLineSeries::new([(x_lo, *gbps), (x_hi, *gbps)], 8, 5, *style);
        chart
            .draw_series(dashed)?
            .label(label.as_str())
            .legend(legend_line(*style));
    }
    let series: [(&str, Vec<(f64, f64)>, ShapeStyle); 2] = [
        (
            "GPU, device-resident",
            gpu_points(&rows, Source::Device),
            BLUE.stroke_width(3),
        ),
        (
            "GPU, from host (upload included)",
            gpu_points(&rows, Source::Host),
            SKY.stroke_width(3),
        ),
    ];
    for (label, points, style) in series {
        if points.is_empty() {
            continue;
        }
        line_with_points(&mut chart, label, points, style)?;
    }
    let cpu_styles = [
        GREEN.stroke_width(2),
        GREY.stroke_width(2),
        BLACK.stroke_width(1),
    ];
    let mut impls = Vec::new();
    for r in &cpu {
        if !impls.contains(&(r.implementation.name(), r.threads)) {
            impls.push((r.implementation.name(), r.threads));
        }
    }
    for (i, (name, threads)) in impls.iter().enumerate() {
        let points = cpu
            .iter()
            .filter(|r| r.implementation.name() == *name && r.threads == *threads)
            .map(|r| ((r.bytes as f64).log2(), r.gbps))
            .collect();
        let label = format!("CPU {} ({threads} thread{})", name, plural(*threads));
        line_with_points(&mut chart, &label, points, cpu_styles[i % cpu_styles.len()])?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
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
            .label(format!("whole-buffer sum beside {}", label(kind, dtype)))
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
