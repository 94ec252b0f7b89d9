//! The `control` collector: Jetson control status, read-only (see
//! `sources::control`): nvpmodel mode, jetson_clocks, fan, CPU and GPU governors,
//! GPU railgating. Runs beside `tegrastats` on Jetson device types.
//!
//! `nvpmodel -q` is a process, so it runs at most every [`NVPMODEL_EVERY`] and
//! never longer than [`NVPMODEL_TIMEOUT`]; it runs in the background collection,
//! never in a scrape.

use std::time::{Duration, Instant};

use super::{CollectError, Collector};
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::control::{self, PowerMode};

pub const NAME: &str = "control";
pub const NVPMODEL_EVERY: Duration = Duration::from_secs(30);
pub const NVPMODEL_TIMEOUT: Duration = Duration::from_secs(5);

static NVPMODEL_INFO: Family = Family::gauge(
    "jetson_nvpmodel_mode_info",
    "nvpmodel power mode (always 1; the mode is in the mode label)",
    "",
);
static NVPMODEL_ID: Family = Family::gauge("jetson_nvpmodel_mode_id", "nvpmodel power mode id", "");
static CLOCKS: Family = Family::gauge(
    "jetson_clocks_active",
    "Whether CPU (and GPU) clocks are pinned at their maximum, as jetson_clocks leaves them (inferred from cpufreq and devfreq)",
    "",
);
static FAN_PWM: Family = Family::gauge("jetson_fan_pwm_percent", "Fan PWM duty", "percent");
static FAN_RPM: Family = Family::gauge("jetson_fan_rpm", "Fan speed", "rpm");
static CPU_GOVERNOR: Family = Family::gauge(
    "jetson_cpu_governor_info",
    "cpufreq governor of a core (always 1; the governor is in the governor label)",
    "",
);
static GPU_GOVERNOR: Family = Family::gauge(
    "jetson_gpu_governor_info",
    "GPU devfreq governor (always 1; the governor is in the governor label)",
    "",
);
static GPU_RAILGATE: Family = Family::gauge(
    "jetson_gpu_railgate_enabled",
    "Whether the GPU may be power-gated when idle (1) or is kept on (0)",
    "",
);

#[derive(Debug)]
pub struct ControlCollector {
    paths: Paths,
    nvpmodel_command: String,
    nvpmodel: Option<PowerMode>,
    nvpmodel_checked: Option<Instant>,
}

impl ControlCollector {
    pub fn new(paths: Paths, nvpmodel_command: String) -> Self {
        ControlCollector {
            paths,
            nvpmodel_command,
            nvpmodel: None,
            nvpmodel_checked: None,
        }
    }
}

impl Collector for ControlCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        if self
            .nvpmodel_checked
            .is_none_or(|t| t.elapsed() >= NVPMODEL_EVERY)
        {
            self.nvpmodel = control::query_nvpmodel(&self.nvpmodel_command, NVPMODEL_TIMEOUT);
            self.nvpmodel_checked = Some(Instant::now());
        }
        if let Some(mode) = &self.nvpmodel {
            out.push(Sample::new(&NVPMODEL_INFO, 1.0).const_label("mode", mode.name.as_str()));
            out.push_some(mode.id.map(f64::from), |v| {
                Sample::new(&NVPMODEL_ID, v).const_label("mode", mode.name.as_str())
            });
        }

        let policies = control::read_cpu_policies(&self.paths);
        for p in &policies {
            if let Some(governor) = &p.governor {
                out.push(
                    Sample::with_id(
                        format!("jetson_cpu_core{}_governor_info", p.index),
                        &CPU_GOVERNOR,
                        1.0,
                    )
                    .label("core", p.index.to_string())
                    .const_label("governor", governor.as_str()),
                );
            }
        }
        let gpu = control::read_gpu(&self.paths);
        if let Some(gpu) = &gpu {
            if let Some(governor) = &gpu.governor {
                out.push(
                    Sample::new(&GPU_GOVERNOR, 1.0).const_label("governor", governor.as_str()),
                );
            }
            out.push_some(
                gpu.railgate_enabled.map(|on| if on { 1.0 } else { 0.0 }),
                |v| Sample::new(&GPU_RAILGATE, v),
            );
        }
        // jetson_clocks sets every CPU's (and the GPU's) minimum clock to its maximum.
        let cpus_pinned: Option<bool> = if policies.is_empty() {
            None
        } else {
            policies
                .iter()
                .map(|p| p.pinned_at_max())
                .collect::<Option<Vec<bool>>>()
                .map(|v| v.iter().all(|p| *p))
        };
        let gpu_pinned = gpu
            .as_ref()
            .map(|g| match (g.min_hz, g.max_hz, g.hw_max_hz) {
                (Some(min), Some(max), Some(hw)) => min == max && max == hw,
                (Some(min), Some(max), None) => min == max,
                _ => false,
            });
        out.push_some(
            cpus_pinned
                .map(|cpu| cpu && gpu_pinned.unwrap_or(true))
                .map(|a| if a { 1.0 } else { 0.0 }),
            |v| Sample::new(&CLOCKS, v),
        );
        if let Some(fan) = control::read_fan(&self.paths) {
            out.push_some(fan.pwm.map(|p| p as f64 * 100.0 / 255.0), |v| {
                Sample::new(&FAN_PWM, v)
            });
            out.push_some(fan.rpm.map(|r| r as f64), |v| Sample::new(&FAN_RPM, v));
        }
        Ok(())
    }
}
