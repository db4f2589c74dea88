//! A hand-written SVG chart of latency by percentile for one or several result files
//! (HdrHistogram's classic plot: x = percentile on a 1/(1-p) log scale). Main thread only.

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
}
