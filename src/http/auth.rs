//! Bearer-token checks for `/metrics` and the management API.
//!
//! Tokens are compared in constant time over their SHA-256 digests, so neither the
//! content nor the length of the expected token leaks through timing. Tokens are
//! never logged.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

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
        .and_then(basic_password);
    password.is_some_and(|p| tokens_match(secret.expose(), &p))
}

fn basic_password(value: &str) -> Option<String> {
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
        .map(|(_, password)| password.to_owned())
}

fn bearer_token(value: &str) -> Option<&str> {
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
    fn basic_carries_the_token_as_password() {
        let secret = Secret::new("s3cret").expect("secret");
        let basic = crate::http::digest::basic("anyone", "s3cret");
        assert!(authorized_or_basic(Some(&secret), &headers(&basic)));
        assert!(authorized_or_basic(
            Some(&secret),
            &headers("Bearer s3cret")
        ));
        let wrong = crate::http::digest::basic("anyone", "s3cre");
        assert!(!authorized_or_basic(Some(&secret), &headers(&wrong)));
        assert!(!authorized_or_basic(Some(&secret), &headers("Basic !!!")));
        assert!(!authorized_or_basic(Some(&secret), &HeaderMap::new()));
        assert!(authorized_or_basic(None, &HeaderMap::new()));
    }
}
