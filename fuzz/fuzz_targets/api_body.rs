//! Feeds arbitrary bytes as the bodies the APIs accept: `POST /metrics/enable`
//! (an object of booleans) and the config server's `PUT /config/{id}` (a config as
//! JSON): no panic, and what is accepted is what it says.
#![no_main]

use std::path::Path;

use edge_metrics_exporter::config::validate_json;
use edge_metrics_exporter::http::api::metric_switches;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(switches) = metric_switches(data) {
        let value: serde_json::Value = serde_json::from_slice(data).expect("was JSON");
        assert_eq!(value.as_object().map(|o| o.len()), Some(switches.len()));
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok((_config, yaml)) = validate_json(&value, Path::new("config from the server"))
    {
        // The YAML written for the device says the same as the JSON received.
        let back: yaml_serde::Value = yaml_serde::from_str(&yaml).expect("YAML");
        assert_eq!(edge_metrics_exporter::config::yaml_to_json(&back), value);
    }
});
