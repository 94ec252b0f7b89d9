//! `serve`: the exporter daemon, wired together.
//!
//! [`run`] opens the config, binds both listeners, starts the scheduler and serves
//! until `shutdown` is cancelled, then stops everything within
//! [`SHUTDOWN_GRACE`]. [`reload`] is the one reload path, shared by `POST /reload`
//! and SIGHUP: (fetch from the config server →) read → validate → diff → rebuild
//! what changed → swap. [`apply_file`] is its second half, also used when the
//! config server's changes arrive by polling.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::store::OpenNote;
use crate::config::{Config, ConfigError, Overrides, Store};
use crate::http::{self, AppState};
use crate::scheduler::Scheduler;

/// How long shutdown waits for in-flight requests and collections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config_path: PathBuf,
    pub overrides: Overrides,
    /// The config server to sync with; `None` runs on the local file alone.
    pub sync: Option<crate::sync::Settings>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config cannot be used (exit code 2).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

impl DaemonError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub source: &'static str,
    pub metrics_count: usize,
    /// Collectors rebuilt because their settings changed.
    pub restarted: Vec<&'static str>,
}

/// Runs the exporter until `shutdown` is cancelled.
pub async fn run(options: ServeOptions, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let path = options.config_path.clone();
    let overrides = options.overrides.clone();
    let (store, notes) = tokio::task::spawn_blocking(move || Store::open(path, overrides))
        .await
        .map_err(|e| DaemonError::Runtime(format!("config loader failed: {e}")))??;
    let store = Arc::new(store);
    log_open_notes(&store, &notes);
    // The config server first: its config may set the ports to bind.
    let sync = match options.sync {
        Some(settings) => {
            tracing::info!(url = %settings.url, device_id = %settings.device_id, "syncing with the config server");
            let sync = crate::sync::ConfigSync::new(settings, store.clone());
            let drift = sync.clone();
            let _ = tokio::task::spawn_blocking(move || drift.record_drift()).await;
            sync.fetch().await;
            Some(sync)
        }
        None => None,
    };
    let config = store.live();
    if !config.unknown_keys.is_empty() {
        tracing::warn!(keys = ?config.unknown_keys, "config.yaml has keys this version does not use; they are kept");
    }

    // A certificate that cannot be used stops the start, like any invalid config.
    let tls = Arc::new(crate::http::tls::ServerTls::default());
    tls.set(load_tls(&config, store.path())?);
    let metrics_addr = SocketAddr::new(config.listen_address, config.port);
    let api_addr = SocketAddr::new(config.api_listen(), config.reload_port);
    let metrics_listener = bind("metrics endpoint", metrics_addr).await?;
    let api_listener = bind("management API", api_addr).await?;
    warn_if_api_open(&config, api_addr.ip());
    let bound_port = local_port(&metrics_listener, metrics_addr);
    let bound_reload_port = local_port(&api_listener, api_addr);

    let tracker = TaskTracker::new();
    // The plug hub inside the exporter, for one-box setups (`shelly.listen`).
    let hub = match config.shelly.listen {
        Some(addr) if config.shelly.enabled => {
            let listener = bind("shelly websocket", addr).await?;
            let hub = crate::shelly::Hub::new(crate::shelly::HubConfig::default());
            let router = crate::shelly::endpoints::ws_router(
                hub.clone(),
                config.shelly.secret.clone(),
                shutdown.clone(),
            );
            tracker.spawn(http::serve::serve(listener, router, shutdown.clone()));
            Some(hub)
        }
        _ => None,
    };
    let hub_for_telemetry = hub.clone();
    let push_stats = Arc::new(crate::remote_write::Stats::default());
    let scheduler = Arc::new(Scheduler::start(
        store.clone(),
        hub,
        tracker.clone(),
        shutdown.clone(),
    ));
    let state = Arc::new(AppState {
        store: store.clone(),
        snapshots: scheduler.latest(),
        scheduler,
        reload_lock: tokio::sync::Mutex::new(()),
        started: Instant::now(),
        bound_port,
        bound_reload_port,
        sync: sync.clone(),
        hub: hub_for_telemetry.clone(),
        push: push_stats.clone(),
        tls: tls.clone(),
    });
    // The daemon's own telemetry in every snapshot.
    state
        .scheduler
        .add_self_metrics(Arc::new(crate::telemetry::samples));
    state.scheduler.add_self_metrics(Arc::new(reload_samples));
    if let Some(hub) = hub_for_telemetry {
        state
            .scheduler
            .add_self_metrics(Arc::new(move |out| hub.telemetry_samples(out)));
    }
    if let Some(sync) = state.sync.clone() {
        state
            .scheduler
            .add_self_metrics(Arc::new(move |out| sync.telemetry_samples(out)));
    }
    // Remote write follows the live config (on or off at each reload).
    let stats = push_stats.clone();
    state
        .scheduler
        .add_self_metrics(Arc::new(move |out| stats.samples(out)));
    // The first scrape, even one before the first collection, has them.
    state.scheduler.republish();
    tracker.spawn(crate::remote_write::run(
        store.clone(),
        state.snapshots.clone(),
        push_stats,
        shutdown.clone(),
    ));
    if let Some(sync) = sync {
        let applier = state.clone();
        let on_change: crate::sync::OnChange = Arc::new(move || {
            let state = applier.clone();
            Box::pin(async move {
                if let Err(e) = apply_file(&state).await {
                    tracing::warn!(error = %e, "the config from the config server could not be applied");
                }
            })
        });
        tracker.spawn(sync.run(on_change, shutdown.clone()));
    }

    tracker.spawn(http::serve::serve_tls(
        metrics_listener,
        crate::telemetry::track(http::metrics::router(state.clone()), "metrics"),
        shutdown.clone(),
        tls.clone(),
    ));
    tracker.spawn(http::serve::serve_tls(
        api_listener,
        crate::telemetry::track(http::api::router(state.clone()), "api"),
        shutdown.clone(),
        tls,
    ));
    tracker.spawn(reload_on_sighup(state.clone(), shutdown.clone()));
    tracker.spawn(crate::health_log::run(state.clone(), shutdown.clone()));
    tracing::info!(
        device_type = state.scheduler.device().resolved.device_type.as_str(),
        config = %store.path().display(),
        "exporter running"
    );
    tracker.spawn(crate::systemd::run(
        format!("serving metrics on port {bound_port}, management API on port {bound_reload_port}"),
        shutdown.clone(),
    ));

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "some tasks did not stop in time; exiting anyway");
    }
    Ok(())
}

