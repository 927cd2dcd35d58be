//! Figures (PNG) with plotters. Text needs a TrueType font: DejaVu Sans from Debian's
//! `fonts-dejavu-core` (installed by `scripts/setup.sh`), or the file `EDGENT_FONT` names.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
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

/// One line of a [`lines`] chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Dashed (predictions, computed lines) rather than solid (measurements).
    pub dashed: bool,
}

/// A line chart with markers; `log_x` for bandwidth axes.
pub fn lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    log_x: bool,
) -> anyhow::Result<()> {
    font()?;
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
        .filter(|p| p.1.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (y0, y1) = (y0.min(0.0), if y1 > y0 { y1 * 1.08 } else { y0 + 1.0 });
    let root = BitMapBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let colors = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(230, 140, 0),
    ];
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
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
                .label_style(("sans-serif", 13))
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let color = colors[i % colors.len()];
                let points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite())
                    .collect();
                let style = color.stroke_width(2);
                if s.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?
                        .label(&s.name)
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
                } else {
                    chart
                        .draw_series(LineSeries::new(points.clone(), style))?
                        .label(&s.name)
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
                }
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 12))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }};
    }
    if log_x {
        // Label the measured x values themselves (a log axis' own ticks crowd at its right
        // end and may miss the first points), when they are few enough to read.
        let mut ticks: Vec<f64> = all.iter().map(|p| p.0).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        if ticks.len() <= 12 {
            draw!(builder.build_cartesian_2d((x0..x1).log_scale().with_key_points(ticks), y0..y1)?);
        } else {
            draw!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?);
        }
    } else {
        let pad = (x1 - x0).max(1e-9) * 0.03;
        draw!(builder.build_cartesian_2d(x0 - pad..x1 + pad, y0..y1)?);
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A line chart with markers on a logarithmic y axis (sizes over orders of magnitude):
/// every series its own colour (ten distinct ones, then they repeat), dashed ones dashed;
/// y values ≤ 0 are left out. The legend sits in a decade of headroom above the data.
pub fn lines_log_y(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
) -> anyhow::Result<()> {
    font()?;
    let shown = |s: &Series| -> Vec<(f64, f64)> {
        s.points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite() && p.1 > 0.0)
            .collect()
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(shown).collect();
    anyhow::ensure!(!all.is_empty(), "nothing to plot in {}", path.display());
    let fold = |f: fn(&(f64, f64)) -> f64| {
        all.iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            })
    };
    let (x0, x1) = fold(|p| p.0);
    let (y0, y1) = fold(|p| p.1);
    let pad = (x1 - x0).max(1.0) * 0.03;
    // Matplotlib's "tab10": ten colours told apart easily.
    const TAB10: [RGBColor; 10] = [
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
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(x0 - pad..x1 + pad, (y0 / 1.5..y1 * 30.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{}", (*x * 100.0).round() / 100.0))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = TAB10[i % TAB10.len()];
        let points = shown(s);
        let style = color.stroke_width(2);
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))?
        };
        drawn
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_axis_chart_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.png");
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
        lines(&path, "test", ("kbit/s", "ms"), &series, true).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }
}
