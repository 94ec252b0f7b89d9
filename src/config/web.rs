//! The web config file of `--web.config.file`, in exporter-toolkit's format (what
//! node_exporter's users already write and generate):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.pem            # or `cert:` inline; relative paths: from this file's directory
//!   key_file: server.key             # or `key:` inline
//!   client_auth_type: RequireAndVerifyClientCert   # any of Go's five
//!   client_ca_file: ca.pem           # or `client_ca:` inline; none: the system's CAs
//!   client_allowed_sans: [prometheus.lab]
//!   min_version: TLS12               # TLS12 or TLS13, and max_version
//!   cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
//!   curve_preferences: [X25519, CurveP256]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! rate_limit:
//!   interval: 1s
//!   burst: 10
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10)
//! ```
//!
//! It applies to the metrics listener. Every field either does what it does in
//! exporter-toolkit or the file is refused with a message naming the field: a
//! value rustls cannot honour exactly (TLS 1.0/1.1, CBC or RSA-key-exchange
//! suites, P-521, ML-KEM), a bcrypt cost above [`MAX_BCRYPT_COST`], or a setting
//! that would have no effect (TLS options without a certificate). The same
//! [`load`] serves `serve`, every reload and `check-config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use crate::net::tls_policy::{ClientAuth, Curve, Pem, ServerTlsConfig, Tls12Suite, TlsVersion};

/// A checked web config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub path: PathBuf,
    pub tls: Option<ServerTlsConfig>,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// Response headers of the metrics listener.
    pub headers: Vec<(String, String)>,
    /// `rate_limit`, when its interval is not zero.
    pub rate_limit: Option<RateLimit>,
}

/// exporter-toolkit's `rate_limit`: a token bucket of `burst` requests refilled
/// one every `interval`, over every request of the listener; beyond it, 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub interval: Duration,
    pub burst: u32,
}

/// Highest bcrypt cost accepted: each step doubles the work, and cost 14 already
/// takes about a second on a Raspberry Pi 4 (a cost-31 hash would take days).
pub const MAX_BCRYPT_COST: u32 = 14;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    rate_limit: Option<RawRateLimit>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// Strings, not paths: as in Go, an empty value is an unset one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    headers: Option<BTreeMap<String, String>>,
    http2: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<yaml_serde::Value>,
    burst: Option<i64>,
}

/// The headers exporter-toolkit lets a web config set, and the values it allows
/// for those that are enumerations (others take any value).
const SETTABLE_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Go's TLS 1.3 suite names: accepted in `cipher_suites` and, as in Go, without
/// effect on TLS 1.3, whose three suites are always offered.
const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Names Go knows (`tls.CipherSuites()`) that rustls does not implement.
const UNSUPPORTED_SUITES: [(&str, &str); 8] = [
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", CBC),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", CBC),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", CBC),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", CBC),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", RSA_KX),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", RSA_KX),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", RSA_KX),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", RSA_KX),
];
const CBC: &str = "a CBC suite, which this exporter's TLS library (rustls) does not implement";
const RSA_KX: &str = "an RSA key exchange suite (no forward secrecy), which this exporter's TLS library (rustls) does not implement";

/// Reads and checks the web config at `path`; the message names the file, the
/// field and what is wrong.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the web config {}: {e}", path.display()))?;
    parse(&text, path)
}

/// Checks the text of a web config file found at `path` (relative files are
/// resolved from its directory).
pub fn parse(text: &str, path: &Path) -> Result<WebConfig, String> {
    let at = |message: String| format!("web config {}: {message}", path.display());
    let raw: RawWeb = if text.trim().is_empty() {
        RawWeb::default()
    } else {
        yaml_serde::from_str::<Option<RawWeb>>(text)
            .map_err(|e| at(format!("yaml: {e}")))?
            .unwrap_or_default()
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let http = raw.http_server_config.unwrap_or_default();
    let tls = match raw.tls_server_config {
        None => None,
        Some(t) => tls(t, dir, http.http2.unwrap_or(true)).map_err(at)?,
    };
    if tls.is_none() && http.http2 == Some(true) {
        return Err(at(
            "http_server_config.http2: true needs TLS: HTTP/2 is offered through TLS (ALPN h2), never over plain HTTP"
                .into(),
        ));
    }
    let headers = headers(http.headers.unwrap_or_default()).map_err(at)?;
    let rate_limit = match raw.rate_limit {
        None => None,
        Some(r) => rate_limit(r).map_err(at)?,
    };
    let users = raw.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        check_user(user, hash).map_err(at)?;
    }
    Ok(WebConfig {
        path: path.to_owned(),
        tls,
        users,
        headers,
        rate_limit,
    })
}

