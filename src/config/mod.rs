//! The configuration: `config.yaml` read in two stages.
//!
//! [`RawConfig`] is the file as serde sees it (every key optional, unknown keys kept
//! aside); [`Config::from_raw`] validates it into typed values (durations,
//! addresses, paths) or returns a [`ConfigError`] that names the file, line and
//! field. A config that fails validation never replaces the running one.
//!
//! This module owns parsing and validation. Reading and writing the file on disk
//! (the one writer, atomic replace, comment-preserving edits) is `store`; the YAML
//! edits themselves are `edit`.

pub mod edit;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::exposition::MetricStyle;
use crate::paths::Paths;
use crate::sample::{is_valid_metric_name, sanitize};
use crate::sources::ina2xx;

pub use store::Store;

/// The template shipped as `config.yaml.template`.
pub const TEMPLATE: &str = include_str!("../../config.yaml.template");

pub const DEFAULT_PORT: u16 = 9102;
pub const DEFAULT_RELOAD_PORT: u16 = 9101;
pub const DEFAULT_SHELLY_URL: &str = "http://localhost:8766";
/// Shortest accepted collection interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest accepted collection interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Keys this version understands; anything else is kept in the file and reported
/// once at load, so a typo does not go unnoticed.
const KNOWN_KEYS: &[&str] = &[
    "device_type",
    "interval",
    "port",
    "reload_port",
    "metrics",
    "enabled_metrics",
    "new_metrics_enabled",
    "metric_style",
    "shelly",
    "path",
    "listen_address",
    "api_listen_address",
    "metrics_token",
    "api_token",
    "hostname",
    "tegrastats",
    "ina2xx",
    "rapl",
    "pmic",
    "remote_write",
    "telemetry_log",
    "telemetry_interval",
    "log_level",
    "log_format",
    "tls",
    "metrics_basic_auth",
    "api_basic_auth",
];

