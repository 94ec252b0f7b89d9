//! CPU time from `/proc/stat`, online state and frequency from
//! `/sys/devices/system/cpu`.
//!
//! Usage is a difference between two readings, so the first reading yields no
//! usage at all (absent, not 0). Owns parsing only; the `linux` collector keeps the
//! previous reading and maps results to samples.

use std::collections::{BTreeMap, BTreeSet};

use crate::paths::{self, Paths};

/// Busy and total jiffies of one CPU line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal (guest time is
    /// already inside user and nice).
    pub total: u64,
}

/// The CPU lines of `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatTable {
    /// The aggregate `cpu` line.
    pub all: Option<CpuTimes>,
    /// `cpuN` lines; offline cores have none.
    pub cores: BTreeMap<u32, CpuTimes>,
}

/// Parses the CPU lines of `/proc/stat`; other lines and malformed ones are skipped.
pub fn parse_stat(text: &str) -> StatTable {
    let mut table = StatTable::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(head) = fields.next() else { continue };
        let Some(rest) = head.strip_prefix("cpu") else {
            continue;
        };
        let mut values = [0u64; 8];
        let mut count = 0;
        for (slot, field) in values.iter_mut().zip(fields) {
            match field.parse() {
                Ok(v) => {
                    *slot = v;
                    count += 1;
                }
                Err(_) => break,
            }
        }
        // Kernels before 2.6.11 had 7 fields, later ones 8 and more; fewer than 4
        // (user nice system idle) is not a CPU line we understand.
        if count < 4 {
            continue;
        }
        let idle = values[3] + values[4];
        let total: u64 = values.iter().sum();
        let times = CpuTimes {
            busy: total - idle,
            total,
        };
        if rest.is_empty() {
            table.all = Some(times);
        } else if let Ok(index) = rest.parse() {
            table.cores.insert(index, times);
        }
    }
    table
}

/// Busy share between two readings in percent; `None` when no time passed or the
/// counters went backwards (a core that went offline and came back).
pub fn usage_percent(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total)?;
    let busy = now.busy.checked_sub(prev.busy)?;
    if total == 0 || busy > total {
        return None;
    }
    Some(busy as f64 * 100.0 / total as f64)
}

/// Parses a kernel CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(set)
}

/// One core as sysfs describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Core {
    pub index: u32,
    pub online: bool,
    /// Current frequency in MHz, when cpufreq is there and the core is online.
    pub freq_mhz: Option<f64>,
}

/// Lists the cores under `/sys/devices/system/cpu`.
///
/// Online state comes from the `online` range list; where that file is missing,
/// from each core's own `online` attribute; where that is missing too (cpu0 often
/// cannot be unplugged and has none), from whether `/proc/stat` lists the core.
pub fn read_cores(paths: &Paths, stat: &StatTable) -> Vec<Core> {
    let base = paths.sys("devices/system/cpu");
    let online_list = paths::read_attr(&base.join("online")).and_then(|t| parse_cpu_list(&t));
    let mut cores = Vec::new();
    for name in paths::list_prefixed(&base, "cpu") {
        let Ok(index) = name[3..].parse::<u32>() else {
            continue;
        };
        let dir = base.join(&name);
        let online = match &online_list {
            Some(list) => list.contains(&index),
            None => match paths::read_i64(&dir.join("online")) {
                Some(v) => v == 1,
                None => stat.cores.contains_key(&index),
            },
        };
        let freq_mhz = if online {
            paths::read_i64(&dir.join("cpufreq/scaling_cur_freq"))
                .or_else(|| paths::read_i64(&dir.join("cpufreq/cpuinfo_cur_freq")))
                .filter(|khz| *khz > 0)
                .map(|khz| khz as f64 / 1000.0)
        } else {
            None
        };
        cores.push(Core {
            index,
            online,
            freq_mhz,
        });
    }
    // Without sysfs (some containers), fall back to the cores /proc/stat lists.
    if cores.is_empty() {
        cores = stat
            .cores
            .keys()
            .map(|&index| Core {
                index,
                online: true,
                freq_mhz: None,
            })
            .collect();
    }
    cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\n\
                    cpu0 60 0 20 400 20 0 0 0 0 0\n\
                    cpu2 40 0 30 400 30 0 0 0 0 0\n\
                    cpux 1 2 3\n\
                    intr 1 2 3\n\
                    cpu3 1 2\n";
        let t = parse_stat(text);
        assert_eq!(
            t.all,
            Some(CpuTimes {
                busy: 150,
                total: 1000
            })
        );
        assert_eq!(t.cores.len(), 2);
        assert_eq!(
            t.cores[&2],
            CpuTimes {
                busy: 70,
                total: 500
            }
        );
    }

    #[test]
    fn usage_between_readings() {
        let a = CpuTimes {
            busy: 100,
            total: 1000,
        };
        let b = CpuTimes {
            busy: 150,
            total: 1200,
        };
        assert_eq!(usage_percent(a, b), Some(25.0));
        assert_eq!(usage_percent(a, a), None);
        assert_eq!(usage_percent(b, a), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,6\n").map(|s| s.into_iter().collect::<Vec<_>>()),
            Some(vec![0, 1, 2, 3, 6])
        );
        assert_eq!(parse_cpu_list("").map(|s| s.len()), Some(0));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }
}
