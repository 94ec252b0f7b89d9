//! The Prometheus endpoint: `GET /metrics` serves the latest snapshot in the
//! format the scraper asks for; `GET /` is a small landing page.
//!
//! A scrape does no collection work: it reads the published snapshot, whose bodies
//! are rendered once per collection.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::access::{Access, Listener, RateGate, rate_limited, require_access, web_headers};
use crate::exposition::Format;
use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    // The path is a flag (`--web.telemetry-path`): fixed for the process.
    let path = state.store.live().web.telemetry_path.clone();
    Router::new()
        .route(
            &path,
            get(metrics).route_layer(middleware::from_fn_with_state(
                Access::new(state.clone(), Listener::Metrics),
                require_access,
            )),
        )
        .route("/", get(landing))
        // Probes answer without the metrics token: they reveal no readings.
        .route("/healthz", get(super::probes::healthz))
        .route("/ready", get(super::probes::ready))
        .fallback({
            let message = format!("Not found. Metrics are at {path}\n");
            move || async move { (StatusCode::NOT_FOUND, message) }
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD")],
                "Method not allowed\n",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), web_headers))
        // Outermost, as in exporter-toolkit: a refused request costs nothing more.
        .layer(middleware::from_fn_with_state(
            (state.clone(), Arc::new(RateGate::default())),
            rate_limited,
        ))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let snapshot = state.snapshots.get();
    let mut response = if accepts_gzip(&headers) {
        (
            [
                (header::CONTENT_TYPE, format.content_type()),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            snapshot.body_gzip(format),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, format.content_type())],
            snapshot.body(format),
        )
            .into_response()
    };
    response.headers_mut().insert(
        header::VARY,
        axum::http::HeaderValue::from_static("Accept-Encoding, Accept"),
    );
    response
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a quality above zero.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

async fn landing(State(state): State<Arc<AppState>>) -> Html<String> {
    let snapshot = state.snapshots.get();
    let device = snapshot.device();
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>edge-metrics-exporter</title></head>\n\
         <body>\n<h1>edge-metrics-exporter {version}</h1>\n\
         <p>Device type <b>{device_type}</b> on <b>{hostname}</b>.</p>\n\
         <ul>\n<li><a href=\"{path}\">{path}</a>: Prometheus metrics</li>\n\
         <li>Management API on port {api_port}: /health, /config, /metrics/list</li>\n</ul>\n\
         </body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        device_type = html_escape(&device.device_type),
        hostname = html_escape(&device.hostname),
        api_port = state.bound_reload_port,
        path = html_escape(&state.store.live().web.telemetry_path),
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_when_offered() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, v.parse().expect("value"));
            accepts_gzip(&h)
        };
        assert!(with("gzip"));
        assert!(with("identity, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("deflate, br"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
