//! TLS with rustls and the *ring* provider.
//!
//! * Outbound ([`client`]): the trust roots from a CA file or the system store, an
//!   optional client certificate, and (only when configured, for tests and labs) no
//!   verification at all.
//! * The exporter's own listeners ([`server`], [`ServerTls`]): a certificate and
//!   key read from PEM files at start and at every reload, optionally requiring
//!   client certificates.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::DistinguishedName;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, ServerConfig};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::tls_policy::{
    ClientAuth, Curve, Pem, ServerTlsConfig, Tls12Suite, TlsClientConfig, TlsVersion,
};

/// The TLS setup of a listener, swapped at reload; `None` serves plain HTTP.
#[derive(Debug, Default)]
pub struct ServerTls(ArcSwapOption<ServerConfig>);

impl ServerTls {
    /// The setup for the next connection.
    pub fn current(&self) -> Option<Arc<ServerConfig>> {
        self.0.load_full()
    }

    pub fn set(&self, config: Option<Arc<ServerConfig>>) {
        self.0.store(config);
    }
}

/// Why a TLS setup cannot be built; each names the file (or inline key) it is
/// about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} is not PEM certificates: {source}")]
    NotPem {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot read the key {what}: {source}")]
    Key {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what}: {source}")]
    Ca { what: String, source: rustls::Error },
    #[error("client certificates cannot be verified against {from}: {source}")]
    ClientVerifier {
        from: String,
        source: rustls::server::VerifierBuilderError,
    },
    #[error(
        "the system has no CA certificates to verify client certificates against; set client_ca_file"
    )]
    NoClientRoots,
    #[error("{cert} and {key} do not make a certificate and key pair: {source}")]
    Pair {
        cert: String,
        key: String,
        source: rustls::Error,
    },
    #[error("client certificate: {0}")]
    ClientCertificate(rustls::Error),
    #[error("no trusted CA certificates in the system store; set tls.ca_file")]
    NoSystemRoots,
    #[error(transparent)]
    Protocol(rustls::Error),
}

/// Builds the rustls setup `cfg` describes: the certificate chain and key, the
/// client certificate policy, versions, suites, groups and ALPN. Any problem
/// (missing file, not PEM, key not matching the certificate, no CA to verify
/// against) is an error that names the file or field.
pub fn server(cfg: &ServerTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs_of(&cfg.cert, "cert")?;
    let key = key_of(&cfg.key)?;
    let provider = Arc::new(server_provider(cfg));
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (cfg.min_version..=cfg.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(TlsError::Protocol)?;
    let verifier = client_verifier(cfg, &provider)?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair {
            cert: cfg.cert.describe("cert"),
            key: cfg.key.describe("key"),
            source,
        })?;
    config.ignore_client_order = cfg.prefer_server_cipher_suites;
    config.alpn_protocols = if cfg.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// *ring* with only the TLS 1.2 suites and the groups `cfg` names, in its order
/// (TLS 1.3 suites are all kept, as Go keeps them).
fn server_provider(cfg: &ServerTlsConfig) -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::{cipher_suite as cs, kx_group};
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = &cfg.cipher_suites {
        let mut chosen: Vec<rustls::SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        chosen.extend(suites.iter().map(|s| match s {
            Tls12Suite::EcdheEcdsaAes128Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            Tls12Suite::EcdheEcdsaAes256Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            Tls12Suite::EcdheEcdsaChacha20 => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            Tls12Suite::EcdheRsaAes128Gcm => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            Tls12Suite::EcdheRsaAes256Gcm => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            Tls12Suite::EcdheRsaChacha20 => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        }));
        provider.cipher_suites = chosen;
    }
    if let Some(curves) = &cfg.curve_preferences {
        provider.kx_groups = curves
            .iter()
            .map(|c| match c {
                Curve::X25519 => kx_group::X25519,
                Curve::P256 => kx_group::SECP256R1,
                Curve::P384 => kx_group::SECP384R1,
            })
            .collect();
    }
    provider
}

