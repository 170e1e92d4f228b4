//! The SVG chart of a run's timeline, written beside its JSON report: two panels
//! on one time axis, throughput (operations/s) above and latency p50 / p99 (ms)
//! below, each with its axis labels and its peak values; a legend, and a title
//! naming the mode and the run's parameters. Hand-written SVG 1.1, no scripts.

use std::fmt::Write as _;

use crate::timeline::{Timeline, TimelinePoint};

/// What the chart says about its run besides the timeline.
pub(crate) struct ChartInfo {
    /// The mode and what it ran against, e.g. `broker-bench produce: topic bench`.
    pub(crate) title: String,
    /// The run's parameters: URL count, size, concurrency, ….
    pub(crate) params: String,
    /// The run's result in a line (rate, latency), or empty.
    pub(crate) result: String,
    /// The throughput axis' unit, e.g. `acked msgs/s`.
    pub(crate) ops: &'static str,
    /// Seconds from the start not measured (shaded), zero for none.
    pub(crate) warmup_s: f64,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 600.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 930.0;
const PANEL_HEIGHT: f64 = 190.0;
const THROUGHPUT_TOP: f64 = 115.0;
const LATENCY_TOP: f64 = 345.0;
const THROUGHPUT_COLOR: &str = "#1f77b4";
const P50_COLOR: &str = "#2ca02c";
const P99_COLOR: &str = "#ff7f0e";
const ERROR_COLOR: &str = "#d62728";
const WARMUP_FILL: &str = "#efefef";

/// The chart of `timeline`, a complete SVG document; one saying "no data" when the
/// timeline has no point.
pub(crate) fn svg(info: &ChartInfo, timeline: &Timeline) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<title>{}</title>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="30" font-size="18" font-weight="bold">{}</text>
<text x="{LEFT}" y="50" fill="#333333">{}</text>
<text x="{LEFT}" y="68" fill="#333333">{}</text>
"##,
        escape(&format!("{}: {}", info.title, info.params)),
        escape(&info.title),
        escape(&info.params),
        escape(&info.result),
    );
    let points: Vec<&TimelinePoint> = timeline
        .points
        .iter()
        .filter(|p| p.t_s.is_finite() && p.ops_per_s.is_finite())
        .collect();
    if points.is_empty() {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="24" fill="#888888" text-anchor="middle">no data</text>
</svg>
"##,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    }

    let last_t = points.iter().map(|p| p.t_s).fold(0.0, f64::max);
    let time = Axis::new(last_t);
    let x = |t: f64| LEFT + t.clamp(0.0, time.max) / time.max * (RIGHT - LEFT);
    let peak_ops = points.iter().map(|p| p.ops_per_s).fold(0.0, f64::max);
    let (peak_p50, peak_p99, peak_max) = (
        peak(&points, |p| p.p50_ms),
        peak(&points, |p| p.p99_ms),
        peak(&points, |p| p.max_ms),
    );
    let errors: u64 = points.iter().map(|p| p.errors).sum();

    legend(&mut out, info.warmup_s > 0.0);

    // Throughput.
    let ops_axis = Axis::new(peak_ops * 1.05);
    let ops_y = |v: f64| y(THROUGHPUT_TOP, v, ops_axis.max);
    frame(
        &mut out,
        THROUGHPUT_TOP,
        &time,
        &ops_axis,
        info.ops,
        info.warmup_s,
        false,
    );
    let throughput: Vec<_> = points.iter().map(|p| (p.t_s, Some(p.ops_per_s))).collect();
    series(
        &mut out,
        "throughput",
        THROUGHPUT_COLOR,
        &path(&throughput, x, ops_y),
    );
    for p in points.iter().filter(|p| p.errors > 0) {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{ERROR_COLOR}"><title>{} errors in the interval ending at {:.1} s</title></circle>"##,
            x(p.t_s),
            THROUGHPUT_TOP + PANEL_HEIGHT,
            p.errors,
            p.t_s
        );
    }
    note(
        &mut out,
        THROUGHPUT_TOP,
        &format!("peak {} {}, errors {errors}", number(peak_ops), info.ops),
    );

    // Latency.
    let latency_axis = Axis::new(peak_p99.or(peak_p50).unwrap_or(0.0) * 1.05);
    let latency_y = |v: f64| y(LATENCY_TOP, v, latency_axis.max);
    frame(
        &mut out,
        LATENCY_TOP,
        &time,
        &latency_axis,
        &format!("{} (ms)", timeline.latency.label()),
        info.warmup_s,
        true,
    );
    let p50: Vec<_> = points.iter().map(|p| (p.t_s, p.p50_ms)).collect();
    let p99: Vec<_> = points.iter().map(|p| (p.t_s, p.p99_ms)).collect();
    series(&mut out, "p50", P50_COLOR, &path(&p50, x, latency_y));
    series(&mut out, "p99", P99_COLOR, &path(&p99, x, latency_y));
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{} ms", number(v)));
    note(
        &mut out,
        LATENCY_TOP,
        &format!(
            "peak p99 {}, peak p50 {}, max {}",
            ms(peak_p99),
            ms(peak_p50),
            ms(peak_max)
        ),
    );
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (s)</text>
</svg>
"##,
        (LEFT + RIGHT) / 2.0,
        LATENCY_TOP + PANEL_HEIGHT + 42.0
    );
    out
}

