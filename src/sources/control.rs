//! Jetson control status, read-only: nvpmodel mode (`nvpmodel -q`), whether
//! jetson_clocks has pinned the clocks, fan PWM and speed, CPU and GPU governors,
//! GPU railgating. Everything is read from sysfs through the configured root, except
//! the nvpmodel mode, which only `nvpmodel -q` knows. Nothing here changes the board.
//!
//! Each reading is `None` where the board lacks it.

use std::path::Path;
use std::time::Duration;

use crate::paths::{self, Paths};

/// The nvpmodel power mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerMode {
    pub name: String,
    pub id: Option<u32>,
}

/// Parses `nvpmodel -q`: `NV Power Mode: MAXN` and, on the next line, its id.
pub fn parse_nvpmodel(output: &str) -> Option<PowerMode> {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    let name = lines.find_map(|l| l.strip_prefix("NV Power Mode:"))?.trim();
    if name.is_empty() {
        return None;
    }
    let id = lines.next().and_then(|l| l.parse().ok());
    Some(PowerMode {
        name: name.to_owned(),
        id,
    })
}

/// Runs `command -q` with a time limit; `None` when it is missing, fails or hangs.
pub fn query_nvpmodel(command: &str, limit: Duration) -> Option<PowerMode> {
    let out = crate::sources::command::run(command, &["-q"], limit).ok()?;
    parse_nvpmodel(&out)
}

/// The clocks of one CPU core as cpufreq reports them (kHz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuPolicy {
    pub index: u32,
    pub governor: Option<String>,
    pub min_khz: Option<i64>,
    pub max_khz: Option<i64>,
    pub hw_max_khz: Option<i64>,
}

impl CpuPolicy {
    /// Pinned at the hardware maximum, as jetson_clocks leaves it.
    pub fn pinned_at_max(&self) -> Option<bool> {
        let (min, max, hw) = (self.min_khz?, self.max_khz?, self.hw_max_khz?);
        Some(min == max && max == hw)
    }
}

pub fn read_cpu_policies(paths: &Paths) -> Vec<CpuPolicy> {
    let base = paths.sys("devices/system/cpu");
    paths::list_prefixed(&base, "cpu")
        .into_iter()
        .filter_map(|name| {
            let index = name.get(3..)?.parse().ok()?;
            let dir = base.join(&name).join("cpufreq");
            if !dir.is_dir() {
                return None;
            }
            Some(CpuPolicy {
                index,
                governor: paths::read_attr(&dir.join("scaling_governor")),
                min_khz: paths::read_i64(&dir.join("scaling_min_freq")),
                max_khz: paths::read_i64(&dir.join("scaling_max_freq")),
                hw_max_khz: paths::read_i64(&dir.join("cpuinfo_max_freq")),
            })
        })
        .collect()
}

/// The GPU's devfreq node and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub governor: Option<String>,
    pub min_hz: Option<i64>,
    pub max_hz: Option<i64>,
    pub hw_max_hz: Option<i64>,
    pub railgate_enabled: Option<bool>,
}

/// Device-tree names of Jetson GPUs (T210 to Thor).
const GPU_NODES: &[&str] = &["gv11b", "gp10b", "ga10b", "gb10b", "gpu"];

/// Finds the GPU among `/sys/class/devfreq/*` by its device-tree node name.
pub fn read_gpu(paths: &Paths) -> Option<Gpu> {
    let base = paths.sys("class/devfreq");
    paths::list_prefixed(&base, "")
        .into_iter()
        .find_map(|name| {
            let dir = base.join(&name);
            let node = paths::read_attr(&dir.join("device/of_node/name"))
                .map(|n| n.trim_end_matches('\0').to_owned());
            let is_gpu = node.as_deref().is_some_and(|n| GPU_NODES.contains(&n))
                || GPU_NODES.iter().any(|g| name.ends_with(&format!(".{g}")));
            is_gpu.then(|| Gpu {
                governor: paths::read_attr(&dir.join("governor")),
                min_hz: paths::read_i64(&dir.join("min_freq")),
                max_hz: paths::read_i64(&dir.join("max_freq")),
                hw_max_hz: available_max(&dir.join("available_frequencies")),
                railgate_enabled: paths::read_i64(&dir.join("device/railgate_enable"))
                    .map(|v| v != 0),
            })
        })
}

fn available_max(path: &Path) -> Option<i64> {
    paths::read_attr(path)?
        .split_ascii_whitespace()
        .filter_map(|f| f.parse::<i64>().ok())
        .max()
}

/// The fan: PWM duty (0-255) and measured speed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fan {
    pub pwm: Option<i64>,
    pub rpm: Option<i64>,
}

/// Reads the fan from hwmon (`pwmfan`/`pwm-fan` for the duty, `pwm_tach` or the
/// same node for the speed), or the older `/sys/devices/pwm-fan` node.
pub fn read_fan(paths: &Paths) -> Option<Fan> {
    let base = paths.sys("class/hwmon");
    let mut fan = Fan::default();
    for dir in paths::list_prefixed(&base, "hwmon") {
        let dir = base.join(dir);
        let Some(name) = paths::read_attr(&dir.join("name")) else {
            continue;
        };
        match name.as_str() {
            "pwmfan" | "pwm-fan" | "pwm_fan" => {
                fan.pwm = fan.pwm.or_else(|| paths::read_i64(&dir.join("pwm1")));
                fan.rpm = fan.rpm.or_else(|| paths::read_i64(&dir.join("fan1_input")));
            }
            "pwm_tach" | "pwm-tach" => {
                fan.rpm = fan
                    .rpm
                    .or_else(|| paths::read_i64(&dir.join("rpm")))
                    .or_else(|| paths::read_i64(&dir.join("fan1_input")));
            }
            _ => {}
        }
    }
    let legacy = paths.sys("devices/pwm-fan");
    fan.pwm = fan
        .pwm
        .or_else(|| paths::read_i64(&legacy.join("target_pwm")));
    fan.rpm = fan
        .rpm
        .or_else(|| paths::read_i64(&legacy.join("rpm_measured")));
    (fan.pwm.is_some() || fan.rpm.is_some()).then_some(fan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvpmodel_output() {
        assert_eq!(
            parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"),
            Some(PowerMode {
                name: "MAXN".into(),
                id: Some(0)
            })
        );
        assert_eq!(
            parse_nvpmodel("NV Power Mode: 15W\n"),
            Some(PowerMode {
                name: "15W".into(),
                id: None
            })
        );
        assert_eq!(parse_nvpmodel("garbage"), None);
        assert_eq!(parse_nvpmodel("NV Power Mode:   \n2"), None);
    }

    #[test]
    fn pinned_clocks() {
        let p = |min, max, hw| CpuPolicy {
            index: 0,
            governor: None,
            min_khz: Some(min),
            max_khz: Some(max),
            hw_max_khz: Some(hw),
        };
        assert_eq!(p(2201600, 2201600, 2201600).pinned_at_max(), Some(true));
        assert_eq!(p(729600, 2201600, 2201600).pinned_at_max(), Some(false));
        assert_eq!(p(1000, 1000, 2000).pinned_at_max(), Some(false));
    }
}
