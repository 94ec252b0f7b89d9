//! Reads a power source many times a second, off the async runtime, into meters.
//!
//! Two rates: `power.sample_interval` normally, and `power.run_sample_interval`
//! while a measured run is open ([`Registry::fast`]), never faster than the
//! chip has a new reading ([`Probe::min_period`]). The gap rule of the meters
//! follows the normal rate either way.
//!
//! A [`Probe`] reads every channel of one source once (the rails of a Jetson's
//! INA3221, the INA2xx sensors of a board); a sampler thread calls it every sample
//! period, records each channel's power in its meter and keeps its latest voltage
//! and current. The collector of that source then only publishes what the sampler
//! gathered (see [`Sampled::push`]), so a slow bus delays neither a scrape nor any
//! other collector. Errors are counted and kept for `/health`; a read that takes
//! longer than the period makes the next one start at once, with no backlog.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{MeterHandle, Meters, PowerFamilies, Registry, publish};
use crate::lock::lock;
use crate::sample::{Label, Sample, SampleSink};

/// One channel's reading.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The flat id of its watts series (`jetson_power_vdd_in_watts`).
    pub watts_id: Arc<str>,
    /// Labels of the labeled style (`rail="vdd_in"`).
    pub labels: Vec<Label>,
    /// Which power family it belongs to (a nested rail, a module input, a board).
    pub families: &'static PowerFamilies,
    pub watts: Option<f64>,
    pub volts: Option<f64>,
    pub amps: Option<f64>,
    /// A hardware energy counter, joules (RAPL): the meter then takes the
    /// counter's increases, and `watts` is ignored.
    pub joules: Option<f64>,
}

/// Why a channel (or the whole source) gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not there: no bus, nothing answering, no such file.
    Absent(String),
    /// There, but failing.
    Failed(String),
}

/// A source read by a sampler.
pub trait Probe: Send + 'static {
    /// Reads every channel once into `out`, telling what could not be read in
    /// `problems` (both are empty on entry).
    fn read(&mut self, out: &mut Vec<Reading>, problems: &mut Vec<Problem>);

    /// How often the hardware has a new reading: the sampler never reads
    /// faster (0: as fast as asked).
    fn min_period(&self) -> Duration {
        Duration::ZERO
    }
}

/// What [`Sampled::push`] hands back to its collector.
#[derive(Debug)]
pub struct Pushed {
    /// Each channel's latest reading.
    pub readings: Vec<Reading>,
    /// The latest read's problems.
    pub problems: Vec<Problem>,
}

/// One channel as the collector publishes it.
#[derive(Debug)]
struct Channel {
    reading: Reading,
    meter: MeterHandle,
    /// The number of the read that last gave this channel.
    read: u64,
}

/// What a sampler shares with its collector.
#[derive(Debug, Default)]
pub struct SamplerState {
    channels: Vec<Channel>,
    /// Problems of the latest read.
    problems: Vec<Problem>,
    /// Reads, and reads with a failure (an absent channel is not one).
    pub reads: u64,
    pub errors: u64,
    /// Reads that started late because the one before took longer than the period.
    pub overruns: u64,
}

/// How long a collection waits for a new sampler's first read.
const FIRST_READ_WAIT: Duration = Duration::from_secs(2);

/// Handle on a running sampler, held by its collector. Dropping it stops the thread.
#[derive(Debug)]
pub struct Sampled {
    state: Arc<Mutex<SamplerState>>,
    period: Duration,
    fast: Duration,
    interval: Duration,
    _stop: tokio_util::sync::DropGuard,
}

