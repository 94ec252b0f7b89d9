//! The subcommands, as the binary runs them: `main` parses the command line and
//! calls [`main`] here, which sets up logging and runs one of them. Each returns
//! the process exit code: 0 success, 1 runtime failure, 2 invalid configuration
//! (for `health`: 0 healthy, 1 degraded, 2 unreachable).
//!
//! * `serve` (the default): the exporter (`crate::daemon`);
//! * `check-config`, `parse`, `health`, `measure`: one-shot commands
//!   (`check_config`, `parse`, `health`, `measure`);
//! * `shelly-server`, `config-server`: the other two servers.
//!
//! The servers run on [`until_signal`]: a runtime sized for a small board, stopped
//! by SIGTERM or SIGINT.

mod check_config;
mod health;
mod measure;
pub mod parse;
mod provision;
mod serve;
#[cfg(feature = "config-server")]
mod token;

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ConfigServerArgs, LogArgs, LogFormat, ShellyServerArgs};

/// Runs the command `cli` asks for.
pub fn main(cli: Cli) -> ExitCode {
    crate::telemetry::init();
    crate::net::serve::raise_fd_limit();
    // `serve` may set its log level and format in the config file; flags and
    // the environment win.
    let config_file = match &cli.command {
        Some(Command::Serve(args)) => Some(args.config.config.clone()),
        None => Some(cli.serve.config.config.clone()),
        _ => None,
    };
    init_logging(&cli.log, config_file.as_deref());
    match cli.command {
        Some(Command::CheckConfig(args)) => check_config::run(&args),
        Some(Command::Parse(args)) => parse::run(args.file.as_deref()),
        Some(Command::ShellyServer(args)) => shelly_server(args),
        Some(Command::ConfigServer(args)) => config_server(args),
        Some(Command::Shelly(crate::cli::ShellyCommand::Provision(args))) => provision::run(&args),
        Some(Command::Health(args)) => health::run(&args),
        Some(Command::Measure(args)) => measure::run(&args),
        Some(Command::Serve(args)) => serve::run(args),
        None => serve::run(cli.serve),
    }
}

/// `Authorization: Bearer <EDGE_EXPORTER_API_TOKEN>` when the variable is set:
/// how the one-shot commands reach the management API.
pub(crate) fn api_token_header() -> Vec<(hyper::header::HeaderName, String)> {
    match std::env::var("EDGE_EXPORTER_API_TOKEN") {
        Ok(token) if !token.trim().is_empty() => vec![(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        )],
        _ => Vec::new(),
    }
}

/// A runtime sized for a small board: two workers are plenty for a scrape
/// endpoint and a small API; hardware reads run on the blocking pool.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
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
    use crate::config::Secret;
    use crate::shelly_server::{self as server, HubConfig};
    let options = server::ServerOptions {
        ws: std::net::SocketAddr::new(args.ws_address, args.ws_port),
        http: std::net::SocketAddr::new(args.http_address, args.http_port),
        secret: args.secret.and_then(Secret::new),
        hub: HubConfig::default(),
        ws_tls: match (args.ws_tls_cert_file, args.ws_tls_key_file) {
            (Some(cert_file), Some(key_file)) => {
                Some(crate::config::ServerTlsConfig::files(cert_file, key_file))
            }
            _ => None,
        },
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
pub(crate) fn until_signal<F, E>(
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

#[cfg(feature = "config-server")]
fn config_server(args: ConfigServerArgs) -> ExitCode {
    use crate::config::Secret;
    use crate::config_server::{self, ServerOptions};
    if let Some(crate::cli::ConfigServerCommand::Token(command)) = args.command {
        return token::run(command);
    }
    let tls = match (args.tls_cert_file, args.tls_key_file) {
        (Some(cert_file), Some(key_file)) => Some(
            crate::config::ServerTlsConfig::files(cert_file, key_file)
                .with_client_ca(args.client_ca_file),
        ),
        _ => None,
    };
    let options = ServerOptions {
        addr: std::net::SocketAddr::new(args.address, args.port),
        db: args.db,
        token: args.token.and_then(Secret::new),
        tls,
        allow_enroll: args.allow_enroll,
        history_keep: args.history_keep,
    };
    run_until_signal(|shutdown| config_server::run(options, shutdown))
}

#[cfg(not(feature = "config-server"))]
fn config_server(_args: ConfigServerArgs) -> ExitCode {
    eprintln!(
        "error: this build has no config server (it was built without the config-server feature)"
    );
    ExitCode::from(1)
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
        // Every field escaped: a plug's id or a peer's answer cannot forge lines.
        LogFormat::Text => builder.fmt_fields(crate::escape::LogFields).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `serve`'s node_exporter-style flags as the config's overrides; a flag that
/// cannot be used is an error naming it.
pub(crate) fn web_overrides(
    args: &crate::cli::WebArgs,
) -> Result<crate::config::WebOverrides, String> {
    let mut listen = Vec::new();
    for given in &args.listen_address {
        let text = given.trim();
        // node_exporter's `:9100` means every address.
        let full = if text.starts_with(':') {
            format!("0.0.0.0{text}")
        } else {
            text.to_owned()
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&full)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("--web.listen-address {given:?} is not HOST:PORT or :PORT"))?;
        listen.push(addr);
    }
    let path = args.telemetry_path.trim();
    if !path.starts_with('/')
        || path.contains(char::is_whitespace)
        || ["/", "/healthz", "/ready"].contains(&path)
    {
        return Err(format!(
            "--web.telemetry-path must be a path such as /metrics (not /, /healthz or /ready), got {path:?}"
        ));
    }
    Ok(crate::config::WebOverrides {
        listen,
        config_file: args.config_file.clone(),
        telemetry_path: path.to_owned(),
        disable_exporter_metrics: args.disable_exporter_metrics,
        collectors: crate::config::CollectorSwitches {
            disable_defaults: args.collectors.disable_defaults,
            named: args
                .collectors
                .switches()
                .into_iter()
                .map(|(n, on)| (n.to_owned(), on))
                .collect(),
        },
    })
}
