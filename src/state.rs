//! The state every part of the running exporter shares: the live config, the
//! scheduler and its snapshots, the links to the config server and the plug hub,
//! remote write's counters and the listeners' TLS. Built once by `daemon::run`,
//! handed to the HTTP handlers, the reload path and the health log.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Store;
use crate::net::tls::ServerTls;
use crate::scheduler::Scheduler;
use crate::snapshot::Latest;

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    pub store: Arc<Store>,
    pub scheduler: Arc<Scheduler>,
    /// The snapshots the scheduler publishes, for the outputs.
    pub snapshots: Arc<Latest>,
    /// Reloads run one at a time (API and SIGHUP share it).
    pub reload_lock: tokio::sync::Mutex<()>,
    pub started: Instant,
    /// The ports actually bound, which a reload cannot change.
    pub bound_port: u16,
    pub bound_reload_port: u16,
    /// The config server link, when one is configured.
    pub sync: Option<Arc<crate::sync::ConfigSync>>,
    /// The plug hub inside the exporter (`shelly.listen`), when there is one.
    pub hub: Option<Arc<crate::shelly_server::Hub>>,
    /// What remote write has done (inactive when not configured).
    pub push: Arc<crate::remote_write::Stats>,
    /// The certificate of the management API, and of the metrics listener unless
    /// a web config file gives that one its own (none: plain HTTP).
    pub tls: Arc<ServerTls>,
    /// The certificate the metrics listener serves.
    pub metrics_tls: Arc<ServerTls>,
    /// Measured runs on the scheduler's power meters.
    pub runs: Arc<crate::energy::runs::Runs>,
}
