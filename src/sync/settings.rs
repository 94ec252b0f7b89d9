//! How the exporter reaches the config server: the `--config-server`,
//! `--config-timeout`, `--config-poll-interval`, `--device-id` and
//! `--config-server-token` flags (and their environment variables), checked once at
//! start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use crate::config::Secret;
use crate::lock::lock;
use crate::paths::Paths;

/// How the exporter reaches the central config server (`config-server`).
#[derive(Debug, Args, Clone)]
pub struct SyncArgs {
    /// The config server; an empty value or `off` runs on the local file alone.
    #[arg(
        long = "config-server",
        env = "CONFIG_SERVER_URL",
        value_name = "URL",
        default_value = "http://localhost:8080"
    )]
    pub url: String,

    /// Time limit of each request to the config server, seconds.
    #[arg(
        long = "config-timeout",
        env = "CONFIG_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 5.0
    )]
    pub timeout: f64,

    /// How often to ask the config server for changes, seconds.
    #[arg(
        long = "config-poll-interval",
        env = "CONFIG_POLL_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 30.0
    )]
    pub poll_interval: f64,

    /// This device's id at the config server (default: the hostname).
    #[arg(long = "device-id", env = "DEVICE_ID")]
    pub device_id: Option<String>,

    /// Token for the config server (the admin token, or this device's own from
    /// `config-server token create`). Prefer the environment variable.
    #[arg(
        long = "config-server-token",
        env = "CONFIG_SERVER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// CA certificates (PEM) the config server's certificate must chain to, for an
    /// `https://` URL. Default: the system's roots.
    #[arg(
        long = "config-server-ca-file",
        env = "CONFIG_SERVER_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<PathBuf>,
}

/// The spec's default server; a device that finds nothing there runs on its file.
pub const DEFAULT_URL: &str = "http://localhost:8080";

/// How the exporter reaches the config server (flags and environment).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    pub url: String,
    pub device_id: String,
    /// Limit on each request (`CONFIG_TIMEOUT`).
    pub timeout: Duration,
    /// How often the device asks for changes made on the server.
    pub poll_interval: Duration,
    /// The token sent: from the flags, else the one this device got by enrolling
    /// (kept in [`token_path`] beside the config).
    pub token: TokenSlot,
    /// The URL was set (flag or environment) rather than the spec's default; a
    /// default server that is not there is worth an info line, not a warning.
    pub explicit: bool,
    /// Keeps the connection to the server open between requests; trusts
    /// `CONFIG_SERVER_CA_FILE` (or the system's roots) for `https://`.
    pub client: crate::net::client::Client,
}

/// A flag that cannot be used; the message names it and what it accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "CONFIG_SERVER_URL must be an http:// or https:// URL (or empty to turn syncing off), got {0:?}"
    )]
    Url(String),
    #[error("CONFIG_SERVER_CA_FILE: {0}")]
    Tls(String),
    #[error("{what} must be a number of seconds from {min} to 86400, got {value}")]
    Seconds {
        what: &'static str,
        min: f64,
        value: f64,
    },
    #[error(
        "the device id {0:?} may hold only letters, digits, '.', '_' and '-' (set --device-id or DEVICE_ID)"
    )]
    DeviceId(String),
}

impl Settings {
    /// The settings the flags ask for; `None` when syncing is off (an empty URL,
    /// `off` or `none`). The device id defaults to the machine's hostname.
    pub fn from_flags(args: &SyncArgs) -> Result<Option<Settings>, SettingsError> {
        let url = args.url.trim().trim_end_matches('/');
        if url.is_empty() || url.eq_ignore_ascii_case("off") || url.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let https = url.starts_with("https://");
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            return Err(SettingsError::Url(url.to_owned()));
        }
        let tls = match (&args.ca_file, https) {
            (Some(ca), true) => Some(
                crate::net::tls::client(&crate::config::TlsClientConfig {
                    ca_file: Some(ca.clone()),
                    ..Default::default()
                })
                .map_err(|e| SettingsError::Tls(e.to_string()))?,
            ),
            _ => None,
        };
        let seconds = |what: &'static str, value: f64, min: f64| {
            if value.is_finite() && value >= min && value <= 86_400.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(SettingsError::Seconds { what, min, value })
            }
        };
        let device_id = args
            .device_id
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map_or_else(|| Paths::default().hostname(), str::to_owned);
        if !is_device_id(&device_id) {
            return Err(SettingsError::DeviceId(device_id));
        }
        Ok(Some(Settings {
            url: url.to_owned(),
            device_id,
            timeout: seconds("CONFIG_TIMEOUT", args.timeout, 0.1)?,
            poll_interval: seconds("CONFIG_POLL_INTERVAL", args.poll_interval, 0.1)?,
            token: TokenSlot::new(args.token.clone().and_then(Secret::new)),
            explicit: url != DEFAULT_URL,
            client: crate::net::client::Client::new(tls),
        }))
    }

    /// Uses the token this device got by enrolling, when no token was given and
    /// the file beside the config has one.
    pub fn load_enrolled_token(&self, config: &Path) {
        if self.token.get().is_some() {
            return;
        }
        let path = token_path(config);
        if let Some(token) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| Secret::new(t.trim().to_owned()))
        {
            tracing::info!(path = %path.display(), "using the token this device got by enrolling");
            self.token.set(token, Some(path));
        } else {
            self.token.remember_file(path);
        }
    }

    pub(super) fn config_url(&self) -> String {
        format!("{}/config/{}", self.url, self.device_id)
    }
}

