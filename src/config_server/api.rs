//! The config server's HTTP API and web page.
//!
//! | Route | |
//! |---|---|
//! | `GET /config/{id}` | the device's config (JSON), `ETag: "<revision>"`; `If-None-Match` gives 304 |
//! | `PUT /config/{id}` | a new revision (validated; `If-Match` / `If-None-Match: *`; 412 on a stale revision) |
//! | `DELETE /config/{id}` | removes the device (its history stays) |
//! | `GET /config/{id}/history` | every revision, oldest first (`?limit=N` for the newest N) |
//! | `GET /devices` | each device: type, revision, updated, last contact |
//! | `GET /` | the operator's page |
//! | `GET /metrics` | the server's own metrics (Prometheus text) |
//!
//! Errors are `{"error": "..."}`. Who may do what:
//! * the admin token (`--token`): every route, as `Authorization: Bearer <token>` or
//!   as the password of Basic authentication (browsers);
//! * a device token (`config-server token create ID`): `GET`/`PUT` of
//!   `/config/ID` and `GET /config/ID/history` only; 403 anywhere else;
//! * no credentials: everything while the server has neither an admin token nor
//!   any device token (a lab setup); otherwise 401, except that with
//!   `--allow-enroll` a device id the server has never seen may `GET` its (absent)
//!   config and register once with `PUT` + `If-None-Match: *`, receiving its own
//!   token in the `X-Device-Token` header of the 201.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::db::{Db, Precondition, WriteOutcome};
use crate::config::Secret;
use crate::http::auth::{authorized_or_basic, bearer_token};
use crate::http::body::{PathParam, QueryParams, bounded, read_body_limited};
use crate::http::error::{ApiError, json_fallbacks};

/// Largest config body accepted (thousands of metric ids fit easily).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most history rows one request returns.
pub const MAX_HISTORY: usize = 10_000;

const PAGE: &str = include_str!("page.html");

pub use crate::sync::DEVICE_TOKEN_HEADER;

#[derive(Debug)]
pub struct ServerState {
    pub db: Db,
    /// The admin token.
    pub token: Option<Secret>,
    /// Unknown devices may register once without a token (`--allow-enroll`).
    pub allow_enroll: bool,
}

/// Who made a request, as the guard found; handlers read it from the extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token, or a server with no credentials at all.
    Admin,
    /// A device token, for this device.
    Device(String),
    /// No token: a device registering itself (`--allow-enroll`).
    Enrolling(String),
}

pub fn router(state: Arc<ServerState>) -> Router {
    let routes = Router::new()
        .route("/", get(page))
        .route("/devices", get(devices))
        .route("/metrics", get(metrics))
        .route(
            "/config/{device_id}",
            get(get_config).put(put_config).delete(delete_config),
        )
        .route("/config/{device_id}/history", get(history));
    json_fallbacks(routes, |path| {
        if path.starts_with("/config/") && !path.ends_with("/history") {
            "GET, HEAD, PUT, DELETE"
        } else {
            "GET, HEAD"
        }
    })
    .layer(middleware::from_fn(|request, next| {
        bounded(MAX_BODY_BYTES, request, next)
    }))
    .layer(middleware::from_fn_with_state(state.clone(), guard))
    .with_state(state)
}

