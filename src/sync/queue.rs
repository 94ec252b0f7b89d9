//! The device's persisted record of the config server, `<config>.sync.json`: the
//! revision its file is based on, the server's document at that revision, the
//! queue of local changes waiting to reach the server (in order, each numbered),
//! and the conflicts the server won. Every change to it is saved atomically before
//! the change it records is acknowledged, so the queue survives restarts and
//! crashes. The store reports its changes here through [`LocalChanges`].

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::doc::{self, Conflict, Doc, Patch};
use crate::atomic_file::write_atomically;
use crate::config::store::LocalChanges;
use crate::lock::lock;

/// A local change waiting to reach the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Pending {
    pub(super) seq: u64,
    pub(super) patch: Patch,
    /// Unix seconds when it was made.
    pub(super) at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ConflictRecord {
    #[serde(flatten)]
    pub(super) conflict: Conflict,
    /// The server revision that won.
    pub(super) revision: u64,
    pub(super) at: f64,
}

/// What `<config>.sync.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) server: String,
    pub(super) device_id: String,
    /// The server revision the file is based on.
    pub(super) revision: Option<u64>,
    /// The server's document at `revision` (without local-only keys).
    pub(super) synced: Option<Doc>,
    pub(super) queue: VecDeque<Pending>,
    pub(super) next_seq: u64,
    /// The server forgot this device (or never knew it): send the whole file.
    #[serde(default)]
    pub(super) register: bool,
    #[serde(default)]
    pub(super) conflicts: Vec<ConflictRecord>,
}

impl State {
    /// What the file should say, without local-only keys: the last server revision
    /// with every waiting change applied.
    pub(super) fn expected(&self) -> Doc {
        let mut doc = self.synced.clone().unwrap_or_default();
        for p in &self.queue {
            doc::apply(&mut doc, &p.patch);
        }
        doc
    }

    pub(super) fn push(&mut self, patch: Patch) {
        if patch.is_empty() {
            return;
        }
        self.next_seq += 1;
        // Not registered yet: registration sends the whole file, so one entry
        // that says "something changed" is enough (the queue cannot grow while a
        // server never appears). It takes the new number: a registration already
        // on its way may have read the file before this change, and only drops
        // the entries up to the number it saw.
        if self.revision.is_none()
            && let Some(last) = self.queue.back_mut()
        {
            doc::merge(&mut last.patch, &patch);
            last.seq = self.next_seq;
            last.at = crate::clock::unix_now();
            return;
        }
        self.queue.push_back(Pending {
            seq: self.next_seq,
            patch,
            at: crate::clock::unix_now(),
        });
    }
}

/// The persistent queue of local changes and what the device knows of the server.
#[derive(Debug)]
pub struct Queue {
    path: PathBuf,
    state: Mutex<State>,
    /// Woken when a change is queued, so the sender goes at once.
    pub(super) wake: tokio::sync::Notify,
}

impl Queue {
    /// Loads `path` (a missing or unreadable file is an empty queue; a file made for
    /// another server or device id keeps its queue but not its revision).
    pub fn load(path: PathBuf, server: &str, device_id: &str) -> Queue {
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
        if state.server != server || state.device_id != device_id {
            state.revision = None;
            state.synced = None;
            state.conflicts.clear();
            state.server = server.to_owned();
            state.device_id = device_id.to_owned();
        }
        Queue {
            path,
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
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

    pub(super) fn persist(&self, state: &State) {
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

impl LocalChanges for Queue {
    fn metrics_changed(&self, changes: &BTreeMap<String, bool>) {
        self.push_metrics(changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metrics(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn survives_a_restart_and_forgets_another_servers_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = state_path(&dir.path().join("config.yaml"));
        assert!(path.ends_with("config.yaml.sync.json"));
        let queue = Queue::load(path.clone(), "http://cfg:8080", "orin-01");
        {
            let mut state = queue.lock();
            state.revision = Some(3);
            state.synced = Some(json!({"interval": 1}).as_object().cloned().expect("doc"));
            queue.persist(&state);
        }
        queue.push_metrics(&metrics(&[("a_x", true)]));
        queue.push_metrics(&metrics(&[("b_x", false)]));
        let again = Queue::load(path.clone(), "http://cfg:8080", "orin-01");
        let state = again.lock();
        assert_eq!(state.revision, Some(3));
        let seqs: Vec<u64> = state.queue.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2], "in order, one entry each");
        assert_eq!(
            Value::Object(state.expected()),
            json!({"interval": 1, "metrics": {"a_x": true, "b_x": false}})
        );
        drop(state);
        let other = Queue::load(path, "http://other:8080", "orin-01");
        let state = other.lock();
        assert_eq!((state.revision, state.synced.is_none()), (None, true));
        assert_eq!(state.queue.len(), 2, "the changes themselves are kept");
    }

    /// Before the first registration the queue folds into one entry, and that
    /// entry takes a new number each time: a registration that read the file
    /// before the newest change keeps it queued instead of dropping it.
    #[test]
    fn a_change_during_registration_stays_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::load(dir.path().join("s.json"), "http://cfg", "pi-01");
        queue.push_metrics(&metrics(&[("a_x", false)]));
        // The sender reads the file and the newest number (what it will send).
        let upto = queue.lock().queue.back().map(|p| p.seq).expect("queued");
        // Auto-discovery writes more ids before the registration is answered.
        queue.push_metrics(&metrics(&[("b_x", false)]));
        let mut state = queue.lock();
        assert_eq!(state.queue.len(), 1, "still one entry");
        // The server stored what was read: the entries up to `upto` are done.
        state.queue.retain(|p| p.seq > upto);
        assert_eq!(state.queue.len(), 1, "the later change is still waiting");
        assert_eq!(
            Value::Object(state.queue[0].patch.clone()),
            json!({"metrics": {"a_x": false, "b_x": false}})
        );
    }
}
