//! The config server's storage: one SQLite file (bundled SQLite, WAL journal, full
//! sync), with the current revision of every device held in memory so reads never
//! touch the disk.
//!
//! Every change (a PUT or a DELETE) is one transaction that appends a row to
//! `history` and updates `devices`, under one writer lock that also updates the
//! in-memory copy, so the revision a client sees and the one on disk cannot differ
//! and two writers holding the same `If-Match` cannot both win. Revisions of a
//! device only grow, across deletion too, so an ETag is never reused. Last contact
//! times are kept in memory and written every few seconds.
//!
//! A device row holds its own layers (`base`, `overrides`), the groups it was
//! assigned, and the effective config made of those and its groups' configs
//! (`super::layers`), which is what is served. A change to a group gives every
//! member a new revision in the same transaction, so a member's ETag changes
//! whenever any of its layers does. History rows say which layer changed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::layers::{self, Group, Rules, override_keys, resolve, split_write};
use crate::clock::unix_now as now;
use crate::config::doc::Doc;
use crate::lock::lock;

mod devices;
mod groups;
mod history;
mod schema;
#[cfg(test)]
mod tests;
mod tokens;

use history::{insert_group_history, insert_history, prune_all_history};
use tokens::TokenCache;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no random numbers from the kernel: {0}")]
    Random(std::io::Error),
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored config of {0} is not JSON: {1}")]
    Corrupt(String, serde_json::Error),
}

/// The current revision of one device.
#[derive(Debug, Clone)]
pub struct Entry {
    pub revision: u64,
    /// The effective config as JSON text, served as is.
    pub config: Bytes,
    /// The device's own type (from its writes; groups match on it).
    pub device_type: Option<String>,
    /// Unix seconds of the revision.
    pub updated_at: f64,
    /// The groups the device was assigned, in the order given.
    pub assigned: Vec<String>,
    /// Its groups in precedence order: matched ones, then assigned ones.
    pub groups: Vec<String>,
    /// How many keys (metric entries counted one by one) it overrides.
    pub overrides: usize,
}

/// One row of a device's or a group's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revision {
    pub revision: u64,
    pub updated_at: f64,
    /// `None` for a deletion.
    pub config: Option<serde_json::Value>,
    /// Which layer changed: `device` (a write to the device, an override
    /// dropped), `groups` (its groups applied over a write), `group:<name>` (a
    /// group's config or rules), `membership` (its assigned groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

/// What a device says about itself with its polls.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Report {
    pub version: Option<String>,
    /// The config revision its running config is based on.
    pub applied_revision: Option<u64>,
    pub failing_collectors: Vec<String>,
    pub pending_changes: Option<u64>,
}

/// One device in [`Db::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    pub device_id: String,
    pub entry: Arc<Entry>,
    /// Unix seconds of its last request.
    pub last_contact: Option<f64>,
    pub report: Option<Report>,
}

#[derive(Debug, Clone)]
struct Contact {
    /// Unix seconds of the device's last request.
    at: f64,
    report: Option<Report>,
    /// Not saved yet.
    dirty: bool,
}

/// What a conditional write expects the current state to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// `If-Match` with entity tags: one must be the current revision's. Tags
    /// that are not a revision of ours are left out, so they never match.
    Revision(Vec<u64>),
    /// `If-Match: *`: it must exist.
    Exists,
    /// `If-None-Match: *`: it must not exist.
    Absent,
    /// `If-None-Match` with tags: none may be the current revision's.
    NoneOf(Vec<u64>),
}

impl Precondition {
    fn holds(&self, current: Option<u64>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::Revision(tags) => current.is_some_and(|r| tags.contains(&r)),
            Precondition::Exists => current.is_some(),
            Precondition::Absent => current.is_none(),
            Precondition::NoneOf(tags) => current.is_none_or(|r| !tags.contains(&r)),
        }
    }

    /// The opening of every write (with the writer locked): whether `self`
    /// lets a write of `target` go on, where the thing written (a device, a
    /// group) is at revision `current` (`None`: it does not exist); the
    /// answer to give when not.
    fn admit(&self, current: Option<u64>, target: Target) -> Result<(), WriteOutcome> {
        match (target, current) {
            (Target::Existing, None) => Err(WriteOutcome::NotFound),
            (Target::Removed, None) => Err(match self {
                Precondition::None | Precondition::Absent | Precondition::NoneOf(_) => {
                    WriteOutcome::NotFound
                }
                _ => WriteOutcome::PreconditionFailed(None),
            }),
            (Target::Removed, Some(_)) if *self == Precondition::Absent => {
                Err(WriteOutcome::PreconditionFailed(current))
            }
            _ if !self.holds(current) => Err(WriteOutcome::PreconditionFailed(current)),
            _ => Ok(()),
        }
    }
}

