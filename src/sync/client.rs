//! One exchange with the config server: `GET` or `PUT /config/{device_id}` with
//! the token, the time limit and the body bound, and what the answer means to the
//! device ([`Answer`]) or why the server could not be used ([`ExchangeError`]).

use bytes::Bytes;
use hyper::Method;
use hyper::header::{self, HeaderName};
use serde_json::Value;

use super::Settings;
use super::doc::Doc;
use crate::net::client::ClientError;

/// Largest config the device accepts from the server.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// What a request to the server came back with.
#[derive(Debug)]
pub(super) enum Answer {
    NotModified,
    Config(u64, Doc),
    NotFound,
    Stored(u64),
    Stale,
    /// The server will never take this change (400, 413, 422): its reason.
    Refused(String),
}

/// Why the server could not be used (down, slow, 5xx, garbage, unauthorized).
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Http(#[from] ClientError),
    #[error("the config server sent no ETag")]
    NoEtag,
    #[error("the config server stored the change but sent no ETag")]
    StoredWithoutEtag,
    #[error("the config server sent something other than a JSON object")]
    NotAnObject,
    #[error("the config server sent invalid JSON: {0}")]
    InvalidJson(serde_json::Error),
    #[error("the config server refused the token ({0}): set CONFIG_SERVER_TOKEN")]
    Unauthorized(u16),
    #[error("the config server answered {status}: {text}")]
    Status { status: u16, text: String },
    #[error("unexpected answer to {0}")]
    Unexpected(&'static str),
    #[error("the config server keeps refusing the change as stale")]
    KeepsRefusing,
    #[error(
        "the config server answered 404 to a new device's PUT: is CONFIG_SERVER_URL a config server?"
    )]
    NotAConfigServer,
    /// The exchange that followed a 412 failed; its reason.
    #[error("{0}")]
    Refetch(String),
}

/// One request to the device's config URL.
pub(super) async fn request(
    settings: &Settings,
    method: Method,
    mut headers: Vec<(HeaderName, String)>,
    body: Bytes,
) -> Result<Answer, ExchangeError> {
    let token = settings.token.get();
    if let Some(token) = &token {
        headers.push((header::AUTHORIZATION, format!("Bearer {}", token.expose())));
    }
    let url = settings.config_url();
    let is_get = method == Method::GET;
    let response = settings
        .client
        .request(
            method,
            &url,
            &headers,
            body,
            settings.timeout,
            MAX_CONFIG_BYTES,
        )
        .await?;
    // A server with `--allow-enroll` hands a new device its token on registration.
    if token.is_none()
        && response.status == 201
        && let Some(given) = response
            .headers
            .get(crate::sync::DEVICE_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        settings.token.enrolled(given);
    }
    let revision = response
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| {
            t.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<u64>()
                .ok()
        });
    let error_text = || {
        serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(200)
                    .collect()
            })
    };
    match response.status {
        304 => Ok(Answer::NotModified),
        200 if is_get => {
            let revision = revision.ok_or(ExchangeError::NoEtag)?;
            match serde_json::from_slice::<Value>(&response.body) {
                Ok(Value::Object(doc)) => Ok(Answer::Config(revision, doc)),
                Ok(_) => Err(ExchangeError::NotAnObject),
                Err(e) => Err(ExchangeError::InvalidJson(e)),
            }
        }
        200 | 201 => Ok(Answer::Stored(
            revision.ok_or(ExchangeError::StoredWithoutEtag)?,
        )),
        404 => Ok(Answer::NotFound),
        412 => Ok(Answer::Stale),
        400 | 413 | 422 => Ok(Answer::Refused(error_text())),
        401 | 403 => Err(ExchangeError::Unauthorized(response.status)),
        status => Err(ExchangeError::Status {
            status,
            text: error_text(),
        }),
    }
}
