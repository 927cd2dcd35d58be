//! Figures (PNG) with plotters. Text needs a TrueType font: DejaVu Sans from Debian's
//! `fonts-dejavu-core` (installed by `scripts/setup.sh`), or the file `EDGENT_FONT` names.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use runtime::plan::{Decision, ExitCosts, Link, PairCost, decide};
use toolchain::latency::LatencyModels;
use toolchain::profile::{Role, Sample};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the font once; an error says how to get one.
fn font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let candidates: Vec<String> = std::env::var("EDGENT_FONT")
                .into_iter()
                .chain(FONT_PATHS.iter().map(ToString::to_string))
                .collect();
            let bytes = candidates
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .ok_or_else(|| {
                    "no TrueType font found: install fonts-dejavu-core (scripts/setup.sh) or set EDGENT_FONT".to_string()
                })?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the font file is not a usable TrueType font".to_string())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Log-log scatter of predicted against measured layer time, one panel per role.
pub fn predicted_vs_measured(
    models: &LatencyModels,
    samples: &[Sample],
    path: &Path,
) -> anyhow::Result<()> {
    font()?;
    let roles: Vec<Role> = models.roles.keys().copied().collect();
    let root = BitMapBackend::new(path, (600 * roles.len().max(1) as u32, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let kinds = ["conv", "relu", "pool", "lrn", "dropout", "fc", "model_load"];
    for (area, role) in root
        .split_evenly((1, roles.len().max(1)))
        .iter()
        .zip(&roles)
    {
        let points: Vec<(usize, f64, f64)> = samples
            .iter()
            .filter(|s| s.role == *role)
            .filter_map(|s| {
                let kind = models.roles[role].kinds.get(&s.kind)?;
                let k = kinds.iter().position(|k| *k == s.kind).unwrap_or(0);
                Some((
                    k,
                    s.ms.max(1e-4),
                    kind.selected().predict(&s.features()).max(1e-4),
                ))
            })
            .collect();
        let hi = points.iter().map(|p| p.1.max(p.2)).fold(1e-3, f64::max) * 1.5;
        let lo = points.iter().map(|p| p.1.min(p.2)).fold(hi, f64::min) / 1.5;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{}: predicted vs measured", role.name()),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("measured ms")
            .y_desc("predicted ms")
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.4)))?;
        for (k, kind) in kinds.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.0 == k)
                        .map(|&(_, m, p)| Circle::new((m, p), 3, color.filled())),
                )?
                .label(*kind)
                .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Bar chart of test accuracy per exit.
