//! Measured runs: the energy every source used between a start and a stop.
//!
//! A run opens a window on every meter of the [`Registry`]; stopping it reads the
//! windows back as one [`RunReport`], the object `POST /runs/{id}/stop` answers
//! and `measure --json` prints. Finished runs are appended to `runs.jsonl` beside
//! the config (synced before the stop is answered, so a restart loses none) and
//! the file is kept under [`MAX_FILE_BYTES`] by dropping its oldest runs. A run is
//! never a metric label: its numbers live here only.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Registry, SourceWindow};
use crate::lock::lock;

/// Runs open at once; one more is refused (429).
pub const MAX_OPEN: usize = 64;
/// Finished runs kept in memory for `GET /runs`.
pub const RECENT: usize = 100;
/// `runs.jsonl` is rewritten without its oldest half once it passes this.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Bounds on what a client may give a run.
pub const MAX_NAME: usize = 128;
pub const MAX_LABELS: usize = 16;
pub const MAX_LABEL_VALUE: usize = 256;

/// One source in a run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    pub source: String,
    pub joules: f64,
    /// Energy over the time measured; absent when the source gave no reading.
    pub mean_watts: Option<f64>,
    pub peak_watts: Option<f64>,
    pub samples: u64,
    /// Whether the source measures a whole device (module input, board sensor,
    /// wall plug), so its energy is the device's total, never a sum of rails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub total: bool,
    /// Time left out because the source gave no reading for over 3 periods.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_seconds: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// A run, running or finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_s: f64,
    /// The command's exit status (`measure`); null for runs of the API.
    pub exit_code: Option<i32>,
    pub sources: Vec<SourceReport>,
}

impl RunReport {
    /// The sources that measure a whole device.
    pub fn totals(&self) -> impl Iterator<Item = &SourceReport> {
        self.sources.iter().filter(|s| s.total)
    }
}

/// What a client asks for in `POST /runs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RunError {
    #[error("{0}")]
    Invalid(String),
    #[error("{MAX_OPEN} runs are open already; stop one first")]
    TooMany,
    #[error("no run with id {0}")]
    NotFound(String),
    #[error("run {0} has stopped already")]
    Stopped(String),
    #[error("could not record the run in {path}: {error}")]
    Storage { path: String, error: String },
}