/// `tls_server_config`: `None` when it turns nothing on (no certificate, key,
/// client CA or client auth type: TLS off, as in exporter-toolkit), which is
/// refused when it sets other options that would then do nothing.
fn tls(t: RawTls, dir: &Path, http2: bool) -> Result<Option<ServerTlsConfig>, String> {
    let set = |v: Option<String>| v.filter(|s| !s.is_empty());
    let resolve = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { dir.join(p) }
    };
    let (cert_file, cert) = (set(t.cert_file), set(t.cert));
    let (key_file, key) = (set(t.key_file), set(t.key));
    let (ca_file, ca) = (set(t.client_ca_file), set(t.client_ca));
    let auth_type = set(t.client_auth_type);
    let enabled = cert_file.is_some()
        || cert.is_some()
        || key_file.is_some()
        || key.is_some()
        || ca_file.is_some()
        || ca.is_some()
        || auth_type.is_some();
    if !enabled {
        let given: Vec<&str> = [
            (t.cipher_suites.is_some(), "cipher_suites"),
            (t.curve_preferences.is_some(), "curve_preferences"),
            (t.min_version.is_some(), "min_version"),
            (t.max_version.is_some(), "max_version"),
            (
                t.prefer_server_cipher_suites.is_some(),
                "prefer_server_cipher_suites",
            ),
            (t.client_allowed_sans.is_some(), "client_allowed_sans"),
        ]
        .into_iter()
        .filter_map(|(given, key)| given.then_some(key))
        .collect();
        if given.is_empty() {
            return Ok(None);
        }
        return Err(format!(
            "tls_server_config sets {} but no certificate, so TLS is off and they would do nothing; add cert_file and key_file (or cert and key)",
            given.join(", ")
        ));
    }
    let cert = match (cert_file, cert) {
        (Some(_), Some(_)) => {
            return Err("tls_server_config: give cert_file or cert, not both".into());
        }
        (Some(file), None) => Pem::File(resolve(file)),
        (None, Some(text)) => Pem::Inline(secret(text)?),
        (None, None) => return Err("tls_server_config: missing one of cert or cert_file".into()),
    };
    let key = match (key_file, key) {
        (Some(_), Some(_)) => {
            return Err("tls_server_config: give key_file or key, not both".into());
        }
        (Some(file), None) => Pem::File(resolve(file)),
        (None, Some(text)) => Pem::Inline(secret(text)?),
        (None, None) => return Err("tls_server_config: missing one of key or key_file".into()),
    };
    let client_auth = match auth_type.as_deref() {
        None => ClientAuth::NoClientCert,
        Some(name) => ClientAuth::parse(name).ok_or_else(|| {
            format!(
                "tls_server_config.client_auth_type: invalid ClientAuth: {name:?} (one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            )
        })?,
    };
    // Go reads client_ca_file when both are given.
    let client_ca = match (ca_file, ca) {
        (Some(file), _) => Some(Pem::File(resolve(file))),
        (None, Some(text)) => Some(Pem::Inline(secret(text)?)),
        (None, None) => None,
    };
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(
            "tls_server_config: client CA's have been configured without a Client Auth Policy (set client_auth_type)"
                .into(),
        );
    }
    if t.client_allowed_sans.is_some() && !client_auth.requires() {
        return Err(format!(
            "tls_server_config.client_allowed_sans requires client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert (it is {}: a client could connect without a certificate to match)",
            client_auth.as_str()
        ));
    }
    let min_version =
        version(t.min_version.as_deref(), "min_version")?.unwrap_or(TlsVersion::Tls12);
    let max_version =
        version(t.max_version.as_deref(), "max_version")?.unwrap_or(TlsVersion::Tls13);
    if min_version > max_version {
        return Err(format!(
            "tls_server_config: min_version {} is above max_version {}: no TLS version is left to speak",
            min_version.as_str(),
            max_version.as_str()
        ));
    }
    let cipher_suites = match t.cipher_suites {
        None => None,
        Some(names) => Some(suites(&names, http2, min_version)?),
    };
    let curve_preferences = match t.curve_preferences {
        None => None,
        Some(names) => Some(curves(&names)?),
    };
    Ok(Some(ServerTlsConfig {
        cert,
        key,
        client_auth,
        client_ca,
        client_allowed_sans: t.client_allowed_sans,
        min_version,
        max_version,
        cipher_suites,
        curve_preferences,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        http2,
    }))
}