pub fn exit_accuracy(dataset: &str, accuracies: &[f64], path: &Path) -> anyhow::Result<()> {
    font()?;
    let root = BitMapBackend::new(path, (640, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = (accuracies.iter().copied().fold(1.0, f64::min) * 100.0 - 5.0)
        .floor()
        .max(0.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Test accuracy per exit ({dataset})"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        // plotters' integer ranges include their end: `1..n` is the n exits' segments.
        .build_cartesian_2d((1..accuracies.len()).into_segmented(), lo..100.0)?;
    chart
        .configure_mesh()
        .x_desc("exit")
        .y_desc("accuracy %")
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(accuracies.iter().enumerate().map(|(i, a)| {
        let x0 = SegmentValue::Exact(i + 1);
        let x1 = SegmentValue::Exact(i + 2);
        Rectangle::new([(x0, lo), (x1, a * 100.0)], BLUE.mix(0.6).filled())
    }))?;
    chart.draw_series(accuracies.iter().enumerate().map(|(i, a)| {
        Text::new(
            format!("{:.1}", a * 100.0),
            (SegmentValue::CenterOf(i + 1), a * 100.0 + 0.5),
            ("sans-serif", 14),
        )
    }))?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Colours of successive series: the Okabe–Ito palette, told apart with colour blindness
/// too (its yellow left out: it is hard to see on white).
const COLORS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Marker shape of a line's points, so that lines differ without colour too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
    Cross,
    InvertedTriangle,
    Plus,
}

/// Markers of successive series (as many as [`COLORS`]).
const MARKERS: [Marker; 7] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Diamond,
    Marker::Cross,
    Marker::InvertedTriangle,
    Marker::Plus,
];

/// Pixels from a marker's centre to its edge.
const MARKER_RADIUS: i32 = 5;

/// Width of a chart's plotting column (its legend goes beside it), pixels; at least.
const CHART_WIDTH: u32 = 720;

/// Width a bar gets at least, pixels: room for a two-digit label.
const BAR_WIDTH: u32 = 18;

/// Draws `marker` at `at` (in `area`'s coordinates) in `color`.
fn draw_marker<CT: CoordTranslate>(
    area: &DrawingArea<BitMapBackend<'_>, CT>,
    marker: Marker,
    at: CT::From,
    color: RGBColor,
) -> anyhow::Result<()> {
    let r = MARKER_RADIUS;
    let fill = color.filled();
    let stroke = color.stroke_width(2);
    let at = EmptyElement::at(at);
    match marker {
        Marker::Circle => area.draw(&(at + Circle::new((0, 0), r, fill)))?,
        Marker::Square => {
            area.draw(&(at + Rectangle::new([(1 - r, 1 - r), (r - 1, r - 1)], fill)))?
        }
        Marker::Triangle => {
            area.draw(&(at + Polygon::new(vec![(0, -r - 1), (r + 1, r), (-r - 1, r)], fill)))?
        }
        Marker::InvertedTriangle => {
            area.draw(&(at + Polygon::new(vec![(0, r + 1), (r + 1, -r), (-r - 1, -r)], fill)))?;
        }
        Marker::Diamond => {
            area.draw(
                &(at + Polygon::new(vec![(0, -r - 1), (r + 1, 0), (0, r + 1), (-r - 1, 0)], fill)),
            )?;
        }
        Marker::Cross => area.draw(
            &(at + PathElement::new(vec![(-r, -r), (r, r)], stroke)
                + PathElement::new(vec![(-r, r), (r, -r)], stroke)),
        )?,
        Marker::Plus => area.draw(
            &(at + PathElement::new(vec![(-r - 1, 0), (r + 1, 0)], stroke)
                + PathElement::new(vec![(0, -r - 1), (0, r + 1)], stroke)),
        )?,
    }
    Ok(())
}

/// How a legend entry shows its series.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// A line sample (dashed or solid) with its marker.
    Line { marker: Marker, dashed: bool },
    /// A filled box, pale for computed values.
    Swatch { pale: bool },
}

/// One entry of a legend.
struct LegendEntry {
    name: String,
    color: RGBColor,
    key: Key,
}

/// A bar's fill: solid for measurements, pale with a solid outline for computed values.
fn bar_fill(color: RGBColor, pale: bool) -> ShapeStyle {
    if pale {
        color.mix(0.35).filled()
    } else {
        color.filled()
    }
}

/// Width of a legend area that fits `entries` (and `header`) on one line each, pixels.
fn legend_width(header: &str, entries: &[LegendEntry]) -> u32 {
    // The header starts where the keys do, about six characters left of the entries' text.
    let chars = entries
        .iter()
        .map(|e| e.name.chars().count())
        .chain([header.chars().count().saturating_sub(6)])
        .max()
        .unwrap_or(0);
    60 + 7 * chars as u32
}

/// Draws a legend into its own area beside the chart, so it never covers data: an optional
/// header line, then one entry per line.
fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    header: &str,
    entries: &[LegendEntry],
) -> anyhow::Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let font = ("sans-serif", 13)
        .into_font()
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let (x, mut y) = (8, 40);
    if !header.is_empty() {
        area.draw(&Text::new(header.to_string(), (x, y), font.clone()))?;
        y += 26;
    }
    for entry in entries {
        let color = entry.color;
        match entry.key {
            Key::Line { marker, dashed } => {
                let stroke = color.stroke_width(2);
                if dashed {
                    for k in 0..3 {
                        area.draw(&PathElement::new(
                            vec![(x + 13 * k, y), (x + 13 * k + 8, y)],
                            stroke,
                        ))?;
                    }
                } else {
                    area.draw(&PathElement::new(vec![(x, y), (x + 34, y)], stroke))?;
                }
                draw_marker(area, marker, (x + 17, y), color)?;
            }
            Key::Swatch { pale } => {
                let corners = [(x + 6, y - 8), (x + 28, y + 8)];
                area.draw(&Rectangle::new(corners, bar_fill(color, pale)))?;
                area.draw(&Rectangle::new(corners, color.stroke_width(1)))?;
            }
        }
        area.draw(&Text::new(entry.name.clone(), (x + 44, y), font.clone()))?;
        y += 24;
    }
    Ok(())
}

