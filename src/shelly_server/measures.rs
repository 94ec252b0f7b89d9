//! One mapping from what a Shelly device measures to the metrics that show it:
//! the `shelly` collector's families (`power_*`, for the plug that powers this
//! device) and the hub page's (`shelly_plug_*`, per channel and per device
//! total). Both read the same [`Measurements`], in base units (joules, never
//! watt-hours).

use crate::energy::families;
use crate::sample::Family;
use crate::sources::shelly::Measurements;

/// One quantity a Shelly device measures, and where each output shows it.
#[derive(Debug)]
pub struct Measure {
    pub value: fn(&Measurements) -> Option<f64>,
    /// The `shelly` collector's family.
    pub device: &'static Family,
    /// The hub page's family for one channel.
    pub channel: &'static Family,
    /// The hub page's family for a whole device's own total, where devices
    /// total the quantity (three-phase meters).
    pub total: Option<&'static Family>,
}

macro_rules! families {
    ($($id:ident $kind:ident $name:literal $help:literal $unit:literal;)*) => {
        $(pub static $id: Family = Family::$kind($name, $help, $unit);)*
    };
}

families! {
    DEVICE_VOLTAGE gauge "power_voltage_volts" "AC voltage at the wall socket (Shelly plug)" "volts";
    DEVICE_CURRENT gauge "power_current_amps" "AC current at the wall socket (Shelly plug)" "amps";
    DEVICE_FACTOR gauge "power_factor" "Power factor at the wall socket (Shelly plug)" "";
    DEVICE_FREQUENCY gauge "power_frequency_hertz" "AC frequency (Shelly plug)" "hertz";
    DEVICE_ENERGY counter "power_energy_joules_total" "Energy drawn at the wall socket since the exporter started counting (Shelly plug; never decreases)" "joules";
    DEVICE_RETURNED counter "power_returned_energy_joules_total" "Energy returned to the grid (bidirectional Shelly meters; never decreases)" "joules";
    DEVICE_TEMPERATURE gauge "power_device_temperature_celsius" "Shelly plug's internal temperature" "celsius";
    DEVICE_OUTPUT gauge "power_output_on" "Shelly plug relay on (1) or off (0)" "";

    POWER gauge "shelly_plug_power_watts" "Active power of a plug's channel (negative when a bidirectional meter exports)" "watts";
    VOLTAGE gauge "shelly_plug_voltage_volts" "Voltage of a plug's channel" "volts";
    CURRENT gauge "shelly_plug_current_amps" "Current of a plug's channel" "amps";
    FACTOR gauge "shelly_plug_power_factor" "Power factor of a plug's channel" "";
    FREQUENCY gauge "shelly_plug_frequency_hertz" "Mains frequency at a plug's channel" "hertz";
    ENERGY counter "shelly_plug_energy_joules_total" "Active energy through a plug's channel, the device's own counter" "joules";
    RETURNED counter "shelly_plug_returned_energy_joules_total" "Energy a plug's channel returned to the grid, the device's own counter" "joules";
    TEMPERATURE gauge "shelly_plug_temperature_celsius" "Temperature of a plug's relay" "celsius";
    RELAY gauge "shelly_plug_relay_on" "Relay of a plug's channel on (1) or off (0)" "";
    TOTAL_POWER gauge "shelly_plug_total_power_watts" "Active power of a whole device, as the device totals it (three-phase meters)" "watts";
    TOTAL_CURRENT gauge "shelly_plug_total_current_amps" "Current of a whole device, as the device totals it" "amps";
    TOTAL_ENERGY counter "shelly_plug_total_energy_joules_total" "Active energy of a whole device, as the device totals it" "joules";
    TOTAL_RETURNED counter "shelly_plug_total_returned_energy_joules_total" "Returned energy of a whole device, as the device totals it" "joules";
}

/// Every quantity, in the order the hub page writes its families.
pub static MEASURES: [Measure; 9] = [
    Measure {
        value: |m| m.power_total_watts,
        device: &families::SHELLY_PLUG_WATTS,
        channel: &POWER,
        total: Some(&TOTAL_POWER),
    },
    Measure {
        value: |m| m.power_voltage_volts,
        device: &DEVICE_VOLTAGE,
        channel: &VOLTAGE,
        total: None,
    },
    Measure {
        value: |m| m.power_current_amps,
        device: &DEVICE_CURRENT,
        channel: &CURRENT,
        total: Some(&TOTAL_CURRENT),
    },
    Measure {
        value: |m| m.power_factor,
        device: &DEVICE_FACTOR,
        channel: &FACTOR,
        total: None,
    },
    Measure {
        value: |m| m.power_frequency_hertz,
        device: &DEVICE_FREQUENCY,
        channel: &FREQUENCY,
        total: None,
    },
    Measure {
        value: |m| m.energy_total_joules,
        device: &DEVICE_ENERGY,
        channel: &ENERGY,
        total: Some(&TOTAL_ENERGY),
    },
    Measure {
        value: |m| m.energy_returned_joules,
        device: &DEVICE_RETURNED,
        channel: &RETURNED,
        total: Some(&TOTAL_RETURNED),
    },
    Measure {
        value: |m| m.temperature_celsius,
        device: &DEVICE_TEMPERATURE,
        channel: &TEMPERATURE,
        total: None,
    },
    Measure {
        value: |m| m.output_on.map(|on| f64::from(u8::from(on))),
        device: &DEVICE_OUTPUT,
        channel: &RELAY,
        total: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::MetricKind;

    /// The two outputs agree on what each quantity is: the same kind, the same
    /// unit, and the page's names are the collector's under `shelly_plug_`.
    #[test]
    fn every_output_of_a_quantity_agrees() {
        for m in &MEASURES {
            assert_eq!(m.device.kind, m.channel.kind, "{}", m.channel.name);
            assert_eq!(m.device.unit, m.channel.unit, "{}", m.channel.name);
            if let Some(total) = m.total {
                assert_eq!(total.kind, m.channel.kind, "{}", total.name);
                assert_eq!(total.unit, m.channel.unit, "{}", total.name);
            }
            let counter = m.channel.kind == MetricKind::Counter;
            assert_eq!(counter, m.channel.name.ends_with("_total"));
            assert_eq!(counter, m.device.name.ends_with("_total"));
        }
    }
}
