//! The health log (`telemetry_log`): every `telemetry_interval` (default 30 s) one
//! JSON line appended to a file, for devices whose only record of a bad night is
//! what they wrote themselves. Each line has the time, uptime, requests answered,
//! errors (failed collections and 5xx answers), samples collected, connected clients
//! (plugs on the embedded hub, HTTP requests in flight), resident memory and the
//! overall status. The file is bounded: past `MAX_BYTES` it is renamed to `<file>.1`
//! (replacing the previous one) and a new file starts.
//!
//! Path and interval come from the config or, winning over it,
//! `EDGE_EXPORTER_TELEMETRY_LOG` and `EDGE_EXPORTER_TELEMETRY_INTERVAL`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::{clock, telemetry};

/// Size at which the log is rotated.
pub const MAX_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Where and how often, from the environment first, then the config.
fn settings(state: &AppState) -> Option<(PathBuf, Duration)> {
    let config = state.store.live();
    let path = std::env::var_os("EDGE_EXPORTER_TELEMETRY_LOG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| config.telemetry_log.clone())?;
    let interval = std::env::var("EDGE_EXPORTER_TELEMETRY_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.1)
        .map(Duration::from_secs_f64)
        .or(config.telemetry_interval)
        .unwrap_or(DEFAULT_INTERVAL);
    Some((path, interval))
}

/// One line of the log, as JSON.
pub fn snapshot(state: &AppState) -> serde_json::Value {
    let collectors = state.scheduler.collector_states();
    let collection_errors: u64 = collectors.values().map(|s| s.errors).sum();
    let collected: u64 = collectors.values().map(|s| s.collected).sum();
    let degraded = collectors.values().any(|s| s.ran && s.last_error.is_some());
    let (requests, http_errors) = telemetry::request_totals();
    let process = telemetry::process();
    json!({
        "time": clock::rfc3339(clock::unix_now()),
        "status": if degraded { "degraded" } else { "healthy" },
        "uptime_seconds": telemetry::uptime().as_secs(),
        "requests": requests,
        "errors": collection_errors + http_errors,
        "samples_collected": collected,
        "connected_clients": state.hub.as_ref().map_or(0, |h| h.connected()),
        "rss_bytes": process.rss_bytes,
        "config_source": state.store.source().as_str(),
    })
}

/// Appends one line, whole or not at all (a full disk cuts nothing in half).
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= MAX_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, PathBuf::from(old))?;
    }
    crate::atomic_file::append_line(path, line.as_bytes())
}

/// Appends a line every interval while a path is set (checked each time, so a
/// reload turns it on or off).
pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut warned = false;
    loop {
        let wait = settings(&state).map_or(DEFAULT_INTERVAL, |(_, i)| i);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some((path, _)) = settings(&state) else {
            continue;
        };
        let line = snapshot(&state).to_string();
        let result =
            tokio::task::spawn_blocking(move || append(&path, &line).map_err(|e| (path, e))).await;
        match result {
            Ok(Ok(())) => {
                if warned {
                    tracing::info!("the health log is written again");
                }
                warned = false;
            }
            Ok(Err((path, e))) if !warned => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the health log");
                warned = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("health.log");
        let line = "x".repeat(100_000);
        for _ in 0..25 {
            append(&path, &line).expect("append");
        }
        let now = std::fs::metadata(&path).expect("log").len();
        let old = std::fs::metadata(dir.path().join("health.log.1"))
            .expect("rotated")
            .len();
        assert!(
            now < MAX_BYTES && (MAX_BYTES..MAX_BYTES + 200_000).contains(&old),
            "{now} {old}"
        );
    }
}