/// A white figure of a chart column `width` pixels wide with a legend `legend` pixels wide
/// beside it and `title` on top: returns the chart's area and the legend's.
fn canvas<'a>(
    path: &'a Path,
    title: &str,
    (width, height): (u32, u32),
    legend: u32,
) -> anyhow::Result<(
    DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
)> {
    font()?;
    let root = BitMapBackend::new(path, (width + legend, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    Ok(root.split_horizontally(width))
}

/// One line of a [`lines`] chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Dashed (predictions, computed lines) rather than solid (measurements).
    pub dashed: bool,
}

/// The edge's time per request against batch size: each exit's edge-only suffix as
/// measured (solid) and as the plan's line predicts it (dashed).
pub fn batch_times(profile: &toolchain::batching::BatchProfile, path: &Path) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for s in profile.suffixes.iter().filter(|s| s.partition == 0) {
        let slope = s.per_image_ms(&profile.batches);
        let per_request = |b: usize, total: f64| (b as f64, total / b as f64);
        series.push(Series {
            name: format!("exit {} measured", s.exit),
            points: profile
                .batches
                .iter()
                .zip(&s.ms)
                .map(|(&b, &t)| per_request(b, t))
                .collect(),
            dashed: false,
        });
        series.push(Series {
            name: format!("exit {} plan", s.exit),
            points: profile
                .batches
                .iter()
                .map(|&b| per_request(b, s.ms[0] + (b as f64 - 1.0) * slope))
                .collect(),
            dashed: true,
        });
    }
    lines(
        path,
        &format!(
            "Edge time per request against batch size ({} on {})",
            profile.engine, profile.backend
        ),
        ("requests in a batch", "ms per request (edge-only suffix)"),
        &series,
        Scale {
            log_x: true,
            log_y: true,
        },
    )
}

/// How the axes of a [`lines`] chart are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scale {
    /// Logarithmic x (bandwidth axes).
    pub log_x: bool,
    /// Logarithmic y (sizes over orders of magnitude); values ≤ 0 are left out.
    pub log_y: bool,
}

impl Scale {
    /// Both axes linear.
    pub const LINEAR: Scale = Scale {
        log_x: false,
        log_y: false,
    };
    /// Logarithmic x, linear y.
    pub const LOG_X: Scale = Scale {
        log_x: true,
        log_y: false,
    };
    /// Linear x, logarithmic y.
    pub const LOG_Y: Scale = Scale {
        log_x: false,
        log_y: true,
    };
}

