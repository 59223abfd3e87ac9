//! The charts of `gpulanes mixed --plot DIR`, from the report's per-request
//! and per-job trace:
//! - `latency-cdf.svg`: the real-time latency distribution alone, under
//!   batch load and at cold start, as a CDF and as its tail (the share of
//!   requests at or above a latency), both on log scales;
//! - `timeline.svg`: through the run, each real-time request's latency, the
//!   batch lane's throughput, and its chunk size (input bytes per GPU
//!   submission), coloured by phase (each phase run also shaded behind
//!   the points), so a cold start, a calibration or a drift shows where it
//!   happened.

use std::path::{Path, PathBuf};

use crate::experiment::{MixedReport, PhaseTrace};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    BLUE, Drawn, FONT, GREEN, GREY, PURPLE, VERMILION, create_dir, fmt_num, legend, legend_line,
    log_range, mesh, subtitle, svg, today,
};
use crate::Failure;

/// The phases in the order the charts list them, with their colours.
const PHASES: [(&str, RGBColor); 4] = [
    ("cold start", VERMILION),
    ("real-time alone", BLUE),
    ("batch alone", GREEN),
    ("both together", PURPLE),
];

/// Writes the charts of `report` into `dir`; returns their paths.
pub fn mixed(report: &MixedReport, dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    create_dir(dir)?;
    let sub = subtitle(&report.adapter, &today());
    let c = &report.config;
    let setup = format!(
        "real-time {} {} values at {} Hz, batch jobs of {} MiB",
        c.rt_size,
        c.dtype,
        c.rt_rate_hz,
        (c.batch_size as u64 * c.dtype.size()) >> 20
    );
    let cdf = svg(
        dir,
        "latency-cdf.svg",
        560,
        &format!("gpulanes mixed: real-time latency distribution ({setup})"),
        &sub,
        |body| latency_cdf(body, report),
    )?;
    let timeline = svg(
        dir,
        "timeline.svg",
        3 * 330 + 64,
        &format!("gpulanes mixed: the run in time ({setup})"),
        &sub,
        |body| timeline(body, report),
    )?;
    Ok(vec![cdf, timeline])
}

/// Colour of a phase.
fn colour(phase: &str) -> RGBColor {
    PHASES
        .iter()
        .find(|(p, _)| *p == phase)
        .map_or(GREY, |(_, c)| *c)
}

