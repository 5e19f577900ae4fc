//! The report's charts, each drawn by plotters' SVG backend into a `String` that the page
//! inlines. The charts only draw numbers the SQL queries computed (bins, counts, per-batch
//! values); they compute nothing a reader could not get back from the queries.
//!
//! Every chart draws something visible from a single value (a bar, or a marked point), and
//! every axis range is padded and kept finite: plotters maps a zero-width range to one pixel
//! column and asserts that key-point ranges are not NaN, so a run with one batch, one class or
//! equal scores must not reach it with such a range.
//!
//! Targets plotters 0.3.7 with `default-features = false, features = ["svg_backend",
//! "line_series"]`: without `ttf` text is laid out by plotters' size estimate and rendered by
//! the browser (`<text>` elements), which is all an SVG needs; bars are plain `Rectangle`s, so
//! the `histogram` feature (whose bars come out in hash-map order) is not used.

use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;

/// Width of every chart, in pixels (the page scales it down on narrow screens).
const WIDTH: u32 = 720;
/// Height of the histograms and curves.
const HEIGHT: u32 = 300;
/// Font of captions, axis labels and legends (the browser picks the face).
const FONT: &str = "sans-serif";
/// Bars.
const BAR: RGBColor = RGBColor(31, 119, 180);
/// The outlined mean-confidence bars of the reliability diagram.
const OUTLINE: RGBColor = RGBColor(214, 39, 40);
/// Reference lines (perfect calibration).
const GREY: RGBColor = RGBColor(127, 127, 127);
/// Series and marker colours (matplotlib's tab10, minus the bar blue for markers).
const PALETTE: [RGBColor; 10] = [
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
/// Longest class name drawn on the class axis (the table beside the chart has the full name).
const MAX_NAME: usize = 28;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// One bar of a histogram: `count` values in `[lo, hi)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    /// Lower edge.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Values in the bin.
    pub count: i64,
}

/// A vertical line across a histogram (a threshold), with its legend text.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where it crosses the x axis.
    pub x: f64,
    /// Legend text.
    pub label: String,
}

/// One curve: points in x order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text (shown when a chart has more than one curve).
    pub name: String,
    /// `(x, y)` points; non-finite ones are left out.
    pub points: Vec<(f64, f64)>,
}

/// One confidence bin of the reliability diagram.
#[derive(Debug, Clone, PartialEq)]
pub struct ReliabilityBin {
    /// Lower edge (exclusive, except 0 for the first bin).
    pub lo: f64,
    /// Upper edge (inclusive).
    pub hi: f64,
    /// Predictions in the bin.
    pub count: i64,
    /// Their mean confidence.
    pub confidence: f64,
    /// Their accuracy.
    pub accuracy: f64,
}

/// Draws into a fresh SVG document of `size` pixels on white and returns its text; `name`
/// names the chart in errors.
fn render(name: &str, size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Drawn) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        // The backend writes into `svg` and closes its tags on `present` (or when dropped),
        // so the text is complete once this block ends.
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
            .map_err(|e| anyhow::anyhow!("cannot draw the {name} chart: {e}"))?;
    }
    Ok(svg)
}

/// The finite `values`' range, widened by 5% a side, or around a single value, or `0..1` for
/// none: always finite with `lo < hi`.
fn span(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.5 };
    let (a, b) = (lo - pad, hi + pad);
    // Near f64::MAX the padding overflows, and near 1e300 it can vanish below the spacing of
    // floats; either way fall back to a range that plotters can map (the charts clamp what
    // they draw into the range: plotters overflows on coordinates far outside it).
    if a.is_finite() && b.is_finite() && a < b {
        (a, b)
    } else {
        (0.0, 1.0)
    }
}

/// The top of a count axis: a little above the largest count, at least 1.
fn count_axis(counts: impl IntoIterator<Item = i64>) -> f64 {
    let max = counts.into_iter().max().unwrap_or(0).max(1);
    max as f64 * 1.1
}

/// A tick label for an axis of whole numbers (counts, batch indices): the number at whole
/// ticks, nothing between them (plotters puts ticks at 0.2 steps on a short range).
fn integer_label(v: &f64) -> String {
    let r = v.round();
    if (v - r).abs() < 1e-6 {
        format!("{}", r as i64)
    } else {
        String::new()
    }
}

/// The class name at tick `y` of the class axis, where class `i` of `names` sits at
/// `n - 1 - i` (so the first, most frequent, class is at the top).
fn class_at(names: &[String], y: f64) -> String {
    let n = names.len() as f64;
    let r = y.round();
    if (y - r).abs() > 1e-6 || r < 0.0 || r >= n {
        return String::new();
    }
    names.get((n - 1.0 - r) as usize).cloned().unwrap_or_default()
}

