//! Hand-written SVG charts: latency by percentile for one or several result files
//! (HdrHistogram's classic plot: x = percentile on a 1/(1-p) log scale), and latency by
//! achieved throughput for rate sweeps (log-log, one line per broker and percentile).
//! Main thread only.

use std::fmt::Write as _;

use serde_json::Value;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 150.0;
/// The last percentile plotted (99.999%).
const PCT_MAX: f64 = 99.999;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of the chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (percentile 0..100, latency ms), increasing percentile.
    pub points: Vec<(f64, f64)>,
}

fn x_of(pct: f64) -> f64 {
    // 1/(1-p): 0% -> 1, 90% -> 10, 99% -> 100 ... ; log10 spreads the tail evenly.
    let p = pct.clamp(0.0, PCT_MAX) / 100.0;
    (1.0 / (1.0 - p)).log10()
}

/// Extracts series from result JSON: `metric` is PublishLatency, PublishDelayLatency or
/// EndToEndLatency.
pub fn series_from_json(j: &Value, metric: &str, file: &str) -> Option<Series> {
    let q = j.get(format!("aggregated{metric}Quantiles"))?.as_object()?;
    let mut points: Vec<(f64, f64)> = q
        .iter()
        .filter_map(|(k, v)| Some((k.parse::<f64>().ok()?, v.as_f64()?)))
        .filter(|(p, _)| *p <= PCT_MAX)
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    if points.is_empty() {
        return None;
    }
    let broker = j["broker"]["name"].as_str().unwrap_or("?");
    let wl = j["workload"]["name"].as_str().unwrap_or("?");
    Some(Series {
        label: format!("{broker} {wl} {metric} ({file})"),
        points,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the series as an SVG document.
pub fn render(title: &str, series: &[Series]) -> String {
    let pw = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let ph = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x_max = x_of(PCT_MAX);
    let y_max_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    // A "nice" top of the y axis: 1, 2 or 5 times a power of ten.
    let y_max = {
        let v = y_max_data.max(0.001) * 1.05;
        let mag = 10f64.powf(v.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|t| *t >= v)
            .unwrap_or(10.0 * mag)
    };
    let px = |pct: f64| MARGIN_LEFT + x_of(pct) / x_max * pw;
    let py = |ms: f64| MARGIN_TOP + ph - (ms / y_max).min(1.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
    // Grid and axes.
    for pct in [0.0, 90.0, 99.0, 99.9, 99.99, 99.999] {
        let x = px(pct);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{MARGIN_TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            MARGIN_TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{pct}%</text>"#,
            MARGIN_TOP + ph + 16.0
        );
    }
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            MARGIN_LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            fmt_ms(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        MARGIN_LEFT + pw / 2.0,
        MARGIN_TOP + ph + 34.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms)</text>"#,
        MARGIN_TOP + ph / 2.0,
        MARGIN_TOP + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", px(*p), py(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = MARGIN_TOP + ph + 56.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{MARGIN_LEFT}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/>"#,
            MARGIN_LEFT + 24.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            MARGIN_LEFT + 30.0,
            ly + 4.0,
            esc(&se.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One line of a latency-vs-throughput chart.
pub struct XySeries {
    /// Legend text.
    pub label: String,
    /// Index into the colour list (one colour per broker).
    pub color: usize,
    /// SVG stroke-dasharray ("" = solid; one style per percentile).
    pub dash: &'static str,
    /// (achieved msg/s, latency ms), in sweep order.
    pub points: Vec<(f64, f64)>,
    /// A point to circle (the knee).
    pub mark: Option<(f64, f64)>,
}

/// Decades [10^a, 10^b] covering the positive values, at least one decade wide.
fn decades(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let a = lo.log10().floor();
    let b = hi.log10().ceil().max(a + 1.0);
    (a, b)
}

/// Renders latency (y, ms, log) by achieved throughput (x, msg/s, log) as an SVG document.
pub fn render_xy(title: &str, x_label: &str, series: &[XySeries]) -> String {
    let pw = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let ph = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let (xa, xb) = decades(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (ya, yb) = decades(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let px = |x: f64| MARGIN_LEFT + (x.max(1e-9).log10() - xa).clamp(0.0, xb - xa) / (xb - xa) * pw;
    let py =
        |y: f64| MARGIN_TOP + ph - (y.max(1e-9).log10() - ya).clamp(0.0, yb - ya) / (yb - ya) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
    for d in (xa as i32)..=(xb as i32) {
        let v = 10f64.powi(d);
        let x = px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{MARGIN_TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            MARGIN_TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            MARGIN_TOP + ph + 16.0,
            fmt_count(v)
        );
    }
    for d in (ya as i32)..=(yb as i32) {
        let v = 10f64.powi(d);
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            MARGIN_LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            fmt_ms(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        MARGIN_LEFT + pw / 2.0,
        MARGIN_TOP + ph + 34.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms, log)</text>"#,
        MARGIN_TOP + ph / 2.0,
        MARGIN_TOP + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[se.color % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{}" points="{}"/>"#,
            se.dash,
            pts.join(" ")
        );
        for (x, y) in &se.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                px(*x),
                py(*y)
            );
        }
        if let Some((x, y)) = se.mark {
            let _ = writeln!(
                s,
                r#"<circle class="knee" cx="{:.1}" cy="{:.1}" r="7" fill="none" stroke="{color}" stroke-width="2"/>"#,
                px(x),
                py(y)
            );
        }
        // Legend in two columns.
        let col = (i % 2) as f64;
        let ly = MARGIN_TOP + ph + 56.0 + 16.0 * (i / 2) as f64;
        let lx = MARGIN_LEFT + col * pw / 2.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3" stroke-dasharray="{}"/>"#,
            lx + 24.0,
            se.dash
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            esc(&se.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a result's quantile map becomes a polyline whose points rise with latency and
    // stay inside the plot, and the legend names the broker.
    #[test]
    fn renders_series_from_result_json() {
        let j = serde_json::json!({
            "broker": {"name": "tansu"},
            "workload": {"name": "smoke"},
            "aggregatedPublishLatencyQuantiles": {"0.000000": 1.0, "50.000000": 2.0, "99.000000": 8.0, "99.990000": 30.0},
        });
        let s = series_from_json(&j, "PublishLatency", "a.json").unwrap();
        assert_eq!(s.points.len(), 4);
        let svg = render("t", &[s]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("tansu smoke PublishLatency"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(series_from_json(&j, "EndToEndLatency", "a.json").is_none());
        assert!(x_of(99.0) > x_of(90.0) && x_of(0.0) == 0.0);
    }

    // A latency-vs-throughput chart draws one polyline per series with a dot per point and
    // circles the knee; its log axes cover every point in whole decades.
    #[test]
    fn renders_rate_sweep() {
        let s = XySeries {
            label: "osprey p99".into(),
            color: 0,
            dash: "6 3",
            points: vec![(1000.0, 2.0), (10_000.0, 3.0), (50_000.0, 400.0)],
            mark: Some((10_000.0, 3.0)),
        };
        let svg = render_xy("sweep", "achieved msg/s", &[s]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches(r#"r="2.5""#).count(), 3);
        assert_eq!(svg.matches(r#"class="knee""#).count(), 1);
        assert_eq!(decades([1000.0, 50_000.0].into_iter()), (3.0, 5.0));
        assert_eq!(decades([2.0, 400.0].into_iter()), (0.0, 3.0));
    }
}