/// A line chart, every series with its own colour and marker shape and the legend beside
/// the chart, its axes scaled as `scale` says.
pub fn lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    scale: Scale,
) -> anyhow::Result<()> {
    let shown = |p: &(f64, f64)| p.1.is_finite() && (!scale.log_y || p.1 > 0.0);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    anyhow::ensure!(!all.is_empty(), "nothing to plot in {}", path.display());
    let (x0, x1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (y0, y1) = all
        .iter()
        .filter(|p| shown(p))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (y0, y1) = if scale.log_y {
        (y0 / 1.5, y1 * 1.5)
    } else {
        (y0.min(0.0), if y1 > y0 { y1 * 1.08 } else { y0 + 1.0 })
    };
    let entries: Vec<LegendEntry> = series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            name: s.name.clone(),
            color: COLORS[i % COLORS.len()],
            key: Key::Line {
                marker: MARKERS[i % MARKERS.len()],
                dashed: s.dashed,
            },
        })
        .collect();
    let (area, legend) = canvas(path, title, (CHART_WIDTH, 480), legend_width("", &entries))?;
    draw_legend(&legend, "", &entries)?;
    let mut builder = ChartBuilder::on(&area);
    builder
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(58);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|x| format!("{}", (*x * 100.0).round() / 100.0))
                .y_label_formatter(&|y| format!("{}", (*y * 100.0).round() / 100.0))
                .y_labels(10)
                .label_style(("sans-serif", 13))
                .draw()?;
            for (s, entry) in series.iter().zip(&entries) {
                let Key::Line { marker, .. } = entry.key else {
                    unreachable!("lines have line keys")
                };
                let color = entry.color;
                let points: Vec<(f64, f64)> =
                    s.points.iter().copied().filter(|p| shown(p)).collect();
                let style = color.stroke_width(2);
                if s.dashed {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?;
                } else {
                    chart.draw_series(LineSeries::new(points.clone(), style))?;
                }
                for p in points {
                    draw_marker(chart.plotting_area(), marker, p, color)?;
                }
            }
        }};
    }
    // One chart per combination of scales (plotters types each differently).
    macro_rules! with_y {
        ($x:expr) => {{
            if scale.log_y {
                draw!(builder.build_cartesian_2d($x, (y0..y1).log_scale())?);
            } else {
                draw!(builder.build_cartesian_2d($x, y0..y1)?);
            }
        }};
    }
    if scale.log_x {
        // Label the measured x values themselves (a log axis' own ticks crowd at its right
        // end and may miss the first points), when they are few enough to read.
        let mut ticks: Vec<f64> = all.iter().map(|p| p.0).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let (lo, hi) = (x0 / 1.1, x1 * 1.1);
        if ticks.len() <= 12 {
            with_y!((lo..hi).log_scale().with_key_points(ticks.clone()));
        } else {
            with_y!((lo..hi).log_scale());
        }
    } else {
        let pad = (x1 - x0).max(1e-9) * 0.03;
        with_y!(x0 - pad..x1 + pad);
    }
    area.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// One series of a [`bars`] chart: a bar in every category of every panel.
pub struct BarSeries {
    /// Legend text.
    pub name: String,
    /// `values[panel][category]`; a value that is not finite draws a "×" on the axis
    /// instead of a bar.
    pub values: Vec<Vec<f64>>,
    /// Computed from models (pale bars) rather than measured (solid bars).
    pub computed: bool,
}

/// The exit and partition panels of a selection chart for `decisions`, one per category;
/// a "×" instead of a bar where no plan meets the deadline.
pub fn selection_bars(name: String, decisions: &[Decision], computed: bool) -> BarSeries {
    let shown = |f: fn(&Decision) -> usize| -> Vec<f64> {
        decisions
            .iter()
            .map(|d| if d.feasible { f(d) as f64 } else { f64::NAN })
            .collect()
    };
    BarSeries {
        name,
        values: vec![shown(|d| d.exit), shown(|d| d.partition)],
        computed,
    }
}