fn secret(text: String) -> Result<Secret, String> {
    Secret::new(text).ok_or_else(|| "tls_server_config: an inline PEM is empty".to_owned())
}

fn version(name: Option<&str>, key: &str) -> Result<Option<TlsVersion>, String> {
    match name {
        None | Some("") => Ok(None),
        Some("TLS12") => Ok(Some(TlsVersion::Tls12)),
        Some("TLS13") => Ok(Some(TlsVersion::Tls13)),
        Some(v @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key}: {v} cannot be honoured: this exporter's TLS library (rustls) speaks TLS 1.2 and 1.3 only"
        )),
        Some(v) => Err(format!(
            "tls_server_config.{key}: unknown TLS version: {v} (one of TLS10, TLS11, TLS12, TLS13)"
        )),
    }
}

/// The TLS 1.2 suites of `cipher_suites`, in order. Go's rule for HTTP/2 comes
/// first (a TLS 1.2 list must hold an AES-128-GCM ECDHE suite), then what rustls
/// lacks.
fn suites(names: &[String], http2: bool, min: TlsVersion) -> Result<Vec<Tls12Suite>, String> {
    for name in names {
        let known = TLS13_SUITES.contains(&name.as_str())
            || UNSUPPORTED_SUITES.iter().any(|(n, _)| n == name)
            || Tls12Suite::ALL.iter().any(|(_, n)| n == name);
        if !known {
            return Err(format!(
                "tls_server_config.cipher_suites: unknown cipher: {name}"
            ));
        }
    }
    if http2
        && min < TlsVersion::Tls13
        && !names.iter().any(|n| {
            n == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
                || n == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        })
    {
        return Err(
            "tls_server_config.cipher_suites: http2: TLSConfig.CipherSuites is missing an HTTP/2-required AES_128_GCM_SHA256 cipher (need at least one of TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), or set http_server_config.http2: false"
                .into(),
        );
    }
    let mut out = Vec::new();
    for name in names {
        if let Some((_, why)) = UNSUPPORTED_SUITES.iter().find(|(n, _)| n == name) {
            return Err(format!(
                "tls_server_config.cipher_suites: {name} is {why}; leave it out"
            ));
        }
        if let Some((suite, _)) = Tls12Suite::ALL.iter().find(|(_, n)| n == name)
            && !out.contains(suite)
        {
            out.push(*suite);
        }
    }
    Ok(out)
}

fn curves(names: &[String]) -> Result<Vec<Curve>, String> {
    let mut out = Vec::new();
    for name in names {
        let curve = match name.as_str() {
            "CurveP256" => Curve::P256,
            "CurveP384" => Curve::P384,
            "X25519" => Curve::X25519,
            "CurveP521" | "X25519MLKEM768" => {
                return Err(format!(
                    "tls_server_config.curve_preferences: {name} cannot be honoured: this exporter's TLS library (rustls with ring) has no such key exchange (it has X25519, CurveP256 and CurveP384)"
                ));
            }
            _ => {
                return Err(format!(
                    "tls_server_config.curve_preferences: unknown curve: {name}"
                ));
            }
        };
        if !out.contains(&curve) {
            out.push(curve);
        }
    }
    if out.is_empty() {
        return Err("tls_server_config.curve_preferences is empty: no key exchange is left".into());
    }
    Ok(out)
}

