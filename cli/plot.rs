//! Line plots of SLO attainment against a swept parameter, as SVG and PNG (plotters).
//!
//! Text is laid out with DejaVu Sans embedded in the binary (`docs/fonts/`, with its license):
//! plotters' ab_glyph backend needs a registered font, and shipping one makes the PNG pixels the
//! same on every machine instead of depending on installed system fonts.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Family name the embedded font is registered under (SVG text names it too).
const FONT: &str = "DejaVu Sans";
static FONT_BYTES: &[u8] = include_bytes!("../docs/fonts/DejaVuSans.ttf");

/// Colour-blind-safe palette (Okabe–Ito), in placer order.
const COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// One line: a placer's attainment (0–1; `None` where it has no plan) at every axis value, and
/// the value where it reaches the target, if it does.
pub struct Series {
    /// Legend text.
    pub label: String,
    pub points: Vec<(f64, Option<f64>)>,
    pub marker: Option<f64>,
}

/// What a plot shows.
pub struct Plot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    /// Target attainment drawn as a dashed line (0.99).
    pub target: f64,
    /// Label only whole numbers on the x axis (devices, model sets).
    pub integral_x: bool,
    /// Legend in the lower left (curves falling to the right) instead of the lower right.
    pub legend_left: bool,
    pub series: &'a [Series],
}

fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| "the embedded plot font is not a valid TrueType font".to_string())
    })
    .clone()
}

/// Writes the plot to `svg` and `png`.
pub fn write(plot: &Plot, svg: &Path, png: &Path) -> Result<(), String> {
    register_font()?;
    const SIZE: (u32, u32) = (900, 560);
    let fail = |p: &Path, e: String| format!("{}: cannot draw the plot: {e}", p.display());
    draw(SVGBackend::new(svg, SIZE).into_drawing_area(), plot).map_err(|e| fail(svg, e))?;
    draw(BitMapBackend::new(png, SIZE).into_drawing_area(), plot).map_err(|e| fail(png, e))?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, plot: &Plot) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;

    let xs = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    let pad = if x1 - x0 > 0.0 { (x1 - x0) * 0.04 } else { 0.5 };
    let lowest = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(1.0f64, f64::min);
    // Start the y axis at the decade below the lowest point, so high attainments stay readable.
    let y0 = ((lowest * 10.0).floor() * 10.0).clamp(0.0, 90.0);

    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, (FONT, 22))
        .margin(18)
        .x_label_area_size(52)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), y0..101.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(plot.x_label)
        .y_desc("SLO attainment (%)")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| {
            if !plot.integral_x {
                // Shortest form that still tells ticks apart (0.25, 1.5, 10).
                format!("{}", (x * 1e6).round() / 1e6)
            } else if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;

    let target = plot.target * 100.0;
    chart
        .draw_series(DashedLineSeries::new(
            [(x0 - pad, target), (x1 + pad, target)],
            6,
            4,
            RGBColor(120, 120, 120).stroke_width(1),
        ))
        .map_err(err)?;

    for (i, s) in plot.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Placers often coincide: earlier lines are wider and every placer has its own point
        // shape, so a line hidden under another still shows at its edges.
        let width = 2 + (plot.series.len() - 1 - i).min(4) as u32;
        let shape = i % 3;
        let mut pts: Vec<(f64, Option<f64>)> = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        // A point without a plan breaks the line instead of pretending to be 0 %.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (x, y) in pts {
            match y {
                Some(y) => runs.last_mut().expect("one run").push((x, y * 100.0)),
                None => runs.push(Vec::new()),
            }
        }
        let mut first = true;
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let series = chart
                .draw_series(LineSeries::new(
                    run.iter().copied(),
                    color.stroke_width(width),
                ))
                .map_err(err)?;
            if first {
                series.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                });
                first = false;
            }
            for &p in run {
                match shape {
                    0 => chart.draw_series(std::iter::once(Circle::new(p, 4, color.filled()))),
                    1 => chart.draw_series(std::iter::once(TriangleMarker::new(
                        p,
                        5,
                        color.filled(),
                    ))),
                    _ => {
                        chart.draw_series(std::iter::once(Cross::new(p, 4, color.stroke_width(2))))
                    }
                }
                .map_err(err)?;
            }
        }
        if let Some(mx) = s.marker {
            let hit = runs.iter().flatten().find(|p| (p.0 - mx).abs() < 1e-12);
            if let Some(&p) = hit {
                chart
                    .draw_series(std::iter::once(Circle::new(
                        p,
                        7 + 3 * i as u32,
                        color.stroke_width(2),
                    )))
                    .map_err(err)?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(if plot.legend_left {
            SeriesLabelPosition::LowerLeft
        } else {
            SeriesLabelPosition::LowerRight
        })
        .margin(12)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