impl RunRequest {
    /// Checks the name and labels; the message says what is wrong.
    pub fn validate(&self) -> Result<(), RunError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(RunError::Invalid("name must not be empty".into()));
        }
        if self.name.chars().count() > MAX_NAME {
            return Err(RunError::Invalid(format!(
                "name is longer than {MAX_NAME} characters"
            )));
        }
        if self.name.chars().any(char::is_control) {
            return Err(RunError::Invalid(
                "name must not contain control characters".into(),
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(RunError::Invalid(format!(
                "at most {MAX_LABELS} labels, got {}",
                self.labels.len()
            )));
        }
        for (k, v) in &self.labels {
            let mut chars = k.chars();
            let valid = k.len() <= 64
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(RunError::Invalid(format!(
                    "label name {k:?} must match [a-zA-Z_][a-zA-Z0-9_]* (at most 64 characters)"
                )));
            }
            if v.chars().count() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
                return Err(RunError::Invalid(format!(
                    "label {k}: the value must be at most {MAX_LABEL_VALUE} characters, without control characters"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct OpenRun {
    id: u64,
    name: String,
    labels: BTreeMap<String, String>,
    started: SystemTime,
    at: Instant,
}

#[derive(Debug)]
struct State {
    open: Vec<OpenRun>,
    recent: VecDeque<RunReport>,
    /// Runs stopped whose record could not be written (a full disk): the next
    /// stop of each writes it again.
    unsaved: Vec<RunReport>,
    last_id: u64,
    /// A storage failure was logged; the next success says it is over.
    failing: bool,
}

/// The runs of one daemon (or of one `measure` without a daemon).
#[derive(Debug)]
pub struct Runs {
    registry: Arc<Registry>,
    file: Option<PathBuf>,
    state: Mutex<State>,
}

impl Runs {
    /// Runs on `registry`, recorded in `file` (none: kept in memory only). The
    /// file's newest runs are loaded for `GET /runs`.
    pub fn new(registry: Arc<Registry>, file: Option<PathBuf>) -> Self {
        let recent = file.as_deref().map(load).unwrap_or_default();
        let last_id = recent
            .iter()
            .filter_map(|r| r.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Runs {
            registry,
            file,
            state: Mutex::new(State {
                open: Vec::new(),
                recent,
                unsaved: Vec::new(),
                last_id,
                failing: false,
            }),
        }
    }

    /// Where finished runs go, beside the config file.
    pub fn file_beside(config_path: &Path) -> PathBuf {
        config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("runs.jsonl")
    }

    /// Opens a run; its id is the time it opened in Unix milliseconds (made
    /// unique), so ids grow across restarts.
    pub fn start(&self, request: RunRequest) -> Result<String, RunError> {
        request.validate()?;
        let mut state = lock(&self.state);
        if state.open.len() >= MAX_OPEN {
            return Err(RunError::TooMany);
        }
        let started = SystemTime::now();
        let millis = crate::clock::unix_seconds(started) * 1000.0;
        let id = (millis as u64).max(state.last_id + 1);
        state.last_id = id;
        let at = Instant::now();
        self.registry.open_run(id, at);
        state.open.push(OpenRun {
            id,
            name: request.name.trim().to_owned(),
            labels: request.labels,
            started,
            at,
        });
        Ok(id.to_string())
    }

    /// The run `id`: energy so far while it runs.
    pub fn get(&self, id: &str) -> Result<RunReport, RunError> {
        let state = lock(&self.state);
        if let Some(open) = find_open(&state, id) {
            let now = Instant::now();
            return Ok(report(
                open,
                now,
                None,
                self.registry.peek_run(open.id, now),
            ));
        }
        state
            .unsaved
            .iter()
            .chain(state.recent.iter())
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| RunError::NotFound(id.to_owned()))
    }

    /// Stops run `id` and records it. A run recorded already is 409-worthy
    /// ([`RunError::Stopped`]); an unknown one is [`RunError::NotFound`].
    pub fn stop(&self, id: &str, exit_code: Option<i32>) -> Result<RunReport, RunError> {
        self.stop_at(id, exit_code, Instant::now())
    }

    fn stop_at(
        &self,
        id: &str,
        exit_code: Option<i32>,
        now: Instant,
    ) -> Result<RunReport, RunError> {
        let mut state = lock(&self.state);
        let finished = if let Some(i) = state.unsaved.iter().position(|r| r.id == id) {
            // Its first stop was measured but not recorded: record it now.
            state.unsaved.remove(i)
        } else {
            let Some(i) = state.open.iter().position(|r| r.id.to_string() == id) else {
                return Err(if state.recent.iter().any(|r| r.id == id) {
                    RunError::Stopped(id.to_owned())
                } else {
                    RunError::NotFound(id.to_owned())
                });
            };
            let open = state.open.remove(i);
            report(
                &open,
                now,
                Some(exit_code),
                self.registry.close_run(open.id, now),
            )
        };
        if let Some(path) = &self.file {
            let mut line = serde_json::to_vec(&finished).map_err(|e| RunError::Storage {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            line.push(b'\n');
            if let Err(e) = append(path, &line) {
                if !std::mem::replace(&mut state.failing, true) {
                    tracing::error!(path = %path.display(), error = %e, run = %finished.id, "cannot record a stopped run; it stays stoppable, and the next stop writes it again");
                }
                state.unsaved.push(finished);
                return Err(RunError::Storage {
                    path: path.display().to_string(),
                    error: e.to_string(),
                });
            }
            if std::mem::replace(&mut state.failing, false) {
                tracing::info!(path = %path.display(), "stopped runs are recorded again");
            }
        }
        if state.recent.len() >= RECENT {
            state.recent.pop_back();
        }
        state.recent.push_front(finished.clone());
        Ok(finished)
    }

    /// Open runs (newest first), then finished ones (newest first).
    pub fn list(&self) -> Vec<RunReport> {
        let state = lock(&self.state);
        let now = Instant::now();
        let mut all: Vec<RunReport> = state
            .open
            .iter()
            .rev()
            .map(|o| report(o, now, None, self.registry.peek_run(o.id, now)))
            .collect();
        all.extend(state.unsaved.iter().rev().cloned());
        all.extend(state.recent.iter().cloned());
        all
    }

    pub fn open_count(&self) -> usize {
        lock(&self.state).open.len()
    }
}

fn find_open<'a>(state: &'a State, id: &str) -> Option<&'a OpenRun> {
    state.open.iter().find(|r| r.id.to_string() == id)
}

/// The report of `open` at `now`: still running, or `stopped` with the
/// command's `exit_code` (if a command ran).
fn report(
    open: &OpenRun,
    now: Instant,
    stopped: Option<Option<i32>>,
    windows: Vec<SourceWindow>,
) -> RunReport {
    RunReport {
        id: open.id.to_string(),
        name: open.name.clone(),
        labels: open.labels.clone(),
        running: stopped.is_none(),
        started_at: crate::clock::rfc3339(crate::clock::unix_seconds(open.started)),
        duration_s: round((now - open.at).as_secs_f64(), 1e3),
        exit_code: stopped.flatten(),
        sources: windows.into_iter().map(source_report).collect(),
    }
}

fn source_report(w: SourceWindow) -> SourceReport {
    SourceReport {
        source: w.source.to_string(),
        joules: round(w.window.joules, 1e4),
        mean_watts: w.window.mean_watts().map(|v| round(v, 1e4)),
        peak_watts: w.window.peak.map(|v| round(v, 1e4)),
        samples: w.window.samples,
        total: w.total,
        gap_seconds: round(w.window.gap_seconds, 1e3),
    }
}

/// Rounds to `1/scale` (reports are read by people; the meters keep full precision).
fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

/// The newest [`RECENT`] runs of a `runs.jsonl`, newest first; lines that do not
/// parse (a crash mid-append) are skipped.
fn load(path: &Path) -> VecDeque<RunReport> {
    crate::atomic_file::remove_leftovers(path);
    let Ok(text) = std::fs::read_to_string(path) else {
        return VecDeque::new();
    };
    let mut runs: VecDeque<RunReport> = VecDeque::new();
    for line in text.lines().rev() {
        if runs.len() >= RECENT {
            break;
        }
        if let Ok(run) = serde_json::from_str::<RunReport>(line) {
            runs.push_back(run);
        }
    }
    runs
}

/// Appends one run's line and syncs it, whole or not at all; past
/// [`MAX_FILE_BYTES`] the file is rewritten (atomically) with its newer half.
fn append(path: &Path, line: &[u8]) -> std::io::Result<()> {
    crate::atomic_file::append_line(path, line)?;
    if std::fs::metadata(path)?.len() > MAX_FILE_BYTES {
        let text = std::fs::read(path)?;
        let keep_from = text.len().saturating_sub((MAX_FILE_BYTES / 2) as usize);
        let start = text[keep_from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| keep_from + i + 1);
        // A failed trim keeps the longer file; the run is recorded either way.
        if let Err(e) = crate::atomic_file::write_atomically(path, &text[start..]) {
            tracing::warn!(path = %path.display(), error = %e, "could not trim the runs file");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Meter;
    use std::time::Duration;

    fn request(name: &str) -> RunRequest {
        RunRequest {
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn validation_says_what_is_wrong() {
        assert!(request("resnet50 batch 8").validate().is_ok());
        for (req, want) in [
            (request("  "), "empty"),
            (request(&"x".repeat(200)), "longer than"),
            (request("a\nb"), "control"),
        ] {
            let err = req.validate().expect_err("invalid").to_string();
            assert!(err.contains(want), "{err}");
        }
        let mut labels = BTreeMap::new();
        labels.insert("0bad".to_owned(), "v".to_owned());
        let err = RunRequest {
            name: "x".into(),
            labels,
        }
        .validate()
        .expect_err("bad label");
        assert!(err.to_string().contains("label name"));
    }

    #[test]
    fn a_run_reports_each_source_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("runs.jsonl");
        let registry = Registry::new();
        let meter = registry.meter("jetson_power_input", true, |now| {
            Meter::power(Duration::from_millis(10), now)
        });
        let runs = Runs::new(registry.clone(), Some(file.clone()));
        let t0 = Instant::now();
        lock(&meter).meter.record(t0, 10.0);
        let id = runs.start(request("job")).expect("start");
        let opened = Instant::now();
        // 10 W readings every 10 ms for 200 ms after the run opened.
        for i in 1..=20u32 {
            lock(&meter)
                .meter
                .record(opened + Duration::from_millis(10) * i, 10.0);
        }
        assert!(runs.get(&id).expect("running").running);
        let end = opened + Duration::from_millis(200);
        let report = runs.stop_at(&id, Some(0), end).expect("stop");
        assert!(!report.running);
        assert!((report.duration_s - 0.2).abs() < 0.01, "{report:?}");
        let source = &report.sources[0];
        assert_eq!(source.source, "jetson_power_input");
        assert!(source.total);
        assert_eq!(source.samples, 20);
        // 10 W for the 200 ms (and the microseconds between opening and `opened`).
        assert!((source.joules - 2.0).abs() < 0.01, "{report:?}");
        assert_eq!(source.mean_watts, Some(10.0));
        assert_eq!(source.peak_watts, Some(10.0));
        assert_eq!(runs.stop(&id, None), Err(RunError::Stopped(id.clone())));
        assert_eq!(runs.get("123"), Err(RunError::NotFound("123".to_owned())));
        // Another daemon on the same file lists it, and its ids keep growing.
        let again = Runs::new(Registry::new(), Some(file));
        assert_eq!(again.list(), vec![report]);
        let next = again.start(request("next")).expect("start");
        assert!(next.parse::<u64>().expect("id") > id.parse::<u64>().expect("id"));
    }

    #[test]
    fn a_stop_that_could_not_be_recorded_stays_stoppable() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Its directory is not there yet: the record cannot be written.
        let file = dir.path().join("later").join("runs.jsonl");
        let runs = Runs::new(Registry::new(), Some(file.clone()));
        let id = runs.start(request("job")).expect("start");
        let Err(RunError::Storage { .. }) = runs.stop(&id, Some(0)) else {
            panic!("the record could not be written");
        };
        // Not lost: listed, found, and not "stopped already".
        assert!(!runs.get(&id).expect("found").running);
        std::fs::create_dir(dir.path().join("later")).expect("mkdir");
        let report = runs.stop(&id, None).expect("the second stop records it");
        assert_eq!(report.exit_code, Some(0), "the first stop's report");
        assert_eq!(runs.stop(&id, None), Err(RunError::Stopped(id.clone())));
        let again = Runs::new(Registry::new(), Some(file));
        assert_eq!(again.list(), vec![report]);
    }

    #[test]
    fn open_runs_are_bounded() {
        let runs = Runs::new(Registry::new(), None);
        for i in 0..MAX_OPEN {
            runs.start(request(&format!("r{i}"))).expect("start");
        }
        assert_eq!(runs.start(request("one more")), Err(RunError::TooMany));
        assert_eq!(runs.list().len(), MAX_OPEN);
    }

    #[test]
    fn the_file_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("runs.jsonl");
        let runs = Runs::new(Registry::new(), Some(file.clone()));
        let mut labels = BTreeMap::new();
        labels.insert("note".to_owned(), "x".repeat(MAX_LABEL_VALUE));
        for _ in 0..6000 {
            let id = runs
                .start(RunRequest {
                    name: "r".into(),
                    labels: labels.clone(),
                })
                .expect("start");
            runs.stop(&id, None).expect("stop");
        }
        let len = std::fs::metadata(&file).expect("file").len();
        assert!(len <= MAX_FILE_BYTES, "{len}");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<RunReport>(l).is_ok())
        );
        assert_eq!(Runs::new(Registry::new(), Some(file)).list().len(), RECENT);
    }
}
