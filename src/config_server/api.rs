//! The config server's HTTP API and web page.
//!
//! | Route | |
//! |---|---|
//! | `GET /config/{id}` | the device's effective config (JSON), `ETag: "<revision>"`; `If-None-Match` gives 304; `?layer=device` its overrides, `?layer=groups` what its groups give without them |
//! | `PUT /config/{id}` | a new revision (validated; stored as base or overrides, see `layers`; `If-Match` / `If-None-Match`; 412 when the precondition fails) |
//! | `DELETE /config/{id}` | removes the device (its history stays) |
//! | `DELETE /config/{id}/overrides[/{key}]` | drops one override (`interval`, `metrics.<id>`) or all |
//! | `GET /config/{id}/history` | every revision and the layer that made it, oldest first (`?limit=N` for the newest N) |
//! | `GET /devices` | each device: type, revision, groups, last contact and what it reported (`?group=`, `?device_type=` filter) |
//! | `GET`/`PUT /devices/{id}/groups` | the groups a device is assigned (a JSON list, later wins) |
//! | `GET /groups` | every group with its member count |
//! | `GET`/`PUT`/`DELETE /groups/{name}` | a group: a partial config and optional `match` rules |
//! | `GET /groups/{name}/history` | its revisions |
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

use super::db::{Db, Listed, Precondition, Report, WriteOutcome};
use crate::config::Secret;
use crate::net::auth::{authorized_or_basic, bearer_token};
use crate::net::body::{PathParam, QueryParams, bounded, read_body_limited};
use crate::net::error::{ApiError, json_fallbacks};

/// Largest config body accepted (thousands of metric ids fit easily).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most history rows one request returns.
pub const MAX_HISTORY: usize = 10_000;

const PAGE: &str = include_str!("page.html");

pub mod groups;

