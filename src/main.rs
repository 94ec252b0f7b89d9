//! The `edge-metrics-exporter` binary: parses the command line and hands over to
//! the library. Exit codes: 0 success, 1 runtime failure, 2 invalid configuration.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use edge_metrics_exporter::cli::{
    Cli, Command, ConfigServerArgs, HealthArgs, LogArgs, LogFormat, ParseArgs, ServeArgs,
    ShellyServerArgs,
};
use edge_metrics_exporter::config::{Overrides, Store};
use edge_metrics_exporter::daemon::{self, ServeOptions};
use edge_metrics_exporter::sync;

fn main() -> ExitCode {
    let cli = Cli::parse();
    edge_metrics_exporter::telemetry::init();
    // `serve` may set its log level and format in the config file; flags and
    // the environment win.
    let config_file = match &cli.command {
        Some(Command::Serve(args)) => Some(args.config.config.clone()),
        None => Some(cli.serve.config.config.clone()),
        _ => None,
    };
    init_logging(&cli.log, config_file.as_deref());
    match cli.command {
        Some(Command::CheckConfig(arg)) => check_config(&arg.config),
        Some(Command::Parse(args)) => parse(&args),
        Some(Command::ShellyServer(args)) => shelly_server(args),
        Some(Command::ConfigServer(args)) => config_server(args),
        Some(Command::Health(args)) => health(&args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

/// A runtime sized for a small board: two workers are plenty for a scrape
/// endpoint and a small API; hardware reads run on the blocking pool.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

fn shelly_server(args: ShellyServerArgs) -> ExitCode {
    use edge_metrics_exporter::config::Secret;
    use edge_metrics_exporter::shelly_server::{self as server, HubConfig};
    let options = server::ServerOptions {
        ws: std::net::SocketAddr::new(args.ws_address, args.ws_port),
        http: std::net::SocketAddr::new(args.http_address, args.http_port),
        secret: args.secret.and_then(Secret::new),
        hub: HubConfig::default(),
    };
    run_until_signal(|shutdown| server::run(options, shutdown))
}

/// Runs a server until SIGTERM/SIGINT: exit 0, or 1 with its error.
fn run_until_signal<F, E>(server: impl FnOnce(CancellationToken) -> F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match until_signal(server) {
        Err(code) => code,
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `server` on the runtime until SIGTERM/SIGINT cancel its token; its result,
/// or the exit code when the runtime cannot start. A task stuck in a hardware
/// read gets one second after the server returns, then the process goes on.
fn until_signal<F, E>(
    server: impl FnOnce(CancellationToken) -> F,
) -> Result<Result<(), E>, ExitCode>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        server(shutdown).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(result)
}

fn config_server(args: ConfigServerArgs) -> ExitCode {
    use edge_metrics_exporter::config::Secret;
    use edge_metrics_exporter::config_server::{self, ServerOptions};
    let options = ServerOptions {
        addr: std::net::SocketAddr::new(args.address, args.port),
        db: args.db,
        token: args.token.and_then(Secret::new),
    };
    run_until_signal(|shutdown| config_server::run(options, shutdown))
}

/// `health`: asks the management API's `/health` and says how the exporter is.
fn health(args: &HealthArgs) -> ExitCode {
    let url = format!("{}/health", args.url.trim_end_matches('/'));
    let mut headers = Vec::new();
    if let Ok(token) = std::env::var("EDGE_EXPORTER_API_TOKEN")
        && !token.trim().is_empty()
    {
        headers.push((
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        ));
    }
    let limit = Duration::from_secs_f64(args.timeout.clamp(0.1, 300.0));
    let tls = if url.starts_with("https://") {
        let settings = edge_metrics_exporter::config::TlsClientConfig {
            ca_file: args.ca_file.clone(),
            insecure_skip_verify: args.insecure,
            ..Default::default()
        };
        match edge_metrics_exporter::http::tls::client(&settings) {
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
            rt.block_on(edge_metrics_exporter::http::client::request_tls(
                hyper::Method::GET,
                &url,
                &headers,
                bytes::Bytes::new(),
                limit,
                1 << 20,
                tls.as_ref(),
            ))
            .map_err(|e| e.to_string())
        });
    let response = match answer {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            eprintln!(
                "unreachable: {url} answered {} ({})",
                r.status,
                String::from_utf8_lossy(&r.body).trim()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("unreachable: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(h) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
        eprintln!("unreachable: {url} did not answer JSON");
        return ExitCode::from(2);
    };
    let healthy = h["status"] == "healthy";
    if args.json {
        println!("{h:#}");
    } else {
        print!("{}", health_summary(&h, &args.url));
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The human summary of a `/health` answer.
fn health_summary(h: &serde_json::Value, url: &str) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "edge-metrics-exporter {} at {url}: {}",
        text(&h["version"]),
        text(&h["status"])
    );
    let uptime = h["uptime_seconds"].as_f64().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "device {} ({}), config {} ({}), up {}",
        text(&h["device_type"]),
        h["board"]["model"].as_str().unwrap_or("unknown board"),
        text(&h["config_source"]),
        text(&h["config_path"]),
        edge_metrics_exporter::clock::human_duration(Duration::from_secs_f64(uptime.max(0.0)))
    );
    for c in h["collectors"].as_array().into_iter().flatten() {
        let detail = match c["error"].as_str() {
            Some(e) => e.to_owned(),
            None => format!("{} samples", c["samples"].as_u64().unwrap_or(0)),
        };
        let _ = writeln!(
            out,
            "  {:<9} {:<12} {detail}",
            text(&c["status"]),
            text(&c["name"])
        );
    }
    if let Some(sync) = h["config_server"].as_object() {
        let reachable = match sync.get("reachable").and_then(|v| v.as_bool()) {
            Some(true) => "reachable",
            Some(false) => "unreachable",
            None => "not contacted yet",
        };
        let _ = writeln!(
            out,
            "config server {}: {reachable}, revision {}, {} changes waiting",
            sync.get("url").and_then(|v| v.as_str()).unwrap_or("?"),
            sync.get("revision")
                .map_or("none".to_owned(), |v| v.to_string()),
            sync.get("pending_changes")
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        );
    }
    out
}

fn serve(args: ServeArgs) -> ExitCode {
    let demo = match args.demo.as_deref() {
        None => None,
        Some(name) => match edge_metrics_exporter::recordings::demo(name) {
            Some(demo) => Some(demo),
            None => {
                let known: Vec<&str> = edge_metrics_exporter::recordings::names().collect();
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
    let options = ServeOptions {
        sync,
        config_path: args.config.config,
        overrides: Overrides {
            procfs: args.procfs,
            sysfs: args.sysfs,
            rootfs: args.rootfs,
            demo,
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

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

fn check_config(path: &std::path::Path) -> ExitCode {
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

/// `parse [FILE]`: one JSON object per input line, in order. A line with nothing
/// recognisable gives `{}` and a warning on stderr; only an input that cannot be
/// opened or read fails (exit 1).
fn parse(args: &ParseArgs) -> ExitCode {
    use edge_metrics_exporter::collectors::tegrastats::{line_to_json, map_line};
    use std::io::{BufRead, BufReader, Read, Write};

    let input: Box<dyn Read> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", p.display());
                return ExitCode::from(1);
            }
        },
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut reader = BufReader::new(input);
    let mut raw = Vec::new();
    let (mut mapped, mut json) = (Vec::new(), String::new());
    for number in 1.. {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading input: {e}");
                return ExitCode::from(1);
            }
        }
        // Garbage bytes are not fatal: they become U+FFFD and are skipped as
        // unknown tokens.
        let line = String::from_utf8_lossy(&raw);
        mapped.clear();
        json.clear();
        map_line(line.trim_end_matches(['\n', '\r']), &mut mapped);
        if mapped.is_empty() {
            eprintln!("warning: line {number}: no tegrastats fields recognised");
        }
        line_to_json(&mapped, &mut json);
        if writeln!(out, "{json}").is_err() {
            // Broken pipe (`| head`): stop quietly.
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

fn init_logging(args: &LogArgs, config_file: Option<&std::path::Path>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // Only the two keys, leniently: a broken file is reported later, with its line.
    let (file_level, file_format) = config_file
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| yaml_serde::from_str::<yaml_serde::Value>(&text).ok())
        .map(|v| {
            let key = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .map(|s| s.trim().to_owned())
            };
            (key("log_level"), key("log_format"))
        })
        .unwrap_or_default();
    let level = args
        .log_level
        .clone()
        .or(file_level)
        .unwrap_or_else(|| "info".to_owned());
    let format = args.log_format.unwrap_or(match file_format.as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    });
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && format == LogFormat::Text)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