/// The client certificate policy: `None` asks for no certificate.
fn client_verifier(
    cfg: &ServerTlsConfig,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    let roots = match &cfg.client_ca {
        Some(pem) => Some(roots_of(pem)?),
        None => None,
    };
    let inner: Arc<dyn ClientCertVerifier> = match cfg.client_auth {
        ClientAuth::NoClientCert => return Ok(None),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Arc::new(AnyCertificate {
                mandatory: cfg.client_auth.requires(),
                hints: roots.as_ref().map(|r| r.subjects()).unwrap_or_default(),
                provider: provider.clone(),
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let (roots, from) = match roots {
                Some(roots) => (
                    roots,
                    cfg.client_ca
                        .as_ref()
                        .map_or(String::new(), |p| p.describe("client_ca")),
                ),
                None => (system_roots()?, "the system's CA certificates".to_owned()),
            };
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if cfg.client_auth.requires() {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            verifier
                .build()
                .map_err(|source| TlsError::ClientVerifier { from, source })?
        }
    };
    Ok(Some(match &cfg.client_allowed_sans {
        Some(allowed) => Arc::new(AllowedSans {
            inner,
            allowed: allowed.clone(),
        }),
        None => inner,
    }))
}

/// The CA certificates of the system store (Go verifies client certificates
/// against them when no client CA is configured).
fn system_roots() -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // Some system stores hold certificates rustls refuses; skip them.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsError::NoClientRoots);
    }
    Ok(roots)
}

/// `RequestClientCert` and `RequireAnyClientCert`: any certificate the client
/// proves it holds the key of, chained to nothing.
#[derive(Debug)]
struct AnyCertificate {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Go parses it even when it does not verify it.
        super::x509::subject_alt_names(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `client_allowed_sans`: after `inner` accepts the certificate, one of its DNS,
/// e-mail, IP or URI subject alternative names must be in the list (a bad
/// certificate alert otherwise).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = super::x509::subject_alt_names(end_entity).ok_or(
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
        )?;
        if names.iter().any(|n| self.allowed.contains(n)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// For the servers without a config file to reload (config server, plug hub):
/// SIGHUP re-reads `cfg`'s certificate and key (a renewed certificate, no
/// restart); a broken pair is logged and the previous one keeps serving.
pub async fn reload_on_hangup(
    cfg: Option<ServerTlsConfig>,
    tls: Arc<ServerTls>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("SIGHUP handler not installed; restart to load a new certificate");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {}
        }
        let Some(cfg) = &cfg else {
            tracing::info!("SIGHUP received; no TLS certificate to re-read");
            continue;
        };
        match server(cfg) {
            Ok(config) => {
                tls.set(Some(config));
                tracing::info!("SIGHUP received: TLS certificate re-read");
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the TLS certificate cannot be loaded; the previous one stays")
            }
        }
    }
}

/// A ready client TLS setup: the rustls config and the name to verify.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    /// Overrides the URL's host as the name checked in the certificate.
    pub server_name: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_of(&Pem::File(path.to_owned()), "cert")
}

/// The certificates of a PEM file or inline text (`key`: its config key).
fn certs_of(pem: &Pem, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = pem.describe(key);
    let read: Result<Vec<CertificateDer<'static>>, _> = match pem {
        Pem::File(path) => CertificateDer::pem_file_iter(path)
            .map_err(|source| TlsError::Read {
                what: what.clone(),
                source,
            })?
            .collect(),
        Pem::Inline(text) => CertificateDer::pem_slice_iter(text.expose().as_bytes()).collect(),
    };
    let certs = read.map_err(|source| TlsError::NotPem {
        what: what.clone(),
        source,
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_of(&Pem::File(path.to_owned()))
}

fn key_of(pem: &Pem) -> Result<PrivateKeyDer<'static>, TlsError> {
    match pem {
        Pem::File(path) => PrivateKeyDer::from_pem_file(path),
        Pem::Inline(text) => PrivateKeyDer::from_pem_slice(text.expose().as_bytes()),
    }
    .map_err(|source| TlsError::Key {
        what: pem.describe("key"),
        source,
    })
}

/// The CA certificates of a PEM file, as trust roots.
fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    roots_of(&Pem::File(path.to_owned()))
}

fn roots_of(pem: &Pem) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_of(pem, "client_ca")? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            what: pem.describe("client_ca"),
            source,
        })?;
    }
    Ok(roots)
}

/// Builds the client setup for `cfg`.
pub fn client(cfg: &TlsClientConfig) -> Result<TlsClient, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = if cfg.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let roots = match &cfg.ca_file {
            Some(path) => roots(path)?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // Some system stores hold certificates rustls refuses; skip them.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsError::NoSystemRoots);
                }
                roots
            }
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(TlsError::ClientCertificate)?,
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsClient {
        config: Arc::new(config),
        server_name: cfg.server_name.clone(),
    })
}

/// Accepts any certificate: `insecure_skip_verify: true`.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