/// `config.yaml` as written. Every field is optional; defaults are applied in
/// [`Config::from_raw`].
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// `linux` or `auto`.
    pub device_type: Option<String>,
    /// Collection interval in seconds; fractions allowed.
    pub interval: Option<f64>,
    /// Port of the Prometheus endpoint.
    pub port: Option<u16>,
    /// Port of the management API.
    pub reload_port: Option<u16>,
    /// Metric id → collect it or not.
    pub metrics: Option<BTreeMap<String, bool>>,
    /// The legacy list of enabled metric ids; converted to `metrics` and removed.
    pub enabled_metrics: Option<Vec<String>>,
    /// Value given to ids seen for the first time.
    pub new_metrics_enabled: Option<bool>,
    pub metric_style: Option<MetricStyle>,
    pub shelly: Option<RawShelly>,
    pub path: Option<RawPaths>,
    /// Address the Prometheus endpoint listens on (default all).
    pub listen_address: Option<String>,
    /// Address the management API listens on (see [`Config::api_listen`]).
    pub api_listen_address: Option<String>,
    /// Bearer token required on `/metrics`.
    pub metrics_token: Option<String>,
    /// Bearer token required on the management API.
    pub api_token: Option<String>,
    /// User name and password accepted on `/metrics` (besides `metrics_token`).
    pub metrics_basic_auth: Option<RawBasicAuth>,
    /// User name and password accepted on the management API (besides `api_token`).
    pub api_basic_auth: Option<RawBasicAuth>,
    /// Serve `/metrics` and the management API over HTTPS.
    pub tls: Option<RawServerTls>,
    /// The `hostname` label; the machine's hostname when unset.
    pub hostname: Option<String>,
    pub tegrastats: Option<RawTegrastats>,
    /// INA260/INA226/INA219 power monitors on I2C.
    pub ina2xx: Option<Vec<RawIna2xx>>,
    pub rapl: Option<RawRapl>,
    pub pmic: Option<RawPmic>,
    pub remote_write: Option<RawRemoteWrite>,
    /// File the health log appends a JSON line to (off when unset).
    pub telemetry_log: Option<PathBuf>,
    /// Seconds between health log lines (default 30).
    pub telemetry_interval: Option<f64>,
    /// `error`, `warn`, `info`, `debug`, `trace` or a tracing filter; the flag and
    /// `EDGE_EXPORTER_LOG_LEVEL` win. Read at start.
    pub log_level: Option<String>,
    /// `text` or `json`; the flag and `EDGE_EXPORTER_LOG_FORMAT` win. Read at start.
    pub log_format: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, yaml_serde::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWrite {
    /// The receiver: `http(s)://host:port/api/v1/write` and the like.
    pub url: String,
    /// Seconds between pushes (default 15).
    pub interval: Option<f64>,
    /// Most samples in one request (default 2000).
    pub batch_size: Option<usize>,
    /// Seconds a request may take (default 10).
    pub timeout: Option<f64>,
    pub bearer_token: Option<String>,
    pub basic_auth: Option<RawBasicAuth>,
    /// Labels added to every series that does not have them (e.g. `site`).
    pub labels: Option<BTreeMap<String, String>>,
    pub tls: Option<RawTls>,
    pub buffer: Option<RawBuffer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file of the CA(s) that signed the receiver's certificate (default: the
    /// system's trust store).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for receivers that ask for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name to check the certificate against (default: the URL's host).
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

/// `tls:` of the exporter's own listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    /// The server certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    /// Directory of the on-disk buffer (default: `remote-write-buffer` beside the
    /// config file).
    pub path: Option<PathBuf>,
    /// Size limit in MiB (default 64).
    pub max_size_mb: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIna2xx {
    /// Used in metric ids (`board_power_<name>_watts`).
    pub name: String,
    /// `ina260` (default), `ina226` or `ina219`.
    pub chip: Option<String>,
    /// N of `/dev/i2c-N`; default 1 (the Raspberry Pi header).
    pub bus: Option<u8>,
    /// 0x40..0x4F, as a number or a string such as "0x40"; default 0x40.
    pub address: Option<yaml_serde::Value>,
    /// External shunt (INA226, INA219), ohms.
    pub shunt_ohms: Option<f64>,
    /// Largest current expected (INA226, INA219); sets the resolution.
    pub max_current_amps: Option<f64>,
    pub averaging: Option<u16>,
    pub conversion_time_us: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRapl {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPmic {
    pub enabled: Option<bool>,
    pub command: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTegrastats {
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub sudo: Option<bool>,
    pub replay: Option<PathBuf>,
    pub nvpmodel_command: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawShelly {
    pub enabled: Option<bool>,
    pub server_url: Option<String>,
    /// Which plug powers this device: its alias or id at the hub.
    pub device_id: Option<String>,
    /// Run the plug hub inside the exporter on this address (`0.0.0.0:8765`).
    pub listen: Option<String>,
    /// Secret plugs must put in their URL when `listen` is set.
    pub secret: Option<String>,
    /// Plugs read over HTTP instead (they cannot connect out).
    pub poll: Option<Vec<RawPoll>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, yaml_serde::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    pub url: String,
    /// 2 (Gen2 and later, `/rpc/Shelly.GetStatus`) or 1 (`/status`).
    pub generation: Option<u8>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The `plug` label; the URL's host when unset.
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub procfs: Option<PathBuf>,
    pub sysfs: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
}

/// What the exporter runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// Any Linux machine: the `linux` collector only.
    Linux,
    /// Detect the board; falls back to `linux`.
    Auto,
    /// A Jetson of another family (TX1, TX2, Thor, ...): tegrastats plus `linux`.
    Jetson,
    JetsonOrin,
    JetsonXavier,
    JetsonNano,
    /// Power from INA260 over I2C (and the PMIC on a Pi 5).
    RaspberryPi,
    /// sysfs: the board profile's input, where the board has one.
    OrangePi,
    /// x86: RAPL through powercap.
    LattePanda,
}

impl DeviceType {
    pub const SUPPORTED: &[&str] = &[
        "linux",
        "auto",
        "jetson",
        "jetson_orin",
        "jetson_xavier",
        "jetson_nano",
        "raspberry_pi",
        "orange_pi",
        "lattepanda",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "linux" => Some(DeviceType::Linux),
            "auto" => Some(DeviceType::Auto),
            "jetson" => Some(DeviceType::Jetson),
            "jetson_orin" => Some(DeviceType::JetsonOrin),
            "jetson_xavier" => Some(DeviceType::JetsonXavier),
            "jetson_nano" => Some(DeviceType::JetsonNano),
            "raspberry_pi" => Some(DeviceType::RaspberryPi),
            "orange_pi" => Some(DeviceType::OrangePi),
            "lattepanda" => Some(DeviceType::LattePanda),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Linux => "linux",
            DeviceType::Auto => "auto",
            DeviceType::Jetson => "jetson",
            DeviceType::JetsonOrin => "jetson_orin",
            DeviceType::JetsonXavier => "jetson_xavier",
            DeviceType::JetsonNano => "jetson_nano",
            DeviceType::RaspberryPi => "raspberry_pi",
            DeviceType::OrangePi => "orange_pi",
            DeviceType::LattePanda => "lattepanda",
        }
    }

    pub fn is_jetson(self) -> bool {
        matches!(
            self,
            DeviceType::Jetson
                | DeviceType::JetsonOrin
                | DeviceType::JetsonXavier
                | DeviceType::JetsonNano
        )
    }
}

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

/// HTTP Basic credentials a listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub username: String,
    pub password: Secret,
}

/// The files of the exporter's own TLS (read at start and at every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

/// How an outbound TLS connection checks its peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsClientConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// The Raspberry Pi 5 PMIC reader (config section `pmic:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmicConfig {
    /// `None`: on when the board is a Raspberry Pi 5.
    pub enabled: Option<bool>,
    /// Run as `<command> pmic_read_adc`.
    pub command: String,
}

/// `serve --demo`: a shipped recording replayed as a Jetson of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demo {
    pub device_type: DeviceType,
    /// Name of the recording, for logs.
    pub name: String,
    pub lines: std::sync::Arc<Vec<String>>,
}

/// A secret from the config or the environment. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| Secret(trimmed.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
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

