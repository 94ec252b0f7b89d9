//! Groups: their configs and rules, and the writes that give every member a
//! new revision in the same transaction.

use super::*;

pub(super) fn next_group_revision(conn: &Connection, name: &str) -> Result<u64, DbError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT MAX(revision) FROM group_history WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(last.unwrap_or(0) as u64 + 1)
}

impl Db {
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
        if let Err(outcome) = expect.admit(current, Target::Either) {
            return Ok((outcome, 0));
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
        let current = groups.get(name).map(|g| g.revision);
        if let Err(outcome) = expect.admit(current, Target::Removed) {
            return Ok((outcome, 0));
        }
        let Some(current) = current else {
            return Ok((WriteOutcome::NotFound, 0));
        };
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
}
