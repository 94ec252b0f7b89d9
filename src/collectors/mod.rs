//! Collectors: each turns one source's readings into samples.
//!
//! A [`Collector`] is called by the scheduler every `interval` on a blocking
//! thread and pushes what it read into a [`SampleSink`]. The framework (the
//! `scheduler` module), not the collector, times it, records success and expires
//! old samples. Sources that stream (a child process, a socket) keep a background
//! task and hand out their latest values from `collect`.
//!
//! Which collectors run is decided in one place, [`plan`], from the config: a
//! [`CollectorSpec`] per collector. Two equal specs mean an unchanged collector, so a
//! reload rebuilds only the ones whose spec changed.

pub mod board;
pub mod control;
pub mod device_info;
pub mod ina2xx;
pub mod jetson_rails;
pub mod linux;
pub mod pmic;
pub mod rapl;
pub mod shelly;
pub mod tegrastats;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DeviceType, Ina2xxSensor};
use crate::paths::Paths;
use crate::sample::SampleSink;
use crate::sources::board as profiles;
use crate::sources::tegrastats::stream::Source;

/// One data source mapped to samples.
pub trait Collector: Send + 'static {
    /// Stable short name (`linux`), the `collector` label of the health metrics.
    fn name(&self) -> &'static str;

    /// Reads the source once. Samples pushed before an error are kept: a collector
    /// that read four of five sources reports the fifth as its error.
    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError>;
}

/// Why a collection gave less than it should: one variant per step that failed,
/// with its cause. [`CollectError::NoData`] alone is "the hardware is not there":
/// reported, but not counted as a failure of the exporter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CollectError {
    /// The hardware is not there (no tegrastats, no sensor on the bus, no RAPL
    /// zones); the message says what is missing and how to add it.
    #[error("no data: {0}")]
    NoData(String),
    /// A procfs or sysfs file that should be there could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::sync::Arc<std::io::Error>,
    },
    /// A board tool failed (`vcgencmd`, `nvpmodel`).
    #[error(transparent)]
    Command(#[from] crate::sources::command::CommandError),
    /// The tegrastats stream is down (it is being restarted).
    #[error(transparent)]
    Stream(#[from] crate::sources::tegrastats::stream::StreamError),
    /// The stream has printed nothing since it started.
    #[error("tegrastats has printed nothing for {0}s since it started")]
    Silent(u64),
    /// A sensor on a bus failed: which one, and how.
    #[error("{0}")]
    Sensor(String),
    /// A Shelly plug gave no reading.
    #[error(transparent)]
    Plug(std::sync::Arc<shelly::ShellyError>),
    /// Several parts failed (or had no data), in the order they were read.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CollectError>),
    /// The collection ran longer than it may.
    #[error("collection has taken more than {0:?}")]
    Timeout(Duration),
    /// A bug in the collector; it is rebuilt for the next collection.
    #[error("collector panicked: {0}")]
    Panicked(String),
    #[error("collector could not be built: {0}")]
    Build(String),
}

impl CollectError {
    /// One error for what went wrong in one collection; `None` when nothing did.
    pub fn all(mut errors: Vec<CollectError>) -> Option<CollectError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(CollectError::Several(errors)),
        }
    }

    /// "The hardware is not there" rather than a failure of the exporter.
    pub fn is_no_data(&self) -> bool {
        match self {
            CollectError::NoData(_) => true,
            CollectError::Several(all) => all.iter().all(CollectError::is_no_data),
            _ => false,
        }
    }

    /// What `/health` shows: the message without the "no data: " prefix.
    pub fn detail(&self) -> String {
        match self {
            CollectError::NoData(message) => message.clone(),
            CollectError::Several(all) => all
                .iter()
                .map(CollectError::detail)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }
}

impl From<shelly::ShellyError> for CollectError {
    fn from(e: shelly::ShellyError) -> Self {
        CollectError::Plug(std::sync::Arc::new(e))
    }
}

/// What to run, derived from the config. Everything a collector is built from is
/// in its spec, so comparing specs tells what a reload must rebuild.
#[derive(Debug, Clone, PartialEq)]
pub enum CollectorSpec {
    Linux {
        paths: Paths,
        interval: Duration,
        /// Pair the INA3221's channels into power (not when `jetson_rails` reads them).
        pair_ina3221: bool,
    },
    Tegrastats {
        source: Source,
        interval: Duration,
        /// `jetson_rails` reads the rails' power from sysfs.
        power_from_sysfs: bool,
    },
    JetsonRails {
        paths: Paths,
        sample_interval: Duration,
        /// `power.run_sample_interval`: while a measured run is open.
        fast: Duration,
        interval: Duration,
    },
    Control {
        paths: Paths,
        nvpmodel_command: String,
    },
    Shelly {
        source: shelly::ShellySource,
        device_id: Option<String>,
        hostname: String,
        interval: Duration,
    },
    Ina2xx {
        paths: Paths,
        sensors: Vec<Ina2xxSensor>,
        /// `power.sample_interval`, bounded by the chips' conversion time.
        sample_period: Duration,
        /// `power.run_sample_interval` (the chips' bound applies at run time).
        fast: Duration,
        interval: Duration,
    },
    Rapl {
        paths: Paths,
        sample_interval: Duration,
        fast: Duration,
        interval: Duration,
    },
    Pmic {
        command: String,
        interval: Duration,
    },
    Board {
        paths: Paths,
        supply_prefix: &'static str,
        interval: Duration,
    },
    DeviceInfo {
        paths: Paths,
    },
}

