//! SVG plots with plotters: transaction rate vs concurrency, and latency (p50 and p99) vs
//! concurrency, one line per mode, log-scaled axes.

use plotters::coord::combinators::LogCoord;
use plotters::prelude::*;

use crate::record::Row;

const W: u32 = 900;
const H: u32 = 520;

fn palette_fixed(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// Axis tick text: whole numbers above 10, one decimal below.
fn tick(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A colour per mode: the ten classic ones while they suffice, evenly spread hues beyond.
fn color(i: usize, n: usize) -> RGBColor {
    if n <= 10 {
        return palette_fixed(i);
    }
    let (r, g, b) = HSLColor(i as f64 / n as f64, 0.75, 0.42).rgb();
    RGBColor(r, g, b)
}

/// Width of the legend column to the right of the chart.
const LEGEND_W: u32 = 330;

/// Draws the legend (one coloured line and label per mode) in its own column.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    modes: &[String],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let n = modes.len();
    for (i, mode) in modes.iter().enumerate() {
        let y = 50 + i as i32 * 20;
        let c = color(i, n);
        area.draw(&PathElement::new(vec![(8, y), (30, y)], c.stroke_width(3)))
            .map_err(err)?;
        area.draw(&Circle::new((19, y), 3, c.filled()))
            .map_err(err)?;
        area.draw(&Text::new(mode.clone(), (38, y - 6), ("sans-serif", 12)))
            .map_err(err)?;
    }
    Ok(())
}

type Series = Vec<(String, Vec<(f64, f64)>)>;

/// Per mode, the points (concurrency, f(row)) of measured cells of `workload`.
fn series(rows: &[Row], workload: &str, f: impl Fn(&Row) -> f64) -> Series {
    super::modes(rows)
        .into_iter()
        .map(|mode| {
            let pts = rows
                .iter()
                .filter(|r| r.workload == workload && r.mode == mode && r.is_measured())
                .map(|r| (r.concurrency as f64, f(r)))
                .filter(|(_, y)| y.is_finite() && *y > 0.0)
                .collect();
            (mode, pts)
        })
        .filter(|(_, pts): &(String, Vec<(f64, f64)>)| !pts.is_empty())
        .collect()
}

fn bounds(all: &[&Series]) -> ((f64, f64), (f64, f64)) {
    let pts = all
        .iter()
        .flat_map(|s| s.iter())
        .flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return ((1.0, 10.0), (1.0, 10.0));
    }
    // Pad so points are not on the frame; log axes need strictly positive ranges.
    ((x0 / 1.5, x1 * 1.5), (y0 / 2.0, y1 * 2.0))
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// One log-log chart with the legend beside it. `draw` adds the mode `i`'s series (colour `c`).
fn chart_svg(
    title: String,
    y_desc: &str,
    primary: &Series,
    all: &[&Series],
    mut draw: impl FnMut(
        &mut ChartContext<'_, SVGBackend<'_>, LogCoords>,
        usize,
        &str,
        RGBColor,
    ) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let ((x0, x1), (y0, y1)) = bounds(all);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W + LEGEND_W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot_area, legend_area) = root.split_horizontally(W);
        let names: Vec<String> = primary.iter().map(|(m, _)| m.clone()).collect();
        legend(&legend_area, &names)?;
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| tick(*y))
            .x_desc("concurrent clients")
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        let n = names.len();
        for (i, mode) in names.iter().enumerate() {
            draw(&mut chart, i, mode, color(i, n))?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

type LogCoords = Cartesian2d<LogCoord<f64>, LogCoord<f64>>;

fn points_of<'s>(series: &'s Series, mode: &str) -> Option<&'s Vec<(f64, f64)>> {
    series.iter().find(|(m, _)| m == mode).map(|(_, p)| p)
}

pub fn throughput(rows: &[Row], workload: &str) -> anyhow::Result<String> {
    let s = series(rows, workload, |r| r.transaction_rate);
    chart_svg(
        format!("Transaction rate vs concurrency ({workload})"),
        "transactions / s",
        &s,
        &[&s],
        |chart, _, mode, c| {
            let pts = points_of(&s, mode).cloned().unwrap_or_default();
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(err)?;
            Ok(())
        },
    )
}

pub fn latency(rows: &[Row], workload: &str) -> anyhow::Result<String> {
    let p50 = series(rows, workload, |r| r.p50_ms);
    let p99 = series(rows, workload, |r| r.p99_ms);
    chart_svg(
        format!("Latency vs concurrency ({workload}): p99 ●, p50 ○"),
        "milliseconds",
        &p99,
        &[&p50, &p99],
        |chart, _, mode, c| {
            let high = points_of(&p99, mode).cloned().unwrap_or_default();
            chart
                .draw_series(high.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(high, c.stroke_width(2)))
                .map_err(err)?;
            let low = points_of(&p50, mode).cloned().unwrap_or_default();
            chart
                .draw_series(low.iter().map(|&p| Circle::new(p, 4, c.stroke_width(1))))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(low, c.stroke_width(1)))
                .map_err(err)?;
            Ok(())
        },
    )
}
