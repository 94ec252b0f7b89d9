//! `health [--url URL] [--json]`: asks a running exporter's management API how it
//! is (`GET /health`, with `EDGE_EXPORTER_API_TOKEN` when set; https with
//! `--ca-file` or `--insecure`) and prints a summary or the JSON. Exit 0 healthy,
//! 1 degraded, 2 unreachable (no answer, an error status, or not JSON).

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::HealthArgs;
use crate::health::Health;

/// `health`: asks the management API's `/health` and says how the exporter is.
pub fn run(args: &HealthArgs) -> ExitCode {
    let url = format!("{}/health", args.url.trim_end_matches('/'));
    let headers = super::api_token_header();
    let limit = Duration::from_secs_f64(args.timeout.clamp(0.1, 300.0));
    let tls = if url.starts_with("https://") {
        let settings = crate::config::TlsClientConfig {
            ca_file: args.ca_file.clone(),
            insecure_skip_verify: args.insecure,
            ..Default::default()
        };
        match crate::net::tls::client(&settings) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("unreachable: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(crate::net::client::Client::new(tls).get(&url, &headers, limit, 1 << 20))
                .map_err(|e| e.to_string())
        });
    let response = match answer {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            eprintln!(
                "unreachable: {url} answered {} ({})",
                r.status,
                crate::escape::Escaped(String::from_utf8_lossy(&r.body).trim())
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("unreachable: {}", crate::escape::Escaped(&e));
            return ExitCode::from(2);
        }
    };
    let Ok(health) = serde_json::from_slice::<Health>(&response.body) else {
        eprintln!("unreachable: {url} did not answer JSON");
        return ExitCode::from(2);
    };
    if args.json {
        // The exporter's own answer, as it sent it.
        let raw: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        println!("{raw:#}");
    } else {
        // Line by line, each escaped: collector errors quote what hardware said.
        for line in health.summary(&args.url).lines() {
            println!("{}", crate::escape::Escaped(line));
        }
    }
    if health.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