/// A plug read over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    /// `http://host[:port]`, without a path.
    pub url: String,
    pub generation: u8,
    pub username: String,
    pub password: Option<Secret>,
    pub name: String,
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
    pub metrics: BTreeMap<String, bool>,
    pub new_metrics_enabled: bool,
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
    pub remote_write: Option<RemoteWriteConfig>,
    pub telemetry_log: Option<PathBuf>,
    pub telemetry_interval: Option<Duration>,
    /// Set by `serve --demo`.
    pub demo: Option<Demo>,
    /// The file still uses `enabled_metrics:`; the store rewrites it.
    pub has_legacy_list: bool,
    /// Top-level keys this version does not know (kept in the file).
    pub unknown_keys: Vec<String>,
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

    /// Whether an id is collected: its entry under `metrics:`, or
    /// `new_metrics_enabled` for an id not listed yet.
    pub fn is_enabled(&self, id: &str) -> bool {
        self.metrics
            .get(id)
            .copied()
            .unwrap_or(self.new_metrics_enabled)
    }

    /// Validates a parsed file.
    pub fn from_raw(
        raw: RawConfig,
        overrides: &Overrides,
        source: &Source<'_>,
    ) -> Result<Self, ConfigError> {
        let device_type = match raw.device_type.as_deref() {
            _ if overrides.demo.is_some() => overrides
                .demo
                .as_ref()
                .map_or(DeviceType::Linux, |d| d.device_type),
            None => DeviceType::Linux,
            Some(name) => DeviceType::parse(name.trim()).ok_or_else(|| {
                let mut e =
                    source.error(&["device_type"], format!("Unsupported device type: {name}"));
                e.hint = Some(format!("supported: {}", DeviceType::SUPPORTED.join(", ")));
                e
            })?,
        };
        let interval = match raw.interval {
            None => Duration::from_secs(1),
            Some(secs) => {
                let valid = secs.is_finite()
                    && secs >= MIN_INTERVAL.as_secs_f64()
                    && secs <= MAX_INTERVAL.as_secs_f64();
                if !valid {
                    return Err(source.error(
                        &["interval"],
                        format!(
                            "must be a number of seconds from {} to {}, got {secs}",
                            MIN_INTERVAL.as_secs_f64(),
                            MAX_INTERVAL.as_secs()
                        ),
                    ));
                }
                Duration::from_secs_f64(secs)
            }
        };
        let mut metrics = raw.metrics.unwrap_or_default();
        for name in metrics.keys() {
            if !is_valid_metric_name(name) {
                return Err(
                    source.error(&["metrics", name], format!("Invalid metric name: {name}"))
                );
            }
        }
        let has_legacy_list = raw.enabled_metrics.is_some();
        for name in raw.enabled_metrics.unwrap_or_default() {
            if !is_valid_metric_name(&name) {
                return Err(
                    source.error(&["enabled_metrics"], format!("Invalid metric name: {name}"))
                );
            }
            // An explicit entry under `metrics:` wins over the legacy list.
            metrics.entry(name).or_insert(true);
        }
        // The spec's default for `shelly.enabled` is true; it applies when the
        // `shelly:` section is there. Without one, no plug is configured at all.
        let shelly_section = raw.shelly.is_some();
        let shelly = raw.shelly.unwrap_or_default();
        let server_url = shelly
            .server_url
            .unwrap_or_else(|| DEFAULT_SHELLY_URL.to_owned());
        if !(server_url.starts_with("http://") || server_url.starts_with("https://")) {
            return Err(source.error(
                &["shelly", "server_url"],
                format!("must be an http:// or https:// URL, got {server_url:?}"),
            ));
        }
        let parse_addr =
            |key: &str, value: Option<String>| -> Result<Option<IpAddr>, ConfigError> {
                value
                    .map(|v| {
                        v.trim().parse::<IpAddr>().map_err(|_| {
                            source.error(
                                &[key],
                                format!(
                                    "must be an IP address such as 0.0.0.0 or 127.0.0.1, got {v:?}"
                                ),
                            )
                        })
                    })
                    .transpose()
            };
        let listen_address =
            parse_addr("listen_address", raw.listen_address)?.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let api_listen_address = parse_addr("api_listen_address", raw.api_listen_address)?;
        let raw_paths = raw.path.unwrap_or_default();
        let defaults = Paths::default();
        let paths = Paths {
            procfs: overrides
                .procfs
                .clone()
                .or(raw_paths.procfs)
                .unwrap_or(defaults.procfs),
            sysfs: overrides
                .sysfs
                .clone()
                .or(raw_paths.sysfs)
                .unwrap_or(defaults.sysfs),
            rootfs: overrides
                .rootfs
                .clone()
                .or(raw_paths.rootfs)
                .unwrap_or(defaults.rootfs),
        };
        let raw_tegrastats = raw.tegrastats.unwrap_or_default();
        let defaults = TegrastatsConfig::default();
        let tegrastats = TegrastatsConfig {
            command: match raw_tegrastats.command {
                Some(c) if c.trim().is_empty() => {
                    return Err(
                        source.error(&["tegrastats", "command"], "must not be empty".into())
                    );
                }
                Some(c) => c.trim().to_owned(),
                None => defaults.command,
            },
            args: raw_tegrastats.args.unwrap_or_default(),
            sudo: raw_tegrastats.sudo.unwrap_or(false),
            replay: raw_tegrastats.replay,
            nvpmodel_command: match raw_tegrastats.nvpmodel_command {
                Some(c) if c.trim().is_empty() => {
                    return Err(source.error(
                        &["tegrastats", "nvpmodel_command"],
                        "must not be empty".into(),
                    ));
                }
                Some(c) => c.trim().to_owned(),
                None => defaults.nvpmodel_command,
            },
        };
        let hostname = match raw.hostname {
            Some(h) if h.trim().is_empty() || h.contains(['\n', '"', '\\']) => {
                return Err(source.error(&["hostname"], format!("not a usable hostname: {h:?}")));
            }
            other => other.map(|h| h.trim().to_owned()),
        };
        let ina2xx = raw
            .ina2xx
            .map(|list| ina2xx_sensors(list, source))
            .transpose()?;
        let raw_pmic = raw.pmic.unwrap_or_default();
        let pmic = PmicConfig {
            enabled: raw_pmic.enabled,
            command: match raw_pmic.command {
                Some(c) if c.trim().is_empty() => {
                    return Err(source.error(&["pmic", "command"], "must not be empty".into()));
                }
                Some(c) => c.trim().to_owned(),
                None => "vcgencmd".into(),
            },
        };
        let remote_write = raw
            .remote_write
            .map(|r| remote_write_config(r, source))
            .transpose()?;
        let telemetry_interval = match raw.telemetry_interval {
            None => None,
            Some(s) if s.is_finite() && (0.1..=86_400.0).contains(&s) => {
                Some(Duration::from_secs_f64(s))
            }
            Some(s) => {
                return Err(source.error(
                    &["telemetry_interval"],
                    format!("must be seconds from 0.1 to 86400, got {s}"),
                ));
            }
        };
        if let Some(level) = &raw.log_level
            && tracing_subscriber::EnvFilter::try_new(level.trim()).is_err()
        {
            return Err(source.error(
                &["log_level"],
                format!("not a log level or filter: {level:?} (error, warn, info, debug, trace)"),
            ));
        }
        if let Some(format) = &raw.log_format
            && !matches!(format.trim(), "text" | "json")
        {
            return Err(source.error(
                &["log_format"],
                format!("must be text or json, got {format:?}"),
            ));
        }
        let unknown_keys = raw
            .other
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        Ok(Config {
            device_type,
            interval,
            port: raw.port.unwrap_or(DEFAULT_PORT),
            reload_port: raw.reload_port.unwrap_or(DEFAULT_RELOAD_PORT),
            metrics,
            new_metrics_enabled: raw.new_metrics_enabled.unwrap_or(false),
            metric_style: raw.metric_style.unwrap_or_default(),
            shelly: ShellyConfig {
                enabled: shelly.enabled.unwrap_or(shelly_section),
                server_url,
                device_id: shelly
                    .device_id
                    .map(|d| d.trim().to_owned())
                    .filter(|d| !d.is_empty()),
                listen: match shelly.listen {
                    None => None,
                    Some(l) => Some(l.trim().parse().map_err(|_| {
                        source.error(
                            &["shelly", "listen"],
                            format!("must be an address such as 0.0.0.0:8765, got {l:?}"),
                        )
                    })?),
                },
                secret: shelly.secret.and_then(Secret::new),
                poll: shelly
                    .poll
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| poll_target(p, source))
                    .collect::<Result<_, _>>()?,
            },
            paths,
            listen_address,
            api_listen_address,
            metrics_token: overrides
                .metrics_token
                .clone()
                .or_else(|| raw.metrics_token.and_then(Secret::new)),
            api_token: overrides
                .api_token
                .clone()
                .or_else(|| raw.api_token.and_then(Secret::new)),
            metrics_basic_auth: basic_credentials(
                raw.metrics_basic_auth,
                "metrics_basic_auth",
                source,
            )?,
            api_basic_auth: basic_credentials(raw.api_basic_auth, "api_basic_auth", source)?,
            tls: raw.tls.map(|t| ServerTlsConfig {
                cert_file: t.cert_file,
                key_file: t.key_file,
                client_ca_file: t.client_ca_file,
            }),
            hostname,
            tegrastats,
            ina2xx,
            rapl: raw.rapl.and_then(|r| r.enabled),
            pmic,
            remote_write,
            telemetry_log: raw.telemetry_log,
            telemetry_interval,
            demo: overrides.demo.clone(),
            has_legacy_list,
            unknown_keys,
        })
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