/// What a collector may use while it is built: a place to run background tasks
/// that the daemon waits for at shutdown, and the token that stops them.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub tracker: TaskTracker,
    /// Cancelled when this collector is stopped (reload) or the daemon shuts down.
    pub cancel: CancellationToken,
    /// The plug hub running inside the exporter (`shelly.listen`), if any.
    pub hub: Option<std::sync::Arc<crate::shelly_server::Hub>>,
    /// The daemon's power meters, which outlive any one collector.
    pub energy: std::sync::Arc<crate::energy::Registry>,
}

impl BuildContext {
    /// Starts sampling `probe` on a thread of its own, every `period` (every
    /// `fast` while a run is open), with this context's meters, tracker and
    /// stop token.
    pub fn sampled(
        &self,
        probe: impl crate::energy::sampler::Probe,
        period: std::time::Duration,
        fast: std::time::Duration,
        interval: std::time::Duration,
    ) -> crate::energy::sampler::Sampled {
        crate::energy::sampler::Sampled::start(
            probe,
            period,
            fast,
            interval,
            self.energy.clone(),
            &self.tracker,
            &self.cancel,
        )
    }
}

impl CollectorSpec {
    pub fn name(&self) -> &'static str {
        match self {
            CollectorSpec::Linux { .. } => linux::NAME,
            CollectorSpec::Tegrastats { .. } => tegrastats::NAME,
            CollectorSpec::JetsonRails { .. } => jetson_rails::NAME,
            CollectorSpec::Control { .. } => control::NAME,
            CollectorSpec::Shelly { .. } => shelly::NAME,
            CollectorSpec::Ina2xx { .. } => ina2xx::NAME,
            CollectorSpec::Rapl { .. } => rapl::NAME,
            CollectorSpec::Pmic { .. } => pmic::NAME,
            CollectorSpec::Board { .. } => board::NAME,
            CollectorSpec::DeviceInfo { .. } => device_info::NAME,
        }
    }

    pub fn build(&self, ctx: &BuildContext) -> Box<dyn Collector> {
        match self {
            CollectorSpec::Linux {
                paths,
                interval,
                pair_ina3221,
            } => Box::new(linux::LinuxCollector::new(
                paths.clone(),
                crate::energy::Meters::new(ctx.energy.clone(), *interval, *interval),
                *pair_ina3221,
            )),
            CollectorSpec::Tegrastats {
                source,
                interval,
                power_from_sysfs,
            } => Box::new(tegrastats::TegrastatsCollector::start(
                source.clone(),
                *interval,
                *power_from_sysfs,
                ctx,
            )),
            CollectorSpec::JetsonRails {
                paths,
                sample_interval,
                fast,
                interval,
            } => Box::new(jetson_rails::JetsonRailsCollector::start(
                paths.clone(),
                *sample_interval,
                *fast,
                *interval,
                ctx,
            )),
            CollectorSpec::Control {
                paths,
                nvpmodel_command,
            } => Box::new(control::ControlCollector::new(
                paths.clone(),
                nvpmodel_command.clone(),
            )),
            CollectorSpec::Shelly {
                source,
                device_id,
                hostname,
                interval,
            } => Box::new(shelly::ShellyCollector::new(
                source.clone(),
                device_id.clone(),
                hostname.clone(),
                ctx.hub.clone(),
                crate::energy::Meters::new(ctx.energy.clone(), *interval, *interval),
            )),
            CollectorSpec::Ina2xx {
                paths,
                sensors,
                sample_period,
                fast,
                interval,
            } => Box::new(ina2xx::Ina2xxCollector::start(
                ina2xx::Ina2xxProbe::new(paths.clone(), sensors.clone()),
                *sample_period,
                *fast,
                *interval,
                ctx,
            )),
            CollectorSpec::Rapl {
                paths,
                sample_interval,
                fast,
                interval,
            } => Box::new(rapl::RaplCollector::start(
                paths.clone(),
                *sample_interval,
                *fast,
                *interval,
                ctx,
            )),
            CollectorSpec::Pmic { command, interval } => Box::new(pmic::PmicCollector::new(
                command.clone(),
                crate::energy::Meters::new(ctx.energy.clone(), *interval, *interval),
            )),
            CollectorSpec::Board {
                paths,
                supply_prefix,
                interval,
            } => Box::new(board::BoardCollector::new(
                paths.clone(),
                supply_prefix,
                crate::energy::Meters::new(ctx.energy.clone(), *interval, *interval),
            )),
            CollectorSpec::DeviceInfo { paths } => {
                Box::new(device_info::DeviceInfoCollector::new(paths))
            }
        }
    }
}

