//! The database file: its pragmas, its tables and the migrations of older files,
//! and what is loaded into memory at open.

use super::*;

/// Adds `column` to `table` when an older database lacks it.
pub(super) fn add_column(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> Result<(), DbError> {
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
}
