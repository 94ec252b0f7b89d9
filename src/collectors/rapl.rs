//! The `rapl` collector: energy and power of every RAPL zone (see
//! `sources::rapl`). Runs on `lattepanda`, or anywhere with `rapl.enabled: true`.
//!
//! A sampler reads every zone's counter every `power.sample_interval` (every
//! `power.run_sample_interval` while a measured run is open, no faster than the
//! counter's ~1 ms update), so power and its peak come from the counter's
//! increase between close readings (at least 10 of its updates apart, so its
//! steps move them by a tenth at most): the peak is a real peak, not the mean
//! over the collection interval. Energy is a counter in joules that keeps counting
//! through the hardware counter's wraps. Flat ids are `energy_<zone>_joules_total`
//! and `power_<zone>_watts` (the spec's `power_package_watts`,
//! `power_dram_watts`).

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use super::jetson_rails::{push_sampler_counts, sampler_result};
use super::{BuildContext, CollectError, Collector};
use crate::energy::families;
use crate::energy::sampler::{Probe, Problem, Reading, Sampled};
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::rapl::{self, Unwrapped, Zone};

pub const NAME: &str = "rapl";

/// How to give the exporter read access to `energy_uj`, logged once.
pub const PERMISSION_FIX: &str = "energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694). \
Either run the exporter with CAP_DAC_READ_SEARCH (systemd: AmbientCapabilities=CAP_DAC_READ_SEARCH), \
or make the counters readable at boot, accepting the side channel the kernel closed: \
a systemd-tmpfiles line `z /sys/class/powercap/intel-rapl:*/energy_uj 0444 - - -` and the same for `intel-rapl:*:*`. \
See docs/board-sensors.md";

/// How often RAPL's counter moves: never read faster.
const COUNTER_UPDATE: Duration = Duration::from_millis(1);
/// How often the zones are listed again (they rarely change).
const REDISCOVER: Duration = Duration::from_secs(30);
/// How often a zone read through its kept file is looked up by path again: a
/// kept file can outlive its zone's entry in `/sys/class/powercap`.
const RECHECK: Duration = Duration::from_secs(1);

static ENERGY: Family = Family::counter(
    "rapl_energy_joules_total",
    "Energy used by a RAPL zone since boot (powercap energy_uj; the counter's wraps are added back)",
    "joules",
);

/// One zone the probe reads.
#[derive(Debug)]
struct ZoneState {
    zone: Zone,
    watts_id: std::sync::Arc<str>,
    labels: Vec<crate::sample::Label>,
    counter: Option<Unwrapped>,
    /// The zone's directory, its `energy_uj` kept open between reads.
    attrs: Option<crate::paths::AttrDir>,
}

/// Reads every RAPL zone's counter, keeping each unwrapped.
#[derive(Debug)]
pub struct RaplProbe {
    paths: Paths,
    zones: Vec<ZoneState>,
    listed: Option<Instant>,
    /// When the kept files' zones were last looked up by path.
    checked: Option<Instant>,
    /// Permission denied has been logged with the fix.
    told_permission: bool,
}

impl RaplProbe {
    pub fn new(paths: Paths) -> Self {
        RaplProbe {
            paths,
            zones: Vec::new(),
            listed: None,
            checked: None,
            told_permission: false,
        }
    }

    /// Lists the zones again, keeping the counters of those still there.
    fn discover(&mut self) {
        let mut old: HashMap<String, ZoneState> = self
            .zones
            .drain(..)
            .map(|z| (z.zone.dir_name.clone(), z))
            .collect();
        let mut seen_ids = HashSet::new();
        for zone in rapl::discover(&self.paths) {
            let mut fragment = zone.id_fragment();
            if !seen_ids.insert(fragment.clone()) {
                // Two zones with one name in one package: the directory tells them apart.
                fragment = crate::sample::sanitize(&zone.dir_name).unwrap_or(fragment);
            }
            let (counter, attrs) = match old.remove(&zone.dir_name) {
                Some(z) => (z.counter, z.attrs),
                None => (None, crate::paths::AttrDir::open(&zone.dir)),
            };
            self.zones.push(ZoneState {
                attrs,
                watts_id: format!("power_{fragment}_watts").into(),
                labels: vec![
                    ("zone", zone.domain.as_str().into()),
                    ("package", zone.package.to_string().into()),
                ],
                zone,
                counter,
            });
        }
        self.listed = Some(Instant::now());
    }
}

impl Probe for RaplProbe {
    fn min_period(&self) -> Duration {
        COUNTER_UPDATE
    }

