//! Measured runs: the energy every source used between a start and a stop.
//!
//! A run opens a window on every meter of the [`Registry`]; stopping it reads the
//! windows back as one [`RunReport`], the object `POST /runs/{id}/stop` answers
//! and `measure --json` prints. A run never stays open by accident: it ends by
//! its stop (`"end": "stop"`, or `"exit"` from `measure`), at its `timeout_s`
//! (`"timeout"`, [`Runs::expire`]), when the daemon shuts down (`"shutdown"`), or,
//! after a crash, at the next start from the journal of open runs written every
//! second (`"crash"`, with its energy up to that checkpoint).
//!
//! Finished runs are appended to `runs.jsonl` beside the config (synced before the
//! stop is answered, so a restart loses none), whole records or nothing; the file
//! is kept under [`MAX_FILE_BYTES`] by dropping its oldest runs, and every run
//! still in it can be found. Each run keeps its readings as a trace (see
//! [`super::Trace`]); a finished run's trace is written to `runs.traces/<id>.trace`,
//! those files together kept under [`MAX_TRACE_BYTES`]. A run is never a metric
//! label: its numbers live here only.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Registry, SourceWindow, TracePoints};
use crate::lock::lock;

/// Runs open at once; one more is refused (429).
pub const MAX_OPEN: usize = 64;
/// Finished runs kept in memory for `GET /runs`.
pub const RECENT: usize = 100;
/// `runs.jsonl` is rewritten without its oldest half once it passes this.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The trace files of finished runs together; the oldest go beyond it.
pub const MAX_TRACE_BYTES: u64 = 64 * 1024 * 1024;
/// Bounds on what a client may give a run.
pub const MAX_NAME: usize = 128;
pub const MAX_LABELS: usize = 16;
pub const MAX_LABEL_VALUE: usize = 256;
/// A run's timeout when none is asked for, and the longest one.
pub const DEFAULT_TIMEOUT_S: f64 = 86_400.0;
pub const MAX_TIMEOUT_S: f64 = 30.0 * 86_400.0;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// `POST /runs/{id}/stop`.
    Stop,
    /// `measure`'s command exited.
    Exit,
    /// Past its `timeout_s`.
    Timeout,
    /// The daemon stopped.
    Shutdown,
    /// The daemon died; recovered from the journal at the next start.
    Crash,
}

/// One source in a run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    pub source: String,
    pub joules: f64,
    /// How far `joules` can be from the true energy, from the readings
    /// themselves (docs/energy.md, "How exact").
    #[serde(default)]
    pub joules_bound: f64,
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
    /// Every `trace_stride`-th reading is in the run's trace (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_stride: Option<u32>,
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
    /// How it ended; absent while it runs (and in records from before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_s: f64,
    /// The command's exit status (`measure`); null for runs of the API.
    pub exit_code: Option<i32>,
    /// Seconds after which it is closed if nobody stops it.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    pub sources: Vec<SourceReport>,
}