/// The device type actually in use: `auto` resolved to a concrete type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    pub device_type: DeviceType,
    /// The board's model (device tree) or DMI product name.
    pub model: Option<String>,
    /// The Raspberry Pi, Orange Pi or LattePanda profile, when the board matches
    /// one of the resolved type.
    pub board: Option<&'static profiles::Board>,
}

/// Resolves `auto` by looking at the board (through the configured roots).
pub fn resolve_device(config: &Config) -> ResolvedDevice {
    let identity = profiles::identify(&config.paths);
    let device_type = match config.device_type {
        DeviceType::Auto => profiles::detect(&identity),
        other => other,
    };
    ResolvedDevice {
        device_type,
        model: identity.name().map(str::to_owned),
        board: profiles::board(&identity).filter(|b| b.device_type == device_type),
    }
}

/// The collectors `config` asks for, in a stable order: `linux` always, and the
/// board's own collectors for its device type.
pub fn plan(config: &Config, device: &ResolvedDevice) -> Vec<CollectorSpec> {
    // A Jetson's rails in sysfs are read at their own rate by `jetson_rails`
    // (not in `--demo`, which replays another board).
    let sysfs_rails = device.device_type.is_jetson()
        && config.demo.is_none()
        && config.web.collectors.runs(jetson_rails::NAME)
        && !crate::sources::jetson_rails::discover(&config.paths).is_empty();
    let mut specs = vec![CollectorSpec::Linux {
        paths: config.paths.clone(),
        interval: config.interval,
        pair_ina3221: !sysfs_rails,
    }];
    if device.device_type.is_jetson() {
        let source = match (&config.demo, &config.tegrastats.replay) {
            (Some(demo), _) => Source::Replay {
                name: demo.name.clone(),
                lines: demo.lines.clone(),
            },
            (None, Some(path)) => Source::ReplayFile { path: path.clone() },
            (None, None) => Source::Command {
                program: config.tegrastats.command.clone(),
                args: config.tegrastats.args.clone(),
                sudo: config.tegrastats.sudo,
            },
        };
        specs.push(CollectorSpec::Tegrastats {
            source,
            interval: config.interval,
            power_from_sysfs: sysfs_rails,
        });
        if sysfs_rails {
            specs.push(CollectorSpec::JetsonRails {
                paths: config.paths.clone(),
                sample_interval: config.power.sample_interval,
                fast: config.power.run_sample_interval,
                interval: config.interval,
            });
        }
        specs.push(CollectorSpec::Control {
            paths: config.paths.clone(),
            nvpmodel_command: config.tegrastats.nvpmodel_command.clone(),
        });
    }
    let is_pi = device.device_type == DeviceType::RaspberryPi;
    let sensors = match &config.ina2xx {
        Some(list) => list.clone(),
        None if is_pi => vec![Ina2xxSensor::raspberry_pi_default()],
        None => Vec::new(),
    };
    if !sensors.is_empty() {
        specs.push(CollectorSpec::Ina2xx {
            paths: config.paths.clone(),
            sample_period: ina2xx::sample_period(&sensors, config.power.sample_interval),
            fast: config.power.run_sample_interval,
            sensors,
            interval: config.interval,
        });
    }
    let pi5 = is_pi && device.board.is_some_and(|b| b.pmic);
    let forced = |name: &str| config.web.collectors.forced(name);
    if config.pmic.enabled.unwrap_or(pi5) || forced(pmic::NAME) {
        specs.push(CollectorSpec::Pmic {
            command: config.pmic.command.clone(),
            interval: config.interval,
        });
    }
    if config
        .rapl
        .unwrap_or(device.device_type == DeviceType::LattePanda)
        || forced(rapl::NAME)
    {
        specs.push(CollectorSpec::Rapl {
            paths: config.paths.clone(),
            sample_interval: config.power.sample_interval,
            fast: config.power.run_sample_interval,
            interval: config.interval,
        });
    }
    // The board's input supply, where it has one present.
    if let Some(prefix) = device.board.and_then(|b| b.input_supply) {
        let supplies = crate::sources::power_supply::read_supplies(&config.paths);
        if board::find_input(&supplies, prefix).is_some() {
            specs.push(CollectorSpec::Board {
                paths: config.paths.clone(),
                supply_prefix: prefix,
                interval: config.interval,
            });
        }
    }
    let shelly_config = &config.shelly;
    if shelly_config.enabled {
        let source = if !shelly_config.poll.is_empty() {
            shelly::ShellySource::Poll(shelly_config.poll.clone())
        } else if shelly_config.listen.is_some() {
            shelly::ShellySource::Embedded
        } else {
            shelly::ShellySource::Hub {
                url: shelly_config.server_url.clone(),
            }
        };
        specs.push(CollectorSpec::Shelly {
            source,
            device_id: shelly_config.device_id.clone(),
            hostname: config
                .hostname
                .clone()
                .unwrap_or_else(|| config.paths.hostname()),
            interval: config.interval,
        });
    }
    specs.push(CollectorSpec::DeviceInfo {
        paths: config.paths.clone(),
    });
    // `--no-collector.NAME` and `--collector.disable-defaults`.
    specs.retain(|spec| config.web.collectors.runs(spec.name()));
    specs
}
