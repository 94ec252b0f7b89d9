//! The management API's one error type: `{"error": "..."}` with a status.
//!
//! Bad input is the client's business and is not logged; internal faults are
//! logged here and answered with a 5xx.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Extra fields beside `error` (a config error's file and line).
    pub details: Map<String, Value>,
    /// Headers such as `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// An internal fault: logged with its cause, answered with 500.
    pub fn internal(message: impl Into<String>) -> Self {
        let e = Self::new(StatusCode::INTERNAL_SERVER_ERROR, message);
        tracing::error!(error = %e.message, "management API request failed");
        e
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

/// The JSON 404 and 405 of a server's API: `{"error": "Not found: /x"}` and
/// `{"error": "Method DELETE not allowed on /x"}` with `Allow: allow(path)`.
pub fn json_fallbacks<S>(router: Router<S>, allow: fn(&str) -> &'static str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .fallback(|req: Request| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Not found: {}", req.uri().path()),
            )
        })
        .method_not_allowed_fallback(move |req: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "Method {} not allowed on {}",
                    req.method(),
                    req.uri().path()
                ),
            )
            .header(header::ALLOW, allow(req.uri().path()))
        })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.message));
        body.extend(self.details);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
