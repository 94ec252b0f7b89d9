//! Shelly plugs and meters: everything the exporter knows of their protocols.
//!
//! * `frame`: the JSON-RPC frames of a device's outbound WebSocket (pure);
//! * `status`: a device's status document, its power components and the
//!   [`Reading`] they add up to, also the body of the hub's `/metrics/{id}` (pure);
//! * `poll`: reading a device over HTTP (`/rpc/Shelly.GetStatus` with digest
//!   authentication, Gen1 `/status` with Basic);
//! * `digest`: RFC 7616 digest authentication as Shelly uses it;
//! * `hub_client`: reading a plug through a plug hub's HTTP API.
//!
//! The hub itself (sockets, registry, RPC) is `crate::shelly_server`; metric names
//! are `crate::shelly_server::measures`. Energy is read in joules here (watt-hours
//! exist only at the hub's JSON boundary, see [`wh_of_joules`]).

pub mod digest;
pub mod frame;
pub mod hub_client;
pub mod poll;
pub mod status;

pub use frame::{FrameError, Incoming, RpcError, parse_frame, request};
pub use status::{
    Channel, CompactStatus, ERROR_FLAGS, JOULES_PER_WH, Measurements, PlugReading, Reading,
    Refusal, Refused, StatusView, apply_status, component_index, error_flag, gen1_reading, reading,
    wh_of_joules,
};

use std::time::Duration;

/// Time for one request to a plug or a hub: the hub's RPC timeout (5 s) plus a
/// margin.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// Largest answer read from a plug or a hub.
pub const MAX_BODY: usize = 256 * 1024;
