//! SVG charts of the benchmark reports (`gpulanes bench --plot DIR`,
//! `gpulanes mixed --plot DIR`), drawn with plotters' SVG backend, which
//! needs no system library: text is written as SVG `<text>` and laid out
//! with plotters' built-in font metrics.
//!
//! Every chart draws the report's own figures (the ones its JSON holds),
//! never a recomputation from other data; each title names the adapter and
//! the date, and each axis its unit. Series carry their names in a legend,
//! so the SVG text names every series drawn.

mod bench;
mod mixed;

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use crate::Failure;

pub use bench::bench;
pub use mixed::mixed;

/// What a drawing step returns.
type Drawn<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Chart size in pixels (SVG user units).
const WIDTH: u32 = 1200;
/// Height of the two title lines.
const HEADER: u32 = 64;
const FONT: &str = "sans-serif";

/// The series palette: colour-blind safe (Okabe-Ito).
const BLUE: RGBColor = RGBColor(0, 114, 178);
const ORANGE: RGBColor = RGBColor(230, 159, 0);
const GREEN: RGBColor = RGBColor(0, 158, 115);
const VERMILION: RGBColor = RGBColor(213, 94, 0);
const PURPLE: RGBColor = RGBColor(204, 121, 167);
const SKY: RGBColor = RGBColor(86, 180, 233);
const GREY: RGBColor = RGBColor(110, 110, 110);

/// Creates `dir` (and its parents) for the charts: called before a run, so
/// a folder that cannot be made fails fast, as bad input.
pub fn create_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Input(format!("--plot {}: {e}", dir.display())))
}

/// Draws one SVG file of `height` pixels with `draw`, titled `title` over
/// `subtitle`; returns its path.
fn svg(
    dir: &Path,
    name: &str,
    height: u32,
    title: &str,
    subtitle: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Drawn,
) -> Result<PathBuf, Failure> {
    let path = dir.join(name);
    let drawn = (|| -> Drawn {
        let root = SVGBackend::new(&path, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(HEADER);
        head.draw(&Text::new(
            title,
            (16, 10),
            (FONT, 22).into_font().color(&BLACK),
        ))?;
        head.draw(&Text::new(
            subtitle,
            (16, 38),
            (FONT, 15).into_font().color(&GREY),
        ))?;
        draw(&body)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| Failure::Runtime(format!("cannot draw {}: {e}", path.display())))?;
    Ok(path)
}

/// The second title line: the adapter, its backend and kind, the date
/// (RFC 3339, shown as `YYYY-MM-DD HH:MM:SS UTC`), and what a software
/// adapter's timings mean.
fn subtitle(adapter: &gpulanes::AdapterSummary, date: &str) -> String {
    let date = date.replace('T', " ").replace('Z', " UTC");
    let software = if adapter.software {
        " | software adapter: CPU timings, not GPU speed"
    } else {
        ""
    };
    format!(
        "{} ({}, {}) | {date}{software}",
        adapter.name, adapter.backend, adapter.device_type
    )
}

/// A binary size: 4K, 64K, 1M, 1.5G.
fn fmt_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if (v - v.round()).abs() < 1e-9 {
        format!("{}{}", v.round(), UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// A number for a log axis: no trailing zeros, no exponent between 1e-4
/// and 1e6.
fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !(1e-4..1e6).contains(&v.abs()) {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The range of a log axis around `values` (positive, finite ones): whole
/// powers of ten, so labels fall on round numbers. `fallback` when there
/// are none.
fn log_range(values: impl IntoIterator<Item = f64>, fallback: (f64, f64)) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if hi > 0.0 { (lo, hi) } else { fallback };
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    // A hair wider, so the powers of ten at the ends keep their labels
    // whatever the rounding of `powf`.
    lo * (1.0 - 1e-9)..hi * (1.0 + 1e-9)
}

/// A legend entry's sample: a short line in `style`.
fn legend_line(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

/// The legend box every chart uses, at `pos`.
fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    pos: SeriesLabelPosition,
) -> Drawn {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY.mix(0.6))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// The grid and labelled axes of a chart, with plain numbers as labels.
fn mesh<X, Y>(
    chart: &mut ChartContext<SVGBackend, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
) -> Drawn
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| fmt_num(*v))
        .y_label_formatter(&|v| fmt_num(*v))
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .light_line_style(GREY.mix(0.08))
        .max_light_lines(4)
        .bold_line_style(GREY.mix(0.2))
        .draw()?;
    Ok(())
}

/// Today's date (UTC), for reports that carry none.
fn today() -> String {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::measure::utc_date(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(fmt_bytes(4096.0), "4K");
        assert_eq!(fmt_bytes(64.0 * 1024.0 * 1024.0), "64M");
        assert_eq!(fmt_bytes(1536.0), "1.5K");
        assert_eq!(fmt_num(0.01), "0.01");
        assert_eq!(fmt_num(10.0), "10");
        assert_eq!(fmt_num(2.5), "2.5");
        let r = log_range([0.03, 7.0], (1.0, 10.0));
        assert!((r.start / 0.01 - 1.0).abs() < 1e-6 && (r.end / 10.0 - 1.0).abs() < 1e-6);
        let r = log_range([f64::NAN], (1.0, 10.0));
        assert!((r.start - 1.0).abs() < 1e-6 && (r.end / 10.0 - 1.0).abs() < 1e-6);
    }
}