/// `name` cut to `max` characters, with an ellipsis when cut.
fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Horizontal bars: images predicted per class, `labels[i]` with `counts[i]`, first at the top.
pub fn class_bars(labels: &[String], counts: &[i64]) -> anyhow::Result<String> {
    let n = labels.len().min(counts.len());
    let names: Vec<String> = labels[..n].iter().map(|l| shorten(l, MAX_NAME)).collect();
    // Roughly 7 pixels a character at the 12-pixel label font plotters uses.
    let widest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) as u32;
    let left = (widest * 7 + 16).clamp(48, 220);
    let rows = n.max(1);
    let top = count_axis(counts[..n].iter().copied());
    let height = 80 + 22 * rows as u32;
    render("class histogram", (WIDTH, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Images per predicted class", (FONT, 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(left)
            .build_cartesian_2d(0f64..top, -0.5f64..(rows as f64 - 0.5))?;
        let name_at = |y: &f64| class_at(&names, *y);
        // One label a class: with `rows` labels asked for on a range `rows` wide, plotters'
        // tick search settles on a step of 1, so the ticks fall on the bars.
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows)
            .y_label_formatter(&name_at)
            .x_label_formatter(&integer_label)
            .x_desc("images")
            .draw()?;
        chart.draw_series(counts[..n].iter().enumerate().map(|(i, &c)| {
            let y = (n - 1 - i) as f64;
            Rectangle::new([(0.0, y - 0.35), (c as f64, y + 0.35)], BAR.filled())
        }))?;
        Ok(())
    })
}

/// Vertical bars over a numeric axis, with `markers` as vertical lines (thresholds).
pub fn histogram(title: &str, x_desc: &str, bins: &[Bin], markers: &[Marker]) -> anyhow::Result<String> {
    let bins: Vec<&Bin> = bins.iter().filter(|b| b.lo.is_finite() && b.hi.is_finite()).collect();
    let markers: Vec<&Marker> = markers.iter().filter(|m| m.x.is_finite()).collect();
    let (x0, x1) = span(bins.iter().flat_map(|b| [b.lo, b.hi]).chain(markers.iter().map(|m| m.x)));
    // A bin with no width (equal edges) would draw nothing: give it a sliver of the axis.
    let min_width = (x1 - x0) / 200.0;
    let top = count_axis(bins.iter().map(|b| b.count));
    render(title, (WIDTH, HEIGHT), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0f64..top)?;
        chart.configure_mesh().disable_x_mesh().x_desc(x_desc).y_desc("images").y_label_formatter(&integer_label).draw()?;
        chart.draw_series(bins.iter().map(|b| {
            let hi = if b.hi - b.lo < min_width { b.lo + min_width } else { b.hi };
            Rectangle::new([(b.lo.clamp(x0, x1), 0.0), (hi.clamp(x0, x1), b.count as f64)], BAR.filled())
        }))?;
        for (i, m) in markers.iter().enumerate() {
            // Markers skip the bar blue so a line stands out from the bars.
            let style = PALETTE[1 + i % (PALETTE.len() - 1)].stroke_width(2);
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(m.x.clamp(x0, x1), 0.0), (m.x.clamp(x0, x1), top)], style)))?
                .label(m.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        }
        if !markers.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 12))
                .draw()?;
        }
        Ok(())
    })
}

/// Curves against a whole-number x axis (the batch index), each point marked, so one batch
/// still shows as a dot.
pub fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<String> {
    let series: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s.name.clone(), s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect::<Vec<_>>()))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let (x0, x1) = span(series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)));
    let (y0, y1) = span(series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)));
    let legend = series.len() > 1;
    render(title, (WIDTH, HEIGHT), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).x_label_formatter(&integer_label).draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            // Filled, so the points `point_size` adds are dots rather than rings.
            let style = PALETTE[i % PALETTE.len()].filled().stroke_width(2);
            let inside = points.iter().map(|&(x, y)| (x.clamp(x0, x1), y.clamp(y0, y1)));
            let drawn = chart.draw_series(LineSeries::new(inside, style).point_size(3))?;
            if legend {
                drawn.label(name.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 12))
                .draw()?;
        }
        Ok(())
    })
}