/// `metrics_basic_auth` / `api_basic_auth`: both parts must be there.
fn basic_credentials(
    raw: Option<RawBasicAuth>,
    key: &str,
    source: &Source<'_>,
) -> Result<Option<BasicCredentials>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let username = raw.username.trim().to_owned();
    if username.is_empty() || username.contains(':') {
        return Err(source.error(
            &[key, "username"],
            "must be a non-empty name without ':'".into(),
        ));
    }
    let password = Secret::new(raw.password)
        .ok_or_else(|| source.error(&[key, "password"], "must not be empty".into()))?;
    Ok(Some(BasicCredentials { username, password }))
}

/// YAML to JSON; keys that are not strings are written as their YAML text.
pub fn yaml_to_json(value: &yaml_serde::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    use yaml_serde::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => json!(s),
        Y::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s.clone(),
                        other => yaml_serde::to_string(other)
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_default(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(&tagged.value),
    }
}

/// Validates a config given as a JSON object (a config server's document). Returns
/// the config and the document as YAML text.
pub fn validate_json(
    value: &serde_json::Value,
    origin: &Path,
) -> Result<(Config, String), ConfigError> {
    let invalid = |message: String| ConfigError {
        file: origin.to_owned(),
        line: None,
        field: None,
        message,
        hint: None,
    };
    if !value.is_object() {
        return Err(invalid(
            "the config must be a JSON object of keys to values".into(),
        ));
    }
    let text = yaml_serde::to_string(value).map_err(|e| invalid(e.to_string()))?;
    let config = Config::parse(
        &text,
        &Overrides::default(),
        &Source {
            file: origin,
            text: &text,
        },
    )?;
    Ok((config, text))
}

