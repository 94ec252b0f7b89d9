//! The second stage of reading the config: [`RawConfig`] validated into the typed
//! [`Config`], one function per section, in the file's order. Every error names
//! the field and the line (through [`Source`]) and says what would be accepted;
//! the spec's messages (`Unsupported device type: X`, `Invalid metric name: X`)
//! are kept exactly.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::raw::{
    RawBasicAuth, RawConfig, RawIna2xx, RawPaths, RawPmic, RawPoll, RawPower, RawRemoteWrite,
    RawShelly, RawTegrastats,
};
use super::{
    BasicCredentials, Config, ConfigError, DEFAULT_JOB, DEFAULT_MAX_METRICS, DEFAULT_PORT,
    DEFAULT_RELOAD_PORT, DEFAULT_SHELLY_URL, DeviceType, Ina2xxSensor, MAX_INTERVAL, MIN_INTERVAL,
    Overrides, PmicConfig, PollTarget, PowerConfig, RemoteAuth, RemoteWriteConfig, Secret,
    ServerTlsConfig, ShellyConfig, Source, TegrastatsConfig, TlsClientConfig,
};
use crate::paths::Paths;
use crate::sample::{is_valid_metric_name, sanitize};
use crate::sources::ina2xx;

/// Validates a parsed file.
pub(super) fn config(
    raw: RawConfig,
    overrides: &Overrides,
    source: &Source<'_>,
) -> Result<Config, ConfigError> {
    let device_type = device_type(raw.device_type.as_deref(), overrides, source)?;
    let interval = interval(raw.interval, source)?;
    let (metrics, has_legacy_list) = metrics(raw.metrics, raw.enabled_metrics, source)?;
    let shelly = shelly(raw.shelly, source)?;
    let listen_address = address("listen_address", raw.listen_address, source)?
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let api_listen_address = address("api_listen_address", raw.api_listen_address, source)?;
    let paths = paths(raw.path, overrides);
    let tegrastats = tegrastats(raw.tegrastats, source)?;
    let hostname = hostname(raw.hostname, source)?;
    let ina2xx = raw
        .ina2xx
        .map(|list| ina2xx_sensors(list, source))
        .transpose()?;
    let pmic = pmic(raw.pmic, source)?;
    let power = power(raw.power, source)?;
    let port = raw.port.unwrap_or(DEFAULT_PORT);
    let remote_write = raw
        .remote_write
        .map(|r| remote_write(r, port, source))
        .transpose()?;
    let telemetry_interval = telemetry_interval(raw.telemetry_interval, source)?;
    logging(raw.log_level.as_deref(), raw.log_format.as_deref(), source)?;
    Ok(Config {
        device_type,
        interval,
        port,
        reload_port: raw.reload_port.unwrap_or(DEFAULT_RELOAD_PORT),
        metric_patterns: {
            let mut patterns: Vec<(super::Glob, bool)> = metrics
                .iter()
                .filter(|(k, _)| super::is_metric_pattern(k))
                // Checked by `metrics` below.
                .filter_map(|(k, v)| Some((super::Glob::new(k).ok()?, *v)))
                .collect();
            // Longest first; equal lengths in a fixed order.
            patterns.sort_by(|a, b| {
                b.0.as_str()
                    .len()
                    .cmp(&a.0.as_str().len())
                    .then(a.0.as_str().cmp(b.0.as_str()))
            });
            patterns
        },
        metrics,
        new_metrics_enabled: raw.new_metrics_enabled.unwrap_or(false),
        max_metrics: max_metrics(raw.max_metrics, source)?,
        metric_style: raw.metric_style.unwrap_or_default(),
        shelly,
        paths,
        listen_address,
        api_listen_address,
        // Tokens from the environment win over the file's.
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
        tls: raw.tls.map(|t| {
            ServerTlsConfig::files(t.cert_file, t.key_file).with_client_ca(t.client_ca_file)
        }),
        hostname,
        tegrastats,
        ina2xx,
        rapl: raw.rapl.and_then(|r| r.enabled),
        pmic,
        power,
        remote_write,
        telemetry_log: raw.telemetry_log,
        telemetry_interval,
        demo: overrides.demo.clone(),
        has_legacy_list,
        unknown_keys: raw.unknown_keys,
        web: web_settings(&overrides.web)?,
    })
}

