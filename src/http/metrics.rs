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

use super::access::{Access, Listener};
use super::auth::require;
use crate::exposition::Format;
use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(metrics).route_layer(middleware::from_fn_with_state(
                Access::new(state.clone(), Listener::Metrics),
                require::<Access>,
            )),
        )
        .route("/", get(landing))
        // Probes answer without the metrics token: they reveal no readings.
        .route("/healthz", get(super::probes::healthz))
        .route("/ready", get(super::probes::ready))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "Not found. Metrics are at /metrics\n",
            )
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD")],
                "Method not allowed\n",
            )
        })
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = state.snapshots.get().body(format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn landing(State(state): State<Arc<AppState>>) -> Html<String> {
    let snapshot = state.snapshots.get();
    let device = snapshot.device();
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>edge-metrics-exporter</title></head>\n\
         <body>\n<h1>edge-metrics-exporter {version}</h1>\n\
         <p>Device type <b>{device_type}</b> on <b>{hostname}</b>.</p>\n\
         <ul>\n<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\n\
         <li>Management API on port {api_port}: /health, /config, /metrics/list</li>\n</ul>\n\
         </body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        device_type = html_escape(&device.device_type),
        hostname = html_escape(&device.hostname),
        api_port = state.bound_reload_port,
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