/// The device a `/config/{id}` or `/config/{id}/history` path names.
fn device_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/config/")?;
    let id = rest.strip_suffix("/history").unwrap_or(rest);
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Finds who the request is from and lets it on, or answers 401 / 403.
async fn guard(
    State(state): State<Arc<ServerState>>,
    mut request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let checked = {
        let state = state.clone();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let headers = request.headers().clone();
        // Token checks read SQLite: off the async threads.
        tokio::task::spawn_blocking(move || state.caller(&method, &path, &headers)).await
    };
    match checked {
        Ok(Ok(caller)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(Err(Refusal::Unauthorized)) => state.refuse(),
        Ok(Err(Refusal::Forbidden(why))) => {
            ApiError::new(StatusCode::FORBIDDEN, why).into_response()
        }
        Ok(Err(Refusal::Internal(why))) => ApiError::internal(why).into_response(),
        Err(e) => ApiError::internal(format!("the credential check failed: {e}")).into_response(),
    }
}

/// Why the guard turned a request away.
#[derive(Debug)]
enum Refusal {
    Unauthorized,
    Forbidden(String),
    Internal(String),
}

impl ServerState {
    fn caller(
        &self,
        method: &axum::http::Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Caller, Refusal> {
        use axum::http::Method;
        let internal = |e: super::db::DbError| Refusal::Internal(e.to_string());
        let device_tokens = self.db.has_tokens().map_err(internal)?;
        if self.token.is_none() && !device_tokens {
            return Ok(Caller::Admin);
        }
        if self.token.is_some() && authorized_or_basic(self.token.as_ref(), headers) {
            return Ok(Caller::Admin);
        }
        let target = device_of(path);
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if let Some(given) = given {
            return match self.db.token_device(given).map_err(internal)? {
                Some(device) if target == Some(device.as_str()) && method != Method::DELETE => {
                    Ok(Caller::Device(device))
                }
                Some(device) => Err(Refusal::Forbidden(format!(
                    "this token is {device}'s: it may only read and write /config/{device}"
                ))),
                None => Err(Refusal::Unauthorized),
            };
        }
        if self.allow_enroll
            && let Some(id) = target
            && !path.ends_with("/history")
            && matches!(*method, Method::GET | Method::HEAD | Method::PUT)
            && self.db.get(id).is_none()
            && !self.db.has_token(id).map_err(internal)?
        {
            return Ok(Caller::Enrolling(id.to_owned()));
        }
        Err(Refusal::Unauthorized)
    }

    fn refuse(&self) -> Response {
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        // Bearer for API clients; Basic makes a browser ask for the token.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"edge-metrics-exporter config server\", Basic realm=\"edge-metrics-exporter config server\"",
            ),
        );
        response
    }
}

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Device ids are host names: letters, digits, `.`, `_`, `-`; 1 to 128 characters.
fn check_id(device_id: &str) -> Result<(), ApiError> {
    if crate::sync::is_device_id(device_id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid device id: {device_id:?} (letters, digits, '.', '_', '-'; at most 128; not . or ..)"
        )))
    }
}

fn unknown(device_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Unknown device: {device_id}"),
    )
}

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The revision in an entity tag, `"7"` or `W/"7"`.
fn tag_revision(tag: &str) -> Option<u64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// The write's precondition from `If-Match` / `If-None-Match`.
fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let value = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).unwrap_or("\u{0}"))
    };
    if let Some(tag) = value(header::IF_MATCH) {
        if tag == "*" {
            return Ok(Precondition::Exists);
        }
        return tag_revision(tag)
            .map(Precondition::Revision)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "If-Match must be an ETag such as \"3\" or *, got {tag:?}"
                ))
            });
    }
    match value(header::IF_NONE_MATCH) {
        Some("*") => Ok(Precondition::Absent),
        Some(other) => Err(ApiError::bad_request(format!(
            "If-None-Match on a write must be *, got {other:?}"
        ))),
        None => Ok(Precondition::None),
    }
}

/// Requests from an exporter (its User-Agent) count as the device's contact.
fn from_device(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("edge-metrics-exporter/"))
}

async fn get_config(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    if from_device(&headers) {
        state.db.touch(&device_id);
    }
    let entry = state
        .db
        .get(&device_id)
        .ok_or_else(|| unknown(&device_id))?;
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == "*" || tag_revision(t) == Some(entry.revision))
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Body::from(entry.config.clone()),
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert(header::ETAG, etag(entry.revision));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

