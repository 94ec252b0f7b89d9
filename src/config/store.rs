//! The live configuration and the one writer of `config.yaml`.
//!
//! Readers take the live [`Config`] lock-free (`live()`). Every change to the file
//! goes through [`Store`], which holds one lock across read-edit-validate-write, so
//! concurrent API requests and auto-discovery cannot interleave. A write is: edit the
//! text on disk (comments kept, see `edit`), validate the result as a whole config,
//! write a temp file in the same directory, fsync it, rename it over the file, fsync
//! the directory. Only then is the in-memory config swapped and the change
//! acknowledged, so a crash leaves the old or the new file and never loses an
//! acknowledged change.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::edit::{self, Edit, EditError};
use super::{Config, ConfigError, Overrides, Source, TEMPLATE};
use crate::atomic_file::{Replaced, remove_leftovers, replace_if_unchanged, write_atomically};
use crate::lock::lock;

/// Where the running configuration came from (reported by `/health` and
/// `/metrics/list` as `config_source` / `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Local,
    /// The config server's, as last fetched.
    Server,
}

impl ConfigSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::Local => "local",
            ConfigSource::Server => "server",
        }
    }
}

/// What happened while opening the config, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenNote {
    /// No file existed; a commented starter file was written.
    WroteStarter,
    /// No file existed and none could be written; running on the embedded default.
    StarterNotWritten(String),
    /// The legacy `enabled_metrics:` list was rewritten as `metrics:`.
    ConvertedLegacyList,
    /// The legacy list could not be rewritten (it still works in memory).
    LegacyNotConverted(String),
    /// Temp files a crash left beside the config were removed.
    RemovedLeftovers(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The spec's message for an id the exporter does not know.
    #[error("Invalid metric name: {0}")]
    UnknownMetric(String),
    #[error("{path} cannot be edited: {source}; fix the file or POST /reload")]
    Disk { path: PathBuf, source: EditError },
    #[error("the change would make the config invalid: {0}")]
    Invalid(ConfigError),
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The result of a successful reload.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub old: Arc<Config>,
    pub new: Arc<Config>,
}

/// Where the store reports the changes it makes to the file for the daemon
/// itself (auto-discovery, `POST /metrics/enable`); the config server link queues
/// them for the server. Called under the store's writer lock, after the file, the
/// live config and the document hold the change and before it is acknowledged, so
/// no acknowledged change can be missed and none is reported twice.
pub trait LocalChanges: Send + Sync + std::fmt::Debug {
    fn metrics_changed(&self, changes: &BTreeMap<String, bool>);
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    overrides: Overrides,
    live: ArcSwap<Config>,
    /// The file's content as last loaded or written, for `GET /config`.
    document: ArcSwap<yaml_serde::Value>,
    /// Held across every read-modify-write of the file: the one writer.
    writer: Mutex<()>,
    /// Told of the daemon's own changes to the file (the config server link).
    local_changes: std::sync::OnceLock<Arc<dyn LocalChanges>>,
    /// The running config matches the config server's (else: local only).
    from_server: std::sync::atomic::AtomicBool,
}

/// The starter file written for a newcomer: the template, with new metrics enabled
/// so the first run shows data.
pub fn starter_text() -> String {
    TEMPLATE.replace(
        "new_metrics_enabled: false",
        "new_metrics_enabled: true  # this starter file shows every metric at once",
    )
}