/// The flags' settings, with the web config file read and checked.
fn web_settings(flags: &super::WebOverrides) -> Result<super::WebSettings, ConfigError> {
    let config = match &flags.config_file {
        Some(path) => Some(super::web::load(path).map_err(|message| ConfigError {
            file: path.clone(),
            line: None,
            field: None,
            message,
            hint: Some(
                "the format of exporter-toolkit's web config file (--web.config.file)".into(),
            ),
        })?),
        None => None,
    };
    let path = flags.telemetry_path.trim();
    Ok(super::WebSettings {
        listen: flags.listen.clone(),
        telemetry_path: if path.is_empty() {
            "/metrics".to_owned()
        } else {
            path.to_owned()
        },
        exporter_metrics: !flags.disable_exporter_metrics,
        collectors: flags.collectors.clone(),
        config,
    })
}

/// `device_type`; `serve --demo` replaces it with the recording's.
fn device_type(
    name: Option<&str>,
    overrides: &Overrides,
    source: &Source<'_>,
) -> Result<DeviceType, ConfigError> {
    if let Some(demo) = &overrides.demo {
        return Ok(demo.device_type);
    }
    let Some(name) = name else {
        return Ok(DeviceType::Linux);
    };
    DeviceType::parse(name.trim()).ok_or_else(|| {
        let mut e = source.error(&["device_type"], format!("Unsupported device type: {name}"));
        e.hint = Some(format!("supported: {}", DeviceType::SUPPORTED.join(", ")));
        e
    })
}

fn max_metrics(value: Option<usize>, source: &Source<'_>) -> Result<usize, ConfigError> {
    match value {
        None => Ok(DEFAULT_MAX_METRICS),
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Some(n) => Err(source.error(
            &["max_metrics"],
            format!("must be from 1 to 1000000, got {n}"),
        )),
    }
}

fn interval(secs: Option<f64>, source: &Source<'_>) -> Result<Duration, ConfigError> {
    let Some(secs) = secs else {
        return Ok(Duration::from_secs(1));
    };
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
    Ok(Duration::from_secs_f64(secs))
}

/// Longest metric id (or pattern) of `metrics:`; real ids are under 100.
pub const MAX_METRIC_KEY: usize = 256;
/// Most glob patterns in `metrics:`.
pub const MAX_METRIC_PATTERNS: usize = 64;

/// `metrics:` with the legacy `enabled_metrics:` list folded in; whether the list
/// was there (the store rewrites it).
fn metrics(
    map: Option<BTreeMap<String, bool>>,
    legacy: Option<Vec<String>>,
    source: &Source<'_>,
) -> Result<(BTreeMap<String, bool>, bool), ConfigError> {
    let mut metrics = map.unwrap_or_default();
    let mut patterns = 0;
    for name in metrics.keys() {
        // A pattern is an id with `*` and `?` in it.
        let as_id = name.replace(['*', '?'], "a");
        if !is_valid_metric_name(&as_id) {
            return Err(source.error(&["metrics", name], format!("Invalid metric name: {name}")));
        }
        if name.len() > MAX_METRIC_KEY {
            return Err(source.error(
                &["metrics", name],
                format!(
                    "Invalid metric name: {}… (a metric id is at most {MAX_METRIC_KEY} characters, got {})",
                    &name[..32],
                    name.len()
                ),
            ));
        }
        if super::is_metric_pattern(name) {
            patterns += 1;
            if let Err(e) = super::Glob::new(name) {
                return Err(source.error(
                    &["metrics", name],
                    format!("Invalid metric name: {name} ({e})"),
                ));
            }
        }
    }
    if patterns > MAX_METRIC_PATTERNS {
        return Err(source.error(
            &["metrics"],
            format!(
                "metrics: at most {MAX_METRIC_PATTERNS} patterns, got {patterns} (each is matched against every id)"
            ),
        ));
    }
    let has_legacy_list = legacy.is_some();
    for name in legacy.unwrap_or_default() {
        if !is_valid_metric_name(&name) {
            return Err(source.error(&["enabled_metrics"], format!("Invalid metric name: {name}")));
        }
        // An explicit entry under `metrics:` wins over the legacy list.
        metrics.entry(name).or_insert(true);
    }
    Ok((metrics, has_legacy_list))
}

