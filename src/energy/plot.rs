//! A run's trace for people and programs: CSV and JSON of its readings, and an
//! SVG of power over time per source with energy, mean and peak in the legend,
//! drawn here (no script, no build step). The run page and the list of runs of
//! the management API, and `measure --trace`/`--plot`, all use these.
//!
//! Pure functions of a report and its trace; text from the run (its name,
//! labels, source names) is escaped for the markup it goes into.

use std::fmt::Write as _;

use super::runs::{RunReport, RunTrace};

/// `t_s,source,watts`, one row per kept reading, sources one after another.
pub fn trace_csv(trace: &RunTrace) -> String {
    let points: usize = trace.sources.iter().map(|(_, t)| t.points.len()).sum();
    let mut out = String::with_capacity(32 + points * 32);
    out.push_str("t_s,source,watts\n");
    for (source, t) in &trace.sources {
        let quoted = format!("\"{}\"", source.replace('"', "\"\""));
        for (secs, watts) in &t.points {
            let _ = writeln!(out, "{secs:.6},{quoted},{watts}");
        }
    }
    out
}

/// `{"sources": [{"source", "stride", "t_s": [...], "watts": [...]}]}`.
pub fn trace_json(trace: &RunTrace) -> serde_json::Value {
    let sources: Vec<serde_json::Value> = trace
        .sources
        .iter()
        .map(|(source, t)| {
            let (ts, ws): (Vec<f64>, Vec<f64>) = t
                .points
                .iter()
                .map(|(s, w)| (f64::from(*s), f64::from(*w)))
                .unzip();
            serde_json::json!({"source": source, "stride": t.stride, "t_s": ts, "watts": ws})
        })
        .collect();
    serde_json::json!({ "sources": sources })
}

/// Text for XML/HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// At most `buckets` × 2 points of `points`, each bucket's lowest and highest
/// in time order, so a 40 ms spike in a minute still shows.
fn thin(points: &[(f32, f32)], buckets: usize) -> Vec<(f32, f32)> {
    if points.len() <= buckets * 2 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets * 2);
    for chunk in points.chunks(per) {
        let (mut lo, mut hi) = (chunk[0], chunk[0]);
        for p in chunk {
            if p.1 < lo.1 {
                lo = *p;
            }
            if p.1 > hi.1 {
                hi = *p;
            }
        }
        if lo.0 <= hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    }
    out
}

/// A "nice" step for an axis of `span` with about `ticks` ticks.
fn step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    let unit = raw / magnitude;
    let nice = if unit <= 1.0 {
        1.0
    } else if unit <= 2.0 {
        2.0
    } else if unit <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Power over time per source, `width` × `height` pixels, with axes and a