impl Store {
    /// Loads `path`, or writes the starter file when it does not exist.
    pub fn open(
        path: PathBuf,
        overrides: Overrides,
    ) -> Result<(Store, Vec<OpenNote>), ConfigError> {
        let mut notes = Vec::new();
        // A crash during a write can leave a temp file; nothing writes yet.
        let removed = remove_leftovers(&path);
        if removed > 0 {
            notes.push(OpenNote::RemovedLeftovers(removed));
        }
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let text = starter_text();
                match write_atomically(&path, text.as_bytes()) {
                    Ok(()) => notes.push(OpenNote::WroteStarter),
                    Err(e) => notes.push(OpenNote::StarterNotWritten(e.to_string())),
                }
                text
            }
            Err(e) => return Err(read_error(&path, &e)),
        };
        let config = Config::parse(
            &text,
            &overrides,
            &Source {
                file: &path,
                text: &text,
            },
        )?;
        let store = Store {
            document: ArcSwap::from_pointee(parse_document(&text)),
            live: ArcSwap::from_pointee(config),
            path,
            overrides,
            writer: Mutex::new(()),
            local_changes: std::sync::OnceLock::new(),
            from_server: std::sync::atomic::AtomicBool::new(false),
        };
        if store.live().has_legacy_list {
            let guard = store.lock();
            match store.write_edits(&guard, &[Edit::ConvertLegacyList]) {
                Ok(_) => notes.push(OpenNote::ConvertedLegacyList),
                Err(e) => notes.push(OpenNote::LegacyNotConverted(e.to_string())),
            }
        }
        Ok((store, notes))
    }

    /// Validates `path` without writing anything (`check-config`).
    pub fn check(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|e| read_error(path, &e))?;
        Config::parse(
            &text,
            overrides,
            &Source {
                file: path,
                text: &text,
            },
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn live(&self) -> Arc<Config> {
        self.live.load_full()
    }

    pub fn source(&self) -> ConfigSource {
        if self.from_server.load(std::sync::atomic::Ordering::Relaxed) {
            ConfigSource::Server
        } else {
            ConfigSource::Local
        }
    }

    pub fn set_source(&self, source: ConfigSource) {
        self.from_server.store(
            source == ConfigSource::Server,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Reports every later metric change made through the store to `listener`.
    pub fn report_local_changes(&self, listener: Arc<dyn LocalChanges>) {
        let _ = self.local_changes.set(listener);
    }

    /// Under the writer lock: shows `decide` the file's document (as JSON) and, when
    /// it returns a new one, makes the file say that (comments kept where the keys
    /// did not change), then runs `committed`, still under the lock. Returns whether
    /// the file changed. No other change to the file can happen in between, and
    /// `committed` does not run when `decide` declines or the write fails.
    pub fn replace_with(
        &self,
        decide: impl FnOnce(&serde_json::Value) -> Option<serde_json::Value>,
        committed: impl FnOnce(),
    ) -> Result<bool, StoreError> {
        let guard = self.lock();
        let text = self.read_text()?;
        let local = super::yaml_to_json(&parse_document(&text));
        let local = if local.is_object() {
            local
        } else {
            serde_json::Value::Object(Default::default())
        };
        let Some(new) = decide(&local) else {
            return Ok(false);
        };
        if new == local {
            committed();
            return Ok(false);
        }
        let mapping = match yaml_serde::to_value(&new) {
            Ok(yaml_serde::Value::Mapping(m)) => m,
            _ => {
                return Err(StoreError::Disk {
                    path: self.path.clone(),
                    source: EditError::NotAMapping,
                });
            }
        };
        self.write_edits(&guard, &[Edit::Replace(mapping)])?;
        committed();
        Ok(true)
    }

    pub fn document(&self) -> Arc<yaml_serde::Value> {
        self.document.load_full()
    }

    /// Re-reads the file. An invalid file is rejected with its reason and the
    /// running config stays; the file is left as it is.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        self.reload_checked(|_| Ok(()))
            .map(|(reloaded, ())| reloaded)
    }

    /// [`Store::reload`] that also runs `prepare` on the new config before it
    /// replaces the running one (the TLS setups are built there): when either
    /// fails, nothing changes, neither the live config nor the document.
    pub fn reload_checked<T>(
        &self,
        prepare: impl FnOnce(&Config) -> Result<T, ConfigError>,
    ) -> Result<(Reloaded, T), ConfigError> {
        let guard = self.lock();
        let text = fs::read_to_string(&self.path).map_err(|e| read_error(&self.path, &e))?;
        let new = Config::parse(
            &text,
            &self.overrides,
            &Source {
                file: &self.path,
                text: &text,
            },
        )?;
        let prepared = prepare(&new)?;
        self.document.store(Arc::new(parse_document(&text)));
        let new = Arc::new(new);
        let old = self.live.swap(new.clone());
        if new.has_legacy_list
            && let Err(e) = self.write_edits(&guard, &[Edit::ConvertLegacyList])
        {
            tracing::warn!(error = %e, "could not rewrite enabled_metrics as metrics");
        }
        Ok((
            Reloaded {
                old,
                new: self.live(),
            },
            prepared,
        ))
    }

    /// Enables or disables known metrics. Every name is checked before anything
    /// changes; on success the file on disk already holds the change.
    pub fn set_metrics(&self, changes: &BTreeMap<String, bool>) -> Result<Arc<Config>, StoreError> {
        let guard = self.lock();
        let live = self.live();
        // An id a pattern covers may get its own entry (which then beats it).
        if let Some(unknown) = changes.keys().find(|id| !live.lists(id)) {
            return Err(StoreError::UnknownMetric(unknown.clone()));
        }
        self.write_edits(&guard, &[Edit::SetMetrics(changes.clone())])?;
        Ok(self.live())
    }

    /// Records ids seen for the first time with the `new_metrics_enabled` value.
    /// Returns how many were new. When the file cannot be written the ids are still
    /// known in memory (and the error is returned for the log).
    pub fn add_discovered(&self, ids: &[Arc<str>]) -> Result<usize, StoreError> {
        let guard = self.lock();
        let live = self.live();
        let new: BTreeMap<String, bool> = ids
            .iter()
            .filter(|id| !live.lists(id))
            .map(|id| (id.to_string(), live.new_metrics_enabled))
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let count = new.len();
        match self.write_edits(&guard, &[Edit::SetMetrics(new.clone())]) {
            Ok(()) => Ok(count),
            Err(e) => {
                let mut config = (*self.live()).clone();
                config.metrics.extend(new);
                self.live.store(Arc::new(config));
                Err(e)
            }
        }
    }

    /// The file's text; the starter file when it was deleted under us.
    fn read_text(&self) -> Result<String, StoreError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(starter_text()),
            Err(source) => Err(StoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock leaves no partial state behind (the file
        // is replaced atomically or not at all), so a poisoned lock is still usable.
        lock(&self.writer)
    }

    /// Applies `edits` to the file on disk and to the live config. Callers hold the
    /// writer lock (the guard parameter proves it).
    ///
    /// The lock orders the daemon's own writes. A person saving the file at the
    /// same moment is caught by the exchange in `replace_if_unchanged`: their
    /// version is handed back and the edit is redone on it, so a hand edit is never
    /// overwritten, whenever it is saved.
    fn write_edits(&self, _guard: &MutexGuard<'_, ()>, edits: &[Edit]) -> Result<(), StoreError> {
        // Saves by hand a few milliseconds apart can keep a write retrying; it
        // gives up (and acknowledges nothing) after this long.
        const PATIENCE: std::time::Duration = std::time::Duration::from_millis(800);
        let deadline = std::time::Instant::now() + PATIENCE;
        let write_error = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        // The text to edit, and what the file holds as far as this writer knows
        // (a file deleted under us is edited from the starter text).
        let (mut text, mut on_disk) = match fs::read(&self.path) {
            Ok(bytes) => (String::from_utf8_lossy(&bytes).into_owned(), bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (starter_text(), Vec::new()),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let (edited, parsed) = loop {
            let edited = edit::apply(&text, edits).map_err(|source| StoreError::Disk {
                path: self.path.clone(),
                source,
            })?;
            // The file as a whole must still be a config the daemon accepts.
            let parsed = Config::parse(
                &edited.text,
                &self.overrides,
                &Source {
                    file: &self.path,
                    text: &edited.text,
                },
            )
            .map_err(StoreError::Invalid)?;
            match replace_if_unchanged(&self.path, edited.text.as_bytes(), &on_disk)
                .map_err(write_error)?
            {
                Replaced::Done => break (edited, parsed),
                Replaced::Changed(theirs) if std::time::Instant::now() < deadline => {
                    tracing::debug!(path = %self.path.display(), "config.yaml was saved meanwhile; the change is redone on that version");
                    text = String::from_utf8_lossy(&theirs).into_owned();
                    on_disk = theirs;
                }
                Replaced::Changed(_) => {
                    return Err(write_error(io::Error::other(
                        "the file keeps changing under the exporter",
                    )));
                }
            }
        };
        if edited.regenerated {
            tracing::warn!(
                path = %self.path.display(),
                "config.yaml could not be edited in place; it was rewritten and its comments are lost"
            );
        }
        // Only the edited keys change in memory: other edits a user made on disk
        // take effect at the next reload, as they would without this write.
        let mut config = (*self.live()).clone();
        for edit in edits {
            match edit {
                Edit::SetMetrics(changes) => config.metrics.extend(changes.clone()),
                Edit::ConvertLegacyList => config.has_legacy_list = false,
                // The whole file changed (a config from the server): the daemon
                // reloads right after, this keeps readers consistent until then.
                Edit::Replace(_) => config = parsed.clone(),
            }
        }
        self.live.store(Arc::new(config));
        self.document.store(Arc::new(parse_document(&edited.text)));
        // The change is acknowledged only once it is also reported (queued for the
        // config server, when one is in use), and only after the document holds it:
        // a registration that reads the document then sees it or gets it queued.
        if let Some(listener) = self.local_changes.get() {
            for edit in edits {
                if let Edit::SetMetrics(changes) = edit {
                    listener.metrics_changed(changes);
                }
            }
        }
        Ok(())
    }
}

fn parse_document(text: &str) -> yaml_serde::Value {
    yaml_serde::from_str(text).unwrap_or(yaml_serde::Value::Null)
}

fn read_error(path: &Path, e: &io::Error) -> ConfigError {
    ConfigError {
        file: path.to_owned(),
        line: None,
        field: None,
        message: format!("cannot read the file: {e}"),
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, text: Option<&str>) -> (Store, Vec<OpenNote>) {
        let path = dir.join("config.yaml");
        if let Some(text) = text {
            fs::write(&path, text).expect("write fixture");
        }
        Store::open(path, Overrides::default()).expect("open")
    }

    #[test]
    fn missing_file_gets_the_starter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, notes) = open(dir.path(), None);
        assert_eq!(notes, [OpenNote::WroteStarter]);
        assert!(store.live().new_metrics_enabled);
        let text = fs::read_to_string(dir.path().join("config.yaml")).expect("written");
        assert!(text.starts_with("# edge-metrics-exporter configuration."));
        assert!(text.contains("new_metrics_enabled: true"));
    }

    #[test]
    fn legacy_list_is_rewritten_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, notes) = open(
            dir.path(),
            Some("# mine\nenabled_metrics:\n  - a_x\nport: 9102\n"),
        );
        assert_eq!(notes, [OpenNote::ConvertedLegacyList]);
        assert_eq!(store.live().metrics.get("a_x"), Some(&true));
        let text = fs::read_to_string(store.path()).expect("read");
        assert!(text.starts_with("# mine\n"));
        assert!(!text.contains("enabled_metrics"));
    }

    #[test]
    fn set_metrics_validates_everything_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = open(
            dir.path(),
            Some("metrics:\n  a_x: false  # note\n  b_x: false\n"),
        );
        let before = fs::read_to_string(store.path()).expect("read");
        let bad: BTreeMap<String, bool> = [("a_x".into(), true), ("zz".into(), true)].into();
        assert!(matches!(store.set_metrics(&bad), Err(StoreError::UnknownMetric(n)) if n == "zz"));
        assert_eq!(fs::read_to_string(store.path()).expect("read"), before);
        assert!(!store.live().metrics["a_x"]);

        let good: BTreeMap<String, bool> = [("a_x".into(), true)].into();
        store.set_metrics(&good).expect("set");
        assert!(store.live().metrics["a_x"]);
        assert_eq!(
            fs::read_to_string(store.path()).expect("read"),
            "metrics:\n  a_x: true  # note\n  b_x: false\n"
        );
    }

    #[test]
    fn discovery_adds_with_the_configured_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = open(
            dir.path(),
            Some("new_metrics_enabled: false\nmetrics:\n  a_x: true\n"),
        );
        let ids: Vec<Arc<str>> = vec!["a_x".into(), "b_x".into()];
        assert_eq!(store.add_discovered(&ids).expect("write"), 1);
        assert_eq!(store.add_discovered(&ids).expect("write"), 0);
        let text = fs::read_to_string(store.path()).expect("read");
        assert_eq!(
            text,
            "new_metrics_enabled: false\nmetrics:\n  a_x: true\n  b_x: false\n"
        );
    }

    #[test]
    fn invalid_reload_keeps_the_running_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = open(dir.path(), Some("interval: 2\n"));
        fs::write(store.path(), "interval: -1\n").expect("write");
        let err = store.reload().expect_err("invalid");
        assert_eq!(err.field.as_deref(), Some("interval"));
        assert_eq!(store.live().interval.as_secs(), 2);
        assert_eq!(
            fs::read_to_string(store.path()).expect("read"),
            "interval: -1\n"
        );
    }

    #[test]
    fn writes_go_through_symlinks_and_keep_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.yaml");
        fs::write(&real, "metrics:\n  a_x: false\n").expect("write");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).expect("chmod");
        let link = dir.path().join("config.yaml");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let (store, _) = Store::open(link.clone(), Overrides::default()).expect("open");
        store
            .set_metrics(&[("a_x".to_string(), true)].into())
            .expect("set");
        assert!(
            fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_to_string(&real).expect("read"),
            "metrics:\n  a_x: true\n"
        );
        assert_eq!(
            fs::metadata(&real).expect("meta").permissions().mode() & 0o777,
            0o640
        );
    }
}