/// `shelly:`. The spec's default for `shelly.enabled` is true; it applies when the
/// section is there. Without one, no plug is configured at all.
fn shelly(raw: Option<RawShelly>, source: &Source<'_>) -> Result<ShellyConfig, ConfigError> {
    let section = raw.is_some();
    let shelly = raw.unwrap_or_default();
    let server_url = shelly
        .server_url
        .unwrap_or_else(|| DEFAULT_SHELLY_URL.to_owned());
    if !(server_url.starts_with("http://") || server_url.starts_with("https://")) {
        return Err(source.error(
            &["shelly", "server_url"],
            format!("must be an http:// or https:// URL, got {server_url:?}"),
        ));
    }
    let listen = match shelly.listen {
        None => None,
        Some(l) => Some(l.trim().parse().map_err(|_| {
            source.error(
                &["shelly", "listen"],
                format!("must be an address such as 0.0.0.0:8765, got {l:?}"),
            )
        })?),
    };
    Ok(ShellyConfig {
        enabled: shelly.enabled.unwrap_or(section),
        server_url,
        device_id: shelly
            .device_id
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty()),
        listen,
        secret: shelly.secret.and_then(Secret::new),
        poll: shelly
            .poll
            .unwrap_or_default()
            .into_iter()
            .map(|p| poll_target(p, source))
            .collect::<Result<_, _>>()?,
    })
}

/// `listen_address`, `api_listen_address`.
fn address(
    key: &str,
    value: Option<String>,
    source: &Source<'_>,
) -> Result<Option<IpAddr>, ConfigError> {
    value
        .map(|v| {
            v.trim().parse::<IpAddr>().map_err(|_| {
                source.error(
                    &[key],
                    format!("must be an IP address such as 0.0.0.0 or 127.0.0.1, got {v:?}"),
                )
            })
        })
        .transpose()
}

/// `path:`; the command line's `--path.*` win.
fn paths(raw: Option<RawPaths>, overrides: &Overrides) -> Paths {
    let raw = raw.unwrap_or_default();
    let defaults = Paths::default();
    Paths {
        procfs: overrides
            .procfs
            .clone()
            .or(raw.procfs)
            .unwrap_or(defaults.procfs),
        sysfs: overrides
            .sysfs
            .clone()
            .or(raw.sysfs)
            .unwrap_or(defaults.sysfs),
        rootfs: overrides
            .rootfs
            .clone()
            .or(raw.rootfs)
            .unwrap_or(defaults.rootfs),
    }
}

/// A program to run: trimmed, not empty.
fn command(
    value: Option<String>,
    default: String,
    field: &[&str],
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    match value {
        Some(c) if c.trim().is_empty() => Err(source.error(field, "must not be empty".into())),
        Some(c) => Ok(c.trim().to_owned()),
        None => Ok(default),
    }
}

fn tegrastats(
    raw: Option<RawTegrastats>,
    source: &Source<'_>,
) -> Result<TegrastatsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let defaults = TegrastatsConfig::default();
    Ok(TegrastatsConfig {
        command: command(
            raw.command,
            defaults.command,
            &["tegrastats", "command"],
            source,
        )?,
        args: raw.args.unwrap_or_default(),
        sudo: raw.sudo.unwrap_or(false),
        replay: raw.replay,
        nvpmodel_command: command(
            raw.nvpmodel_command,
            defaults.nvpmodel_command,
            &["tegrastats", "nvpmodel_command"],
            source,
        )?,
    })
}

fn hostname(raw: Option<String>, source: &Source<'_>) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(h) if h.trim().is_empty() || h.contains(['\n', '"', '\\']) => {
            Err(source.error(&["hostname"], format!("not a usable hostname: {h:?}")))
        }
        other => Ok(other.map(|h| h.trim().to_owned())),
    }
}

fn pmic(raw: Option<RawPmic>, source: &Source<'_>) -> Result<PmicConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    Ok(PmicConfig {
        enabled: raw.enabled,
        command: command(raw.command, "vcgencmd".into(), &["pmic", "command"], source)?,
    })
}

fn power(raw: Option<RawPower>, source: &Source<'_>) -> Result<PowerConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let (min, max) = (
        PowerConfig::MIN_SAMPLE_INTERVAL.as_secs_f64(),
        PowerConfig::MAX_SAMPLE_INTERVAL.as_secs_f64(),
    );
    let sample_interval = match raw.sample_interval {
        None => PowerConfig::DEFAULT_SAMPLE_INTERVAL,
        Some(s) if s.is_finite() && (min..=max).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(source.error(
                &["power", "sample_interval"],
                format!("must be {min} to {max} seconds, got {s}"),
            ));
        }
    };
    let run_min = PowerConfig::MIN_RUN_SAMPLE_INTERVAL.as_secs_f64();
    let run_sample_interval = match raw.run_sample_interval {
        // Never slower than the ordinary rate.
        None => PowerConfig::DEFAULT_RUN_SAMPLE_INTERVAL.min(sample_interval),
        Some(s) if s.is_finite() && (run_min..=max).contains(&s) => {
            Duration::from_secs_f64(s).min(sample_interval)
        }
        Some(s) => {
            return Err(source.error(
                &["power", "run_sample_interval"],
                format!("must be {run_min} to {max} seconds, got {s}"),
            ));
        }
    };
    Ok(PowerConfig {
        sample_interval,
        run_sample_interval,
    })
}

