//! `serve`: the exporter daemon, wired together.
//!
//! [`run`] opens the config, binds both listeners, starts the scheduler and serves
//! until `shutdown` is cancelled, then stops everything within
//! [`SHUTDOWN_GRACE`]. What it wires: the shared state (`state`), the reload path
//! (`reload`, also on SIGHUP), the outputs (`http`, `remote_write`), the config
//! server link (`sync`) and the operations side (`health_log`, `systemd`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::store::OpenNote;
use crate::config::{Config, ConfigError, Overrides, Store};
use crate::net::serve::{API_CONNECTIONS, Limits, METRICS_CONNECTIONS, PLUG_CONNECTIONS};
use crate::reload::{apply_file, load_metrics_tls, load_tls, reload_on_sighup, reload_samples};
use crate::scheduler::Scheduler;
use crate::state::AppState;
use crate::{http, net};

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
        let keys: Vec<String> = config
            .unknown_keys
            .iter()
            .map(|k| crate::config::raw::describe_unknown(k))
            .collect();
        tracing::warn!(keys = ?keys, "config.yaml has keys this version does not use; they are kept (check-config --strict fails on them)");
    }

    // A certificate that cannot be used stops the start, like any invalid config.
    let tls = Arc::new(crate::net::tls::ServerTls::default());
    tls.set(load_tls(&config, store.path())?);
    let metrics_tls = Arc::new(crate::net::tls::ServerTls::default());
    metrics_tls.set(load_metrics_tls(&config, store.path())?);
    // `--web.listen-address` (each a listener) wins over `listen_address`/`port`.
    let metrics_addrs = if config.web.listen.is_empty() {
        vec![SocketAddr::new(config.listen_address, config.port)]
    } else {
        config.web.listen.clone()
    };
    let mut metrics_listeners = Vec::new();
    for addr in &metrics_addrs {
        metrics_listeners.push(bind("metrics endpoint", *addr).await?);
    }
    let api_addr = SocketAddr::new(config.api_listen(), config.reload_port);
    let api_listener = bind("management API", api_addr).await?;
    warn_if_api_open(&config, api_addr.ip());
    let bound_port = local_port(&metrics_listeners[0], metrics_addrs[0]);
    let bound_reload_port = local_port(&api_listener, api_addr);

    let tracker = TaskTracker::new();
    // The plug hub inside the exporter, for one-box setups (`shelly.listen`).
    let hub = match config.shelly.listen {
        Some(addr) if config.shelly.enabled => {
            let listener = bind("shelly websocket", addr).await?;
            let hub = crate::shelly_server::Hub::new(crate::shelly_server::HubConfig::default());
            let router = crate::shelly_server::api::ws_router(
                hub.clone(),
                config.shelly.secret.clone(),
                shutdown.clone(),
            );
            tracker.spawn(net::serve::serve(
                listener,
                router,
                shutdown.clone(),
                Limits::new(PLUG_CONNECTIONS),
            ));
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
    let runs = Arc::new(crate::energy::runs::Runs::new(
        scheduler.energy(),
        Some(crate::energy::runs::Runs::file_beside(store.path())),
    ));
    let state = Arc::new(AppState {
        runs,
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
        metrics_tls: metrics_tls.clone(),
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
    if let Some(sync) = &state.sync {
        let scheduler = state.scheduler.clone();
        sync.report_failing(Arc::new(move || scheduler.failing_collectors()));
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

    let metrics_router = crate::telemetry::track(http::metrics::router(state.clone()), "metrics");
    for listener in metrics_listeners {
        tracker.spawn(net::serve::serve_tls(
            listener,
            metrics_router.clone(),
            shutdown.clone(),
            metrics_tls.clone(),
            Limits::new(METRICS_CONNECTIONS),
        ));
    }
    tracker.spawn(net::serve::serve_tls(
        api_listener,
        crate::telemetry::track(http::api::router(state.clone()), "api"),
        shutdown.clone(),
        tls,
        Limits::new(API_CONNECTIONS),
    ));
    tracker.spawn(reload_on_sighup(state.clone(), shutdown.clone()));
    tracker.spawn(keep_runs(state.runs.clone(), shutdown.clone()));
    tracker.spawn(crate::health_log::run(state.clone(), shutdown.clone()));
    tracker.spawn(crate::memory::settle(shutdown.clone()));
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
    // Open runs are closed and stored as ended by the shutdown.
    let runs = state.runs.clone();
    let _ = tokio::task::spawn_blocking(move || runs.close_all(crate::energy::runs::End::Shutdown))
        .await;
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "some tasks did not stop in time; exiting anyway");
    }
    Ok(())
}

/// Every second: closes runs past their timeout and writes the journal of the
/// open ones (a crash then loses at most a second of a run).
async fn keep_runs(runs: Arc<crate::energy::runs::Runs>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let runs = runs.clone();
        let _ = tokio::task::spawn_blocking(move || {
            runs.expire(Instant::now());
            runs.checkpoint();
        })
        .await;
    }
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
            OpenNote::RemovedLeftovers(n) => tracing::info!(
                config = %path, count = n,
                "removed temp files an interrupted write left beside the config"
            ),
            OpenNote::LegacyNotConverted(e) => tracing::warn!(
                config = %path, error = %e,
                "enabled_metrics could not be rewritten as metrics; it still applies"
            ),
        }
    }
}
