//! The hub's two HTTP surfaces, as routers.
//!
//! * The WebSocket endpoint plugs connect to. A plug cannot authenticate itself, so
//!   when a secret is set the connection URL must carry it, as a query parameter
//!   (`ws://hub:8765/?token=SECRET`) or as the first path segment
//!   (`ws://hub:8765/SECRET/`). The last path segment (or `?device=`) names the plug
//!   with an alias, e.g. the hostname of the edge device it powers:
//!   `ws://hub:8765/orin-01?token=SECRET`.
//! * The HTTP API, with the spec's bodies and status codes: 404 no device
//!   connected, 502 connection lost, 504 RPC timeout, 500 invalid RPC response, and
//!   409 when `/metrics` is asked without a device id while several are connected.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, RpcFailure};
use crate::config::Secret;
use crate::net::auth::tokens_match;
use crate::net::body::{PathParam, QueryParams, bounded};
use crate::net::error::{ApiError, json_fallbacks};
use crate::net::serve::ConnectionSlot;
use crate::sources::shelly::PlugReading;

#[derive(Debug, Clone)]
struct WsState {
    hub: Arc<Hub>,
    secret: Option<Secret>,
    shutdown: CancellationToken,
}

/// The endpoint plugs connect to (any path; see the module docs for its forms).
pub fn ws_router(hub: Arc<Hub>, secret: Option<Secret>, shutdown: CancellationToken) -> Router {
    Router::new().fallback(ws_upgrade).with_state(WsState {
        hub,
        secret,
        shutdown,
    })
}

async fn ws_upgrade(
    State(state): State<WsState>,
    slot: Option<axum::Extension<ConnectionSlot>>,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(alias) = connection_alias(&uri, state.secret.as_ref()) else {
        state
            .hub
            .stats
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            path = uri.path(),
            "plug connection refused: missing or wrong secret, or a bad alias"
        );
        return (StatusCode::UNAUTHORIZED, "secret required\n").into_response();
    };
    let trusted = state.secret.is_some();
    let max = state.hub.config.max_frame;
    let (hub, shutdown) = (state.hub.clone(), state.shutdown.clone());
    // Buffers sized for plug frames (a full status is a few kB), not the 128 KiB
    // default, which would cost 256 KiB per plug: a hub holds thousands of sockets.
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            // The listener's connection slot lives as long as the plug's socket.
            let _slot = slot;
            hub.serve_socket(socket, alias, trusted, shutdown).await
        })
}

/// Checks the secret and reads the alias of a connection URL. `None`: refused;
/// `Some(None)`: accepted without an alias.
pub fn connection_alias(uri: &Uri, secret: Option<&Secret>) -> Option<Option<String>> {
    // Both the path and the query come percent-encoded; a secret or a name that
    // does not decode is refused.
    let mut segments: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect::<Option<_>>()?;
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| Some((percent_decode(k)?, percent_decode(v)?)))
        .collect::<Option<_>>()?;
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(secret) = secret {
        let by_query = param("token").is_some_and(|t| tokens_match(secret.expose(), t));
        let by_path = segments
            .first()
            .is_some_and(|s| tokens_match(secret.expose(), s));
        if by_path {
            segments.remove(0);
        }
        if !(by_query || by_path) {
            return None;
        }
    }
    // `/shelly` is the path Shelly's own tools use; it is not a name.
    segments.retain(|s| s != "shelly");
    let alias = param("device").or(segments.last().map(String::as_str));
    match alias {
        None => Some(None),
        Some(a) if is_alias(a) => Some(Some(a.to_owned())),
        Some(_) => None,
    }
}

/// `%XX` sequences to bytes, as text; `None` for a bad sequence or bytes that are
/// not UTF-8. (`+` stays `+`: these are URL parts, not form fields.)
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn is_alias(a: &str) -> bool {
    (1..=64).contains(&a.len())
        && a != "."
        && a != ".."
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The hub's own metrics in Prometheus text (`/metrics` is the spec's plug JSON).
async fn telemetry(State(hub): State<Arc<Hub>>) -> axum::response::Response {
    let mut samples = Vec::new();
    crate::telemetry::samples(&mut samples);
    hub.telemetry_samples(&mut samples);
    crate::telemetry::page(samples)
}

/// The HTTP API.
pub fn api_router(hub: Arc<Hub>) -> Router {
    let routes = Router::new()
        .route("/metrics", get(metrics_any))
        .route("/metrics/{device_id}", get(metrics_one))
        .route("/devices", get(devices))
        .route("/status/{device_id}", get(status))
        .route("/plugs/metrics", get(super::page::plugs_metrics))
        .route("/telemetry", get(telemetry));
    json_fallbacks(routes, |_| "GET, HEAD")
        // Nothing here takes a body.
        .layer(axum::middleware::from_fn(|request, next| {
            bounded(0, request, next)
        }))
        .with_state(hub)
}

