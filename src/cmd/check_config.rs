//! `check-config [--config PATH] [--strict] [serve's --web.* and --collector.* flags]`:
//! validates a config file without writing anything and prints what it configures
//! and which setting comes from where (flag > environment > file > default); exit 2
//! (with file, line and field) when it is invalid, and with `--strict` when it has
//! keys this version does not read.

use std::process::ExitCode;

use crate::cli::CheckConfigArgs;
use crate::config::raw::describe_unknown;
use crate::config::{Overrides, Store};

/// Checks the file and prints what it configures.
pub fn run(args: &CheckConfigArgs) -> ExitCode {
    let path = &args.config.config;
    let web = match super::web_overrides(&args.web) {
        Ok(web) => web,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let overrides = Overrides {
        web,
        ..Overrides::default()
    }
    .with_env_tokens();
    let config = match Store::check(path, &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let unknown: Vec<String> = config
        .unknown_keys
        .iter()
        .map(|k| describe_unknown(k))
        .collect();
    if args.strict && !unknown.is_empty() {
        for key in &unknown {
            eprintln!("error: {}: unknown key {key}", path.display());
        }
        return ExitCode::from(2);
    }
    println!("{}: OK", path.display());
    println!("  device_type: {}", config.device_type.as_str());
    println!("  interval: {:?}", config.interval);
    let (listen, from) = if config.web.listen.is_empty() {
        (
            format!("{}:{}", config.listen_address, config.port),
            "listen_address and port (file or default)",
        )
    } else {
        (
            config
                .web
                .listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            "--web.listen-address (wins over the file)",
        )
    };
    println!("  metrics listen: {listen}  [{from}]");
    println!(
        "  metrics path: {}  [{}]",
        config.web.telemetry_path,
        if config.web.telemetry_path == "/metrics" {
            "default"
        } else {
            "--web.telemetry-path"
        }
    );
    println!("  reload_port: {}", config.reload_port);
    // The same TLS setup `serve` builds (files read, key matched to certificate,
    // CAs found), so check-config agrees with serve on every web config.
    if let Err(e) = crate::reload::load_tls(&config, path)
        .and_then(|_| crate::reload::load_metrics_tls(&config, path))
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match &config.web.config {
        Some(web) => {
            println!(
                "  web config: {} (TLS {}, {} basic auth users, {} headers, rate limit {})  [--web.config.file]",
                web.path.display(),
                web.tls
                    .as_ref()
                    .map_or_else(|| "off".to_owned(), describe_tls),
                web.users.len(),
                web.headers.len(),
                web.rate_limit.map_or_else(
                    || "off".to_owned(),
                    |r| format!("{} per {:?}", r.burst, r.interval)
                ),
            );
        }
        None => println!(
            "  metrics TLS: {}  [tls: in the file]",
            if config.tls.is_some() { "on" } else { "off" }
        ),
    }
    let switches = &config.web.collectors;
    if switches.disable_defaults || !switches.named.is_empty() {
        let named: Vec<String> = switches
            .named
            .iter()
            .map(|(n, on)| format!("{}{n}", if *on { "+" } else { "-" }))
            .collect();
        println!(
            "  collectors: {}{}  [--collector.* flags]",
            if switches.disable_defaults {
                "only those named "
            } else {
                "defaults "
            },
            named.join(" ")
        );
    }
    if !config.web.exporter_metrics {
        println!("  exporter metrics: off  [--web.disable-exporter-metrics]");
    }
    println!(
        "  tokens: metrics {}, api {}  [EDGE_EXPORTER_*_TOKEN win over the file]",
        if config.metrics_token.is_some() {
            "set"
        } else {
            "none"
        },
        if config.api_token.is_some() {
            "set"
        } else {
            "none"
        }
    );
    println!("  metric_style: {:?}", config.metric_style);
    let enabled = config.metrics.values().filter(|v| **v).count();
    println!(
        "  metrics: {} listed, {} enabled",
        config.metrics.len(),
        enabled
    );
    if !unknown.is_empty() {
        println!("  unknown keys (kept, unused): {}", unknown.join(", "));
    }
    ExitCode::SUCCESS
}

/// What a web config's TLS enforces, in one line.
fn describe_tls(tls: &crate::config::ServerTlsConfig) -> String {
    let mut parts = vec![
        format!(
            "on: {}..{}",
            tls.min_version.as_str(),
            tls.max_version.as_str()
        ),
        format!("client certificates {}", tls.client_auth.as_str()),
    ];
    if let Some(sans) = &tls.client_allowed_sans {
        parts.push(format!("allowed SANs {}", sans.join("/")));
    }
    if let Some(suites) = &tls.cipher_suites {
        let names: Vec<&str> = suites.iter().map(|s| s.name()).collect();
        parts.push(format!("TLS 1.2 suites {}", names.join("/")));
    }
    if let Some(curves) = &tls.curve_preferences {
        let names: Vec<&str> = curves.iter().map(|c| c.name()).collect();
        parts.push(format!("groups {}", names.join("/")));
    }
    parts.push(if tls.http2 { "HTTP/2" } else { "HTTP/1.1 only" }.to_owned());
    parts.join(", ")
}
