//! Request bodies and URL parts, bounded and with JSON errors, for the servers'
//! APIs (management API, config server, plug hub):
//!
//! * [`bounded`], a middleware: every request's body is read before the handler
//!   runs, at most the route's limit within [`BODY_TIMEOUT`] (413 or 408 otherwise),
//!   so no route answers a body it never read, and none can be made to wait on one;
//! * [`read_body_limited`], the same for a handler that reads its body itself;
//! * [`PathParam`] and [`QueryParams`]: axum's `Path` and `Query` whose rejections
//!   are the servers' `{"error": "..."}`, not plain text.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads every request's body (at most `limit` bytes, within [`BODY_TIMEOUT`])
/// before the handler runs; a larger or slower one is answered 413 or 408 and
/// goes no further. Used as `middleware::from_fn(move |r, n| bounded(limit, r, n))`.
pub async fn bounded(limit: usize, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match read_body_limited(&parts.headers, body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// Reads a request body of at most `limit` bytes within [`BODY_TIMEOUT`]: 413 when
/// larger (declared or sent), 408 when it does not arrive in time.
pub async fn read_body_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body too large (limit {limit} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request body not received in time",
            )
        })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "Could not read the request body: {e}"
        ))),
    }
}

/// `axum::extract::Path` with the servers' JSON error.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}

/// `axum::extract::Query` with the servers' JSON error.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}