fn remote_write_config(
    raw: RawRemoteWrite,
    source: &Source<'_>,
) -> Result<RemoteWriteConfig, ConfigError> {
    let err = |key: &str, message: String| source.error(&["remote_write", key], message);
    let url = raw.url.trim().to_owned();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .filter(|r| !r.is_empty() && !r.starts_with('/'))
        .ok_or_else(|| {
            err(
                "url",
                format!("must be an http:// or https:// URL such as http://prometheus:9090/api/v1/write, got {url:?}"),
            )
        })?;
    if rest.contains(char::is_whitespace) {
        return Err(err("url", format!("must not contain spaces, got {url:?}")));
    }
    let seconds = |key: &str, v: Option<f64>, default: f64, min: f64| {
        let v = v.unwrap_or(default);
        if v.is_finite() && v >= min && v <= 3600.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(err(
                key,
                format!("must be seconds from {min} to 3600, got {v}"),
            ))
        }
    };
    let batch_size = raw.batch_size.unwrap_or(2000);
    if !(1..=100_000).contains(&batch_size) {
        return Err(err(
            "batch_size",
            format!("must be from 1 to 100000, got {batch_size}"),
        ));
    }
    let auth = match (raw.bearer_token.and_then(Secret::new), raw.basic_auth) {
        (Some(_), Some(_)) => {
            return Err(err(
                "bearer_token",
                "set bearer_token or basic_auth, not both".into(),
            ));
        }
        (Some(token), None) => RemoteAuth::Bearer(token),
        (None, Some(basic)) => RemoteAuth::Basic {
            username: basic.username,
            password: Secret::new(basic.password)
                .ok_or_else(|| err("basic_auth", "password must not be empty".into()))?,
        },
        (None, None) => RemoteAuth::None,
    };
    let mut labels: Vec<(String, String)> = raw.labels.unwrap_or_default().into_iter().collect();
    for (name, _) in &labels {
        let reserved = name.starts_with("__") || name == "device_type" || name == "hostname";
        if !crate::sample::is_valid_metric_name(name) || name.contains(':') || reserved {
            return Err(err(
                "labels",
                format!(
                    "{name:?} is not a label name that can be added (letters, digits, _; not __*, device_type or hostname)"
                ),
            ));
        }
    }
    labels.sort();
    let raw_tls = raw.tls.unwrap_or_default();
    if raw_tls.cert_file.is_some() != raw_tls.key_file.is_some() {
        return Err(err("tls", "cert_file and key_file go together".into()));
    }
    let raw_buffer = raw.buffer.unwrap_or_default();
    let max_mb = raw_buffer.max_size_mb.unwrap_or(64.0);
    if !(max_mb.is_finite() && (0.25..=1_048_576.0).contains(&max_mb)) {
        return Err(err(
            "buffer",
            format!("max_size_mb must be from 0.25 to 1048576, got {max_mb}"),
        ));
    }
    Ok(RemoteWriteConfig {
        url,
        interval: seconds("interval", raw.interval, 15.0, 0.1)?,
        batch_size,
        timeout: seconds("timeout", raw.timeout, 10.0, 0.1)?,
        auth,
        labels,
        tls: TlsClientConfig {
            ca_file: raw_tls.ca_file,
            cert_file: raw_tls.cert_file,
            key_file: raw_tls.key_file,
            server_name: raw_tls.server_name,
            insecure_skip_verify: raw_tls.insecure_skip_verify.unwrap_or(false),
        },
        buffer_path: raw_buffer.path,
        buffer_max_bytes: (max_mb * 1024.0 * 1024.0) as u64,
    })
}

