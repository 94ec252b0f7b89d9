//! The command line: subcommands and their flags.
//!
//! `serve` is the default when no subcommand is given, so `edge-metrics-exporter
//! --config x.yaml` runs the exporter. Flags say how the binary runs (paths, log
//! level); what it collects lives in the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::sync::SyncArgs;

#[derive(Debug, Parser)]
#[command(
    name = "edge-metrics-exporter",
    version,
    about = "Prometheus exporter for power and health of edge devices",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of `serve`, used when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exporter (the default).
    Serve(ServeArgs),
    /// Check a config file and print what it configures; exit 2 when invalid.
    CheckConfig(CheckConfigArgs),
    /// Turn tegrastats lines into JSON: one object per input line, mapping every
    /// metric id found in the line to its number.
    Parse(ParseArgs),
    /// Run the Shelly plug hub: plugs connect to its WebSocket port, exporters
    /// read them through its HTTP API.
    ShellyServer(ShellyServerArgs),
    /// Run the central config server devices sync with, and its web page.
    ConfigServer(ConfigServerArgs),
    /// Shelly plugs: point one at a hub (`shelly provision`).
    #[command(subcommand)]
    Shelly(ShellyCommand),
    /// Ask a running exporter how it is: exit 0 healthy, 1 degraded, 2 unreachable.
    Health(HealthArgs),
    /// Run a command and print the energy each power source used meanwhile; exits
    /// with the command's status.
    Measure(MeasureArgs),
}

#[derive(Debug, Args, Clone)]
pub struct MeasureArgs {
    /// The running exporter's management API; when nothing answers there, the
    /// sources of `--config` are sampled here. An answer it cannot use (401,
    /// 429, 5xx) is an error.
    #[arg(
        long,
        env = "EDGE_EXPORTER_API_URL",
        default_value = "http://127.0.0.1:9101"
    )]
    pub url: String,

    /// Sample the sources of `--config` here, without asking an exporter.
    #[arg(long)]
    pub standalone: bool,

    /// Config file whose sources are sampled when measuring here (the
    /// embedded default when it does not exist; never written).
    #[arg(long, env = "LOCAL_CONFIG_PATH", default_value = "config.yaml")]
    pub config: PathBuf,

    /// Print the run (or, with repeats or several commands, every run and the
    /// summary) as JSON.
    #[arg(long)]
    pub json: bool,

    /// The run's name (default: the command line).
    #[arg(long)]
    pub name: Option<String>,

    /// A label of the run, KEY=VALUE (repeatable); kept with the run, never a
    /// metric label.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,

    /// Runs of each command that are measured.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: u32,

    /// Runs of each command before the measured ones, not measured.
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub warmup: u32,

    /// First measure this many seconds of idle; each run's energy above idle
    /// power is then reported too.
    #[arg(long, value_name = "SECONDS")]
    pub idle: Option<f64>,

    /// A command run through `sh -c` (repeatable: each is measured and
    /// compared with the first).
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub commands: Vec<String>,

    /// Write one row per command, repetition and source.
    #[arg(long, value_name = "FILE")]
    pub export_csv: Option<PathBuf>,

    /// Write the run's readings (`t_s,source,watts`; with repeats or several
    /// commands, `command,repetition,` first).
    #[arg(long, value_name = "FILE.csv")]
    pub trace: Option<PathBuf>,

    /// Draw the (last measured) run's power over time per source as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// CA certificate (PEM) of an `https://` URL (default: the system's roots).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,

    /// Accept any certificate of an `https://` URL.
    #[arg(long)]
    pub insecure: bool,

    /// The command and its arguments, after `--` (or use `-c`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// The exporter's management API.
    #[arg(
        long,
        env = "EDGE_EXPORTER_API_URL",
        default_value = "http://127.0.0.1:9101"
    )]
    pub url: String,

    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,

    /// CA certificate (PEM) that signed the exporter's certificate, for an
    /// `https://` URL (default: the system's trust store).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,

    /// Accept any certificate of an `https://` URL.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigServerArgs {
    /// Port of the HTTP API and web page (devices' `CONFIG_SERVER_URL`).
    #[arg(long, env = "CONFIG_SERVER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on (devices on the network must reach it).
    #[arg(long, env = "CONFIG_SERVER_ADDRESS", default_value = "0.0.0.0")]
    pub address: std::net::IpAddr,

    /// The SQLite database file (created when missing).
    #[arg(long, env = "CONFIG_SERVER_DB", default_value = "configs.db")]
    pub db: PathBuf,

    /// The admin token: every route, every device (browsers: the password of the
    /// login prompt). Devices may carry their own tokens instead (`token create`).
    /// Prefer the environment variable, so it is not in `ps`.
    #[arg(long, env = "CONFIG_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Serve HTTPS with this certificate chain (PEM); re-read on SIGHUP.
    #[arg(
        long,
        env = "CONFIG_SERVER_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// The certificate's private key (PEM); re-read on SIGHUP.
    #[arg(
        long,
        env = "CONFIG_SERVER_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Require client certificates signed by these CAs (PEM); needs the two above.
    #[arg(
        long,
        env = "CONFIG_SERVER_CLIENT_CA_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub client_ca_file: Option<PathBuf>,

    /// Let a device the server has never seen register once without a token and
    /// receive its own (in the `X-Device-Token` header of the 201). Off by default:
    /// anyone who reaches the port can then claim any unused device id.
    #[arg(long, env = "CONFIG_SERVER_ALLOW_ENROLL")]
    pub allow_enroll: bool,

    /// Revisions of history kept per device and per group; older ones are
    /// deleted as new ones come (the database stops growing with changes).
    #[arg(
        long,
        env = "CONFIG_SERVER_HISTORY_KEEP",
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    pub history_keep: u64,

    #[command(subcommand)]
    pub command: Option<ConfigServerCommand>,
}

