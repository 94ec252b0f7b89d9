//! The `linux` collector: CPU, memory, thermal zones, hwmon chips and power
//! supplies of any Linux machine, read through the procfs and sysfs roots.
//!
//! It is the embedded default (`device_type: linux`) and runs beside the board
//! collectors. Flat ids follow the spec's pattern with a `host_` prefix; every id
//! and family is listed in `docs/metrics.md`. Ids built from device names (zones,
//! chips, sensor labels) are sanitized and made unique in a stable way, so the same
//! machine always yields the same ids.

use std::collections::{HashMap, HashSet};

use std::time::Instant;

use super::{CollectError, Collector};
use crate::energy::{Meters, families};
use crate::paths::{self, Paths};
use crate::sample::{Family, MHZ, MIB, Sample, SampleSink, sanitize};
use crate::sources::hwmon::{self, SensorKind};
use crate::sources::{cpu, meminfo, power_supply, thermal};

pub const NAME: &str = "linux";

/// MB in the flat ids is MiB (2^20 bytes), as tegrastats and `free -m` use it.
const KIB_PER_MB: f64 = 1024.0;

// Labeled families. Flat ids are built where the samples are made; see
// docs/metrics.md for both.
static CPU_USAGE: Family = Family::gauge(
    "host_cpu_usage_percent",
    "CPU core usage over the last interval",
    "percent",
);
static CPU_FREQ: Family = Family::gauge(
    "host_cpu_frequency_hertz",
    "CPU core current frequency",
    "hertz",
)
.scaled(MHZ);
static CPU_ONLINE: Family =
    Family::gauge("host_cpu_online", "CPU core online (1) or offline (0)", "");
static CPU_AVG: Family = Family::gauge(
    "host_cpu_avg_usage_percent",
    "Usage of all CPU cores together over the last interval",
    "percent",
);
static CPU_ACTIVE: Family =
    Family::gauge("host_cpu_active_cores", "Number of online CPU cores", "");
static RAM_USED: Family = Family::gauge(
    "host_memory_used_bytes",
    "RAM in use (total minus available)",
    "bytes",
)
.scaled(MIB);
static RAM_TOTAL: Family =
    Family::gauge("host_memory_total_bytes", "Total RAM", "bytes").scaled(MIB);
static RAM_AVAILABLE: Family = Family::gauge(
    "host_memory_available_bytes",
    "RAM available for new work without swapping",
    "bytes",
)
.scaled(MIB);
static RAM_PERCENT: Family = Family::gauge(
    "host_memory_used_percent",
    "RAM in use as a share of total",
    "percent",
);
static SWAP_USED: Family =
    Family::gauge("host_swap_used_bytes", "Swap in use", "bytes").scaled(MIB);
static SWAP_TOTAL: Family =
    Family::gauge("host_swap_total_bytes", "Total swap", "bytes").scaled(MIB);
static SWAP_CACHED: Family = Family::gauge(
    "host_swap_cached_bytes",
    "Swap also held in RAM (SwapCached)",
    "bytes",
)
.scaled(MIB);
static ZONE_TEMP: Family =
    Family::gauge("host_temp_celsius", "Thermal zone temperature", "celsius");
static HWMON_TEMP: Family = Family::gauge(
    "host_hwmon_temp_celsius",
    "hwmon temperature sensor",
    "celsius",
);
static HWMON_VOLTAGE: Family =
    Family::gauge("host_hwmon_voltage_volts", "hwmon voltage sensor", "volts");
static HWMON_CURRENT: Family =
    Family::gauge("host_hwmon_current_amps", "hwmon current sensor", "amps");
