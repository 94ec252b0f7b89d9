//! Power supplies and batteries from `/sys/class/power_supply/*`.
//!
//! Units per the kernel's sysfs-class-power ABI: µV, µA, µW, percent and tenths of
//! a degree Celsius. Every attribute is optional; drivers report what they know.

use crate::paths::{self, Paths};

#[derive(Debug, Clone, PartialEq)]
pub struct Supply {
    /// The directory name (`AC`, `BAT0`, `rpi-power`, `usb`).
    pub name: String,
    /// The `type` attribute (`Mains`, `Battery`, `USB`).
    pub kind: Option<String>,
    pub online: Option<bool>,
    pub voltage_volts: Option<f64>,
    /// Signed on drivers that report discharge as negative.
    pub current_amps: Option<f64>,
    pub power_watts: Option<f64>,
    pub capacity_percent: Option<f64>,
    pub temp_celsius: Option<f64>,
}

pub fn read_supplies(paths: &Paths) -> Vec<Supply> {
    let base = paths.sys("class/power_supply");
    paths::list_prefixed(&base, "")
        .into_iter()
        .map(|name| {
            let dir = base.join(&name);
            let num = |attr: &str| paths::read_i64(&dir.join(attr));
            Supply {
                kind: paths::read_attr(&dir.join("type")),
                online: num("online").map(|v| v != 0),
                voltage_volts: num("voltage_now").map(|v| v as f64 / 1e6),
                current_amps: num("current_now").map(|v| v as f64 / 1e6),
                power_watts: num("power_now").map(|v| v as f64 / 1e6),
                capacity_percent: num("capacity").map(|v| v as f64),
                temp_celsius: num("temp").map(|v| v as f64 / 10.0),
                name,
            }
        })
        .collect()
}