/// The one reload path. An invalid config is rejected and the running one stays.
pub async fn reload(state: &AppState) -> Result<ReloadOutcome, ConfigError> {
    if let Some(sync) = &state.sync {
        let drift = sync.clone();
        let _ = tokio::task::spawn_blocking(move || drift.record_drift()).await;
        sync.fetch().await;
    }
    apply_file(state).await
}

/// Reads `config.yaml` and applies it: the second half of [`reload`], without
/// asking the config server.
pub async fn apply_file(state: &AppState) -> Result<ReloadOutcome, ConfigError> {
    let result = apply_file_inner(state).await;
    let counter = if result.is_ok() {
        &RELOADS_OK
    } else {
        &RELOADS_FAILED
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    result
}

static RELOADS_OK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static RELOADS_FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static RELOADS: crate::sample::Family = crate::sample::Family::counter(
    "edge_exporter_config_reloads_total",
    "Config reloads (API, SIGHUP, changes from the config server), by outcome",
    "",
);

fn reload_samples(out: &mut Vec<crate::sample::Sample>) {
    for (outcome, counter) in [("success", &RELOADS_OK), ("failure", &RELOADS_FAILED)] {
        out.push(
            crate::sample::Sample::own(
                &RELOADS,
                counter.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )
            .const_label("outcome", outcome),
        );
    }
}

async fn apply_file_inner(state: &AppState) -> Result<ReloadOutcome, ConfigError> {
    let _one_at_a_time = state.reload_lock.lock().await;
    let store = state.store.clone();
    let reloaded = tokio::task::spawn_blocking(move || store.reload())
        .await
        .map_err(|e| ConfigError {
            file: state.store.path().to_owned(),
            line: None,
            field: None,
            message: format!("reload failed: {e}"),
            hint: None,
        })??;
    warn_port_change(state.bound_port, reloaded.new.port);
    warn_port_change(state.bound_reload_port, reloaded.new.reload_port);
    if reloaded.old.listen_address != reloaded.new.listen_address
        || reloaded.old.api_listen() != reloaded.new.api_listen()
        || reloaded.old.shelly.listen != reloaded.new.shelly.listen
    {
        tracing::warn!(
            "listen address change detected but cannot be applied; restart the service to apply it"
        );
    }
    let restarted = state.scheduler.apply(&reloaded.new);
    // Read again even when the paths did not change: a renewed certificate is
    // picked up by SIGHUP. A broken one leaves the previous one serving.
    match load_tls(&reloaded.new, state.store.path()) {
        Ok(tls) => state.tls.set(tls),
        Err(e) => {
            tracing::error!(error = %e, "TLS not reloaded; the previous certificate stays in use");
            return Err(e);
        }
    }
    tracing::info!(restarted = ?restarted, "configuration reloaded");
    Ok(ReloadOutcome {
        source: state.store.source().as_str(),
        metrics_count: reloaded.new.metrics.len(),
        restarted,
    })
}

/// The spec's warning when a reload asks for another port.
fn warn_port_change(bound: u16, wanted: u16) {
    if wanted != bound && wanted != 0 {
        tracing::warn!(
            "⚠️  Port change detected ({bound} → {wanted}) but cannot be applied.\n\
             Please restart the service: sudo systemctl restart edge-metrics-exporter"
        );
    }
}

async fn reload_on_sighup(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP handler not installed; reload through POST /reload");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP received, reloading");
                if let Err(e) = reload(&state).await {
                    tracing::error!(error = %e, "reload rejected; the running configuration stays");
                }
            }
        }
    }
}

