//! Intel and AMD RAPL energy counters through powercap sysfs
//! (`/sys/class/powercap/intel-rapl:*`; Documentation/power/powercap/powercap.rst).
//!
//! Zones are `intel-rapl:<package>` (name `package-N`, or `psys` for the platform)
//! and subzones `intel-rapl:<package>:<n>` (`core`, `uncore`, `dram`). Each has
//! `energy_uj`, a counter in µJ that wraps to 0 after `max_energy_range_uj`. AMD Zen
//! uses the same interface (package zones only). The `intel-rapl-mmio` control type
//! measures the same package a second time and is not read.
//!
//! Since Linux 5.10 `energy_uj` is readable by root only (CVE-2020-8694): a read
//! then fails with [`std::io::ErrorKind::PermissionDenied`], which callers must
//! report rather than treat as "no RAPL here".

use std::path::{Path, PathBuf};

use crate::paths::{self, Paths};

/// One powercap zone or subzone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The directory name, `intel-rapl:0:1`: stable across reads.
    pub dir_name: String,
    pub dir: PathBuf,
    /// The domain without its index: `package`, `core`, `uncore`, `dram`, `psys`.
    pub domain: String,
    /// The package it belongs to: N of `package-N` for a package and its
    /// subzones; 0 for `psys`.
    pub package: u32,
    /// The wrap point of `energy_uj`, when readable.
    pub max_energy_uj: Option<u64>,
}

impl Zone {
    /// The zone's part of a metric id: the domain, with the package number from the
    /// second package on (`package`, `dram`, `package_1`, `dram_1`).
    pub fn id_fragment(&self) -> String {
        if self.package == 0 {
            self.domain.clone()
        } else {
            format!("{}_{}", self.domain, self.package)
        }
    }

    pub fn energy_path(&self) -> PathBuf {
        self.dir.join("energy_uj")
    }
}

/// Splits a zone name: `package-1` → (`package`, Some(1)); `core` → (`core`, None).
pub fn split_name(name: &str) -> (String, Option<u32>) {
    let lower = name.trim().to_ascii_lowercase();
    match lower.rsplit_once('-') {
        Some((domain, n)) if !domain.is_empty() => match n.parse() {
            Ok(index) => (
                crate::sample::sanitize(domain).unwrap_or_default(),
                Some(index),
            ),
            Err(_) => (crate::sample::sanitize(&lower).unwrap_or_default(), None),
        },
        _ => (crate::sample::sanitize(&lower).unwrap_or_default(), None),
    }
}

/// The `intel-rapl:` zones present, parents before their subzones, in natural order.
pub fn discover(paths: &Paths) -> Vec<Zone> {
    let base = paths.sys("class/powercap");
    let mut names = paths::list_prefixed(&base, "intel-rapl:");
    names.sort_by(|a, b| paths::natural_cmp(a, b));
    let mut zones: Vec<Zone> = Vec::new();
    for dir_name in names {
        let dir = base.join(&dir_name);
        let Some(name) = paths::read_attr(&dir.join("name")) else {
            continue;
        };
        let (domain, index) = split_name(&name);
        if domain.is_empty() {
            continue;
        }
        // A subzone (`intel-rapl:0:1`) belongs to its parent's package.
        let parent = dir_name.rsplit_once(':').map(|(p, _)| p);
        let package = match index {
            Some(n) => n,
            None => zones
                .iter()
                .find(|z| parent == Some(z.dir_name.as_str()))
                .map_or(0, |z| z.package),
        };
        zones.push(Zone {
            max_energy_uj: paths::read_i64(&dir.join("max_energy_range_uj"))
                .and_then(|v| u64::try_from(v).ok()),
            dir_name,
            dir,
            domain,
            package,
        });
    }
    zones
}

/// Reads `energy_uj`.
pub fn read_energy_uj(path: &Path) -> std::io::Result<u64> {
    let text = paths::read_string(path)?;
    text.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a number: {:?}", text.trim()),
        )
    })
}

/// A counter that does not go backwards when `energy_uj` wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwrapped {
    last_raw: u64,
    /// µJ added for the wraps seen so far.
    offset: u64,
}

impl Unwrapped {
    pub fn new(raw: u64) -> Self {
        Unwrapped {
            last_raw: raw,
            offset: 0,
        }
    }

    /// Takes a new raw reading and returns the µJ since the previous one. A reading
    /// below the previous one is a wrap at `max` (the counter went past `max` to 0);
    /// without a known `max` it cannot be measured and counts as a reset.
    pub fn advance(&mut self, raw: u64, max: Option<u64>) -> u64 {
        let delta = if raw >= self.last_raw {
            raw - self.last_raw
        } else {
            match max.filter(|m| *m >= self.last_raw) {
                Some(max) => {
                    self.offset += max;
                    max - self.last_raw + raw
                }
                None => {
                    self.offset += self.last_raw;
                    raw
                }
            }
        };
        self.last_raw = raw;
        delta
    }

    /// The energy since the counter's start (boot), in µJ, wraps included.
    pub fn total_uj(&self) -> u64 {
        self.offset + self.last_raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(split_name("package-0"), ("package".into(), Some(0)));
        assert_eq!(split_name("package-1"), ("package".into(), Some(1)));
        assert_eq!(split_name("core"), ("core".into(), None));
        assert_eq!(split_name("psys"), ("psys".into(), None));
        assert_eq!(split_name("dram\n"), ("dram".into(), None));
    }

    #[test]
    fn wraps() {
        let max = Some(262_143_328_850);
        let mut c = Unwrapped::new(262_143_000_000);
        assert_eq!(c.total_uj(), 262_143_000_000);
        // Past the top and around: 328,850 µJ to the wrap, 1,000,000 after it.
        assert_eq!(c.advance(1_000_000, max), 1_328_850);
        assert_eq!(c.total_uj(), 262_144_328_850);
        assert_eq!(c.advance(3_000_000, max), 2_000_000);
        assert_eq!(c.total_uj(), 262_146_328_850);
        // No wrap point known: the drop is a reset, the counter still never falls.
        let mut c = Unwrapped::new(500);
        assert_eq!(c.advance(100, None), 100);
        assert_eq!(c.total_uj(), 600);
    }
}
