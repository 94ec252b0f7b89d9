//! Replacing a file so that a crash at any moment leaves the old or the new
//! version, never half of one: the one writer of `config.yaml`, the sync queue
//! (`<config>.sync.json`) and the remote-write buffer's cursor.
//!
//! A write is: a temp file in the same directory (`.<name>.<random>.tmp`), fsync,
//! rename over the target, fsync the directory. [`replace_if_unchanged`] is for a
//! file people edit too: it swaps the new version in with one atomic exchange and
//! looks at what it swapped out, so an edit saved at any moment (in place or with a
//! rename) is noticed and handed back, never overwritten. [`remove_leftovers`]
//! removes the temp files a crash left behind.
//!
//! Appends to the line files (`runs.jsonl`, the health log) go through
//! [`append_line`]: a whole record or nothing, also when the disk fills up
//! part-way through the write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a file swapped out is left alone before it is read: a program that
/// opened it just before the swap (`echo >> config.yaml`) finishes its write in
/// that time.
pub const SWAP_GRACE: Duration = Duration::from_millis(2);

/// What identifies one version of a file: inode, size and modification time.
pub fn fingerprint(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Replaces `path` with `contents` so that a crash at any point leaves either the
/// old or the new file: temp file in the same directory, fsync, rename, fsync the
/// directory. A symlinked file is written through to its target, and the file
/// keeps its permissions.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let staged = Staged::write(path, contents)?;
    staged.rename()
}

/// Appends `line` (one record, ending in a newline) to `path` and syncs it, or
/// leaves the file as it was: a write that fails part-way (a full disk, a quota)
/// is cut back to where it started before the error is returned. A last line
/// without its newline (a crash mid-append, or a cut that itself failed) is cut
/// off first, so a new record never glues onto half of an old one.
pub fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let result = append_line_inner(path, line);
    if result.is_err() {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        *crate::lock::lock(&APPEND_FAILURES).entry(name).or_default() += 1;
    }
    result
}

/// Appends that failed (nothing written, nothing acknowledged), by file name.
static APPEND_FAILURES: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// How many appends to each file failed since the start.
pub fn append_failures() -> Vec<(String, u64)> {
    crate::lock::lock(&APPEND_FAILURES)
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn append_line_inner(path: &Path, line: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    let len = file.metadata()?.len();
    let end = whole_lines_end(&mut file, len)?;
    if end < len {
        tracing::warn!(path = %path.display(), cut = len - end, "a torn last line was cut off");
        file.set_len(end)?;
    }
    file.seek(SeekFrom::Start(end))?;
    let mut record = line.to_vec();
    if !record.ends_with(b"\n") {
        record.push(b'\n');
    }
    if let Err(e) = file.write_all(&record).and_then(|()| file.sync_data()) {
        // Whatever part of it reached the file goes again; if even this fails,
        // the next append cuts the torn line.
        let _ = file.set_len(end).and_then(|()| file.sync_data());
        return Err(e);
    }
    Ok(())
}

/// Where the last whole line of `file` (of length `len`) ends: `len` when it
/// ends in a newline, else just after the last newline (0 when there is none).
fn whole_lines_end(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if end == len && chunk[n - 1] == b'\n' {
            return Ok(len);
        }
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// How [`replace_if_unchanged`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// The file holds `contents` now.
    Done,
    /// The file no longer held what the caller read: someone wrote it in between.
    /// It holds their version (given here) again, untouched; the caller redoes its
    /// change on it.
    Changed(Vec<u8>),
}

/// Replaces `path` with `contents` if it still holds `expected` (what the caller
/// read and changed), without ever losing a version someone else saved meanwhile.
///
/// The new file is swapped in with one atomic exchange (`renameat2`,
/// `RENAME_EXCHANGE`), which also moves the version it replaces to the temp path;
/// after [`SWAP_GRACE`] that version is read. If it is not `expected`, somebody
/// saved the file between the caller's read and the exchange (by rename or in
/// place), and their version is swapped back in and returned. A file that does not
/// exist is simply created. On filesystems without the exchange, the file is
/// compared right before a plain rename.
pub fn replace_if_unchanged(path: &Path, contents: &[u8], expected: &[u8]) -> io::Result<Replaced> {
    let staged = Staged::write(path, contents)?;
    let current = match fs::read(&staged.target) {
        Ok(current) => current,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            staged.rename()?;
            return Ok(Replaced::Done);
        }
        Err(e) => return Err(e),
    };
    if current != expected {
        // Saved while the new version was being written: nothing to swap.
        return Ok(Replaced::Changed(current));
    }
    if !staged.exchange()? {
        // No exchange here: check, then rename (a save in between is possible).
        let current = fs::read(&staged.target)?;
        if current != expected {
            return Ok(Replaced::Changed(current));
        }
        staged.rename()?;
        return Ok(Replaced::Done);
    }
    std::thread::sleep(SWAP_GRACE);
    let swapped_out = fs::read(&staged.temp)?;
    if swapped_out == expected {
        let dir = staged.dir.clone();
        drop(staged);
        File::open(&dir)?.sync_all()?;
        return Ok(Replaced::Done);
    }
    // Theirs goes back in place; ours, now at the temp path, is dropped.
    if !staged.exchange()? {
        return Err(io::Error::other("the file could not be swapped back"));
    }
    File::open(&staged.dir)?.sync_all()?;
    Ok(Replaced::Changed(swapped_out))
}