static HWMON_FAN: Family = Family::gauge("host_hwmon_fan_rpm", "hwmon fan speed", "rpm");
static HWMON_FREQ: Family = Family::gauge(
    "host_hwmon_frequency_hertz",
    "hwmon frequency sensor (a GPU's clocks)",
    "hertz",
);
static HWMON_HUMIDITY: Family = Family::gauge(
    "host_hwmon_humidity_percent",
    "hwmon relative humidity sensor",
    "percent",
);
static HWMON_ENERGY: Family = Family::counter(
    "host_hwmon_energy_joules_total",
    "hwmon energy counter",
    "joules",
);
static PSU_ONLINE: Family = Family::gauge(
    "host_power_supply_online",
    "Power supply connected (1) or not (0)",
    "",
);
static PSU_VOLTAGE: Family = Family::gauge(
    "host_power_supply_voltage_volts",
    "Power supply voltage",
    "volts",
);
static PSU_CURRENT: Family = Family::gauge(
    "host_power_supply_current_amps",
    "Power supply current (negative when a battery discharges, on drivers that sign it)",
    "amps",
);
static PSU_CAPACITY: Family = Family::gauge(
    "host_power_supply_capacity_percent",
    "Battery charge",
    "percent",
);
static PSU_TEMP: Family = Family::gauge(
    "host_power_supply_temp_celsius",
    "Power supply or battery temperature",
    "celsius",
);

/// hwmon chips without a power sensor whose voltage and current channels pair
/// up into one: the chip's name, and the channel numbers (`inK` with `currK`).
/// The INA3221 has three channels and no power register; the `ina2xx` driver's
/// chips have `power1_input`, so they are paired only where it is missing.
const POWER_PAIRS: &[(&str, &[u32])] = &[
    ("ina3221", &[1, 2, 3]),
    ("ina219", &[1]),
    ("ina220", &[1]),
    ("ina226", &[1]),
    ("ina230", &[1]),
    ("ina231", &[1]),
    ("ina260", &[1]),
];

#[derive(Debug)]
pub struct LinuxCollector {
    paths: Paths,
    /// The previous `/proc/stat` reading; usage is the difference to it.
    previous: Option<cpu::StatTable>,
    meters: Meters,
    /// Pair the INA3221's channels into power: off on a Jetson whose rails the
    /// `jetson_rails` collector reads.
    pair_ina3221: bool,
}

impl LinuxCollector {
    /// Usage needs two readings, so it appears from the second collection on.
    pub fn new(paths: Paths, meters: Meters, pair_ina3221: bool) -> Self {
        LinuxCollector {
            paths,
            previous: None,
            meters,
            pair_ina3221,
        }
    }

