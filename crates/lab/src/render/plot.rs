//! SVG plots with plotters, made to be read in a report: the transaction rate and the latency
//! (p50 and p99 in separate panels) of every server, direct and behind nginx, with each worker
//! model's limit as a dashed reference line.
//!
//! A key design choice: the axes are drawn here, on plotters' drawing areas in pixel
//! coordinates, rather than by plotters' mesh — so the concurrency axis has a tick at each
//! measured level and nowhere else (no label drawn twice), and log value axes have 1-2-5 ticks
//! with gridlines (a 38 sits visibly between 20 and 50). Colour says which server, the line
//! style and marker say which front; with a single concurrency level the "vs concurrency" line
//! would be a column of dots, so the same figures become grouped horizontal bars. Text is at
//! least 12 px in an SVG as wide as the page's column, so the legend (below the panels, outside
//! them) is read at that size.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::record::Row;

/// SVG width: index.html's column is 1100 px less padding, so the plot is shown at its size.
const W: i32 = 1040;
/// Text sizes of labels and legend as plotters takes them: its SVG backend writes
/// `font-size` as size / 1.24, so these are 13.7 px and 12.1 px at the page's width.
const FONT: i32 = 17;
const SMALL: i32 = 15;
/// Panel margins: title above, tick labels and axis name below and to the left.
const TOP: i32 = 34;
const BOTTOM: i32 = 52;
const LEFT: i32 = 78;
const RIGHT: i32 = 24;
const PANEL_H: i32 = 430;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

fn palette(i: usize, n: usize) -> RGBColor {
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
    if n <= COLORS.len() {
        return COLORS[i % COLORS.len()];
    }
    let (r, g, b) = HSLColor(i as f64 / n as f64, 0.75, 0.42).rgb();
    RGBColor(r, g, b)
}

/// A front (how the load reaches the server), from raw.csv's `front` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    Direct,
    Nginx,
    NginxUwsgi,
}

const FRONTS: [Front; 3] = [Front::Direct, Front::Nginx, Front::NginxUwsgi];

impl Front {
    fn of(row: &Row) -> Front {
        match row.front.as_str() {
            "nginx" => Front::Nginx,
            "nginx-uwsgi" => Front::NginxUwsgi,
            _ => Front::Direct,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Front::Direct => "direct",
            Front::Nginx => "behind nginx",
            Front::NginxUwsgi => "behind nginx, uwsgi protocol",
        }
    }

    /// Bar fill and outline.
    fn bar_style(self, c: RGBColor) -> (ShapeStyle, ShapeStyle) {
        match self {
            Front::Direct => (c.filled(), c.stroke_width(1)),
            Front::Nginx => (c.mix(0.3).filled(), c.stroke_width(2)),
            Front::NginxUwsgi => (WHITE.filled(), c.stroke_width(2)),
        }
    }
}

/// One server's figures for one workload: (concurrency, value) per front, and its model's
/// limit per concurrency level.
struct Server {
    name: String,
    color: RGBColor,
    points: Vec<(Front, Vec<(usize, f64)>)>,
    limit: Vec<(usize, f64)>,
}