/// Work on the config server's database instead of serving it.
#[derive(Debug, Subcommand, Clone)]
pub enum ConfigServerCommand {
    /// Per-device tokens: a device token reads and writes only its own config.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand, Clone)]
pub enum TokenCommand {
    /// Make a new token for DEVICE_ID (replacing its old one) and print it: one
    /// line, nothing else. Only its hash is stored.
    Create {
        device_id: String,
        /// The SQLite database file.
        #[arg(long, env = "CONFIG_SERVER_DB", default_value = "configs.db")]
        db: PathBuf,
    },
    /// The devices that have a token, and when it was made (never the tokens).
    List {
        #[arg(long, env = "CONFIG_SERVER_DB", default_value = "configs.db")]
        db: PathBuf,
    },
    /// Revoke DEVICE_ID's token: it is refused from the next request on.
    Revoke {
        device_id: String,
        #[arg(long, env = "CONFIG_SERVER_DB", default_value = "configs.db")]
        db: PathBuf,
    },
}

#[derive(Debug, Subcommand, Clone)]
pub enum ShellyCommand {
    /// Point a Gen2+ plug's outbound WebSocket at a hub (over the plug's local
    /// HTTP RPC), reboot it if needed and wait until it is connected.
    Provision(ProvisionArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ProvisionArgs {
    /// The plug's local address, `http://ADDRESS`.
    #[arg(long, value_name = "URL")]
    pub plug: String,

    /// The hub's WebSocket endpoint, `ws://HOST:PORT[/SECRET]` or `wss://…`.
    #[arg(long, value_name = "URL")]
    pub hub: String,

    /// The plug's user, when it has a password.
    #[arg(long, default_value = "admin")]
    pub user: String,

    /// The plug's password (digest authentication). Prefer the environment
    /// variable, so it is not in `ps`.
    #[arg(long, env = "SHELLY_PLUG_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// The name the plug is known by on the hub (e.g. the edge device's hostname).
    #[arg(long)]
    pub alias: Option<String>,

    /// For `wss://`: which certificates the plug trusts: `ca.pem` (Shelly's
    /// built-in public CAs), `user_ca.pem` (one uploaded to the plug) or `*` (any:
    /// no verification).
    #[arg(long, default_value = "ca.pem")]
    pub ssl_ca: String,

    /// Seconds to wait for the plug to connect (it reboots meanwhile).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

#[derive(Debug, Args, Clone)]
pub struct ShellyServerArgs {
    /// Port plugs connect to (their `Ws.SetConfig` server URL).
    #[arg(long, env = "SHELLY_WS_PORT", default_value_t = 8765)]
    pub ws_port: u16,

    /// Port of the HTTP API exporters read.
    #[arg(long, env = "SHELLY_HTTP_PORT", default_value_t = 8766)]
    pub http_port: u16,

    /// Address of the WebSocket endpoint (plugs must reach it).
    #[arg(long, env = "SHELLY_WS_ADDRESS", default_value = "0.0.0.0")]
    pub ws_address: std::net::IpAddr,

    /// Address of the HTTP API (loopback unless exporters on other hosts read it).
    #[arg(long, env = "SHELLY_HTTP_ADDRESS", default_value = "127.0.0.1")]
    pub http_address: std::net::IpAddr,

    /// Secret plugs must put in their connection URL (`?token=` or the first path
    /// segment). Prefer the environment variable, so it is not in `ps`.
    #[arg(long, env = "SHELLY_WS_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Serve `wss://` to plugs with this certificate chain (PEM); re-read on SIGHUP.
    #[arg(
        long,
        env = "SHELLY_WS_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "ws_tls_key_file"
    )]
    pub ws_tls_cert_file: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(
        long,
        env = "SHELLY_WS_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "ws_tls_cert_file"
    )]
    pub ws_tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ParseArgs {
    /// A file of tegrastats lines (a `tegrastats --logfile` log); standard input
    /// when omitted or `-`.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,

    /// Exit 2 on any key this version does not read (a typo such as `intervall:`).
    #[arg(long)]
    pub strict: bool,

    /// The flags `serve` would get, so the check shows what wins over the file.
    #[command(flatten)]
    pub web: WebArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Config file. Created with commented defaults when missing (serve only).
    #[arg(long, env = "LOCAL_CONFIG_PATH", default_value = "config.yaml")]
    pub config: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,

    /// procfs mount point (overrides `path.procfs` in the config).
    #[arg(long = "path.procfs", value_name = "DIR")]
    pub procfs: Option<PathBuf>,

    /// sysfs mount point (overrides `path.sysfs` in the config).
    #[arg(long = "path.sysfs", value_name = "DIR")]
    pub sysfs: Option<PathBuf>,

    /// Root filesystem, for `/etc/nv_tegra_release` (overrides `path.rootfs`).
    #[arg(long = "path.rootfs", value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// Replay a shipped tegrastats recording as a Jetson, beside the linux
    /// collector: shows Jetson metrics on any machine. BOARD is one of the
    /// recordings in `recordings/` (default agx-orin-jp6).
    #[arg(long, value_name = "BOARD", num_args = 0..=1, default_missing_value = "agx-orin-jp6")]
    pub demo: Option<String>,

    #[command(flatten)]
    pub sync: SyncArgs,

    #[command(flatten)]
    pub web: WebArgs,
}

#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug, trace (or a tracing filter). Default:
    /// `log_level` in the config, else info.
    #[arg(
        long = "log.level",
        visible_alias = "log-level",
        global = true,
        env = "EDGE_EXPORTER_LOG_LEVEL"
    )]
    pub log_level: Option<String>,

    /// Log format. Default: `log_format` in the config, else text.
    #[arg(
        long = "log.format",
        visible_alias = "log-format",
        global = true,
        env = "EDGE_EXPORTER_LOG_FORMAT",
        value_enum
    )]
    pub log_format: Option<LogFormat>,
}

