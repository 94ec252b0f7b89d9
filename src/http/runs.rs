//! Measured runs in the management API: `POST /runs`, `POST /runs/{id}/stop`,
//! `GET /runs/{id}`, `GET /runs`. The bookkeeping is `energy::runs`; this module
//! only speaks HTTP (token rules are the API's, applied around the router).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::body::{PathParam, read_body_limited};
use super::error::ApiError;
use crate::energy::runs::{RunError, RunReport, RunRequest};
use crate::state::AppState;

/// Largest run request: a name and at most 16 short labels fit well inside.
const MAX_RUN_BODY: usize = 16 * 1024;

/// The routes, to merge into the API's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/runs", get(list).post(start))
        .route("/runs/{id}", get(show))
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
            "Invalid run: {e} (expected {{\"name\": \"...\", \"labels\": {{...}}}})"
        ))
    })?;
    let id = state.runs.start(request)?;
    let mut response = (StatusCode::CREATED, Json(json!({ "id": id }))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/runs/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn stop(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam<String>,
) -> Result<Json<RunReport>, ApiError> {
    let runs = state.runs.clone();
    // Appending to runs.jsonl syncs to disk: off the async threads.
    tokio::task::spawn_blocking(move || runs.stop(&id, None))
        .await
        .map_err(|e| ApiError::internal(format!("stopping the run failed: {e}")))?
        .map(Json)
        .map_err(ApiError::from)
}

async fn show(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam<String>,
) -> Result<Json<RunReport>, ApiError> {
    Ok(Json(state.runs.get(&id)?))
}

async fn list(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({ "runs": state.runs.list() }))
}
