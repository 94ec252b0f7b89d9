//! TLS with rustls and the *ring* provider.
//!
//! * Outbound ([`client`]): the trust roots from a CA file or the system store, an
//!   optional client certificate, and (only when configured, for tests and labs) no
//!   verification at all.
//! * The exporter's own listeners ([`server`], [`ServerTls`]): a certificate and
//!   key read from PEM files at start and at every reload, optionally requiring
//!   client certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{ServerTlsConfig, TlsClientConfig};

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

/// Why a TLS setup cannot be built; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} is not PEM certificates: {source}", path.display())]
    NotPem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot read the key {}: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: {source}", path.display())]
    ClientVerifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{} and {} do not make a certificate and key pair: {source}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("client certificate: {0}")]
    ClientCertificate(rustls::Error),
    #[error("no trusted CA certificates in the system store; set tls.ca_file")]
    NoSystemRoots,
    #[error(transparent)]
    Protocol(rustls::Error),
}

/// Reads the certificate chain, the key and the client CAs of `cfg`; any problem
/// (missing file, not PEM, key not matching the certificate) is an error that
/// names the file.
pub fn server(cfg: &ServerTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(&cfg.cert_file)?;
    let key = key(&cfg.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider());
    let builder = if cfg.tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .map_err(TlsError::Protocol)?;
    let builder = match &cfg.client_ca_file {
        Some(path) => {
            let roots = roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if cfg.client_cert_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair {
            cert: cfg.cert_file.clone(),
            key: cfg.key_file.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::NotPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })
}

/// The CA certificates of a PEM file, as trust roots.
fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            path: path.to_owned(),
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
