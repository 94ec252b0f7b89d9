//! The `tegrastats` collector: Jetson RAM, CPU, GPU, EMC, engines, temperatures and
//! power rails, from one long-lived `tegrastats` child (or a replayed recording).
//!
//! The stream (child process, restarts, replay) is `sources::tegrastats::stream`,
//! the parsing `sources::tegrastats::parse`; `mapping` turns a parsed line into
//! the spec's flat ids and the labeled families, and is shared with the `parse`
//! command. This module holds the latest line's values and hands them out at each
//! collection. Every id is listed in `docs/metrics.md`, the per-board rules in
//! `docs/tegrastats.md`.

pub mod mapping;

pub use mapping::{LineMapper, Mapped, Series, map_line};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::DropGuard;

use super::{BuildContext, CollectError, Collector};
use crate::energy::{self, MeterHandle, Meters};
use crate::lock::lock;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::tegrastats::stream::{self, LineSink, Source, StreamStatus};

pub const NAME: &str = "tegrastats";

static RESTARTS: Family = Family::counter(
    "edge_exporter_tegrastats_restarts_total",
    "Times tegrastats was started again after it exited, failed to start or went silent",
    "",
);
static LINES: Family = Family::counter(
    "edge_exporter_tegrastats_lines_total",
    "tegrastats lines read",
    "",
);
static UNKNOWN_TOKENS: Family = Family::counter(
    "edge_exporter_tegrastats_unknown_tokens_total",
    "tegrastats tokens that matched no known form and were skipped",
    "",
);
static UNREADABLE: Family = Family::counter(
    "edge_exporter_tegrastats_unreadable_lines_total",
    "tegrastats lines with nothing recognisable, too long or not UTF-8",
    "",
);
static DROPPED: Family = Family::counter(
    "edge_exporter_tegrastats_dropped_values_total",
    "tegrastats values left out because a line lists more than a board can have (over 256 cores, 32 GPCs, 128 names of rails, sensors or engines)",
    "",
);
static UP: Family = Family::gauge(
    "edge_exporter_tegrastats_up",
    "Whether tegrastats lines are arriving (1) or not (0)",
    "",
);

/// Reads tegrastats in the background and hands out the latest line's samples.
pub struct TegrastatsCollector {
    shared: Arc<Mutex<Shared>>,
    started: Instant,
    interval: Duration,
    /// Stops the stream (and its child) when the collector goes away.
    _stop: DropGuard,
}

impl std::fmt::Debug for TegrastatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TegrastatsCollector")
            .finish_non_exhaustive()
    }
}

/// What the stream task shares with the collector.
#[derive(Debug)]
struct Shared {
    /// The latest line with samples: each value and its series, and the meter of
    /// a power series (whose readings feed the energy layer).
    latest: Vec<(Arc<Series>, f64, Option<MeterHandle>)>,
    meters: Meters,
    /// The rails are read from sysfs (`jetson_rails`): power values are left out.
    power_from_sysfs: bool,
    mapper: LineMapper,
    observed: Option<SystemTime>,
    status: StreamStatus,
    restarts: u64,
    lines: u64,
    unknown_tokens: u64,
    unreadable: u64,
    dropped: u64,
    /// Reused for mapping each line.
    scratch: Vec<Mapped>,
}

struct Sink(Arc<Mutex<Shared>>);

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.0)
    }
}

impl LineSink for Sink {
    fn line(&mut self, line: &str) {
        let mut shared = self.lock();
        let shared = &mut *shared;
        shared.scratch.clear();
        let stats = shared.mapper.map(line, &mut shared.scratch);
        shared.lines += 1;
        shared.unknown_tokens += u64::from(stats.unknown);
        shared.dropped += u64::from(stats.dropped);
        if shared.scratch.is_empty() {
            shared.unreadable += 1;
            return;
        }
        shared.latest.clear();
        let now = Instant::now();
        for m in &shared.scratch {
            let series = shared.mapper.series(m).clone();
            let meter = match series.power {
                Some(_) if shared.power_from_sysfs => continue,
                Some(families) => {
                    let handle = shared.meters.power(&series.id, &[], families.total);
                    lock(&handle).meter.record(now, m.value);
                    Some(handle)
                }
                None => None,
            };
            shared.latest.push((series, m.value, meter));
        }
        shared.observed = Some(SystemTime::now());
    }

    fn unreadable(&mut self) {
        let mut shared = self.lock();
        shared.lines += 1;
        shared.unreadable += 1;
    }

    fn status(&mut self, status: StreamStatus) {
        self.lock().status = status;
    }

    fn restarted(&mut self) {
        self.lock().restarts += 1;
    }
}

impl TegrastatsCollector {
    /// Starts the stream on the context's tracker; it stops with the collector.
    /// With `power_from_sysfs` the rails' power is left to `jetson_rails`.
    pub fn start(
        source: Source,
        interval: Duration,
        power_from_sysfs: bool,
        ctx: &BuildContext,
    ) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            latest: Vec::new(),
            // A line per interval: that is the rails' sample period.
            meters: Meters::new(ctx.energy.clone(), interval, interval),
            power_from_sysfs,
            mapper: LineMapper::new(),
            observed: None,
            status: StreamStatus::Starting,
            restarts: 0,
            lines: 0,
            unknown_tokens: 0,
            unreadable: 0,
            dropped: 0,
            scratch: Vec::new(),
        }));
        let cancel = ctx.cancel.child_token();
        ctx.tracker.spawn(stream::run(
            source,
            interval,
            Sink(shared.clone()),
            cancel.clone(),
        ));
        TegrastatsCollector {
            shared,
            started: Instant::now(),
            interval,
            _stop: cancel.drop_guard(),
        }
    }
}

impl Collector for TegrastatsCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let shared = lock(&self.shared);
        if let Some(observed) = shared.observed {
            for (series, value, meter) in &shared.latest {
                let mut sample =
                    Sample::with_id(series.id.clone(), series.family, *value).observed(observed);
                sample.labels.clone_from(&series.labels);
                match (meter, series.power) {
                    (Some(meter), Some(families)) => {
                        energy::publish(out, families, meter, sample, self.interval);
                    }
                    _ => {
                        out.push(sample);
                    }
                }
            }
        }
        let up = matches!(shared.status, StreamStatus::Running);
        for (family, value) in [
            (&RESTARTS, shared.restarts as f64),
            (&LINES, shared.lines as f64),
            (&UNKNOWN_TOKENS, shared.unknown_tokens as f64),
            (&UNREADABLE, shared.unreadable as f64),
            (&DROPPED, shared.dropped as f64),
            (&UP, if up { 1.0 } else { 0.0 }),
        ] {
            out.push(Sample::own(family, value));
        }
        match &shared.status {
            StreamStatus::Running => Ok(()),
            StreamStatus::Down(reason) => Err(CollectError::Stream(reason.clone())),
            // The first line takes one interval to arrive.
            StreamStatus::Starting
                if self.started.elapsed() < stream::silence_limit(self.interval) =>
            {
                Ok(())
            }
            StreamStatus::Starting => Err(CollectError::Silent(self.started.elapsed().as_secs())),
        }
    }
}
