//! The `edge-metrics-exporter` binary: parses the command line and hands over to
//! the library (`cmd`). Exit codes: 0 success, 1 runtime failure, 2 invalid
//! configuration.

use std::process::ExitCode;

use clap::Parser;

use edge_metrics_exporter::cli::Cli;

fn main() -> ExitCode {
    // Before any thread starts (the runtime's, the blocking pool's).
    edge_metrics_exporter::memory::limit_arenas();
    edge_metrics_exporter::cmd::main(Cli::parse())
}