/// Where a device keeps the token it got by enrolling: `<config>.token`.
pub fn token_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().unwrap_or_default().to_os_string();
    name.push(".token");
    config.with_file_name(name)
}

/// The config-server token of a device; shared by the clones of [`Settings`], as
/// an enrolment sets it while the exporter runs.
#[derive(Debug, Clone, Default)]
pub struct TokenSlot(Arc<Mutex<(Option<Secret>, Option<PathBuf>)>>);

impl TokenSlot {
    pub fn new(token: Option<Secret>) -> TokenSlot {
        TokenSlot(Arc::new(Mutex::new((token, None))))
    }

    pub fn get(&self) -> Option<Secret> {
        lock(&self.0).0.clone()
    }

    fn set(&self, token: Secret, file: Option<PathBuf>) {
        *lock(&self.0) = (Some(token), file);
    }

    fn remember_file(&self, file: PathBuf) {
        lock(&self.0).1 = Some(file);
    }

    /// Keeps the token the server handed out on enrolment: saved (mode 0600)
    /// before it is used, so a restart sends it too.
    pub fn enrolled(&self, token: &str) {
        let Some(secret) = Secret::new(token.trim().to_owned()) else {
            return;
        };
        let mut slot = lock(&self.0);
        if slot.0.is_some() {
            return;
        }
        if let Some(path) = &slot.1 {
            match save_token(path, &secret) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "enrolled at the config server; token saved")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "enrolled, but the token cannot be saved: this device will be refused after a restart")
                }
            }
        }
        slot.0 = Some(secret);
    }
}

/// Writes the token to `path` atomically, readable by this user only: the file
/// is made with mode 0600 first, and the atomic write keeps a file's mode.
fn save_token(path: &Path, token: &Secret) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    crate::atomic_file::write_atomically(path, format!("{}\n", token.expose()).as_bytes())
}

/// Device ids are host names: letters, digits, `.`, `_`, `-`; 1 to 128 characters;
/// not `.` or `..` (which mean something else in a path).
pub fn is_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> SyncArgs {
        SyncArgs {
            url: url.to_owned(),
            timeout: 5.0,
            poll_interval: 30.0,
            device_id: Some("orin-01".into()),
            token: Some("  ".into()),
            ca_file: None,
        }
    }

    #[test]
    fn flags_checked_once() {
        for off in ["", "off", "NONE", " / "] {
            assert_eq!(
                Settings::from_flags(&args(off)).map(|s| s.is_none()),
                Ok(true)
            );
        }
        let s = Settings::from_flags(&args("http://cfg:8080/"))
            .expect("valid")
            .expect("on");
        assert_eq!(
            (s.url.as_str(), s.device_id.as_str()),
            ("http://cfg:8080", "orin-01")
        );
        assert!(s.explicit && s.token.get().is_none());
        assert_eq!(s.config_url(), "http://cfg:8080/config/orin-01");
        let default = Settings::from_flags(&args(DEFAULT_URL))
            .expect("valid")
            .expect("on");
        assert!(!default.explicit);
        assert_eq!(
            Settings::from_flags(&args("ftp://cfg")).map(|_| ()),
            Err(SettingsError::Url("ftp://cfg".into()))
        );
        let tls = Settings::from_flags(&args("https://cfg:8443"))
            .expect("valid")
            .expect("on");
        assert_eq!(tls.config_url(), "https://cfg:8443/config/orin-01");
        let mut missing_ca = args("https://cfg");
        missing_ca.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            Settings::from_flags(&missing_ca),
            Err(SettingsError::Tls(e)) if e.contains("/nonexistent/ca.pem")
        ));
        let mut slow = args("http://cfg");
        slow.timeout = 0.0;
        assert_eq!(
            Settings::from_flags(&slow)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err("CONFIG_TIMEOUT must be a number of seconds from 0.1 to 86400, got 0".to_owned())
        );
        for id in [".", "..", "a/b", ""] {
            assert!(!is_device_id(id), "{id:?}");
        }
        assert!(is_device_id("orin-01.lab_3"));
        let mut bad = args("http://cfg");
        bad.device_id = Some("a/b".into());
        assert!(matches!(
            Settings::from_flags(&bad),
            Err(SettingsError::DeviceId(id)) if id == "a/b"
        ));
    }
}