fn ina2xx_sensors(
    list: Vec<RawIna2xx>,
    source: &Source<'_>,
) -> Result<Vec<Ina2xxSensor>, ConfigError> {
    let mut sensors: Vec<Ina2xxSensor> = Vec::with_capacity(list.len());
    for raw in list {
        let err = |message: String| source.error(&["ina2xx"], format!("{}: {message}", raw.name));
        let name =
            sanitize(&raw.name).ok_or_else(|| err("name must contain a letter or digit".into()))?;
        if sensors.iter().any(|s| s.name == name) {
            return Err(err(format!("a second sensor named {name}")));
        }
        let bus = raw.bus.unwrap_or(1);
        let address = match &raw.address {
            None => 0x40,
            Some(yaml_serde::Value::Number(n)) => {
                n.as_u64().and_then(|a| u8::try_from(a).ok()).unwrap_or(0)
            }
            Some(yaml_serde::Value::String(s)) => {
                let s = s.trim();
                let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => u8::from_str_radix(hex, 16).ok(),
                    None => s.parse().ok(),
                };
                parsed.unwrap_or(0)
            }
            Some(_) => 0,
        };
        if !(0x40..=0x4F).contains(&address) {
            return Err(err(format!(
                "address must be 0x40 to 0x4F, got {}",
                raw.address
                    .as_ref()
                    .map_or_else(String::new, |v| yaml_serde::to_string(v)
                        .unwrap_or_default()
                        .trim()
                        .to_owned())
            )));
        }
        let shunt = raw.shunt_ohms;
        let chip = match raw.chip.as_deref().map(str::trim).unwrap_or("ina260") {
            "ina260" => {
                if shunt.is_some() || raw.max_current_amps.is_some() {
                    return Err(err(
                        "the INA260 has its own 2 mΩ shunt: remove shunt_ohms and max_current_amps"
                            .into(),
                    ));
                }
                ina2xx::Chip::Ina260
            }
            chip @ ("ina226" | "ina219") => {
                let shunt_ohms = shunt.ok_or_else(|| {
                    err(format!(
                        "{chip} needs shunt_ohms (the shunt resistor, ohms)"
                    ))
                })?;
                if !(shunt_ohms > 0.0 && shunt_ohms.is_finite()) {
                    return Err(err(format!(
                        "shunt_ohms must be positive, got {shunt_ohms}"
                    )));
                }
                // Full scale of the shunt ADC: 81.92 mV (INA226), 320 mV (INA219 at gain /8).
                let full_scale = if chip == "ina226" { 0.08192 } else { 0.32 };
                let max_current_amps = raw.max_current_amps.unwrap_or(full_scale / shunt_ohms);
                if chip == "ina226" {
                    ina2xx::Chip::Ina226 {
                        shunt_ohms,
                        max_current_amps,
                    }
                } else {
                    ina2xx::Chip::Ina219 {
                        shunt_ohms,
                        max_current_amps,
                    }
                }
            }
            other => {
                return Err(err(format!(
                    "unsupported chip {other:?} (supported: ina260, ina226, ina219)"
                )));
            }
        };
        let is_219 = matches!(chip, ina2xx::Chip::Ina219 { .. });
        if is_219 && raw.conversion_time_us.is_some() {
            return Err(err("conversion_time_us does not apply to the INA219 (its ADC resolution is fixed at 12 bits)".into()));
        }
        let settings = ina2xx::Settings {
            chip,
            averaging: raw.averaging.unwrap_or(if is_219 { 1 } else { 16 }),
            conversion_time_us: raw
                .conversion_time_us
                .unwrap_or(if is_219 { 0 } else { 1100 }),
        };
        ina2xx::config_word(&settings).map_err(|e| err(e.to_string()))?;
        ina2xx::calibration(chip).map_err(|e| err(e.to_string()))?;
        sensors.push(Ina2xxSensor {
            name,
            bus,
            address,
            settings,
        });
    }
    Ok(sensors)
}

fn poll_target(raw: RawPoll, source: &Source<'_>) -> Result<PollTarget, ConfigError> {
    let url = raw.url.trim().trim_end_matches('/').to_owned();
    let host = url
        .strip_prefix("http://")
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| {
            source.error(
                &["shelly", "poll"],
                format!(
                    "url must be http://host[:port] without a path, got {:?}",
                    raw.url
                ),
            )
        })?
        .to_owned();
    let generation = raw.generation.unwrap_or(2);
    if !matches!(generation, 1 | 2) {
        return Err(source.error(
            &["shelly", "poll"],
            format!("generation must be 1 or 2, got {generation}"),
        ));
    }
    let name = raw
        .name
        .unwrap_or_else(|| host.split(':').next().unwrap_or(&host).to_owned());
    Ok(PollTarget {
        url,
        generation,
        username: raw.username.unwrap_or_else(|| "admin".to_owned()),
        password: raw.password.and_then(Secret::new),
        name,
    })
}

/// Parses YAML text into [`RawConfig`]. An empty file (or only comments) is the
/// empty config.
pub fn parse_raw(text: &str, source: &Source<'_>) -> Result<RawConfig, ConfigError> {
    let value: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| source.yaml_error(&e))?;
    match value {
        yaml_serde::Value::Null => Ok(RawConfig::default()),
        // Typed a second time from the text (not the value) so errors keep their
        // field path and line.
        yaml_serde::Value::Mapping(_) => {
            yaml_serde::from_str(text).map_err(|e| source.yaml_error(&e))
        }
        _ => Err(ConfigError {
            file: source.file.to_owned(),
            line: Some(1),
            field: None,
            message: "the file must be a mapping of keys to values".into(),
            hint: None,
        }),
    }
}