/// Grouped bars: one group per category along x, one bar per series in every group, one
/// panel per entry of `y_descs` (stacked, sharing the categories and the legend beside
/// them). Each bar is labelled with its value where there is room.
pub fn bars(
    path: &Path,
    title: &str,
    (x_desc, categories): (&str, &[String]),
    y_descs: &[&str],
    series: &[BarSeries],
) -> anyhow::Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    anyhow::ensure!(
        !categories.is_empty() && !series.is_empty() && !y_descs.is_empty(),
        "nothing to plot in {}",
        path.display()
    );
    for s in series {
        anyhow::ensure!(
            s.values.len() == y_descs.len() && s.values.iter().all(|v| v.len() == categories.len()),
            "series `{}` has not one value per panel and category",
            s.name
        );
    }
    let entries: Vec<LegendEntry> = series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            name: s.name.clone(),
            color: COLORS[i % COLORS.len()],
            key: Key::Swatch { pale: s.computed },
        })
        .collect();
    let height = 90 + 330 * y_descs.len() as u32;
    // Bars take 80 % of a category; the axis labels about 90 pixels.
    let bars = (categories.len() * series.len()) as u32;
    let width = CHART_WIDTH.max(90 + bars * BAR_WIDTH * 5 / 4);
    let (area, legend) = canvas(path, title, (width, height), legend_width("", &entries))?;
    draw_legend(&legend, "", &entries)?;
    // x in thousandths of a category (plotters formats integer axes with key points, not
    // floating-point ones): category `c` spans [1000·c, 1000·(c + 1)), its bars the middle 80 %.
    const UNIT: i32 = 1000;
    let n = categories.len() as i32;
    let centers: Vec<i32> = (0..n).map(|c| c * UNIT + UNIT / 2).collect();
    let width = UNIT * 8 / 10 / series.len() as i32;
    let label_font = ("sans-serif", 11)
        .into_font()
        .into_text_style(&area)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (panel, (panel_area, y_desc)) in area
        .split_evenly((y_descs.len(), 1))
        .iter()
        .zip(y_descs)
        .enumerate()
    {
        let top = series
            .iter()
            .flat_map(|s| s.values[panel].iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.15 } else { 1.0 };
        // Whole numbers (exits, partitions) get whole-number ticks.
        let whole = series
            .iter()
            .flat_map(|s| s.values[panel].iter())
            .all(|v| !v.is_finite() || v.fract() == 0.0);
        let y_labels = if whole {
            (top as usize + 1).min(12)
        } else {
            10
        };
        let mut chart = ChartBuilder::on(panel_area)
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d((0..n * UNIT).with_key_points(centers.clone()), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc(*y_desc)
            .x_label_formatter(&|x| {
                usize::try_from(x / UNIT)
                    .ok()
                    .and_then(|c| categories.get(c))
                    .cloned()
                    .unwrap_or_default()
            })
            .y_labels(y_labels)
            .y_label_formatter(&|y| format!("{}", (*y * 100.0).round() / 100.0))
            .label_style(("sans-serif", 13))
            .draw()?;
        let (x_pixels, _) = chart.plotting_area().dim_in_pixel();
        let bar_pixels = f64::from(x_pixels) * f64::from(width) / f64::from(n * UNIT);
        // One precision for the whole panel: a decimal where every label fits with it,
        // whole numbers where they fit, no labels where even those do not.
        let values = || {
            series
                .iter()
                .flat_map(|s| s.values[panel].iter().copied())
                .filter(|v| v.is_finite())
        };
        let fits = |decimals: usize| {
            values().all(|v| bar_pixels >= 6.5 * format!("{v:.decimals$}").len() as f64)
        };
        let decimals = if !whole && fits(1) {
            Some(1)
        } else {
            fits(0).then_some(0)
        };
        for (i, (s, entry)) in series.iter().zip(&entries).enumerate() {
            for (c, &v) in s.values[panel].iter().enumerate() {
                let x0 = c as i32 * UNIT + UNIT / 10 + i as i32 * width;
                let x1 = x0 + width * 9 / 10;
                if !v.is_finite() {
                    chart.draw_series([Text::new(
                        "×",
                        ((x0 + x1) / 2, 0.0),
                        label_font.clone().color(&entry.color),
                    )])?;
                    continue;
                }
                let corners = [(x0, 0.0), (x1, v)];
                chart.draw_series([Rectangle::new(corners, bar_fill(entry.color, s.computed))])?;
                chart.draw_series([Rectangle::new(corners, entry.color.stroke_width(1))])?;
                if let Some(decimals) = decimals {
                    chart.draw_series([Text::new(
                        format!("{v:.decimals$}"),
                        ((x0 + x1) / 2, v),
                        label_font.clone(),
                    )])?;
                }
            }
        }
    }
    area.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Where Algorithm 1 ran the network in one cell of a [`partition_map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `p = 0`: the raw input is uploaded and the edge runs the whole exit.
    EdgeOnly,
    /// `0 < p < N`: device and edge share the exit.
    Middle,
    /// `p = N`: the device runs the whole exit.
    DeviceOnly,
    /// No plan meets the deadline.
    Infeasible,
}

impl Placement {
    /// Every placement, in the legend's order.
    const ALL: [Placement; 4] = [
        Self::EdgeOnly,
        Self::Middle,
        Self::DeviceOnly,
        Self::Infeasible,
    ];

    /// Legend text.
    fn name(self) -> &'static str {
        match self {
            Self::EdgeOnly => "edge-only (p = 0)",
            Self::Middle => "middle partition (0 < p < N)",
            Self::DeviceOnly => "device-only (p = N)",
            Self::Infeasible => "no plan meets the deadline",
        }
    }

    /// Cell colour.
    fn color(self) -> RGBColor {
        match self {
            Self::EdgeOnly => COLORS[0],
            Self::Middle => COLORS[1],
            Self::DeviceOnly => COLORS[2],
            Self::Infeasible => RGBColor(200, 200, 200),
        }
    }
}

/// How many cells of a [`partition_map`] had each placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlacementCounts {
    /// Cells where the choice was edge-only.
    pub edge_only: usize,
    /// Cells where the choice was a middle partition.
    pub middle: usize,
    /// Cells where the choice was device-only.
    pub device_only: usize,
    /// Cells where no plan met the deadline.
    pub infeasible: usize,
}

impl PlacementCounts {
    /// The count of `placement`.
    pub fn of(&self, placement: Placement) -> usize {
        match placement {
            Placement::EdgeOnly => self.edge_only,
            Placement::Middle => self.middle,
            Placement::DeviceOnly => self.device_only,
            Placement::Infeasible => self.infeasible,
        }
    }

    /// All cells.
    pub fn total(&self) -> usize {
        self.edge_only + self.middle + self.device_only + self.infeasible
    }
}

/// Algorithm 1's placement (`runtime::plan::decide`, i.e. `Policy::Edgent`) for every
/// device speed factor (rows; every `device_ms` multiplied by it) and bandwidth (columns,
/// bit/s), at `deadline_ms` with a round trip of `rtt_ms`.
pub fn placements(
    costs: &[ExitCosts],
    deadline_ms: f64,
    rtt_ms: f64,
    bandwidths_bps: &[f64],
    factors: &[f64],
) -> Vec<Vec<Placement>> {
    factors
        .iter()
        .map(|&factor| {
            let scaled: Vec<ExitCosts> = costs
                .iter()
                .map(|e| ExitCosts {
                    pairs: e
                        .pairs
                        .iter()
                        .map(|p| PairCost {
                            device_ms: p.device_ms * factor,
                            ..*p
                        })
                        .collect(),
                    // The device's encoding time scales with it too.
                    families: e
                        .families
                        .iter()
                        .map(|f| runtime::plan::Family {
                            routes: f
                                .routes
                                .iter()
                                .map(|r| {
                                    let mut r = *r;
                                    r.cost.device_ms *= factor;
                                    r
                                })
                                .collect(),
                            ..f.clone()
                        })
                        .collect(),
                    ..e.clone()
                })
                .collect();
            bandwidths_bps
                .iter()
                .map(|&bandwidth_bps| {
                    let link = Link {
                        bandwidth_bps,
                        rtt_ms,
                    };
                    let d = decide(&scaled, link, deadline_ms);
                    let n = scaled[d.exit - 1].pairs.len() - 1;
                    match d.partition {
                        _ if !d.feasible => Placement::Infeasible,
                        0 => Placement::EdgeOnly,
                        p if p == n => Placement::DeviceOnly,
                        _ => Placement::Middle,
                    }
                })
                .collect()
        })
        .collect()
}

/// Values spaced evenly on a log scale from `lo` to `hi`, both included, at least
/// `per_decade` to a decade (exactly that many over whole decades).
pub fn log_grid(lo: f64, hi: f64, per_decade: usize) -> Vec<f64> {
    let steps = ((hi / lo).log10() * per_decade as f64 - 1e-9)
        .ceil()
        .max(1.0) as usize;
    (0..=steps)
        .map(|i| lo * (hi / lo).powf(i as f64 / steps as f64))
        .collect()
}

/// Texts of a [`partition_map`].
pub struct MapLabels<'a> {
    /// The figure's title (the deadline and the count of middle cells are added).
    pub title: &'a str,
    /// What the device speed factor multiplies, e.g. "device time × (1 = Raspberry Pi 3)".
    pub y_desc: &'a str,
}

/// A map of where Algorithm 1 runs the network — edge-only, a middle partition,
/// device-only, or nothing in time — over bandwidth (x, log, bit/s) × device speed factor
/// (y, log; every `device_ms` of `costs` multiplied by it), at `deadline_ms` with a round
/// trip of `rtt_ms`. Writes the figure to `path` and returns the counts.
pub fn partition_map(
    path: &Path,
    labels: &MapLabels<'_>,
    costs: &[ExitCosts],
    (deadline_ms, rtt_ms): (f64, f64),
    bandwidths_bps: &[f64],
    factors: &[f64],
) -> anyhow::Result<PlacementCounts> {
    anyhow::ensure!(
        !costs.is_empty() && bandwidths_bps.len() >= 2 && factors.len() >= 2,
        "a partition map needs exits and at least two bandwidths and two factors"
    );
    let cells = placements(costs, deadline_ms, rtt_ms, bandwidths_bps, factors);
    let mut counts = PlacementCounts::default();
    for &cell in cells.iter().flatten() {
        match cell {
            Placement::EdgeOnly => counts.edge_only += 1,
            Placement::Middle => counts.middle += 1,
            Placement::DeviceOnly => counts.device_only += 1,
            Placement::Infeasible => counts.infeasible += 1,
        }
    }
    let entries: Vec<LegendEntry> = Placement::ALL
        .iter()
        .map(|&p| LegendEntry {
            name: format!("{}: {}", p.name(), counts.of(p)),
            color: p.color(),
            key: Key::Swatch { pale: false },
        })
        .collect();
    let header = format!("cells ({} in all):", counts.total());
    let title = format!(
        "{}, deadline {deadline_ms:.0} ms: middle partition in {} of {} cells",
        labels.title,
        counts.middle,
        counts.total()
    );
    let (area, legend) = canvas(
        path,
        &title,
        (CHART_WIDTH, 560),
        legend_width(&header, &entries),
    )?;
    draw_legend(&legend, &header, &entries)?;
    // Cell edges: geometric midpoints between grid values, half a step beyond the ends.
    let edges = |values: &[f64]| -> Vec<f64> {
        let mut edges = vec![values[0] * (values[0] / values[1]).sqrt()];
        edges.extend(values.windows(2).map(|w| (w[0] * w[1]).sqrt()));
        let last = values.len() - 1;
        edges.push(values[last] * (values[last] / values[last - 1]).sqrt());
        edges
    };
    let (xs, ys) = (edges(bandwidths_bps), edges(factors));
    let decades = |lo: f64, hi: f64| -> Vec<f64> {
        (lo.log10().ceil() as i32..=hi.log10().floor() as i32)
            .map(|e| 10f64.powi(e))
            .collect()
    };
    let (x_lo, x_hi) = (xs[0], xs[xs.len() - 1]);
    let (y_lo, y_hi) = (ys[0], ys[ys.len() - 1]);
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(66)
        .build_cartesian_2d(
            (x_lo..x_hi)
                .log_scale()
                .with_key_points(decades(x_lo, x_hi)),
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(decades(y_lo, y_hi)),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("bandwidth")
        .y_desc(labels.y_desc)
        .x_label_formatter(&|x| crate::lab::rate_in_words(*x))
        .y_label_formatter(&|y| format!("{y}×"))
        .label_style(("sans-serif", 13))
        .draw()?;
    for (row, cells) in cells.iter().enumerate() {
        chart.draw_series(cells.iter().enumerate().map(|(col, cell)| {
            Rectangle::new(
                [(xs[col], ys[row]), (xs[col + 1], ys[row + 1])],
                cell.color().filled(),
            )
        }))?;
    }
    area.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.len() > 1000)
    }

    #[test]
    fn line_charts_are_written_on_log_and_linear_axes() {
        let dir = tempfile::tempdir().unwrap();
        let xs = [25.0, 50.0, 100.0, 200.0, 1000.0];
        let series = [
            Series {
                name: "measured".into(),
                points: xs.iter().map(|&x| (x, 1000.0 / x)).collect(),
                dashed: false,
            },
            Series {
                name: "predicted".into(),
                points: xs.iter().map(|&x| (x, f64::NAN)).collect(),
                dashed: true,
            },
        ];
        for scale in [Scale::LOG_X, Scale::LINEAR, Scale::LOG_Y] {
            let path = dir.path().join(format!("lines-{scale:?}.png"));
            lines(&path, "test", ("kbit/s", "ms"), &series, scale).unwrap();
            assert!(written(&path));
        }
    }

    #[test]
    fn grouped_bars_are_written_and_checked_for_shape() {
        let dir = tempfile::tempdir().unwrap();
        let categories: Vec<String> = ["100", "200", "300"].map(String::from).to_vec();
        let series = |name: &str, computed, values: Vec<Vec<f64>>| BarSeries {
            name: name.into(),
            values,
            computed,
        };
        let two_panels = [
            series(
                "measured",
                false,
                vec![vec![1.0, 3.0, 5.0], vec![11.0, 0.0, 0.0]],
            ),
            series(
                "paper",
                true,
                vec![vec![1.0, f64::NAN, 5.0], vec![11.0, 0.0, 0.0]],
            ),
        ];
        let path = dir.path().join("bars.png");
        bars(
            &path,
            "test",
            ("deadline (ms)", &categories),
            &["exit", "partition"],
            &two_panels,
        )
        .unwrap();
        assert!(written(&path));
        // A series without a value for every category is refused, not drawn wrong.
        let short = [series("short", false, vec![vec![1.0, 2.0]])];
        let path = dir.path().join("short.png");
        assert!(bars(&path, "test", ("x", &categories), &["exit"], &short).is_err());
    }

    /// Two exits of three partitions, 10 kB raw input: exit 2 is the more accurate one and
    /// sends 1 kB at its middle partition after 40 ms on the device (at factor 1).
    fn middle_costs() -> Vec<ExitCosts> {
        let pair = |device_ms, edge_ms, bytes| PairCost {
            device_ms,
            edge_ms,
            bytes,
            edge_ms_per_image: edge_ms,
        };
        vec![
            ExitCosts {
                exit: 1,
                accuracy: 0.7,
                pairs: vec![
                    pair(0.0, 2.0, 10_000),
                    pair(30.0, 1.0, 4_000),
                    pair(35.0, 0.0, 0),
                ],
                families: Vec::new(),
            },
            ExitCosts {
                exit: 2,
                accuracy: 0.8,
                pairs: vec![
                    pair(0.0, 4.0, 10_000),
                    pair(40.0, 2.0, 1_000),
                    pair(400.0, 0.0, 0),
                ],
                families: Vec::new(),
            },
        ]
    }

    #[test]
    fn placements_follow_algorithm_1_over_bandwidth_and_device_speed() {
        let costs = middle_costs();
        // Exit 2 at 200 ms. Factor 1: at 100 kbit/s the 10 kB upload takes 800 ms, the
        // middle partition 40 + 80 + 1 + 2 = 123 ms; at 10 Mbit/s the upload 8 + 1 + 4 ms.
        // Factor 0.1: at 100 kbit/s the device alone takes 40 ms; at 10 Mbit/s the middle
        // partition 4 + 0.8 + 1 + 2 ms beats the upload's 13 ms. A 1 ms deadline: nothing.
        let cells = placements(&costs, 200.0, 1.0, &[100e3, 10e6], &[0.1, 1.0]);
        assert_eq!(
            cells,
            vec![
                vec![Placement::DeviceOnly, Placement::Middle],
                vec![Placement::Middle, Placement::EdgeOnly],
            ]
        );
        let cells = placements(&costs, 1.0, 1.0, &[100e3], &[1.0]);
        assert_eq!(cells, vec![vec![Placement::Infeasible]]);
    }

    #[test]
    fn a_partition_map_is_written_with_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.png");
        let bandwidths = log_grid(10e3, 100e6, 6);
        let factors = log_grid(0.1, 100.0, 6);
        assert_eq!((bandwidths.len(), factors.len()), (25, 19));
        assert!((bandwidths[24] - 100e6).abs() < 1e-3 && (factors[6] - 1.0).abs() < 1e-12);
        let labels = MapLabels {
            title: "test",
            y_desc: "device time ×",
        };
        let counts = partition_map(
            &path,
            &labels,
            &middle_costs(),
            (200.0, 1.0),
            &bandwidths,
            &factors,
        )
        .unwrap();
        assert!(written(&path));
        assert_eq!(counts.total(), 25 * 19);
        let cells = placements(&middle_costs(), 200.0, 1.0, &bandwidths, &factors);
        let middle = cells
            .iter()
            .flatten()
            .filter(|c| **c == Placement::Middle)
            .count();
        assert_eq!(counts.middle, middle);
        assert!(middle > 0 && counts.edge_only > 0 && counts.device_only > 0);
    }
}
