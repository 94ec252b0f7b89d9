//! The tegrastats recordings shipped in `recordings/`, built into the binary so
//! `serve --demo` works from any directory. Each file says in `#` comments which
//! board, release and public source its lines come from.

use std::sync::Arc;

use crate::config::{Demo, DeviceType};
use crate::sources::tegrastats::stream::recording_lines;

/// Name, device type, text.
const RECORDINGS: &[(&str, DeviceType, &str)] = &[
    (
        "agx-orin-jp6",
        DeviceType::JetsonOrin,
        include_str!("../recordings/agx-orin-jp6.log"),
    ),
    (
        "agx-orin-jp7",
        DeviceType::JetsonOrin,
        include_str!("../recordings/agx-orin-jp7.log"),
    ),
    (
        "orin-nx-jp6",
        DeviceType::JetsonOrin,
        include_str!("../recordings/orin-nx-jp6.log"),
    ),
    (
        "xavier-nx-jp5",
        DeviceType::JetsonXavier,
        include_str!("../recordings/xavier-nx-jp5.log"),
    ),
    (
        "agx-xavier-jp5",
        DeviceType::JetsonXavier,
        include_str!("../recordings/agx-xavier-jp5.log"),
    ),
    (
        "nano-jp4",
        DeviceType::JetsonNano,
        include_str!("../recordings/nano-jp4.log"),
    ),
    (
        "tx2-jp4",
        DeviceType::Jetson,
        include_str!("../recordings/tx2-jp4.log"),
    ),
    (
        "thor-r38",
        DeviceType::Jetson,
        include_str!("../recordings/thor-r38.log"),
    ),
];

/// The names `--demo` accepts.
pub fn names() -> impl Iterator<Item = &'static str> {
    RECORDINGS.iter().map(|(name, _, _)| *name)
}

/// The demo for a recording name.
pub fn demo(name: &str) -> Option<Demo> {
    RECORDINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(name, device_type, text)| Demo {
            device_type: *device_type,
            name: (*name).to_owned(),
            lines: Arc::new(recording_lines(text)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recording_has_lines_and_a_matching_header() {
        for (name, device_type, text) in RECORDINGS {
            let demo = demo(name).expect("known");
            assert!(!demo.lines.is_empty(), "{name}");
            assert!(
                text.contains(&format!("# device_type: {}", device_type.as_str())),
                "{name}"
            );
        }
        assert!(demo("nope").is_none());
    }
}