/// Sorted real-time latencies of every run of `phase`.
fn latencies(report: &MixedReport, phase: &str) -> Vec<f64> {
    let mut v: Vec<f64> = report
        .trace
        .iter()
        .filter(|t| t.phase == phase)
        .flat_map(|t| t.rt_latency_us.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The phase's p50 and p99 as the report states them (the lane's
/// histogram), for the legend.
fn stated(report: &MixedReport, phase: &str) -> Option<(f64, f64)> {
    let s = match phase {
        "cold start" => Some(&report.cold_start.as_ref()?.realtime),
        "real-time alone" => report.realtime_alone.realtime.as_ref(),
        "both together" => report.together.realtime.as_ref(),
        _ => None,
    }?;
    Some((s.latency.p50_us, s.latency.p99_us))
}

fn latency_cdf(body: &DrawingArea<SVGBackend, Shift>, report: &MixedReport) -> Drawn {
    let panels = body.split_evenly((1, 2));
    let series: Vec<(&str, RGBColor, Vec<f64>)> = PHASES
        .iter()
        .map(|(p, c)| (*p, *c, latencies(report, p)))
        .filter(|(_, _, v)| !v.is_empty())
        .collect();
    let x = log_range(
        series.iter().flat_map(|(_, _, v)| v.iter().copied()),
        (10.0, 1000.0),
    );
    let label = |phase: &str, v: &[f64]| {
        let name = match phase {
            "both together" => "under batch load",
            p => p,
        };
        match stated(report, phase) {
            Some((p50, p99)) => format!(
                "{name}: {} requests, p50 {} us, p99 {} us",
                v.len(),
                fmt_num(p50.round()),
                fmt_num(p99.round())
            ),
            None => format!("{name}: {} requests", v.len()),
        }
    };

    let mut chart = ChartBuilder::on(&panels[0])
        .caption("CDF", (FONT, 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.clone().log_scale(), 0.0..1.0)?;
    mesh(
        &mut chart,
        "latency (us, log scale)",
        "share of requests at or below",
    )?;
    for (phase, c, v) in &series {
        let n = v.len() as f64;
        let style = c.stroke_width(2);
        let points = v.iter().enumerate().map(|(i, &l)| (l, (i + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(label(phase, v))
            .legend(legend_line(style));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;

    let smallest = series
        .iter()
        .map(|(_, _, v)| 1.0 / v.len() as f64)
        .fold(1.0f64, f64::min);
    let y = log_range([smallest, 1.0], (1e-3, 1.0));
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("tail", (FONT, 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.clone().log_scale(), y.log_scale())?;
    mesh(
        &mut chart,
        "latency (us, log scale)",
        "share of requests at or above (log scale)",
    )?;
    let p99 = GREY.stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(
            [(x.start, 0.01), (x.end, 0.01)],
            6,
            4,
            p99,
        ))?
        .label("1% of requests (p99)")
        .legend(legend_line(p99));
    for (phase, c, v) in &series {
        let n = v.len() as f64;
        let style = c.stroke_width(2);
        let points = v
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, (v.len() - i) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(label(phase, v))
            .legend(legend_line(style));
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

/// Batch GB/s of one phase run, one figure per job: its bytes over the
/// time since the previous job's result (since the run's start for the
/// first), at the time of its result. Two jobs are kept in flight, so in a
/// steady state that time is one job's share of the device.
fn batch_rate(t: &PhaseTrace) -> Vec<(f64, f64)> {
    let gb = t.batch_job_bytes as f64 / 1e9;
    let mut prev = t.start_s;
    let mut out = Vec::new();
    for &d in &t.batch_done_s {
        if d > prev {
            out.push((d, gb / (d - prev)));
        }
        prev = d;
    }
    out
}

/// Mean input KiB per batch submission of each job: (done at s, KiB).
fn chunk_sizes(t: &PhaseTrace) -> Vec<(f64, f64)> {
    t.batch_done_s
        .iter()
        .zip(&t.batch_chunks)
        .filter(|(_, c)| **c > 0)
        .map(|(&d, &c)| (d, t.batch_job_bytes as f64 / c as f64 / 1024.0))
        .collect()
}

fn timeline(body: &DrawingArea<SVGBackend, Shift>, report: &MixedReport) -> Drawn {
    let panels = body.split_evenly((3, 1));
    let end = report.trace.iter().map(|t| t.end_s).fold(0.0f64, f64::max);
    let x = 0.0..(end * 1.01).max(1e-3);
    // Each phase named once in each legend.
    let mut named = Vec::new();
    let mut first = |phase: &'static str, panel: usize| {
        let new = !named.contains(&(phase, panel));
        named.push((phase, panel));
        new
    };

    let lat = log_range(
        report
            .trace
            .iter()
            .flat_map(|t| t.rt_latency_us.iter().copied()),
        (10.0, 1000.0),
    );
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("real-time latency of each request", (FONT, 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x.clone(), lat.clone().log_scale())?;
    mesh(
        &mut chart,
        "time since the run began (s)",
        "latency (us, log scale)",
    )?;
    bands(&mut chart, report, (lat.start, lat.end))?;
    for t in report.trace.iter().filter(|t| !t.rt_latency_us.is_empty()) {
        let c = colour(t.phase);
        let dots = t
            .rt_sent_s
            .iter()
            .zip(&t.rt_latency_us)
            .map(|(&s, &l)| Circle::new((s, l), 1, c.filled()));
        let drawn = chart.draw_series(dots)?;
        if first(t.phase, 0) {
            drawn
                .label(t.phase)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    let rates: Vec<(&PhaseTrace, Vec<(f64, f64)>)> =
        report.trace.iter().map(|t| (t, batch_rate(t))).collect();
    let top = rates
        .iter()
        .flat_map(|(_, r)| r.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption(
            "batch throughput (each job's bytes / time since the previous result)",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x.clone(), 0.0..top)?;
    mesh(
        &mut chart,
        "time since the run began (s)",
        "batch input (GB/s)",
    )?;
    bands(&mut chart, report, (0.0, top))?;
    for (t, r) in rates.iter().filter(|(_, r)| !r.is_empty()) {
        let style = colour(t.phase).stroke_width(2);
        let drawn = chart.draw_series(LineSeries::new(r.clone(), style))?;
        if first(t.phase, 1) {
            drawn.label(t.phase).legend(legend_line(style));
        }
        chart.draw_series(r.iter().map(|&p| Circle::new(p, 3, style.color.filled())))?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;

    let sizes: Vec<(&PhaseTrace, Vec<(f64, f64)>)> =
        report.trace.iter().map(|t| (t, chunk_sizes(t))).collect();
    let y_top = sizes
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "batch chunk size (job bytes / the job's GPU submissions)",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, 0.0..y_top)?;
    mesh(&mut chart, "time since the run began (s)", "KiB per chunk")?;
    bands(&mut chart, report, (0.0, y_top))?;
    for (t, s) in sizes.iter().filter(|(_, s)| !s.is_empty()) {
        let c = colour(t.phase);
        let drawn = chart.draw_series(s.iter().map(|&p| Circle::new(p, 2, c.filled())))?;
        if first(t.phase, 2) {
            drawn
                .label(t.phase)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
        }
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Light bands behind a timeline panel, one per phase run in its phase's
/// colour, spanning `y`: a phase shows where it ran even in a panel where
/// it has no points (the real-time lane in the batch-alone phase).
fn bands<CT>(chart: &mut ChartContext<SVGBackend, CT>, report: &MixedReport, y: (f64, f64)) -> Drawn
where
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    chart.draw_series(report.trace.iter().map(|t| {
        Rectangle::new(
            [(t.start_s, y.0), (t.end_s, y.1)],
            colour(t.phase).mix(0.08).filled(),
        )
    }))?;
    Ok(())
}
