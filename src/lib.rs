//! edge-metrics-exporter: a Prometheus exporter for power and health of edge
//! devices.
//!
//! # Layout
//!
//! Every top-level module sits on one floor; a module uses only modules of its
//! own floor and of the floors below it (`tests/integration/layout.rs` reads
//! this table and checks every import against it):
//!
//! ```text
//! ┌──────────────┬──────────────────────────────────────────────────────────┐
//! │ commands     │ cmd, cli                                                 │
//! │ serving      │ daemon, http, config_server                              │
//! │ operating    │ reload, health, health_log                               │
//! │ shared state │ state                                                    │
//! │ outputs      │ scheduler, remote_write, sync                            │
//! │ collecting   │ collectors                                               │
//! │ plug hub     │ shelly_server                                            │
//! │ measuring    │ energy                                                   │
//! │ settings     │ config, recordings                                       │
//! │ hardware     │ sources                                                  │
//! │ formats      │ exposition, snapshot, telemetry                          │
//! │ plumbing     │ net, sample                                              │
//! │ foundations  │ lock, clock, escape, paths, atomic_file, memory, systemd │
//! └──────────────┴──────────────────────────────────────────────────────────┘
//! ```
//!
//! Data flows up: `sources` read the hardware, `collectors` turn readings into
//! samples (power through `energy`'s meters: source → meter → snapshot), the
//! `scheduler` publishes one `snapshot` per tick, and the outputs serve it
//! (`http::metrics`, `remote_write`, the hub's page). The config flows down:
//! `config::store` holds it, `sync` keeps it in step with the `config_server`,
//! and `reload` applies a change to the running daemon.
//!
//! **The data path**
//! * `sources`: readers of the hardware (procfs, sysfs, I2C, board tools,
//!   tegrastats, Shelly devices): bytes to typed values in base units, one module
//!   per data source; `sources::board` holds the board profiles and detection.
//! * `collectors`: map source readings to samples; `collectors::plan` is the one
//!   place that decides which collectors run.
//! * `sample`: the data model (samples, families) and the sink collectors push
//!   into, which keeps values finite and series unique.
//! * `energy`: the power-meter layer every power reading goes through: a joule
//!   counter, the mean and the peak per series, kept across collector rebuilds;
//!   the samplers that read fast sources off the runtime; measured runs.
//! * `scheduler`: the collection ticks, collector health, timeouts and expiry;
//!   publishes one snapshot per tick.
//! * `snapshot`: the published state every output reads.
//! * `exposition`: samples as Prometheus text 0.0.4 or OpenMetrics 1.0.
//! * `remote_write`: pushes the snapshot through an on-disk buffer.
//!
//! **Configuration**
//! * `config`: `config.yaml` in two stages (`raw`, `validate`), the live config
//!   and the one writer of the file (`store`), comment-preserving `edit`s, the
//!   exporter-toolkit web config file of `--web.config.file` (`web`), and config
//!   documents with their diffs and patches (`doc`), which the device's `sync` and
//!   the `config_server` both speak.
//! * `reload`: the one path from a changed config to the running daemon.
//! * `sync`: the exporter's side of the config server (settings, client,
//!   persisted queue).
//! * `config_server`: the central config store devices sync with, over HTTP or
//!   HTTPS, with per-device tokens, groups whose configs devices inherit
//!   (`layers`: base, groups, overrides) and the fleet view; its store `db` by
//!   concern: `schema`, `tokens`, `devices`, `groups`, `history` (cargo feature
//!   `config-server`, on by default).
//!
//! **Serving and operating**
//! * `daemon`: `serve`, wiring everything together; `state`: what its parts share.
//! * `http`: the metrics endpoint and the management API (routers), the
//!   measured runs' routes, probes, and who may call them (`access`).
//! * `net`: the plumbing under every server and client: the serve loop with its
//!   timeouts, TLS (policies, rustls setups, certificate names), bearer and
//!   Basic checks, secrets, bounded bodies, the JSON error, the outbound client.
//! * `health`: the `/health` answer, also read by the `health` command.
//! * `shelly_server`: the plug hub Shelly plugs connect to (`shelly-server`, or
//!   embedded in the exporter), its readings kept from the plugs' notifications and
//!   its page of every plug for Prometheus (`page`).
//! * `telemetry`, `health_log`, `systemd`: the daemon's own metrics, its health
//!   log, and readiness and watchdog notifications.
//! * `cli` and `cmd`: the command line and the subcommands `main` runs.
//!
//! **Small pieces shared by all**: `paths` (the filesystem roots every hardware
//! read goes through, and the hostname), `atomic_file` (crash-safe file
//! replacement), `clock` (wall-clock time as reported), `lock` (the one way to
//! take a mutex), `escape` (outside text made safe for logs and terminals),
//! `memory` (the allocator's arenas and trimming), `recordings` (the tegrastats
//! recordings `--demo` replays).
//!
//! Modules do not import each other in a circle, nor a module of a floor above
//! their own; `tests/integration/layout.rs` checks both.

pub mod atomic_file;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod collectors;
pub mod config;
#[cfg(feature = "config-server")]
pub mod config_server;
pub mod daemon;
pub mod energy;
pub mod escape;
pub mod exposition;
pub mod health;
pub mod health_log;
pub mod http;
pub mod lock;
pub mod memory;
pub mod net;
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
