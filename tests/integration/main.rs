#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Black-box tests of the real binary: one test binary (so it links once), one
//! module per surface. `support` starts exporters on free ports with fixture trees
//! and stops every process it starts.

mod api;
mod board_sensors;
mod config_page;
mod config_server_bounds;
mod config_sync;
mod deploy;
mod disk_full;
mod docs;
mod dropin;
mod energy;
mod fleet;
mod fleet_groups;
mod golden;
mod hardening;
mod install;
mod jetson;
mod layout;
mod lifecycle;
mod metrics_endpoint;
mod operations;
mod prometheus;
mod remote_write;
mod runs;
mod shelly_bounds;
mod shelly_exporter;
mod shelly_fleet;
mod shelly_hub;
mod shelly_provision;
mod shelly_sim;
mod support;
mod tegrastats_child;
mod tegrastats_parse;
mod tls;
mod web_config;
