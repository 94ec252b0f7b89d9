//! The roots every hardware read goes through (`--path.procfs`, `--path.sysfs`,
//! `--path.rootfs`).
//!
//! Readers never name `/proc` or `/sys` themselves: they receive a [`Paths`] value
//! and join relative paths onto it, so the whole exporter runs against a fixture
//! tree in tests. This module also holds the small file helpers that turn sysfs
//! attributes into numbers, with "absent" (`None`) for anything unreadable.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Filesystem roots for procfs, sysfs and the root filesystem (for `/etc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl Paths {
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }

    /// A path under the root filesystem, e.g. `etc/nv_tegra_release`.
    pub fn root(&self, rel: &str) -> PathBuf {
        self.rootfs.join(rel)
    }

    /// The machine's hostname (the `hostname` label and the default device id):
    /// the kernel's (`<procfs>/sys/kernel/hostname`), else `<rootfs>/etc/hostname`,
    /// else `localhost`. In a container given the host's `/proc`, the host's name.
    pub fn hostname(&self) -> String {
        [self.proc("sys/kernel/hostname"), self.root("etc/hostname")]
            .iter()
            .find_map(|p| read_attr(p))
            .unwrap_or_else(|| "localhost".to_owned())
    }
}

/// Reads a small text file (a sysfs attribute or a procfs table).
pub fn read_string(path: &Path) -> io::Result<String> {
    fs::read_to_string(path)
}

/// Reads a sysfs attribute and trims it; `None` when it is missing or unreadable
/// (sysfs answers EIO, ENODATA or EAGAIN for sensors that are off).
pub fn read_attr(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Reads a sysfs attribute holding one integer.
pub fn read_i64(path: &Path) -> Option<i64> {
    read_attr(path)?.parse().ok()
}

/// Reads a sysfs attribute holding one integer with one `open` and one `read`
/// into a buffer on the stack: what samplers use many times a second.
pub fn read_i64_fast(path: &Path) -> Option<i64> {
    use std::io::Read;
    let mut buf = [0u8; 40];
    let n = fs::File::open(path).ok()?.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The names of the entries of `dir` that start with `prefix`, sorted so that
/// `cpu2` comes before `cpu10`. A missing directory is an empty list.
pub fn list_prefixed(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    names
}

/// Orders names with a trailing number by that number (`hwmon2` < `hwmon10`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(s: &str) -> (&str, Option<u64>) {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = s.split_at(s.len() - digits);
        (head, tail.parse().ok())
    }
    let (ha, na) = split(a);
    let (hb, nb) = split(b);
    ha.cmp(hb).then(na.cmp(&nb)).then(a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_through_the_roots() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = Paths {
            procfs: tmp.path().join("proc"),
            sysfs: tmp.path().join("sys"),
            rootfs: tmp.path().to_owned(),
        };
        assert_eq!(paths.hostname(), "localhost");
        fs::create_dir_all(tmp.path().join("etc")).expect("mkdir");
        fs::write(tmp.path().join("etc/hostname"), "from-etc\n").expect("write");
        assert_eq!(paths.hostname(), "from-etc");
        fs::create_dir_all(tmp.path().join("proc/sys/kernel")).expect("mkdir");
        fs::write(tmp.path().join("proc/sys/kernel/hostname"), "orin-01\n").expect("write");
        assert_eq!(paths.hostname(), "orin-01");
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["cpu10", "cpu2", "cpu1", "cpufreq", "cpu"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["cpu", "cpu1", "cpu2", "cpu10", "cpufreq"]);
    }
}
