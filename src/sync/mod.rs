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

pub mod doc;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use hyper::header::{self, HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::store::{ConfigSource, write_atomically};
use crate::config::{Secret, Store};
use crate::http::client;
use crate::lock::lock;
use doc::{Conflict, Doc, Patch};

/// Largest config the device accepts from the server.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
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

impl Settings {
    fn config_url(&self) -> String {
        format!("{}/config/{}", self.url, self.device_id)
    }
}

/// A local change waiting to reach the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    seq: u64,
    patch: Patch,
    /// Unix seconds when it was made.
    at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConflictRecord {
    #[serde(flatten)]
    conflict: Conflict,
    /// The server revision that won.
    revision: u64,
    at: f64,
}

/// What `<config>.sync.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    server: String,
    device_id: String,
    /// The server revision the file is based on.
    revision: Option<u64>,
    /// The server's document at `revision` (without local-only keys).
    synced: Option<Doc>,
    queue: VecDeque<Pending>,
    next_seq: u64,
    /// The server forgot this device (or never knew it): send the whole file.
    #[serde(default)]
    register: bool,
    #[serde(default)]
    conflicts: Vec<ConflictRecord>,
}

impl State {
    /// What the file should say, without local-only keys: the last server revision
    /// with every waiting change applied.
    fn expected(&self) -> Doc {
        let mut doc = self.synced.clone().unwrap_or_default();
        for p in &self.queue {
            doc::apply(&mut doc, &p.patch);
        }
        doc
    }

    fn push(&mut self, patch: Patch) {
        if patch.is_empty() {
            return;
        }
        // Not registered yet: registration sends the whole file, so one entry
        // that says "something changed" is enough (the queue cannot grow while a
        // server never appears).
        if self.revision.is_none()
            && let Some(last) = self.queue.back_mut()
        {
            doc::merge(&mut last.patch, &patch);
            return;
        }
        self.next_seq += 1;
        self.queue.push_back(Pending {
            seq: self.next_seq,
            patch,
            at: crate::config_server::db::now(),
        });
    }
}

/// The persistent queue of local changes and what the device knows of the server.
#[derive(Debug)]
pub struct Queue {
    path: PathBuf,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

impl Queue {
    /// Loads `path` (a missing or unreadable file is an empty queue; a file made for
    /// another server or device id keeps its queue but not its revision).
    pub fn load(path: PathBuf, settings: &Settings) -> Queue {
        let mut state: State = std::fs::read(&path)
            .ok()
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "sync state unreadable; starting over");
                    None
                }
            })
            .unwrap_or_default();
        if state.server != settings.url || state.device_id != settings.device_id {
            state.revision = None;
            state.synced = None;
            state.conflicts.clear();
            state.server = settings.url.clone();
            state.device_id = settings.device_id.clone();
        }
        Queue {
            path,
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Queues metric switches the store just wrote to the file.
    pub fn push_metrics(&self, changes: &BTreeMap<String, bool>) {
        let mut patch = Patch::new();
        patch.insert(
            "metrics".into(),
            Value::Object(
                changes
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::Bool(*v)))
                    .collect(),
            ),
        );
        let mut state = self.lock();
        state.push(patch);
        self.persist(&state);
        drop(state);
        self.wake.notify_one();
    }

    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    fn persist(&self, state: &State) {
        let result = serde_json::to_vec_pretty(state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&self.path, &bytes));
        if let Err(e) = result {
            // The change is in config.yaml; the next start finds it again.
            tracing::warn!(path = %self.path.display(), error = %e, "could not save the sync queue");
        }
    }
}

/// Where `<config>.sync.json` lives.
pub fn state_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().unwrap_or_default().to_os_string();
    name.push(".sync.json");
    config.with_file_name(name)
}

/// What a request to the server came back with.
enum Answer {
    NotModified,
    Config(u64, Doc),
    NotFound,
    Stored(u64),
    Stale,
    Refused(String),
}

#[derive(Debug, Default)]
struct Status {
    reachable: Option<bool>,
    last_contact: Option<f64>,
    last_error: Option<String>,
    failures: u32,
    next_attempt: Option<Instant>,
}

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
}