/// legend giving each source's energy (± its bound), mean and peak.
pub fn svg(report: &RunReport, trace: &RunTrace, width: u32, height: u32) -> String {
    let (w, h) = (f64::from(width), f64::from(height));
    let legend_h = 18.0 * report.sources.len().max(trace.sources.len()) as f64 + 10.0;
    let (left, right, top) = (58.0, 16.0, 14.0);
    let bottom = 40.0 + legend_h;
    let (pw, ph) = ((w - left - right).max(10.0), (h - top - bottom).max(10.0));
    let duration = trace
        .sources
        .iter()
        .flat_map(|(_, t)| t.points.last())
        .map(|p| f64::from(p.0))
        .fold(report.duration_s, f64::max)
        .max(1e-3);
    let peak = trace
        .sources
        .iter()
        .flat_map(|(_, t)| t.points.iter().map(|p| f64::from(p.1)))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let (xs, ys) = (step(duration, 6.0), step(peak, 5.0));
    let ymax = (peak / ys).ceil() * ys;
    let x = |t: f64| left + t / duration * pw;
    let y = |v: f64| top + ph - v.max(0.0) / ymax * ph;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
    );
    // Grid and axes.
    let mut t = 0.0;
    while t <= duration + 1e-9 {
        let _ = write!(
            out,
            "<line x1=\"{:.1}\" y1=\"{top}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            x(t),
            x(t),
            top + ph,
            x(t),
            top + ph + 15.0,
            trim(t)
        );
        t += xs;
    }
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let _ = write!(
            out,
            "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            y(v),
            left + pw,
            y(v),
            left - 6.0,
            y(v) + 4.0,
            trim(v)
        );
        v += ys;
    }
    let _ = write!(
        out,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\">seconds</text>\
         <text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\" transform=\"rotate(-90 14 {:.1})\">watts</text>",
        left + pw / 2.0,
        top + ph + 32.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    // One line per source.
    for (i, (source, t)) in trace.sources.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = thin(&t.points, (pw as usize).max(50))
            .iter()
            .map(|(s, w)| format!("{:.1},{:.1}", x(f64::from(*s)), y(f64::from(*w))))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"trace\" data-source=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" points=\"{}\"/>",
            esc(source),
            points.join(" ")
        );
    }
    // The legend: what the report says of each source.
    for (i, s) in report.sources.iter().enumerate() {
        let color = trace
            .sources
            .iter()
            .position(|(name, _)| *name == s.source)
            .map_or("#999", |k| COLORS[k % COLORS.len()]);
        let ly = top + ph + 52.0 + 18.0 * i as f64;
        let mean = s.mean_watts.map_or("–".to_owned(), |m| format!("{m:.3} W"));
        let peak = s.peak_watts.map_or("–".to_owned(), |p| format!("{p:.3} W"));
        let _ = write!(
            out,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"14\" height=\"4\" fill=\"{color}\"/>\
             <text class=\"legend\" x=\"{:.1}\" y=\"{:.1}\" fill=\"#222\">{}{}: {:.3} ± {:.3} J, mean {mean}, peak {peak}</text>",
            ly - 6.0,
            left + 20.0,
            ly,
            esc(&s.source),
            if s.total { " (total)" } else { "" },
            s.joules,
            s.joules_bound,
        );
    }
    out.push_str("</svg>");
    out
}

