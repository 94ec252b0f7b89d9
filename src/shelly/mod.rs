//! The Shelly plug hub: Gen2+ plugs connect out to its WebSocket endpoint and it
//! answers for them over HTTP. It runs as `edge-metrics-exporter shelly-server`
//! (the spec's `shelly_server`) or inside the exporter (`shelly.listen`).
//!
//! * `hub`: the registry of connected plugs, their sockets and RPC;
//! * `endpoints`: the routers: the WebSocket endpoint (with its secret check) and
//!   the HTTP API (`/metrics`, `/metrics/{device_id}`, `/devices`, `/status/{id}`);
//! * `server`: the `shelly-server` subcommand.
//!
//! Protocol parsing is `sources::shelly`; metric names are the `shelly` collector's.

pub mod endpoints;
pub mod hub;
pub mod server;

pub use hub::{Hub, HubConfig, RpcFailure};