fn telemetry_interval(
    secs: Option<f64>,
    source: &Source<'_>,
) -> Result<Option<Duration>, ConfigError> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && (0.1..=86_400.0).contains(&s) => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err(source.error(
            &["telemetry_interval"],
            format!("must be seconds from 0.1 to 86400, got {s}"),
        )),
    }
}

/// `log_level` and `log_format` (read at start, before the file is validated;
/// checked here so `check-config` and a reload report them).
fn logging(
    level: Option<&str>,
    format: Option<&str>,
    source: &Source<'_>,
) -> Result<(), ConfigError> {
    if let Some(level) = level
        && tracing_subscriber::EnvFilter::try_new(level.trim()).is_err()
    {
        return Err(source.error(
            &["log_level"],
            format!("not a log level or filter: {level:?} (error, warn, info, debug, trace)"),
        ));
    }
    if let Some(format) = format
        && !matches!(format.trim(), "text" | "json")
    {
        return Err(source.error(
            &["log_format"],
            format!("must be text or json, got {format:?}"),
        ));
    }
    Ok(())
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

fn remote_write(
    raw: RawRemoteWrite,
    port: u16,
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
    let identity = |key: &str, value: Option<String>| -> Result<Option<String>, ConfigError> {
        match value.map(|v| v.trim().to_owned()) {
            Some(v) if v.is_empty() || v.len() > 256 || v.contains(char::is_control) => Err(err(
                key,
                format!("must be 1 to 256 printable characters, got {v:?}"),
            )),
            other => Ok(other),
        }
    };
    let job = identity("job", raw.job)?.unwrap_or_else(|| DEFAULT_JOB.to_owned());
    let instance = identity("instance", raw.instance)?;
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
        job,
        instance,
        port,
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use super::super::TEMPLATE;
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
    fn metric_patterns_exact_beats_pattern_and_longest_pattern_wins() {
        let c = parse(
            "new_metrics_enabled: true\nmetrics:\n  host_cpu_core*_usage_percent: false\n  host_cpu_core1*_usage_percent: true\n  host_cpu_core12_usage_percent: false\n  host_temp_?pu_celsius: false\n",
        )
        .expect("valid");
        assert!(!c.is_enabled("host_cpu_core3_usage_percent"), "the pattern");
        assert!(
            c.is_enabled("host_cpu_core10_usage_percent"),
            "the longer pattern"
        );
        assert!(
            !c.is_enabled("host_cpu_core12_usage_percent"),
            "the exact id"
        );
        assert!(!c.is_enabled("host_temp_gpu_celsius"));
        assert!(
            c.is_enabled("host_temp_soc_celsius"),
            "new ids: new_metrics_enabled"
        );
        assert!(c.lists("host_cpu_core7_usage_percent"));
        assert!(!c.lists("host_ram_used_mb"));
        let e = parse("metrics:\n  host_*-x: true\n").expect_err("bad pattern");
        assert!(e.message.contains("Invalid metric name"), "{e}");
        for (p, id, m) in [
            ("a*", "a", true),
            ("*", "anything", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*_celsius", "host_temp_cpu_celsius", true),
        ] {
            assert_eq!(super::super::glob_match(p, id), m, "{p} {id}");
        }
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
            (rw.job.as_str(), rw.instance.as_deref(), rw.port),
            ("edge-metrics-exporter", None, 9102)
        );
        let named = parse(
            "port: 9200\nremote_write:\n  url: http://x\n  job: edge\n  instance: pi-07.lab:9200\n",
        )
        .expect("valid")
        .remote_write
        .expect("section");
        assert_eq!(
            (named.job.as_str(), named.instance.as_deref(), named.port),
            ("edge", Some("pi-07.lab:9200"), 9200)
        );
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
                "remote_write:\n  url: http://x\n  job: \"\"\n",
                "remote_write.job",
                "1 to 256",
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
}
