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

/// A directory of sysfs attributes read many times a second (a sampler's), by file
/// name. Each file is opened once, relative to the directory, and read again with
/// `pread` at offset 0: sysfs makes a fresh value for every read from the start, so
/// one system call gives one value. An inotify watch on the directory tells when a
/// file was replaced (a rename over it, as tests and some tools do): [`AttrDir::refresh`]
/// then drops the open files, and the next reads open the new ones. Without inotify
/// every read opens the file anew.
#[derive(Debug)]
pub struct AttrDir {
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
    files: std::sync::Mutex<Vec<(std::ffi::CString, std::os::fd::OwnedFd)>>,
    watch: Option<std::os::fd::OwnedFd>,
}

impl AttrDir {
    pub fn open(path: &Path) -> Option<Self> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        use rustix::fs::{Mode, OFlags, openat};
        let fd = openat(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let watch = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)
            .ok()
            .filter(|w| {
                let events = WatchFlags::CREATE
                    | WatchFlags::MOVED_TO
                    | WatchFlags::MOVED_FROM
                    | WatchFlags::DELETE;
                inotify::add_watch(w, path, events).is_ok()
            });
        Some(AttrDir {
            fd,
            path: path.to_owned(),
            files: std::sync::Mutex::new(Vec::new()),
            watch,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the open files when one of the directory's was replaced since the
    /// last call. Once per round of reads is enough.
    pub fn refresh(&self) {
        let Some(watch) = &self.watch else { return };
        let mut buf = [0u8; 1024];
        let mut replaced = false;
        while let Ok(n) = rustix::io::read(watch, &mut buf) {
            if n == 0 {
                break;
            }
            replaced = true;
        }
        if replaced {
            crate::lock::lock(&self.files).clear();
        }
    }

    /// The integer in the file `name` of this directory.
    pub fn read_i64(&self, name: &std::ffi::CStr) -> Option<i64> {
        use rustix::fs::{Mode, OFlags, openat};
        let open = || {
            openat(
                &self.fd,
                name,
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
        };
        let mut buf = [0u8; 40];
        let n = if self.watch.is_some() {
            let mut files = crate::lock::lock(&self.files);
            let i = match files.iter().position(|(n, _)| n.as_c_str() == name) {
                Some(i) => i,
                None => {
                    files.push((name.to_owned(), open()?));
                    files.len() - 1
                }
            };
            match rustix::io::pread(&files[i].1, &mut buf, 0) {
                Ok(n) => n,
                Err(_) => {
                    // Opened again next time (a driver that went away and back).
                    files.swap_remove(i);
                    return None;
                }
            }
        } else {
            rustix::io::read(&open()?, &mut buf).ok()?
        };
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }
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

    #[test]
    fn attribute_dir_reads_fresh_values_and_follows_replaced_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("in1_input");
        fs::write(&file, "5000\n").expect("write");
        let dir = AttrDir::open(tmp.path()).expect("dir");
        let name = c"in1_input";
        assert_eq!(dir.read_i64(name), Some(5000));
        // Written in place: the open file reads the new value at once.
        fs::write(&file, "5100\n").expect("write");
        assert_eq!(dir.read_i64(name), Some(5100));
        // Replaced by a rename: seen after the round's refresh.
        let tmp_file = tmp.path().join(".in1_input.new");
        fs::write(&tmp_file, "4900\n").expect("write");
        fs::rename(&tmp_file, &file).expect("rename");
        dir.refresh();
        assert_eq!(dir.read_i64(name), Some(4900));
        // Gone: absent, and found again when it comes back.
        fs::remove_file(&file).expect("rm");
        dir.refresh();
        assert_eq!(dir.read_i64(name), None);
        fs::write(&file, "4800\n").expect("write");
        dir.refresh();
        assert_eq!(dir.read_i64(name), Some(4800));
        assert_eq!(dir.read_i64(c"nonexistent"), None);
    }
}
