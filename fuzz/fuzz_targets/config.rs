//! Feeds arbitrary text to the config reader and to the editor of `config.yaml`:
//! no panic; what the editor writes is a file that means exactly what the edit
//! asked for (the editor checks it, and falls back to re-serialising), and a file
//! the reader accepted stays accepted after a metric switch.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use edge_metrics_exporter::config::edit::{Edit, apply};
use edge_metrics_exporter::config::{Config, Overrides, Source};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let source = Source {
        file: Path::new("config.yaml"),
        text: &text,
    };
    let accepted = Config::parse(&text, &Overrides::default(), &source).is_ok();
    let switches: BTreeMap<String, bool> = [
        ("host_ram_used_mb".to_owned(), true),
        ("jetson_cpu_core0_usage_percent".to_owned(), false),
    ]
    .into();
    for edit in [Edit::SetMetrics(switches), Edit::ConvertLegacyList] {
        let Ok(edited) = apply(&text, std::slice::from_ref(&edit)) else {
            continue;
        };
        let value: yaml_serde::Value =
            yaml_serde::from_str(&edited.text).expect("the editor writes YAML");
        if let Edit::SetMetrics(switches) = &edit {
            for (id, on) in switches {
                assert_eq!(value["metrics"][id.as_str()].as_bool(), Some(*on), "{id}");
            }
            if accepted {
                let source = Source {
                    file: Path::new("config.yaml"),
                    text: &edited.text,
                };
                assert!(
                    Config::parse(&edited.text, &Overrides::default(), &source).is_ok(),
                    "an accepted file stays accepted: {:?}",
                    edited.text
                );
            }
        }
    }
});
