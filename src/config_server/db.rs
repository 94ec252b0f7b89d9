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
use crate::lock::lock;
use crate::sync::doc::Doc;

/// A new device token: 32 random bytes from the kernel, as 64 hex digits.
fn new_token() -> Result<String, DbError> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|e| DbError::Random(e.into()))?;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What is stored of a token: its SHA-256 (tokens are random, so no salt or
/// slow hash is needed).
fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

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

/// The tokens table as last read. SQLite's `data_version` says without any I/O
/// whether some connection committed since the last look; only then is the
/// counter that triggers on `tokens` keep (`meta.tokens`) read, and only when
/// that moved is the table read again.
#[derive(Debug, Default)]
struct TokenCache {
    data_version: Option<i64>,
    tokens_version: Option<i64>,
    by_hash: HashMap<[u8; 32], String>,
}

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

/// Adds `column` to `table` when an older database lacks it.
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<(), DbError> {
    let has: bool = conn.query_row(
        &format!("SELECT EXISTS (SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1)"),
        params![column],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::open_keeping(path, DEFAULT_HISTORY_KEEP)
    }

    /// [`Db::open`] keeping the last `history_keep` revisions of each device's
    /// and each group's history (older ones are deleted as new ones come, and
    /// at once here).
    pub fn open_keeping(path: &Path, history_keep: u64) -> Result<Db, DbError> {
        let history_keep = history_keep.max(1);
        let conn = Connection::open(path)?;
        // WAL lets reads and the writer overlap; FULL syncs every commit, so an
        // acknowledged PUT survives a power cut.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The WAL grows with a big transaction (a group change restacks every
        // member); after a checkpoint it is cut back to this.
        conn.pragma_update(None, "journal_size_limit", 32 * 1024 * 1024)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS devices (
                 device_id TEXT PRIMARY KEY,
                 revision INTEGER NOT NULL,
                 config TEXT NOT NULL,
                 device_type TEXT,
                 updated_at REAL NOT NULL,
                 last_contact REAL
             );
             CREATE TABLE IF NOT EXISTS history (
                 device_id TEXT NOT NULL,
                 revision INTEGER NOT NULL,
                 config TEXT,
                 updated_at REAL NOT NULL,
                 PRIMARY KEY (device_id, revision)
             );
             CREATE TABLE IF NOT EXISTS tokens (
                 device_id TEXT PRIMARY KEY,
                 hash BLOB NOT NULL UNIQUE,
                 created_at REAL NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (key, value) VALUES ('tokens', 0);
             CREATE TRIGGER IF NOT EXISTS tokens_added AFTER INSERT ON tokens
                 BEGIN UPDATE meta SET value = value + 1 WHERE key = 'tokens'; END;
             CREATE TRIGGER IF NOT EXISTS tokens_replaced AFTER UPDATE ON tokens
                 BEGIN UPDATE meta SET value = value + 1 WHERE key = 'tokens'; END;
             CREATE TRIGGER IF NOT EXISTS tokens_removed AFTER DELETE ON tokens
                 BEGIN UPDATE meta SET value = value + 1 WHERE key = 'tokens'; END;
             CREATE TABLE IF NOT EXISTS groups (
                 name TEXT PRIMARY KEY,
                 revision INTEGER NOT NULL,
                 config TEXT NOT NULL,
                 rules TEXT,
                 updated_at REAL NOT NULL
             );
             CREATE TABLE IF NOT EXISTS group_history (
                 name TEXT NOT NULL,
                 revision INTEGER NOT NULL,
                 config TEXT,
                 updated_at REAL NOT NULL,
                 PRIMARY KEY (name, revision)
             );",
        )?;
        // Databases from before groups: each device's config becomes its base.
        add_column(&conn, "devices", "base", "TEXT")?;
        add_column(&conn, "devices", "overrides", "TEXT")?;
        add_column(&conn, "devices", "groups", "TEXT")?;
        add_column(&conn, "devices", "report", "TEXT")?;
        add_column(&conn, "history", "layer", "TEXT")?;
        conn.execute(
            "UPDATE devices SET base = config, overrides = '{}', groups = '[]' WHERE base IS NULL",
            [],
        )?;
        let reader = Connection::open(path)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        let token_reader = Connection::open(path)?;
        token_reader.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut groups = Groups::new();
        {
            let mut stmt =
                conn.prepare("SELECT name, revision, config, rules, updated_at FROM groups")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, f64>(4)?,
                ))
            })?;
            for row in rows {
                let (name, revision, config, rules, updated_at) = row?;
                let config = parse_doc(&config, &format!("group {name}"))?;
                let rules = rules
                    .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
                    .and_then(|v| Rules::parse(&v).ok());
                groups.insert(
                    name,
                    Arc::new(Group {
                        revision: revision as u64,
                        config,
                        rules,
                        updated_at,
                    }),
                );
            }
        }
        let mut current = HashMap::new();
        let mut contacts = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT device_id, revision, config, device_type, updated_at, last_contact,
                        groups, overrides, report FROM devices",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, Option<f64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })?;
            for row in rows {
                let (id, revision, config, device_type, updated_at, contact, assigned, ovr, report) =
                    row?;
                if let Some(at) = contact {
                    let report = report.and_then(|r| serde_json::from_str(&r).ok());
                    contacts.insert(
                        id.clone(),
                        Contact {
                            at,
                            report,
                            dirty: false,
                        },
                    );
                }
                let assigned = parse_list(assigned);
                let resolved = resolve(&assigned, &id, device_type.as_deref(), &groups);
                let overrides = ovr
                    .map(|o| parse_doc(&o, &id))
                    .transpose()?
                    .map_or(0, |o| override_keys(&o).len());
                current.insert(
                    id,
                    Arc::new(Entry {
                        revision: revision as u64,
                        config: Bytes::from(config),
                        device_type,
                        updated_at,
                        assigned,
                        groups: resolved,
                        overrides,
                    }),
                );
            }
        }
        prune_all_history(&conn, history_keep)?;
        Ok(Db {
            writer: Mutex::new(conn),
            reader: Mutex::new(reader),
            tokens: Mutex::new((token_reader, TokenCache::default())),
            current: RwLock::new(current),
            groups: RwLock::new(groups),
            contacts: Mutex::new(contacts),
            history_keep,
        })
    }

    /// Makes a new token for `device_id`, replacing its old one, and stores only
    /// its SHA-256. `only_new`: fails with `None` when the device has a token
    /// already (enrolment).
    pub fn create_token(&self, device_id: &str, only_new: bool) -> Result<Option<String>, DbError> {
        let token = new_token()?;
        let conn = lock(&self.writer);
        let sql = if only_new {
            "INSERT OR IGNORE INTO tokens (device_id, hash, created_at) VALUES (?1, ?2, ?3)"
        } else {
            "INSERT OR REPLACE INTO tokens (device_id, hash, created_at) VALUES (?1, ?2, ?3)"
        };
        let changed = conn.execute(
            sql,
            params![device_id, token_hash(&token).as_slice(), now()],
        )?;
        Ok((changed > 0).then_some(token))
    }

    /// Removes `device_id`'s token; whether it had one.
    pub fn revoke_token(&self, device_id: &str) -> Result<bool, DbError> {
        let conn = lock(&self.writer);
        Ok(conn.execute(
            "DELETE FROM tokens WHERE device_id = ?1",
            params![device_id],
        )? > 0)
    }

    /// Devices with a token and when it was made (unix seconds), by device id.
    pub fn tokens(&self) -> Result<Vec<(String, f64)>, DbError> {
        let conn = lock(&self.reader);
        let mut stmt =
            conn.prepare_cached("SELECT device_id, created_at FROM tokens ORDER BY device_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs `f` on the tokens table as it is now, also when `config-server
    /// token` changed it from another process a moment ago (see [`TokenCache`]).
    fn with_tokens<T>(
        &self,
        f: impl FnOnce(&HashMap<[u8; 32], String>) -> T,
    ) -> Result<T, DbError> {
        let mut guard = lock(&self.tokens);
        let (conn, cache) = &mut *guard;
        let data_version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if cache.data_version != Some(data_version) {
            let tokens_version: i64 = conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'tokens'")?
                .query_row([], |r| r.get(0))?;
            if cache.tokens_version != Some(tokens_version) {
                let mut stmt = conn.prepare_cached("SELECT device_id, hash FROM tokens")?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?;
                let mut by_hash = HashMap::new();
                for row in rows {
                    let (device, hash) = row?;
                    if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                        by_hash.insert(hash, device);
                    }
                }
                cache.by_hash = by_hash;
                cache.tokens_version = Some(tokens_version);
            }
            cache.data_version = Some(data_version);
        }
        Ok(f(&cache.by_hash))
    }

    /// Whether any device has a token.
    pub fn has_tokens(&self) -> Result<bool, DbError> {
        self.with_tokens(|t| !t.is_empty())
    }

    /// The device whose token `token` is, if any: found by the SHA-256 of the
    /// given token. Only digests are compared, so how long a comparison takes
    /// says nothing about a stored token (finding one from its digest is as
    /// hard as guessing it); a map lookup serves 10,000 tokens as fast as one.
    pub fn token_device(&self, token: &str) -> Result<Option<String>, DbError> {
        let given = token_hash(token);
        self.with_tokens(|t| t.get(&given).cloned())
    }

    /// Whether `device_id` has a token.
    pub fn has_token(&self, device_id: &str) -> Result<bool, DbError> {
        self.with_tokens(|t| t.values().any(|d| d == device_id))
    }

    pub fn get(&self, device_id: &str) -> Option<Arc<Entry>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .cloned()
    }

    /// Every device with its last contact and report, by id.
    pub fn list(&self) -> Vec<Listed> {
        let contacts = lock(&self.contacts);
        let mut all: Vec<_> = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, e)| {
                let contact = contacts.get(id);
                Listed {
                    device_id: id.clone(),
                    entry: e.clone(),
                    last_contact: contact.map(|c| c.at),
                    report: contact.and_then(|c| c.report.clone()),
                }
            })
            .collect();
        all.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        all
    }

    pub fn device_count(&self) -> usize {
        self.current.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn last_contact(&self, device_id: &str) -> Option<f64> {
        lock(&self.contacts).get(device_id).map(|c| c.at)
    }

    /// Records a request from the device itself, with what it reported (saved by
    /// [`Db::flush_contacts`]).
    pub fn touch(&self, device_id: &str, report: Option<Report>) {
        let mut contacts = lock(&self.contacts);
        let kept = contacts.get(device_id).and_then(|c| c.report.clone());
        contacts.insert(
            device_id.to_owned(),
            Contact {
                at: now(),
                report: report.or(kept),
                dirty: true,
            },
        );
    }

    /// Writes the contact times (and reports) that changed since the last flush.
    pub fn flush_contacts(&self) -> Result<usize, DbError> {
        let dirty: Vec<(String, f64, Option<String>)> = {
            let mut contacts = lock(&self.contacts);
            contacts
                .iter_mut()
                .filter(|(_, c)| c.dirty)
                .map(|(id, c)| {
                    c.dirty = false;
                    let report = c
                        .report
                        .as_ref()
                        .and_then(|r| serde_json::to_string(r).ok());
                    (id.clone(), c.at, report)
                })
                .collect()
        };
        if dirty.is_empty() {
            return Ok(0);
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE devices SET last_contact = ?2, report = COALESCE(?3, report) WHERE device_id = ?1",
            )?;
            for (id, t, report) in &dirty {
                stmt.execute(params![id, t, report])?;
            }
        }
        tx.commit()?;
        Ok(dirty.len())
    }

    /// The groups, by name.
    pub fn groups(&self) -> Groups {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// A device's base and overrides as stored.
    pub fn layers(&self, device_id: &str) -> Result<Option<Layers>, DbError> {
        let conn = lock(&self.reader);
        read_layers(&conn, device_id)
    }

    /// Stores a write of `device_id`'s config (already validated on its own):
    /// a registration becomes its base, a change its overrides (see
    /// [`super::layers::split_write`]). When its groups make the effective
    /// config differ from `body`, a second revision (`groups`) holds that, so a
    /// device that wrote revision N fetches N+1.
    pub fn put(
        &self,
        device_id: &str,
        body: &serde_json::Value,
        device_type: &str,
        expect: Precondition,
    ) -> Result<WriteOutcome, DbError> {
        let body = body.as_object().cloned().unwrap_or_default();
        let mut conn = lock(&self.writer);
        let existing = self.get(device_id);
        let current = existing.as_ref().map(|e| e.revision);
        if !expect.holds(current) {
            return Ok(WriteOutcome::PreconditionFailed(current));
        }
        let groups = self.groups();
        let assigned = existing
            .as_ref()
            .map(|e| e.assigned.clone())
            .unwrap_or_default();
        let resolved = resolve(&assigned, device_id, Some(device_type), &groups);
        let group_docs: Vec<&Doc> = resolved.iter().map(|n| &groups[n].config).collect();
        let (base, overrides) = match &existing {
            Some(entry) => {
                let stored = read_layers(&conn, device_id)?.unwrap_or_default();
                let effective = parse_doc(&String::from_utf8_lossy(&entry.config), device_id)?;
                split_write(
                    Some(&effective),
                    &stored.base,
                    &group_docs,
                    &stored.overrides,
                    &body,
                )
            }
            None => split_write(None, &Doc::new(), &group_docs, &Doc::new(), &body),
        };
        let effective = layers::effective(&base, group_docs.iter().copied(), &overrides);
        if !layers::same(&effective, &body)
            && let Err(error) = check(device_id, &effective)
        {
            return Ok(error);
        }
        let tx = conn.transaction()?;
        let mut revision = next_revision(&tx, device_id)?;
        let updated_at = now();
        let written = revision;
        let mut rows = vec![(revision, body.clone(), "device")];
        if !layers::same(&effective, &body) {
            revision += 1;
            rows.push((revision, effective.clone(), "groups"));
        }
        let state = DeviceState {
            device_type: Some(device_type.to_owned()),
            assigned,
            groups: resolved,
            base,
            overrides,
            effective,
        };
        for (r, doc, layer) in &rows {
            insert_history(
                &tx,
                self.history_keep,
                device_id,
                *r,
                Some(doc),
                layer,
                updated_at,
            )?;
        }
        let entry = store_device(&tx, device_id, revision, &state, updated_at)?;
        tx.commit()?;
        self.set_entries(vec![(device_id.to_owned(), entry)]);
        Ok(if current.is_some() {
            WriteOutcome::Updated(written)
        } else {
            WriteOutcome::Created(written)
        })
    }

    /// Removes a device; its history stays, ending with the deletion.
    pub fn delete(&self, device_id: &str, expect: Precondition) -> Result<WriteOutcome, DbError> {
        let mut conn = lock(&self.writer);
        let Some(existing) = self.get(device_id) else {
            return Ok(match expect {
                Precondition::None | Precondition::Absent | Precondition::NoneOf(_) => {
                    WriteOutcome::NotFound
                }
                _ => WriteOutcome::PreconditionFailed(None),
            });
        };
        if !expect.holds(Some(existing.revision)) || expect == Precondition::Absent {
            return Ok(WriteOutcome::PreconditionFailed(Some(existing.revision)));
        }
        let revision = existing.revision + 1;
        let tx = conn.transaction()?;
        insert_history(
            &tx,
            self.history_keep,
            device_id,
            revision,
            None,
            "device",
            now(),
        )?;
        tx.execute(
            "DELETE FROM devices WHERE device_id = ?1",
            params![device_id],
        )?;
        tx.commit()?;
        self.current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device_id);
        lock(&self.contacts).remove(device_id);
        Ok(WriteOutcome::Deleted(revision))
    }

    /// Drops one override of a device (`interval`, `metrics.<id>`), or all of
    /// them (`None`): the value of its groups (or its base) applies again.
    pub fn drop_override(
        &self,
        device_id: &str,
        key: Option<&str>,
        expect: Precondition,
    ) -> Result<WriteOutcome, DbError> {
        let mut conn = lock(&self.writer);
        let existing = match self.to_change(device_id, &expect) {
            Ok(existing) => existing,
            Err(outcome) => return Ok(outcome),
        };
        let Layers {
            base,
            mut overrides,
        } = read_layers(&conn, device_id)?.unwrap_or_default();
        let dropped = match key {
            Some(key) => layers::drop_override(&mut overrides, key),
            None => !std::mem::take(&mut overrides).is_empty(),
        };
        if !dropped {
            return Ok(WriteOutcome::Missing(match key {
                Some(key) => format!("{device_id} has no override of {key}"),
                None => format!("{device_id} has no overrides"),
            }));
        }
        let groups = self.groups();
        let docs: Vec<&Doc> = existing.groups.iter().map(|n| &groups[n].config).collect();
        let effective = layers::effective(&base, docs, &overrides);
        if let Err(error) = check(device_id, &effective) {
            return Ok(error);
        }
        let state = DeviceState {
            device_type: existing.device_type.clone(),
            assigned: existing.assigned.clone(),
            groups: existing.groups.clone(),
            base,
            overrides,
            effective,
        };
        let revision = existing.revision + 1;
        let tx = conn.transaction()?;
        let updated_at = now();
        insert_history(
            &tx,
            self.history_keep,
            device_id,
            revision,
            Some(&state.effective),
            "device",
            updated_at,
        )?;
        let entry = store_device(&tx, device_id, revision, &state, updated_at)?;
        tx.commit()?;
        self.set_entries(vec![(device_id.to_owned(), entry)]);
        Ok(WriteOutcome::Updated(revision))
    }

    /// Assigns a device its groups (order is precedence, later wins).
    pub fn set_groups(
        &self,
        device_id: &str,
        assigned: Vec<String>,
        expect: Precondition,
    ) -> Result<WriteOutcome, DbError> {
        let mut conn = lock(&self.writer);
        let existing = match self.to_change(device_id, &expect) {
            Ok(existing) => existing,
            Err(outcome) => return Ok(outcome),
        };
        let groups = self.groups();
        if let Some(unknown) = assigned.iter().find(|n| !groups.contains_key(*n)) {
            return Ok(WriteOutcome::Missing(format!("Unknown group: {unknown}")));
        }
        if assigned == existing.assigned {
            return Ok(WriteOutcome::Updated(existing.revision));
        }
        let tx = conn.transaction()?;
        let entries = match restack(
            &tx,
            self.history_keep,
            &groups,
            [(device_id.to_owned(), existing, Some(assigned))],
            "membership",
        )? {
            Ok(entries) => entries,
            Err(invalid) => return Ok(invalid),
        };
        tx.commit()?;
        let revision = entries.first().map_or(0, |(_, e)| e.revision);
        self.set_entries_and_trim(entries);
        Ok(WriteOutcome::Updated(revision))
    }

    /// Creates or replaces a group (`config` without `match`); every device it
    /// had or now has gets its effective config again, as one transaction.
    /// Returns the outcome and how many devices are its members now.
    pub fn put_group(
        &self,
        name: &str,
        config: Doc,
        rules: Option<Rules>,
        expect: Precondition,
    ) -> Result<(WriteOutcome, usize), DbError> {
        let mut conn = lock(&self.writer);
        let mut groups = self.groups();
        let current = groups.get(name).map(|g| g.revision);
        if !expect.holds(current) {
            return Ok((WriteOutcome::PreconditionFailed(current), 0));
        }
        let revision = next_group_revision(&conn, name)?;
        let updated_at = now();
        let group = Arc::new(Group {
            revision,
            config,
            rules,
            updated_at,
        });
        groups.insert(name.to_owned(), group.clone());
        let affected = self.members_before_or_after(name, &groups);
        let tx = conn.transaction()?;
        let document = serde_json::Value::Object(group.document()).to_string();
        insert_group_history(
            &tx,
            self.history_keep,
            name,
            revision,
            Some(document),
            updated_at,
        )?;
        let rules_text = group
            .rules
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok());
        tx.execute(
            "INSERT INTO groups (name, revision, config, rules, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET revision = ?2, config = ?3, rules = ?4, updated_at = ?5",
            params![
                name,
                revision as i64,
                serde_json::Value::Object(group.config.clone()).to_string(),
                rules_text,
                updated_at
            ],
        )?;
        let entries = match restack(
            &tx,
            self.history_keep,
            &groups,
            affected,
            &format!("group:{name}"),
        )? {
            Ok(entries) => entries,
            Err(invalid) => return Ok((invalid, 0)),
        };
        tx.commit()?;
        // Its members now (devices its old rules matched and the new do not got
        // a new revision too, but are not members).
        let members = entries
            .iter()
            .filter(|(_, e)| e.groups.iter().any(|g| g == name))
            .count();
        *self.groups.write().unwrap_or_else(|p| p.into_inner()) = groups;
        self.set_entries_and_trim(entries);
        Ok((
            if current.is_some() {
                WriteOutcome::Updated(revision)
            } else {
                WriteOutcome::Created(revision)
            },
            members,
        ))
    }

    /// Removes a group: devices assigned to it lose it, its members get their
    /// effective config without it. Its history stays.
    pub fn delete_group(
        &self,
        name: &str,
        expect: Precondition,
    ) -> Result<(WriteOutcome, usize), DbError> {
        let mut conn = lock(&self.writer);
        let mut groups = self.groups();
        let Some(current) = groups.get(name).map(|g| g.revision) else {
            return Ok((
                match expect {
                    Precondition::None | Precondition::Absent | Precondition::NoneOf(_) => {
                        WriteOutcome::NotFound
                    }
                    _ => WriteOutcome::PreconditionFailed(None),
                },
                0,
            ));
        };
        if !expect.holds(Some(current)) || expect == Precondition::Absent {
            return Ok((WriteOutcome::PreconditionFailed(Some(current)), 0));
        }
        let before: Vec<(String, Arc<Entry>, Option<Vec<String>>)> = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| {
                e.groups.iter().any(|g| g == name) || e.assigned.iter().any(|g| g == name)
            })
            .map(|(id, e)| {
                let assigned: Vec<String> =
                    e.assigned.iter().filter(|g| *g != name).cloned().collect();
                (id.clone(), e.clone(), Some(assigned))
            })
            .collect();
        groups.remove(name);
        let revision = current + 1;
        let tx = conn.transaction()?;
        insert_group_history(&tx, self.history_keep, name, revision, None, now())?;
        tx.execute("DELETE FROM groups WHERE name = ?1", params![name])?;
        let entries = match restack(
            &tx,
            self.history_keep,
            &groups,
            before,
            &format!("group:{name}"),
        )? {
            Ok(entries) => entries,
            Err(invalid) => return Ok((invalid, 0)),
        };
        tx.commit()?;
        let members = entries.len();
        *self.groups.write().unwrap_or_else(|p| p.into_inner()) = groups;
        self.set_entries_and_trim(entries);
        Ok((WriteOutcome::Deleted(revision), members))
    }

    /// Devices that are in group `name` now or are with `groups`.
    fn members_before_or_after(
        &self,
        name: &str,
        groups: &Groups,
    ) -> Vec<(String, Arc<Entry>, Option<Vec<String>>)> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(id, e)| {
                e.groups.iter().any(|g| g == name)
                    || resolve(&e.assigned, id, e.device_type.as_deref(), groups)
                        .iter()
                        .any(|g| g == name)
            })
            .map(|(id, e)| (id.clone(), e.clone(), None))
            .collect()
    }

    /// The device a change is for, if it exists and `expect` holds for it
    /// (called with the writer locked).
    fn to_change(
        &self,
        device_id: &str,
        expect: &Precondition,
    ) -> Result<Arc<Entry>, WriteOutcome> {
        let existing = self.get(device_id).ok_or(WriteOutcome::NotFound)?;
        if !expect.holds(Some(existing.revision)) {
            return Err(WriteOutcome::PreconditionFailed(Some(existing.revision)));
        }
        Ok(existing)
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

    /// A device's revisions, oldest first (at most `limit`, the newest ones).
    pub fn history(&self, device_id: &str, limit: usize) -> Result<Vec<Revision>, DbError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT revision, config, updated_at, COALESCE(layer, 'device') FROM history
             WHERE device_id = ?1 ORDER BY revision DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![device_id, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, Some(r.get(3)?)))
        })?;
        revisions(rows, device_id)
    }

    /// A group's revisions, oldest first (at most `limit`, the newest ones).
    pub fn group_history(&self, name: &str, limit: usize) -> Result<Vec<Revision>, DbError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT revision, config, updated_at FROM group_history
             WHERE name = ?1 ORDER BY revision DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![name, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, None))
        })?;
        revisions(rows, name)
    }
}

