//! The `pmic` collector: per-rail current, voltage and power of the Raspberry Pi 5
//! PMIC from `vcgencmd pmic_read_adc` (see `sources::pmic`), and their sum as an
//! estimate of the board's power. Runs on a Pi 5 (`raspberry_pi`), or wherever
//! `pmic.enabled: true`; needs no extra hardware.

use std::time::Duration;

use super::{CollectError, Collector};
use crate::energy::{Meters, families};
use crate::sample::{Family, Sample, SampleSink, sanitize};
use crate::sources::command::{self, CommandError};
use crate::sources::pmic;

pub const NAME: &str = "pmic";
pub const TIMEOUT: Duration = Duration::from_secs(5);

static CURRENT: Family = Family::gauge(
    "board_pmic_current_amps",
    "Current of a Raspberry Pi 5 PMIC rail (vcgencmd pmic_read_adc)",
    "amps",
);
static VOLTAGE: Family = Family::gauge(
    "board_pmic_voltage_volts",
    "Voltage of a Raspberry Pi 5 PMIC rail (vcgencmd pmic_read_adc); EXT5V is the 5 V input",
    "volts",
);
static POWER: Family = Family::gauge(
    "board_pmic_power_watts",
    "Power of a Raspberry Pi 5 PMIC rail: its voltage times its current",
    "watts",
);

#[derive(Debug)]
pub struct PmicCollector {
    command: String,
    meters: Meters,
}

impl PmicCollector {
    pub fn new(command: String, meters: Meters) -> Self {
        PmicCollector { command, meters }
    }
}

impl Collector for PmicCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let output = command::run(&self.command, &["pmic_read_adc"], TIMEOUT).map_err(|e| match e {
            CommandError::NotFound { .. } => CollectError::NoData(format!(
                "{e}: it comes with Raspberry Pi OS (package raspi-utils); set pmic.command to its path"
            )),
            other => CollectError::Command(other),
        })?;
        let rails = pmic::parse(&output);
        if rails.is_empty() {
            let first = output.lines().next().unwrap_or("").trim();
            return Err(CollectError::NoData(format!(
                "no PMIC readings from {} pmic_read_adc (a Raspberry Pi 5 firmware has it): {first:?}",
                self.command
            )));
        }
        push_rails(out, &rails);
        if let Some(watts) = pmic::estimate_watts(&rails) {
            let at = std::time::Instant::now();
            self.meters.push_reading(
                out,
                &families::PMIC_ESTIMATE,
                Sample::new(&families::PMIC_ESTIMATE_WATTS, watts),
                at,
            );
        }
        Ok(())
    }
}

fn push_rails(out: &mut SampleSink, rails: &[pmic::Rail]) {
    for rail in rails {
        let Some(name) = sanitize(&rail.name) else {
            continue;
        };
        let fields = [
            (rail.current_amps, "current_amps", &CURRENT),
            (rail.volts, "voltage_volts", &VOLTAGE),
            (rail.watts(), "power_watts", &POWER),
        ];
        for (value, suffix, family) in fields {
            out.push_some(value, |v| {
                Sample::with_id(format!("board_pmic_{name}_{suffix}"), family, v)
                    .label("rail", name.as_str())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Registry;

    #[test]
    fn rails_and_the_estimate() {
        let text = include_str!("../../tests/fixtures/vcgencmd/pi5-pmic_read_adc.txt");
        let mut out = SampleSink::default();
        push_rails(&mut out, &pmic::parse(text));
        let get = |id: &str| out.samples().iter().find(|s| &*s.id == id).map(|s| s.value);
        assert_eq!(get("board_pmic_vdd_core_current_amps"), Some(5.03652));
        assert_eq!(get("board_pmic_vdd_core_voltage_volts"), Some(0.8936988));
        assert_eq!(get("board_pmic_ext5v_voltage_volts"), Some(4.9245));
        assert_eq!(
            get("board_pmic_ext5v_power_watts"),
            None,
            "no current on EXT5V"
        );
        assert_eq!(get("board_pmic_3v7_wl_sw_current_amps"), Some(0.0585558));
        let estimate = pmic::estimate_watts(&pmic::parse(text)).expect("estimate");
        assert!((estimate - 5.921_612).abs() < 1e-5);
        // 12 rails with V, A and W, two with V only.
        assert_eq!(out.samples().len(), 12 * 3 + 2);
    }

    #[test]
    fn the_command_is_run_and_its_failures_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("vcgencmd");
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/vcgencmd/pi5-pmic_read_adc.txt"
        );
        std::fs::write(
            &fake,
            format!("#!/bin/sh\n[ \"$1\" = pmic_read_adc ] || exit 2\ncat '{fixture}'\n"),
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let meters = || {
            Meters::new(
                Registry::new(),
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
        };
        let mut c = PmicCollector::new(fake.display().to_string(), meters());
        let mut out = SampleSink::default();
        c.collect(&mut out).expect("reads");
        // The rails, and the estimate with its energy and peak.
        assert_eq!(out.samples().len(), 38 + 3);
        let get = |id: &str| out.samples().iter().find(|s| &*s.id == id).map(|s| s.value);
        assert_eq!(get("board_pmic_power_estimate_joules_total"), Some(0.0));
        assert_eq!(
            get("board_pmic_power_estimate_peak_watts"),
            get("board_pmic_power_estimate_watts")
        );

        let mut missing = PmicCollector::new("/nonexistent/vcgencmd".into(), meters());
        assert!(matches!(
            missing.collect(&mut out),
            Err(CollectError::NoData(_))
        ));
        // A Pi 4's firmware answers, but without readings.
        let mut pi4 = PmicCollector::new("echo".into(), meters());
        assert!(
            matches!(pi4.collect(&mut out), Err(CollectError::NoData(m)) if m.contains("pmic_read_adc"))
        );
        let mut broken = PmicCollector::new("false".into(), meters());
        assert!(matches!(
            broken.collect(&mut out),
            Err(CollectError::Command(_))
        ));
    }
}