/// The reliability diagram: per confidence bin, accuracy (filled bars) against mean confidence
/// (outlined bars), with the diagonal of perfect calibration; bins without predictions are
/// not drawn.
pub fn reliability(bins: &[ReliabilityBin]) -> anyhow::Result<String> {
    let bins: Vec<&ReliabilityBin> =
        bins.iter().filter(|b| b.count > 0 && [b.lo, b.hi, b.confidence, b.accuracy].iter().all(|v| v.is_finite())).collect();
    // Narrower than the bin, so neighbouring bins stay apart.
    let inset = |b: &ReliabilityBin| {
        let w = (b.hi - b.lo).abs() * 0.1;
        (b.lo + w, b.hi - w)
    };
    render("reliability diagram", (WIDTH, 360), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Reliability (in-distribution images with a truth label)", (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..1.05f64)?;
        chart.configure_mesh().x_desc("confidence").y_desc("accuracy").draw()?;
        let diagonal = GREY.stroke_width(1);
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(0.0, 0.0), (1.0, 1.0)], diagonal)))?
            .label("perfect calibration")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], diagonal));
        chart
            .draw_series(bins.iter().map(|b| {
                let (lo, hi) = inset(*b);
                Rectangle::new([(lo, 0.0), (hi, b.accuracy)], BAR.mix(0.8).filled())
            }))?
            .label("accuracy")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BAR.mix(0.8).filled()));
        chart
            .draw_series(bins.iter().map(|b| {
                let (lo, hi) = inset(*b);
                Rectangle::new([(lo, 0.0), (hi, b.confidence)], OUTLINE.stroke_width(2))
            }))?
            .label("mean confidence")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], OUTLINE.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rectangles of positive size after the background one, and marked points.
    fn drawn(svg: &str) -> (usize, usize) {
        let rects = svg
            .split("<rect")
            .skip(2)
            .filter(|r| {
                let attr = |name: &str| {
                    r.split(&format!(" {name}=\"")).nth(1).and_then(|v| v.split('"').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
                };
                attr("width") > 0.0 && attr("height") > 0.0
            })
            .count();
        (rects, svg.matches("<circle").count())
    }

    #[test]
    fn every_chart_draws_something_from_one_value() {
        let bars = class_bars(&["cat".to_string()], &[1]).unwrap();
        assert!(drawn(&bars).0 >= 1, "{bars}");
        assert!(bars.contains(">\ncat\n<") || bars.contains(">cat<"), "the class name is on the axis: {bars}");

        let one = [Bin { lo: 0.5, hi: 0.55, count: 1 }];
        assert!(drawn(&histogram("confidence", "confidence", &one, &[]).unwrap()).0 >= 1);
        // Equal edges (every score the same) still give a bar, and the threshold a line.
        let flat = [Bin { lo: -2.0, hi: -2.0, count: 3 }];
        let marked = histogram("ood", "ood_score", &flat, &[Marker { x: -2.0, label: "threshold".into() }]).unwrap();
        assert!(drawn(&marked).0 >= 1, "{marked}");
        assert!(marked.contains("threshold"));

        let curve = lines("loss", "batch", "loss", &[Series { name: "loss_last".into(), points: vec![(0.0, 1.5)] }]).unwrap();
        assert_eq!(drawn(&curve).1, 1, "{curve}");

        let bin = [ReliabilityBin { lo: 0.9, hi: 1.0, count: 2, confidence: 0.95, accuracy: 0.5 }];
        assert!(drawn(&reliability(&bin).unwrap()).0 >= 2, "an accuracy bar and a confidence bar");
    }

    #[test]
    fn non_finite_and_empty_input_draws_axes_without_panicking() {
        let nan = [Bin { lo: f64::NAN, hi: 1.0, count: 1 }];
        assert!(histogram("h", "x", &nan, &[Marker { x: f64::INFINITY, label: "t".into() }]).unwrap().starts_with("<svg"));
        let points = vec![(0.0, f64::NAN), (f64::INFINITY, 1.0)];
        assert!(lines("l", "batch", "y", &[Series { name: "s".into(), points }]).unwrap().starts_with("<svg"));
        assert!(lines("l", "batch", "y", &[]).unwrap().starts_with("<svg"));
        assert!(class_bars(&[], &[]).unwrap().starts_with("<svg"));
        assert!(reliability(&[]).unwrap().starts_with("<svg"));
        let huge = [Bin { lo: -f64::MAX, hi: f64::MAX, count: 1 }];
        assert!(histogram("h", "x", &huge, &[]).unwrap().starts_with("<svg"));
    }

    #[test]
    fn ranges_are_finite_and_wide() {
        assert_eq!(span(std::iter::empty()), (0.0, 1.0));
        let (lo, hi) = span([3.0]);
        assert!(lo < 3.0 && hi > 3.0);
        let (lo, hi) = span([0.0, 10.0, f64::NAN]);
        assert!((lo, hi) == (-0.5, 10.5));
        assert_eq!(integer_label(&2.0000000001), "2");
        assert_eq!(integer_label(&0.4), "");
        let names = vec!["first".to_string(), "second".to_string()];
        assert_eq!((class_at(&names, 1.0), class_at(&names, 0.0), class_at(&names, 0.5), class_at(&names, 2.0)), ("first".into(), "second".into(), String::new(), String::new()));
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
