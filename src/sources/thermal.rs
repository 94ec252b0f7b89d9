//! Thermal zones from `/sys/class/thermal/thermal_zone*/{type,temp}`.
//!
//! `temp` is in millidegrees Celsius. A zone whose sensor is off answers an error or
//! a sentinel (Jetson boards write -256 °C); both are absent.

use crate::paths::{self, Paths};

/// One thermal zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// N of `thermal_zoneN`.
    pub index: u32,
    /// The zone's `type`, as the driver names it (`cpu-thermal`, `x86_pkg_temp`).
    pub kind: String,
    pub celsius: Option<f64>,
}

/// Readings at or below this are sentinels, not temperatures: -256 °C is what
/// Jetson drivers report for a sensor that is off, and nothing colder is physical.
pub const SENTINEL_CELSIUS: f64 = -256.0;

/// Converts a millidegree reading, treating sentinels as absent.
pub fn millidegrees_to_celsius(raw: i64) -> Option<f64> {
    celsius_or_absent(raw as f64 / 1000.0)
}

/// `None` for the sentinel range.
pub fn celsius_or_absent(c: f64) -> Option<f64> {
    (c > SENTINEL_CELSIUS).then_some(c)
}

pub fn read_zones(paths: &Paths) -> Vec<Zone> {
    let base = paths.sys("class/thermal");
    paths::list_prefixed(&base, "thermal_zone")
        .into_iter()
        .filter_map(|name| {
            let index = name["thermal_zone".len()..].parse().ok()?;
            let dir = base.join(&name);
            let kind = paths::read_attr(&dir.join("type"))?;
            let celsius = paths::read_i64(&dir.join("temp")).and_then(millidegrees_to_celsius);
            Some(Zone {
                index,
                kind,
                celsius,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels() {
        assert_eq!(millidegrees_to_celsius(45250), Some(45.25));
        assert_eq!(millidegrees_to_celsius(-5000), Some(-5.0));
        assert_eq!(millidegrees_to_celsius(-256000), None);
        assert_eq!(millidegrees_to_celsius(-273150), None);
    }
}
