//! Measured runs in the management API: `POST /runs`, `POST /runs/{id}/stop`,
//! `GET /runs/{id}`, `GET /runs/{id}/trace`, `GET /runs`. The bookkeeping is
//! `energy::runs`, the drawing `energy::plot`; this module only speaks HTTP
//! (token rules are the API's, applied around the router). `GET /runs/{id}` and
//! `GET /runs` answer a browser (`Accept: text/html`) with a page that draws the
//! power over time.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::energy::plot;
use crate::energy::runs::{End, RunError, RunReport, RunRequest};
use crate::net::body::{PathParam, read_body_limited};
use crate::net::error::ApiError;
use crate::state::AppState;

/// Largest run request: a name and at most 16 short labels fit well inside.
const MAX_RUN_BODY: usize = 16 * 1024;

/// The routes, to merge into the API's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/runs", get(list).post(start))
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/trace", get(trace))
        .route("/runs/{id}/stop", post(stop))
}

/// What `Allow` says on the runs' paths.
pub fn allow(path: &str) -> Option<&'static str> {
    if path == "/runs" {
        Some("GET, HEAD, POST")
    } else if path.starts_with("/runs/") && path.ends_with("/stop") {
        Some("POST")
    } else if path.starts_with("/runs/") {
        Some("GET, HEAD")
    } else {
        None
    }
}

/// Whether `Accept` names `kind`, before `other` if it names both.
fn wants(headers: &HeaderMap, kind: &str, other: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            let kind = a.find(kind);
            let other = a.find(other);
            kind.is_some() && other.is_none_or(|o| kind < Some(o))
        })
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Invalid(_) => ApiError::bad_request(e.to_string()),
            RunError::TooMany => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            RunError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            RunError::Stopped(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            RunError::Storage { .. } => ApiError::internal(e.to_string()),
        }
    }
}

async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body_limited(&headers, body, MAX_RUN_BODY).await?;
    let request: RunRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid run: {e} (expected {{\"name\": \"...\", \"labels\": {{...}}, \"timeout_s\": 3600}})"
        ))
    })?;
    let id = state.runs.start(request)?;
    let mut response = (StatusCode::CREATED, Json(json!({ "id": id }))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/runs/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// What `measure` (or a client) may say when it stops a run.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    exit_code: Option<i32>,
    end: Option<End>,
}

async fn stop(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RunReport>, ApiError> {
    let body = read_body_limited(&headers, body, MAX_RUN_BODY).await?;
    let request: StopRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StopRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "Invalid stop: {e} (expected nothing, or {{\"exit_code\": 0, \"end\": \"exit\"}})"
            ))
        })?
    };
    let end = match request.end.unwrap_or(End::Stop) {
        e @ (End::Stop | End::Exit) => e,
        other => {
            return Err(ApiError::bad_request(format!(
                "end must be \"stop\" or \"exit\", not {other:?}"
            )));
        }
    };
    let runs = state.runs.clone();
    // Appending to runs.jsonl syncs to disk: off the async threads.
    tokio::task::spawn_blocking(move || runs.stop(&id, request.exit_code, end))
        .await
        .map_err(|e| ApiError::internal(format!("stopping the run failed: {e}")))?
        .map(Json)
        .map_err(ApiError::from)
}

async fn show(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let runs = state.runs.clone();
    let html = wants(&headers, "text/html", "application/json");
    tokio::task::spawn_blocking(move || {
        let report = runs.get(&id)?;
        if !html {
            return Ok(Json(report).into_response());
        }
        let trace = runs.trace(&id)?.unwrap_or_default();
        Ok(Html(plot::run_page(&report, &trace)).into_response())
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the run failed: {e}")))?
}

/// `GET /runs/{id}/trace`: CSV (`t_s,source,watts`), or JSON when asked for.
async fn trace(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let runs = state.runs.clone();
    let json = wants(&headers, "application/json", "text/csv");
    tokio::task::spawn_blocking(move || {
        let Some(trace) = runs.trace(&id)? else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "run {id} has no trace (it is older than the traces kept, or ended in a crash)"
                ),
            ));
        };
        Ok(if json {
            Json(plot::trace_json(&trace)).into_response()
        } else {
            (
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                plot::trace_csv(&trace),
            )
                .into_response()
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the trace failed: {e}")))?
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let runs = state.runs.clone();
    let html = wants(&headers, "text/html", "application/json");
    let answer = tokio::task::spawn_blocking(move || {
        let all = runs.list();
        if !html {
            return Json(json!({ "runs": all })).into_response();
        }
        let traces: Vec<_> = all
            .iter()
            .map(|r| runs.trace(&r.id).ok().flatten().unwrap_or_default())
            .collect();
        Html(plot::list_page(&all, &traces)).into_response()
    })
    .await;
    answer
        .unwrap_or_else(|e| ApiError::internal(format!("listing runs failed: {e}")).into_response())
}
