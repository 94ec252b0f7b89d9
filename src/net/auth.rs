//! Credential checks for `/metrics` and the management API: a bearer token,
//! HTTP Basic credentials, or either.
//!
//! Secrets are compared in constant time over their SHA-256 digests, so neither the
//! content nor the length of the expected value leaks through timing. They are
//! never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::secret::Secret;

/// HTTP Basic credentials a listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub username: String,
    pub password: Secret,
}

/// A server (or route) whose requests need credentials: what it accepts, and what
/// it answers without them. Read per request, so a reload applies at once.
pub trait Guarded: Send + Sync + 'static {
    fn allows(&self, headers: &HeaderMap) -> bool;
    /// The 401, with its `WWW-Authenticate` challenge.
    fn refuse(&self) -> Response;
}

/// The one credential check of every server: the request goes on when `guard`
/// allows it, else it gets the guard's 401. Used as
/// `middleware::from_fn_with_state(guard, require::<G>)`.
pub async fn require<G: Guarded>(
    State(guard): State<Arc<G>>,
    request: Request,
    next: Next,
) -> Response {
    if guard.allows(request.headers()) {
        next.run(request).await
    } else {
        guard.refuse()
    }
}

/// Whether the request may pass: always when neither a token nor Basic
/// credentials are configured; otherwise with `Authorization: Bearer <token>`
/// matching `token` or `Authorization: Basic` matching `basic`.
pub fn allowed(
    token: Option<&Secret>,
    basic: Option<&BasicCredentials>,
    headers: &HeaderMap,
) -> bool {
    if token.is_none() && basic.is_none() {
        return true;
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(token) = token
        && bearer_token(value).is_some_and(|given| tokens_match(token.expose(), given))
    {
        return true;
    }
    match (basic, basic_pair(value)) {
        // `&`, not `&&`: both compared whatever the first says.
        (Some(expected), Some((user, password))) => {
            tokens_match(&expected.username, &user)
                & tokens_match(expected.password.expose(), &password)
        }
        _ => false,
    }
}

/// The `WWW-Authenticate` value of a 401: Basic when Basic credentials are
/// accepted (so a browser asks for them), else Bearer.
/// The `WWW-Authenticate` value that makes a browser ask for a user and password.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"edge-metrics-exporter\", charset=\"UTF-8\"";

pub fn challenge(basic: Option<&BasicCredentials>) -> &'static str {
    if basic.is_some() {
        BASIC_CHALLENGE
    } else {
        "Bearer realm=\"edge-metrics-exporter\""
    }
}

/// Whether the request may pass: always when no token is configured; otherwise
/// only with `Authorization: Bearer <token>`.
pub fn authorized(expected: Option<&Secret>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
    else {
        return false;
    };
    tokens_match(expected.expose(), given)
}

/// Like [`authorized`], and also accepts the token as the password of HTTP Basic
/// authentication (any user name), which is what a browser sends after its
/// login prompt.
pub fn authorized_or_basic(expected: Option<&Secret>, headers: &HeaderMap) -> bool {
    let Some(secret) = expected else {
        return true;
    };
    if authorized(expected, headers) {
        return true;
    }
    let password = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_pair);
    password.is_some_and(|(_, p)| tokens_match(secret.expose(), &p))
}

/// The `Authorization` value of HTTP Basic: `Basic <base64(user:password)>`.
pub fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The user name and password of an `Authorization: Basic` value.
pub fn basic_pair(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(user, password)| (user.to_owned(), password.to_owned()))
}

pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn tokens_match(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn bearer_checks() {
        let secret = Secret::new("s3cret").expect("secret");
        assert!(authorized(None, &HeaderMap::new()));
        assert!(!authorized(Some(&secret), &HeaderMap::new()));
        assert!(authorized(Some(&secret), &headers("Bearer s3cret")));
        assert!(authorized(Some(&secret), &headers("bearer   s3cret ")));
        assert!(!authorized(Some(&secret), &headers("Bearer s3cre")));
        assert!(!authorized(Some(&secret), &headers("Basic s3cret")));
        assert!(!authorized(Some(&secret), &headers("s3cret")));
    }

    #[test]
    fn token_basic_or_either() {
        let token = Secret::new("t0ken").expect("secret");
        let basic = BasicCredentials {
            username: "prometheus".into(),
            password: Secret::new("pa:ss").expect("secret"),
        };
        let good = basic_header("prometheus", "pa:ss");
        let wrong_user = basic_header("prometheu", "pa:ss");
        let wrong_password = basic_header("prometheus", "pa:s");
        assert!(allowed(None, None, &HeaderMap::new()));
        assert!(!allowed(None, Some(&basic), &HeaderMap::new()));
        assert!(allowed(None, Some(&basic), &headers(&good)));
        assert!(!allowed(None, Some(&basic), &headers(&wrong_user)));
        assert!(!allowed(None, Some(&basic), &headers(&wrong_password)));
        assert!(!allowed(None, Some(&basic), &headers("Bearer t0ken")));
        assert!(allowed(
            Some(&token),
            Some(&basic),
            &headers("Bearer t0ken")
        ));
        assert!(allowed(Some(&token), Some(&basic), &headers(&good)));
        assert!(!allowed(Some(&token), None, &headers(&good)));
        assert!(!allowed(
            Some(&token),
            Some(&basic),
            &headers("Bearer t0ke")
        ));
    }

    #[test]
    fn basic_header_encoding() {
        assert_eq!(basic_header("admin", "secret"), "Basic YWRtaW46c2VjcmV0");
        assert_eq!(basic_header("a", "b"), "Basic YTpi");
        assert_eq!(basic_header("ab", "c"), "Basic YWI6Yw==");
        let header = basic_header("prometheus", "pa:ss");
        assert_eq!(
            basic_pair(&header),
            Some(("prometheus".to_owned(), "pa:ss".to_owned()))
        );
    }

    #[test]
    fn basic_carries_the_token_as_password() {
        let secret = Secret::new("s3cret").expect("secret");
        let basic = basic_header("anyone", "s3cret");
        assert!(authorized_or_basic(Some(&secret), &headers(&basic)));
        assert!(authorized_or_basic(
            Some(&secret),
            &headers("Bearer s3cret")
        ));
        let wrong = basic_header("anyone", "s3cre");
        assert!(!authorized_or_basic(Some(&secret), &headers(&wrong)));
        assert!(!authorized_or_basic(Some(&secret), &headers("Basic !!!")));
        assert!(!authorized_or_basic(Some(&secret), &HeaderMap::new()));
        assert!(authorized_or_basic(None, &HeaderMap::new()));
    }
}
