//! Per-device tokens: kept as SHA-256 hashes, checked per request from a cache
//! that rereads the table only after it changed.

use super::*;

/// A new device token: 32 random bytes from the kernel, as 64 hex digits.
pub(super) fn new_token() -> Result<String, DbError> {
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
pub(super) fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The tokens table as last read. SQLite's `data_version` says without any I/O
/// whether some connection committed since the last look; only then is the
/// counter that triggers on `tokens` keep (`meta.tokens`) read, and only when
/// that moved is the table read again.
#[derive(Debug, Default)]
pub(super) struct TokenCache {
    data_version: Option<i64>,
    tokens_version: Option<i64>,
    by_hash: HashMap<[u8; 32], String>,
}

impl Db {
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
}