/// Per server (in first-seen order), the measured figures `f` of `workload`.
fn servers(rows: &[Row], workload: &str, f: &dyn Fn(&Row) -> f64) -> Vec<Server> {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == workload && r.is_measured())
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for r in &rows {
        if !names.contains(&r.server.as_str()) {
            names.push(&r.server);
        }
    }
    let n = names.len();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mine: Vec<&&Row> = rows.iter().filter(|r| r.server == *name).collect();
            let points = FRONTS
                .into_iter()
                .map(|front| {
                    let mut pts: Vec<(usize, f64)> = mine
                        .iter()
                        .filter(|r| Front::of(r) == front)
                        .map(|r| (r.concurrency, f(r)))
                        .filter(|(_, y)| y.is_finite() && *y > 0.0)
                        .collect();
                    pts.sort_by_key(|p| p.0);
                    (front, pts)
                })
                .filter(|(_, pts)| !pts.is_empty())
                .collect();
            let mut limit: Vec<(usize, f64)> = Vec::new();
            for r in &mine {
                if r.model_limit.is_finite()
                    && r.model_limit > 0.0
                    && !limit.iter().any(|(c, _)| *c == r.concurrency)
                {
                    limit.push((r.concurrency, r.model_limit));
                }
            }
            limit.sort_by_key(|p| p.0);
            Server {
                name: (*name).to_owned(),
                color: palette(i, n),
                points,
                limit,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Concurrency levels measured, ascending.
fn levels(servers: &[&[Server]]) -> Vec<usize> {
    let mut out: Vec<usize> = servers
        .iter()
        .flat_map(|s| s.iter())
        .flat_map(|s| s.points.iter().flat_map(|(_, p)| p.iter().map(|(c, _)| *c)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A log scale from values to pixels.
#[derive(Clone, Copy)]
struct Log {
    lo: f64,
    hi: f64,
    p0: i32,
    p1: i32,
}

impl Log {
    fn px(&self, v: f64) -> i32 {
        let t = (v.max(self.lo).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln());
        self.p0 + (t * f64::from(self.p1 - self.p0)).round() as i32
    }
}

/// The 1-2-5 values from the largest at or below `v` (`down`) or the smallest at or above it.
fn nice(v: f64, down: bool) -> f64 {
    let e = v.log10().floor();
    let base = 10f64.powf(e);
    let steps = [1.0, 2.0, 5.0, 10.0];
    if down {
        steps
            .iter()
            .rev()
            .map(|m| m * base)
            .find(|x| *x <= v * (1.0 + 1e-9))
            .unwrap_or(base)
    } else {
        steps
            .iter()
            .map(|m| m * base)
            .find(|x| *x >= v * (1.0 - 1e-9))
            .unwrap_or(10.0 * base)
    }
}

/// A value range that starts and ends on 1-2-5 ticks, with room around the figures.
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (1.0, 10.0);
    }
    let (lo, hi) = (nice(lo / 1.25, true), nice(hi * 1.25, false));
    if hi / lo < 10.0 {
        // At least a decade, so there are ticks enough to read a value between.
        (nice(hi / 10.0, true), hi)
    } else {
        (lo, hi)
    }
}

/// Every 1-2-5 value in `[lo, hi]`.
pub fn ticks_125(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut e = lo.log10().floor() as i32 - 1;
    while e < 20 {
        let base = 10f64.powi(e);
        if base > hi * 1.000_001 {
            break;
        }
        for m in [1.0, 2.0, 5.0] {
            let v = m * base;
            if v >= lo * 0.999_999 && v <= hi * 1.000_001 {
                out.push(v);
            }
        }
        e += 1;
    }
    out
}

/// Tick text: 0.05, 2, 500, 2k, 10k.
fn tick_label(v: f64) -> String {
    if v >= 1000.0 && (v / 1000.0).fract().abs() < 1e-9 {
        format!("{}k", (v / 1000.0).round())
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-v.log10()).ceil().max(1.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// A figure as the bar labels show it.
fn value_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn text_style(size: i32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font())
        .color(&RGBColor(34, 34, 34))
        .pos(Pos::new(h, v))
}

fn text(area: &Area, s: &str, at: (i32, i32), size: i32, h: HPos, v: VPos) -> anyhow::Result<()> {
    area.draw(&Text::new(s.to_owned(), at, text_style(size, h, v)))
        .map_err(err)
}

fn grid_color() -> RGBAColor {
    BLACK.mix(0.13)
}

/// A line in the front's style: solid (direct), short dashes (behind nginx), dots (behind
/// nginx speaking uwsgi).
fn front_line(area: &Area, pts: &[(i32, i32)], front: Front, c: RGBColor) -> anyhow::Result<()> {
    let dashed = |size: i32, gap: i32| {
        area.draw(&DashedPathElement::new(
            pts.iter().copied(),
            size,
            gap,
            c.stroke_width(3),
        ))
        .map_err(err)
    };
    match front {
        Front::Direct => area
            .draw(&PathElement::new(pts.to_vec(), c.stroke_width(3)))
            .map_err(err),
        Front::Nginx => dashed(5, 4),
        Front::NginxUwsgi => dashed(2, 3),
    }
}

/// The front's marker: a filled circle (direct), a hollow square (behind nginx), a hollow
/// triangle (behind nginx, uwsgi protocol).
fn front_marker(area: &Area, at: (i32, i32), front: Front, c: RGBColor) -> anyhow::Result<()> {
    match front {
        Front::Direct => area.draw(&Circle::new(at, 4, c.filled())).map_err(err),
        Front::Nginx => area
            .draw(&Rectangle::new(
                [(at.0 - 6, at.1 - 6), (at.0 + 6, at.1 + 6)],
                c.stroke_width(2),
            ))
            .map_err(err),
        Front::NginxUwsgi => area
            .draw(&Polygon::new(
                vec![(at.0, at.1 - 8), (at.0 + 7, at.1 + 5), (at.0 - 7, at.1 + 5)],
                c.mix(0.0).filled(),
            ))
            .and_then(|_| {
                area.draw(&PathElement::new(
                    vec![
                        (at.0, at.1 - 8),
                        (at.0 + 7, at.1 + 5),
                        (at.0 - 7, at.1 + 5),
                        (at.0, at.1 - 8),
                    ],
                    c.stroke_width(2),
                ))
            })
            .map_err(err),
    }
}

/// The model's limit: thin long dashes.
fn limit_line(area: &Area, pts: &[(i32, i32)], c: RGBAColor) -> anyhow::Result<()> {
    area.draw(&DashedPathElement::new(
        pts.iter().copied(),
        10,
        6,
        c.stroke_width(2),
    ))
    .map_err(err)
}

/// Draws a panel's frame, title, value-axis ticks and gridlines (vertical axis when
/// `vertical`), and returns the scale.
fn value_axis(
    area: &Area,
    plot: (i32, i32, i32, i32),
    range: (f64, f64),
    vertical: bool,
    name: &str,
) -> anyhow::Result<Log> {
    let (x0, y0, x1, y1) = plot;
    let scale = if vertical {
        Log {
            lo: range.0,
            hi: range.1,
            p0: y1,
            p1: y0,
        }
    } else {
        Log {
            lo: range.0,
            hi: range.1,
            p0: x0,
            p1: x1,
        }
    };
    for v in ticks_125(range.0, range.1) {
        let p = scale.px(v);
        let label = tick_label(v);
        if vertical {
            area.draw(&PathElement::new(vec![(x0, p), (x1, p)], grid_color()))
                .map_err(err)?;
            text(area, &label, (x0 - 6, p), SMALL, HPos::Right, VPos::Center)?;
        } else {
            area.draw(&PathElement::new(vec![(p, y0), (p, y1)], grid_color()))
                .map_err(err)?;
            text(area, &label, (p, y1 + 6), SMALL, HPos::Center, VPos::Top)?;
        }
    }
    if vertical {
        area.draw(&Text::new(
            name.to_owned(),
            (14, (y0 + y1) / 2),
            text_style(FONT, HPos::Center, VPos::Center).transform(FontTransform::Rotate270),
        ))
        .map_err(err)?;
    } else {
        text(
            area,
            name,
            ((x0 + x1) / 2, y1 + 26),
            FONT,
            HPos::Center,
            VPos::Top,
        )?;
    }
    Ok(scale)
}

fn frame(area: &Area, plot: (i32, i32, i32, i32)) -> anyhow::Result<()> {
    let (x0, y0, x1, y1) = plot;
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.mix(0.5)))
        .map_err(err)
}

/// One "value vs concurrency" panel: a line per server and front, the limits dashed.
fn line_panel(
    area: &Area,
    title: &str,
    y_name: &str,
    servers: &[Server],
    levels: &[usize],
    range: (f64, f64),
) -> anyhow::Result<()> {
    let (w, h) = area.dim_in_pixel();
    let plot = (LEFT, TOP, w as i32 - RIGHT, h as i32 - BOTTOM);
    let (x0, y0, x1, y1) = plot;
    text(area, title, (x0, 8), FONT + 2, HPos::Left, VPos::Top)?;
    let y = value_axis(area, plot, range, true, y_name)?;
    let lo = levels.first().copied().unwrap_or(1).max(1) as f64;
    let hi = levels.last().copied().unwrap_or(10).max(1) as f64;
    let x = Log {
        lo: lo / 1.6,
        hi: hi * 1.6,
        p0: x0,
        p1: x1,
    };
    // Ticks at the measured levels only: each label once.
    for &c in levels {
        let p = x.px(c as f64);
        area.draw(&PathElement::new(vec![(p, y0), (p, y1)], grid_color()))
            .map_err(err)?;
        text(
            area,
            &c.to_string(),
            (p, y1 + 6),
            SMALL,
            HPos::Center,
            VPos::Top,
        )?;
    }
    text(
        area,
        "concurrent clients",
        ((x0 + x1) / 2, y1 + 26),
        FONT,
        HPos::Center,
        VPos::Top,
    )?;
    frame(area, plot)?;
    let at = |(c, v): (usize, f64)| (x.px(c as f64), y.px(v.min(range.1)));
    for s in servers {
        if s.limit.len() >= 2 {
            let pts: Vec<(i32, i32)> = s.limit.iter().map(|p| at(*p)).collect();
            limit_line(area, &pts, s.color.mix(0.75))?;
        }
    }
    for s in servers {
        for (front, pts) in &s.points {
            let px: Vec<(i32, i32)> = pts.iter().map(|p| at(*p)).collect();
            front_line(area, &px, *front, s.color)?;
            for p in px {
                front_marker(area, p, *front, s.color)?;
            }
        }
    }
    Ok(())
}

/// Height of a bar panel for `servers`.
fn bar_panel_height(servers: &[Server]) -> i32 {
    TOP + BOTTOM + servers.iter().map(group_height).sum::<i32>() + 8
}

const BAR: i32 = 18;
const BAR_GAP: i32 = 16;

fn group_height(s: &Server) -> i32 {
    s.points.len() as i32 * BAR + BAR_GAP
}

/// Width of the server names left of the bars.
const NAMES_W: i32 = 330;

/// One "value at C clients" panel: per server a group of horizontal bars (one per front), the
/// model's limit as a dashed mark across the group, each bar labelled with its value.
fn bar_panel(
    area: &Area,
    title: &str,
    x_name: &str,
    servers: &[Server],
    range: (f64, f64),
) -> anyhow::Result<()> {
    let (w, h) = area.dim_in_pixel();
    let plot = (NAMES_W, TOP, w as i32 - 70, h as i32 - BOTTOM);
    let (x0, y0, _, _) = plot;
    text(area, title, (8, 8), FONT + 2, HPos::Left, VPos::Top)?;
    let x = value_axis(area, plot, range, false, x_name)?;
    frame(area, plot)?;
    let mut top = y0 + 8 + BAR_GAP / 2;
    for s in servers {
        let gh = group_height(s) - BAR_GAP;
        let limit_px = s.limit.first().map(|&(_, l)| x.px(l.min(range.1)));
        text(
            area,
            &s.name,
            (x0 - 10, top + gh / 2),
            FONT,
            HPos::Right,
            VPos::Center,
        )?;
        for (i, (front, pts)) in s.points.iter().enumerate() {
            let Some(&(_, v)) = pts.first() else { continue };
            let (b0, b1) = (top + i as i32 * BAR + 1, top + (i as i32 + 1) * BAR - 2);
            let end = x.px(v.min(range.1));
            let (fill, stroke) = front.bar_style(s.color);
            area.draw(&Rectangle::new([(x0, b0), (end, b1)], fill))
                .map_err(err)?;
            area.draw(&Rectangle::new([(x0, b0), (end, b1)], stroke))
                .map_err(err)?;
            // Right of the bar and of the limit mark, so neither hides the figure.
            let label_x = end.max(limit_px.unwrap_or(end)) + 6;
            text(
                area,
                &value_label(v),
                (label_x, (b0 + b1) / 2),
                SMALL,
                HPos::Left,
                VPos::Center,
            )?;
        }
        if let Some(p) = limit_px {
            limit_line(area, &[(p, top - 5), (p, top + gh + 5)], BLACK.mix(0.8))?;
        }
        top += group_height(s);
    }
    Ok(())
}

/// The legend below the panels: the style of each front and of the limit, then a colour per
/// server in two columns. Returns nothing; `legend_height` says how much room it needs.
fn legend(area: &Area, servers: &[Server], bars: bool, limits: bool) -> anyhow::Result<()> {
    let c = RGBColor(60, 60, 60);
    let mut x = 16;
    let y = 14;
    let shown: Vec<Front> = FRONTS
        .into_iter()
        .filter(|f| servers.iter().any(|s| s.points.iter().any(|(g, _)| g == f)))
        .collect();
    for &front in &shown {
        if bars {
            let (fill, stroke) = front.bar_style(c);
            area.draw(&Rectangle::new([(x, y - 7), (x + 30, y + 7)], fill))
                .map_err(err)?;
            area.draw(&Rectangle::new([(x, y - 7), (x + 30, y + 7)], stroke))
                .map_err(err)?;
        } else {
            front_line(area, &[(x, y), (x + 40, y)], front, c)?;
            front_marker(area, (x + 20, y), front, c)?;
        }
        text(
            area,
            front.label(),
            (x + 50, y),
            FONT,
            HPos::Left,
            VPos::Center,
        )?;
        // About 7.5 px a character at this size, and a gap.
        x += 50 + front.label().len() as i32 * 8 + 24;
    }
    if limits {
        let pts = if bars {
            vec![(x + 15, y - 9), (x + 15, y + 9)]
        } else {
            vec![(x, y), (x + 40, y)]
        };
        limit_line(area, &pts, c.mix(0.9))?;
        text(
            area,
            "limit of the model: min(clients, slots) / delay",
            (x + 50, y),
            FONT,
            HPos::Left,
            VPos::Center,
        )?;
    }
    for (i, s) in servers.iter().enumerate() {
        let col = (i % 2) as i32;
        let row = (i / 2) as i32;
        let (lx, ly) = (16 + col * (W / 2), 44 + row * 24);
        area.draw(&Rectangle::new(
            [(lx, ly - 6), (lx + 30, ly + 6)],
            s.color.filled(),
        ))
        .map_err(err)?;
        text(area, &s.name, (lx + 40, ly), FONT, HPos::Left, VPos::Center)?;
    }
    Ok(())
}

fn legend_height(servers: &[Server]) -> i32 {
    44 + servers.len().div_ceil(2) as i32 * 24
}

/// Renders `panels` (drawn by `draw`, stacked or side by side) above the legend.
fn svg(
    panel_sizes: &[(i32, i32)],
    side_by_side: bool,
    servers: &[Server],
    bars: bool,
    limits: bool,
    mut draw: impl FnMut(usize, &Area) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let panels_h = if side_by_side {
        panel_sizes.iter().map(|p| p.1).max().unwrap_or(0)
    } else {
        panel_sizes.iter().map(|p| p.1).sum()
    };
    let h = panels_h + legend_height(servers);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W as u32, h as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(panels_h as u32);
        let mut offset = 0;
        for (i, &(pw, ph)) in panel_sizes.iter().enumerate() {
            let area = if side_by_side {
                let a = top.clone().shrink((offset, 0), (pw as u32, ph as u32));
                offset += pw;
                a
            } else {
                let a = top.clone().shrink((0, offset), (pw as u32, ph as u32));
                offset += ph;
                a
            };
            draw(i, &area)?;
        }
        legend(&bottom, servers, bars, limits)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// Transaction rate per server and front: vs concurrency, or grouped bars at the one level.
pub fn throughput(rows: &[Row], workload: &str) -> anyhow::Result<String> {
    let s = servers(rows, workload, &|r| r.transaction_rate);
    let levels = levels(&[&s]);
    let limits = s.iter().any(|s| !s.limit.is_empty());
    let values = s
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
                .chain(s.limit.iter().map(|(_, v)| *v))
        })
        .collect::<Vec<f64>>();
    let range = value_range(values.into_iter());
    if levels.len() == 1 {
        let title = format!(
            "Transaction rate at {} concurrent clients ({workload})",
            levels[0]
        );
        return svg(
            &[(W, bar_panel_height(&s))],
            false,
            &s,
            true,
            limits,
            |_, area| bar_panel(area, &title, "transactions / s", &s, range),
        );
    }
    let title = format!("Transaction rate vs concurrency ({workload})");
    svg(&[(W, PANEL_H)], false, &s, false, limits, |_, area| {
        line_panel(area, &title, "transactions / s", &s, &levels, range)
    })
}