impl Sampled {
    /// Starts sampling `probe` every `period` (every `fast` while a run is
    /// open) on `tracker`, into `registry`'s meters; `interval` is the publish
    /// interval.
    pub fn start(
        probe: impl Probe,
        period: Duration,
        fast: Duration,
        interval: Duration,
        registry: Arc<Registry>,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Self {
        let state = Arc::new(Mutex::new(SamplerState::default()));
        let cancel = cancel.child_token();
        let fast = fast.min(period);
        let meters = Meters::new(registry.clone(), period, interval);
        let shared = state.clone();
        let stop = cancel.clone();
        let rates = Rates {
            period,
            fast,
            registry,
        };
        tracker.spawn_blocking(move || run(probe, rates, meters, shared, stop));
        Sampled {
            state,
            period,
            fast,
            interval,
            _stop: cancel.drop_guard(),
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The period asked for while a run is open (before the chip's limit).
    pub fn fast_period(&self) -> Duration {
        self.fast
    }

    /// Publishes every channel's power: watts (the mean over the interval),
    /// joules and peak. Returns what the collector reports beside it: each
    /// channel's latest reading (its volts, amps, a hardware counter) and the
    /// latest read's problems.
    pub fn push(&self, out: &mut SampleSink) -> Pushed {
        // The first collection can come before the sampler's first read: wait
        // for it (briefly), so what is reported is that read's outcome, not an
        // empty "ok".
        let deadline = Instant::now() + FIRST_READ_WAIT;
        while lock(&self.state).reads == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let state = lock(&self.state);
        let mut readings = Vec::with_capacity(state.channels.len());
        for channel in &state.channels {
            let r = &channel.reading;
            let mut template = Sample::with_id(r.watts_id.clone(), r.families.watts, 0.0);
            template.labels.clone_from(&r.labels);
            publish(out, r.families, &channel.meter, template, self.interval);
            readings.push(r.clone());
        }
        Pushed {
            readings,
            problems: state.problems.clone(),
        }
    }

    /// Reads and failed reads so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = lock(&self.state);
        (s.reads, s.errors, s.overruns)
    }
}

/// The sampler's two rates, and where it learns which applies.
struct Rates {
    period: Duration,
    fast: Duration,
    registry: Arc<Registry>,
}

fn run(
    mut probe: impl Probe,
    rates: Rates,
    mut meters: Meters,
    state: Arc<Mutex<SamplerState>>,
    cancel: CancellationToken,
) {
    let mut readings = Vec::new();
    let mut problems = Vec::new();
    let mut next = Instant::now();
    let mine = rates.registry.join_wakeups();
    let mut generation = rates.registry.generation();
    while !cancel.is_cancelled() {
        readings.clear();
        problems.clear();
        // A read of several files takes a while (and can be preempted): its
        // readings are timed at the middle of it.
        let before = Instant::now();
        probe.read(&mut readings, &mut problems);
        let slack = (Instant::now() - before) / 2;
        let at = before + slack;
        {
            let mut s = lock(&state);
            s.reads += 1;
            let reads = s.reads;
            let failed = problems.iter().any(|p| matches!(p, Problem::Failed(_)));
            if failed {
                s.errors += 1;
            }
            for r in readings.drain(..) {
                let i = match s
                    .channels
                    .iter()
                    .position(|c| c.reading.watts_id == r.watts_id)
                {
                    Some(i) => i,
                    None => {
                        let meter = if r.joules.is_some() {
                            let m = meters.counter(&r.watts_id, &[], r.families.total);
                            lock(&m).meter.set_counter_step(probe.min_period());
                            m
                        } else {
                            meters.power(&r.watts_id, &[], r.families.total)
                        };
                        s.channels.push(Channel {
                            reading: r.clone(),
                            meter,
                            read: 0,
                        });
                        s.channels.len() - 1
                    }
                };
                let channel = &mut s.channels[i];
                match (r.joules, r.watts) {
                    (Some(j), _) => lock(&channel.meter).meter.record_counter(at, j, None),
                    (None, Some(w)) => lock(&channel.meter).meter.record_read(at, w, slack),
                    (None, None) => {}
                }
                channel.reading = r;
                channel.read = reads;
            }
            if !failed {
                // A read that failed nowhere gave every channel there is: one it
                // left out is gone (a zone unloaded, a rail removed).
                s.channels.retain(|c| c.read == reads);
            }
            s.problems = std::mem::take(&mut problems);
        }
        mine.store(generation, std::sync::atomic::Ordering::Release);
        let period = if rates.registry.fast() {
            rates.fast.max(probe.min_period())
        } else {
            rates.period
        };
        next += period;
        let now = Instant::now();
        if next < now {
            lock(&state).overruns += 1;
            next = now;
        }
        // Sleeps in short steps so a stop is seen within 50 ms; a run's start
        // or stop wakes it for a reading at once.
        while !cancel.is_cancelled() {
            let now = Instant::now();
            if now >= next {
                break;
            }
            let woken = rates
                .registry
                .sleep_until(next.min(now + Duration::from_millis(50)), generation);
            if woken != generation {
                generation = woken;
                // A reading now, and the schedule (fast, when a run just
                // opened) counts on from it.
                next = Instant::now();
                break;
            }
        }
        generation = rates.registry.generation().max(generation);
    }
}
