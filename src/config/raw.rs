//! The first stage of reading the config: `config.yaml` as serde sees it. Every
//! key is optional and documented here; defaults and checks are the second stage
//! (`validate`). Keys this version does not know are kept in the file and listed in
//! [`RawConfig::unknown_keys`]; which keys it knows is read from these structs
//! themselves ([`known_keys`]), so the list cannot fall behind them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Source};
use crate::exposition::MetricStyle;

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
    /// Most metric ids `metrics:` may hold; ids seen beyond it are not added nor
    /// served (default 5000).
    pub max_metrics: Option<usize>,
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
    /// How often power sources that can be read fast are sampled.
    pub power: Option<RawPower>,
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
    /// Top-level keys this version does not know (kept in the file, reported
    /// once at load, so a typo does not go unnoticed).
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
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
    /// The `job` label of every pushed series (default `edge-metrics-exporter`).
    pub job: Option<String>,
    /// The `instance` label of every pushed series (default `<hostname>:<port>`).
    pub instance: Option<String>,
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
pub struct RawPower {
    /// Seconds between readings of the Jetson rails in sysfs and the INA2xx
    /// sensors (default 0.1, from 0.01), independent of `interval`.
    pub sample_interval: Option<f64>,
    /// Seconds between those readings while a measured run is open (default
    /// 0.01, from 0.001), never faster than a chip has a new reading.
    pub run_sample_interval: Option<f64>,
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

/// Parses YAML text into [`RawConfig`]. An empty file (or only comments) is the
/// empty config.
pub fn parse_raw(text: &str, source: &Source<'_>) -> Result<RawConfig, ConfigError> {
    let value: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| source.yaml_error(&e))?;
    match value {
        yaml_serde::Value::Null => Ok(RawConfig::default()),
        yaml_serde::Value::Mapping(map) => {
            // Typed a second time from the text (not the value) so errors keep
            // their field path and line.
            let mut raw: RawConfig =
                yaml_serde::from_str(text).map_err(|e| source.yaml_error(&e))?;
            let known = known_keys();
            raw.unknown_keys = map
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| !known.contains(k))
                .map(str::to_owned)
                .collect();
            Ok(raw)
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

/// The known key closest to `key`, when it is close enough to be a typo: at most
/// two edits away (one for keys of up to four letters).
pub fn did_you_mean(key: &str) -> Option<&'static str> {
    let limit = if key.len() <= 4 { 1 } else { 2 };
    known_keys()
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// An unknown top-level key, as warnings and `check-config` name it.
pub fn describe_unknown(key: &str) -> String {
    match did_you_mean(key) {
        Some(k) => format!("{key} (did you mean {k}?)"),
        None => key.to_owned(),
    }
}

/// Levenshtein distance over characters, case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The top-level keys [`RawConfig`] reads, as serde names them.
pub fn known_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(fields_of::<RawConfig>)
}

/// The field names serde's derive gives a struct: it hands them to the
/// deserializer it is asked to read from, and this one reads nothing else.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

/// The one way out of [`FieldNames`]: an error once the names are known.
#[derive(Debug)]
struct Introspected;

impl std::fmt::Display for Introspected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names read")
    }
}

impl std::error::Error for Introspected {}

impl serde::de::Error for Introspected {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Introspected
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = Introspected;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Introspected> {
        *self.0 = fields;
        Err(Introspected)
    }

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Introspected> {
        Err(Introspected)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(did_you_mean("intervall"), Some("interval"));
        assert_eq!(did_you_mean("Metric_Style"), Some("metric_style"));
        assert_eq!(did_you_mean("remote-write"), Some("remote_write"));
        assert_eq!(did_you_mean("prt"), Some("port"));
        assert_eq!(did_you_mean("something_else"), None);
        assert_eq!(
            describe_unknown("intervall"),
            "intervall (did you mean interval?)"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn known_keys_come_from_the_struct() {
        let keys = known_keys();
        for key in [
            "device_type",
            "interval",
            "metrics",
            "shelly",
            "remote_write",
            "log_format",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert!(
            !keys.contains(&"unknown_keys"),
            "a skipped field is not a key"
        );
        // Every key the shipped template sets is one this version reads.
        let template: yaml_serde::Value =
            yaml_serde::from_str(super::super::TEMPLATE).expect("template");
        for key in template.as_mapping().expect("mapping").keys() {
            let key = key.as_str().expect("string key");
            assert!(keys.contains(&key), "template key {key}");
        }
    }
}
