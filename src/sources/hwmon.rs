//! Hardware monitoring chips from `/sys/class/hwmon/hwmon*`.
//!
//! Reads temperatures, voltages, currents, power, fan speeds, energy, frequencies
//! and humidity, converted from the kernel's milli- and micro-units
//! (Documentation/hwmon/sysfs-interface) to base units. Old kernels keep the
//! attributes in the `device/` subdirectory; both places are read. An attribute
//! that cannot be read (a sensor that is off answers EIO or ENODATA) is absent.
//!
//! A chip without a `name` file is named after its device the way node_exporter
//! names chips: the device directory's parent and own name (`platform` +
//! `applesmc.768`), else the `hwmonN` directory.

use std::collections::BTreeMap;
use std::path::Path;

use crate::paths::{self, Paths};

/// What a sensor measures, with the kernel's scale to the base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SensorKind {
    /// `tempN_input`, millidegrees Celsius.
    Temp,
    /// `inN_input`, millivolts.
    Voltage,
    /// `currN_input`, milliamperes.
    Current,
    /// `powerN_input` or `powerN_average`, microwatts.
    Power,
    /// `fanN_input`, revolutions per minute.
    Fan,
    /// `energyN_input`, microjoules.
    Energy,
    /// `freqN_input`, hertz (a GPU's clocks).
    Freq,
    /// `humidityN_input`, milli-percent relative humidity.
    Humidity,
}

impl SensorKind {
    fn from_prefix(prefix: &str) -> Option<Self> {
        Some(match prefix {
            "temp" => SensorKind::Temp,
            "in" => SensorKind::Voltage,
            "curr" => SensorKind::Current,
            "power" => SensorKind::Power,
            "fan" => SensorKind::Fan,
            "energy" => SensorKind::Energy,
            "freq" => SensorKind::Freq,
            "humidity" => SensorKind::Humidity,
            _ => return None,
        })
    }

    /// The prefix of the kernel's attribute names, e.g. `temp`.
    pub fn prefix(self) -> &'static str {
        match self {
            SensorKind::Temp => "temp",
            SensorKind::Voltage => "in",
            SensorKind::Current => "curr",
            SensorKind::Power => "power",
            SensorKind::Fan => "fan",
            SensorKind::Energy => "energy",
            SensorKind::Freq => "freq",
            SensorKind::Humidity => "humidity",
        }
    }

    /// Kernel units per base unit. Dividing by an exact integer gives the double
    /// nearest the true value (5080 mV reads back as exactly "5.08").
    fn divisor(self) -> f64 {
        match self {
            SensorKind::Temp | SensorKind::Voltage | SensorKind::Current => 1e3,
            SensorKind::Humidity => 1e3,
            SensorKind::Power | SensorKind::Energy => 1e6,
            SensorKind::Fan | SensorKind::Freq => 1.0,
        }
    }
}

/// One sensor of a chip, its value in base units (°C, V, A, W, RPM, J).
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub kind: SensorKind,
    pub index: u32,
    pub label: Option<String>,
    pub value: Option<f64>,
}

impl Sensor {
    /// The kernel's name for the sensor, e.g. `temp1`.
    pub fn raw_name(&self) -> String {
        format!("{}{}", self.kind.prefix(), self.index)
    }
}

/// One hwmon device.
#[derive(Debug, Clone, PartialEq)]
pub struct Chip {
    /// N of `hwmonN`.
    pub index: u32,
    /// The chip's `name` attribute (`coretemp`, `ina3221`, `rpi_volt`).
    pub name: String,
    pub sensors: Vec<Sensor>,
}

/// Splits an attribute file name such as `temp1_input` into kind, index and
/// attribute (`input`, `label`, `average`, ...).
pub fn parse_attr_name(name: &str) -> Option<(SensorKind, u32, &str)> {
    let (head, attr) = name.split_once('_')?;
    let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (prefix, index) = head.split_at(head.len() - digits);
    Some((SensorKind::from_prefix(prefix)?, index.parse().ok()?, attr))
}

