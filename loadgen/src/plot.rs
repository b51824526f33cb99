//! `--plot FILE.svg`: the latency percentile curve, drawn by hand as SVG so that no
//! plotting dependency is needed.
//!
//! The x axis is the percentile on HdrHistogram's usual scale, `log10(1 / (1 - q))`:
//! 0%, 90%, 99%, 99.9% ... are equally spaced, so the tail gets as much room as the
//! median. The y axis is latency, linear from zero.

use crate::report::fmt_ns;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Points on the curve per decade of the x axis.
const POINTS_PER_DECADE: u32 = 50;
/// Most decades drawn (99.9999%): beyond that no run has enough samples.
const DECADES_MAX: u32 = 6;

/// Escapes text for SVG (and XML) content and attribute values. Also used by the
/// simulation's timeline.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// The SVG document of `h`'s percentile curve (latencies in nanoseconds).
pub fn percentile_svg(title: &str, h: &Histogram<u64>) -> String {
    // Show as many decades as the sample count supports: with n samples, the
    // 1 - 1/n quantile is the last one that is not the maximum.
    let decades = if h.len() < 10 {
        1
    } else {
        ((h.len() as f64).log10().floor() as u32).clamp(1, DECADES_MAX)
    };
    let y_max_ns = nice_ceiling(h.max().max(1) as f64);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |decade: f64| LEFT + plot_w * decade / f64::from(decades);
    let y_of = |ns: f64| TOP + plot_h * (1.0 - ns / y_max_ns);

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and labels.
    for d in 0..=decades {
        let x = x_of(f64::from(d));
        // Built as text: computed as a float, 99.999 prints as 99.99900000000001.
        let label = match d {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            d => format!("99.{}%", "9".repeat(d as usize - 2)).replace(".%", "%"),
        };
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    for i in 0..=5 {
        let ns = y_max_ns * f64::from(i) / 5.0;
        let y = y_of(ns);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            fmt_ns(ns as u64)
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        o,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // The curve.
    if !h.is_empty() {
        let mut points = String::new();
        let steps = decades * POINTS_PER_DECADE;
        for i in 0..=steps {
            let decade = f64::from(i) / f64::from(POINTS_PER_DECADE);
            let q = 1.0 - 10f64.powf(-decade);
            let v = h.value_at_quantile(q) as f64;
            let _ = write!(points, "{:.1},{:.1} ", x_of(decade), y_of(v));
        }
        let _ = writeln!(
            o,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
            points.trim_end()
        );
    }
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(o, "</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn draws_a_curve_with_labelled_axes() {
        let mut h = new_histogram();
        for i in 1..=10_000u64 {
            h.record(i * 1_000).unwrap();
        }
        let svg = percentile_svg("a <test>", &h);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;test&gt;"));
        assert!(svg.contains(">99.99%<"));
        assert!(svg.contains("<polyline"));
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(10_000_001.0), 20_000_000.0);
        // An empty histogram still gives a valid document.
        assert!(percentile_svg("empty", &new_histogram()).contains("</svg>"));
    }
}
