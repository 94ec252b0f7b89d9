//! `edge-metrics-exporter config-server`: the central config store many devices
//! sync with (the spec's `GET/PUT /config/{device_id}`), with a web page for
//! operators. Storage is one SQLite file (`db`); the HTTP API and page are `api`,
//! the `/groups` routes `api::groups`; how a device's config is made of its base, its
//! groups and its overrides is `layers` (pure functions). The exporter's side of
//! the exchange is `crate::sync`.

pub mod api;
pub mod db;
pub mod layers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Secret;

/// How often last-contact times are written to the database.
pub const CONTACT_FLUSH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub addr: SocketAddr,
    pub db: PathBuf,
    /// The admin token.
    pub token: Option<Secret>,
    /// HTTPS with this certificate, key and optional client CA (re-read on SIGHUP).
    pub tls: Option<crate::config::ServerTlsConfig>,
    pub allow_enroll: bool,
    /// Revisions of history kept per device and per group.
    pub history_keep: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open {path}: {source}")]
    Db { path: PathBuf, source: db::DbError },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
}

/// Opens the database, listens, and serves until `shutdown`.
pub async fn run(options: ServerOptions, shutdown: CancellationToken) -> Result<(), ServerError> {
    let (path, keep) = (options.db.clone(), options.history_keep);
    let db = tokio::task::spawn_blocking(move || db::Db::open_keeping(&path, keep))
        .await
        .map_err(|e| ServerError::Runtime(e.to_string()))?
        .map_err(|source| ServerError::Db {
            path: options.db.clone(),
            source,
        })?;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: options.addr,
            source,
        })?;
    let tls = Arc::new(crate::net::tls::ServerTls::default());
    if let Some(cfg) = &options.tls {
        tls.set(Some(crate::net::tls::server(cfg)?));
    }
    let local = listener.local_addr().unwrap_or(options.addr);
    tracing::info!(
        "config server listening on {local} ({}, database {}, {} devices)",
        if options.tls.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        },
        options.db.display(),
        db.device_count()
    );
    let device_tokens = db.tokens().map(|t| t.len()).unwrap_or(0);
    match (&options.token, device_tokens) {
        (None, 0) => {
            tracing::info!("no token set: anyone who reaches the port can read and change configs")
        }
        (None, n) => tracing::warn!(
            devices = n,
            "device tokens exist but no admin token (--token): /devices, the page and other devices' configs are refused to everyone"
        ),
        _ => {}
    }
    if options.allow_enroll {
        tracing::warn!(
            "--allow-enroll: any device id never seen before can register once and get a token"
        );
    }
    let state = Arc::new(api::ServerState {
        db,
        token: options.token,
        allow_enroll: options.allow_enroll,
    });
    let reloader = tokio::spawn(crate::net::tls::reload_on_hangup(
        options.tls.clone(),
        tls.clone(),
        shutdown.clone(),
    ));
    let flusher = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(CONTACT_FLUSH_EVERY) => {}
                }
                flush(&state).await;
            }
        })
    };
    let router = crate::telemetry::track(api::router(state.clone()), "config_server");
    let notifier = tokio::spawn(crate::systemd::run(
        format!("serving configs on {local}"),
        shutdown.clone(),
    ));
    crate::net::serve::serve_tls(
        listener,
        router,
        shutdown,
        tls,
        crate::net::serve::Limits::new(crate::net::serve::CONFIG_SERVER_CONNECTIONS),
    )
    .await;
    let _ = notifier.await;
    let _ = reloader.await;
    let _ = flusher.await;
    flush(&state).await;
    Ok(())
}

async fn flush(state: &Arc<api::ServerState>) {
    let state = state.clone();
    let result = tokio::task::spawn_blocking(move || state.db.flush_contacts()).await;
    if let Ok(Err(e)) = result {
        tracing::warn!(error = %e, "could not save last-contact times");
    }
}