fn default_timeout() -> f64 {
    DEFAULT_TIMEOUT_S
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
    /// Seconds after which the run is closed if nobody stops it (default a day).
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

/// A run's trace: per source, seconds since the run started and watts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTrace {
    pub sources: Vec<(String, TracePoints)>,
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
    /// Checks the name, labels and timeout; the message says what is wrong.
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
        if let Some(t) = self.timeout_s
            && !(t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S)
        {
            return Err(RunError::Invalid(format!(
                "timeout_s must be seconds above 0 and at most {MAX_TIMEOUT_S}, got {t}"
            )));
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
    timeout: Duration,
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
    /// The journal holds open runs (so it is cleared when none is left).
    journaled: bool,
    /// What the trace files take, once known.
    trace_bytes: Option<u64>,
}

/// The runs of one daemon (or of one `measure` without a daemon).
#[derive(Debug)]
pub struct Runs {
    registry: Arc<Registry>,
    file: Option<PathBuf>,
    state: Mutex<State>,
}

impl Runs {
    /// Runs on `registry`, recorded in `file` (none: kept in memory only). Runs
    /// the journal says were open when the last daemon died are recorded first
    /// (`"end": "crash"`); the file's newest runs are loaded for `GET /runs`.
    pub fn new(registry: Arc<Registry>, file: Option<PathBuf>) -> Self {
        if let Some(path) = &file {
            recover(path);
        }
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
                journaled: false,
                trace_bytes: None,
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
        self.start_timed(request).map(|(id, _)| id)
    }

    /// [`Runs::start`], with the instant the run opened.
    pub fn start_timed(&self, request: RunRequest) -> Result<(String, Instant), RunError> {
        request.validate()?;
        let mut state = lock(&self.state);
        if state.open.len() >= MAX_OPEN {
            return Err(RunError::TooMany);
        }
        // A reading of every sampled source now, the schedule fast from it:
        // the window opens on that reading.
        let _fast = self.registry.opening();
        self.registry.read_now();
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
            timeout: Duration::from_secs_f64(request.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S)),
        });
        Ok((id.to_string(), at))
    }

    /// The run `id`: energy so far while it runs; any run still in `runs.jsonl`.
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
        if let Some(r) = state
            .unsaved
            .iter()
            .chain(state.recent.iter())
            .find(|r| r.id == id)
        {
            return Ok(r.clone());
        }
        drop(state);
        self.file
            .as_deref()
            .and_then(|f| find_in_file(f, id))
            .ok_or_else(|| RunError::NotFound(id.to_owned()))
    }

    /// The trace of run `id`: its readings so far while it runs, else the trace
    /// file written when it stopped (`None` when there is none).
    pub fn trace(&self, id: &str) -> Result<Option<RunTrace>, RunError> {
        let key = {
            let state = lock(&self.state);
            find_open(&state, id).map(|o| o.id)
        };
        if let Some(key) = key {
            let sources = self
                .registry
                .peek_trace(key)
                .into_iter()
                .map(|(s, t)| (s.to_string(), t))
                .collect();
            return Ok(Some(RunTrace { sources }));
        }
        self.get(id)?;
        Ok(self
            .traces_dir()
            .and_then(|dir| read_trace(&dir.join(format!("{id}.trace"))).ok()))
    }

    /// Stops run `id` as `end` (stop or exit) and records it. A run recorded
    /// already is 409-worthy ([`RunError::Stopped`]); an unknown one is
    /// [`RunError::NotFound`].
    pub fn stop(&self, id: &str, exit_code: Option<i32>, end: End) -> Result<RunReport, RunError> {
        self.stop_timed(id, exit_code, end).map(|(r, _)| r)
    }

    /// [`Runs::stop`], with the instant the run closed.
    pub fn stop_timed(
        &self,
        id: &str,
        exit_code: Option<i32>,
        end: End,
    ) -> Result<(RunReport, Instant), RunError> {
        // A reading of every sampled source now: the window closes on it.
        self.registry.read_now();
        let now = Instant::now();
        self.stop_at(id, exit_code, end, now).map(|r| (r, now))
    }

    fn stop_at(
        &self,
        id: &str,
        exit_code: Option<i32>,
        end: End,
        now: Instant,
    ) -> Result<RunReport, RunError> {
        let mut state = lock(&self.state);
        let (finished, trace) = if let Some(i) = state.unsaved.iter().position(|r| r.id == id) {
            // Its first stop was measured but not recorded: record it now.
            (state.unsaved.remove(i), None)
        } else {
            let Some(i) = state.open.iter().position(|r| r.id.to_string() == id) else {
                let known = state.recent.iter().any(|r| r.id == id)
                    || self
                        .file
                        .as_deref()
                        .and_then(|f| find_in_file(f, id))
                        .is_some();
                return Err(if known {
                    RunError::Stopped(id.to_owned())
                } else {
                    RunError::NotFound(id.to_owned())
                });
            };
            let open = state.open.remove(i);
            let windows = self.registry.close_run(open.id, now);
            let trace = RunTrace {
                sources: windows
                    .iter()
                    .filter_map(|w| Some((w.source.to_string(), w.trace.clone()?)))
                    .collect(),
            };
            let mut finished = report(&open, now, Some(exit_code), windows);
            finished.end = Some(end);
            (finished, Some(trace))
        };
        self.record(&mut state, finished, trace)
    }

    /// Writes a finished run (and its trace) and keeps it among the recent ones;
    /// when it cannot be written it stays stoppable.
    fn record(
        &self,
        state: &mut State,
        finished: RunReport,
        trace: Option<RunTrace>,
    ) -> Result<RunReport, RunError> {
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
            if let (Some(trace), Some(dir)) = (trace, self.traces_dir())
                && trace.sources.iter().any(|(_, t)| !t.points.is_empty())
            {
                match write_trace(&dir, &finished.id, &trace, state.trace_bytes) {
                    Ok(total) => state.trace_bytes = Some(total),
                    Err(e) => {
                        tracing::warn!(run = %finished.id, error = %e, "the run's trace could not be written")
                    }
                }
            }
        }
        if state.recent.len() >= RECENT {
            state.recent.pop_back();
        }
        state.recent.push_front(finished.clone());
        Ok(finished)
    }

    /// Closes every run past its timeout (`"end": "timeout"`); how many.
    pub fn expire(&self, now: Instant) -> usize {
        let due: Vec<String> = lock(&self.state)
            .open
            .iter()
            .filter(|o| now.saturating_duration_since(o.at) >= o.timeout)
            .map(|o| o.id.to_string())
            .collect();
        for id in &due {
            match self.stop_at(id, None, End::Timeout, now) {
                Ok(_) => tracing::warn!(run = %id, "a run reached its timeout_s and was closed"),
                Err(e) => {
                    tracing::warn!(run = %id, error = %e, "a timed-out run could not be recorded")
                }
            }
        }
        due.len()
    }

    /// Closes every open run as `end` (the daemon is stopping).
    pub fn close_all(&self, end: End) {
        let ids: Vec<String> = lock(&self.state)
            .open
            .iter()
            .map(|o| o.id.to_string())
            .collect();
        for id in ids {
            if let Err(e) = self.stop(&id, None, end) {
                tracing::warn!(run = %id, error = %e, "an open run could not be recorded at shutdown");
            }
        }
        self.checkpoint();
    }

    /// Writes every open run, its energy so far, to the journal (at most a
    /// second old when the daemon checkpoints every second); removes it when no
    /// run is open.
    pub fn checkpoint(&self) {
        let Some(path) = self.file.as_deref().map(journal_of) else {
            return;
        };
        let mut state = lock(&self.state);
        if state.open.is_empty() {
            if std::mem::replace(&mut state.journaled, false) {
                let _ = std::fs::remove_file(&path);
            }
            return;
        }
        let now = Instant::now();
        let open: Vec<RunReport> = state
            .open
            .iter()
            .map(|o| report(o, now, None, self.registry.peek_run(o.id, now)))
            .collect();
        match serde_json::to_vec(&serde_json::json!({ "runs": open })) {
            Ok(bytes) => match crate::atomic_file::write_atomically(&path, &bytes) {
                Ok(()) => state.journaled = true,
                Err(e) => tracing::debug!(error = %e, "the runs journal could not be written"),
            },
            Err(e) => tracing::debug!(error = %e, "the runs journal could not be made"),
        }
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

    fn traces_dir(&self) -> Option<PathBuf> {
        self.file.as_deref().map(traces_of)
    }
}

