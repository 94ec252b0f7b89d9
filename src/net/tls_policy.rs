//! The TLS policy of the exporter's own listeners, as exporter-toolkit's
//! `tls_server_config` describes it (the web config file), or the simpler
//! `tls:` of `config.yaml` and the servers' `--tls-*` flags, which fill in the
//! same shape. `net::tls::server` turns it into a rustls setup; every value here
//! is one rustls enforces exactly (the web config refuses the rest, see `web`).

use std::fmt;
use std::path::PathBuf;

use super::secret::Secret;

/// A PEM document: a file read at start and at every reload, or the text itself
/// (exporter-toolkit's inline `cert`, `key` and `client_ca`).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(Secret),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({})", path.display()),
            // Inline keys are secrets; certificates are not, but one rule is simpler.
            Pem::Inline(_) => f.write_str("Inline(***)"),
        }
    }
}

impl Pem {
    /// How messages name it: the file, or the config key it was given under.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Inline(_) => format!("the inline {key}"),
        }
    }
}

/// Go's `tls.ClientAuthType`, by exporter-toolkit's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate asked for.
    NoClientCert,
    /// A certificate asked for; none needed, and one given is not verified.
    RequestClientCert,
    /// A certificate needed, and not verified against any CA.
    RequireAnyClientCert,
    /// None needed; one given must chain to the client CAs.
    VerifyClientCertIfGiven,
    /// One needed, and it must chain to the client CAs.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// exporter-toolkit's value (`RequireClientCert` is its old name for
    /// `RequireAnyClientCert`; empty means `NoClientCert`).
    pub fn parse(name: &str) -> Option<ClientAuth> {
        Some(match name {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::NoClientCert => "NoClientCert",
            ClientAuth::RequestClientCert => "RequestClientCert",
            ClientAuth::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    /// Whether a certificate the client gives is checked against CAs.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    /// Whether a client without a certificate is turned away.
    pub fn requires(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// The TLS versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }
}

/// A TLS 1.2 cipher suite rustls implements, by Go's name. (TLS 1.3 suites are
/// not configurable in Go, nor here: all three are always offered.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls12Suite {
    EcdheEcdsaAes128Gcm,
    EcdheEcdsaAes256Gcm,
    EcdheEcdsaChacha20,
    EcdheRsaAes128Gcm,
    EcdheRsaAes256Gcm,
    EcdheRsaChacha20,
}

impl Tls12Suite {
    pub const ALL: [(Tls12Suite, &'static str); 6] = [
        (
            Tls12Suite::EcdheEcdsaAes128Gcm,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            Tls12Suite::EcdheEcdsaAes256Gcm,
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            Tls12Suite::EcdheEcdsaChacha20,
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
        (
            Tls12Suite::EcdheRsaAes128Gcm,
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            Tls12Suite::EcdheRsaAes256Gcm,
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            Tls12Suite::EcdheRsaChacha20,
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ];

    pub fn name(self) -> &'static str {
        Tls12Suite::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }
}

/// A key exchange group rustls (with *ring*) implements, by Go's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    X25519,
}

impl Curve {
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "CurveP256",
            Curve::P384 => "CurveP384",
            Curve::X25519 => "X25519",
        }
    }
}

/// The TLS setup of one of the exporter's listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    pub cert: Pem,
    pub key: Pem,
    pub client_auth: ClientAuth,
    /// The CAs client certificates must chain to; `None` with a verifying
    /// `client_auth`: the system's CAs (as Go does).
    pub client_ca: Option<Pem>,
    /// A client certificate must carry one of these among its DNS, e-mail, IP
    /// and URI subject alternative names.
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites in order of preference; `None`: all of them.
    pub cipher_suites: Option<Vec<Tls12Suite>>,
    /// Key exchange groups in order of preference; `None`: all of them.
    pub curve_preferences: Option<Vec<Curve>>,
    /// The server's order of suites wins over the client's.
    pub prefer_server_cipher_suites: bool,
    /// HTTP/2 is offered (ALPN `h2`) besides HTTP/1.1.
    pub http2: bool,
}

impl ServerTlsConfig {
    /// A certificate and key from files, no client certificates, TLS 1.2 and 1.3,
    /// every suite and group, HTTP/1.1: the `tls:` of `config.yaml` and the
    /// servers' `--tls-cert-file`/`--tls-key-file`.
    pub fn files(cert: PathBuf, key: PathBuf) -> ServerTlsConfig {
        ServerTlsConfig {
            cert: Pem::File(cert),
            key: Pem::File(key),
            client_auth: ClientAuth::NoClientCert,
            client_ca: None,
            client_allowed_sans: None,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            cipher_suites: None,
            curve_preferences: None,
            prefer_server_cipher_suites: false,
            http2: false,
        }
    }

    /// Client certificates required and verified against the CAs of `ca`, when
    /// one is given.
    pub fn with_client_ca(mut self, ca: Option<PathBuf>) -> ServerTlsConfig {
        if let Some(ca) = ca {
            self.client_auth = ClientAuth::RequireAndVerifyClientCert;
            self.client_ca = Some(Pem::File(ca));
        }
        self
    }
}

/// How an outbound TLS connection checks its peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsClientConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}
