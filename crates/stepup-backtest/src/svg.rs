//! Small inline SVG charts for the HTML report: a line chart and a stacked horizontal bar
//! chart. Coordinates are printed with one decimal, so the same data gives the same bytes.

use std::fmt::Write;

/// Width of every chart, in SVG user units (pixels at 100% zoom).
const WIDTH: f64 = 760.0;

/// Space left of the plot for axis labels or category names.
const LEFT: f64 = 56.0;

/// Space right of the plot.
const RIGHT: f64 = 16.0;

/// Estimated width of one character of 12-pixel sans-serif text, for sizing label columns.
const CHAR_WIDTH: f64 = 7.0;

/// Points at or below which the line chart also marks each point with a dot.
const MAX_DOTS: usize = 60;

/// One line of a line chart.
pub(crate) struct Line<'a> {
    /// Legend text.
    pub name: &'a str,
    /// CSS color.
    pub color: &'a str,
    /// Points as (x, y); x in any increasing unit, y in `[0, 1]`.
    pub points: Vec<(f64, f64)>,
}

/// One segment kind of a stacked bar.
pub(crate) struct Segment<'a> {
    /// Legend text.
    pub name: &'a str,
    /// CSS color.
    pub color: &'a str,
}

/// One bar: its label and the value of each segment.
pub(crate) struct Bar {
    /// Text left of the bar.
    pub label: String,
    /// One value per segment kind.
    pub values: Vec<u64>,
}

/// Draws lines of rates over time, with the y axis in percent.
///
/// `x_labels` are (x, text) pairs printed under the axis.
pub(crate) fn line_chart(title: &str, lines: &[Line<'_>], x_labels: &[(f64, String)]) -> String {
    let (height, top, bottom) = (280.0, 28.0, 36.0);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = height - top - bottom;
    let xs = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|point| point.0));
    let (x_min, x_max) = bounds(xs);
    let (y_max, ticks) = rate_axis(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
    let x_of = |x: f64| LEFT + scale(x, x_min, x_max) * plot_width;
    let y_of = |y: f64| top + plot_height - (y / y_max).min(1.0) * plot_height;

    let mut svg = open_svg(title, height);
    for step in 0..=ticks {
        let value = y_max * f64::from(step) / f64::from(ticks);
        let y = y_of(value);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{:.1}%</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            value * 100.0
        );
    }
    for (x, label) in x_labels {
        let x = x_of(*x);
        // Labels at the edges grow inwards so they are not cut off.
        let anchor = if x < LEFT + 60.0 {
            "start"
        } else if x > WIDTH - RIGHT - 60.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11">{}</text>"#,
            height - bottom + 16.0,
            escape(label)
        );
    }
    for line in lines {
        draw_line(&mut svg, line, &x_of, &y_of);
    }
    let legend: Vec<(&str, &str)> = lines.iter().map(|line| (line.name, line.color)).collect();
    draw_legend(&mut svg, &legend, LEFT, 14.0);
    svg.push_str("</svg>");
    svg
}

fn draw_line(
    svg: &mut String,
    line: &Line<'_>,
    x_of: &dyn Fn(f64) -> f64,
    y_of: &dyn Fn(f64) -> f64,
) {
    let points: Vec<String> = line
        .points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
        line.color,
        points.join(" ")
    );
    if line.points.len() <= MAX_DOTS {
        for &(x, y) in &line.points {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x_of(x),
                y_of(y),
                line.color
            );
        }
    }
}

/// Draws one horizontal bar per entry, each stacked from its segments.
pub(crate) fn stacked_bars(title: &str, segments: &[Segment<'_>], bars: &[Bar]) -> String {
    let (top, row, bar_height) = (28.0, 22.0, 16.0);
    let longest = bars
        .iter()
        .map(|bar| bar.label.chars().count())
        .max()
        .unwrap_or(0);
    let label_width = (longest as f64 * CHAR_WIDTH + 16.0).clamp(120.0, WIDTH / 2.0);
    let height = top + row * bars.len() as f64 + 12.0;
    let plot_width = WIDTH - label_width - RIGHT - 60.0;
    let max_total = bars
        .iter()
        .map(|bar| bar.values.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);

    let mut svg = open_svg(title, height);
    for (index, bar) in bars.iter().enumerate() {
        let y = top + row * index as f64;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"#,
            label_width - 8.0,
            y + bar_height - 4.0,
            escape(&shorten(
                &bar.label,
                ((label_width - 16.0) / CHAR_WIDTH) as usize
            ))
        );
        let mut x = label_width;
        for (value, segment) in bar.values.iter().zip(segments) {
            let width = *value as f64 / max_total as f64 * plot_width;
            if *value > 0 {
                let _ = write!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" \
                     height=\"{bar_height:.1}\" fill=\"{}\"><title>{}: {value}</title></rect>",
                    segment.color,
                    escape(segment.name)
                );
            }
            x += width;
        }
        let total: u64 = bar.values.iter().sum();
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{total}</text>"#,
            x + 4.0,
            y + bar_height - 4.0
        );
    }
    let legend: Vec<(&str, &str)> = segments.iter().map(|s| (s.name, s.color)).collect();
    draw_legend(&mut svg, &legend, label_width, 14.0);
    svg.push_str("</svg>");
    svg
}

