//! The `rapl` collector: energy and power of every RAPL zone (see
//! `sources::rapl`). Runs on `lattepanda`, or anywhere with `rapl.enabled: true`.
//!
//! Energy is a counter in joules that keeps counting through the hardware
//! counter's wraps; power is the energy used between two collections divided by the
//! time between them, so it appears from the second collection on. Flat ids are
//! `energy_<zone>_joules_total` and `power_<zone>_watts` (the spec's
//! `power_package_watts`, `power_dram_watts`).

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::time::Instant;

use super::{CollectError, Collector};
use crate::energy::{Meters, PowerFamilies};
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::rapl::{self, Unwrapped};

pub const NAME: &str = "rapl";

/// How to give the exporter read access to `energy_uj`, logged once.
pub const PERMISSION_FIX: &str = "energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694). \
Either run the exporter with CAP_DAC_READ_SEARCH (systemd: AmbientCapabilities=CAP_DAC_READ_SEARCH), \
or make the counters readable at boot, accepting the side channel the kernel closed: \
a systemd-tmpfiles line `z /sys/class/powercap/intel-rapl:*/energy_uj 0444 - - -` and the same for `intel-rapl:*:*`. \
See docs/board-sensors.md";

static ENERGY: Family = Family::counter(
    "rapl_energy_joules_total",
    "Energy used by a RAPL zone since boot (powercap energy_uj; the counter's wraps are added back)",
    "joules",
);
static POWER: Family = Family::gauge(
    "rapl_power_watts",
    "Average power of a RAPL zone over the last collection interval",
    "watts",
)
.at_least(0.0);
/// RAPL has a hardware counter (`ENERGY`): the layer adds the peak.
static POWER_ENERGY: PowerFamilies = PowerFamilies {
    watts: &POWER,
    joules: None,
    peak: Family::gauge(
        "rapl_power_peak_watts",
        "Highest power of a RAPL zone between two readings, over the last collection interval",
        "watts",
    )
    .at_least(0.0),
    total: false,
};

#[derive(Debug)]
struct ZoneState {
    counter: Unwrapped,
}

#[derive(Debug)]
pub struct RaplCollector {
    paths: Paths,
    /// By zone directory name.
    zones: HashMap<String, ZoneState>,
    /// Permission denied has been logged with the fix.
    told_permission: bool,
    meters: Meters,
}

impl RaplCollector {
    pub fn new(paths: Paths, meters: Meters) -> Self {
        RaplCollector {
            paths,
            zones: HashMap::new(),
            told_permission: false,
            meters,
        }
    }
}

