//! Replacing a file so that a crash at any moment leaves the old or the new
//! version, never half of one: the one writer of `config.yaml`, the sync queue
//! (`<config>.sync.json`) and the remote-write buffer's cursor.
//!
//! A write is: temp file in the same directory, fsync, rename over the target,
//! fsync the directory. [`write_atomically_if`] checks a condition right before the
//! rename, which the config store uses with [`fingerprint`] to notice a file edited
//! by hand in the meantime.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// What identifies one version of a file: inode, size and modification time.
pub fn fingerprint(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Replaces `path` with `contents` so that a crash at any point leaves either the
/// old or the new file: temp file in the same directory, fsync, rename, fsync the
/// directory. A symlinked config is written through to its target, and the file
/// keeps its permissions.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomically_if(path, contents, || true).map(|_| ())
}

/// [`write_atomically`], but the rename happens only if `still_valid()` holds
/// right before it; returns whether the file was replaced.
pub fn write_atomically_if(
    path: &Path,
    contents: &[u8],
    still_valid: impl Fn() -> bool,
) -> io::Result<bool> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".config-")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    tmp.write_all(contents)?;
    match fs::metadata(&target) {
        Ok(meta) => tmp.as_file().set_permissions(meta.permissions())?,
        Err(_) => {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))?;
        }
    }
    tmp.as_file().sync_all()?;
    if !still_valid() {
        // Dropping the temp file removes it.
        return Ok(false);
    }
    tmp.persist(&target).map_err(|e| e.error)?;
    File::open(&dir)?.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_or_declines_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"one");
        let before = fingerprint(&path);
        assert!(before.is_some());
        assert!(!write_atomically_if(&path, b"two", || false).expect("declined"));
        assert_eq!(
            fs::read(&path).expect("read"),
            b"one",
            "declined: unchanged"
        );
        assert!(write_atomically_if(&path, b"three", || true).expect("write"));
        assert_eq!(fs::read(&path).expect("read"), b"three");
        assert_ne!(fingerprint(&path), before, "a new inode");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["state.json"], "no temp file left behind");
    }
}
