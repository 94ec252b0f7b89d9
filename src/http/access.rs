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

use crate::config::{BasicCredentials, Config, Secret};
use crate::net::auth::{Guarded, allowed, challenge};
use crate::net::error::ApiError;
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
    /// Keyed digests of bcrypt credentials that passed.
    passed: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// The key of those digests: random per process, so the set says nothing
    /// about the passwords even to someone who reads the process's memory dump
    /// without the key.
    cache_key: [u8; 32],
    bcrypt_slots: tokio::sync::Semaphore,
}

/// Remembered bcrypt successes; past this the memory starts over.
const MAX_REMEMBERED: usize = 256;
/// bcrypt checks that run at once (each holds a core for its whole cost).
const BCRYPT_AT_ONCE: usize = 2;
/// How long a request waits for a free bcrypt slot before it gets 503.
const BCRYPT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a credential check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Too many password checks at once: try again shortly (503).
    Busy,
}

/// A well-formed bcrypt hash of nothing anyone can send, at `cost`: an unknown
/// user is checked against it, so that costs what a wrong password costs.
fn decoy_hash(cost: u32) -> String {
    format!("$2y${cost:02}$NjHdhKiqxGx6lrd4YQm2Eu0t1JT5tT6tlCOjWquplEAx.ISZroCCe")
}

impl Access {
    pub fn new(state: Arc<AppState>, listener: Listener) -> Arc<Self> {
        let mut cache_key = [0u8; 32];
        if rustix::rand::getrandom(&mut cache_key, rustix::rand::GetRandomFlags::empty()).is_err() {
            // No randomness (never seen on Linux): a weaker key, but the cache
            // holds only digests of credentials that passed.
            use sha2::Digest;
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            cache_key = sha2::Sha256::digest(seed).into();
        }
        Arc::new(Access {
            state,
            listener,
            passed: Default::default(),
            cache_key,
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_AT_ONCE),
        })
    }

    /// Whether the request may pass, bcrypt users of the web config included.
    pub async fn allows_request(&self, headers: &HeaderMap) -> Decision {
        let config = self.state.store.live();
        let (token, basic) = self.credentials(&config);
        let users = match (self.listener, &config.web.config) {
            (Listener::Metrics, Some(web)) if !web.users.is_empty() => Some(&web.users),
            _ => None,
        };
        let allowed_by = |ok: bool| if ok { Decision::Allow } else { Decision::Deny };
        let Some(users) = users else {
            return allowed_by(allowed(token, basic, headers));
        };
        if (token.is_some() || basic.is_some()) && allowed(token, basic, headers) {
            return Decision::Allow;
        }
        let Some((user, password)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::net::auth::basic_pair)
        else {
            return Decision::Deny;
        };
        let known = users.get(&user).cloned();
        let hash = known.clone().unwrap_or_else(|| {
            // As costly as the dearest real user (the file refuses costs above 14).
            let cost = users
                .values()
                .filter_map(|h| crate::config::web::bcrypt_cost(h))
                .max()
                .unwrap_or(10);
            decoy_hash(cost)
        });
        let digest = self.digest(&[user.as_bytes(), hash.as_bytes(), password.as_bytes()]);
        if known.is_some() && crate::lock::lock(&self.passed).contains(&digest) {
            return Decision::Allow;
        }
        let Ok(Ok(_slot)) = tokio::time::timeout(BCRYPT_WAIT, self.bcrypt_slots.acquire()).await
        else {
            return Decision::Busy;
        };
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok && known.is_some() {
            let mut passed = crate::lock::lock(&self.passed);
            if passed.len() >= MAX_REMEMBERED {
                passed.clear();
            }
            passed.insert(digest);
            return Decision::Allow;
        }
        Decision::Deny
    }

    /// HMAC-SHA256 under the process's key of the length-prefixed `parts`.
    fn digest(&self, parts: &[&[u8]]) -> [u8; 32] {
        use sha2::Digest;
        let mut inner_pad = [0x36u8; 64];
        let mut outer_pad = [0x5cu8; 64];
        for (i, k) in self.cache_key.iter().enumerate() {
            inner_pad[i] ^= k;
            outer_pad[i] ^= k;
        }
        let mut inner = sha2::Sha256::new();
        inner.update(inner_pad);
        for part in parts {
            inner.update((part.len() as u64).to_le_bytes());
            inner.update(part);
        }
        let mut outer = sha2::Sha256::new();
        outer.update(outer_pad);
        outer.update(inner.finalize());
        outer.finalize().into()
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
                [(header::WWW_AUTHENTICATE, crate::net::auth::BASIC_CHALLENGE)],
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

/// [`crate::net::auth::require`] for a listener whose check may run bcrypt: the
/// request goes on when [`Access::allows_request`] says so, else the 401.
pub async fn require_access(
    axum::extract::State(access): axum::extract::State<Arc<Access>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match access.allows_request(request.headers()).await {
        Decision::Allow => next.run(request).await,
        Decision::Deny => access.refuse(),
        Decision::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "Service Unavailable: too many password checks at once; try again\n",
        )
            .into_response(),
    }
}

