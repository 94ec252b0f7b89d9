//! HTTP Digest access authentication (RFC 7616) with SHA-256, as Shelly Gen2+
//! plugs require when they have a password (user `admin`, realm = the device id).
//! Gen1 plugs take HTTP Basic (`net::auth::basic_header`).

use sha2::{Digest, Sha256};

/// The parameters of a `WWW-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub qop: Option<String>,
    pub opaque: Option<String>,
    pub algorithm: String,
}

/// Parses a Digest challenge; parameters may come in any order and quoted or not.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let rest = header.trim().strip_prefix("Digest")?.trim();
    let mut realm = None;
    let mut nonce = None;
    let mut qop = None;
    let mut opaque = None;
    let mut algorithm = "MD5".to_owned();
    for part in split_params(rest) {
        let (k, v) = part.split_once('=')?;
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "nonce" => nonce = Some(v),
            "qop" => qop = Some(v),
            "opaque" => opaque = Some(v),
            "algorithm" => algorithm = v,
            _ => {}
        }
    }
    Some(Challenge {
        realm: realm?,
        nonce: nonce?,
        qop,
        opaque,
        algorithm,
    })
}

/// Splits `a="x, y", b=z` at the commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Authorization` header answering `challenge` for `GET uri`. Only SHA-256
/// (what Shelly uses); `None` for other algorithms.
pub fn authorization(
    challenge: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Option<String> {
    if !challenge.algorithm.eq_ignore_ascii_case("SHA-256") {
        return None;
    }
    let ha1 = sha256_hex(&format!("{user}:{}:{password}", challenge.realm));
    let ha2 = sha256_hex(&format!("{method}:{uri}"));
    let nc = "00000001";
    let (response, qop_part) = match &challenge.qop {
        Some(q) if q.split(',').any(|x| x.trim() == "auth") => (
            sha256_hex(&format!(
                "{ha1}:{}:{nc}:{cnonce}:auth:{ha2}",
                challenge.nonce
            )),
            format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""),
        ),
        _ => (
            sha256_hex(&format!("{ha1}:{}:{ha2}", challenge.nonce)),
            String::new(),
        ),
    };
    let opaque = challenge
        .opaque
        .as_ref()
        .map(|o| format!(", opaque=\"{o}\""))
        .unwrap_or_default();
    Some(format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm=SHA-256, response=\"{response}\"{qop_part}{opaque}",
        challenge.realm, challenge.nonce
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_in_any_order() {
        let docs = parse_challenge(r#"Digest qop="auth", realm="shellypro4pm-f008d1d8b8b8", nonce="1698245525", algorithm=SHA-256"#)
            .expect("challenge");
        assert_eq!(docs.realm, "shellypro4pm-f008d1d8b8b8");
        assert_eq!(docs.nonce, "1698245525");
        assert_eq!(docs.qop.as_deref(), Some("auth"));
        let wall = parse_challenge(r#"Digest realm="shellywalldisplay-00082261e102", qop="auth", nonce="1", opaque="", algorithm=SHA-256"#)
            .expect("challenge");
        assert_eq!(wall.opaque.as_deref(), Some(""));
        assert_eq!(parse_challenge("Basic realm=x"), None);
    }

    /// The response is SHA-256(HA1:nonce:nc:cnonce:auth:HA2), as Shelly's docs give it.
    #[test]
    fn sha256_response() {
        let c = Challenge {
            realm: "shellyplus1-c4dd57877294".into(),
            nonce: "1698245525".into(),
            qop: Some("auth".into()),
            opaque: None,
            algorithm: "SHA-256".into(),
        };
        let header = authorization(&c, "admin", "secret", "GET", "/rpc/Shelly.GetStatus", "abc")
            .expect("header");
        let ha1 = sha256_hex("admin:shellyplus1-c4dd57877294:secret");
        let ha2 = sha256_hex("GET:/rpc/Shelly.GetStatus");
        let want = sha256_hex(&format!("{ha1}:1698245525:00000001:abc:auth:{ha2}"));
        assert!(header.contains(&format!("response=\"{want}\"")), "{header}");
        assert!(header.starts_with("Digest username=\"admin\""));
        let md5 = Challenge {
            algorithm: "MD5".into(),
            ..c
        };
        assert_eq!(authorization(&md5, "admin", "x", "GET", "/", "c"), None);
    }
}