/// A new version written beside the target, not yet in place. Dropped, it removes
/// its temp file.
struct Staged {
    target: PathBuf,
    dir: PathBuf,
    temp: PathBuf,
    /// Whether `temp` still needs removing.
    owned: bool,
}

impl Staged {
    fn write(path: &Path, contents: &[u8]) -> io::Result<Staged> {
        let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(&target))
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
        let (_, temp) = tmp.keep().map_err(|e| e.error)?;
        Ok(Staged {
            target,
            dir,
            temp,
            owned: true,
        })
    }

    /// Renames the new version over the target.
    fn rename(mut self) -> io::Result<()> {
        fs::rename(&self.temp, &self.target)?;
        self.owned = false;
        File::open(&self.dir)?.sync_all()
    }

    /// Swaps the temp file and the target; false when the filesystem cannot.
    /// (`renameat2` through rustix's own syscalls: musl's libc has no wrapper.)
    fn exchange(&self) -> io::Result<bool> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(CWD, &self.temp, CWD, &self.target, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.owned {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The temp files of `target` start with this: `.config.yaml.`.
fn temp_prefix(target: &Path) -> String {
    format!(
        ".{}.",
        target.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// Removes the temp files a crash left beside `path` (`.<name>.*.tmp`, which
/// covers `<name>.sync.json` too, and the `.config-*.tmp` of earlier versions):
/// only ours, only in that directory.
/// Returns how many were removed. Call it before anything writes `path`.
pub fn remove_leftovers(path: &Path) -> usize {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = temp_prefix(&target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.ends_with(".tmp")
            && (name.starts_with(&prefix) || name.starts_with(".config-"))
            && entry.file_type().is_ok_and(|t| t.is_file());
        if ours && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn appends_whole_lines_and_cuts_a_torn_one_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runs.jsonl");
        append_line(&path, b"{\"a\":1}\n").expect("append");
        append_line(&path, b"{\"b\":2}").expect("append adds the newline");
        assert_eq!(fs::read(&path).expect("read"), b"{\"a\":1}\n{\"b\":2}\n");
        // A crash (or a full disk) left half a record.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"").expect("torn");
        drop(f);
        append_line(&path, b"{\"c\":3}\n").expect("append");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
        );
        // A long torn tail, over several chunks, with no newline before it.
        let only = dir.path().join("only.jsonl");
        fs::write(&only, vec![b'x'; 10_000]).expect("write");
        append_line(&only, b"ok\n").expect("append");
        assert_eq!(fs::read(&only).expect("read"), b"ok\n");
    }

    #[test]
    fn writes_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"one");
        let before = fingerprint(&path);
        write_atomically(&path, b"two").expect("write");
        assert_ne!(fingerprint(&path), before, "a new inode");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_save_in_between_is_handed_back_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        fs::write(&path, "a: 1\n").expect("write");
        // Read as "a: 1", but someone saved "a: 1\nmine: 2\n" since.
        fs::write(&path, "a: 1\nmine: 2\n").expect("save");
        let r = replace_if_unchanged(&path, b"a: 2\n", b"a: 1\n").expect("replace");
        assert_eq!(r, Replaced::Changed(b"a: 1\nmine: 2\n".to_vec()));
        assert_eq!(fs::read_to_string(&path).expect("read"), "a: 1\nmine: 2\n");
        // Redone on their version.
        let r =
            replace_if_unchanged(&path, b"a: 2\nmine: 2\n", b"a: 1\nmine: 2\n").expect("replace");
        assert_eq!(r, Replaced::Done);
        assert_eq!(fs::read_to_string(&path).expect("read"), "a: 2\nmine: 2\n");
        assert_eq!(names(dir.path()), ["config.yaml"], "no temp file left");
        // A file that is gone is created.
        fs::remove_file(&path).expect("rm");
        assert_eq!(
            replace_if_unchanged(&path, b"new", b"old").expect("create"),
            Replaced::Done
        );
        assert_eq!(fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn leftovers_of_ours_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        for name in [
            "config.yaml",
            ".config.yaml.a1b2c3.tmp",
            ".config-x9y8z7.tmp",
            ".config.yaml.sync.json.q1.tmp",
            ".other.tmp",
            ".config.yaml.keep",
            "notes.tmp",
        ] {
            fs::write(dir.path().join(name), "x").expect("write");
        }
        // The config's, the sync state's beside it, and the old pattern.
        assert_eq!(remove_leftovers(&path), 3);
        assert_eq!(
            names(dir.path()),
            [
                ".config.yaml.keep",
                ".other.tmp",
                "config.yaml",
                "notes.tmp"
            ]
        );
        assert_eq!(remove_leftovers(&path), 0);
    }
}
