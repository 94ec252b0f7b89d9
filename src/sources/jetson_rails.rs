//! The Jetson's INA3221 power rails, read from sysfs (no root needed).
//!
//! Two layouts, both under `--path.sysfs`:
//! * JetPack 5 and later, the mainline `ina3221` hwmon driver:
//!   `bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmonN/` with `inK_label` (the
//!   rail), `inK_input` (bus voltage, mV), `currK_input` (mA), `inK_enable`, for
//!   K = 1..3. The chip has no power register: power is V × I.
//! * JetPack 4, NVIDIA's `ina3221x` IIO driver:
//!   `bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:deviceN/` with `rail_name_K`,
//!   `in_power{K}_input` (mW), `in_voltage{K}_input` (mV), `in_current{K}_input`
//!   (mA), for K = 0..2.
//!
//! Rails named `NC` (not connected) are skipped, as tegrastats skips them. Which
//! rail is the module's input, and the metric ids, are the collector's business.

use std::ffi::CString;
use std::path::Path;
use std::sync::Arc;

use crate::paths::{self, AttrDir, Paths};

/// How a rail's files are laid out (names of files in the chip's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// hwmon: voltage and current files, power computed.
    Hwmon { volts_mv: CString, amps_ma: CString },
    /// IIO: power, voltage and current files.
    Iio {
        power_mw: CString,
        volts_mv: CString,
        amps_ma: CString,
    },
}

/// One rail found in sysfs.
#[derive(Debug, Clone)]
pub struct Rail {
    /// The rail's name as the board labels it (`VDD_IN`, `POM_5V_GPU`).
    pub name: String,
    /// The chip's directory, kept open: its files are read by name.
    pub chip: Arc<AttrDir>,
    pub layout: Layout,
}

fn c(name: String) -> CString {
    // Attribute names are ASCII without NUL.
    CString::new(name).unwrap_or_default()
}

/// One reading of a rail, in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RailReading {
    pub watts: Option<f64>,
    pub volts: Option<f64>,
    pub amps: Option<f64>,
}

/// Every rail of every INA3221 in sysfs, hwmon first, in a stable order. Empty
/// when the board has none (a Nano 2 GB, a machine that is not a Jetson).
pub fn discover(paths: &Paths) -> Vec<Rail> {
    let mut rails = Vec::new();
    let hwmon_drv = paths.sys("bus/i2c/drivers/ina3221");
    for device in paths::list_prefixed(&hwmon_drv, "") {
        let hwmon = hwmon_drv.join(&device).join("hwmon");
        for node in paths::list_prefixed(&hwmon, "hwmon") {
            hwmon_rails(&hwmon.join(node), &mut rails);
        }
    }
    let iio_drv = paths.sys("bus/i2c/drivers/ina3221x");
    for device in paths::list_prefixed(&iio_drv, "") {
        let dir = iio_drv.join(&device);
        for node in paths::list_prefixed(&dir, "iio:device") {
            iio_rails(&dir.join(node), &mut rails);
        }
    }
    rails
}

fn usable(name: Option<String>) -> Option<String> {
    name.filter(|n| !n.eq_ignore_ascii_case("NC"))
}

fn hwmon_rails(dir: &Path, out: &mut Vec<Rail>) {
    let Some(chip) = AttrDir::open(dir).map(Arc::new) else {
        return;
    };
    for k in 1..=3 {
        let Some(name) = usable(paths::read_attr(&dir.join(format!("in{k}_label")))) else {
            continue;
        };
        // A channel switched off reads stale or failing values.
        if paths::read_i64(&dir.join(format!("in{k}_enable"))) == Some(0) {
            continue;
        }
        out.push(Rail {
            name,
            chip: chip.clone(),
            layout: Layout::Hwmon {
                volts_mv: c(format!("in{k}_input")),
                amps_ma: c(format!("curr{k}_input")),
            },
        });
    }
}

fn iio_rails(dir: &Path, out: &mut Vec<Rail>) {
    let Some(chip) = AttrDir::open(dir).map(Arc::new) else {
        return;
    };
    for k in 0..=2 {
        let Some(name) = usable(paths::read_attr(&dir.join(format!("rail_name_{k}")))) else {
            continue;
        };
        out.push(Rail {
            name,
            chip: chip.clone(),
            layout: Layout::Iio {
                power_mw: c(format!("in_power{k}_input")),
                volts_mv: c(format!("in_voltage{k}_input")),
                amps_ma: c(format!("in_current{k}_input")),
            },
        });
    }
}

