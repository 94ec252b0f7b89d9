//! Devices: the in-memory view of every device's current revision, last
//! contacts, and the writes of a device's config, overrides and groups.

use super::*;

impl Db {
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
        if let Err(outcome) = expect.admit(current, Target::Either) {
            return Ok(outcome);
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
        let existing = self.get(device_id);
        if let Err(outcome) = expect.admit(existing.as_ref().map(|e| e.revision), Target::Removed) {
            return Ok(outcome);
        }
        let Some(existing) = existing else {
            return Ok(WriteOutcome::NotFound);
        };
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
}
