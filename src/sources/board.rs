//! Which board this is: the device-tree model (`/proc/device-tree/model`, or
//! `/sys/firmware/devicetree/base/model`) and `/etc/nv_tegra_release`, read through
//! the configured roots. Used by `device_type: auto`.
//!
//! The board profiles here are the small per-board facts the rest of the exporter
//! needs: the device type a model maps to, and which tegrastats rail (if any)
//! measures the power into the whole module. `docs/tegrastats.md` has the table.

use crate::config::DeviceType;
use crate::paths::{self, Paths};

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

/// What the board tells about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub model: Option<String>,
    /// `/etc/nv_tegra_release` exists (an NVIDIA L4T system).
    pub l4t: bool,
}

pub fn identify(paths: &Paths) -> Identity {
    let model = paths::read_attr(&paths.proc("device-tree/model"))
        .or_else(|| paths::read_attr(&paths.sys("firmware/devicetree/base/model")))
        // The device tree terminates strings with NUL.
        .map(|m| m.trim_end_matches('\0').trim().to_owned())
        .filter(|m| !m.is_empty());
    let l4t = paths.root("etc/nv_tegra_release").is_file();
    Identity { model, l4t }
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
        None => DeviceType::Linux,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_model(model: &str) -> DeviceType {
        detect(&Identity {
            model: Some(model.into()),
            l4t: false,
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
            DeviceType::Linux
        );
        assert_eq!(
            detect(&Identity {
                model: None,
                l4t: true
            }),
            DeviceType::Jetson
        );
        assert_eq!(
            detect(&Identity {
                model: None,
                l4t: false
            }),
            DeviceType::Linux
        );
        assert_eq!(
            profile("NVIDIA Jetson AGX Orin Developer Kit").and_then(|p| p.input_rail),
            None
        );
        assert_eq!(
            profile("NVIDIA Jetson Xavier NX Developer Kit").and_then(|p| p.input_rail),
            Some("VDD_IN")
        );
    }
}