/// Where a config text came from, to point errors at a file and line.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn embedded() -> Source<'static> {
        Source {
            file: Path::new("<embedded default>"),
            text: "",
        }
    }

    fn error(&self, field: &[&str], message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: line_of(self.text, field),
            field: Some(field.join(".")),
            message,
            hint: None,
        }
    }

    /// A serde error: `metrics.x: invalid type ... at line 4 column 8` becomes
    /// field `metrics.x`, line 4 and the message in between.
    fn yaml_error(&self, e: &yaml_serde::Error) -> ConfigError {
        let message = strip_location(&e.to_string());
        let (field, detail) = match message.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') => (Some(path.to_owned()), rest.to_owned()),
            _ => (None, message.clone()),
        };
        ConfigError {
            file: self.file.to_owned(),
            line: e.location().map(|l| l.line()),
            field,
            message: detail,
            hint: None,
        }
    }
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Finds the 1-based line of a key path (`["shelly", "server_url"]`) in block YAML.
/// Good enough for pointing at a field; `None` when the key is not found.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut parent_indent: Option<usize> = None;
    let mut depth = 0;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if parent_indent.is_some_and(|p| indent <= p) {
            return None;
        }
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches(['"', '\'']));
        let want = path.get(depth)?;
        let child_level = parent_indent.is_none() && indent == 0 || parent_indent.is_some();
        if child_level && key == Some(want) {
            depth += 1;
            if depth == path.len() {
                return Some(number + 1);
            }
            parent_indent = Some(indent);
        }
    }
    None
}

