//! The exporter's side of the config server: fetch at start and on reload, poll for
//! changes made on the server, and send local changes in the background.
//!
//! * **Fetch** (start, `POST /reload`, every poll): `GET /config/{device_id}` within
//!   `CONFIG_TIMEOUT`, with the last revision as `If-None-Match`. A new revision is
//!   validated, then written to `config.yaml` (comments kept where keys did not
//!   change), so the device restarts on it without the server. A server that is
//!   down, slow, answers an error or sends something invalid changes nothing: the
//!   device runs on its file and says `local`.
//! * **Local changes** (auto-discovery, `POST /metrics/enable`) are queued by the
//!   store in the same step that writes the file, in `<config>.sync.json` (so the
//!   queue survives restarts), and sent in order by a background task, one
//!   `PUT` per change with `If-Match` on the revision they were made against; a
//!   failed send is retried with backoff until it lands. Edits made to the file by
//!   hand are found at start and reload (the file against the last server revision
//!   plus the queue) and queued the same way.
//! * **Both sides changed** (a `412`, or a poll finding a new revision while
//!   changes wait): the server's config is taken and each waiting change is
//!   replayed on top of it, except where the server changed the same key (or
//!   metric) to a different value: there the server wins, and the local value is
//!   logged and kept in `/health` under `config_server.conflicts`. The server keeps
//!   every revision in its history. Nothing is dropped silently.
//! * A device the server does not know registers itself with its whole file.
//!
//! Keys that belong to the machine (`doc::LOCAL_ONLY`: tokens, filesystem roots,
//! the plug hub secret) are never sent and never replaced.
//!
//! Here: [`ConfigSync`], the exchanges and the background task. `settings` checks
//! the flags, `client` makes one request and reads its answer, `queue` is the
//! persisted queue the store reports local changes to; `doc` (the pure functions on
//! config documents: diff, patch, rebase) is `config::doc`, shared with the server.

mod client;
mod queue;
mod settings;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use hyper::header;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Store;
pub use crate::config::doc;
use crate::config::store::ConfigSource;
use crate::lock::lock;
use client::{Answer, request};
use doc::Doc;
use queue::{ConflictRecord, Pending, State};

pub use client::{ExchangeError, MAX_CONFIG_BYTES};
pub use queue::{Queue, state_path};
pub use settings::{Settings, SettingsError, SyncArgs, TokenSlot, is_device_id, token_path};

/// The header a config server's 201 carries an enrolled device's new token in.
pub const DEVICE_TOKEN_HEADER: &str = "x-device-token";
/// With each poll the device reports the config revision it runs on…
pub const REVISION_HEADER: &str = "x-config-revision";
/// …its collectors that are failing (comma-separated names)…
pub const FAILING_HEADER: &str = "x-failing-collectors";
/// …and how many local changes wait to reach the server.
pub const PENDING_HEADER: &str = "x-pending-changes";
/// The longest wait between two attempts to reach a server that is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Conflicts kept for `/health`.
const CONFLICTS_KEPT: usize = 50;

static SYNC_PENDING: crate::sample::Family = crate::sample::Family::gauge(
    "edge_exporter_config_sync_pending_changes",
    "Local config changes waiting to reach the config server",
    "",
);
static SYNC_UP: crate::sample::Family = crate::sample::Family::gauge(
    "edge_exporter_config_sync_up",
    "Whether the config server answered the last request (1) or not (0)",
    "",
);

/// `/health`'s `config_server` object.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SyncHealth {
    pub url: String,
    pub device_id: String,
    /// Whether the last request was answered; `None` before the first.
    pub reachable: Option<bool>,
    /// The server revision the file is based on.
    pub revision: Option<u64>,
    pub pending_changes: usize,
    /// Unix seconds of the last answer.
    pub last_contact: Option<f64>,
    pub last_error: Option<String>,
    /// The last conflicts the server won, newest first: key, local and server
    /// values, the revision and when.
    pub conflicts: Vec<Value>,
}

#[derive(Debug, Default)]
struct Status {
    reachable: Option<bool>,
    last_contact: Option<f64>,
    last_error: Option<String>,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// A hook the daemon gives: the names of the collectors failing now.
pub type FailingCollectors = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// A hook the daemon gives: apply the file (rebuild collectors) after the sync
/// changed it.
pub type OnChange = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Debug)]
pub struct ConfigSync {
    settings: Settings,
    queue: Arc<Queue>,
    store: Arc<Store>,
    status: Mutex<Status>,
    /// One exchange with the server at a time (the loop and `POST /reload`).
    exchange: tokio::sync::Mutex<()>,
    failing: std::sync::OnceLock<Failing>,
}

