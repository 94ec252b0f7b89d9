//! The daemon's own telemetry, shared by every subcommand that serves HTTP: HTTP
//! requests by listener, route and status code, their durations as a histogram,
//! requests in progress, and the standard `process_*` metrics read from
//! `/proc/self`.
//!
//! [`track`] wraps a router with the counting middleware; [`samples`] adds the
//! current values to a list of samples (the exporter's snapshot, or the page a
//! server renders for its own `/metrics`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::lock::lock;
use crate::sample::{Family, Sample};

/// Upper bounds of the request duration buckets, seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

static REQUESTS: Family = Family::counter(
    "edge_exporter_http_requests_total",
    "HTTP requests answered, by listener, route and status code",
    "",
);
static DURATION: Family = Family::histogram(
    "edge_exporter_http_request_duration_seconds",
    "Time to answer HTTP requests, by listener and route",
    "seconds",
);
static IN_PROGRESS: Family = Family::gauge(
    "edge_exporter_http_requests_in_progress",
    "HTTP requests being answered, by listener",
    "",
);
static BUILD_INFO: Family = Family::gauge(
    "edge_exporter_build_info",
    "Version of the running program",
    "",
);
static UPTIME: Family = Family::gauge(
    "edge_exporter_uptime_seconds",
    "Seconds since the process started",
    "seconds",
);
static CPU: Family = Family::counter(
    "process_cpu_seconds_total",
    "User and system CPU time spent",
    "seconds",
);
static RSS: Family = Family::gauge(
    "process_resident_memory_bytes",
    "Resident memory size",
    "bytes",
);
static VSIZE: Family = Family::gauge(
    "process_virtual_memory_bytes",
    "Virtual memory size",
    "bytes",
);
static HANDSHAKES_FAILED: Family = Family::counter(
    "edge_exporter_tls_handshake_failures_total",
    "TLS handshakes that failed on the HTTPS listeners (plain HTTP, untrusted clients)",
    "",
);
static APPEND_FAILURES: Family = Family::counter(
    "edge_exporter_append_failures_total",
    "Records that could not be appended to a file (a full disk): nothing of them was written",
    "",
);
static FDS: Family = Family::gauge("process_open_fds", "Open file descriptors", "");
static MAX_FDS: Family = Family::gauge("process_max_fds", "Limit of open file descriptors", "");
static THREADS: Family = Family::gauge("process_threads", "Operating system threads", "");
static START: Family = Family::gauge(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch",
    "seconds",
);

#[derive(Debug, Default)]
struct Route {
    /// Status code → count.
    codes: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug)]
struct Registry {
    started: Instant,
    start_time: f64,
    /// (listener, route) → counts.
    routes: Mutex<BTreeMap<(&'static str, String), Route>>,
    in_progress: Mutex<BTreeMap<&'static str, &'static AtomicI64>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        started: Instant::now(),
        start_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
        routes: Mutex::new(BTreeMap::new()),
        in_progress: Mutex::new(BTreeMap::new()),
    })
}

/// Starts the clock of `edge_exporter_uptime_seconds` (call early in `main`).
pub fn init() {
    let _ = registry();
}

pub fn uptime() -> std::time::Duration {
    registry().started.elapsed()
}

fn gauge_for(listener: &'static str) -> &'static AtomicI64 {
    let mut map = lock(&registry().in_progress);
    // One small leak per listener name, for the life of the process.
    map.entry(listener)
        .or_insert_with(|| Box::leak(Box::new(AtomicI64::new(0))))
}

/// Counts every request `router` answers under `listener`. Routes are the
/// router's patterns (`/config/{device_id}`), so ids in paths do not make new
/// series; anything that matched no route counts as `other`.
pub fn track(router: Router, listener: &'static str) -> Router {
    let in_progress = gauge_for(listener);
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
        async move {
            in_progress.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let response: Response = next.run(request).await;
            let seconds = started.elapsed().as_secs_f64();
            in_progress.fetch_sub(1, Ordering::Relaxed);
            record(listener, route, response.status().as_u16(), seconds);
            response
        }
    }))
}

fn record(listener: &'static str, route: String, code: u16, seconds: f64) {
    let mut routes = lock(&registry().routes);
    let r = routes.entry((listener, route)).or_default();
    *r.codes.entry(code).or_default() += 1;
    for (i, bound) in BUCKETS.iter().enumerate() {
        if seconds <= *bound {
            r.buckets[i] += 1;
        }
    }
    r.count += 1;
    r.sum += seconds;
}

/// All requests answered so far, and those answered with a 5xx.
pub fn request_totals() -> (u64, u64) {
    let routes = lock(&registry().routes);
    routes.values().fold((0, 0), |(all, errors), r| {
        let failed: u64 = r.codes.range(500..).map(|(_, n)| n).sum();
        (all + r.count, errors + failed)
    })
}