fn headers(given: BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (name, value) in given {
        let Some((_, allowed)) = SETTABLE_HEADERS.iter().find(|(h, _)| *h == name) else {
            return Err(format!(
                "http_server_config.headers: HTTP header {name:?} can not be configured (allowed: {})",
                SETTABLE_HEADERS.map(|(h, _)| h).join(", ")
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers: invalid value for {name}. Expected one of: {allowed:?}, but got: {value:?}"
            ));
        }
        if hyper::header::HeaderValue::from_str(&value).is_err() {
            return Err(format!(
                "http_server_config.headers: {name}: {value:?} is not a header value"
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn rate_limit(r: RawRateLimit) -> Result<Option<RateLimit>, String> {
    let interval = match r.interval {
        None | Some(yaml_serde::Value::Null) => Duration::ZERO,
        Some(yaml_serde::Value::String(s)) => {
            go_duration(&s).map_err(|e| format!("rate_limit.interval: {e}"))?
        }
        Some(yaml_serde::Value::Number(n)) => match n.as_i64() {
            // A bare number is nanoseconds, as a Go time.Duration.
            Some(ns) if ns >= 0 => Duration::from_nanos(ns as u64),
            _ => return Err(format!("rate_limit.interval: {n} is not a duration")),
        },
        Some(other) => {
            return Err(format!(
                "rate_limit.interval: {other:?} is not a duration (like 1s or 500ms)"
            ));
        }
    };
    let burst = r.burst.unwrap_or(0);
    let Ok(burst) = u32::try_from(burst) else {
        return Err(format!(
            "rate_limit.burst: {burst} is not a count of requests"
        ));
    };
    if interval.is_zero() {
        // exporter-toolkit: no limiter at all.
        return Ok(None);
    }
    Ok(Some(RateLimit { interval, burst }))
}

/// A Go `time.Duration` string (`1s`, `1.5h`, `2m30s`, `500ms`, `0`); negative
/// durations are refused.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (like 1s, 500ms or 1m30s)");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_end);
        if number.is_empty() || number == "." {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += value * scale;
        rest = tail;
    }
    if !nanos.is_finite() || nanos > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

fn check_user(user: &str, hash: &str) -> Result<(), String> {
    if user.is_empty() || user.contains(':') {
        return Err(format!("basic_auth_users: {user:?} is not a user name"));
    }
    match bcrypt_cost(hash) {
        None => Err(format!(
            "basic_auth_users.{user}: hashedSecret too short to be a bcrypted password, or not one: it must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters; htpasswd -nBC 10 \"\" | tr -d ':\\n' makes one)"
        )),
        Some(cost) if cost > MAX_BCRYPT_COST => Err(format!(
            "basic_auth_users.{user}: bcrypt cost {cost} is above {MAX_BCRYPT_COST}: every check would take 2^{cost} rounds ({}× cost 10), seconds to days of CPU on a small board; hash the password again with htpasswd -nBC 10",
            1u64 << (cost - 10)
        )),
        Some(_) => Ok(()),
    }
}

/// The cost of a bcrypt hash (`$2a$`, `$2b$` or `$2y$`, a two-digit cost from 4
/// to 31, and 53 characters of salt and hash), or `None` when it is not one.
pub fn bcrypt_cost(hash: &str) -> Option<u32> {
    let b = hash.as_bytes();
    let shaped = hash.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && b[6] == b'$'
        && hash[7..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/');
    if !shaped {
        return None;
    }
    hash[4..6]
        .parse::<u32>()
        .ok()
        .filter(|c| (4..=31).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h2Mzq.8y0lGhBG8iHb7e6FvZ3d9l2jVq8wD2l6n3bYw8Xw9bJ5K";

    #[test]
    fn the_toolkit_format() {
        let text = format!(
            "tls_server_config:\n  cert_file: tls/server.pem\n  key_file: /etc/x/server.key\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n  min_version: TLS13\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n  curve_preferences: [X25519]\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\nrate_limit:\n  interval: 250ms\n  burst: 5\nbasic_auth_users:\n  prometheus: '{HASH}'\n"
        );
        let c = parse(&text, Path::new("/etc/edge/web.yml")).expect("valid");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cert, Pem::File("/etc/edge/tls/server.pem".into()));
        assert_eq!(tls.key, Pem::File("/etc/x/server.key".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/edge/ca.pem".into())));
        assert_eq!(tls.client_auth, ClientAuth::VerifyClientCertIfGiven);
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.max_version, TlsVersion::Tls13);
        assert_eq!(
            tls.cipher_suites,
            Some(vec![]),
            "TLS 1.3 names: no TLS 1.2 suite"
        );
        assert_eq!(tls.curve_preferences, Some(vec![Curve::X25519]));
        assert!(
            tls.prefer_server_cipher_suites && tls.http2,
            "the toolkit's defaults"
        );
        assert_eq!(
            c.headers,
            [("X-Frame-Options".to_owned(), "deny".to_owned())]
        );
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                interval: Duration::from_millis(250),
                burst: 5
            })
        );
        assert_eq!(c.users["prometheus"], HASH);
        assert_eq!(parse("", Path::new("w.yml")).expect("empty").tls, None);
        assert_eq!(
            parse("{}", Path::new("w.yml")).expect("empty map").tls,
            None
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, wanted) in [
            ("basic_auth_users:\n  a: plain-password\n", "bcrypt"),
            (
                "basic_auth_users:\n  bob: $2y$18$4VeFDzXIoPHKnKTU3O3GH.N.vZu06CVqczYZ8WvfzrddFU6tGqjR.\n",
                "cost 18 is above 14",
            ),
            (
                "tls_server_config:\n  cert_file: a\n",
                "missing one of key or key_file",
            ),
            (
                "tls_server_config:\n  key_file: b\n",
                "missing one of cert or cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "TLS 1.2 and 1.3",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS111\n",
                "unknown TLS version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "no TLS version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca.pem\n",
                "without a Client Auth Policy",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: x\n",
                "invalid ClientAuth",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [one]\n",
                "client_allowed_sans requires",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n  client_allowed_sans: [one]\n",
                "client_allowed_sans requires",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048]\n",
                "unknown cipher",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n  max_version: TLS12\n",
                "HTTP/2-required",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
                "CBC suite",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP257]\n",
                "unknown curve",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP521]\n",
                "cannot be honoured",
            ),
            ("tls_server_config:\n  min_version: TLS13\n", "TLS is off"),
            ("http_server_config:\n  http2: true\n", "needs TLS"),
            (
                "http_server_config:\n  headers:\n    Content-Type: x\n",
                "can not be configured",
            ),
            (
                "http_server_config:\n  headers:\n    x-frame-options: deny\n",
                "can not be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: foo\n",
                "invalid value for X-Frame-Options",
            ),
            (
                "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
                "invalid value for X-Content-Type-Options",
            ),
            ("rate_limit:\n  interval: -1s\n", "negative"),
            ("rate_limit:\n  interval: 1s\n  burst: -1\n", "burst"),
            ("rate_limit:\n  interval: soon\n", "not a duration"),
            ("tls_config:\n  x: 1\n", "unknown field"),
            ("tls_server_config:\n  cert_filse: a\n", "unknown field"),
        ] {
            let e = parse(text, Path::new("web.yml")).expect_err(text);
            assert!(e.contains(wanted) && e.contains("web.yml"), "{text}: {e}");
        }
    }

    #[test]
    fn the_toolkit_quirks() {
        // Empty strings are unset; only client_auth_type still turns TLS on.
        let e = parse(
            "tls_server_config:\n  cert_file: \"\"\n  key_file: \"\"\n  client_auth_type: \"x\"\n",
            Path::new("w.yml"),
        )
        .expect_err("empty paths");
        assert!(e.contains("missing one of cert or cert_file"), "{e}");
        // The old name of RequireAnyClientCert.
        let c = parse(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireClientCert\n",
            Path::new("w.yml"),
        )
        .expect("valid");
        assert_eq!(
            c.tls.expect("tls").client_auth,
            ClientAuth::RequireAnyClientCert
        );
        // An interval of zero turns the limiter off.
        let c = parse(
            "rate_limit:\n  interval: 0\n  burst: 0\n",
            Path::new("w.yml"),
        )
        .expect("valid");
        assert_eq!(c.rate_limit, None);
        // http2 off lifts the HTTP/2 suite rule.
        let c = parse(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\nhttp_server_config:\n  http2: false\n",
            Path::new("w.yml"),
        )
        .expect("valid");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cipher_suites, Some(vec![Tls12Suite::EcdheRsaAes256Gcm]));
        assert!(!tls.http2);
    }

    #[test]
    fn go_durations() {
        for (text, ms) in [
            ("1s", 1000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("0", 0),
            ("250000us", 250),
        ] {
            assert_eq!(go_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "1", "s", "1x", "-1s", "1s-"] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }
}
