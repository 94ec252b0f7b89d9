//! The configuration: `config.yaml` read in two stages.
//!
//! * `raw`: the file as serde sees it ([`RawConfig`]: every key optional, unknown
//!   keys listed);
//! * `validate`: [`Config::from_raw`], one function per section, into the typed
//!   values here (durations, addresses, paths), or a [`ConfigError`];
//! * `error`: where an error is (file, line, field) and what it says;
//! * `json`: the same config as JSON, both ways (`GET /config`, the config server);
//! * `store`: the file on disk, the live config and the one writer;
//! * `edit`: the comment-preserving edits of the file's text.
//!
//! A config that fails validation never replaces the running one.

pub mod doc;
pub mod edit;
mod error;
pub mod glob;
mod json;
pub mod raw;
pub mod store;
mod validate;
pub mod web;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::exposition::MetricStyle;
use crate::paths::Paths;
use crate::sources::ina2xx;

pub use crate::net::auth::BasicCredentials;
pub use crate::net::secret::Secret;
pub use crate::net::tls_policy::{
    self as tls, ClientAuth, Curve, Pem, ServerTlsConfig, Tls12Suite, TlsClientConfig, TlsVersion,
};
pub use crate::sources::board::DeviceType;
pub use crate::sources::shelly::poll::PollTarget;
pub use error::{ConfigError, Source, line_of};
pub use json::{validate_json, yaml_to_json};
pub use raw::{RawConfig, parse_raw};
pub use store::Store;

/// Whether a `metrics:` key is a glob pattern (`*` any run of characters, `?` one).
pub fn is_metric_pattern(key: &str) -> bool {
    key.contains(['*', '?'])
}

pub use glob::{Glob, glob_match};

/// The template shipped as `config.yaml.template`.
pub const TEMPLATE: &str = include_str!("../../config.yaml.template");

pub const DEFAULT_PORT: u16 = 9102;
/// The `job` of pushed series when `remote_write.job` is not set.
pub const DEFAULT_JOB: &str = "edge-metrics-exporter";
/// Default of `max_metrics`: far above any real board (a Jetson AGX Orin has about
/// 150 ids, a 48-core server about 300), far below what a garbage line could make.
pub const DEFAULT_MAX_METRICS: usize = 5000;
pub const DEFAULT_RELOAD_PORT: u16 = 9101;
pub const DEFAULT_SHELLY_URL: &str = "http://localhost:8766";
/// Shortest accepted collection interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest accepted collection interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// How the `tegrastats` collector gets its lines (config section `tegrastats:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TegrastatsConfig {
    /// Program to run; `--interval <ms>` (from `interval`) and `args` follow.
    pub command: String,
    pub args: Vec<String>,
    /// Run as `sudo -n <command>`: tegrastats prints more fields as root.
    pub sudo: bool,
    /// Replay this recording in a loop instead of running tegrastats.
    pub replay: Option<PathBuf>,
    /// Program queried (`-q`) for the nvpmodel power mode.
    pub nvpmodel_command: String,
}

impl Default for TegrastatsConfig {
    fn default() -> Self {
        TegrastatsConfig {
            command: "tegrastats".into(),
            args: Vec::new(),
            sudo: false,
            replay: None,
            nvpmodel_command: "nvpmodel".into(),
        }
    }
}

/// One INA2xx power monitor (config list `ina2xx:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ina2xxSensor {
    /// Sanitized, unique: the `<sensor>` of `board_power_<sensor>_watts`.
    pub name: String,
    pub bus: u8,
    pub address: u8,
    pub settings: ina2xx::Settings,
}

impl Ina2xxSensor {
    /// The Raspberry Pi default: one INA260 at 0x40 on I2C bus 1, named `board`.
    pub fn raspberry_pi_default() -> Self {
        Ina2xxSensor {
            name: "board".into(),
            bus: 1,
            address: 0x40,
            settings: ina2xx::Settings {
                chip: ina2xx::Chip::Ina260,
                averaging: 16,
                conversion_time_us: 1100,
            },
        }
    }
}

