//! Which board this is: the device-tree model (`/proc/device-tree/model`, or
//! `/sys/firmware/devicetree/base/model`), `/etc/nv_tegra_release`, and on x86 the
//! DMI strings (`/sys/class/dmi/id/{sys_vendor,board_vendor,board_name,product_name}`),
//! read through the configured roots. Used by `device_type: auto`.
//!
//! The board profiles here are the small per-board facts the rest of the exporter
//! needs: the device type a board maps to, which tegrastats rail (if any) measures
//! the power into a Jetson module, and for other boards where their input power can
//! be read, if anywhere. `docs/tegrastats.md` and `docs/board-sensors.md` have the
//! tables.

use crate::paths::{self, Paths};

/// What the exporter runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// Any Linux machine: the `linux` collector only.
    Linux,
    /// Detect the board; falls back to `linux`.
    Auto,
    /// A Jetson of another family (TX1, TX2, Thor, ...): tegrastats plus `linux`.
    Jetson,
    JetsonOrin,
    JetsonXavier,
    JetsonNano,
    /// Power from INA260 over I2C (and the PMIC on a Pi 5).
    RaspberryPi,
    /// sysfs: the board profile's input, where the board has one.
    OrangePi,
    /// x86: RAPL through powercap.
    LattePanda,
}

impl DeviceType {
    pub const SUPPORTED: &[&str] = &[
        "linux",
        "auto",
        "jetson",
        "jetson_orin",
        "jetson_xavier",
        "jetson_nano",
        "raspberry_pi",
        "orange_pi",
        "lattepanda",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "linux" => Some(DeviceType::Linux),
            "auto" => Some(DeviceType::Auto),
            "jetson" => Some(DeviceType::Jetson),
            "jetson_orin" => Some(DeviceType::JetsonOrin),
            "jetson_xavier" => Some(DeviceType::JetsonXavier),
            "jetson_nano" => Some(DeviceType::JetsonNano),
            "raspberry_pi" => Some(DeviceType::RaspberryPi),
            "orange_pi" => Some(DeviceType::OrangePi),
            "lattepanda" => Some(DeviceType::LattePanda),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Linux => "linux",
            DeviceType::Auto => "auto",
            DeviceType::Jetson => "jetson",
            DeviceType::JetsonOrin => "jetson_orin",
            DeviceType::JetsonXavier => "jetson_xavier",
            DeviceType::JetsonNano => "jetson_nano",
            DeviceType::RaspberryPi => "raspberry_pi",
            DeviceType::OrangePi => "orange_pi",
            DeviceType::LattePanda => "lattepanda",
        }
    }

    pub fn is_jetson(self) -> bool {
        matches!(
            self,
            DeviceType::Jetson
                | DeviceType::JetsonOrin
                | DeviceType::JetsonXavier
                | DeviceType::JetsonNano
        )
    }
}

/// Jetson rails (as tegrastats and the INA3221 name them) that measure the power into the whole module, where a board has one.
/// `VIN_SYS_5V0` (AGX Orin, Thor) is a 5 V system rail, not the module input, and
/// AGX Xavier's rails overlap: neither gets a total, and no rails are ever summed.
pub const INPUT_RAILS: &[&str] = &["VDD_IN", "POM_5V_IN", "VIN"];

/// Facts about one family of boards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// A substring of the device-tree model that identifies the family.
    pub model_contains: &'static str,
    pub device_type: DeviceType,
    /// The rail that measures the module's input, when it has one.
    pub input_rail: Option<&'static str>,
}

/// Checked in order: the first match wins (so "Orin Nano" is an Orin, not a Nano).
pub const PROFILES: &[Profile] = &[
    Profile {
        model_contains: "AGX Orin",
        device_type: DeviceType::JetsonOrin,
        input_rail: None,
    },
    Profile {
        model_contains: "Orin",
        device_type: DeviceType::JetsonOrin,
        input_rail: Some("VDD_IN"),
    },
    Profile {
        model_contains: "AGX Xavier",
        device_type: DeviceType::JetsonXavier,
        input_rail: None,
    },
    Profile {
        model_contains: "Xavier",
        device_type: DeviceType::JetsonXavier,
        input_rail: Some("VDD_IN"),
    },
    Profile {
        model_contains: "Nano",
        device_type: DeviceType::JetsonNano,
        input_rail: Some("POM_5V_IN"),
    },
    Profile {
        model_contains: "Thor",
        device_type: DeviceType::Jetson,
        input_rail: Some("VIN"),
    },
    Profile {
        model_contains: "TX2",
        device_type: DeviceType::Jetson,
        input_rail: Some("VDD_IN"),
    },
    Profile {
        model_contains: "TX1",
        device_type: DeviceType::Jetson,
        input_rail: Some("VDD_IN"),
    },
];