/// The highest finite value of `f` over the points, if any.
fn peak(points: &[&TimelinePoint], f: impl Fn(&TimelinePoint) -> Option<f64>) -> Option<f64> {
    points
        .iter()
        .copied()
        .filter_map(f)
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

/// A linear axis from zero to a round `max`, ticks every `step`.
struct Axis {
    max: f64,
    step: f64,
}

impl Axis {
    /// An axis holding `data_max`, with about five ticks of 1, 2 or 5 × 10^k.
    fn new(data_max: f64) -> Self {
        let data_max = if data_max.is_finite() && data_max > 0.0 {
            data_max
        } else {
            1.0
        };
        let raw = data_max / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = match raw / magnitude {
            n if n <= 1.0 => 1.0,
            n if n <= 2.0 => 2.0,
            n if n <= 5.0 => 5.0,
            _ => 10.0,
        } * magnitude;
        Self {
            max: (data_max / step).ceil() * step,
            step,
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> {
        let (n, step) = ((self.max / self.step).round() as u32, self.step);
        (0..=n).map(move |i| f64::from(i) * step)
    }

    fn label(&self, value: f64) -> String {
        let decimals = if self.step >= 1.0 {
            0
        } else {
            (-self.step.log10()).ceil() as usize
        };
        format!("{value:.decimals$}")
    }
}

/// The y coordinate of `value` in the panel at `top` whose axis ends at `max`.
fn y(top: f64, value: f64, max: f64) -> f64 {
    top + PANEL_HEIGHT - value.clamp(0.0, max) / max * PANEL_HEIGHT
}

/// How a legend entry is drawn.
enum Swatch {
    Line,
    Dot,
    Area,
}

fn legend(out: &mut String, warmup: bool) {
    let mut entries = vec![
        ("throughput", THROUGHPUT_COLOR, Swatch::Line),
        ("p50 latency", P50_COLOR, Swatch::Line),
        ("p99 latency", P99_COLOR, Swatch::Line),
        ("errors", ERROR_COLOR, Swatch::Dot),
    ];
    if warmup {
        entries.push(("warmup (not measured)", WARMUP_FILL, Swatch::Area));
    }
    let mut at = LEFT;
    for (name, color, swatch) in entries {
        let _ = match swatch {
            Swatch::Line => write!(
                out,
                r##"<line x1="{at:.1}" y1="92" x2="{:.1}" y2="92" stroke="{color}" stroke-width="2.5"/>"##,
                at + 18.0
            ),
            Swatch::Dot => write!(
                out,
                r##"<circle cx="{:.1}" cy="92" r="3.5" fill="{color}"/>"##,
                at + 9.0
            ),
            Swatch::Area => write!(
                out,
                r##"<rect x="{at:.1}" y="86" width="18" height="12" fill="{color}" stroke="#cccccc"/>"##
            ),
        };
        let _ = writeln!(out, r##"<text x="{:.1}" y="96">{name}</text>"##, at + 24.0);
        at += 24.0 + 7.0 * name.len() as f64 + 20.0;
    }
}

/// A panel's frame: warmup shading, grid, ticks and labels of both axes, the y
/// axis' name; the time labels under the bottom panel only.
fn frame(
    out: &mut String,
    top: f64,
    time: &Axis,
    values: &Axis,
    name: &str,
    warmup_s: f64,
    time_labels: bool,
) {
    let bottom = top + PANEL_HEIGHT;
    let x = |t: f64| LEFT + t.clamp(0.0, time.max) / time.max * (RIGHT - LEFT);
    if warmup_s > 0.0 {
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="{WARMUP_FILL}"/>"##,
            x(warmup_s) - LEFT
        );
    }
    for value in values.ticks() {
        let at = y(top, value, values.max);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{RIGHT}" y2="{at:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555555">{}</text>"##,
            LEFT - 6.0,
            at + 4.0,
            values.label(value)
        );
    }
    for t in time.ticks() {
        let at = x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{at:.1}" y1="{bottom}" x2="{at:.1}" y2="{:.1}" stroke="#555555"/>"##,
            bottom + 5.0
        );
        if time_labels {
            let _ = writeln!(
                out,
                r##"<text x="{at:.1}" y="{:.1}" text-anchor="middle" fill="#555555">{}</text>"##,
                bottom + 18.0,
                time.label(t)
            );
        }
    }
    let middle = top + PANEL_HEIGHT / 2.0;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#555555"/>
<text x="24" y="{middle:.1}" text-anchor="middle" transform="rotate(-90 24 {middle:.1})">{}</text>"##,
        RIGHT - LEFT,
        escape(name)
    );
}

/// The peak values above a panel's top right corner.
fn note(out: &mut String, top: f64, text: &str) {
    let _ = writeln!(
        out,
        r##"<text x="{RIGHT}" y="{:.1}" text-anchor="end" fill="#333333">{}</text>"##,
        top - 6.0,
        escape(text)
    );
}

fn series(out: &mut String, id: &str, color: &str, d: &str) {
    let _ = writeln!(
        out,
        r##"<path id="{id}" d="{d}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>"##
    );
}

/// Path data through the points with a value; a point without one breaks the
/// line, and a point alone is drawn as a dot.
fn path(points: &[(f64, Option<f64>)], x: impl Fn(f64) -> f64, y: impl Fn(f64) -> f64) -> String {
    let mut d = String::new();
    let mut run = 0;
    for &(t, value) in points {
        match value.filter(|v| v.is_finite()) {
            Some(value) => {
                let command = if run == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{command}{:.1},{:.1}", x(t), y(value));
                run += 1;
            }
            None => {
                if run == 1 {
                    d.push_str("h0.1");
                }
                run = 0;
            }
        }
    }
    if run == 1 {
        d.push_str("h0.1");
    }
    d
}

/// A value of a note: whole above 100, else two significant decimals at most.
fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::LatencyKind;

    fn info() -> ChartInfo {
        ChartInfo {
            title: "broker-bench produce: topic <bench> & co".into(),
            params: "3 URLs, 4 producers x 64 in flight, batch 1, 1024 B".into(),
            result: "1234 msgs/s".into(),
            ops: "acked msgs/s",
            warmup_s: 1.0,
        }
    }

    fn point(t_s: f64, ops_per_s: f64, errors: u64, p50: Option<f64>) -> TimelinePoint {
        TimelinePoint {
            t_s,
            ops_per_s,
            errors,
            p50_ms: p50,
            p99_ms: p50.map(|p| p * 4.0),
            max_ms: p50.map(|p| p * 10.0),
        }
    }

    /// The `d` of the path with `id`.
    fn path_data<'a>(svg: &'a str, id: &str) -> &'a str {
        let start = svg
            .find(&format!(r#"<path id="{id}" d=""#))
            .unwrap_or_else(|| panic!("no path {id}"))
            + r#"<path id="" d=""#.len()
            + id.len();
        let len = svg[start..].find('"').expect("closed attribute");
        &svg[start..start + len]
    }

    /// Every element closed in order, every `&` an entity: enough of XML's
    /// well-formedness for hand-written SVG (no comments, no CDATA).
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<?xml "), "{svg}");
        let body = &svg[svg.find("?>").expect("declaration") + 2..];
        let mut open: Vec<&str> = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
                    "bare & in {text}"
                );
            }
            let end = start + rest[start..].find('>').expect("tag closed");
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "< inside the tag {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name.trim()), "</{name}> closes another");
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().expect("a name"));
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert!(rest.trim().is_empty(), "text after </svg>: {rest}");
    }

    #[test]
    fn a_timeline_is_drawn_with_its_title() {
        let timeline = Timeline {
            latency: LatencyKind::Request,
            points: vec![
                point(1.0, 900.0, 0, Some(1.5)),
                point(2.0, 1200.0, 3, Some(2.0)),
                point(3.0, 0.0, 7, None),
                point(4.0, 1100.5, 0, Some(1.8)),
            ],
        };
        let svg = svg(&info(), &timeline);
        assert_well_formed(&svg);
        assert!(svg.contains("broker-bench produce: topic &lt;bench&gt; &amp; co"));
        assert!(svg.contains("3 URLs, 4 producers x 64 in flight, batch 1, 1024 B"));
        let throughput = path_data(&svg, "throughput");
        assert_eq!(throughput.matches(['M', 'L']).count(), 4, "{throughput}");
        // The interval without latencies breaks the lines; the point after it
        // alone is a dot.
        for id in ["p50", "p99"] {
            let d = path_data(&svg, id);
            assert!(d.starts_with('M') && d.contains('L'), "{id}: {d}");
            assert_eq!(d.matches('M').count(), 2, "{id}: {d}");
            assert!(d.ends_with("h0.1"), "{id}: {d}");
        }
        assert!(svg.contains("peak 1200 acked msgs/s, errors 10"), "{svg}");
        assert!(svg.contains("peak p99 8.00 ms, peak p50 2.00 ms, max 20.0 ms"));
        assert!(svg.contains("request latency (ms)"));
        assert_eq!(svg.matches("errors in the interval").count(), 2);
        assert!(svg.contains("warmup (not measured)"));
        assert!(!svg.contains("no data"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn an_empty_timeline_says_no_data() {
        let timeline = Timeline {
            latency: LatencyKind::EndToEnd,
            points: Vec::new(),
        };
        let svg = svg(&info(), &timeline);
        assert_well_formed(&svg);
        assert!(svg.contains(">no data</text>"));
        assert!(svg.contains("topic &lt;bench&gt;"));
        assert!(!svg.contains("<path"));
    }

    #[test]
    fn a_timeline_without_latencies_or_throughput_still_draws() {
        let timeline = Timeline {
            latency: LatencyKind::EndToEnd,
            points: vec![point(0.5, 0.0, 0, None), point(1.0, 0.0, 0, None)],
        };
        let svg = svg(&info(), &timeline);
        assert_well_formed(&svg);
        assert!(!path_data(&svg, "throughput").is_empty());
        assert_eq!(path_data(&svg, "p50"), "");
        assert!(svg.contains("peak p99 -, peak p50 -, max -"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn axes_are_round() {
        let axis = Axis::new(1234.0);
        assert_eq!((axis.step, axis.max), (500.0, 1500.0));
        assert_eq!(axis.ticks().count(), 4);
        let axis = Axis::new(0.37);
        assert_eq!(axis.label(0.1), "0.1");
        assert!((axis.max - 0.4).abs() < 1e-9);
        assert_eq!(Axis::new(0.0).max, 1.0);
        assert_eq!(Axis::new(f64::NAN).max, 1.0);
    }
}