type HistoryRow = (i64, Option<String>, f64, Option<String>);

fn revisions(
    rows: impl Iterator<Item = rusqlite::Result<HistoryRow>>,
    what: &str,
) -> Result<Vec<Revision>, DbError> {
    let mut out = Vec::new();
    for row in rows {
        let (revision, config, updated_at, layer) = row?;
        let config = config
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| DbError::Corrupt(what.to_owned(), e))?;
        out.push(Revision {
            revision: revision as u64,
            updated_at,
            config,
            layer,
        });
    }
    out.reverse();
    Ok(out)
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

fn next_group_revision(conn: &Connection, name: &str) -> Result<u64, DbError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT MAX(revision) FROM group_history WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(last.unwrap_or(0) as u64 + 1)
}

fn insert_history(
    conn: &Connection,
    keep: u64,
    device_id: &str,
    revision: u64,
    config: Option<&Doc>,
    layer: &str,
    updated_at: f64,
) -> Result<(), DbError> {
    let text = config.map(|c| serde_json::Value::Object(c.clone()).to_string());
    conn.prepare_cached(
        "INSERT INTO history (device_id, revision, config, updated_at, layer) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![device_id, revision as i64, text, updated_at, layer])?;
    // Only the newest `keep` revisions stay.
    if revision > keep {
        conn.prepare_cached("DELETE FROM history WHERE device_id = ?1 AND revision <= ?2")?
            .execute(params![device_id, (revision - keep) as i64])?;
    }
    Ok(())
}

/// Records a group's revision (`None`: its deletion), keeping its newest `keep`.
fn insert_group_history(
    conn: &Connection,
    keep: u64,
    name: &str,
    revision: u64,
    document: Option<String>,
    updated_at: f64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO group_history (name, revision, config, updated_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![name, revision as i64, document, updated_at])?;
    if revision > keep {
        conn.prepare_cached("DELETE FROM group_history WHERE name = ?1 AND revision <= ?2")?
            .execute(params![name, (revision - keep) as i64])?;
    }
    Ok(())
}

/// Cuts every device's and group's history to its newest `keep` revisions
/// (a database from before the limit, or a smaller limit).
fn prune_all_history(conn: &Connection, keep: u64) -> Result<(), DbError> {
    let keep = keep as i64;
    let removed = conn.execute(
        "DELETE FROM history WHERE revision <= (SELECT MAX(h.revision) FROM history h WHERE h.device_id = history.device_id) - ?1",
        params![keep],
    )? + conn.execute(
        "DELETE FROM group_history WHERE revision <= (SELECT MAX(g.revision) FROM group_history g WHERE g.name = group_history.name) - ?1",
        params![keep],
    )?;
    if removed > 0 {
        tracing::info!(removed, keep, "history beyond the newest revisions removed");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revisions_history_and_preconditions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("configs.db");
        let db = Db::open(&path).expect("open");
        let c1 = json!({"device_type": "linux", "metrics": {"a": true}});
        assert_eq!(
            db.put("edge-01", &c1, "linux", Precondition::Absent)
                .expect("put"),
            WriteOutcome::Created(1)
        );
        assert_eq!(
            db.put("edge-01", &c1, "linux", Precondition::Absent)
                .expect("put"),
            WriteOutcome::PreconditionFailed(Some(1))
        );
        let c2 = json!({"device_type": "linux", "metrics": {"a": false}});
        assert_eq!(
            db.put("edge-01", &c2, "linux", Precondition::Revision(vec![1]))
                .expect("put"),
            WriteOutcome::Updated(2)
        );
        // A writer that still holds revision 1 loses.
        assert_eq!(
            db.put("edge-01", &c1, "linux", Precondition::Revision(vec![1]))
                .expect("put"),
            WriteOutcome::PreconditionFailed(Some(2))
        );
        assert_eq!(
            db.delete("edge-01", Precondition::Revision(vec![2]))
                .expect("delete"),
            WriteOutcome::Deleted(3)
        );
        assert!(db.get("edge-01").is_none());
        // Created again: the revisions go on, so an old ETag never matches.
        assert_eq!(
            db.put("edge-01", &c1, "linux", Precondition::None)
                .expect("put"),
            WriteOutcome::Created(4)
        );
        db.touch("edge-01", None);
        assert_eq!(db.flush_contacts().expect("flush"), 1);
        drop(db);

        // Everything is on disk.
        let db = Db::open(&path).expect("reopen");
        let e = db.get("edge-01").expect("entry");
        assert_eq!(e.revision, 4);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&e.config).expect("json"),
            c1
        );
        assert!(db.last_contact("edge-01").is_some());
        let history = db.history("edge-01", 100).expect("history");
        let revisions: Vec<u64> = history.iter().map(|r| r.revision).collect();
        assert_eq!(revisions, [1, 2, 3, 4]);
        assert_eq!(history[1].config, Some(c2));
        assert_eq!(history[2].config, None, "the deletion");
        assert_eq!(db.history("edge-01", 2).expect("history").len(), 2);
        assert_eq!(
            db.delete("nobody", Precondition::None).expect("delete"),
            WriteOutcome::NotFound
        );
    }

    fn effective(db: &Db, id: &str) -> serde_json::Value {
        serde_json::from_slice(&db.get(id).expect("device").config).expect("json")
    }

    fn doc(v: serde_json::Value) -> Doc {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn groups_layer_under_device_overrides_and_every_change_is_a_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("configs.db");
        let db = Db::open(&path).expect("open");
        let jetsons = Rules::parse(&json!({"device_type": "jetson_*"})).expect("rules");
        let (outcome, members) = db
            .put_group(
                "jetsons",
                doc(json!({"metrics": {"gpu": false}})),
                Some(jetsons),
                Precondition::Absent,
            )
            .expect("group");
        assert_eq!((outcome, members), (WriteOutcome::Created(1), 0));
        // Registering: the file is the base, the matching group wins over it, and
        // a second revision holds that.
        let file = json!({"device_type": "jetson_orin", "interval": 15, "metrics": {"gpu": true, "cpu": true}});
        assert_eq!(
            db.put("orin-1", &file, "jetson_orin", Precondition::Absent)
                .expect("put"),
            WriteOutcome::Created(1)
        );
        let entry = db.get("orin-1").expect("entry");
        assert_eq!(entry.revision, 2);
        assert_eq!(entry.groups, ["jetsons"]);
        assert_eq!(effective(&db, "orin-1")["metrics"]["gpu"], false);
        // A Pi does not match.
        let pi = json!({"device_type": "raspberry_pi", "metrics": {"gpu": true}});
        db.put("pi-1", &pi, "raspberry_pi", Precondition::None)
            .expect("put");
        assert_eq!(db.get("pi-1").expect("pi").revision, 1);
        // The device switches gpu on (over revision 2): an override.
        let mut body = effective(&db, "orin-1");
        body["metrics"]["gpu"] = json!(true);
        assert_eq!(
            db.put(
                "orin-1",
                &body,
                "jetson_orin",
                Precondition::Revision(vec![2])
            )
            .expect("put"),
            WriteOutcome::Updated(3)
        );
        assert_eq!(db.get("orin-1").expect("entry").overrides, 1);
        // The group changes another key: every member gets a new revision, the
        // override stays; a stale If-Match on the group fails.
        assert_eq!(
            db.put_group(
                "jetsons",
                doc(json!({"metrics": {"gpu": false}, "interval": 30})),
                None,
                Precondition::Revision(vec![7])
            )
            .expect("stale")
            .0,
            WriteOutcome::PreconditionFailed(Some(1))
        );
        let rules = Rules::parse(&json!({"device_type": "jetson_*"})).expect("rules");
        assert_eq!(
            db.put_group(
                "jetsons",
                doc(json!({"metrics": {"gpu": false}, "interval": 30})),
                Some(rules),
                Precondition::Revision(vec![1])
            )
            .expect("group"),
            (WriteOutcome::Updated(2), 1)
        );
        let now = effective(&db, "orin-1");
        assert_eq!(
            (now["interval"].clone(), now["metrics"]["gpu"].clone()),
            (json!(30), json!(true))
        );
        assert_eq!(db.get("orin-1").expect("entry").revision, 4);
        assert_eq!(db.get("pi-1").expect("pi").revision, 1, "not a member");
        // A second, assigned group later in the order wins over the first.
        db.put_group("lab", doc(json!({"interval": 5})), None, Precondition::None)
            .expect("lab");
        assert_eq!(
            db.set_groups(
                "orin-1",
                vec!["lab".into()],
                Precondition::Revision(vec![4])
            )
            .expect("assign"),
            WriteOutcome::Updated(5)
        );
        assert_eq!(db.get("orin-1").expect("entry").groups, ["jetsons", "lab"]);
        assert_eq!(effective(&db, "orin-1")["interval"], 5);
        assert_eq!(
            db.set_groups("orin-1", vec!["nope".into()], Precondition::None)
                .expect("assign"),
            WriteOutcome::Missing("Unknown group: nope".into())
        );
        // Dropping the override brings the group's value back.
        assert_eq!(
            db.drop_override(
                "orin-1",
                Some("metrics.gpu"),
                Precondition::Revision(vec![5])
            )
            .expect("drop"),
            WriteOutcome::Updated(6)
        );
        assert_eq!(effective(&db, "orin-1")["metrics"]["gpu"], false);
        assert!(matches!(
            db.drop_override("orin-1", Some("metrics.gpu"), Precondition::None)
                .expect("drop"),
            WriteOutcome::Missing(_)
        ));
        // Deleting a group takes it off its members.
        assert_eq!(
            db.delete_group("lab", Precondition::None)
                .expect("delete")
                .0,
            WriteOutcome::Deleted(2)
        );
        assert_eq!(effective(&db, "orin-1")["interval"], 30);
        assert!(db.get("orin-1").expect("entry").assigned.is_empty());
        let layers: Vec<String> = db
            .history("orin-1", 100)
            .expect("history")
            .into_iter()
            .filter_map(|r| r.layer)
            .collect();
        assert_eq!(
            layers,
            [
                "device",
                "groups",
                "device",
                "group:jetsons",
                "membership",
                "device",
                "group:lab"
            ]
        );
        drop(db);
        // Everything comes back after a restart.
        let db = Db::open(&path).expect("reopen");
        let entry = db.get("orin-1").expect("entry");
        assert_eq!(
            (entry.revision, entry.groups.clone()),
            (7, vec!["jetsons".to_owned()])
        );
        assert_eq!(db.group("jetsons").expect("group").revision, 2);
        assert_eq!(db.group_history("lab", 10).expect("history").len(), 2);
    }

    #[test]
    fn history_keeps_the_newest_revisions_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("configs.db");
        let db = Db::open_keeping(&path, 5).expect("open");
        for i in 0..12 {
            db.put(
                "orin-1",
                &json!({"device_type": "jetson_orin", "interval": i + 1}),
                "jetson_orin",
                Precondition::None,
            )
            .expect("put");
            db.put_group(
                "lab",
                doc(json!({"interval": i + 1})),
                None,
                Precondition::None,
            )
            .expect("group");
        }
        let history = db.history("orin-1", 1000).expect("history");
        assert_eq!(history.len(), 5, "{history:?}");
        let newest = db.get("orin-1").expect("entry").revision;
        // Oldest first.
        assert_eq!(history[4].revision, newest);
        assert_eq!(history[0].revision, newest - 4);
        assert_eq!(db.group_history("lab", 1000).expect("history").len(), 5);
        drop(db);
        // A smaller limit applies at once when the database opens.
        let db = Db::open_keeping(&path, 2).expect("reopen");
        assert_eq!(db.history("orin-1", 1000).expect("history").len(), 2);
        assert_eq!(db.group_history("lab", 1000).expect("history").len(), 2);
    }

    #[test]
    fn rules_that_stop_matching_give_the_leavers_a_revision_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("configs.db")).expect("open");
        let file = json!({"device_type": "jetson_orin", "interval": 15});
        db.put("orin-1", &file, "jetson_orin", Precondition::None)
            .expect("put");
        let rules = |p: &str| Some(Rules::parse(&json!({"device_type": p})).expect("rules"));
        let (_, members) = db
            .put_group(
                "slow",
                doc(json!({"interval": 60})),
                rules("jetson_*"),
                Precondition::None,
            )
            .expect("group");
        assert_eq!(members, 1);
        assert_eq!(effective(&db, "orin-1")["interval"], 60);
        let before = db.get("orin-1").expect("entry").revision;
        let (_, members) = db
            .put_group(
                "slow",
                doc(json!({"interval": 60})),
                rules("raspberry_*"),
                Precondition::None,
            )
            .expect("group");
        assert_eq!(members, 0, "no member left");
        let entry = db.get("orin-1").expect("entry");
        assert_eq!(entry.revision, before + 1, "the leaver's config changed");
        assert!(entry.groups.is_empty());
        assert_eq!(effective(&db, "orin-1")["interval"], 15);
    }

    #[test]
    fn a_database_from_before_groups_keeps_its_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("configs.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE devices (device_id TEXT PRIMARY KEY, revision INTEGER NOT NULL,
                     config TEXT NOT NULL, device_type TEXT, updated_at REAL NOT NULL, last_contact REAL);
                 CREATE TABLE history (device_id TEXT NOT NULL, revision INTEGER NOT NULL,
                     config TEXT, updated_at REAL NOT NULL, PRIMARY KEY (device_id, revision));
                 INSERT INTO devices VALUES ('old-1', 3, '{\"device_type\":\"linux\",\"interval\":15}', 'linux', 1.0, NULL);
                 INSERT INTO history VALUES ('old-1', 3, '{\"device_type\":\"linux\",\"interval\":15}', 1.0);",
            )
            .expect("old schema");
        }
        let db = Db::open(&path).expect("migrate");
        assert_eq!(db.get("old-1").expect("entry").revision, 3);
        // Its old config is its base: a group it joins wins over it.
        db.put_group(
            "slow",
            doc(json!({"interval": 60})),
            None,
            Precondition::None,
        )
        .expect("group");
        db.set_groups(
            "old-1",
            vec!["slow".into()],
            Precondition::Revision(vec![3]),
        )
        .expect("assign");
        assert_eq!(effective(&db, "old-1")["interval"], 60);
        assert_eq!(
            db.history("old-1", 10).expect("history")[0]
                .layer
                .as_deref(),
            Some("device")
        );
    }
}