impl Collector for RaplCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let zones = rapl::discover(&self.paths);
        if zones.is_empty() {
            self.zones.clear();
            return Err(CollectError::NoData(format!(
                "no RAPL zones under {} (not an Intel or AMD machine, a virtual machine, or the intel_rapl_common module is not loaded)",
                self.paths.sys("class/powercap").display()
            )));
        }
        let mut denied = Vec::new();
        let mut errors = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut present = HashSet::new();
        for zone in &zones {
            let path = zone.energy_path();
            let raw = match rapl::read_energy_uj(&path) {
                Ok(raw) => raw,
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    denied.push(path.display().to_string());
                    continue;
                }
                // A zone without a counter (some parts list zones they cannot
                // measure) is skipped, not an error.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(CollectError::Read {
                        path,
                        source: std::sync::Arc::new(e),
                    });
                    continue;
                }
            };
            let now = Instant::now();
            present.insert(zone.dir_name.clone());
            match self.zones.get_mut(&zone.dir_name) {
                Some(state) => {
                    state.counter.advance(raw, zone.max_energy_uj);
                }
                None => {
                    self.zones.insert(
                        zone.dir_name.clone(),
                        ZoneState {
                            counter: Unwrapped::new(raw),
                        },
                    );
                }
            }
            let total = self.zones[&zone.dir_name].counter.total_uj();
            let mut fragment = zone.id_fragment();
            if !seen_ids.insert(fragment.clone()) {
                // Two zones with one name in one package: the directory tells them apart.
                fragment = crate::sample::sanitize(&zone.dir_name).unwrap_or(fragment);
            }
            let labels = |s: Sample| {
                s.label("zone", zone.domain.as_str())
                    .label("package", zone.package.to_string())
            };
            out.push(labels(Sample::with_id(
                format!("energy_{fragment}_joules_total"),
                &ENERGY,
                total as f64 / 1e6,
            )));
            // Power is the counter's increase over time: from the second reading on.
            let template = labels(Sample::with_id(
                format!("power_{fragment}_watts"),
                &POWER,
                0.0,
            ));
            self.meters
                .push_counter(out, &POWER_ENERGY, template, now, total as f64 / 1e6, None);
        }
        // Zones that went away start over if they come back.
        self.zones.retain(|name, _| present.contains(name));
        if !denied.is_empty() {
            if !self.told_permission {
                tracing::warn!(files = %denied.join(", "), "cannot read RAPL energy: permission denied. {PERMISSION_FIX}");
                self.told_permission = true;
            }
            errors.insert(0, CollectError::PermissionDenied(denied));
        }
        CollectError::all(errors).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn zone(base: &Path, dir: &str, name: &str, energy: Option<&str>) {
        let d = base.join("class/powercap").join(dir);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("name"), format!("{name}\n")).expect("write");
        std::fs::write(d.join("max_energy_range_uj"), "65532610987\n").expect("write");
        if let Some(e) = energy {
            std::fs::write(d.join("energy_uj"), format!("{e}\n")).expect("write");
        }
    }

    fn meters() -> Meters {
        let second = std::time::Duration::from_secs(1);
        Meters::new(crate::energy::Registry::new(), second, second)
    }

    fn ids(out: &SampleSink) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = out
            .samples()
            .iter()
            .map(|s| (s.id.to_string(), s.value))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn two_sockets_with_dram_and_the_spec_ids() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sys = tmp.path();
        zone(sys, "intel-rapl:0", "package-0", Some("1000000"));
        zone(sys, "intel-rapl:0:0", "dram", Some("500000"));
        zone(sys, "intel-rapl:1", "package-1", Some("3000000"));
        zone(sys, "intel-rapl:1:0", "dram", Some("700000"));
        // A zone the part lists but cannot measure.
        zone(sys, "intel-rapl:0:1", "core", None);
        let paths = Paths {
            sysfs: sys.to_owned(),
            ..Paths::default()
        };
        let mut c = RaplCollector::new(paths, meters());
        let mut out = SampleSink::default();
        c.collect(&mut out).expect("first");
        assert_eq!(
            ids(&out),
            [
                ("energy_dram_1_joules_total".to_owned(), 0.7),
                ("energy_dram_joules_total".to_owned(), 0.5),
                ("energy_package_1_joules_total".to_owned(), 3.0),
                ("energy_package_joules_total".to_owned(), 1.0),
            ],
            "power needs two readings"
        );
        let dram1 = out
            .samples()
            .iter()
            .find(|s| &*s.id == "energy_dram_1_joules_total");
        let labels: Vec<(&str, &str)> = dram1
            .expect("dram 1")
            .labels
            .iter()
            .map(|(k, v)| (*k, v.as_ref()))
            .collect();
        assert_eq!(labels, [("zone", "dram"), ("package", "1")]);

        std::fs::write(
            sys.join("class/powercap/intel-rapl:0/energy_uj"),
            "3000000\n",
        )
        .expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut out = SampleSink::default();
        c.collect(&mut out).expect("second");
        let got = ids(&out);
        let power = |id: &str| got.iter().find(|(i, _)| i == id).map(|(_, v)| *v);
        // 2 J in a little over 20 ms: under 100 W, and more than nothing.
        let package = power("power_package_watts").expect("package power");
        assert!(package > 0.0 && package < 100.0, "{package}");
        assert_eq!(power("power_dram_watts"), Some(0.0));
        assert_eq!(power("power_package_peak_watts"), Some(package));
        assert_eq!(power("power_package_1_watts"), Some(0.0));
        assert_eq!(power("energy_package_joules_total"), Some(3.0));
    }

    #[test]
    fn no_zones_is_no_data() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = RaplCollector::new(
            Paths {
                sysfs: tmp.path().to_owned(),
                ..Paths::default()
            },
            meters(),
        );
        let mut out = SampleSink::default();
        assert!(
            matches!(c.collect(&mut out), Err(CollectError::NoData(m)) if m.contains("no RAPL zones"))
        );
    }
}