/// The web config's `rate_limit` over every request of the metrics listener: a
/// token bucket as Go's `x/time/rate` keeps it (full at start, one token back
/// per `interval`, at most `burst`); a request without a token gets 429. A
/// reload that changes the limit starts a full bucket.
#[derive(Debug, Default)]
pub struct RateGate {
    bucket: std::sync::Mutex<Option<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    limit: crate::config::web::RateLimit,
    tokens: f64,
    at: std::time::Instant,
}

impl RateGate {
    /// Takes a token when `limit` allows one now; else how long until one.
    pub fn take(
        &self,
        limit: Option<crate::config::web::RateLimit>,
        now: std::time::Instant,
    ) -> Result<(), std::time::Duration> {
        let mut bucket = crate::lock::lock(&self.bucket);
        let Some(limit) = limit else {
            *bucket = None;
            return Ok(());
        };
        let b = match bucket.as_mut() {
            Some(b) if b.limit == limit => b,
            _ => bucket.insert(Bucket {
                limit,
                tokens: f64::from(limit.burst),
                at: now,
            }),
        };
        let per_token = limit.interval.as_secs_f64();
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed / per_token).min(f64::from(limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if limit.burst == 0 {
            // Go's limiter with no burst never allows a request.
            Err(limit.interval)
        } else {
            Err(std::time::Duration::from_secs_f64(
                (1.0 - b.tokens) * per_token,
            ))
        }
    }
}

/// Answers 429 (`Too Many Requests`, as exporter-toolkit) when the web config's
/// `rate_limit` has no token for the request.
pub async fn rate_limited(
    axum::extract::State((state, gate)): axum::extract::State<(Arc<AppState>, Arc<RateGate>)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = state
        .store
        .live()
        .web
        .config
        .as_ref()
        .and_then(|w| w.rate_limit);
    match gate.take(limit, std::time::Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            "Too Many Requests\n",
        )
            .into_response(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::web::RateLimit;
    use std::time::{Duration, Instant};

    #[test]
    fn a_token_bucket_as_go_keeps_it() {
        let gate = RateGate::default();
        let t0 = Instant::now();
        let limit = Some(RateLimit {
            interval: Duration::from_secs(1),
            burst: 2,
        });
        assert!(gate.take(limit, t0).is_ok());
        assert!(gate.take(limit, t0).is_ok());
        let wait = gate.take(limit, t0).expect_err("bucket empty");
        assert_eq!(wait, Duration::from_secs(1));
        assert!(gate.take(limit, t0 + Duration::from_millis(500)).is_err());
        assert!(gate.take(limit, t0 + Duration::from_millis(1000)).is_ok());
        // Refills up to the burst only.
        let later = t0 + Duration::from_secs(60);
        assert!(gate.take(limit, later).is_ok());
        assert!(gate.take(limit, later).is_ok());
        assert!(gate.take(limit, later).is_err());
        // No burst: never (exporter-toolkit's one-second fixture).
        let none = Some(RateLimit {
            interval: Duration::from_secs(1),
            burst: 0,
        });
        assert!(gate.take(none, later).is_err());
        assert!(gate.take(none, later + Duration::from_secs(9)).is_err());
        // No limit: always, and a new limit starts full.
        assert!(gate.take(None, later).is_ok());
        assert!(gate.take(limit, later).is_ok());
    }

    #[test]
    fn the_decoy_is_checked_in_full_and_matches_nothing() {
        for cost in [4, 10] {
            let decoy = decoy_hash(cost);
            assert_eq!(crate::config::web::bcrypt_cost(&decoy), Some(cost));
            assert_eq!(bcrypt::verify("", &decoy).ok(), Some(false), "{decoy}");
            assert_eq!(bcrypt::verify("fakepassword", &decoy).ok(), Some(false));
        }
    }
}
