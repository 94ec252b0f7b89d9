//! The `jetson_rails` collector: the Jetson's INA3221 power rails from sysfs
//! (`sources::jetson_rails`), sampled every `power.sample_interval` by a sampler
//! thread, independent of `interval`.
//!
//! It runs on a Jetson whose sysfs has the rails; tegrastats then feeds everything
//! else and leaves power to it, so no series is made twice. The ids are the ones
//! tegrastats uses (`jetson_power_<rail>_watts`, `jetson_power_input_watts`), so
//! dashboards keep working, with the energy layer's `…_joules_total` and
//! `…_peak_watts` beside them, and each rail's voltage and current, which
//! tegrastats never had.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BuildContext, CollectError, Collector};
use crate::energy::families;
use crate::energy::sampler::{Probe, Problem, Reading, Sampled};
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink, sanitize};
use crate::sources::board::INPUT_RAILS;
use crate::sources::jetson_rails::{self, Rail};

pub const NAME: &str = "jetson_rails";

static VOLTAGE: Family = Family::gauge(
    "jetson_rail_voltage_volts",
    "Bus voltage of a power rail (INA3221, sysfs)",
    "volts",
);
static CURRENT: Family = Family::gauge(
    "jetson_rail_current_amps",
    "Current of a power rail (INA3221, sysfs)",
    "amps",
);
static SAMPLES: Family = Family::counter(
    "edge_exporter_power_samples_total",
    "Readings of a fast-sampled power source (every power.sample_interval)",
    "",
);
static SAMPLE_ERRORS: Family = Family::counter(
    "edge_exporter_power_sample_errors_total",
    "Readings of a fast-sampled power source that failed",
    "",
);
static OVERRUNS: Family = Family::counter(
    "edge_exporter_power_sample_overruns_total",
    "Readings that started late because the one before took longer than power.sample_interval",
    "",
);

/// Pushes a sampler's own counters under `collector`.
pub fn push_sampler_counts(out: &mut SampleSink, collector: &'static str, sampled: &Sampled) {
    let (reads, errors, overruns) = sampled.counts();
    for (family, value) in [
        (&SAMPLES, reads),
        (&SAMPLE_ERRORS, errors),
        (&OVERRUNS, overruns),
    ] {
        out.push(Sample::own(family, value as f64).const_label("collector", collector));
    }
}

/// A rail and its ids, worked out once.
#[derive(Debug)]
struct Channel {
    rail: Rail,
    fragment: Arc<str>,
    watts_id: Arc<str>,
    /// The module's input rail also gives `jetson_power_input_watts`.
    input: bool,
}

/// Reads the rails; finds them again when they all go missing.
#[derive(Debug)]
struct RailsProbe {
    paths: Paths,
    channels: Vec<Channel>,
    last_discovery: Option<Instant>,
    /// How often the chips have a new reading: the slowest chip's hwmon
    /// `update_interval`; JetPack 4's IIO driver has none (NVIDIA's defaults
    /// convert every few milliseconds).
    update: Duration,
}

/// The conversion time assumed for a chip that does not tell it.
const IIO_UPDATE: Duration = Duration::from_millis(5);

/// How long a probe without rails waits before looking for them again.
const REDISCOVER: Duration = Duration::from_secs(5);

impl RailsProbe {
    fn discover(&mut self) {
        self.last_discovery = Some(Instant::now());
        self.channels = jetson_rails::discover(&self.paths)
            .into_iter()
            .filter_map(|rail| {
                let fragment: Arc<str> = sanitize(&rail.name)?.into();
                Some(Channel {
                    watts_id: format!("jetson_power_{fragment}_watts").into(),
                    input: INPUT_RAILS.contains(&rail.name.as_str()),
                    fragment,
                    rail,
                })
            })
            .collect();
        // Two chips naming a rail alike: the first keeps it.
        let mut seen = std::collections::HashSet::new();
        self.channels.retain(|c| seen.insert(c.watts_id.clone()));
        self.update = self
            .channels
            .iter()
            .map(|c| match c.rail.layout {
                jetson_rails::Layout::Hwmon { .. } => c
                    .rail
                    .chip
                    .read_i64(c"update_interval")
                    .filter(|ms| *ms > 0)
                    .map_or(IIO_UPDATE, |ms| Duration::from_millis(ms as u64)),
                jetson_rails::Layout::Iio { .. } => IIO_UPDATE,
            })
            .max()
            .unwrap_or_default();
    }
}