pub use crate::sync::{DEVICE_TOKEN_HEADER, FAILING_HEADER, PENDING_HEADER, REVISION_HEADER};

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
        .route("/config/{device_id}/history", get(history))
        .route(
            "/config/{device_id}/overrides",
            axum::routing::delete(drop_overrides),
        )
        .route(
            "/config/{device_id}/overrides/{key}",
            axum::routing::delete(drop_override),
        )
        .route(
            "/devices/{device_id}/groups",
            get(device_groups).put(put_device_groups),
        )
        .route("/groups", get(groups::list))
        .route(
            "/groups/{name}",
            get(groups::get_group)
                .put(groups::put_group)
                .delete(groups::delete_group),
        )
        .route("/groups/{name}/history", get(groups::history));
    json_fallbacks(routes, |path| {
        if path.contains("/overrides") {
            "DELETE"
        } else if path.ends_with("/history") || path == "/groups" {
            "GET, HEAD"
        } else if path.starts_with("/devices/") {
            "GET, HEAD, PUT"
        } else if path.starts_with("/config/") || path.starts_with("/groups/") {
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
    // Inline: the tokens are cached; a check reads SQLite's commit counter
    // (shared memory, no I/O) and the table only after `tokens` changed.
    let checked = state.caller(request.method(), request.uri().path(), request.headers());
    match checked {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(Refusal::Unauthorized) => state.refuse(),
        Err(Refusal::Forbidden(why)) => ApiError::new(StatusCode::FORBIDDEN, why).into_response(),
        Err(Refusal::Internal(why)) => ApiError::internal(why).into_response(),
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
pub(super) fn check_id(device_id: &str) -> Result<(), ApiError> {
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

pub(super) fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The revision in an entity tag: `"7"`; with `weak`, `W/"7"` too (weak
/// comparison, for `If-None-Match`).
fn tag_revision(tag: &str, weak: bool) -> Option<u64> {
    let tag = tag.trim();
    let tag = match tag.strip_prefix("W/") {
        Some(t) if weak => t,
        Some(_) => return None,
        None => tag,
    };
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// The revisions a list of entity tags names (tags of no revision of ours are
/// left out: they can never be current).
fn tag_revisions(tags: &str, weak: bool) -> Vec<u64> {
    tags.split(',')
        .filter_map(|t| tag_revision(t, weak))
        .collect()
}

/// The write's precondition from `If-Match` / `If-None-Match`, compared as HTTP
/// says: `If-Match` strongly (any tag that is not the current one, whatever its
/// form, fails with 412), `If-None-Match` weakly.
pub(super) fn precondition(headers: &HeaderMap) -> Precondition {
    let value = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).unwrap_or(""))
    };
    if let Some(tags) = value(header::IF_MATCH) {
        if tags == "*" {
            return Precondition::Exists;
        }
        return Precondition::Revision(tag_revisions(tags, false));
    }
    match value(header::IF_NONE_MATCH) {
        Some("*") => Precondition::Absent,
        Some(tags) => Precondition::NoneOf(tag_revisions(tags, true)),
        None => Precondition::None,
    }
}

/// Requests from an exporter (its User-Agent) count as the device's contact.
fn from_device(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("edge-metrics-exporter/"))
}

#[derive(Debug, serde::Deserialize)]
struct ConfigQuery {
    layer: Option<String>,
}

/// What a device reports with its polls, from the request's headers: its
/// version (User-Agent), the revision it runs ([`REVISION_HEADER`]), its
/// failing collectors and waiting changes. `None` when it sent none of them.
fn report_of(headers: &HeaderMap) -> Option<Report> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let revision = text(REVISION_HEADER);
    let failing = text(FAILING_HEADER);
    let pending = text(PENDING_HEADER);
    if revision.is_none() && failing.is_none() && pending.is_none() {
        return None;
    }
    let version = text(header::USER_AGENT.as_str())
        .and_then(|ua| ua.strip_prefix("edge-metrics-exporter/"))
        .map(|v| v.chars().take(64).collect());
    let failing_collectors = failing
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| {
            (1..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .take(64)
        .map(str::to_owned)
        .collect();
    Some(Report {
        version,
        applied_revision: revision.and_then(|r| r.parse().ok()),
        failing_collectors,
        pending_changes: pending.and_then(|p| p.parse().ok()),
    })
}

async fn get_config(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    QueryParams(query): QueryParams<ConfigQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    if from_device(&headers) {
        state.db.touch(&device_id, report_of(&headers));
    }
    let entry = state
        .db
        .get(&device_id)
        .ok_or_else(|| unknown(&device_id))?;
    let body = match query.layer.as_deref() {
        None | Some("effective") => entry.config.clone(),
        Some(layer @ ("device" | "groups")) => {
            let state2 = state.clone();
            let id = device_id.clone();
            let layers = tokio::task::spawn_blocking(move || state2.db.layers(&id))
                .await
                .map_err(|e| ApiError::internal(format!("the config store failed: {e}")))?
                .map_err(|e| ApiError::internal(e.to_string()))?
                .ok_or_else(|| unknown(&device_id))?;
            let doc = if layer == "device" {
                layers.overrides
            } else {
                let groups = state.db.groups();
                let docs = entry
                    .groups
                    .iter()
                    .filter_map(|n| groups.get(n))
                    .map(|g| &g.config);
                super::layers::effective(&layers.base, docs, &super::layers::Doc::new())
            };
            bytes::Bytes::from(Value::Object(doc).to_string())
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "layer must be effective, groups or device, got {other:?}"
            )));
        }
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == "*" || tag_revision(t, true) == Some(entry.revision))
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Body::from(body),
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

/// `400` for a config that does not validate, with its field and hint.
pub(super) fn invalid_config(e: &crate::config::ConfigError) -> ApiError {
    let mut err = ApiError::bad_request(e.message.clone());
    if let Some(field) = &e.field {
        err = err.detail("field", field.clone());
    }
    if let Some(hint) = &e.hint {
        err = err.detail("hint", hint.clone());
    }
    err
}

/// The answer to a write that did not happen.
pub(super) fn refused(what: &str, outcome: WriteOutcome) -> ApiError {
    match outcome {
        WriteOutcome::PreconditionFailed(current) => stale(what, current),
        WriteOutcome::NotFound => unknown(what),
        WriteOutcome::Missing(why) => ApiError::new(StatusCode::NOT_FOUND, why),
        WriteOutcome::Invalid { device_id, error } => {
            let mut err = ApiError::bad_request(format!(
                "the config of {device_id} with its groups would be invalid: {}",
                error.message
            ))
            .detail("device_id", device_id);
            if let Some(field) = &error.field {
                err = err.detail("field", field.clone());
            }
            err
        }
        WriteOutcome::Created(_) | WriteOutcome::Updated(_) | WriteOutcome::Deleted(_) => {
            ApiError::internal("unexpected outcome of a write")
        }
    }
}

/// Runs a store call off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, super::db::DbError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the config store failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `{"status": "success", "device_id", "revision"}` with the new ETag.
fn written(status: StatusCode, device_id: &str, revision: u64) -> Response {
    tagged(
        status,
        json!({"status": "success", "device_id": device_id, "revision": revision}),
        revision,
    )
}

/// A JSON answer with the revision it shows as its ETag.
pub(super) fn tagged(status: StatusCode, body: serde_json::Value, revision: u64) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::ETAG, etag(revision));
    response
}

async fn drop_overrides(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    dropping(state, device_id, None, headers).await
}

async fn drop_override(
    State(state): State<Arc<ServerState>>,
    PathParam((device_id, key)): PathParam<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    dropping(state, device_id, Some(key), headers).await
}

async fn dropping(
    state: Arc<ServerState>,
    device_id: String,
    key: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    let expect = precondition(&headers);
    let id = device_id.clone();
    let outcome = blocking(move || state.db.drop_override(&id, key.as_deref(), expect)).await?;
    match outcome {
        WriteOutcome::Updated(revision) => {
            tracing::info!(device_id, revision, "override dropped");
            Ok(written(StatusCode::OK, &device_id, revision))
        }
        other => Err(refused(&device_id, other)),
    }
}