struct Failing(FailingCollectors);

impl std::fmt::Debug for Failing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Failing(..)")
    }
}

impl ConfigSync {
    /// Attaches the queue to the store, so every metric change from now on is queued.
    pub fn new(settings: Settings, store: Arc<Store>) -> Arc<ConfigSync> {
        settings.load_enrolled_token(store.path());
        let queue = Arc::new(Queue::load(
            state_path(store.path()),
            &settings.url,
            &settings.device_id,
        ));
        store.report_local_changes(queue.clone());
        Arc::new(ConfigSync {
            settings,
            queue,
            store,
            status: Mutex::new(Status::default()),
            exchange: tokio::sync::Mutex::new(()),
            failing: std::sync::OnceLock::new(),
        })
    }

    /// Where the polls' report finds the failing collectors (set once, after
    /// the collectors exist).
    pub fn report_failing(&self, failing: FailingCollectors) {
        let _ = self.failing.set(Failing(failing));
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        lock(&self.status)
    }

    /// Queues edits of the file the exporter did not make (by hand, or while it
    /// was stopped): the file against the last server revision plus the queue.
    pub fn record_drift(&self) {
        let queue = self.queue.clone();
        let result = self.store.replace_with(
            |local| {
                let local = doc::shareable(local.as_object()?);
                let mut state = queue.lock();
                let drift = doc::diff(&state.expected(), &local);
                if !drift.is_empty() {
                    tracing::info!(keys = ?drift.keys().collect::<Vec<_>>(), "local config changes queued for the config server");
                    state.push(drift);
                    queue.persist(&state);
                }
                None
            },
            || {},
        );
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not compare config.yaml with the config server's");
        }
    }

    /// Asks the server for this device's config now (start, `POST /reload`), and
    /// writes a new revision to the file. Returns whether the file changed.
    pub async fn fetch(&self) -> bool {
        let _one = self.exchange.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> bool {
        let (revision, pending) = {
            let state = self.queue.lock();
            (
                state.revision,
                state.queue.len() + usize::from(state.register),
            )
        };
        let mut headers = Vec::new();
        if let Some(r) = revision {
            headers.push((header::IF_NONE_MATCH, format!("\"{r}\"")));
            headers.push((
                header::HeaderName::from_static(REVISION_HEADER),
                r.to_string(),
            ));
        }
        // What the fleet view shows of this device.
        let failing = self.failing.get().map(|f| (f.0)()).unwrap_or_default();
        headers.push((
            header::HeaderName::from_static(FAILING_HEADER),
            failing.join(","),
        ));
        headers.push((
            header::HeaderName::from_static(PENDING_HEADER),
            pending.to_string(),
        ));
        match request(&self.settings, Method::GET, headers, Bytes::new()).await {
            Ok(Answer::NotModified) => {
                self.reached(ConfigSource::Server);
                false
            }
            Ok(Answer::Config(revision, server)) => self.adopt(revision, server),
            Ok(Answer::NotFound) => {
                let mut state = self.queue.lock();
                if state.revision.is_some() {
                    tracing::warn!(device_id = %self.settings.device_id, "the config server no longer knows this device; registering it again");
                }
                state.revision = None;
                state.synced = None;
                state.register = true;
                self.queue.persist(&state);
                drop(state);
                // Not the server's config (yet): the file is the only one.
                self.reached(ConfigSource::Local);
                self.queue.wake.notify_one();
                false
            }
            Ok(Answer::Refused(reason)) => {
                self.failed(reason);
                false
            }
            Err(e) => {
                self.failed(e.to_string());
                false
            }
            Ok(Answer::Stored(_) | Answer::Stale) => {
                self.failed(ExchangeError::Unexpected("GET").to_string());
                false
            }
        }
    }

    /// Takes the server's revision: waiting local changes are replayed on top of
    /// it (the server wins where both changed a key), the file is rewritten, and
    /// only then is the new state saved.
    fn adopt(&self, revision: u64, server: Doc) -> bool {
        let queue = self.queue.clone();
        let next: std::cell::RefCell<Option<State>> = std::cell::RefCell::new(None);
        let result = self.store.replace_with(
            |local| {
                let local = local.as_object()?;
                let state = queue.lock();
                let base = state.synced.clone().unwrap_or_default();
                let mut new = state.clone();
                new.queue.clear();
                let mut conflicts = Vec::new();
                for pending in &state.queue {
                    let (kept, lost) = doc::rebase(&pending.patch, &base, &server);
                    conflicts.extend(lost);
                    if !kept.is_empty() {
                        new.queue.push_back(Pending {
                            patch: kept,
                            ..pending.clone()
                        });
                    }
                }
                for c in conflicts {
                    tracing::warn!(key = %c.key, local = %c.local, server = %c.server, revision, "config conflict: the config server changed this too; its value is kept");
                    new.conflicts.push(ConflictRecord {
                        conflict: c,
                        revision,
                        at: crate::clock::unix_now(),
                    });
                }
                let excess = new.conflicts.len().saturating_sub(CONFLICTS_KEPT);
                new.conflicts.drain(..excess);
                new.revision = Some(revision);
                new.synced = Some(server.clone());
                new.register = false;
                let target = doc::with_local(&new.expected(), local);
                *next.borrow_mut() = Some(new);
                Some(Value::Object(target))
            },
            // Saved under the store's lock, after the file, before any other change.
            || {
                if let Some(new) = next.borrow_mut().take() {
                    let mut state = queue.lock();
                    *state = new;
                    queue.persist(&state);
                }
            },
        );
        match result {
            Ok(changed) => {
                if changed {
                    tracing::info!(
                        revision,
                        "config from the config server written to config.yaml"
                    );
                }
                self.reached(ConfigSource::Server);
                changed
            }
            Err(e) => {
                self.failed(format!(
                    "the config server's revision {revision} was not used: {e}"
                ));
                false
            }
        }
    }

    /// Sends waiting changes in order until the queue is empty or the server
    /// cannot be reached. Returns whether the file changed (after a conflict).
    async fn deliver(&self) -> Result<bool, ExchangeError> {
        let _one = self.exchange.lock().await;
        let mut changed = false;
        // A server that keeps answering 412 (or forgetting the device) must not
        // keep this loop spinning.
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > 20 {
                return Err(ExchangeError::KeepsRefusing);
            }
            let registering = self.queue.lock().revision.is_none();
            let (body, doc_sent, upto, precondition) = {
                let mut state = self.queue.lock();
                match state.revision {
                    None if state.queue.is_empty() && !state.register => return Ok(changed),
                    None => {
                        // Register with the whole file (it holds every queued change).
                        let local = crate::config::yaml_to_json(&self.store.document());
                        let doc = doc::shareable(
                            local.as_object().cloned().as_ref().unwrap_or(&Doc::new()),
                        );
                        let upto = state.queue.back().map_or(0, |p| p.seq);
                        (
                            Value::Object(doc.clone()),
                            doc,
                            upto,
                            (header::IF_NONE_MATCH, "*".to_owned()),
                        )
                    }
                    Some(revision) => {
                        let Some(head) = state.queue.front().cloned() else {
                            return Ok(changed);
                        };
                        let synced = state.synced.clone().unwrap_or_default();
                        let doc = doc::applied(&synced, &head.patch);
                        if doc == synced {
                            state.queue.pop_front();
                            self.queue.persist(&state);
                            continue;
                        }
                        (
                            Value::Object(doc.clone()),
                            doc,
                            head.seq,
                            (header::IF_MATCH, format!("\"{revision}\"")),
                        )
                    }
                }
            };
            let body = Bytes::from(body.to_string());
            let headers = vec![
                precondition,
                (header::CONTENT_TYPE, "application/json".to_owned()),
            ];
            match request(&self.settings, Method::PUT, headers, body).await? {
                Answer::Stored(revision) => {
                    let mut state = self.queue.lock();
                    state.revision = Some(revision);
                    state.synced = Some(doc_sent);
                    state.register = false;
                    state.queue.retain(|p| p.seq > upto);
                    self.queue.persist(&state);
                    drop(state);
                    tracing::debug!(revision, "local config change stored on the config server");
                    self.reached(ConfigSource::Server);
                }
                Answer::Stale => {
                    // Someone else wrote first: take theirs, replay ours, go on.
                    changed |= self.fetch_locked().await;
                    if self.status().reachable != Some(true) {
                        return Err(ExchangeError::Refetch(
                            self.status().last_error.clone().unwrap_or_default(),
                        ));
                    }
                }
                Answer::NotFound if registering => {
                    return Err(ExchangeError::NotAConfigServer);
                }
                Answer::NotFound => {
                    // Deleted on the server: register again with the whole file.
                    let mut state = self.queue.lock();
                    state.revision = None;
                    state.synced = None;
                    state.register = true;
                    self.queue.persist(&state);
                }
                Answer::Refused(reason) => {
                    // The server will never take this change: say so and go on
                    // with the next one (it stays in config.yaml).
                    tracing::error!(
                        reason,
                        "the config server refused a local change; it stays local"
                    );
                    let mut state = self.queue.lock();
                    state.queue.retain(|p| p.seq > upto);
                    state.register = false;
                    self.queue.persist(&state);
                    self.status().last_error = Some(format!("refused: {reason}"));
                }
                Answer::NotModified | Answer::Config(..) => {
                    return Err(ExchangeError::Unexpected("PUT"));
                }
            }
        }
    }

    fn reached(&self, source: ConfigSource) {
        self.store.set_source(source);
        let mut status = self.status();
        if status.reachable == Some(false) {
            tracing::info!(url = %self.settings.url, "config server reachable again");
        }
        status.reachable = Some(true);
        status.last_contact = Some(crate::clock::unix_now());
        status.failures = 0;
        status.next_attempt = None;
        status.last_error = None;
    }

    fn failed(&self, reason: String) {
        self.store.set_source(ConfigSource::Local);
        let mut status = self.status();
        if status.reachable != Some(false) {
            if self.settings.explicit {
                tracing::warn!(url = %self.settings.url, reason, "config server unavailable; running on the local config.yaml");
            } else {
                tracing::info!(url = %self.settings.url, reason, "no config server at the default URL; running on the local config.yaml (CONFIG_SERVER_URL= turns syncing off)");
            }
        } else {
            tracing::debug!(reason, "config server still unavailable");
        }
        status.reachable = Some(false);
        status.failures = status.failures.saturating_add(1);
        let backoff =
            Duration::from_secs(1u64 << status.failures.min(6).saturating_sub(1)).min(MAX_BACKOFF);
        status.next_attempt = Some(Instant::now() + backoff);
        status.last_error = Some(reason);
    }

    /// The link's own samples: changes waiting, and whether the server answers.
    pub fn telemetry_samples(&self, out: &mut Vec<crate::sample::Sample>) {
        use crate::sample::Sample;
        let pending = {
            let state = self.queue.lock();
            state.queue.len() + usize::from(state.register)
        };
        let up = self.status().reachable == Some(true);
        for (family, value) in [
            (&SYNC_PENDING, pending as f64),
            (&SYNC_UP, if up { 1.0 } else { 0.0 }),
        ] {
            out.push(Sample::own(family, value));
        }
    }

    /// `/health`'s `config_server` object.
    pub fn health(&self) -> SyncHealth {
        let state = self.queue.lock();
        let status = self.status();
        SyncHealth {
            url: self.settings.url.clone(),
            device_id: self.settings.device_id.clone(),
            reachable: status.reachable,
            revision: state.revision,
            pending_changes: state.queue.len() + usize::from(state.register),
            last_contact: status.last_contact,
            last_error: status.last_error.clone(),
            conflicts: state
                .conflicts
                .iter()
                .rev()
                .take(10)
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect(),
        }
    }

    /// Sends queued changes and polls for the server's, until `shutdown`.
    pub async fn run(self: Arc<Self>, on_change: OnChange, shutdown: CancellationToken) {
        let mut next_poll = Instant::now() + self.settings.poll_interval;
        loop {
            let due = self
                .status()
                .next_attempt
                .is_none_or(|t| t <= Instant::now());
            if due {
                match self.deliver().await {
                    Ok(true) => on_change().await,
                    Ok(false) => {}
                    Err(e) => self.failed(e.to_string()),
                }
            }
            let retry = self.status().next_attempt;
            let wake_at = match retry {
                Some(t) if self.queue.pending() > 0 || self.queue.lock().register => {
                    t.min(next_poll)
                }
                _ => next_poll,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.queue.wake.notified() => continue,
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + self.settings.poll_interval;
                if self.fetch().await {
                    on_change().await;
                }
            }
        }
    }
}
