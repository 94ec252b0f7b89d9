//! edge-metrics-exporter: a Prometheus exporter for power and health of edge
//! devices.
//!
//! # Layout
//!
//! * `cli`: the command line; `main.rs` only parses it and calls in here.
//! * `daemon`: `serve`, wiring everything below together; `run(options, shutdown)`.
//! * `config`: `config.yaml` read and validated in two stages; `config::store` is
//!   the one writer of the file, `config::edit` its comment-preserving edits.
//! * `sources`: readers of the hardware (procfs, sysfs, I2C, board tools such as
//!   `vcgencmd`), pure parsing into typed values in base units, one module per data
//!   source; `sources::board` holds the board profiles and detection.
//! * `collectors`: map source readings to samples; `collectors::plan` is the one
//!   place that decides which collectors run.
//! * `scheduler`: runs collectors in the background, owns their health and sample
//!   expiry, publishes the snapshot that scrapes serve.
//! * `sample`: the data model shared by collectors and outputs.
//! * `exposition`: writes samples as Prometheus text 0.0.4 or OpenMetrics 1.0.
//! * `http`: the Prometheus endpoint and the management API (routers only), and
//!   the serve loop with its timeouts.
//! * `config_server`: the central config store devices sync with (`config-server`).
//! * `shelly`: the plug hub Shelly plugs connect to (`shelly-server`, or embedded).
//! * `remote_write`: pushes the snapshot to a remote write receiver through an
//!   on-disk buffer.
//! * `sync`: the exporter's side of the config server (fetch, poll, queued changes).
//! * `telemetry`: the daemon's own HTTP and process metrics, for every server;
//!   `health_log` appends them to a file.
//! * `systemd`: readiness, watchdog and stop notifications for `Type=notify` units.
//! * `paths`: the procfs/sysfs roots every hardware read goes through.

pub mod atomic_file;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod collectors;
pub mod config;
pub mod config_server;
pub mod daemon;
pub mod exposition;
pub mod health;
pub mod health_log;
pub mod http;
pub mod lock;
pub mod paths;
pub mod recordings;
pub mod reload;
pub mod remote_write;
pub mod sample;
pub mod scheduler;
pub mod shelly_server;
pub mod snapshot;
pub mod sources;
pub mod state;
pub mod sync;
pub mod systemd;
pub mod telemetry;
