//! `serve` (the default command): the flags turned into the daemon's options,
//! checked before anything starts (an unknown `--demo` board or a bad config
//! server flag is exit 2), then the exporter until a signal stops it.

use std::process::ExitCode;

use super::until_signal;
use crate::cli::ServeArgs;
use crate::config::Overrides;
use crate::daemon::{self, ServeOptions};
use crate::sync;

/// Runs the exporter until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> ExitCode {
    let demo = match args.demo.as_deref() {
        None => None,
        Some(name) => match crate::recordings::demo(name) {
            Some(demo) => Some(demo),
            None => {
                let known: Vec<&str> = crate::recordings::names().collect();
                eprintln!(
                    "error: no recording named {name:?} (known: {})",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        },
    };
    let sync = match sync::Settings::from_flags(&args.sync) {
        Ok(sync) => sync,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let web = match super::web_overrides(&args.web) {
        Ok(web) => web,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let options = ServeOptions {
        sync,
        config_path: args.config.config,
        overrides: Overrides {
            procfs: args.procfs,
            sysfs: args.sysfs,
            rootfs: args.rootfs,
            demo,
            web,
            ..Overrides::default()
        }
        .with_env_tokens(),
    };
    match until_signal(|shutdown| daemon::run(options, shutdown)) {
        Err(code) => code,
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