async fn device_groups(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    let entry = state
        .db
        .get(&device_id)
        .ok_or_else(|| unknown(&device_id))?;
    Ok(tagged(
        StatusCode::OK,
        json!({
            "device_id": device_id,
            "groups": entry.assigned,
            "effective_groups": entry.groups,
        }),
        entry.revision,
    ))
}

async fn put_device_groups(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    let expect = precondition(&headers);
    let body = read_body_limited(&headers, body, MAX_BODY_BYTES).await?;
    let names: Vec<String> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a JSON list of group names such as [\"jetsons\", \"lab\"]: {e}"
        ))
    })?;
    let mut seen = std::collections::HashSet::new();
    for name in &names {
        if !super::layers::is_group_name(name) || !seen.insert(name) {
            return Err(ApiError::bad_request(format!(
                "invalid or repeated group name: {name:?}"
            )));
        }
    }
    let id = device_id.clone();
    let state2 = state.clone();
    let outcome = blocking(move || state2.db.set_groups(&id, names, expect)).await?;
    match outcome {
        WriteOutcome::Updated(revision) => {
            let entry = state.db.get(&device_id);
            tracing::info!(device_id, revision, "device groups set");
            Ok(tagged(
                StatusCode::OK,
                json!({
                    "status": "success",
                    "device_id": device_id,
                    "revision": revision,
                    "groups": entry.as_ref().map(|e| e.assigned.clone()),
                    "effective_groups": entry.as_ref().map(|e| e.groups.clone()),
                }),
                revision,
            ))
        }
        WriteOutcome::Missing(why) => Err(ApiError::bad_request(why)),
        other => Err(refused(&device_id, other)),
    }
}

async fn put_config(
    State(state): State<Arc<ServerState>>,
    PathParam(device_id): PathParam<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_id(&device_id)?;
    let expect = precondition(&headers);
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
    let (config, _) =
        crate::config::validate_json(&value, Path::new(&origin)).map_err(|e| invalid_config(&e))?;
    if from_device(&headers) {
        state.db.touch(&device_id, report_of(&headers));
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
        other => return Err(refused(&device_id, other)),
    };
    tracing::info!(device_id, revision, "config stored");
    let mut response = written(status, &device_id, revision);
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

/// 412 for a device or (`what` = "group NAME") a group.
pub(super) fn stale(what: &str, current: Option<u64>) -> ApiError {
    let message = match current {
        Some(r) => format!("{what} is at revision {r}: fetch it and apply your change to it"),
        None => format!("{what} does not exist"),
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
    let expect = precondition(&headers);
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
        other => Err(refused(&device_id, other)),
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
static GROUPS: crate::sample::Family = crate::sample::Family::gauge(
    "edge_exporter_config_server_groups",
    "Groups the config server holds",
    "",
);

/// The server's own metrics in Prometheus text.
async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let mut samples = Vec::new();
    crate::telemetry::samples(&mut samples);
    samples.push(crate::sample::Sample::own(
        &DEVICES,
        state.db.device_count() as f64,
    ));
    samples.push(crate::sample::Sample::own(
        &GROUPS,
        state.db.groups().len() as f64,
    ));
    crate::telemetry::page(samples)
}

#[derive(Debug, serde::Deserialize)]
struct DevicesQuery {
    /// Only members of this group.
    group: Option<String>,
    /// Only devices whose type matches this glob.
    device_type: Option<String>,
}

async fn devices(
    State(state): State<Arc<ServerState>>,
    QueryParams(query): QueryParams<DevicesQuery>,
) -> axum::Json<Value> {
    let list: Vec<Value> = state
        .db
        .list()
        .into_iter()
        .filter(|Listed { entry, .. }| {
            query
                .group
                .as_ref()
                .is_none_or(|g| entry.groups.contains(g))
                && query.device_type.as_deref().is_none_or(|p| {
                    entry
                        .device_type
                        .as_deref()
                        .is_some_and(|t| crate::config::glob_match(p, t))
                })
        })
        .map(|listed| {
            let Listed {
                device_id: id,
                entry,
                last_contact: contact,
                report,
            } = listed;
            let report = report.unwrap_or_default();
            json!({
                "device_id": id,
                "device_type": entry.device_type,
                "revision": entry.revision,
                "updated_at": entry.updated_at,
                "last_contact": contact,
                "groups": entry.groups,
                "assigned_groups": entry.assigned,
                "overrides": entry.overrides,
                "version": report.version,
                "applied_revision": report.applied_revision,
                "failing_collectors": report.failing_collectors,
                "pending_changes": report.pending_changes,
            })
        })
        .collect();
    axum::Json(json!({"devices": list}))
}