impl Probe for RailsProbe {
    fn min_period(&self) -> Duration {
        self.update
    }

    fn read(&mut self, out: &mut Vec<Reading>, problems: &mut Vec<Problem>) {
        if self.channels.is_empty() {
            if self
                .last_discovery
                .is_none_or(|t| t.elapsed() >= REDISCOVER)
            {
                self.discover();
            }
            if self.channels.is_empty() {
                problems.push(Problem::Absent(format!(
                    "no INA3221 rails under {} or {}",
                    self.paths.sys("bus/i2c/drivers/ina3221").display(),
                    self.paths.sys("bus/i2c/drivers/ina3221x").display()
                )));
                return;
            }
        }
        let mut missing = 0;
        let mut chip: Option<&Arc<crate::paths::AttrDir>> = None;
        for c in &self.channels {
            // Once per chip per round: were files of its directory replaced?
            if !chip.is_some_and(|d| Arc::ptr_eq(d, &c.rail.chip)) {
                c.rail.chip.refresh();
                chip = Some(&c.rail.chip);
            }
            let Some(r) = c.rail.read() else {
                missing += 1;
                problems.push(Problem::Failed(format!(
                    "rail {} in {} could not be read",
                    c.rail.name,
                    c.rail.chip.path().display()
                )));
                continue;
            };
            let labels = vec![("rail", c.fragment.clone())];
            out.push(Reading {
                watts_id: c.watts_id.clone(),
                labels: labels.clone(),
                families: &families::JETSON_RAIL,
                watts: r.watts,
                volts: r.volts,
                amps: r.amps,
                joules: None,
            });
            if c.input {
                out.push(Reading {
                    watts_id: "jetson_power_input_watts".into(),
                    labels,
                    families: &families::JETSON_INPUT,
                    watts: r.watts,
                    volts: None,
                    amps: None,
                    joules: None,
                });
            }
        }
        if missing == self.channels.len() {
            // The chips went away (a driver reload): look for them again.
            self.channels.clear();
        }
    }
}

#[derive(Debug)]
pub struct JetsonRailsCollector {
    sampled: Sampled,
}

impl JetsonRailsCollector {
    /// Starts sampling the rails under `paths` every `sample_interval` (every
    /// `fast` while a run is open, no faster than the chips convert).
    pub fn start(
        paths: Paths,
        sample_interval: Duration,
        fast: Duration,
        interval: Duration,
        ctx: &BuildContext,
    ) -> Self {
        let probe = RailsProbe {
            paths,
            channels: Vec::new(),
            last_discovery: None,
            update: Duration::ZERO,
        };
        JetsonRailsCollector {
            sampled: ctx.sampled(probe, sample_interval, fast, interval),
        }
    }
}

impl Collector for JetsonRailsCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let pushed = self.sampled.push(out);
        // Each rail's bus voltage and current, beside the power (the input
        // total's reading has neither: the rail itself carries them).
        for r in &pushed.readings {
            let Some((_, rail)) = r.labels.first() else {
                continue;
            };
            out.push_some(r.volts, |v| {
                Sample::with_id(format!("jetson_rail_{rail}_voltage_volts"), &VOLTAGE, v)
                    .label("rail", rail.clone())
            });
            out.push_some(r.amps, |a| {
                Sample::with_id(format!("jetson_rail_{rail}_current_amps"), &CURRENT, a)
                    .label("rail", rail.clone())
            });
        }
        push_sampler_counts(out, NAME, &self.sampled);
        sampler_result(pushed.problems)
    }
}

/// A collection's outcome from the sampler's latest problems: failures are
/// errors, absent channels "no data".
pub fn sampler_result(problems: Vec<Problem>) -> Result<(), CollectError> {
    let errors = problems
        .into_iter()
        .map(|p| match p {
            Problem::Absent(m) => CollectError::NoData(m),
            Problem::Failed(m) => CollectError::Sensor(m),
        })
        .collect();
    CollectError::all(errors).map_or(Ok(()), Err)
}