/// The flags node_exporter users type, for the metrics listener.
#[derive(Debug, Args, Clone, Default)]
pub struct WebArgs {
    /// Address to serve the metrics on, `HOST:PORT` or `:PORT` (repeatable: one
    /// listener each). Wins over `listen_address` and `port` of the config.
    #[arg(long = "web.listen-address", value_name = "ADDRESS")]
    pub listen_address: Vec<String>,

    /// An exporter-toolkit web config file (TLS, bcrypt `basic_auth_users`,
    /// response headers) for the metrics listener; re-read on reload.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// The path the metrics are served on.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,

    /// Leave the exporter's own metrics (`edge_exporter_*`, `process_*`) out.
    #[arg(long = "web.disable-exporter-metrics")]
    pub disable_exporter_metrics: bool,

    #[command(flatten)]
    pub collectors: CollectorArgs,
}

/// `--collector.NAME` / `--no-collector.NAME` for each collector.
macro_rules! collector_flags {
    ($($on:ident $off:ident $name:literal $what:literal;)*) => {
        /// Which collectors run, as node_exporter's flags say it.
        #[derive(Debug, Args, Clone, Default)]
        pub struct CollectorArgs {
            /// Run only the collectors a `--collector.NAME` flag names.
            #[arg(long = "collector.disable-defaults")]
            pub disable_defaults: bool,
            $(
                #[doc = concat!("Run the ", $name, " collector (", $what, ").")]
                #[arg(long = concat!("collector.", $name), overrides_with = stringify!($off))]
                pub $on: bool,
                #[doc = concat!("Do not run the ", $name, " collector.")]
                #[arg(long = concat!("no-collector.", $name), overrides_with = stringify!($on))]
                pub $off: bool,
            )*
        }

        /// The collectors the flags can name.
        pub const COLLECTORS: &[&str] = &[$($name),*];

        impl CollectorArgs {
            /// Each named collector with the flag's last word on it.
            pub fn switches(&self) -> Vec<(&'static str, bool)> {
                let mut out = Vec::new();
                $(
                    if self.$on {
                        out.push(($name, true));
                    } else if self.$off {
                        out.push(($name, false));
                    }
                )*
                out
            }
        }
    };
}

collector_flags! {
    linux no_linux "linux" "host CPU, memory, temperatures, hwmon, power supplies";
    tegrastats no_tegrastats "tegrastats" "Jetson: tegrastats";
    jetson_rails no_jetson_rails "jetson_rails" "Jetson: INA3221 rails from sysfs";
    control no_control "control" "Jetson: nvpmodel, jetson_clocks";
    ina2xx no_ina2xx "ina2xx" "INA219/226/260 sensors";
    pmic no_pmic "pmic" "Raspberry Pi 5 PMIC estimate; on by default on a Pi 5";
    rapl no_rapl "rapl" "Intel RAPL; on by default on a LattePanda";
    board no_board "board" "the board's input supply";
    shelly no_shelly "shelly" "Shelly plugs, when configured";
    device_info no_device_info "device_info" "edge_device_info: model, SoC, L4T, kernel, OS";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
