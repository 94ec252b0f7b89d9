//! The exporter's own HTTP surfaces, as routers (the plumbing they stand on,
//! the serve loop, TLS, credentials, bodies and errors, is `crate::net`):
//!
//! * [`metrics::router`]: the Prometheus endpoint on `port` (`/metrics`, `/`);
//! * [`api::router`]: the management API on `reload_port`, with the measured
//!   runs ([`runs`]) and the probes ([`probes`]);
//! * [`access`]: who may call them (the web config's users, tokens, rate limit).
//!
//! The state the handlers see is `crate::state::AppState`.

pub mod access;
pub mod api;
pub mod metrics;
pub mod probes;
pub mod runs;