pub fn read_chips(paths: &Paths) -> Vec<Chip> {
    let base = paths.sys("class/hwmon");
    paths::list_prefixed(&base, "hwmon")
        .into_iter()
        .filter_map(|dir_name| {
            let index = dir_name["hwmon".len()..].parse().ok()?;
            let dir = base.join(&dir_name);
            let name = paths::read_attr(&dir.join("name"))
                .or_else(|| paths::read_attr(&dir.join("device/name")))
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| device_name(&dir).unwrap_or_else(|| dir_name.clone()));
            let sensors = read_sensors(&[dir.clone(), dir.join("device")]);
            Some(Chip {
                index,
                name,
                sensors,
            })
        })
        .collect()
}

/// A name for a chip from its device: `<parent>_<device>` of the device's real
/// path (`platform_applesmc.768`, `0000:00:03.1_0000:09:00.0`), as node_exporter
/// names every chip.
fn device_name(dir: &Path) -> Option<String> {
    let device = std::fs::canonicalize(dir.join("device")).ok()?;
    let own = device.file_name()?.to_str()?.to_owned();
    match device
        .parent()
        .and_then(Path::file_name)
        .and_then(|p| p.to_str())
    {
        Some(parent) if !parent.is_empty() => Some(format!("{parent}_{own}")),
        _ => Some(own),
    }
}

/// Label, value, and whether the value came from `input` (preferred over `average`).
type Found = (Option<String>, Option<f64>, bool);

fn read_sensors(dirs: &[std::path::PathBuf]) -> Vec<Sensor> {
    // (kind, index) -> what was found; the first directory that has an attribute wins.
    let mut found: BTreeMap<(SensorKind, u32), Found> = BTreeMap::new();
    for dir in dirs {
        for file in list_files(dir) {
            let Some((kind, index, attr)) = parse_attr_name(&file) else {
                continue;
            };
            let entry = found.entry((kind, index)).or_insert((None, None, false));
            let path = dir.join(&file);
            match attr {
                "label" if entry.0.is_none() => entry.0 = paths::read_attr(&path),
                "input" if entry.1.is_none() || !entry.2 => {
                    // `input` is preferred over `average`.
                    if let Some(v) = read_scaled(&path, kind) {
                        entry.1 = Some(v);
                        entry.2 = true;
                    }
                }
                "average" if kind == SensorKind::Power && entry.1.is_none() => {
                    entry.1 = read_scaled(&path, kind);
                }
                _ => {}
            }
        }
    }
    found
        .into_iter()
        .filter(|(_, (_, value, _))| value.is_some())
        .map(|((kind, index), (label, value, _))| Sensor {
            kind,
            index,
            label,
            value,
        })
        .collect()
}

fn read_scaled(path: &Path, kind: SensorKind) -> Option<f64> {
    let raw = paths::read_i64(path)? as f64 / kind.divisor();
    match kind {
        SensorKind::Temp => crate::sources::thermal::celsius_or_absent(raw),
        _ => Some(raw),
    }
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut names = paths::list_prefixed(dir, "");
    names.retain(|n| n.contains('_'));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names() {
        assert_eq!(
            parse_attr_name("temp1_input"),
            Some((SensorKind::Temp, 1, "input"))
        );
        assert_eq!(
            parse_attr_name("in10_label"),
            Some((SensorKind::Voltage, 10, "label"))
        );
        assert_eq!(
            parse_attr_name("power1_average"),
            Some((SensorKind::Power, 1, "average"))
        );
        assert_eq!(parse_attr_name("name"), None);
        assert_eq!(parse_attr_name("temp_input"), None);
        assert_eq!(parse_attr_name("pwm1_enable"), None);
        assert_eq!(parse_attr_name("update_interval"), None);
        assert_eq!(
            parse_attr_name("freq1_input"),
            Some((SensorKind::Freq, 1, "input"))
        );
        assert_eq!(
            parse_attr_name("humidity1_input"),
            Some((SensorKind::Humidity, 1, "input"))
        );
        assert_eq!(parse_attr_name("intrusion0_alarm"), None);
    }
}