    fn collect_cpu(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("stat"))?;
        let stat = cpu::parse_stat(&text);
        let previous = self.previous.replace(stat.clone());
        if let (Some(prev), Some(now)) = (previous.as_ref().and_then(|p| p.all), stat.all) {
            out.push_series(
                cpu::usage_percent(prev, now),
                || "host_cpu_avg_usage_percent".into(),
                &CPU_AVG,
                &[],
            );
        }
        let cores = cpu::read_cores(&self.paths, &stat);
        let active = cores.iter().filter(|c| c.online).count();
        out.push_series(
            Some(active as f64),
            || "host_cpu_active_cores".into(),
            &CPU_ACTIVE,
            &[],
        );
        for core in &cores {
            let n = core.index.to_string();
            let labels = [("core", n.as_str())];
            out.push_series(
                Some(if core.online { 1.0 } else { 0.0 }),
                || format!("host_cpu_core{n}_status"),
                &CPU_ONLINE,
                &labels,
            );
            out.push_series(
                core.freq_mhz,
                || format!("host_cpu_core{n}_freq_mhz"),
                &CPU_FREQ,
                &labels,
            );
            let usage = previous
                .as_ref()
                .and_then(|p| p.cores.get(&core.index))
                .zip(stat.cores.get(&core.index))
                .and_then(|(prev, now)| cpu::usage_percent(*prev, *now));
            if core.online {
                out.push_series(
                    usage,
                    || format!("host_cpu_core{n}_usage_percent"),
                    &CPU_USAGE,
                    &labels,
                );
            }
        }
        Ok(())
    }

    fn collect_memory(&self, out: &mut SampleSink) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("meminfo"))?;
        let m = meminfo::parse(&text);
        let mb = |kib: Option<u64>| kib.map(|k| k as f64 / KIB_PER_MB);
        out.push_series(
            mb(m.mem_used()),
            || "host_ram_used_mb".into(),
            &RAM_USED,
            &[],
        );
        out.push_series(
            mb(m.mem_total),
            || "host_ram_total_mb".into(),
            &RAM_TOTAL,
            &[],
        );
        out.push_series(
            mb(m.mem_available),
            || "host_ram_available_mb".into(),
            &RAM_AVAILABLE,
            &[],
        );
        let percent = m
            .mem_used()
            .zip(m.mem_total.filter(|t| *t > 0))
            .map(|(u, t)| u as f64 * 100.0 / t as f64);
        out.push_series(
            percent,
            || "host_ram_used_percent".into(),
            &RAM_PERCENT,
            &[],
        );
        out.push_series(
            mb(m.swap_used()),
            || "host_swap_used_mb".into(),
            &SWAP_USED,
            &[],
        );
        out.push_series(
            mb(m.swap_total),
            || "host_swap_total_mb".into(),
            &SWAP_TOTAL,
            &[],
        );
        out.push_series(
            mb(m.swap_cached),
            || "host_swap_cached_mb".into(),
            &SWAP_CACHED,
            &[],
        );
        Ok(())
    }

    fn collect_thermal(&self, out: &mut SampleSink) {
        let zones = thermal::read_zones(&self.paths);
        let names: Vec<Option<String>> = zones.iter().map(|z| sanitize(&z.kind)).collect();
        let duplicated = duplicates(names.iter().flatten().cloned());
        for (zone, name) in zones.iter().zip(names) {
            let Some(name) = name else { continue };
            // Boards with several zones of one type (`acpitz`) get the zone number.
            let name = if duplicated.contains(&name) {
                format!("{name}_{}", zone.index)
            } else {
                name
            };
            out.push_series(
                zone.celsius,
                || format!("host_temp_{name}_celsius"),
                &ZONE_TEMP,
                &[("zone", &name)],
            );
        }
    }

    fn collect_hwmon(&mut self, out: &mut SampleSink) {
        let chips = hwmon::read_chips(&self.paths);
        let now = Instant::now();
        let names: Vec<Option<String>> = chips.iter().map(|c| sanitize(&c.name)).collect();
        let duplicated = duplicates(names.iter().flatten().cloned());
        for (chip, name) in chips.iter().zip(names) {
            let Some(name) = name else { continue };
            let chip_name = if duplicated.contains(&name) {
                format!("{name}_{}", chip.index)
            } else {
                name
            };
            let fragments: Vec<String> = chip
                .sensors
                .iter()
                .map(|s| {
                    s.label
                        .as_deref()
                        .and_then(sanitize)
                        .unwrap_or_else(|| s.raw_name())
                })
                .collect();
            let kinds_and_fragments: Vec<(SensorKind, &String)> = chip
                .sensors
                .iter()
                .map(|s| s.kind)
                .zip(&fragments)
                .collect();
            let clash = duplicates(kinds_and_fragments.iter().copied());
            for ((sensor, fragment), key) in chip
                .sensors
                .iter()
                .zip(&fragments)
                .zip(&kinds_and_fragments)
            {
                // Two sensors of one kind with the same label: use the kernel's names.
                let sensor_name = if clash.contains(key) {
                    sensor.raw_name()
                } else {
                    fragment.clone()
                };
                let (prefix, suffix, family) = match sensor.kind {
                    SensorKind::Temp => ("temp", "celsius", &HWMON_TEMP),
                    SensorKind::Voltage => ("voltage", "volts", &HWMON_VOLTAGE),
                    SensorKind::Current => ("current", "amps", &HWMON_CURRENT),
                    SensorKind::Power => {
                        self.push_power(out, &chip_name, &sensor_name, sensor.value, now);
                        continue;
                    }
                    SensorKind::Fan => ("fan", "rpm", &HWMON_FAN),
                    SensorKind::Energy => ("energy", "joules_total", &HWMON_ENERGY),
                    SensorKind::Freq => ("freq", "hertz", &HWMON_FREQ),
                    SensorKind::Humidity => ("humidity", "percent", &HWMON_HUMIDITY),
                };
                out.push_series(
                    sensor.value,
                    || format!("host_{prefix}_{chip_name}_{sensor_name}_{suffix}"),
                    family,
                    &[("chip", &chip_name), ("sensor", &sensor_name)],
                );
            }
            // Voltage × current where the chip has channels but no power sensor.
            let pairs = POWER_PAIRS
                .iter()
                .find(|(name, _)| chip.name == *name)
                .map(|(_, channels)| *channels)
                .filter(|_| self.pair_ina3221 || chip.name != "ina3221")
                .filter(|_| !chip.sensors.iter().any(|s| s.kind == SensorKind::Power));
            for &k in pairs.unwrap_or_default() {
                let find = |kind| {
                    chip.sensors
                        .iter()
                        .position(|s| s.kind == kind && s.index == k)
                };
                let (Some(v), Some(a)) = (find(SensorKind::Voltage), find(SensorKind::Current))
                else {
                    continue;
                };
                let watts = chip.sensors[v]
                    .value
                    .zip(chip.sensors[a].value)
                    // mV × mA is a whole number of µW: rounded there, not FP noise.
                    .map(|(v, a)| (v * a.abs() * 1e6).round() / 1e6);
                // The channel's label names it; unlabeled, the kernel's `powerK`.
                let name = match &chip.sensors[v].label {
                    Some(_) => fragments[v].clone(),
                    None => format!("power{k}"),
                };
                self.push_power(out, &chip_name, &name, watts, now);
            }
        }
    }

    /// An hwmon power reading, with its energy counter and peak.
    fn push_power(
        &mut self,
        out: &mut SampleSink,
        chip: &str,
        sensor: &str,
        watts: Option<f64>,
        at: Instant,
    ) {
        let Some(watts) = watts else { return };
        let sample = Sample::with_id(
            format!("host_power_{chip}_{sensor}_watts"),
            &families::HWMON_WATTS,
            watts,
        )
        .label("chip", chip)
        .label("sensor", sensor);
        self.meters.push_reading(out, &families::HWMON, sample, at);
    }

    fn collect_power_supplies(&mut self, out: &mut SampleSink) {
        let now = Instant::now();
        for supply in power_supply::read_supplies(&self.paths) {
            let Some(name) = sanitize(&supply.name) else {
                continue;
            };
            let labels = [("supply", name.as_str())];
            let fields = [
                (
                    supply.online.map(|o| if o { 1.0 } else { 0.0 }),
                    "online",
                    &PSU_ONLINE,
                ),
                (supply.voltage_volts, "voltage_volts", &PSU_VOLTAGE),
                (supply.current_amps, "current_amps", &PSU_CURRENT),
                (supply.capacity_percent, "capacity_percent", &PSU_CAPACITY),
                (supply.temp_celsius, "temp_celsius", &PSU_TEMP),
            ];
            for (value, suffix, family) in fields {
                out.push_series(
                    value,
                    || format!("host_power_supply_{name}_{suffix}"),
                    family,
                    &labels,
                );
            }
            if let Some(watts) = supply.power_watts {
                let sample = Sample::with_id(
                    format!("host_power_supply_{name}_power_watts"),
                    &families::POWER_SUPPLY_WATTS,
                    watts,
                )
                .label("supply", name.as_str());
                self.meters
                    .push_reading(out, &families::POWER_SUPPLY, sample, now);
            }
        }
    }
}

impl Collector for LinuxCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let mut errors = Vec::new();
        if let Err(e) = self.collect_cpu(out) {
            errors.push(e);
        }
        if let Err(e) = self.collect_memory(out) {
            errors.push(e);
        }
        // Zones, chips and supplies are optional hardware: none is no error.
        self.collect_thermal(out);
        self.collect_hwmon(out);
        self.collect_power_supplies(out);
        CollectError::all(errors).map_or(Ok(()), Err)
    }
}

/// A procfs table that every Linux has.
fn read(path: &std::path::Path) -> Result<String, CollectError> {
    paths::read_string(path).map_err(|e| CollectError::Read {
        path: path.to_owned(),
        source: std::sync::Arc::new(e),
    })
}

/// The items that occur more than once.
fn duplicates<T: Eq + std::hash::Hash + Clone>(items: impl Iterator<Item = T>) -> HashSet<T> {
    let mut counts: HashMap<T, usize> = HashMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(item, _)| item)
        .collect()
}
