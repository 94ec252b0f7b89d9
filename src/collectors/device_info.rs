//! The `device_info` collector: `edge_device_info`, always 1, whose labels say
//! which board and software the device runs (model, SoC, L4T and JetPack releases,
//! kernel, OS, serial number; see `sources::device_info`). Read once when the
//! collector starts (these change with a reboot, which restarts it); a label the
//! device does not tell is left out rather than set to an empty string.

use super::{CollectError, Collector};
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::device_info::{self, DeviceInfo};

pub const NAME: &str = "device_info";

static INFO: Family = Family::gauge(
    "edge_device_info",
    "The device's board and software: model, soc, l4t, jetpack, kernel, os, serial (labels the device does not tell are left out); always 1",
    "",
);

#[derive(Debug)]
pub struct DeviceInfoCollector {
    info: DeviceInfo,
}

impl DeviceInfoCollector {
    pub fn new(paths: &Paths) -> Self {
        DeviceInfoCollector {
            info: device_info::read(paths),
        }
    }
}

impl Collector for DeviceInfoCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let i = &self.info;
        let mut sample = Sample::with_id(INFO.name, &INFO, 1.0);
        for (name, value) in [
            ("model", &i.model),
            ("soc", &i.soc),
            ("l4t", &i.l4t),
            ("jetpack", &i.jetpack),
            ("kernel", &i.kernel),
            ("os", &i.os),
            ("serial", &i.serial),
        ] {
            if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                sample = sample.const_label(name, v);
            }
        }
        out.push(sample);
        Ok(())
    }
}
