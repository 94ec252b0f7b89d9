//! Reload: the one path from a changed configuration to the running daemon,
//! shared by `POST /reload`, SIGHUP and changes that arrive from the config server.
//!
//! [`reload`] is (fetch from the config server →) read → validate → diff → rebuild
//! what changed → swap; [`apply_file`] is its second half, without asking the
//! config server. A config that fails validation never replaces the running one;
//! the outcome is counted (`edge_exporter_config_reloads_total`) and returned to the
//! caller. The TLS certificate is read again on every reload, so a renewed one is
//! picked up by SIGHUP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::sample::{Family, Sample};
use crate::state::AppState;

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub source: &'static str,
    pub metrics_count: usize,
    /// Collectors rebuilt because their settings changed.
    pub restarted: Vec<&'static str>,
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
    counter.fetch_add(1, Ordering::Relaxed);
    result
}

static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);
static RELOADS: Family = Family::counter(
    "edge_exporter_config_reloads_total",
    "Config reloads (API, SIGHUP, changes from the config server), by outcome",
    "",
);

pub fn reload_samples(out: &mut Vec<Sample>) {
    for (outcome, counter) in [("success", &RELOADS_OK), ("failure", &RELOADS_FAILED)] {
        out.push(
            Sample::own(&RELOADS, counter.load(Ordering::Relaxed) as f64)
                .const_label("outcome", outcome),
        );
    }
}

async fn apply_file_inner(state: &AppState) -> Result<ReloadOutcome, ConfigError> {
    let _one_at_a_time = state.reload_lock.lock().await;
    let store = state.store.clone();
    let path = state.store.path().to_owned();
    // Everything that can fail (the file, its validation, the web config, both
    // TLS setups: certificates read, keys matched, CAs found) is done before
    // anything is swapped: a reload that fails changes nothing.
    let reloaded = tokio::task::spawn_blocking(move || {
        store.reload_checked(|new| {
            let api = load_tls(new, &path)?;
            let metrics = load_metrics_tls(new, &path)?;
            Ok((api, metrics))
        })
    })
    .await
    .map_err(|e| ConfigError {
        file: state.store.path().to_owned(),
        line: None,
        field: None,
        message: format!("reload failed: {e}"),
        hint: None,
    })?;
    let (reloaded, (api_tls, metrics_tls)) = match reloaded {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; the running configuration stays, all of it");
            return Err(e);
        }
    };
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
    // Read again even when the paths did not change: a renewed certificate is
    // picked up by SIGHUP.
    state.tls.set(api_tls);
    state.metrics_tls.set(metrics_tls);
    let restarted = state.scheduler.apply(&reloaded.new);
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

pub async fn reload_on_sighup(state: Arc<AppState>, shutdown: CancellationToken) {
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
                // A rejected reload is logged (and counted) where it is decided.
                let _ = reload(&state).await;
            }
        }
    }
}

/// The rustls setup of the metrics listener: the web config file's
/// `tls_server_config` when it has one, else `config.tls`.
pub fn load_metrics_tls(
    config: &Config,
    file: &std::path::Path,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let Some(web) = &config.web.config else {
        return load_tls(config, file);
    };
    let Some(tls) = &web.tls else {
        return load_tls(config, file);
    };
    crate::net::tls::server(tls)
        .map(Some)
        .map_err(|message| ConfigError {
            file: web.path.clone(),
            line: None,
            field: Some("tls_server_config".into()),
            message: message.to_string(),
            hint: Some(
                "cert_file/cert and key_file/key must be readable PEM of one certificate and its key; client_ca_file/client_ca PEM CA certificates"
                    .into(),
            ),
        })
}

/// The rustls setup of `config.tls` (`None`: plain HTTP).
pub fn load_tls(
    config: &Config,
    file: &std::path::Path,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    crate::net::tls::server(tls)
        .map(Some)
        .map_err(|message| ConfigError {
            file: file.to_owned(),
            line: None,
            field: Some("tls".into()),
            message: message.to_string(),
            hint: Some(
                "cert_file and key_file must be readable PEM files of one certificate and its key"
                    .into(),
            ),
        })
}