/// A config that cannot be used, pointing at the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: Option<String>,
    /// The spec's error message (`Unsupported device type: X`), kept exact.
    pub message: String,
    /// What would be accepted instead, shown after the message.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            &Overrides::default(),
            &Source {
                file: Path::new("config.yaml"),
                text,
            },
        )
    }

    #[test]
    fn defaults() {
        let c = parse("").expect("empty file is valid");
        assert_eq!(c.device_type, DeviceType::Linux);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!((c.port, c.reload_port), (9102, 9101));
        assert!(!c.new_metrics_enabled);
        assert_eq!(c.api_listen(), IpAddr::from([127, 0, 0, 1]));
        assert!(!c.shelly.enabled);
    }

    #[test]
    fn template_is_valid() {
        let c = parse(TEMPLATE).expect("template parses");
        assert!(c.unknown_keys.is_empty());
        assert!(c.metrics.is_empty());
    }

    #[test]
    fn fractional_interval_and_legacy_list() {
        let c = parse("interval: 0.5\nenabled_metrics: [a_b, c]\nmetrics:\n  c: false\n")
            .expect("valid");
        assert_eq!(c.interval, Duration::from_millis(500));
        assert!(c.has_legacy_list);
        assert_eq!(c.metrics.get("a_b"), Some(&true));
        assert_eq!(c.metrics.get("c"), Some(&false));
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = parse("port: 1\ndevice_type: toaster\n").expect_err("bad type");
        assert_eq!(e.line, Some(2));
        assert_eq!(e.field.as_deref(), Some("device_type"));
        assert_eq!(e.message, "Unsupported device type: toaster");
        assert_eq!(
            e.to_string(),
            "config.yaml:2: device_type: Unsupported device type: toaster \
             (supported: linux, auto, jetson, jetson_orin, jetson_xavier, jetson_nano, raspberry_pi, orange_pi, lattepanda)"
        );

        let e = parse("interval: 0\n").expect_err("zero interval");
        assert_eq!((e.line, e.field.as_deref()), (Some(1), Some("interval")));

        let e =
            parse("device_type: linux\nmetrics:\n  good: true\n  bad: yes\n").expect_err("bool");
        assert_eq!(e.field.as_deref(), Some("metrics.bad"));
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("expected a boolean"), "{}", e.message);

        let e = parse("port: [1\n").expect_err("syntax");
        assert!(e.line.is_some());
        assert_eq!(e.field, None);

        let e = parse("port: 70000\n").expect_err("port range");
        assert_eq!(e.field.as_deref(), Some("port"));

        let e = parse("- a\n- b\n").expect_err("not a mapping");
        assert!(e.message.contains("mapping"));

        let e = parse("metrics:\n  bad-name: true\n").expect_err("name");
        assert_eq!(e.message, "Invalid metric name: bad-name");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn shelly_defaults() {
        assert!(!parse("").expect("valid").shelly.enabled);
        let c = parse("shelly:\n  server_url: http://hub:8766\n").expect("valid");
        assert!(
            c.shelly.enabled,
            "the spec's default inside a shelly section"
        );
        assert_eq!(c.shelly.server_url, "http://hub:8766");
        assert!(parse("shelly:\n  server_url: ftp://x\n").is_err());
    }

    #[test]
    fn unknown_keys_are_reported_not_rejected() {
        let c = parse("my_site: lab-3\nshelly:\n  enabled: false\n  extra: 1\n").expect("valid");
        assert_eq!(c.unknown_keys, ["my_site"]);
    }

    #[test]
    fn tokens_open_the_api() {
        let c = parse("api_token: s3cret\n").expect("valid");
        assert_eq!(c.api_listen(), IpAddr::from([0, 0, 0, 0]));
        assert_eq!(format!("{:?}", c.api_token), "Some(Secret(***))");
        let c = parse("api_token: \"  \"\napi_listen_address: 10.0.0.1\n").expect("valid");
        assert_eq!(c.api_token, None);
        assert_eq!(c.api_listen(), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn ina2xx_sensors() {
        let c = parse("device_type: raspberry_pi\n").expect("valid");
        assert_eq!(c.device_type, DeviceType::RaspberryPi);
        assert_eq!(c.ina2xx, None, "no list: the device type's default applies");
        let c = parse(
            "ina2xx:\n  - name: Board 5V\n    address: 0x41\n    averaging: 64\n  - name: fan\n    chip: ina219\n    bus: 3\n    address: \"0x4f\"\n    shunt_ohms: 0.1\n",
        )
        .expect("valid");
        let sensors = c.ina2xx.expect("listed");
        assert_eq!(sensors[0].name, "board_5v");
        assert_eq!((sensors[0].bus, sensors[0].address), (1, 0x41));
        assert_eq!(sensors[0].settings.averaging, 64);
        assert_eq!(sensors[0].settings.conversion_time_us, 1100);
        assert_eq!((sensors[1].bus, sensors[1].address), (3, 0x4F));
        // Without max_current_amps, the shunt ADC's full scale: 0.32 V / 0.1 Ω.
        assert!(matches!(
            sensors[1].settings.chip,
            ina2xx::Chip::Ina219 { shunt_ohms, max_current_amps }
                if shunt_ohms == 0.1 && (max_current_amps - 3.2).abs() < 1e-9
        ));
        assert_eq!(parse("ina2xx: []\n").expect("valid").ina2xx, Some(vec![]));

        for (text, wanted) in [
            (
                "ina2xx:\n  - name: a\n    address: 0x39\n",
                "address must be 0x40 to 0x4F",
            ),
            (
                "ina2xx:\n  - name: a\n    chip: ina3221\n",
                "unsupported chip",
            ),
            (
                "ina2xx:\n  - name: a\n    chip: ina226\n",
                "needs shunt_ohms",
            ),
            (
                "ina2xx:\n  - name: a\n    shunt_ohms: 0.1\n",
                "own 2 mΩ shunt",
            ),
            (
                "ina2xx:\n  - name: a\n    averaging: 3\n",
                "averaging must be one of",
            ),
            (
                "ina2xx:\n  - name: a\n  - name: A\n",
                "a second sensor named a",
            ),
            ("ina2xx:\n  - name: \"--\"\n", "name must contain"),
            (
                "ina2xx:\n  - name: a\n    chip: ina219\n    shunt_ohms: 0.1\n    conversion_time_us: 140\n",
                "does not apply",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.message.contains(wanted), "{text}: {}", e.message);
            assert_eq!(e.field.as_deref(), Some("ina2xx"));
            assert_eq!(e.line, Some(1));
        }
        let e = parse("ina2xx:\n  - name: a\n    addr: 0x40\n").expect_err("unknown field");
        assert!(e.message.contains("unknown field"), "{}", e.message);
        let e = parse("rapl:\n  enabled: maybe\n").expect_err("not a bool");
        assert_eq!(e.field.as_deref(), Some("rapl.enabled"));
        let c = parse("rapl:\n  enabled: true\npmic:\n  command: /opt/vc/bin/vcgencmd\n")
            .expect("valid");
        assert_eq!(c.rapl, Some(true));
        assert_eq!(c.pmic.command, "/opt/vc/bin/vcgencmd");
    }

    #[test]
    fn remote_write_section() {
        let c = parse(
            "remote_write:\n  url: https://mimir.example/api/v1/push\n  interval: 30\n  basic_auth:\n    username: tenant-1\n    password: pw\n  labels:\n    site: lab-3\n    rack: r1\n  buffer:\n    max_size_mb: 8\n",
        )
        .expect("valid");
        let rw = c.remote_write.expect("section");
        assert_eq!(rw.interval, Duration::from_secs(30));
        assert_eq!(rw.batch_size, 2000);
        assert_eq!(
            rw.labels,
            [
                ("rack".to_owned(), "r1".to_owned()),
                ("site".to_owned(), "lab-3".to_owned())
            ]
        );
        assert!(matches!(&rw.auth, RemoteAuth::Basic { username, .. } if username == "tenant-1"));
        assert_eq!(rw.buffer_max_bytes, 8 * 1024 * 1024);
        assert_eq!(
            format!("{:?}", rw.auth).matches("pw").count(),
            0,
            "secrets stay hidden"
        );
        for (text, field, wanted) in [
            (
                "remote_write:\n  url: ftp://x\n",
                "remote_write.url",
                "http:// or https://",
            ),
            (
                "remote_write:\n  url: http://x\n  interval: 0\n",
                "remote_write.interval",
                "seconds",
            ),
            (
                "remote_write:\n  url: http://x\n  batch_size: 0\n",
                "remote_write.batch_size",
                "from 1",
            ),
            (
                "remote_write:\n  url: http://x\n  labels:\n    hostname: y\n",
                "remote_write.labels",
                "hostname",
            ),
            (
                "remote_write:\n  url: http://x\n  bearer_token: t\n  basic_auth: {username: u, password: p}\n",
                "remote_write.bearer_token",
                "not both",
            ),
            (
                "remote_write:\n  url: http://x\n  tls:\n    cert_file: /c\n",
                "remote_write.tls",
                "go together",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.field.as_deref(), Some(field), "{text}");
            assert!(e.message.contains(wanted), "{text}: {}", e.message);
        }
        let e = parse("remote_write:\n  url: http://x\n  urll: 1\n").expect_err("typo");
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    #[test]
    fn line_lookup() {
        let text = "a: 1\nshelly:\n  # c\n  enabled: true\n  server_url: x\nserver_url: y\n";
        assert_eq!(line_of(text, &["shelly", "server_url"]), Some(5));
        assert_eq!(line_of(text, &["server_url"]), Some(6));
        assert_eq!(line_of(text, &["shelly", "nope"]), None);
    }
}
