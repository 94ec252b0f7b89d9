//! The two HTTP surfaces of `serve`, as routers, and the loop that serves them:
//!
//! * [`metrics::router`]: the Prometheus endpoint on `port` (`/metrics`, `/`);
//! * [`api::router`]: the management API on `reload_port`.
//!
//! Shared here: bearer-token and Basic checks, the one JSON error type of the
//! servers, the TLS setups, the outbound client, and [`serve::serve`] with its
//! timeouts. The state the handlers see is `crate::state::AppState`.

pub mod access;
pub mod api;
pub mod auth;
pub mod body;
pub mod client;
pub mod error;
pub mod metrics;
pub mod probes;
pub mod runs;
pub mod serve;
pub mod tls;
pub mod x509;