/// How a non-Jetson board is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// A substring of the device-tree model (ARM boards).
    Model(&'static str),
    /// A substring of one of the DMI strings (x86 boards), compared ignoring case.
    Dmi(&'static str),
}

/// Facts about a Raspberry Pi, Orange Pi or LattePanda family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    pub matches: Match,
    pub device_type: DeviceType,
    /// The `power_supply` node (a name prefix) that reports the board's input,
    /// where the board has one.
    pub input_supply: Option<&'static str>,
    /// `vcgencmd pmic_read_adc` reports the PMIC's rails (Raspberry Pi 5 family).
    pub pmic: bool,
    /// What measures this board's power: shown in `/health` and the docs.
    pub power: &'static str,
}

const ADD_SENSOR: &str = "add an INA260/INA226/INA219 on the I2C header (ina2xx:) or meter the supply with a Shelly plug (shelly:)";

/// Checked in order: the first match wins (so the Pi 5 comes before other Pis).
pub const BOARDS: &[Board] = &[
    Board {
        matches: Match::Model("Raspberry Pi 5"),
        device_type: DeviceType::RaspberryPi,
        input_supply: None,
        pmic: true,
        power: "PMIC rails through vcgencmd pmic_read_adc (an estimate of the SoC side); INA260 over I2C for the whole board",
    },
    Board {
        matches: Match::Model("Raspberry Pi Compute Module 5"),
        device_type: DeviceType::RaspberryPi,
        input_supply: None,
        pmic: true,
        power: "PMIC rails through vcgencmd pmic_read_adc (an estimate of the SoC side); INA260 over I2C for the whole board",
    },
    Board {
        matches: Match::Model("Raspberry Pi"),
        device_type: DeviceType::RaspberryPi,
        input_supply: None,
        pmic: false,
        power: "no power sensor on the board: INA260 over I2C (the default: bus 1, 0x40)",
    },
    Board {
        // RK3588 boards (5, 5B, 5 Plus, 5 Max): the only electrical hwmon is the USB-PD
        // controller (tcpm_source_psy_*), which reports the negotiated contract.
        matches: Match::Model("Orange Pi 5"),
        device_type: DeviceType::OrangePi,
        input_supply: None,
        pmic: false,
        power: ADD_SENSOR,
    },
    Board {
        matches: Match::Model("Orange Pi"),
        device_type: DeviceType::OrangePi,
        // Allwinner boards with an AXP PMIC (axp20x-ac, axp20x-usb, axp813-ac).
        input_supply: Some("axp"),
        pmic: false,
        power: "the AXP PMIC's input supply where the board has one; otherwise add a sensor",
    },
    Board {
        // Mainline device trees of Allwinner boards spell it "OrangePi".
        matches: Match::Model("OrangePi"),
        device_type: DeviceType::OrangePi,
        input_supply: Some("axp"),
        pmic: false,
        power: "the AXP PMIC's input supply where the board has one; otherwise add a sensor",
    },
    Board {
        matches: Match::Dmi("LattePanda"),
        device_type: DeviceType::LattePanda,
        input_supply: None,
        pmic: false,
        power: "RAPL through powercap (package, core, uncore, psys)",
    },
];

/// DMI strings that name the maker and the board.
const DMI_FIELDS: &[&str] = &["sys_vendor", "board_vendor", "board_name", "product_name"];

/// What the board tells about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub model: Option<String>,
    /// `/etc/nv_tegra_release` exists (an NVIDIA L4T system).
    pub l4t: bool,
    /// The DMI strings present, in [`DMI_FIELDS`] order.
    pub dmi: Vec<String>,
}

pub fn identify(paths: &Paths) -> Identity {
    let model = paths::read_attr(&paths.proc("device-tree/model"))
        .or_else(|| paths::read_attr(&paths.sys("firmware/devicetree/base/model")))
        // The device tree terminates strings with NUL.
        .map(|m| m.trim_end_matches('\0').trim().to_owned())
        .filter(|m| !m.is_empty());
    let l4t = paths.root("etc/nv_tegra_release").is_file();
    let dmi = DMI_FIELDS
        .iter()
        .filter_map(|f| paths::read_attr(&paths.sys(&format!("class/dmi/id/{f}"))))
        .filter(|v| !v.is_empty())
        .collect();
    Identity { model, l4t, dmi }
}

impl Identity {
    /// The board's name for people: the model, else the DMI product.
    pub fn name(&self) -> Option<&str> {
        self.model
            .as_deref()
            .or_else(|| self.dmi.last().map(String::as_str))
    }
}

/// The Raspberry Pi, Orange Pi or LattePanda profile of a board.
pub fn board(identity: &Identity) -> Option<&'static Board> {
    BOARDS.iter().find(|b| match b.matches {
        Match::Model(s) => identity.model.as_deref().is_some_and(|m| m.contains(s)),
        Match::Dmi(s) => {
            let s = s.to_ascii_lowercase();
            identity
                .dmi
                .iter()
                .any(|v| v.to_ascii_lowercase().contains(&s))
        }
    })
}