fn find_open<'a>(state: &'a State, id: &str) -> Option<&'a OpenRun> {
    state.open.iter().find(|r| r.id.to_string() == id)
}

/// The journal of open runs beside `runs.jsonl`.
fn journal_of(file: &Path) -> PathBuf {
    file.with_file_name("runs.journal.json")
}

/// The directory of finished runs' traces beside `runs.jsonl`.
fn traces_of(file: &Path) -> PathBuf {
    file.with_file_name("runs.traces")
}

/// Records the runs a journal says were open when the daemon died, as they were
/// at the last checkpoint (`"end": "crash"`), unless `runs.jsonl` has them, and
/// removes the journal.
fn recover(file: &Path) {
    let journal = journal_of(file);
    crate::atomic_file::remove_leftovers(&journal);
    let Ok(bytes) = std::fs::read(&journal) else {
        return;
    };
    #[derive(Deserialize)]
    struct Journal {
        runs: Vec<RunReport>,
    }
    let runs = serde_json::from_slice::<Journal>(&bytes)
        .map(|j| j.runs)
        .unwrap_or_default();
    let mut ok = true;
    for mut run in runs {
        if find_in_file(file, &run.id).is_some() {
            continue;
        }
        run.running = false;
        run.end = Some(End::Crash);
        let mut line = match serde_json::to_vec(&run) {
            Ok(l) => l,
            Err(_) => continue,
        };
        line.push(b'\n');
        match append(file, &line) {
            Ok(()) => {
                tracing::warn!(run = %run.id, "a run open when the daemon died was recorded from its last checkpoint")
            }
            Err(e) => {
                ok = false;
                tracing::error!(run = %run.id, error = %e, "a run open when the daemon died could not be recorded; the journal is kept");
            }
        }
    }
    if ok {
        let _ = std::fs::remove_file(&journal);
    }
}