impl ConfigSync {
    /// Attaches the queue to the store, so every metric change from now on is queued.
    pub fn new(settings: Settings, store: Arc<Store>) -> Arc<ConfigSync> {
        let queue = Arc::new(Queue::load(state_path(store.path()), &settings));
        store.attach_queue(queue.clone());
        Arc::new(ConfigSync {
            settings,
            queue,
            store,
            status: Mutex::new(Status::default()),
            exchange: tokio::sync::Mutex::new(()),
        })
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
        let revision = self.queue.lock().revision;
        let tag = revision.map(|r| format!("\"{r}\""));
        let mut headers = Vec::new();
        if let Some(tag) = &tag {
            headers.push((header::IF_NONE_MATCH, tag.clone()));
        }
        match self.request(Method::GET, headers, Bytes::new()).await {
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
            Ok(Answer::Refused(reason)) | Err(reason) => {
                self.failed(reason);
                false
            }
            Ok(Answer::Stored(_) | Answer::Stale) => {
                self.failed("unexpected answer to GET".into());
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
                        at: crate::config_server::db::now(),
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
    async fn deliver(&self) -> Result<bool, String> {
        let _one = self.exchange.lock().await;
        let mut changed = false;
        // A server that keeps answering 412 (or forgetting the device) must not
        // keep this loop spinning.
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > 20 {
                return Err("the config server keeps refusing the change as stale".into());
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
            match self.request(Method::PUT, headers, body).await? {
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
                        return Err(self.status().last_error.clone().unwrap_or_default());
                    }
                }
                Answer::NotFound if registering => {
                    return Err("the config server answered 404 to a new device's PUT: is CONFIG_SERVER_URL a config server?".into());
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
                    return Err("unexpected answer to PUT".into());
                }
            }
        }
    }

    /// One request; `Err` when the server could not be used (down, slow, 5xx,
    /// garbage, unauthorized).
    async fn request(
        &self,
        method: Method,
        mut headers: Vec<(HeaderName, String)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        if let Some(token) = &self.settings.token {
            headers.push((header::AUTHORIZATION, format!("Bearer {}", token.expose())));
        }
        let url = self.settings.config_url();
        let is_get = method == Method::GET;
        let response = client::request(
            method,
            &url,
            &headers,
            body,
            self.settings.timeout,
            MAX_CONFIG_BYTES,
        )
        .await
        .map_err(|e| e.to_string())?;
        let revision = response
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|t| {
                t.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
            });
        let error_text = || {
            serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&response.body)
                        .chars()
                        .take(200)
                        .collect()
                })
        };
        match response.status {
            304 => Ok(Answer::NotModified),
            200 if is_get => {
                let revision = revision.ok_or("the config server sent no ETag")?;
                match serde_json::from_slice::<Value>(&response.body) {
                    Ok(Value::Object(doc)) => Ok(Answer::Config(revision, doc)),
                    Ok(_) => {
                        Err("the config server sent something other than a JSON object".into())
                    }
                    Err(e) => Err(format!("the config server sent invalid JSON: {e}")),
                }
            }
            200 | 201 => Ok(Answer::Stored(
                revision.ok_or("the config server stored the change but sent no ETag")?,
            )),
            404 => Ok(Answer::NotFound),
            412 => Ok(Answer::Stale),
            400 | 413 | 422 => Ok(Answer::Refused(error_text())),
            401 | 403 => Err(format!(
                "the config server refused the token ({}): set CONFIG_SERVER_TOKEN",
                response.status
            )),
            status => Err(format!(
                "the config server answered {status}: {}",
                error_text()
            )),
        }
    }

    fn reached(&self, source: ConfigSource) {
        self.store.set_source(source);
        let mut status = self.status();
        if status.reachable == Some(false) {
            tracing::info!(url = %self.settings.url, "config server reachable again");
        }
        status.reachable = Some(true);
        status.last_contact = Some(crate::config_server::db::now());
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
    pub fn health(&self) -> Value {
        let state = self.queue.lock();
        let status = self.status();
        let conflicts: Vec<&ConflictRecord> = state.conflicts.iter().rev().take(10).collect();
        serde_json::json!({
            "url": self.settings.url,
            "device_id": self.settings.device_id,
            "reachable": status.reachable,
            "revision": state.revision,
            "pending_changes": state.queue.len() + usize::from(state.register),
            "last_contact": status.last_contact,
            "last_error": status.last_error,
            "conflicts": conflicts,
        })
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
                    Err(reason) => self.failed(reason),
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
