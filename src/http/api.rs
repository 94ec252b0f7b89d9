//! The management API on `reload_port` (spec "Management API"):
//! `GET /health`, `GET /config`, `GET /metrics/list`, `POST /metrics/enable`,
//! `POST /reload`, and the measured runs of `http::runs`.
//!
//! Field names and value types are the spec's; extra fields are added where they
//! help. Every error is `{"error": "..."}`. Requests that change something
//! validate their whole input first and change nothing when any part is wrong; a
//! success response means `config.yaml` on disk already holds the change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::access::{Access, Listener};
use crate::config::ConfigError;
use crate::config::store::StoreError;
use crate::health::Health;
use crate::net::auth::require;
use crate::net::body::{bounded, read_body_limited};
use crate::net::error::{ApiError, json_fallbacks};
use crate::state::AppState;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 100 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/healthz", get(super::probes::healthz))
        .route("/ready", get(super::probes::ready))
        .route("/status", get(super::probes::status))
        .route("/config", get(config))
        .route("/metrics/list", get(metrics_list))
        .route("/metrics/enable", post(metrics_enable))
        .route("/reload", post(reload))
        .merge(super::runs::routes());
    json_fallbacks(routes, |path| match path {
        "/metrics/enable" | "/reload" => "POST",
        _ => super::runs::allow(path).unwrap_or("GET, HEAD"),
    })
    .layer(middleware::from_fn(|request, next| {
        bounded(MAX_BODY_BYTES, request, next)
    }))
    .layer(middleware::from_fn_with_state(
        Access::new(state.clone(), Listener::Api),
        require::<Access>,
    ))
    .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health::of(&state))
}

async fn config(State(state): State<Arc<AppState>>) -> Json<Value> {
    let live = state.store.live();
    let mut out = match crate::config::yaml_to_json(&state.store.document()) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    // The file's own keys (unknown ones included), with the effective value of
    // every key the exporter uses, so defaults show too.
    out.insert("device_type".into(), json!(live.device_type.as_str()));
    out.insert("interval".into(), seconds_json(live.interval));
    out.insert("port".into(), json!(live.port));
    out.insert("reload_port".into(), json!(live.reload_port));
    out.insert("metric_style".into(), json!(live.metric_style));
    out.insert(
        "new_metrics_enabled".into(),
        json!(live.new_metrics_enabled),
    );
    let mut shelly = match out.remove("shelly") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    shelly.insert("enabled".into(), json!(live.shelly.enabled));
    shelly.insert("server_url".into(), json!(live.shelly.server_url));
    out.insert("shelly".into(), Value::Object(shelly));
    let mut power = match out.remove("power") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    power.insert(
        "sample_interval".into(),
        seconds_json(live.power.sample_interval),
    );
    out.insert("power".into(), Value::Object(power));
    out.insert("metrics".into(), json!(live.metrics));
    // Secrets are never shown: tokens, the plug hub secret, plug and remote write
    // passwords.
    let mask = |v: Option<&mut Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            *v = json!("***");
        }
    };
    mask(out.get_mut("metrics_token"));
    mask(out.get_mut("api_token"));
    for key in ["metrics_basic_auth", "api_basic_auth"] {
        if let Some(section) = out.get_mut(key).and_then(|v| v.as_object_mut()) {
            mask(section.get_mut("password"));
        }
    }
    if let Some(shelly) = out.get_mut("shelly") {
        mask(shelly.get_mut("secret"));
        if let Some(Value::Array(polls)) = shelly.get_mut("poll") {
            for p in polls {
                mask(p.get_mut("password"));
            }
        }
    }
    if let Some(rw) = out.get_mut("remote_write") {
        mask(rw.get_mut("bearer_token"));
        if let Some(basic) = rw.get_mut("basic_auth") {
            mask(basic.get_mut("password"));
        }
    }
    Json(Value::Object(out))
}

async fn metrics_list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let live = state.store.live();
    Json(json!({
        "metrics": live.metrics,
        "device_type": state.scheduler.device().resolved.device_type.as_str(),
        "source": state.store.source().as_str(),
    }))
}

async fn metrics_enable(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = read_body_limited(&headers, body, MAX_BODY_BYTES).await?;
    let changes = metric_switches(&body).map_err(ApiError::bad_request)?;
    let store = state.store.clone();
    let request = changes.clone();
    let result = tokio::task::spawn_blocking(move || store.set_metrics(&request))
        .await
        .map_err(|e| ApiError::internal(format!("the config writer failed: {e}")))?;
    match result {
        Ok(_) => {}
        Err(StoreError::UnknownMetric(name)) => {
            return Err(ApiError::bad_request(format!(
                "Invalid metric name: {name}"
            )));
        }
        Err(e @ (StoreError::Disk { .. } | StoreError::Invalid(_))) => {
            return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()));
        }
        Err(e @ (StoreError::Read { .. } | StoreError::Write { .. })) => {
            return Err(ApiError::internal(e.to_string()));
        }
    }
    state.scheduler.republish();
    Ok(Json(json!({
        "status": "success",
        "updated": changes.len(),
        "metrics": changes,
    })))
}

/// The body of `POST /metrics/enable`: a JSON object of metric ids to `true` or
/// `false`, checked whole; the error says what is wrong (the spec's wording).
pub fn metric_switches(body: &[u8]) -> Result<BTreeMap<String, bool>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err(
            "Request body must be a JSON object mapping metric names to true or false".into(),
        );
    };
    let mut changes = BTreeMap::new();
    for (name, value) in object {
        let Value::Bool(on) = value else {
            return Err(format!(
                "Invalid value for {name}: expected true or false, got {value}"
            ));
        };
        changes.insert(name, on);
    }
    Ok(changes)
}

async fn reload(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    match crate::reload::reload(&state).await {
        Ok(outcome) => Ok(Json(json!({
            "status": "success",
            "source": outcome.source,
            "metrics_count": outcome.metrics_count,
            "restarted_collectors": outcome.restarted,
        }))),
        Err(e) => Err(config_error(e)),
    }
}

/// A rejected config: the spec's message in `error`, where it is in the rest.
fn config_error(e: ConfigError) -> ApiError {
    let mut err =
        ApiError::bad_request(e.message.clone()).detail("file", e.file.display().to_string());
    if let Some(line) = e.line {
        err = err.detail("line", line);
    }
    if let Some(field) = &e.field {
        err = err.detail("field", field.clone());
    }
    if let Some(hint) = &e.hint {
        err = err.detail("hint", hint.clone());
    }
    err
}

fn seconds_json(d: Duration) -> Value {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        json!(d.as_secs())
    } else {
        json!(secs)
    }
}