/// What a write does to the thing it names.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Creates or replaces it (a PUT).
    Either,
    /// Changes it: it must exist.
    Existing,
    /// Removes it: it must exist.
    Removed,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Created(u64),
    Updated(u64),
    Deleted(u64),
    /// The precondition failed; the current revision, if any.
    PreconditionFailed(Option<u64>),
    NotFound,
    /// The result would not be a valid config for this device.
    Invalid {
        device_id: String,
        error: Box<crate::config::ConfigError>,
    },
    /// A request that names something that does not exist (a group, an override).
    Missing(String),
}

/// A device's own layers, as stored.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub base: Doc,
    pub overrides: Doc,
}

type Groups = BTreeMap<String, Arc<Group>>;

#[derive(Debug)]
pub struct Db {
    writer: Mutex<Connection>,
    /// Token checks and layer reads go through their own connection (WAL lets
    /// them run beside a commit), so they never wait for another's fsync.
    reader: Mutex<Connection>,
    /// The tokens table as last read, behind a connection of its own: the
    /// credential check of every request uses nothing else, so it never waits
    /// behind a long read.
    tokens: Mutex<(Connection, TokenCache)>,
    current: RwLock<HashMap<String, Arc<Entry>>>,
    groups: RwLock<Groups>,
    contacts: Mutex<HashMap<String, Contact>>,
    /// Revisions of history kept per device and per group (`--history-keep`).
    history_keep: u64,
}

/// Devices changed at once past which freed memory is handed back.
const TRIM_AFTER: usize = 1000;

/// Revisions of history kept per device and per group by default.
pub const DEFAULT_HISTORY_KEEP: u64 = 100;

fn parse_doc(text: &str, what: &str) -> Result<Doc, DbError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(doc)) => Ok(doc),
        Ok(_) => Ok(Doc::new()),
        Err(e) => Err(DbError::Corrupt(what.to_owned(), e)),
    }
}

