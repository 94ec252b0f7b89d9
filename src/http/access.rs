//! Who may use the exporter's two listeners, read from the live config at every
//! request (so a reload applies at once): `metrics_token`, `metrics_basic_auth` and
//! the web config file's bcrypt `basic_auth_users` on the metrics endpoint,
//! `api_token` and `api_basic_auth` on the management API. The probes on the
//! metrics port need none; they reveal no readings.
//!
//! A bcrypt check costs tens of milliseconds on a small board, so it runs on the
//! blocking pool (two at a time), and credentials that passed are remembered (as
//! a SHA-256 of the hash, user and password, never in clear) so a scrape every
//! second does not pay it again.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Guarded, allowed, challenge};
use super::error::ApiError;
use crate::config::{BasicCredentials, Config, Secret};
use crate::state::AppState;

/// Which of the exporter's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Metrics,
    Api,
}

/// The credentials of one listener, as a [`Guarded`] policy.
#[derive(Debug)]
pub struct Access {
    state: Arc<AppState>,
    listener: Listener,
    /// Digests of bcrypt credentials that passed.
    passed: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    bcrypt_slots: tokio::sync::Semaphore,
}

/// Remembered bcrypt successes; past this the memory starts over.
const MAX_REMEMBERED: usize = 256;

impl Access {
    pub fn new(state: Arc<AppState>, listener: Listener) -> Arc<Self> {
        Arc::new(Access {
            state,
            listener,
            passed: Default::default(),
            bcrypt_slots: tokio::sync::Semaphore::new(2),
        })
    }

    /// Whether the request may pass, bcrypt users of the web config included.
    pub async fn allows_request(&self, headers: &HeaderMap) -> bool {
        let config = self.state.store.live();
        let (token, basic) = self.credentials(&config);
        let users = match (self.listener, &config.web.config) {
            (Listener::Metrics, Some(web)) if !web.users.is_empty() => Some(&web.users),
            _ => None,
        };
        let Some(users) = users else {
            return allowed(token, basic, headers);
        };
        if (token.is_some() || basic.is_some()) && allowed(token, basic, headers) {
            return true;
        }
        let Some((user, password)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::auth::basic_pair)
        else {
            return false;
        };
        let Some(hash) = users.get(&user).cloned() else {
            return false;
        };
        let digest: [u8; 32] = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for part in [hash.as_bytes(), user.as_bytes(), password.as_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            h.finalize().into()
        };
        if crate::lock::lock(&self.passed).contains(&digest) {
            return true;
        }
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok {
            let mut passed = crate::lock::lock(&self.passed);
            if passed.len() >= MAX_REMEMBERED {
                passed.clear();
            }
            passed.insert(digest);
        }
        ok
    }

    fn credentials<'a>(
        &self,
        config: &'a Config,
    ) -> (Option<&'a Secret>, Option<&'a BasicCredentials>) {
        match self.listener {
            Listener::Metrics => (
                config.metrics_token.as_ref(),
                config.metrics_basic_auth.as_ref(),
            ),
            Listener::Api => (config.api_token.as_ref(), config.api_basic_auth.as_ref()),
        }
    }
}

impl Guarded for Access {
    fn allows(&self, headers: &HeaderMap) -> bool {
        let config = self.state.store.live();
        let (token, basic) = self.credentials(&config);
        allowed(token, basic, headers)
    }

    fn refuse(&self) -> Response {
        let config = self.state.store.live();
        let (token, basic) = self.credentials(&config);
        let web_users = self.listener == Listener::Metrics
            && config
                .web
                .config
                .as_ref()
                .is_some_and(|w| !w.users.is_empty());
        if web_users {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, super::auth::BASIC_CHALLENGE)],
                "Unauthorized: send a user and password of the web config's basic_auth_users\n",
            )
                .into_response();
        }
        let (token_key, basic_key) = match self.listener {
            Listener::Metrics => ("metrics_token", "metrics_basic_auth"),
            Listener::Api => ("api_token", "api_basic_auth"),
        };
        let message = match token {
            Some(_) => format!("Unauthorized: send Authorization: Bearer <{token_key}>"),
            None => format!("Unauthorized: send the {basic_key} user and password"),
        };
        match self.listener {
            Listener::Api => ApiError::new(StatusCode::UNAUTHORIZED, message)
                .header(header::WWW_AUTHENTICATE, challenge(basic))
                .into_response(),
            // The metrics port answers in text, as the rest of its pages.
            Listener::Metrics => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge(basic))],
                format!("{message}\n"),
            )
                .into_response(),
        }
    }
}

/// [`super::auth::require`] for a listener whose check may run bcrypt: the
/// request goes on when [`Access::allows_request`] says so, else the 401.
pub async fn require_access(
    axum::extract::State(access): axum::extract::State<Arc<Access>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if access.allows_request(request.headers()).await {
        next.run(request).await
    } else {
        access.refuse()
    }
}

/// Adds the web config file's `http_server_config.headers` to every answer of
/// the metrics listener.
pub async fn web_headers(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if let Some(web) = &state.store.live().web.config {
        for (name, value) in &web.headers {
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::try_from(name.as_str()),
                axum::http::HeaderValue::try_from(value.as_str()),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}
