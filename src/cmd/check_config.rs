//! `check-config [--config PATH]`: validates a config file without writing
//! anything and prints what it configures; exit 2 (with file, line and field) when
//! it is invalid.

use std::process::ExitCode;

use crate::config::{Overrides, Store};

/// Checks the file at `path` and prints what it configures.
pub fn run(path: &std::path::Path) -> ExitCode {
    match Store::check(path, &Overrides::default().with_env_tokens()) {
        Ok(config) => {
            println!("{}: OK", path.display());
            println!("  device_type: {}", config.device_type.as_str());
            println!("  interval: {:?}", config.interval);
            println!(
                "  port: {}, reload_port: {}",
                config.port, config.reload_port
            );
            println!("  metric_style: {:?}", config.metric_style);
            let enabled = config.metrics.values().filter(|v| **v).count();
            println!(
                "  metrics: {} listed, {} enabled",
                config.metrics.len(),
                enabled
            );
            if !config.unknown_keys.is_empty() {
                println!(
                    "  unknown keys (kept, unused): {}",
                    config.unknown_keys.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
