//! The `board` collector: the input power of a board whose profile names an input
//! supply (`sources::board::Board::input_supply`), such as the AXP PMIC of
//! Allwinner Orange Pi boards. Runs beside `linux` on the boards that have one;
//! `docs/board-sensors.md` lists which do and what to add on those that do not.

use super::{CollectError, Collector};
use crate::energy::{Meters, families};
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::power_supply::{self, Supply};

pub const NAME: &str = "board";

static VOLTAGE: Family = Family::gauge(
    "board_input_voltage_volts",
    "Voltage of the board's input supply",
    "volts",
);
static CURRENT: Family = Family::gauge(
    "board_input_current_amps",
    "Current drawn from the board's input supply",
    "amps",
);

#[derive(Debug)]
pub struct BoardCollector {
    paths: Paths,
    supply_prefix: &'static str,
    meters: Meters,
}

impl BoardCollector {
    pub fn new(paths: Paths, supply_prefix: &'static str, meters: Meters) -> Self {
        BoardCollector {
            paths,
            supply_prefix,
            meters,
        }
    }
}

/// The input among the supplies: the first one named `prefix*` that is not
/// offline and reports something electrical.
pub fn find_input<'a>(supplies: &'a [Supply], prefix: &str) -> Option<&'a Supply> {
    supplies.iter().find(|s| {
        s.name.starts_with(prefix)
            && s.online != Some(false)
            && s.kind.as_deref() != Some("Battery")
            && (s.voltage_volts.is_some() || s.current_amps.is_some() || s.power_watts.is_some())
    })
}

impl Collector for BoardCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let supplies = power_supply::read_supplies(&self.paths);
        let input = find_input(&supplies, self.supply_prefix).ok_or_else(|| {
            CollectError::NoData(format!(
                "no online {}* supply reporting voltage, current or power in {}",
                self.supply_prefix,
                self.paths.sys("class/power_supply").display()
            ))
        })?;
        let power = input.power_watts.or_else(|| {
            input
                .voltage_volts
                .zip(input.current_amps)
                .map(|(v, a)| v * a.abs())
        });
        if let Some(watts) = power {
            let sample = Sample::new(&families::BOARD_INPUT_WATTS, watts)
                .const_label("supply", input.name.as_str());
            self.meters.push_reading(
                out,
                &families::BOARD_INPUT,
                sample,
                std::time::Instant::now(),
            );
        }
        let fields = [
            (input.voltage_volts, &VOLTAGE),
            (input.current_amps, &CURRENT),
        ];
        for (value, family) in fields {
            out.push_some(value, |v| {
                Sample::new(family, v).const_label("supply", input.name.as_str())
            });
        }
        Ok(())
    }
}
