//! Every power family set the exporter reports, in one place: a source's watts
//! and the joules counter and peak that follow from them (see [`PowerFamilies`]).
//! Collectors take theirs from here; none defines power families of its own or
//! borrows another's.

use super::PowerFamilies;
use crate::sample::Family;

// Jetson rails (tegrastats and the INA3221 in sysfs)

pub static JETSON_RAIL_WATTS: Family =
    Family::gauge("jetson_power_watts", "Power rail, instantaneous", "watts").at_least(0.0);
/// The rails' energy layer: a counter and a peak beside each rail's watts.
pub static JETSON_RAIL: PowerFamilies = PowerFamilies {
    watts: &JETSON_RAIL_WATTS,
    joules: Some(Family::counter(
        "jetson_power_joules_total",
        "Energy of a power rail, integrated from its readings (gaps over 3 sample periods left out)",
        "joules",
    )),
    peak: Family::gauge(
        "jetson_power_peak_watts",
        "Power rail, highest reading over the last collection interval",
        "watts",
    )
    .at_least(0.0),
    total: false,
};

pub static JETSON_INPUT_WATTS: Family = Family::gauge(
    "jetson_power_input_watts",
    "Power into the module, from its input rail (VDD_IN, POM_5V_IN or VIN); absent on boards without one",
    "watts",
)
.at_least(0.0);
/// The same for the module's input rail: the module's own total.
pub static JETSON_INPUT: PowerFamilies = PowerFamilies {
    watts: &JETSON_INPUT_WATTS,
    joules: Some(Family::counter(
        "jetson_power_input_joules_total",
        "Energy into the module, from its input rail (VDD_IN, POM_5V_IN or VIN)",
        "joules",
    )),
    peak: Family::gauge(
        "jetson_power_input_peak_watts",
        "Power into the module, highest reading over the last collection interval",
        "watts",
    )
    .at_least(0.0),
    total: true,
};

// hwmon power sensors and power supplies

pub static HWMON_WATTS: Family = Family::gauge(
    "host_hwmon_power_watts",
    "hwmon power sensor (or an INA2xx/INA3221 channel's voltage times current)",
    "watts",
);
pub static HWMON: PowerFamilies = PowerFamilies {
    watts: &HWMON_WATTS,
    joules: Some(Family::counter(
        "host_hwmon_power_joules_total",
        "Energy of an hwmon power sensor, integrated from its readings",
        "joules",
    )),
    peak: Family::gauge(
        "host_hwmon_power_peak_watts",
        "hwmon power sensor, highest reading over the last collection interval",
        "watts",
    ),
    total: false,
};

pub static POWER_SUPPLY_WATTS: Family = Family::gauge(
    "host_power_supply_power_watts",
    "Power supply power",
    "watts",
);
pub static POWER_SUPPLY: PowerFamilies = PowerFamilies {
    watts: &POWER_SUPPLY_WATTS,
    joules: Some(Family::counter(
        "host_power_supply_power_joules_total",
        "Energy through a power supply, integrated from its power_now",
        "joules",
    )),
    peak: Family::gauge(
        "host_power_supply_power_peak_watts",
        "Power supply power, highest reading over the last collection interval",
        "watts",
    ),
    total: false,
};

// a board's input (sysfs)

pub static BOARD_INPUT_WATTS: Family = Family::gauge(
    "board_input_power_watts",
    "Power into the board from its input supply (power_now, else voltage times current)",
    "watts",
);
/// The board's input: the board's own total.
pub static BOARD_INPUT: PowerFamilies = PowerFamilies {
    watts: &BOARD_INPUT_WATTS,
    joules: Some(Family::counter(
        "board_input_power_joules_total",
        "Energy into the board from its input supply, integrated from board_input_power_watts",
        "joules",
    )),
    peak: Family::gauge(
        "board_input_power_peak_watts",
        "Power into the board, highest reading over the last collection interval",
        "watts",
    ),
    total: true,
};

// RAPL zones

pub static RAPL_WATTS: Family = Family::gauge(
    "rapl_power_watts",
    "Average power of a RAPL zone over the last collection interval",
    "watts",
)
.at_least(0.0);
/// RAPL has a hardware counter (`ENERGY`): the layer adds the peak.
pub static RAPL: PowerFamilies = PowerFamilies {
    watts: &RAPL_WATTS,
    joules: None,
    peak: Family::gauge(
        "rapl_power_peak_watts",
        "Highest power of a RAPL zone between two counter readings (power.sample_interval apart, closer while a run is measured, at least 10 ms), over the last collection interval",
        "watts",
    )
    .at_least(0.0),
    total: false,
};

// the Raspberry Pi 5's PMIC

pub static PMIC_ESTIMATE_WATTS: Family = Family::gauge(
    "board_pmic_power_estimate_watts",
    "ESTIMATE of a Raspberry Pi 5's power: the sum of voltage times current over the PMIC rails. It leaves out USB peripherals and conversion losses, so the power at the wall is higher",
    "watts",
);
/// The estimate's energy: not a device total (it is a sum of rails, and leaves
/// out USB and conversion losses).
pub static PMIC_ESTIMATE: PowerFamilies = PowerFamilies {
    watts: &PMIC_ESTIMATE_WATTS,
    joules: Some(Family::counter(
        "board_pmic_power_estimate_joules_total",
        "ESTIMATE of a Raspberry Pi 5's energy, integrated from board_pmic_power_estimate_watts",
        "joules",
    )),
    peak: Family::gauge(
        "board_pmic_power_estimate_peak_watts",
        "ESTIMATE of a Raspberry Pi 5's power, highest over the last collection interval",
        "watts",
    ),
    total: false,
};

// INA2xx sensors on I2C

pub static INA2XX_WATTS: Family = Family::gauge(
    "board_power_watts",
    "Power measured by an INA2xx sensor",
    "watts",
);
/// An INA2xx sensor measures a whole board (or what it is wired into): a total.
pub static INA2XX: PowerFamilies = PowerFamilies {
    watts: &INA2XX_WATTS,
    joules: Some(Family::counter(
        "board_power_joules_total",
        "Energy measured by an INA2xx sensor, integrated from its readings",
        "joules",
    )),
    peak: Family::gauge(
        "board_power_peak_watts",
        "Power measured by an INA2xx sensor, highest reading over the last collection interval",
        "watts",
    ),
    total: true,
};

// Shelly plugs (the plug's own power reading, and the mean and peak its energy
// counter gives; the counter itself is the plug's)

pub static SHELLY_PLUG_WATTS: Family = Family::gauge(
    "power_total_watts",
    "AC power drawn at the wall socket (Shelly plug)",
    "watts",
);
pub static SHELLY_PLUG_MEAN_WATTS: Family = Family::gauge(
    "power_mean_watts",
    "Mean power at the wall socket over the last collection interval, from the plug's energy counter",
    "watts",
)
.at_least(0.0);
pub static SHELLY_PLUG: PowerFamilies = PowerFamilies {
    watts: &SHELLY_PLUG_MEAN_WATTS,
    joules: None,
    peak: Family::gauge(
        "power_peak_watts",
        "Highest power reading at the wall socket over the last collection interval",
        "watts",
    ),
    total: true,
};
