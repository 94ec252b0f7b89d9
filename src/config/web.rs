//! The web config file of `--web.config.file`, in exporter-toolkit's format (what
//! node_exporter's users already write and generate):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.pem            # relative paths: from this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: ca.pem
//!   min_version: TLS12               # or TLS13
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10)
//! ```
//!
//! It applies to the metrics listener. Keys of the format this version does not
//! apply (`cipher_suites`, `curve_preferences`, `max_version`, `client_allowed_sans`,
//! `prefer_server_cipher_suites`, `http2`) are accepted and listed in
//! [`WebConfig::ignored`]; anything else is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ServerTlsConfig;

/// A checked web config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub path: PathBuf,
    pub tls: Option<ServerTlsConfig>,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// Response headers of the metrics listener.
    pub headers: Vec<(String, String)>,
    /// Keys of the format that were given but are not applied.
    pub ignored: Vec<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    headers: Option<BTreeMap<String, String>>,
    http2: Option<bool>,
}

/// The headers exporter-toolkit lets a web config set.
const SETTABLE_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// Reads and checks the web config at `path`; the message names the file and
/// what is wrong.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the web config {}: {e}", path.display()))?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<WebConfig, String> {
    let at = |message: String| format!("web config {}: {message}", path.display());
    let raw: RawWeb = if text.trim().is_empty() {
        RawWeb::default()
    } else {
        yaml_serde::from_str(text).map_err(|e| at(e.to_string()))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
    let mut ignored = Vec::new();
    let tls = match raw.tls_server_config {
        None => None,
        Some(t) => {
            for (given, key) in [
                (t.max_version.is_some(), "tls_server_config.max_version"),
                (t.cipher_suites.is_some(), "tls_server_config.cipher_suites"),
                (
                    t.prefer_server_cipher_suites.is_some(),
                    "tls_server_config.prefer_server_cipher_suites",
                ),
                (
                    t.curve_preferences.is_some(),
                    "tls_server_config.curve_preferences",
                ),
                (
                    t.client_allowed_sans.is_some(),
                    "tls_server_config.client_allowed_sans",
                ),
            ] {
                if given {
                    ignored.push(key);
                }
            }
            let (Some(cert), Some(key)) = (t.cert_file, t.key_file) else {
                return Err(at(
                    "tls_server_config needs cert_file and key_file (inline cert and key are not supported)".into(),
                ));
            };
            let tls13_only = match t.min_version.as_deref() {
                None | Some("TLS12") => false,
                Some("TLS13") => true,
                Some(v @ ("TLS10" | "TLS11")) => {
                    return Err(at(format!(
                        "min_version {v} is not offered: this exporter speaks TLS 1.2 and 1.3 only"
                    )));
                }
                Some(v) => {
                    return Err(at(format!("min_version must be TLS12 or TLS13, got {v:?}")));
                }
            };
            let ca = t.client_ca_file.map(resolve);
            let (client_ca_file, client_cert_optional) = match (
                t.client_auth_type.as_deref().unwrap_or("NoClientCert"),
                ca,
            ) {
                ("NoClientCert", _) => (None, false),
                ("RequireAndVerifyClientCert", Some(ca)) => (Some(ca), false),
                ("VerifyClientCertIfGiven", Some(ca)) => (Some(ca), true),
                (kind @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven"), None) => {
                    return Err(at(format!("client_auth_type {kind} needs client_ca_file")));
                }
                (kind @ ("RequestClientCert" | "RequireAnyClientCert"), _) => {
                    return Err(at(format!(
                        "client_auth_type {kind} accepts unverified certificates and is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                    )));
                }
                (kind, _) => {
                    return Err(at(format!(
                        "client_auth_type must be NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert, got {kind:?}"
                    )));
                }
            };
            Some(ServerTlsConfig {
                cert_file: resolve(cert),
                key_file: resolve(key),
                client_ca_file,
                client_cert_optional,
                tls13_only,
            })
        }
    };
    let mut headers = Vec::new();
    if let Some(http) = raw.http_server_config {
        if http.http2.is_some() {
            ignored.push("http_server_config.http2");
        }
        for (name, value) in http.headers.unwrap_or_default() {
            let Some(canonical) = SETTABLE_HEADERS
                .iter()
                .find(|h| h.eq_ignore_ascii_case(&name))
            else {
                return Err(at(format!(
                    "header {name:?} cannot be set here (allowed: {})",
                    SETTABLE_HEADERS.join(", ")
                )));
            };
            if hyper::header::HeaderValue::from_str(&value).is_err() {
                return Err(at(format!(
                    "header {name}: {value:?} is not a header value"
                )));
            }
            headers.push(((*canonical).to_owned(), value));
        }
    }
    let users = raw.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        if user.is_empty() || user.contains(':') {
            return Err(at(format!("basic_auth_users: {user:?} is not a user name")));
        }
        if !is_bcrypt(hash) {
            return Err(at(format!(
                "basic_auth_users.{user} must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters; htpasswd -nBC 10 \"\" | tr -d ':\\n' makes one)"
            )));
        }
    }
    Ok(WebConfig {
        path: path.to_owned(),
        tls,
        users,
        headers,
        ignored,
    })
}

/// Whether `hash` looks like a bcrypt hash: `$2a$`, `$2b$` or `$2y$`, a two-digit
/// cost from 4 to 31, and 53 characters of salt and hash.
fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    hash.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && b[6] == b'$'
        && hash[4..6]
            .parse::<u32>()
            .is_ok_and(|c| (4..=31).contains(&c))
        && hash[7..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h2Mzq.8y0lGhBG8iHb7e6FvZ3d9l2jVq8wD2l6n3bYw8Xw9bJ5K";

    #[test]
    fn the_toolkit_format() {
        let text = format!(
            "tls_server_config:\n  cert_file: tls/server.pem\n  key_file: /etc/x/server.key\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n  min_version: TLS13\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\nhttp_server_config:\n  headers:\n    x-frame-options: deny\nbasic_auth_users:\n  prometheus: '{HASH}'\n"
        );
        let c = parse(&text, Path::new("/etc/edge/web.yml")).expect("valid");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cert_file, Path::new("/etc/edge/tls/server.pem"));
        assert_eq!(tls.key_file, Path::new("/etc/x/server.key"));
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(Path::new("/etc/edge/ca.pem"))
        );
        assert!(tls.client_cert_optional && tls.tls13_only);
        assert_eq!(
            c.headers,
            [("X-Frame-Options".to_owned(), "deny".to_owned())]
        );
        assert_eq!(c.users["prometheus"], HASH);
        assert_eq!(c.ignored, ["tls_server_config.cipher_suites"]);
        assert_eq!(parse("", Path::new("w.yml")).expect("empty").tls, None);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, wanted) in [
            ("basic_auth_users:\n  a: plain-password\n", "bcrypt"),
            (
                "tls_server_config:\n  cert_file: a\n",
                "cert_file and key_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "TLS 1.2 and 1.3",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "http_server_config:\n  headers:\n    Content-Type: x\n",
                "cannot be set",
            ),
            ("tls_config:\n  x: 1\n", "unknown field"),
        ] {
            let e = parse(text, Path::new("web.yml")).expect_err(text);
            assert!(e.contains(wanted) && e.contains("web.yml"), "{text}: {e}");
        }
    }
}