fn failure(e: RpcFailure) -> ApiError {
    let status = match &e {
        RpcFailure::NotConnected(_) => StatusCode::NOT_FOUND,
        RpcFailure::ConnectionLost(_) => StatusCode::BAD_GATEWAY,
        RpcFailure::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
        RpcFailure::Device(..) | RpcFailure::Invalid(..) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// `?max_age=SECONDS`: a reading that old is good enough (no RPC when the plug's
/// pushed status is that fresh).
#[derive(Debug, Default, serde::Deserialize)]
struct Freshness {
    max_age: Option<f64>,
}

impl Freshness {
    fn max_age(&self) -> Result<Option<std::time::Duration>, ApiError> {
        match self.max_age {
            None => Ok(None),
            Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
                Ok(Some(std::time::Duration::from_secs_f64(s)))
            }
            Some(s) => Err(ApiError::bad_request(format!(
                "max_age must be seconds from 0 to 86400, got {s}"
            ))),
        }
    }
}

async fn read(
    hub: &Hub,
    name: &str,
    max_age: Option<std::time::Duration>,
) -> Result<Json<PlugReading>, ApiError> {
    let plug = hub
        .resolve(name)
        .ok_or_else(|| failure(RpcFailure::NotConnected(name.to_owned())))?;
    let reading = match max_age {
        Some(age) => hub.read_fresh(&plug, age).await,
        None => hub.read(&plug).await,
    }
    .map_err(failure)?;
    Ok(Json(Hub::plug_reading(&plug, reading)))
}

async fn metrics_one(
    State(hub): State<Arc<Hub>>,
    PathParam(device_id): PathParam<String>,
    QueryParams(fresh): QueryParams<Freshness>,
) -> Result<Json<PlugReading>, ApiError> {
    read(&hub, &device_id, fresh.max_age()?).await
}

/// Without a device id: the one plug, or 409 with the list rather than a guess.
async fn metrics_any(
    State(hub): State<Arc<Hub>>,
    QueryParams(fresh): QueryParams<Freshness>,
) -> Result<Json<PlugReading>, ApiError> {
    let max_age = fresh.max_age()?;
    let plugs = hub.plugs();
    match plugs.as_slice() {
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No Shelly device connected",
        )),
        [one] => read(&hub, &one.id, max_age).await,
        many => {
            let names: Vec<&str> = many.iter().map(|p| p.name()).collect();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{} Shelly devices are connected; ask for one: /metrics/{{device_id}}",
                    many.len()
                ),
            )
            .detail("devices", json!(names)))
        }
    }
}

async fn devices(State(hub): State<Arc<Hub>>) -> Json<Value> {
    let plugs = hub.plugs();
    let names: Vec<&str> = plugs.iter().map(|p| p.name()).collect();
    let details: Vec<Value> = plugs
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "alias": p.alias,
                "connected_since": p.connected_at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
            })
        })
        .collect();
    let stats = &hub.stats;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({
        "devices": names,
        "count": names.len(),
        "plugs": details,
        "stats": {
            "connections": n(&stats.connections),
            "replaced": n(&stats.replaced),
            "invalid_frames": n(&stats.invalid_frames),
            "oversized_frames": n(&stats.oversized_frames),
            "rejected": n(&stats.rejected),
            "rpc_requests": n(&stats.rpc_requests),
            "rpc_failures": n(&stats.rpc_failures),
        },
    }))
}

/// The plug's status document as pushed and polled (for troubleshooting).
async fn status(
    State(hub): State<Arc<Hub>>,
    PathParam(device_id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let plug = hub
        .resolve(&device_id)
        .ok_or_else(|| failure(RpcFailure::NotConnected(device_id.clone())))?;
    Ok(Json(
        json!({"device_id": plug.id, "alias": plug.alias, "status": plug.status()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(uri: &str, secret: Option<&str>) -> Option<Option<String>> {
        let secret = secret.and_then(Secret::new);
        connection_alias(&uri.parse().expect("uri"), secret.as_ref())
    }

    #[test]
    fn connection_urls() {
        assert_eq!(alias("/", None), Some(None));
        assert_eq!(alias("/orin-01", None), Some(Some("orin-01".into())));
        assert_eq!(alias("/shelly", None), Some(None));
        assert_eq!(alias("/?device=pi.lab", None), Some(Some("pi.lab".into())));
        assert_eq!(alias("/bad%20name", None), None);
        assert_eq!(alias("/", Some("s3")), None);
        assert_eq!(alias("/?token=nope", Some("s3")), None);
        assert_eq!(alias("/?token=s3", Some("s3")), Some(None));
        assert_eq!(
            alias("/orin-01?token=s3", Some("s3")),
            Some(Some("orin-01".into()))
        );
        assert_eq!(alias("/s3/", Some("s3")), Some(None));
        assert_eq!(
            alias("/s3/orin-01", Some("s3")),
            Some(Some("orin-01".into()))
        );
        assert_eq!(alias("/orin-01/s3", Some("s3")), None);
        // Percent-encoded secrets and names are decoded; bad encodings refused.
        assert_eq!(alias("/?token=p%2Bq%3Dr", Some("p+q=r")), Some(None));
        assert_eq!(
            alias("/p%2Bq%3Dr/orin-01", Some("p+q=r")),
            Some(Some("orin-01".into()))
        );
        assert_eq!(
            alias("/?device=orin%2D01", None),
            Some(Some("orin-01".into()))
        );
        assert_eq!(alias("/?token=%zz", Some("s3")), None);
        assert_eq!(alias("/..", None), None);
    }
}