fn parse_list(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Everything stored of a device after a change.
struct DeviceState {
    device_type: Option<String>,
    assigned: Vec<String>,
    groups: Vec<String>,
    base: Doc,
    overrides: Doc,
    effective: Doc,
}

/// Whether `effective` is a config the device would take. Every layer was
/// checked whole when it was written, so the metric ids are not parsed again
/// (most of the time a check takes, with hundreds of them): the rest of the
/// document is, and every metric entry must still be true or false.
fn check(device_id: &str, effective: &Doc) -> Result<(), WriteOutcome> {
    let origin = format!("config of {device_id}");
    let invalid = |error| WriteOutcome::Invalid {
        device_id: device_id.to_owned(),
        error: Box::new(error),
    };
    let mut rest = Doc::new();
    for (key, value) in effective {
        if key != "metrics" {
            rest.insert(key.clone(), value.clone());
        }
    }
    crate::config::validate_json(&serde_json::Value::Object(rest), Path::new(&origin))
        .map_err(invalid)?;
    match effective.get("metrics") {
        None => Ok(()),
        Some(serde_json::Value::Object(m)) if m.values().all(serde_json::Value::is_boolean) => {
            Ok(())
        }
        Some(_) => Err(invalid(crate::config::ConfigError {
            file: origin.clone().into(),
            line: None,
            field: Some("metrics".into()),
            message: "metrics must map ids to true or false".into(),
            hint: None,
        })),
    }
}

fn read_layers(conn: &Connection, device_id: &str) -> Result<Option<Layers>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT base, overrides FROM devices WHERE device_id = ?1")?;
    let row: Option<(Option<String>, Option<String>)> = stmt
        .query_row(params![device_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((base, overrides)) = row else {
        return Ok(None);
    };
    Ok(Some(Layers {
        base: base
            .map(|b| parse_doc(&b, device_id))
            .transpose()?
            .unwrap_or_default(),
        overrides: overrides
            .map(|o| parse_doc(&o, device_id))
            .transpose()?
            .unwrap_or_default(),
    }))
}

/// The next revision of a device: after a deletion its history goes on.
fn next_revision(conn: &Connection, device_id: &str) -> Result<u64, DbError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT MAX(revision) FROM history WHERE device_id = ?1")?
        .query_row(params![device_id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(last.unwrap_or(0) as u64 + 1)
}

/// Writes a device's row; the entry to serve.
fn store_device(
    conn: &Connection,
    device_id: &str,
    revision: u64,
    state: &DeviceState,
    updated_at: f64,
) -> Result<Arc<Entry>, DbError> {
    let text = serde_json::Value::Object(state.effective.clone()).to_string();
    let base = serde_json::Value::Object(state.base.clone()).to_string();
    let overrides = serde_json::Value::Object(state.overrides.clone()).to_string();
    let assigned = serde_json::to_string(&state.assigned).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO devices (device_id, revision, config, device_type, updated_at, last_contact,
                              base, overrides, groups)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8)
         ON CONFLICT(device_id) DO UPDATE SET revision = ?2, config = ?3, device_type = ?4,
             updated_at = ?5, base = ?6, overrides = ?7, groups = ?8",
    )?
    .execute(params![
        device_id,
        revision as i64,
        text,
        state.device_type,
        updated_at,
        base,
        overrides,
        assigned
    ])?;
    Ok(Arc::new(Entry {
        revision,
        config: Bytes::from(text),
        device_type: state.device_type.clone(),
        updated_at,
        assigned: state.assigned.clone(),
        groups: state.groups.clone(),
        overrides: override_keys(&state.overrides).len(),
    }))
}

/// Gives each device (with new assigned groups where given) its effective
/// config under `groups` as a new revision made by `layer`, one device at a
/// time inside `tx` (only the served entries are kept, so 10,000 members do not
/// hold 10,000 parsed documents); or the first device whose config would be
/// invalid, and the caller drops `tx` unfinished (nothing is stored).
#[allow(clippy::type_complexity)]
fn restack(
    tx: &Connection,
    keep: u64,
    groups: &Groups,
    devices: impl IntoIterator<Item = (String, Arc<Entry>, Option<Vec<String>>)>,
    layer: &str,
) -> Result<Result<Vec<(String, Arc<Entry>)>, WriteOutcome>, DbError> {
    let updated_at = now();
    let mut out = Vec::new();
    for (id, entry, assigned) in devices {
        let assigned = assigned.unwrap_or_else(|| entry.assigned.clone());
        let resolved = resolve(&assigned, &id, entry.device_type.as_deref(), groups);
        let Layers { base, overrides } = read_layers(tx, &id)?.unwrap_or_default();
        let docs = resolved.iter().map(|n| &groups[n].config);
        let effective = layers::effective(&base, docs, &overrides);
        if let Err(invalid) = check(&id, &effective) {
            return Ok(Err(invalid));
        }
        let revision = entry.revision + 1;
        insert_history(tx, keep, &id, revision, Some(&effective), layer, updated_at)?;
        let text = serde_json::Value::Object(effective).to_string();
        tx.prepare_cached(
            "UPDATE devices SET revision = ?2, config = ?3, updated_at = ?4, groups = ?5 WHERE device_id = ?1",
        )?
        .execute(params![
            id,
            revision as i64,
            text,
            updated_at,
            serde_json::to_string(&assigned).unwrap_or_else(|_| "[]".into())
        ])?;
        let overrides = override_keys(&overrides).len();
        out.push((
            id,
            Arc::new(Entry {
                revision,
                config: Bytes::from(text),
                device_type: entry.device_type.clone(),
                updated_at,
                assigned,
                groups: resolved,
                overrides,
            }),
        ));
    }
    Ok(Ok(out))
}

impl Db {
    /// The device a change is for, if it exists and `expect` holds for it
    /// (called with the writer locked).
    fn to_change(
        &self,
        device_id: &str,
        expect: &Precondition,
    ) -> Result<Arc<Entry>, WriteOutcome> {
        let existing = self.get(device_id);
        expect.admit(existing.as_ref().map(|e| e.revision), Target::Existing)?;
        existing.ok_or(WriteOutcome::NotFound)
    }

    /// [`Db::set_entries`]; after a change to many devices (a group's), the
    /// memory its old entries and its work held goes back to the system.
    fn set_entries_and_trim(&self, entries: Vec<(String, Arc<Entry>)>) {
        let many = entries.len() >= TRIM_AFTER;
        self.set_entries(entries);
        if many {
            crate::memory::release_free();
        }
    }

    fn set_entries(&self, entries: Vec<(String, Arc<Entry>)>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        for (id, entry) in entries {
            current.insert(id, entry);
        }
    }
}