/// The run `id` in `runs.jsonl`, if it is still there.
fn find_in_file(file: &Path, id: &str) -> Option<RunReport> {
    let text = std::fs::read_to_string(file).ok()?;
    let needle = format!("\"id\":\"{id}\"");
    text.lines()
        .rev()
        .filter(|l| l.contains(&needle))
        .find_map(|l| {
            serde_json::from_str::<RunReport>(l)
                .ok()
                .filter(|r| r.id == id)
        })
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
        end: None,
        started_at: crate::clock::rfc3339(crate::clock::unix_seconds(open.started)),
        duration_s: round((now - open.at).as_secs_f64(), 1e6),
        exit_code: stopped.flatten(),
        timeout_s: open.timeout.as_secs_f64(),
        sources: windows.into_iter().map(source_report).collect(),
    }
}

fn source_report(w: SourceWindow) -> SourceReport {
    SourceReport {
        source: w.source.to_string(),
        joules: round(w.window.joules, 1e4),
        // Rounded up, so rounding never narrows it.
        joules_bound: (w.window.bound * 1e4).ceil() / 1e4,
        mean_watts: w.window.mean_watts().map(|v| round(v, 1e4)),
        peak_watts: w.window.peak.map(|v| round(v, 1e4)),
        samples: w.window.samples,
        total: w.total,
        gap_seconds: round(w.window.gap_seconds, 1e3),
        trace_stride: w.trace.as_ref().map(|t| t.stride).filter(|s| *s > 1),
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

/// The first bytes of a trace file.
const TRACE_MAGIC: &[u8; 10] = b"EMXTRACE1\n";
/// Most sources a trace file may name (a file is read back, so it is bounded).
const MAX_TRACE_SOURCES: usize = 1024;

/// Writes `trace` as `dir/<id>.trace` (atomically), then, when the trace files
/// take more than [`MAX_TRACE_BYTES`] (`known`: their size as last counted),
/// removes the oldest. Returns their size now. The format: the magic, the
/// number of sources (u32), then per source its name (u16 length, UTF-8), its
/// stride and number of points (u32 each) and its points (f32 seconds, f32
/// watts), all little-endian.
fn write_trace(dir: &Path, id: &str, trace: &RunTrace, known: Option<u64>) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = TRACE_MAGIC.to_vec();
    bytes.extend_from_slice(&(trace.sources.len() as u32).to_le_bytes());
    for (source, points) in &trace.sources {
        let name = &source.as_bytes()[..source.len().min(u16::MAX as usize)];
        bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&points.stride.to_le_bytes());
        bytes.extend_from_slice(&(points.points.len() as u32).to_le_bytes());
        for (t, w) in &points.points {
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&w.to_le_bytes());
        }
    }
    crate::atomic_file::write_atomically(&dir.join(format!("{id}.trace")), &bytes)?;
    if let Some(total) = known.map(|k| k + bytes.len() as u64)
        && total <= MAX_TRACE_BYTES
    {
        return Ok(total);
    }
    // Ids grow with time: the smallest are the oldest.
    let mut files: Vec<(u64, PathBuf, u64)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id: u64 = name.strip_suffix(".trace")?.parse().ok()?;
            Some((id, e.path(), e.metadata().ok()?.len()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    for (_, path, len) in files {
        if total <= MAX_TRACE_BYTES {
            break;
        }
        let _ = std::fs::remove_file(path);
        total -= len;
    }
    Ok(total)
}

/// Reads a trace file back; every count is checked against what is left.
fn read_trace(path: &Path) -> std::io::Result<RunTrace> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a trace file");
    let data = std::fs::read(path)?;
    let mut rest = data.strip_prefix(TRACE_MAGIC.as_slice()).ok_or_else(bad)?;
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        if rest.len() < n {
            return Err(bad());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let count = u32_of(take(4)?) as usize;
    if count > MAX_TRACE_SOURCES {
        return Err(bad());
    }
    let mut sources = Vec::with_capacity(count);
    for _ in 0..count {
        let len = take(2)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let stride = u32_of(take(4)?);
        let n = u32_of(take(4)?) as usize;
        let raw = take(n.checked_mul(8).ok_or_else(bad)?)?;
        let points = raw
            .chunks_exact(8)
            .map(|c| {
                (
                    f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        sources.push((name, TracePoints { points, stride }));
    }
    Ok(RunTrace { sources })
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
            timeout_s: None,
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
            timeout_s: None,
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
        let report = runs.stop_at(&id, Some(0), End::Stop, end).expect("stop");
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
        assert_eq!(
            runs.stop(&id, None, End::Stop),
            Err(RunError::Stopped(id.clone()))
        );
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
        let Err(RunError::Storage { .. }) = runs.stop(&id, Some(0), End::Stop) else {
            panic!("the record could not be written");
        };
        // Not lost: listed, found, and not "stopped already".
        assert!(!runs.get(&id).expect("found").running);
        std::fs::create_dir(dir.path().join("later")).expect("mkdir");
        let report = runs
            .stop(&id, None, End::Stop)
            .expect("the second stop records it");
        assert_eq!(report.exit_code, Some(0), "the first stop's report");
        assert_eq!(
            runs.stop(&id, None, End::Stop),
            Err(RunError::Stopped(id.clone()))
        );
        let again = Runs::new(Registry::new(), Some(file));
        assert_eq!(again.list(), vec![report]);
    }

    #[test]
    fn runs_never_leak() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("runs.jsonl");
        let registry = Registry::new();
        let meter = registry.meter("board_power_board", true, |now| {
            Meter::power(Duration::from_millis(10), now)
        });
        let runs = Runs::new(registry.clone(), Some(file.clone()));
        // A timeout: closed and stored as such.
        let short = runs
            .start(RunRequest {
                timeout_s: Some(0.05),
                ..request("short")
            })
            .expect("start");
        assert!(registry.fast(), "a run is open: sources go fast");
        assert_eq!(runs.expire(Instant::now()), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(runs.expire(Instant::now()), 1);
        assert!(!registry.fast());
        let r = runs.get(&short).expect("stored");
        assert_eq!((r.running, r.end), (false, Some(End::Timeout)));
        assert_eq!(
            runs.stop(&short, None, End::Stop),
            Err(RunError::Stopped(short.clone()))
        );
        // A crash: the journal has the run as of the last checkpoint.
        let crashed = runs.start(request("crashed")).expect("start");
        let t0 = Instant::now();
        for i in 0..=10u32 {
            lock(&meter)
                .meter
                .record(t0 + Duration::from_millis(10) * i, 10.0);
        }
        runs.checkpoint();
        assert!(dir.path().join("runs.journal.json").exists());
        drop(runs); // the daemon dies: nothing stored for "crashed"
        let again = Runs::new(Registry::new(), Some(file.clone()));
        let r = again.get(&crashed).expect("recovered");
        assert_eq!((r.running, r.end), (false, Some(End::Crash)));
        assert!(r.sources[0].joules > 0.9, "{r:?}");
        assert!(!dir.path().join("runs.journal.json").exists());
        // Shutdown closes what is open.
        let open = again.start(request("open at shutdown")).expect("start");
        again.close_all(End::Shutdown);
        assert_eq!(again.get(&open).expect("stored").end, Some(End::Shutdown));
    }

    #[test]
    fn every_run_in_the_file_is_found_and_traces_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("runs.jsonl");
        let registry = Registry::new();
        let meter = registry.meter("rapl_power_package", false, |now| {
            Meter::power(Duration::from_millis(10), now)
        });
        let runs = Runs::new(registry.clone(), Some(file.clone()));
        let first = runs.start(request("first")).expect("start");
        let t0 = Instant::now();
        for i in 0..50u32 {
            lock(&meter)
                .meter
                .record(t0 + Duration::from_millis(10) * i, f64::from(i));
        }
        let live = runs.trace(&first).expect("trace").expect("some");
        assert_eq!(live.sources[0].1.points.len(), 50);
        runs.stop(&first, None, End::Stop).expect("stop");
        for i in 0..RECENT + 5 {
            let id = runs.start(request(&format!("r{i}"))).expect("start");
            runs.stop(&id, None, End::Stop).expect("stop");
        }
        // Beyond the recent ones, from the file.
        let r = runs.get(&first).expect("in the file");
        assert_eq!(r.name, "first");
        assert_eq!(
            runs.stop(&first, None, End::Stop),
            Err(RunError::Stopped(first.clone()))
        );
        let trace = runs.trace(&first).expect("trace").expect("written");
        assert_eq!(trace.sources[0].0, "rapl_power_package");
        assert_eq!(trace.sources[0].1.points.len(), 50);
        let (t, w) = trace.sources[0].1.points[49];
        assert!((t - 0.49).abs() < 0.01 && w == 49.0, "{t} {w}");
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
                    timeout_s: None,
                })
                .expect("start");
            runs.stop(&id, None, End::Stop).expect("stop");
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
