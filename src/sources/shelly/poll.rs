//! Reading a Shelly device over HTTP, for devices that cannot connect out to a hub
//! (`shelly.poll`): Gen2+ `GET /rpc/Shelly.GetStatus`, answering a `401` with
//! SHA-256 digest authentication (user `admin`, realm = the device id), and Gen1
//! `GET /status` with HTTP Basic.

use hyper::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::Value;

use super::{MAX_BODY, REQUEST_TIMEOUT, Reading, digest, gen1_reading, reading};
use crate::net::auth::basic_header;
use crate::net::client::{self, ClientError};
use crate::net::secret::Secret;

/// A plug read over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    /// `http://host[:port]`, without a path.
    pub url: String,
    pub generation: u8,
    pub username: String,
    pub password: Option<Secret>,
    pub name: String,
}

/// Why a device gave no reading.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Http(#[from] ClientError),
    #[error("{0} asks for a password; set shelly.poll[].password")]
    NeedsPassword(String),
    #[error("{0} sent no usable digest challenge")]
    NoChallenge(String),
    #[error("{name} asks for digest algorithm {algorithm}")]
    Algorithm { name: String, algorithm: String },
    #[error("{name} answered {status} to {path}")]
    Status {
        name: String,
        status: u16,
        path: &'static str,
    },
    #[error("{name} sent invalid JSON: {source}")]
    InvalidJson {
        name: String,
        source: serde_json::Error,
    },
    #[error("{0} sent a status that is not an object")]
    NotAnObject(String),
    #[error("{0} reports no power component")]
    NoPowerComponent(String),
}

/// Reads one device.
pub async fn read(target: &PollTarget) -> Result<Reading, PollError> {
    let name = || target.name.clone();
    let path = if target.generation == 1 {
        "/status"
    } else {
        "/rpc/Shelly.GetStatus"
    };
    let url = format!("{}{path}", target.url);
    let mut headers = Vec::new();
    if target.generation == 1
        && let Some(password) = &target.password
    {
        headers.push((
            AUTHORIZATION,
            basic_header(&target.username, password.expose()),
        ));
    }
    let mut response = client::get(&url, &headers, REQUEST_TIMEOUT, MAX_BODY).await?;
    if response.status == 401 && target.generation == 2 {
        let password = target
            .password
            .as_ref()
            .ok_or_else(|| PollError::NeedsPassword(name()))?;
        let challenge = response
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(digest::parse_challenge)
            .ok_or_else(|| PollError::NoChallenge(name()))?;
        let cnonce = format!("{:016x}", client_nonce());
        let header = digest::authorization(
            &challenge,
            &target.username,
            password.expose(),
            "GET",
            path,
            &cnonce,
        )
        .ok_or_else(|| PollError::Algorithm {
            name: name(),
            algorithm: challenge.algorithm.clone(),
        })?;
        response = client::get(&url, &[(AUTHORIZATION, header)], REQUEST_TIMEOUT, MAX_BODY).await?;
    }
    if response.status != 200 {
        return Err(PollError::Status {
            name: name(),
            status: response.status,
            path,
        });
    }
    let body: Value =
        serde_json::from_slice(&response.body).map_err(|source| PollError::InvalidJson {
            name: name(),
            source,
        })?;
    let reading = match (target.generation, &body) {
        (1, _) => gen1_reading(&body),
        (_, Value::Object(status)) => reading(status),
        _ => return Err(PollError::NotAnObject(name())),
    };
    if reading.components.is_empty() {
        return Err(PollError::NoPowerComponent(name()));
    }
    Ok(reading)
}

/// A client nonce: not a secret, only needs to differ between requests.
pub fn client_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
