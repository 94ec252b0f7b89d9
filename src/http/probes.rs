//! Probes for service managers and Kubernetes: `GET /healthz` (liveness: the
//! process answers), `GET /ready` (readiness, one entry per check; 503 until every
//! collector has run once) and `GET /status` (what the daemon is doing). On the
//! metrics port without a token (they reveal no readings) and on the management
//! API behind its token.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::state::AppState;
use crate::telemetry;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `(ready, checks)`: the daemon is ready once every collector has run.
pub fn readiness(state: &AppState) -> (bool, Map<String, Value>) {
    let mut checks = Map::new();
    let collectors = state.scheduler.collector_states();
    let starting: Vec<&str> = collectors
        .iter()
        .filter(|(_, s)| !s.ran)
        .map(|(n, _)| *n)
        .collect();
    let failing: Vec<&str> = collectors
        .iter()
        .filter(|(_, s)| s.last_error.as_ref().is_some_and(|e| !e.is_no_data()))
        .map(|(n, _)| *n)
        .collect();
    let ready = starting.is_empty();
    let collectors_check = if !starting.is_empty() {
        format!("starting: {}", starting.join(", "))
    } else if !failing.is_empty() {
        format!("failing: {}", failing.join(", "))
    } else {
        "ok".to_owned()
    };
    checks.insert("collectors".into(), json!(collectors_check));
    checks.insert(
        "config".into(),
        json!(format!("ok ({})", state.store.source().as_str())),
    );
    let sync = match &state.sync {
        None => "disabled".to_owned(),
        Some(sync) => match sync.health().reachable {
            Some(true) => "ok".to_owned(),
            Some(false) => "unreachable: running on the local config".to_owned(),
            None => "starting".to_owned(),
        },
    };
    checks.insert("config_sync".into(), json!(sync));
    let hub = match &state.hub {
        None => "disabled".to_owned(),
        Some(hub) => format!("ok: {} plugs connected", hub.connected()),
    };
    checks.insert("plug_hub".into(), json!(hub));
    (ready, checks)
}

pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let (ready, checks) = readiness(&state);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": checks,
        })),
    )
}

pub async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let device = state.scheduler.device();
    let collectors: Map<String, Value> = state
        .scheduler
        .collector_states()
        .iter()
        .map(|(name, s)| {
            let status = match (&s.last_error, s.ran) {
                (_, false) => "starting",
                (None, true) => "ok",
                (Some(e), true) if e.is_no_data() => "no_data",
                (Some(_), true) => "failing",
            };
            ((*name).to_owned(), json!(status))
        })
        .collect();
    let sync = state.sync.as_ref().map(|s| {
        let h = s.health();
        json!({
            "url": h.url,
            "device_id": h.device_id,
            "connected": h.reachable,
            "revision": h.revision,
            "pending_changes": h.pending_changes,
            "last_sync": h.last_contact.map(crate::clock::rfc3339),
        })
    });
    let uptime = telemetry::uptime();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": crate::clock::human_duration(uptime),
        "uptime_seconds": uptime.as_secs_f64(),
        "mode": "exporter",
        "device_type": device.resolved.device_type.as_str(),
        "hostname": device.labels.hostname,
        "collectors": collectors,
        "config": {
            "source": state.store.source().as_str(),
            "path": state.store.path().display().to_string(),
        },
        "config_sync": sync,
        "remote_write": state.push.summary(),
    }))
}