impl Rail {
    /// Reads the rail once: one small read per file. `None` when nothing could be
    /// read (the files are gone).
    pub fn read(&self) -> Option<RailReading> {
        let milli = |name: &CString| self.chip.read_i64(name).map(|v| v as f64 / 1e3);
        let reading = match &self.layout {
            Layout::Hwmon { volts_mv, amps_ma } => {
                let (mv, ma) = (self.chip.read_i64(volts_mv), self.chip.read_i64(amps_ma));
                // mV × mA is µW exactly; one division gives the nearest double.
                RailReading {
                    watts: mv.zip(ma).map(|(v, a)| (v * a) as f64 / 1e6),
                    volts: mv.map(|v| v as f64 / 1e3),
                    amps: ma.map(|a| a as f64 / 1e3),
                }
            }
            Layout::Iio {
                power_mw,
                volts_mv,
                amps_ma,
            } => RailReading {
                watts: milli(power_mw),
                volts: milli(volts_mv),
                amps: milli(amps_ma),
            },
        };
        (reading.watts.is_some() || reading.volts.is_some() || reading.amps.is_some())
            .then_some(reading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    fn paths_of(root: &Path) -> Paths {
        Paths {
            sysfs: root.join("sys"),
            ..Paths::default()
        }
    }

    #[test]
    fn hwmon_layout_jetpack5() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hw = dir
            .path()
            .join("sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3");
        for (k, name, mv, ma) in [
            (1, "VDD_IN", 5000, 2000),
            (2, "VDD_CPU_GPU_CV", 4990, 300),
            (3, "NC", 0, 0),
        ] {
            write(&hw.join(format!("in{k}_label")), &format!("{name}\n"));
            write(&hw.join(format!("in{k}_input")), &format!("{mv}\n"));
            write(&hw.join(format!("curr{k}_input")), &format!("{ma}\n"));
            write(&hw.join(format!("in{k}_enable")), "1\n");
        }
        // Shunt voltages (in4..in6) are not rails.
        write(&hw.join("in4_input"), "12\n");
        let rails = discover(&paths_of(dir.path()));
        let names: Vec<&str> = rails.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["VDD_IN", "VDD_CPU_GPU_CV"]);
        let r = rails[0].read().expect("reading");
        assert_eq!(r.volts, Some(5.0));
        assert_eq!(r.amps, Some(2.0));
        assert_eq!(r.watts, Some(10.0));
        // A disabled channel is left out.
        write(&hw.join("in2_enable"), "0\n");
        assert_eq!(discover(&paths_of(dir.path())).len(), 1);
    }

    #[test]
    fn iio_layout_jetpack4() {
        let dir = tempfile::tempdir().expect("tempdir");
        let iio = dir
            .path()
            .join("sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0");
        for (k, name, mw) in [
            (0, "POM_5V_IN", 2003),
            (1, "POM_5V_GPU", 40),
            (2, "POM_5V_CPU", 404),
        ] {
            write(&iio.join(format!("rail_name_{k}")), &format!("{name}\n"));
            write(&iio.join(format!("in_power{k}_input")), &format!("{mw}\n"));
            write(&iio.join(format!("in_voltage{k}_input")), "5048\n");
            write(&iio.join(format!("in_current{k}_input")), "396\n");
        }
        let rails = discover(&paths_of(dir.path()));
        assert_eq!(rails.len(), 3);
        assert_eq!(rails[0].name, "POM_5V_IN");
        let r = rails[0].read().expect("reading");
        assert_eq!(r.watts, Some(2.003));
        assert_eq!(r.volts, Some(5.048));
        assert_eq!(r.amps, Some(0.396));
        fs::remove_file(iio.join("in_power0_input")).expect("rm");
        fs::remove_file(iio.join("in_voltage0_input")).expect("rm");
        fs::remove_file(iio.join("in_current0_input")).expect("rm");
        // The sampler refreshes each chip once per round.
        rails[0].chip.refresh();
        assert_eq!(rails[0].read(), None);
    }

    #[test]
    fn no_rails_on_other_machines() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(discover(&paths_of(dir.path())).is_empty());
    }
}
