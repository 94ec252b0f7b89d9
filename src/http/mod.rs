//! The two HTTP surfaces of `serve`, as routers, and the loop that serves them:
//!
//! * [`metrics::router`]: the Prometheus endpoint on `port` (`/metrics`, `/`);
//! * [`api::router`]: the management API on `reload_port`.
//!
//! Shared here: the state handlers see, bearer-token checks, the one JSON error
//! type of the API, and [`serve::serve`] with its timeouts.

pub mod api;
pub mod auth;
pub mod client;
pub mod digest;
pub mod error;
pub mod metrics;
pub mod probes;
pub mod serve;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use crate::config::Store;
use crate::scheduler::Scheduler;

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    pub store: Arc<Store>,
    pub scheduler: Arc<Scheduler>,
    /// The snapshots the scheduler publishes, for the outputs.
    pub snapshots: Arc<crate::snapshot::Latest>,
    /// Reloads run one at a time (API and SIGHUP share it).
    pub reload_lock: tokio::sync::Mutex<()>,
    pub started: Instant,
    /// The ports actually bound, which a reload cannot change.
    pub bound_port: u16,
    pub bound_reload_port: u16,
    /// The config server link, when one is configured.
    pub sync: Option<Arc<crate::sync::ConfigSync>>,
    /// The plug hub inside the exporter (`shelly.listen`), when there is one.
    pub hub: Option<Arc<crate::shelly::Hub>>,
    /// What remote write has done (inactive when not configured).
    pub push: Arc<crate::remote_write::Stats>,
    /// The certificate both listeners serve (none: plain HTTP).
    pub tls: Arc<tls::ServerTls>,
}