async fn put_config(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    let expect = precondition(&headers)?;
    let enrolling = matches!(caller, Caller::Enrolling(_));
    if enrolling && expect != Precondition::Absent {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a device without a token may only register (PUT with If-None-Match: *)",
        ));
    }
    let body = read_body_limited(&headers, body, MAX_BODY_BYTES).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))?;
    let origin = format!("PUT /config/{device_id}");
    let (config, _) = crate::config::validate_json(&value, Path::new(&origin)).map_err(|e| {
        let mut err = ApiError::bad_request(e.message.clone());
        if let Some(field) = &e.field {
            err = err.detail("field", field.clone());
        }
        if let Some(hint) = &e.hint {
            err = err.detail("hint", hint.clone());
        }
        err
    })?;
    if from_device(&headers) {
        state.db.touch(&device_id);
    }
    let state2 = state.clone();
    let id = device_id.clone();
    let device_type = config.device_type.as_str();
    let (outcome, token) = tokio::task::spawn_blocking(move || {
        // Enrolment: the token first (one per device, ever, until revoked), then
        // the config; a lost race takes the token back.
        let token = if enrolling {
            match state2.db.create_token(&id, true)? {
                Some(t) => Some(t),
                None => return Ok((WriteOutcome::PreconditionFailed(None), None)),
            }
        } else {
            None
        };
        let outcome = state2.db.put(&id, &value, device_type, expect);
        if token.is_some() && !matches!(outcome, Ok(WriteOutcome::Created(_))) {
            state2.db.revoke_token(&id)?;
        }
        outcome.map(|o| (o, token))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the config store failed: {e}")))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (status, revision) = match outcome {
        WriteOutcome::Created(r) => (StatusCode::CREATED, r),
        WriteOutcome::Updated(r) => (StatusCode::OK, r),
        WriteOutcome::PreconditionFailed(current) => return Err(stale(&device_id, current)),
        WriteOutcome::Deleted(_) | WriteOutcome::NotFound => {
            return Err(ApiError::internal("unexpected outcome of a PUT"));
        }
    };
    tracing::info!(device_id, revision, "config stored");
    let mut response = (
        status,
        axum::Json(json!({"status": "success", "device_id": device_id, "revision": revision})),
    )
        .into_response();
    response.headers_mut().insert(header::ETAG, etag(revision));
    if let Some(token) = token {
        tracing::info!(
            device_id,
            "device enrolled: its token was sent with the 201"
        );
        let value = HeaderValue::from_str(&token).map_err(|e| ApiError::internal(e.to_string()))?;
        response.headers_mut().insert(DEVICE_TOKEN_HEADER, value);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

fn stale(device_id: &str, current: Option<u64>) -> ApiError {
    let message = match current {
        Some(r) => format!("{device_id} is at revision {r}: fetch it and apply your change to it"),
        None => format!("{device_id} does not exist"),
    };
    let mut err = ApiError::new(StatusCode::PRECONDITION_FAILED, message);
    if let Some(r) = current {
        err = err.detail("revision", r);
    }
    err
}

async fn delete_config(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    let expect = precondition(&headers)?;
    let state2 = state.clone();
    let id = device_id.clone();
    let outcome = tokio::task::spawn_blocking(move || state2.db.delete(&id, expect))
        .await
        .map_err(|e| ApiError::internal(format!("the config store failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match outcome {
        WriteOutcome::Deleted(revision) => {
            tracing::info!(device_id, revision, "device deleted");
            Ok(axum::Json(
                json!({"status": "success", "device_id": device_id, "revision": revision}),
            )
            .into_response())
        }
        WriteOutcome::NotFound => Err(unknown(&device_id)),
        WriteOutcome::PreconditionFailed(current) => Err(stale(&device_id, current)),
        WriteOutcome::Created(_) | WriteOutcome::Updated(_) => {
            Err(ApiError::internal("unexpected outcome of a DELETE"))
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    let limit = query.limit.unwrap_or(MAX_HISTORY).clamp(1, MAX_HISTORY);
    let state2 = state.clone();
    let id = device_id.clone();
    let rows = tokio::task::spawn_blocking(move || state2.db.history(&id, limit))
        .await
        .map_err(|e| ApiError::internal(format!("the config store failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if rows.is_empty() {
        return Err(unknown(&device_id));
    }
    Ok(axum::Json(json!({"device_id": device_id, "history": rows})).into_response())
}

static DEVICES: crate::sample::Family = crate::sample::Family::gauge(
    "edge_exporter_config_server_devices",
    "Devices the config server holds a config for",
    "",
);

/// The server's own metrics in Prometheus text.
async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let mut samples = Vec::new();
    crate::telemetry::samples(&mut samples);
    samples.push(crate::sample::Sample::own(
        &DEVICES,
        state.db.list().len() as f64,
    ));
    crate::telemetry::page(samples)
}

async fn devices(State(state): State<Arc<ServerState>>) -> axum::Json<Value> {
    let list: Vec<Value> = state
        .db
        .list()
        .into_iter()
        .map(|(id, entry, contact)| {
            json!({
                "device_id": id,
                "device_type": entry.device_type,
                "revision": entry.revision,
                "updated_at": entry.updated_at,
                "last_contact": contact,
            })
        })
        .collect();
    axum::Json(json!({"devices": list}))
}