fn open_svg(title: &str, height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{WIDTH:.0}\" \
         height=\"{height:.0}\" viewBox=\"0 0 {WIDTH:.0} {height:.0}\" \
         font-family=\"sans-serif\"><title>{}</title>",
        escape(title)
    )
}

fn draw_legend(svg: &mut String, entries: &[(&str, &str)], left: f64, y: f64) {
    let mut x = left;
    for (name, color) in entries {
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"12\">{}</text>",
            y - 9.0,
            x + 14.0,
            escape(name)
        );
        x += 24.0 + CHAR_WIDTH * name.chars().count() as f64;
    }
}

/// Cuts `text` to `max_chars` characters, ending in `…` when it was longer.
fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// Returns the smallest and largest x, or (0, 1) without points.
fn bounds(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    xs.fold(None, |range: Option<(f64, f64)>, x| match range {
        None => Some((x, x)),
        Some((low, high)) => Some((low.min(x), high.max(x))),
    })
    .unwrap_or((0.0, 1.0))
}

/// Maps `x` into `[0, 1]`; a single point sits in the middle.
fn scale(x: f64, min: f64, max: f64) -> f64 {
    if max > min {
        (x - min) / (max - min)
    } else {
        0.5
    }
}

/// Steps of the rate axis, as fractions; the axis uses the smallest that needs at most five.
const RATE_STEPS: [f64; 8] = [0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25];

/// Returns the top of the rate axis and its number of steps: the largest rate rounded up to
/// a whole number of round steps (1%, 2%, 5%, 10%, ...), at least 1% and at most 100%.
fn rate_axis(rates: impl Iterator<Item = f64>) -> (f64, u32) {
    let max = rates.fold(0.0_f64, f64::max).clamp(0.01, 1.0);
    let step = RATE_STEPS
        .into_iter()
        .find(|step| max / step <= 5.0)
        .unwrap_or(0.25);
    // Round before `ceil` so that a rate of exactly 3 steps does not become 4.
    let steps = ((max / step * 1e9).round() / 1e9).ceil().max(1.0);
    (steps * step, steps as u32)
}

/// Escapes text for HTML and SVG content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_chart_draws_one_polyline_per_line() {
        let lines = [
            Line {
                name: "candidate",
                color: "#1f77b4",
                points: vec![(0.0, 0.1), (1.0, 0.2)],
            },
            Line {
                name: "baseline",
                color: "#ff7f0e",
                points: vec![(0.0, 0.3), (1.0, 0.1)],
            },
        ];
        let svg = line_chart("rate", &lines, &[(0.0, "day 1".into())]);

        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("day 1"));
    }

    #[test]
    fn bars_skip_empty_segments_and_escape_labels() {
        let segments = [
            Segment {
                name: "allow",
                color: "#2ca02c",
            },
            Segment {
                name: "mfa",
                color: "#ff7f0e",
            },
        ];
        let bars = [Bar {
            label: "<rule>".into(),
            values: vec![3, 0],
        }];
        let svg = stacked_bars("per rule", &segments, &bars);

        assert_eq!(svg.matches("<rect").count(), 1 + segments.len());
        assert!(svg.contains("&lt;rule&gt;"));
    }

    #[test]
    fn long_labels_are_shortened() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }

    #[test]
    fn rate_axis_uses_round_steps() {
        let cases: [(&[f64], f64, u32); 5] = [
            (&[0.44], 0.5, 5),
            (&[0.3], 0.3, 3),
            (&[0.12], 0.125, 5),
            (&[], 0.01, 2),
            (&[1.0], 1.0, 5),
        ];
        for (rates, top, steps) in cases {
            let axis = rate_axis(rates.iter().copied());
            assert!((axis.0 - top).abs() < 1e-9, "{rates:?}: top {}", axis.0);
            assert_eq!(axis.1, steps, "{rates:?}");
        }
    }
}