/// A number for an axis, without trailing zeros.
fn trim(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A small line of a run's total (or first) source, for the list of runs.
fn sparkline(trace: &RunTrace, report: &RunReport) -> String {
    let pick = report
        .totals()
        .next()
        .map(|s| s.source.as_str())
        .and_then(|name| trace.sources.iter().find(|(n, _)| n == name))
        .or(trace.sources.first());
    let Some((_, t)) = pick else {
        return String::new();
    };
    let points = thin(&t.points, 60);
    let (Some(last), true) = (points.last(), points.len() > 1) else {
        return String::new();
    };
    let span = f64::from(last.0).max(1e-3);
    let high = points
        .iter()
        .map(|p| f64::from(p.1))
        .fold(1e-3f64, f64::max);
    let line: Vec<String> = points
        .iter()
        .map(|(s, w)| {
            format!(
                "{:.1},{:.1}",
                f64::from(*s) / span * 118.0 + 1.0,
                23.0 - f64::from(*w).max(0.0) / high * 22.0
            )
        })
        .collect();
    format!(
        "<svg class=\"spark\" width=\"120\" height=\"24\" viewBox=\"0 0 120 24\"><polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1\" points=\"{}\"/></svg>",
        line.join(" ")
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}a{color:#1f5fa8}";

/// The page of one run: what it is, a table of its sources, the plot.
pub fn run_page(report: &RunReport, trace: &RunTrace) -> String {
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>run {id}: {name}</title><style>{STYLE}</style></head><body>\
         <p><a href=\"/runs\">all runs</a></p><h1>{name}</h1><p>run {id}, started {started}, {duration:.3} s, {state}</p>",
        id = esc(&report.id),
        name = esc(&report.name),
        started = esc(&report.started_at),
        duration = report.duration_s,
        state = match (report.running, report.end) {
            (true, _) => "running".to_owned(),
            (false, Some(end)) => format!(
                "ended: {}",
                serde_json::to_value(end)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            (false, None) => "ended".to_owned(),
        },
    );
    if !report.labels.is_empty() {
        let labels: Vec<String> = report
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
            .collect();
        let _ = write!(out, "<p>labels: {}</p>", labels.join(", "));
    }
    out.push_str("<table><tr><th>source</th><th>energy (J)</th><th>± bound (J)</th><th>mean (W)</th><th>peak (W)</th><th>samples</th></tr>");
    for s in &report.sources {
        let _ = write!(
            out,
            "<tr><td>{}{}</td><td class=\"n\">{:.4}</td><td class=\"n\">{:.4}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&s.source),
            if s.total { " (total)" } else { "" },
            s.joules,
            s.joules_bound,
            s.mean_watts.map_or("–".into(), |m| format!("{m:.3}")),
            s.peak_watts.map_or("–".into(), |p| format!("{p:.3}")),
            s.samples
        );
    }
    out.push_str("</table>");
    if trace.sources.iter().any(|(_, t)| !t.points.is_empty()) {
        let _ = write!(
            out,
            "<h2>Power</h2>{}<p><a href=\"/runs/{}/trace\">readings (CSV)</a></p>",
            svg(report, trace, 960, 420),
            esc(&report.id)
        );
    } else {
        out.push_str("<p>No trace is kept for this run.</p>");
    }
    out.push_str("</body></html>");
    out
}

/// The list of runs, newest first, each with a small curve.
pub fn list_page(runs: &[RunReport], traces: &[RunTrace]) -> String {
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>runs</title><style>{STYLE}</style></head><body>\
         <h1>Runs</h1><table><tr><th>run</th><th>name</th><th>started</th><th>duration (s)</th><th>energy (J)</th><th>power</th></tr>"
    );
    let empty = RunTrace::default();
    for (i, r) in runs.iter().enumerate() {
        let energy = r
            .totals()
            .next()
            .or(r.sources.first())
            .map_or("–".into(), |s| {
                format!("{:.3} ± {:.3}", s.joules, s.joules_bound)
            });
        let _ = write!(
            out,
            "<tr><td><a href=\"/runs/{id}\">{id}</a>{running}</td><td>{}</td><td>{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{energy}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.started_at),
            r.duration_s,
            sparkline(traces.get(i).unwrap_or(&empty), r),
            id = esc(&r.id),
            running = if r.running { " (running)" } else { "" },
        );
    }
    out.push_str("</table></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::TracePoints;
    use crate::energy::runs::SourceReport;

    fn fixture() -> (RunReport, RunTrace) {
        let report = RunReport {
            id: "1700000000000".into(),
            name: "resnet <b>&".into(),
            labels: [("model".to_owned(), "a\"b".to_owned())].into(),
            running: false,
            end: Some(crate::energy::runs::End::Stop),
            started_at: "2026-12-07T10:00:00Z".into(),
            duration_s: 2.0,
            exit_code: None,
            timeout_s: 60.0,
            sources: vec![SourceReport {
                source: "board_power_board{sensor=\"x\"}".into(),
                joules: 20.0,
                joules_bound: 0.05,
                mean_watts: Some(10.0),
                peak_watts: Some(30.0),
                samples: 200,
                total: true,
                gap_seconds: 0.0,
                trace_stride: None,
            }],
        };
        let points = (0..200)
            .map(|i| (i as f32 * 0.01, if i == 100 { 30.0 } else { 10.0 }))
            .collect();
        let trace = RunTrace {
            sources: vec![(
                "board_power_board{sensor=\"x\"}".into(),
                TracePoints { points, stride: 1 },
            )],
        };
        (report, trace)
    }

    #[test]
    fn csv_json_and_pictures() {
        let (report, trace) = fixture();
        let csv = trace_csv(&trace);
        assert!(csv.starts_with(
            "t_s,source,watts\n0.000000,\"board_power_board{sensor=\"\"x\"\"}\",10\n"
        ));
        assert_eq!(csv.lines().count(), 201);
        let json = trace_json(&trace);
        assert_eq!(json["sources"][0]["watts"][100], 30.0);
        let picture = svg(&report, &trace, 800, 300);
        assert!(picture.starts_with("<svg") && picture.ends_with("</svg>"));
        assert!(picture.contains("20.000 ± 0.050 J, mean 10.000 W, peak 30.000 W"));
        let page = run_page(&report, &trace);
        assert!(page.contains("resnet &lt;b&gt;&amp;") && !page.contains("<b>&"));
        assert!(page.contains("model=a&quot;b"));
        let list = list_page(&[report], &[trace]);
        assert!(list.contains("class=\"spark\""));
    }

    #[test]
    fn thinning_keeps_the_spike() {
        let points: Vec<(f32, f32)> = (0..100_000)
            .map(|i| (i as f32 * 0.001, if i == 51_234 { 99.0 } else { 1.0 }))
            .collect();
        let thinned = thin(&points, 500);
        assert!(thinned.len() <= 1000);
        assert!(thinned.iter().any(|p| p.1 == 99.0));
        assert!(thinned.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
