//! How the exporter is: the body of `GET /health` on the management API, and what
//! the `health` command reads back and summarises. One type serves both, so the
//! command and the API cannot drift apart. Fields are the spec's (`status`,
//! `device_type`, `collector`, `metrics_count`, ...) plus the exporter's own.
//!
//! Every field has a default when read, so `health` also reads an exporter of
//! another version.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::state::AppState;
use crate::sync::SyncHealth;

/// `GET /health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// `healthy`, or `degraded` when a collector fails or has no data.
    pub status: String,
    pub device_type: String,
    /// The board's own collector (`tegrastats` on a Jetson), else `linux`.
    pub collector: String,
    pub collectors: Vec<CollectorHealth>,
    /// What the board is and what measures its power (docs/board-sensors.md).
    pub board: Board,
    pub metrics_count: usize,
    pub enabled_metrics_count: usize,
    pub config_source: String,
    pub config_path: String,
    /// The config server link, when one is configured.
    pub config_server: Option<SyncHealth>,
    pub version: String,
    pub uptime_seconds: f64,
    pub port: u16,
    pub reload_port: u16,
}

/// One collector in [`Health`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectorHealth {
    pub name: String,
    /// `starting`, `ok`, `no_data` or `failing`.
    pub status: String,
    pub error: Option<String>,
    pub samples: usize,
    pub last_duration_seconds: Option<f64>,
    /// Unix seconds.
    pub last_success: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Board {
    pub model: Option<String>,
    pub power: Option<String>,
}

impl Health {
    /// The daemon's health now.
    pub fn of(state: &AppState) -> Health {
        let config = state.store.live();
        let device = state.scheduler.device();
        let collectors: Vec<CollectorHealth> = state
            .scheduler
            .collector_states()
            .iter()
            .map(|(name, s)| {
                let (status, error) = match (&s.last_error, s.ran) {
                    (_, false) => ("starting", None),
                    (None, true) => ("ok", None),
                    (Some(e), true) if e.is_no_data() => ("no_data", Some(e.detail())),
                    (Some(e), true) => ("failing", Some(e.detail())),
                };
                CollectorHealth {
                    name: (*name).to_owned(),
                    status: status.to_owned(),
                    error,
                    samples: s.sample_count(),
                    last_duration_seconds: s.last_duration.map(|d| d.as_secs_f64()),
                    last_success: s.last_success.map(|t| {
                        t.duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64()
                    }),
                }
            })
            .collect();
        let degraded = collectors
            .iter()
            .any(|c| c.status == "failing" || c.status == "no_data");
        Health {
            status: if degraded { "degraded" } else { "healthy" }.to_owned(),
            device_type: device.resolved.device_type.as_str().to_owned(),
            collector: device.primary_collector().to_owned(),
            collectors,
            board: Board {
                model: device.resolved.model.clone(),
                power: device.resolved.board.map(|b| b.power.to_owned()),
            },
            metrics_count: config.metrics.len(),
            enabled_metrics_count: config.metrics.values().filter(|on| **on).count(),
            config_source: state.store.source().as_str().to_owned(),
            config_path: state.store.path().display().to_string(),
            config_server: state.sync.as_ref().map(|s| s.health()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: state.started.elapsed().as_secs_f64(),
            port: state.bound_port,
            reload_port: state.bound_reload_port,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }

    /// What the `health` command prints for an exporter at `url`.
    pub fn summary(&self, url: &str) -> String {
        let text = |v: &str| if v.is_empty() { "?" } else { v }.to_owned();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "edge-metrics-exporter {} at {url}: {}",
            text(&self.version),
            text(&self.status)
        );
        let _ = writeln!(
            out,
            "device {} ({}), config {} ({}), up {}",
            text(&self.device_type),
            self.board.model.as_deref().unwrap_or("unknown board"),
            text(&self.config_source),
            text(&self.config_path),
            clock::human_duration(Duration::from_secs_f64(self.uptime_seconds.max(0.0)))
        );
        for c in &self.collectors {
            let detail = match &c.error {
                Some(e) => e.clone(),
                None => format!("{} samples", c.samples),
            };
            let _ = writeln!(
                out,
                "  {:<9} {:<12} {detail}",
                text(&c.status),
                text(&c.name)
            );
        }
        if let Some(sync) = &self.config_server {
            let reachable = match sync.reachable {
                Some(true) => "reachable",
                Some(false) => "unreachable",
                None => "not contacted yet",
            };
            let _ = writeln!(
                out,
                "config server {}: {reachable}, revision {}, {} changes waiting",
                text(&sync.url),
                sync.revision.map_or("none".to_owned(), |r| r.to_string()),
                sync.pending_changes
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_degraded_exporter() {
        let h = Health {
            status: "degraded".into(),
            device_type: "raspberry_pi".into(),
            collector: "ina2xx".into(),
            collectors: vec![
                CollectorHealth {
                    name: "linux".into(),
                    status: "ok".into(),
                    samples: 12,
                    ..Default::default()
                },
                CollectorHealth {
                    name: "ina2xx".into(),
                    status: "no_data".into(),
                    error: Some("board (ina260 at 0x40 on bus 1): no chip answers".into()),
                    ..Default::default()
                },
            ],
            board: Board {
                model: Some("Raspberry Pi 4 Model B Rev 1.5".into()),
                power: None,
            },
            config_source: "local".into(),
            config_path: "/etc/edge-metrics-exporter/config.yaml".into(),
            config_server: Some(SyncHealth {
                url: "http://cfg:8080".into(),
                reachable: Some(false),
                pending_changes: 2,
                ..Default::default()
            }),
            version: "0.1.0".into(),
            uptime_seconds: 3725.0,
            ..Default::default()
        };
        assert_eq!(
            h.summary("http://127.0.0.1:9101"),
            "edge-metrics-exporter 0.1.0 at http://127.0.0.1:9101: degraded\n\
             device raspberry_pi (Raspberry Pi 4 Model B Rev 1.5), config local (/etc/edge-metrics-exporter/config.yaml), up 1h2m5s\n\
             \x20 ok        linux        12 samples\n\
             \x20 no_data   ina2xx       board (ina260 at 0x40 on bus 1): no chip answers\n\
             config server http://cfg:8080: unreachable, revision none, 2 changes waiting\n"
        );
        // What the API writes, the command reads back whole.
        let wire = serde_json::to_string(&h).expect("json");
        let back: Health = serde_json::from_str(&wire).expect("read back");
        assert_eq!(back, h);
        // An exporter of another version: what is missing reads as unknown.
        let sparse: Health = serde_json::from_str(r#"{"status":"healthy"}"#).expect("sparse");
        assert!(sparse.is_healthy());
        assert!(
            sparse
                .summary("u")
                .starts_with("edge-metrics-exporter ? at u: healthy\n")
        );
    }
}