/// Adds the HTTP, uptime and process samples (the exporter's own: no device
/// labels).
pub fn samples(out: &mut Vec<Sample>) {
    let reg = registry();
    {
        let routes = lock(&reg.routes);
        for ((listener, route), r) in routes.iter() {
            for (code, n) in &r.codes {
                out.push(
                    Sample::own(&REQUESTS, *n as f64)
                        .const_label("listener", *listener)
                        .const_label("route", route.as_str())
                        .const_label("code", code.to_string()),
                );
            }
            let series = |suffix: &str, value: f64| {
                Sample::own_with_id(format!("{}{suffix}", DURATION.name), &DURATION, value)
                    .const_label("listener", *listener)
                    .const_label("route", route.as_str())
            };
            for (bound, n) in BUCKETS.iter().zip(r.buckets) {
                out.push(series("_bucket", n as f64).const_label("le", bound.to_string()));
            }
            out.push(series("_bucket", r.count as f64).const_label("le", "+Inf"));
            out.push(series("_sum", r.sum));
            out.push(series("_count", r.count as f64));
        }
    }
    for (listener, gauge) in lock(&reg.in_progress).iter() {
        out.push(
            Sample::own(&IN_PROGRESS, gauge.load(Ordering::Relaxed) as f64)
                .const_label("listener", *listener),
        );
    }
    out.push(Sample::own(&BUILD_INFO, 1.0).const_label("version", env!("CARGO_PKG_VERSION")));
    out.push(Sample::own(&UPTIME, reg.started.elapsed().as_secs_f64()));
    out.push(Sample::own(&START, reg.start_time));
    out.push(Sample::own(
        &HANDSHAKES_FAILED,
        crate::net::serve::HANDSHAKE_FAILURES.load(Ordering::Relaxed) as f64,
    ));
    for (file, n) in crate::atomic_file::append_failures() {
        out.push(Sample::own(&APPEND_FAILURES, n as f64).const_label("file", file));
    }
    let p = process();
    let mut push = |family: &'static Family, v: Option<f64>| {
        if let Some(v) = v {
            out.push(Sample::own(family, v));
        }
    };
    push(&CPU, p.cpu_seconds);
    push(&RSS, p.rss_bytes);
    push(&VSIZE, p.vsize_bytes);
    push(&FDS, p.open_fds);
    push(&MAX_FDS, p.max_fds);
    push(&THREADS, p.threads);
}

/// A Prometheus text page of the exporter's own samples, for the servers that
/// have no device (`config-server`, `shelly-server`).
pub fn page(mut samples: Vec<Sample>) -> axum::response::Response {
    use crate::exposition::{self, DeviceLabels, Format, MetricStyle};
    use axum::response::IntoResponse;
    exposition::sort_for(MetricStyle::Flat, &mut samples);
    let device = DeviceLabels {
        device_type: String::new(),
        hostname: String::new(),
    };
    let body = exposition::render(&samples, MetricStyle::Flat, Format::Text004, &device);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            Format::Text004.content_type(),
        )],
        body,
    )
        .into_response()
}

/// What `/proc/self` says about this process.
#[derive(Debug, Default, Clone, Copy)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub vsize_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub threads: Option<f64>,
}

pub fn process() -> Process {
    let ticks = clock_ticks();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // Indices from `state` (field 3 of proc(5)) = 0.
    let cpu = field(11).zip(field(12)).map(|(u, s)| (u + s) / ticks);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    Process {
        cpu_seconds: cpu,
        threads: field(17),
        vsize_bytes: field(20),
        rss_bytes: status_rss_bytes().or_else(|| field(21).map(|pages| pages * 4096.0)),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64),
        max_fds,
    }
}

fn clock_ticks() -> f64 {
    // The kernel's USER_HZ is 100 on every Linux architecture we run on.
    100.0
}

/// Resident memory from `VmRSS` (kB) of `/proc/self/status`, which is right
/// whatever the page size (4, 16 or 64 KiB kernels).
fn status_rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_there() {
        let p = process();
        assert!(p.cpu_seconds.is_some_and(|c| c >= 0.0));
        assert!(p.rss_bytes.is_some_and(|r| r > 1_000_000.0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3.0));
        assert!(p.threads.is_some_and(|n| n >= 1.0));
        assert!(p.max_fds.is_some_and(|n| n >= 64.0));
    }

    #[test]
    fn requests_land_in_buckets() {
        record("test", "/x".into(), 200, 0.003);
        record("test", "/x".into(), 404, 2.0);
        let mut out = Vec::new();
        samples(&mut out);
        let value = |id: &str, label: (&str, &str)| {
            out.iter()
                .find(|s| {
                    &*s.id == id
                        && s.const_labels
                            .iter()
                            .any(|(k, v)| *k == "listener" && &**v == "test")
                        && s.const_labels
                            .iter()
                            .any(|(k, v)| *k == label.0 && &**v == label.1)
                })
                .map(|s| s.value)
        };
        assert_eq!(
            value("edge_exporter_http_requests_total", ("code", "404")),
            Some(1.0)
        );
        let bucket = "edge_exporter_http_request_duration_seconds_bucket";
        assert_eq!(value(bucket, ("le", "0.0025")), Some(0.0));
        assert_eq!(value(bucket, ("le", "0.005")), Some(1.0));
        assert_eq!(value(bucket, ("le", "5")), Some(2.0));
        assert_eq!(value(bucket, ("le", "+Inf")), Some(2.0));
        assert_eq!(
            value(
                "edge_exporter_http_request_duration_seconds_count",
                ("route", "/x")
            ),
            Some(2.0)
        );
    }
}