    fn read(&mut self, out: &mut Vec<Reading>, problems: &mut Vec<Problem>) {
        if self.zones.is_empty() || self.listed.is_none_or(|t| t.elapsed() >= REDISCOVER) {
            self.discover();
        }
        if self.zones.is_empty() {
            problems.push(Problem::Absent(format!(
                "no RAPL zones under {} (not an Intel or AMD machine, a virtual machine, or the intel_rapl_common module is not loaded)",
                self.paths.sys("class/powercap").display()
            )));
            return;
        }
        if self.checked.is_none_or(|t| t.elapsed() >= RECHECK) {
            // A zone whose entry is gone is read by path below, which tells so.
            for z in &mut self.zones {
                if z.attrs.is_some() && !z.zone.dir.exists() {
                    z.attrs = None;
                }
            }
            self.checked = Some(Instant::now());
        }
        let mut denied = Vec::new();
        let mut gone = false;
        for z in &mut self.zones {
            let path = z.zone.energy_path();
            // One pread of the kept file; opening it by path again tells why
            // when that fails.
            let kept = z.attrs.as_ref().and_then(|a| {
                a.refresh();
                a.read_i64(c"energy_uj").and_then(|v| u64::try_from(v).ok())
            });
            let raw = match kept.map_or_else(|| rapl::read_energy_uj(&path), Ok) {
                Ok(raw) => {
                    if kept.is_none() {
                        // The directory came back (a module reload): keep the new one.
                        z.attrs = crate::paths::AttrDir::open(&z.zone.dir);
                    }
                    raw
                }
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    denied.push(path.display().to_string());
                    continue;
                }
                // A zone without a counter (some parts list zones they cannot
                // measure) is skipped, not an error.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    gone |= z.counter.is_some();
                    z.counter = None;
                    continue;
                }
                Err(e) => {
                    problems.push(Problem::Failed(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                    continue;
                }
            };
            let total = match &mut z.counter {
                Some(c) => {
                    c.advance(raw, z.zone.max_energy_uj);
                    c.total_uj()
                }
                None => z.counter.insert(Unwrapped::new(raw)).total_uj(),
            };
            out.push(Reading {
                watts_id: z.watts_id.clone(),
                labels: z.labels.clone(),
                families: &families::RAPL,
                watts: None,
                volts: None,
                amps: None,
                joules: Some(total as f64 / 1e6),
            });
        }
        if gone {
            // A zone went away: list them again at the next read.
            self.listed = None;
        }
        if !denied.is_empty() {
            if !self.told_permission {
                tracing::warn!(files = %denied.join(", "), "cannot read RAPL energy: permission denied. {PERMISSION_FIX}");
                self.told_permission = true;
            }
            problems.push(Problem::Failed(format!(
                "permission denied reading {} (energy_uj is root-only since Linux 5.10; see docs/board-sensors.md)",
                denied.join(", ")
            )));
        }
    }
}

#[derive(Debug)]
pub struct RaplCollector {
    sampled: Sampled,
}

impl RaplCollector {
    /// Starts sampling the zones every `sample_interval` (every `fast` while a
    /// run is open).
    pub fn start(
        paths: Paths,
        sample_interval: Duration,
        fast: Duration,
        interval: Duration,
        ctx: &BuildContext,
    ) -> Self {
        RaplCollector {
            sampled: ctx.sampled(RaplProbe::new(paths), sample_interval, fast, interval),
        }
    }
}

impl Collector for RaplCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let pushed = self.sampled.push(out);
        // The zones' own counters, beside the power the sampler published.
        for r in &pushed.readings {
            let Some(joules) = r.joules else { continue };
            let id = crate::energy::companion_id(&r.watts_id, "_joules_total")
                .replacen("power_", "energy_", 1);
            let mut s = Sample::with_id(id, &ENERGY, joules);
            for (k, v) in &r.labels {
                s = s.label(k, v.clone());
            }
            out.push(s);
        }
        push_sampler_counts(out, NAME, &self.sampled);
        sampler_result(pushed.problems)
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

    fn read(probe: &mut RaplProbe) -> (Vec<(String, f64)>, Vec<Problem>) {
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        probe.read(&mut out, &mut problems);
        let mut v: Vec<(String, f64)> = out
            .iter()
            .map(|r| (r.watts_id.to_string(), r.joules.unwrap_or(f64::NAN)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        (v, problems)
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
        let mut probe = RaplProbe::new(paths);
        assert_eq!(probe.min_period(), COUNTER_UPDATE);
        let (first, problems) = read(&mut probe);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            first,
            [
                ("power_dram_1_watts".to_owned(), 0.7),
                ("power_dram_watts".to_owned(), 0.5),
                ("power_package_1_watts".to_owned(), 3.0),
                ("power_package_watts".to_owned(), 1.0),
            ]
        );
        // The counter wraps: the total keeps counting.
        std::fs::write(sys.join("class/powercap/intel-rapl:0/energy_uj"), "500\n").expect("write");
        let (second, _) = read(&mut probe);
        let package = second
            .iter()
            .find(|(id, _)| id == "power_package_watts")
            .expect("package");
        assert!(
            (package.1 - (65_532.610_987 + 0.0005)).abs() < 1e-6,
            "{}",
            package.1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_collector_publishes_energy_power_and_a_real_peak() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sys = tmp.path();
        zone(sys, "intel-rapl:0", "package-0", Some("0"));
        let paths = Paths {
            sysfs: sys.to_owned(),
            ..Paths::default()
        };
        let registry = crate::energy::Registry::new();
        let ctx = BuildContext {
            tracker: tokio_util::task::TaskTracker::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
            hub: None,
            energy: registry,
        };
        let ms = Duration::from_millis;
        let mut c = RaplCollector::start(paths, ms(10), ms(5), Duration::from_secs(1), &ctx);
        // 10 W for a while, then a 30 W burst of 100 ms, then 10 W.
        let file = sys.join("class/powercap/intel-rapl:0/energy_uj");
        let mut uj = 0u64;
        for step in 0..60u64 {
            let watts = if (20..30).contains(&step) { 30 } else { 10 };
            uj += watts * 10_000;
            std::fs::write(&file, format!("{uj}\n")).expect("write");
            std::thread::sleep(ms(10));
        }
        let mut out = SampleSink::default();
        c.collect(&mut out).expect("collect");
        let value = |id: &str| out.samples().iter().find(|s| &*s.id == id).map(|s| s.value);
        let energy = value("energy_package_joules_total").expect("energy");
        assert!(energy > 5.0 && energy <= 8.0 + 1e-9, "{energy}");
        let peak = value("power_package_peak_watts").expect("peak");
        // Counter deltas over about 10 ms: the burst shows near 30 W, where a
        // mean over the second would be about 13 W.
        assert!(peak > 20.0, "{peak}");
        ctx.cancel.cancel();
    }
}