/// The profile of a model, if it is a Jetson we know.
pub fn profile(model: &str) -> Option<&'static Profile> {
    let jetson = model.contains("Jetson") || model.contains("NVIDIA");
    jetson
        .then(|| PROFILES.iter().find(|p| model.contains(p.model_contains)))
        .flatten()
}

/// The device type `auto` resolves to.
pub fn detect(identity: &Identity) -> DeviceType {
    match identity.model.as_deref().and_then(profile) {
        Some(p) => p.device_type,
        None if identity.l4t
            || identity
                .model
                .as_deref()
                .is_some_and(|m| m.contains("Jetson")) =>
        {
            DeviceType::Jetson
        }
        None => board(identity).map_or(DeviceType::Linux, |b| b.device_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_model(model: &str) -> DeviceType {
        detect(&Identity {
            model: Some(model.into()),
            ..Identity::default()
        })
    }

    #[test]
    fn models() {
        assert_eq!(
            with_model("NVIDIA Jetson AGX Orin Developer Kit"),
            DeviceType::JetsonOrin
        );
        assert_eq!(
            with_model("NVIDIA Jetson Orin Nano Developer Kit"),
            DeviceType::JetsonOrin
        );
        assert_eq!(
            with_model("NVIDIA Jetson Xavier NX Developer Kit"),
            DeviceType::JetsonXavier
        );
        assert_eq!(with_model("Jetson-AGX"), DeviceType::Jetson);
        assert_eq!(
            with_model("NVIDIA Jetson Nano Developer Kit"),
            DeviceType::JetsonNano
        );
        assert_eq!(with_model("NVIDIA Jetson TX2"), DeviceType::Jetson);
        assert_eq!(
            with_model("NVIDIA Jetson AGX Thor Developer Kit"),
            DeviceType::Jetson
        );
        assert_eq!(
            with_model("Raspberry Pi 4 Model B Rev 1.4"),
            DeviceType::RaspberryPi
        );
        assert_eq!(
            detect(&Identity {
                l4t: true,
                ..Identity::default()
            }),
            DeviceType::Jetson
        );
        assert_eq!(detect(&Identity::default()), DeviceType::Linux);
        assert_eq!(
            profile("NVIDIA Jetson AGX Orin Developer Kit").and_then(|p| p.input_rail),
            None
        );
        assert_eq!(
            profile("NVIDIA Jetson Xavier NX Developer Kit").and_then(|p| p.input_rail),
            Some("VDD_IN")
        );
    }

    #[test]
    fn raspberry_orange_and_lattepanda() {
        let pmic = |model: &str| {
            board(&Identity {
                model: Some(model.into()),
                ..Identity::default()
            })
            .map(|b| (b.device_type, b.pmic))
        };
        let pi = DeviceType::RaspberryPi;
        assert_eq!(pmic("Raspberry Pi 5 Model B Rev 1.0"), Some((pi, true)));
        assert_eq!(pmic("Raspberry Pi 500 Rev 1.0"), Some((pi, true)));
        assert_eq!(
            pmic("Raspberry Pi Compute Module 5 Rev 1.0"),
            Some((pi, true))
        );
        assert_eq!(
            pmic("Raspberry Pi Compute Module 4 Rev 1.1"),
            Some((pi, false))
        );
        assert_eq!(
            pmic("Raspberry Pi 3 Model B Plus Rev 1.3"),
            Some((pi, false))
        );
        let opi = DeviceType::OrangePi;
        for model in ["Orange Pi 5", "Orange Pi 5 Plus", "Orange Pi 5B"] {
            let b = board(&Identity {
                model: Some(model.into()),
                ..Identity::default()
            })
            .expect(model);
            assert_eq!((b.device_type, b.input_supply), (opi, None), "{model}");
        }
        for model in ["Xunlong Orange Pi PC", "OrangePi Zero3", "Orange Pi"] {
            let b = board(&Identity {
                model: Some(model.into()),
                ..Identity::default()
            })
            .expect(model);
            assert_eq!(
                (b.device_type, b.input_supply),
                (opi, Some("axp")),
                "{model}"
            );
        }
        let dmi = |fields: &[&str]| {
            detect(&Identity {
                dmi: fields.iter().map(|f| f.to_string()).collect(),
                ..Identity::default()
            })
        };
        assert_eq!(
            dmi(&[
                "LattePanda",
                "LattePanda",
                "LattePanda 3 Delta",
                "LattePanda 3 Delta"
            ]),
            DeviceType::LattePanda
        );
        assert_eq!(
            dmi(&["DFRobot", "LATTEPANDA SIGMA"]),
            DeviceType::LattePanda
        );
        assert_eq!(
            dmi(&["LENOVO", "LENOVO", "20XW0055GE", "ThinkPad X1 Carbon Gen 9"]),
            DeviceType::Linux
        );
        // A Jetson is a Jetson even with a DMI table.
        assert_eq!(
            detect(&Identity {
                model: Some("NVIDIA Jetson AGX Orin Developer Kit".into()),
                dmi: vec!["LattePanda".into()],
                ..Identity::default()
            }),
            DeviceType::JetsonOrin
        );
    }
}
