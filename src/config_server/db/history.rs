//! History: every revision of a device's and a group's config, pruned to the
//! newest `history_keep`.

use super::*;

pub(super) type HistoryRow = (i64, Option<String>, f64, Option<String>);

pub(super) fn revisions(
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

pub(super) fn insert_history(
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
pub(super) fn insert_group_history(
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
pub(super) fn prune_all_history(conn: &Connection, keep: u64) -> Result<(), DbError> {
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

impl Db {
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