/// The rustls setup of `config.tls` (`None`: plain HTTP).
fn load_tls(
    config: &Config,
    file: &std::path::Path,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    crate::http::tls::server(tls)
        .map(Some)
        .map_err(|message| ConfigError {
            file: file.to_owned(),
            line: None,
            field: Some("tls".into()),
            message,
            hint: Some(
                "cert_file and key_file must be readable PEM files of one certificate and its key"
                    .into(),
            ),
        })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { what, addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(%local, "{what} listening on {local}");
    Ok(listener)
}

fn local_port(listener: &TcpListener, fallback: SocketAddr) -> u16 {
    listener.local_addr().unwrap_or(fallback).port()
}

fn warn_if_api_open(config: &Config, ip: IpAddr) {
    if config.api_token.is_none() && !ip.is_loopback() {
        tracing::warn!(
            address = %ip,
            "the management API is open: it listens on a non-loopback address without api_token, \
             so anyone who can reach it can change the configuration"
        );
    }
}

fn log_open_notes(store: &Store, notes: &[OpenNote]) {
    let path = store.path().display();
    for note in notes {
        match note {
            OpenNote::WroteStarter => {
                tracing::info!(config = %path, "no config file found; wrote a commented starter file")
            }
            OpenNote::StarterNotWritten(e) => tracing::warn!(
                config = %path, error = %e,
                "no config file found and none could be written; running on the embedded default"
            ),
            OpenNote::ConvertedLegacyList => {
                tracing::info!(config = %path, "converted enabled_metrics to the metrics map")
            }
            OpenNote::LegacyNotConverted(e) => tracing::warn!(
                config = %path, error = %e,
                "enabled_metrics could not be rewritten as metrics; it still applies"
            ),
        }
    }
}