/// Latency per server and front, p50 and p99 in separate panels that share one scale.
pub fn latency(rows: &[Row], workload: &str) -> anyhow::Result<String> {
    // The model's limit is a rate: it has no place on a latency axis.
    let no_limit = |mut s: Vec<Server>| {
        s.iter_mut().for_each(|s| s.limit.clear());
        s
    };
    let p50 = no_limit(servers(rows, workload, &|r| r.p50_ms));
    let p99 = no_limit(servers(rows, workload, &|r| r.p99_ms));
    let levels = levels(&[&p50, &p99]);
    let values = [&p50, &p99]
        .into_iter()
        .flat_map(|s| s.iter())
        .flat_map(|s| s.points.iter().flat_map(|(_, p)| p.iter().map(|(_, v)| *v)))
        .collect::<Vec<f64>>();
    let range = value_range(values.into_iter());
    let panels = [("p50", &p50), ("p99", &p99)];
    if levels.len() == 1 {
        let sizes: Vec<(i32, i32)> = panels
            .iter()
            .map(|(_, s)| (W, bar_panel_height(s)))
            .collect();
        return svg(&sizes, false, &p99, true, false, |i, area| {
            let (q, s) = panels[i];
            let title = format!(
                "{q} latency at {} concurrent clients ({workload})",
                levels[0]
            );
            bar_panel(area, &title, &format!("{q} milliseconds"), s, range)
        });
    }
    let sizes = [(W / 2, PANEL_H), (W - W / 2, PANEL_H)];
    svg(&sizes, true, &p99, false, false, |i, area| {
        let (q, s) = panels[i];
        let title = format!("{q} latency vs concurrency ({workload})");
        line_panel(area, &title, &format!("{q} ms"), s, &levels, range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_1_2_5() {
        assert_eq!(
            ticks_125(10.0, 1000.0),
            [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert_eq!(ticks_125(2.0, 5.0), [2.0, 5.0]);
        let small = ticks_125(0.05, 0.2);
        assert_eq!(small.len(), 3, "{small:?}");
        assert_eq!(nice(38.0, true), 20.0);
        assert_eq!(nice(38.0, false), 50.0);
        assert_eq!(nice(1000.0, false), 1000.0);
        let (lo, hi) = value_range([38.0, 900.0].into_iter());
        assert!(lo <= 38.0 / 1.25 && hi >= 900.0 * 1.25, "{lo} {hi}");
        assert_eq!(
            [0.05, 0.5, 2.0, 500.0, 2000.0, 10_000.0].map(tick_label),
            ["0.05", "0.5", "2", "500", "2k", "10k"]
        );
    }
}
