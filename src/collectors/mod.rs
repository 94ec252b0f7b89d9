//! Collectors: each turns one source's readings into samples.
//!
//! A [`Collector`] is called by the scheduler every `interval` on a blocking
//! thread and pushes what it read into a [`SampleSink`]. The framework (the
//! `scheduler` module), not the collector, times it, records success and expires
//! old samples. Sources that stream (a child process, a socket) keep a background
//! task and hand out their latest values from `collect`.
//!
//! Which collectors run is decided in one place, [`plan`], from the config: a
//! [`CollectorSpec`] per collector. Two equal specs mean an unchanged collector, so a
//! reload rebuilds only the ones whose spec changed.

pub mod linux;
pub mod tegrastats;

use crate::config::{Config, DeviceType};
use crate::paths::Paths;
use crate::sample::SampleSink;

/// One data source mapped to samples.
pub trait Collector: Send + 'static {
    /// Stable short name (`linux`), the `collector` label of the health metrics.
    fn name(&self) -> &'static str;

    /// Reads the source once. Samples pushed before an error are kept: a collector
    /// that read four of five sources reports the fifth as its error.
    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError>;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollectError {
    /// The hardware is not there (no tegrastats, no sensor on the bus). Reported,
    /// but not counted as a failure of the exporter.
    #[error("no data: {0}")]
    NoData(String),
    #[error("{0}")]
    Failed(String),
}

/// What to run, derived from the config. Everything a collector is built from is
/// in its spec, so comparing specs tells what a reload must rebuild.
#[derive(Debug, Clone, PartialEq)]
pub enum CollectorSpec {
    Linux { paths: Paths },
}

impl CollectorSpec {
    pub fn name(&self) -> &'static str {
        match self {
            CollectorSpec::Linux { .. } => linux::NAME,
        }
    }

    pub fn build(&self) -> Box<dyn Collector> {
        match self {
            CollectorSpec::Linux { paths } => Box::new(linux::LinuxCollector::new(paths.clone())),
        }
    }
}

/// The device type actually in use: `auto` resolved to a concrete type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    /// The `device_type` label and `/health` value.
    pub device_type: &'static str,
}

/// Resolves `auto` by looking at the board (through the configured roots).
pub fn resolve_device(config: &Config) -> ResolvedDevice {
    match config.device_type {
        // Board detection grows with the board collectors; until one matches,
        // every machine is a generic Linux box.
        DeviceType::Linux | DeviceType::Auto => ResolvedDevice {
            device_type: "linux",
        },
    }
}

/// The collectors `config` asks for, in a stable order.
pub fn plan(config: &Config, _device: &ResolvedDevice) -> Vec<CollectorSpec> {
    vec![CollectorSpec::Linux {
        paths: config.paths.clone(),
    }]
}