/// Pushing samples to a Prometheus remote write receiver (section `remote_write:`).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteConfig {
    pub url: String,
    pub interval: Duration,
    pub batch_size: usize,
    pub timeout: Duration,
    pub auth: RemoteAuth,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    /// `job` of every pushed series that has none.
    pub job: String,
    /// `instance` of every pushed series that has none; `None`: the device's
    /// `<hostname>:<port>`.
    pub instance: Option<String>,
    /// The exporter's `port`, for the default `instance`.
    pub port: u16,
    pub tls: TlsClientConfig,
    /// `None`: beside the config file.
    pub buffer_path: Option<PathBuf>,
    pub buffer_max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAuth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// The Raspberry Pi 5 PMIC reader (config section `pmic:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmicConfig {
    /// `None`: on when the board is a Raspberry Pi 5.
    pub enabled: Option<bool>,
    /// Run as `<command> pmic_read_adc`.
    pub command: String,
}

/// The power sampling (config section `power:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerConfig {
    /// Time between readings of the sources that are sampled fast (Jetson rails
    /// in sysfs, INA2xx sensors).
    pub sample_interval: Duration,
    /// The same while at least one measured run is open (or `measure` samples
    /// by itself); never faster than a chip has a new reading.
    pub run_sample_interval: Duration,
}

impl PowerConfig {
    pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
    pub const DEFAULT_RUN_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
    pub const MIN_RUN_SAMPLE_INTERVAL: Duration = Duration::from_millis(1);
    pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
    pub const MAX_SAMPLE_INTERVAL: Duration = Duration::from_secs(60);
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            sample_interval: Self::DEFAULT_SAMPLE_INTERVAL,
            run_sample_interval: Self::DEFAULT_RUN_SAMPLE_INTERVAL,
        }
    }
}

/// `serve --demo`: a shipped recording replayed as a Jetson of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demo {
    pub device_type: DeviceType,
    /// Name of the recording, for logs.
    pub name: String,
    pub lines: std::sync::Arc<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellyConfig {
    pub enabled: bool,
    pub server_url: String,
    pub device_id: Option<String>,
    pub listen: Option<std::net::SocketAddr>,
    pub secret: Option<Secret>,
    pub poll: Vec<PollTarget>,
}

/// Settings that come from the command line and the environment rather than the
/// file. They are applied on every load, so a reload cannot drop them.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub procfs: Option<PathBuf>,
    pub sysfs: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    /// `serve --demo`: replaces `device_type` and the tegrastats source.
    pub demo: Option<Demo>,
    pub metrics_token: Option<Secret>,
    pub api_token: Option<Secret>,
    /// node_exporter-style flags of `serve` (`--web.*`, `--collector.*`).
    pub web: WebOverrides,
}

/// What `serve`'s `--web.*` and `--collector.*` flags say; they win over the file
/// and stay in force across reloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebOverrides {
    /// `--web.listen-address`: one metrics listener each; empty: `listen_address`
    /// and `port` of the file.
    pub listen: Vec<std::net::SocketAddr>,
    /// `--web.config.file`.
    pub config_file: Option<PathBuf>,
    /// `--web.telemetry-path`; empty: `/metrics`.
    pub telemetry_path: String,
    pub disable_exporter_metrics: bool,
    pub collectors: CollectorSwitches,
}

/// `--collector.NAME`, `--no-collector.NAME` and `--collector.disable-defaults`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectorSwitches {
    pub disable_defaults: bool,
    /// Collector name and whether a flag switched it on or off.
    pub named: Vec<(String, bool)>,
}

impl CollectorSwitches {
    /// Whether collector `name`, which the device would run, runs.
    pub fn runs(&self, name: &str) -> bool {
        match self.named.iter().rev().find(|(n, _)| n == name) {
            Some((_, on)) => *on,
            None => !self.disable_defaults,
        }
    }

    /// Whether a flag switched `name` on: it then runs even where the device type
    /// would not run it by default (`rapl`, `pmic`).
    pub fn forced(&self, name: &str) -> bool {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, on)| *on)
    }
}

/// The metrics listener as the flags and the web config file set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    pub listen: Vec<std::net::SocketAddr>,
    pub telemetry_path: String,
    pub exporter_metrics: bool,
    pub collectors: CollectorSwitches,
    /// `--web.config.file`, read and checked (again at every reload).
    pub config: Option<web::WebConfig>,
}

