//! A latency-versus-throughput plot, written as SVG text by hand.
//!
//! A plotting crate would cost more compile time than the whole bench for one
//! chart with a few lines, so this module draws it itself: a linear x axis
//! (throughput), a logarithmic y axis (latency spans several decades once the
//! system saturates), one polyline with markers per series, a dashed goal
//! line and a legend. The output is deterministic for a given input, so the
//! SVG in `docs/` only changes when the figures do.

use std::fmt::Write as _;

/// One line of the plot.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend text.
    pub name: String,
    /// An SVG colour.
    pub color: &'static str,
    /// Dashed lines for the medians, solid for the tails.
    pub dashed: bool,
    /// `(x, y)` points, drawn in the order given; points with a y that is not
    /// positive cannot sit on a log axis and are left out.
    pub points: Vec<(f64, f64)>,
}

/// A whole chart.
#[derive(Clone, Debug)]
pub struct Plot {
    /// The title above the chart.
    pub title: String,
    /// A second line under the title (machine, date, settings).
    pub subtitle: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// A horizontal goal line: its y value and its label.
    pub goal: Option<(f64, String)>,
    /// A vertical marker (e.g. half of the peak): its x value and its label.
    pub marker: Option<(f64, String)>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 62.0;
const BOTTOM: f64 = 56.0;

/// Escapes text for an SVG text node or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step (1, 2 or 5 times a power of ten) that cuts `span` into
/// about `parts` intervals.
fn nice_step(span: f64, parts: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / parts;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = if mantissa <= 1.0 {
        1.0
    } else if mantissa <= 2.0 {
        2.0
    } else if mantissa <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Formats an axis label without trailing zeros (`0.5`, `2`, `1000`).
fn label(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// Renders the plot as a complete SVG document.
pub fn render(plot: &Plot) -> String {
    let points = || {
        plot.series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *y > 0.0)
    };
    let goal_y = plot.goal.as_ref().map(|(y, _)| *y).filter(|y| *y > 0.0);

    // x: linear from 0 to a nice bound above the largest throughput.
    let marker_x = plot
        .marker
        .as_ref()
        .map(|(x, _)| *x)
        .filter(|x| x.is_finite() && *x > 0.0);
    let x_max_data = points().map(|(x, _)| x).chain(marker_x).fold(0.0, f64::max);
    let x_step = nice_step(x_max_data.max(1.0), 5.0);
    let x_max = ((x_max_data / x_step).ceil().max(1.0)) * x_step;

    // y: logarithmic, whole decades around every value and the goal.
    let ys = || points().map(|(_, y)| y).chain(goal_y);
    let y_lo = ys().fold(f64::INFINITY, f64::min);
    let y_hi = ys().fold(0.0, f64::max);
    let (decade_lo, decade_hi) = if y_lo.is_finite() && y_hi > 0.0 {
        let lo = y_lo.log10().floor() as i32;
        let hi = (y_hi.log10().ceil() as i32).max(lo + 1);
        (lo, hi)
    } else {
        (-1, 2)
    };

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x / x_max).clamp(0.0, 1.0) * plot_w;
    let py = |y: f64| {
        let t = (y.log10() - f64::from(decade_lo)) / f64::from(decade_hi - decade_lo);
        TOP + plot_h - t.clamp(0.0, 1.0) * plot_h
    };

    let mut svg = String::new();
    // `write!` into a String cannot fail; the results are ignored below.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(&plot.title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="40" fill="#555">{}</text>"##,
        escape(&plot.subtitle)
    );

    // Grid and tick labels.
    let mut x = 0.0;
    while x <= x_max + x_step / 2.0 {
        let gx = px(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#e4e4e4"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 16.0,
            label(x)
        );
        x += x_step;
    }
    for decade in decade_lo..=decade_hi {
        let base = 10f64.powi(decade);
        for (multiple, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let y = base * multiple;
            if decade == decade_hi && multiple > 1.0 {
                break;
            }
            let gy = py(y);
            let stroke = if major { "#cfcfcf" } else { "#eeeeee" };
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="{stroke}"/>"#,
                LEFT + plot_w
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                gy + 4.0,
                label(y)
            );
        }
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        escape(&plot.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(&plot.y_label)
    );

    // The goal line.
    if let (Some(y), Some((_, text))) = (goal_y, plot.goal.as_ref()) {
        let gy = py(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#c00" stroke-dasharray="2 3"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#c00">{}</text>"##,
            LEFT + 6.0,
            gy - 4.0,
            escape(text)
        );
    }

    // The vertical marker.
    if let (Some(x), Some((_, text))) = (marker_x, plot.marker.as_ref()) {
        let gx = px(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#777" stroke-dasharray="2 3"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
            gx + 4.0,
            TOP + 14.0,
            escape(text)
        );
    }

    // The series and the legend.
    for (index, series) in plot.series.iter().enumerate() {
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let drawn: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *y > 0.0)
            .map(|(x, y)| (px(x), py(y)))
            .collect();
        if !drawn.is_empty() {
            let coords: Vec<String> = drawn
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                coords.join(" "),
                series.color
            );
            for (x, y) in &drawn {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                    series.color
                );
            }
        }
        let ly = TOP + 10.0 + index as f64 * 20.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 26.0,
            series.color
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 32.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plot(points: Vec<(f64, f64)>) -> Plot {
        Plot {
            title: "latency <vs> throughput & more".into(),
            subtitle: String::new(),
            x_label: "orders/s".into(),
            y_label: "ms".into(),
            series: vec![
                Series {
                    name: "create p99".into(),
                    color: "#1f77b4",
                    dashed: false,
                    points: points.clone(),
                },
                Series {
                    name: "saga p50".into(),
                    color: "#ff7f0e",
                    dashed: true,
                    points,
                },
            ],
            goal: Some((25.0, "saga p99 goal 25 ms".into())),
            marker: Some((500.0, "half of peak".into())),
        }
    }

    #[test]
    fn draws_one_line_per_series_with_escaped_text() {
        let svg = render(&plot(vec![(100.0, 1.2), (500.0, 3.4), (1000.0, 80.0)]));
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("latency &lt;vs&gt; throughput &amp; more"));
        assert!(svg.contains(">half of peak<") && svg.contains(">saga p99 goal 25 ms<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Decades from 1 to 100 ms are labelled.
        for tick in [">1<", ">10<", ">100<"] {
            assert!(svg.contains(tick), "missing tick {tick}");
        }
    }

    #[test]
    fn points_that_cannot_be_drawn_are_left_out() {
        let svg = render(&plot(vec![(100.0, 0.0), (f64::NAN, 2.0), (200.0, 2.0)]));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(!svg.contains("NaN"));
        // No data at all still gives a valid, empty chart.
        let empty = render(&plot(Vec::new()));
        assert_eq!(empty.matches("<polyline").count(), 0);
        assert!(!empty.contains("NaN") && !empty.contains("inf"));
    }

    #[test]
    fn steps_and_labels_are_round() {
        assert_eq!(nice_step(1000.0, 5.0), 200.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(2000.0), "2000");
        assert_eq!(label(0.0), "0");
    }
}
