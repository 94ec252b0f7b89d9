//! How the exporter reaches the config server: the `--config-server`,
//! `--config-timeout`, `--config-poll-interval`, `--device-id` and
//! `--config-server-token` flags (and their environment variables), checked once at
//! start.

use std::time::Duration;

use crate::cli::SyncArgs;
use crate::config::Secret;
use crate::paths::Paths;

/// The spec's default server; a device that finds nothing there runs on its file.
pub const DEFAULT_URL: &str = "http://localhost:8080";

/// How the exporter reaches the config server (flags and environment).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `http://host:port`, without a trailing slash.
    pub url: String,
    pub device_id: String,
    /// Limit on each request (`CONFIG_TIMEOUT`).
    pub timeout: Duration,
    /// How often the device asks for changes made on the server.
    pub poll_interval: Duration,
    pub token: Option<Secret>,
    /// The URL was set (flag or environment) rather than the spec's default; a
    /// default server that is not there is worth an info line, not a warning.
    pub explicit: bool,
}

/// A flag that cannot be used; the message names it and what it accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error("CONFIG_SERVER_URL must be an http:// URL (or empty to turn syncing off), got {0:?}")]
    Url(String),
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
        if !url.starts_with("http://") {
            return Err(SettingsError::Url(url.to_owned()));
        }
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
            token: args.token.clone().and_then(Secret::new),
            explicit: url != DEFAULT_URL,
        }))
    }

    pub(super) fn config_url(&self) -> String {
        format!("{}/config/{}", self.url, self.device_id)
    }
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
        assert!(s.explicit && s.token.is_none());
        assert_eq!(s.config_url(), "http://cfg:8080/config/orin-01");
        let default = Settings::from_flags(&args(DEFAULT_URL))
            .expect("valid")
            .expect("on");
        assert!(!default.explicit);
        assert_eq!(
            Settings::from_flags(&args("https://cfg")).map(|_| ()),
            Err(SettingsError::Url("https://cfg".into()))
        );
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