impl Overrides {
    /// Reads `EDGE_EXPORTER_METRICS_TOKEN` and `EDGE_EXPORTER_API_TOKEN`.
    pub fn with_env_tokens(mut self) -> Self {
        if let Ok(v) = std::env::var("EDGE_EXPORTER_METRICS_TOKEN") {
            self.metrics_token = Secret::new(v);
        }
        if let Ok(v) = std::env::var("EDGE_EXPORTER_API_TOKEN") {
            self.api_token = Secret::new(v);
        }
        self
    }
}

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub device_type: DeviceType,
    pub interval: Duration,
    pub port: u16,
    pub reload_port: u16,
    /// `metrics:` as written: exact ids and glob patterns (`host_cpu_core*_usage_percent`).
    pub metrics: BTreeMap<String, bool>,
    /// The patterns of `metrics:`, compiled, longest first: the first that
    /// matches an id without an exact entry decides it.
    pub metric_patterns: Vec<(Glob, bool)>,
    pub new_metrics_enabled: bool,
    /// Most ids auto-discovery adds up to (with those listed already); beyond it,
    /// new ids are counted and neither added nor served.
    pub max_metrics: usize,
    pub metric_style: MetricStyle,
    pub shelly: ShellyConfig,
    pub paths: Paths,
    pub listen_address: IpAddr,
    /// Set only when the file names it; see [`Config::api_listen`].
    pub api_listen_address: Option<IpAddr>,
    pub metrics_token: Option<Secret>,
    pub api_token: Option<Secret>,
    pub metrics_basic_auth: Option<BasicCredentials>,
    pub api_basic_auth: Option<BasicCredentials>,
    pub tls: Option<ServerTlsConfig>,
    pub hostname: Option<String>,
    pub tegrastats: TegrastatsConfig,
    /// `None` when the file has no `ina2xx:` list (the device type's default applies).
    pub ina2xx: Option<Vec<Ina2xxSensor>>,
    /// `rapl.enabled`; `None`: on for `lattepanda`.
    pub rapl: Option<bool>,
    pub pmic: PmicConfig,
    pub power: PowerConfig,
    pub remote_write: Option<RemoteWriteConfig>,
    pub telemetry_log: Option<PathBuf>,
    pub telemetry_interval: Option<Duration>,
    /// Set by `serve --demo`.
    pub demo: Option<Demo>,
    /// The file still uses `enabled_metrics:`; the store rewrites it.
    pub has_legacy_list: bool,
    /// Top-level keys this version does not know (kept in the file).
    pub unknown_keys: Vec<String>,
    /// The node_exporter-style flags and the web config file.
    pub web: WebSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(
            RawConfig::default(),
            &Overrides::default(),
            &Source::embedded(),
        )
        .unwrap_or_else(|_| unreachable!("the empty config is valid"))
    }
}

impl Config {
    /// Where the management API listens: the configured address; without one,
    /// everywhere when a token protects it, else loopback only.
    pub fn api_listen(&self) -> IpAddr {
        match (self.api_listen_address, &self.api_token) {
            (Some(addr), _) => addr,
            (None, Some(_)) => IpAddr::from([0, 0, 0, 0]),
            (None, None) => IpAddr::from([127, 0, 0, 1]),
        }
    }

    /// Whether an id is collected: its exact entry under `metrics:`, else the
    /// longest pattern that matches it, else `new_metrics_enabled` (an id not
    /// listed yet).
    pub fn is_enabled(&self, id: &str) -> bool {
        self.metrics
            .get(id)
            .copied()
            .or_else(|| self.pattern_for(id))
            .unwrap_or(self.new_metrics_enabled)
    }

    /// The value of the longest `metrics:` pattern matching `id`, if any.
    pub fn pattern_for(&self, id: &str) -> Option<bool> {
        self.metric_patterns
            .iter()
            .find(|(p, _)| p.matches(id))
            .map(|(_, on)| *on)
    }

    /// Whether `metrics:` decides `id`, by its own entry or by a pattern (ids it
    /// does not decide are new: discovery writes them to the file).
    pub fn lists(&self, id: &str) -> bool {
        self.metrics.contains_key(id) || self.pattern_for(id).is_some()
    }

    /// Validates a parsed file.
    pub fn from_raw(
        raw: RawConfig,
        overrides: &Overrides,
        source: &Source<'_>,
    ) -> Result<Self, ConfigError> {
        validate::config(raw, overrides, source)
    }

    /// Parses and validates the text of a config file.
    pub fn parse(
        text: &str,
        overrides: &Overrides,
        source: &Source<'_>,
    ) -> Result<Self, ConfigError> {
        let raw = parse_raw(text, source)?;
        Config::from_raw(raw, overrides, source)
    }
}
