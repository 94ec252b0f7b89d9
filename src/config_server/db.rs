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

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::unix_now as now;
use crate::lock::lock;

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
    /// The config as JSON text, served as is.
    pub config: Bytes,
    pub device_type: Option<String>,
    /// Unix seconds of the revision.
    pub updated_at: f64,
}

/// One row of a device's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revision {
    pub revision: u64,
    pub updated_at: f64,
    /// `None` for a deletion.
    pub config: Option<serde_json::Value>,
}

/// What a conditional write expects the device's current state to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// `If-Match: "N"`.
    Revision(u64),
    /// `If-Match: *`: the device must exist.
    Exists,
    /// `If-None-Match: *`: the device must not exist.
    Absent,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Created(u64),
    Updated(u64),
    Deleted(u64),
    /// The precondition failed; the current revision, if any.
    PreconditionFailed(Option<u64>),
    NotFound,
}

#[derive(Debug)]
pub struct Db {
    writer: Mutex<Connection>,
    /// Token checks read through their own connection (WAL lets them run beside a
    /// commit), so a request's credential check never waits for another's fsync.
    reader: Mutex<Connection>,
    current: RwLock<HashMap<String, Arc<Entry>>>,
    /// Unix seconds of each device's last request, and whether it is unsaved.
    contacts: Mutex<HashMap<String, (f64, bool)>>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let conn = Connection::open(path)?;
        // WAL lets reads and the writer overlap; FULL syncs every commit, so an
        // acknowledged PUT survives a power cut.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
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
             );",
        )?;
        let reader = Connection::open(path)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut current = HashMap::new();
        let mut contacts = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT device_id, revision, config, device_type, updated_at, last_contact FROM devices",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, Option<f64>>(5)?,
                ))
            })?;
            for row in rows {
                let (id, revision, config, device_type, updated_at, contact) = row?;
                if let Some(t) = contact {
                    contacts.insert(id.clone(), (t, false));
                }
                current.insert(
                    id,
                    Arc::new(Entry {
                        revision: revision as u64,
                        config: Bytes::from(config),
                        device_type,
                        updated_at,
                    }),
                );
            }
        }
        Ok(Db {
            writer: Mutex::new(conn),
            reader: Mutex::new(reader),
            current: RwLock::new(current),
            contacts: Mutex::new(contacts),
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

    /// Whether any device has a token.
    pub fn has_tokens(&self) -> Result<bool, DbError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens)")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    /// The device whose token `token` is, if any. The stored hash is compared
    /// with the given token's in constant time.
    pub fn token_device(&self, token: &str) -> Result<Option<String>, DbError> {
        use subtle::ConstantTimeEq;
        let given = token_hash(token);
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached("SELECT device_id, hash FROM tokens WHERE hash = ?1")?;
        let found: Option<(String, Vec<u8>)> = stmt
            .query_row(params![given.as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(found
            .and_then(|(device, hash)| bool::from(hash.ct_eq(given.as_slice())).then_some(device)))
    }

    /// Whether `device_id` has a token.
    pub fn has_token(&self, device_id: &str) -> Result<bool, DbError> {
        let conn = lock(&self.reader);
        let mut stmt =
            conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE device_id = ?1)")?;
        Ok(stmt.query_row(params![device_id], |r| r.get(0))?)
    }

    pub fn get(&self, device_id: &str) -> Option<Arc<Entry>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .cloned()
    }

    /// Every device: id, current entry, last contact.
    pub fn list(&self) -> Vec<(String, Arc<Entry>, Option<f64>)> {
        let contacts = lock(&self.contacts);
        let mut all: Vec<_> = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, e)| (id.clone(), e.clone(), contacts.get(id).map(|c| c.0)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn last_contact(&self, device_id: &str) -> Option<f64> {
        lock(&self.contacts).get(device_id).map(|c| c.0)
    }

    /// Records a request from the device itself (saved by [`Db::flush_contacts`]).
    pub fn touch(&self, device_id: &str) {
        lock(&self.contacts).insert(device_id.to_owned(), (now(), true));
    }

    /// Writes the contact times that changed since the last flush.
    pub fn flush_contacts(&self) -> Result<usize, DbError> {
        let dirty: Vec<(String, f64)> = {
            let mut contacts = lock(&self.contacts);
            contacts
                .iter_mut()
                .filter(|(_, (_, dirty))| *dirty)
                .map(|(id, (t, dirty))| {
                    *dirty = false;
                    (id.clone(), *t)
                })
                .collect()
        };
        if dirty.is_empty() {
            return Ok(0);
        }
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("UPDATE devices SET last_contact = ?2 WHERE device_id = ?1")?;
            for (id, t) in &dirty {
                stmt.execute(params![id, t])?;
            }
        }
        tx.commit()?;
        Ok(dirty.len())
    }

    /// Stores a new revision of `device_id`'s config (already validated).
    pub fn put(
        &self,
        device_id: &str,
        config: &serde_json::Value,
        device_type: &str,
        expect: Precondition,
    ) -> Result<WriteOutcome, DbError> {
        let mut conn = lock(&self.writer);
        let existing = self.get(device_id);
        let current = existing.as_ref().map(|e| e.revision);
        let allowed = match expect {
            Precondition::None => true,
            Precondition::Revision(r) => current == Some(r),
            Precondition::Exists => current.is_some(),
            Precondition::Absent => current.is_none(),
        };
        if !allowed {
            return Ok(WriteOutcome::PreconditionFailed(current));
        }
        let text = config.to_string();
        let updated_at = now();
        let tx = conn.transaction()?;
        // After a deletion the history goes on from its last revision.
        let last: Option<i64> = tx
            .query_row(
                "SELECT MAX(revision) FROM history WHERE device_id = ?1",
                params![device_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let revision = last.unwrap_or(0) as u64 + 1;
        tx.execute(
            "INSERT INTO history (device_id, revision, config, updated_at) VALUES (?1, ?2, ?3, ?4)",
            params![device_id, revision as i64, text, updated_at],
        )?;
        tx.execute(
            "INSERT INTO devices (device_id, revision, config, device_type, updated_at, last_contact)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL)
             ON CONFLICT(device_id) DO UPDATE SET revision = ?2, config = ?3, device_type = ?4, updated_at = ?5",
            params![device_id, revision as i64, text, device_type, updated_at],
        )?;
        tx.commit()?;
        self.current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                device_id.to_owned(),
                Arc::new(Entry {
                    revision,
                    config: Bytes::from(text),
                    device_type: Some(device_type.to_owned()),
                    updated_at,
                }),
            );
        Ok(if current.is_some() {
            WriteOutcome::Updated(revision)
        } else {
            WriteOutcome::Created(revision)
        })
    }

    /// Removes a device; its history stays, ending with the deletion.
    pub fn delete(&self, device_id: &str, expect: Precondition) -> Result<WriteOutcome, DbError> {
        let mut conn = lock(&self.writer);
        let Some(existing) = self.get(device_id) else {
            return Ok(match expect {
                Precondition::None | Precondition::Absent => WriteOutcome::NotFound,
                _ => WriteOutcome::PreconditionFailed(None),
            });
        };
        let allowed = match expect {
            Precondition::None | Precondition::Exists => true,
            Precondition::Revision(r) => existing.revision == r,
            Precondition::Absent => false,
        };
        if !allowed {
            return Ok(WriteOutcome::PreconditionFailed(Some(existing.revision)));
        }
        let revision = existing.revision + 1;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO history (device_id, revision, config, updated_at) VALUES (?1, ?2, NULL, ?3)",
            params![device_id, revision as i64, now()],
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

    /// A device's revisions, oldest first (at most `limit`, the newest ones).
    pub fn history(&self, device_id: &str, limit: usize) -> Result<Vec<Revision>, DbError> {
        let conn = lock(&self.writer);
        let mut stmt = conn.prepare_cached(
            "SELECT revision, config, updated_at FROM history WHERE device_id = ?1
             ORDER BY revision DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![device_id, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (revision, config, updated_at) = row?;
            let config = config
                .map(|c| serde_json::from_str(&c))
                .transpose()
                .map_err(|e| DbError::Corrupt(device_id.to_owned(), e))?;
            out.push(Revision {
                revision: revision as u64,
                updated_at,
                config,
            });
        }
        out.reverse();
        Ok(out)
    }
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
            db.put("edge-01", &c2, "linux", Precondition::Revision(1))
                .expect("put"),
            WriteOutcome::Updated(2)
        );
        // A writer that still holds revision 1 loses.
        assert_eq!(
            db.put("edge-01", &c1, "linux", Precondition::Revision(1))
                .expect("put"),
            WriteOutcome::PreconditionFailed(Some(2))
        );
        assert_eq!(
            db.delete("edge-01", Precondition::Revision(2))
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
        db.touch("edge-01");
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
}
