//! The power-meter layer: every power reading of every source becomes an energy
//! counter, a mean and a peak, in one place.
//!
//! A source delivers timestamped power readings (or a hardware energy counter) at
//! its own rate: the Jetson rails and INA2xx sensors from their samplers
//! ([`sampler`]) every `power.sample_interval`, everything else at each
//! collection. Per power series the [`Registry`] keeps a [`Meter`]; collectors
//! reach it through [`Meters`], which records a reading and pushes the three
//! series that follow from it: the watts gauge (the mean over the last publish
//! interval when the source is sampled faster than it, else the reading), the
//! `…_joules_total` counter and the `…_peak_watts` gauge.
//!
//! Meters live in the registry, not in the collectors, so a reload that rebuilds a
//! collector or a source that restarts never resets a counter. Measured runs
//! ([`runs`]) open a window on every meter and read it back when they stop.
//! This module does not read hardware, and it does not know the HTTP API.

pub mod families;
pub mod meter;
pub mod plot;
pub mod runs;
pub mod sampler;

#[cfg(test)]
mod accuracy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use meter::{Meter, Trace, TraceBudget, TracePoints, Window};

use crate::lock::lock;
use crate::sample::{Family, Label, Sample, SampleSink};

/// A power family and the two that follow from it. The flat ids follow the watts
/// id: `jetson_power_vdd_in_watts` → `jetson_power_vdd_in_joules_total` and
/// `jetson_power_vdd_in_peak_watts`; the labeled families carry the same labels.
#[derive(Debug, PartialEq)]
pub struct PowerFamilies {
    pub watts: &'static Family,
    /// None where the source has a hardware energy counter of its own (RAPL, a
    /// Shelly plug), which its collector exports instead.
    pub joules: Option<Family>,
    pub peak: Family,
    /// Whether a series of this family measures a whole device (a module's input
    /// rail, a board sensor, a wall plug) rather than a part nested in another.
    pub total: bool,
}

/// The flat id of `watts_id`'s companion: `suffix` in place of `_watts`.
pub fn companion_id(watts_id: &str, suffix: &str) -> String {
    let stem = watts_id.strip_suffix("_watts").unwrap_or(watts_id);
    format!("{stem}{suffix}")
}

/// A source's name in measured runs: its watts id without `_watts`, and its
/// constant labels (a plug) in braces.
pub fn source_name(watts_id: &str, const_labels: &[Label]) -> String {
    let stem = watts_id.strip_suffix("_watts").unwrap_or(watts_id);
    if const_labels.is_empty() {
        return stem.to_owned();
    }
    let labels: Vec<String> = const_labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{stem}{{{}}}", labels.join(","))
}

static GAPS: Family = Family::counter(
    "edge_exporter_energy_gaps_total",
    "Gaps longer than 3 sample periods in a power series, whose energy was left out of its counter",
    "",
);
static GAP_SECONDS: Family = Family::counter(
    "edge_exporter_energy_gap_seconds_total",
    "Time left out of a power series' energy counter because of gaps",
    "seconds",
);
static METERS: Family = Family::gauge(
    "edge_exporter_energy_meters",
    "Power series the exporter integrates into energy counters",
    "",
);

/// The meter of one series, and what the run reports say about it.
#[derive(Debug)]
pub struct Metered {
    pub meter: Meter,
    /// The run reports' name for it (see [`source_name`]).
    pub source: Arc<str>,
    pub total: bool,
}

pub type MeterHandle = Arc<Mutex<Metered>>;

/// Trace points a run keeps, shared by its sources.
pub const TRACE_POINTS: usize = 1_000_000;
/// Trace points all open runs hold together (8 bytes each: 32 MB).
pub const TRACE_BUDGET: usize = 4_000_000;

/// Every meter of the daemon, by series, and the runs open on them.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// Runs open now (read by the samplers at every read, without a lock).
    open_runs: std::sync::atomic::AtomicUsize,
    /// Sample fast even without a run open (`measure` sampling by itself).
    forced_fast: std::sync::atomic::AtomicBool,
    /// Runs being opened: their first reading is already at the fast rate.
    opening: std::sync::atomic::AtomicUsize,
    traces: Arc<TraceBudget>,
    /// Asks the samplers for a reading now: a run's start and stop take one,
    /// so no window begins or ends between two readings.
    wake: Wake,
}

/// The samplers' wake-up: a generation that grows with each request, and what
/// each sampler has read up to.
#[derive(Debug, Default)]
struct Wake {
    generation: Mutex<u64>,
    changed: std::sync::Condvar,
    samplers: Mutex<Vec<std::sync::Weak<std::sync::atomic::AtomicU64>>>,
}

/// Longest a run's start or stop waits for the samplers' readings.
const READ_NOW_WAIT: Duration = Duration::from_millis(50);

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
            open_runs: Default::default(),
            forced_fast: Default::default(),
            opening: Default::default(),
            traces: TraceBudget::new(TRACE_BUDGET),
            wake: Wake::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    meters: HashMap<Arc<str>, MeterHandle>,
    /// Runs open now, and when each opened.
    open: Vec<(u64, Instant)>,
}

impl Inner {
    /// A new trace for run `key` opened at `at`: the run's points shared by its
    /// sources.
    fn trace(&self, at: Instant, budget: &Arc<TraceBudget>) -> Trace {
        Trace::new(at, TRACE_POINTS / self.meters.len().max(1), budget.clone())
    }
}

/// See [`Registry::opening`].
#[derive(Debug)]
pub struct Opening<'a>(&'a Registry);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0
            .opening
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    /// Whether the sources that can go faster should: a run is open, or
    /// [`Registry::force_fast`] is on.
    pub fn fast(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.open_runs.load(Ordering::Relaxed) > 0
            || self.forced_fast.load(Ordering::Relaxed)
            || self.opening.load(Ordering::Relaxed) > 0
    }

    /// Fast sampling from now until the guard drops: a run about to open takes
    /// its first reading and goes on at the fast rate from it.
    pub fn opening(&self) -> Opening<'_> {
        self.opening
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Opening(self)
    }

    /// Samples fast whether or not a run is open (`measure` by itself).
    pub fn force_fast(&self, on: bool) {
        self.forced_fast
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Trace points held by open runs.
    pub fn trace_points(&self) -> usize {
        self.traces.held()
    }

    /// A sampler's place in the wake-ups: it stores there the generation it has
    /// read up to.
    pub fn join_wakeups(&self) -> Arc<std::sync::atomic::AtomicU64> {
        let mine = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut all = lock(&self.wake.samplers);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&mine));
        mine
    }

    /// The current wake-up generation.
    pub fn generation(&self) -> u64 {
        *lock(&self.wake.generation)
    }

    /// Sleeps until `until`, or until a reading is asked for after generation
    /// `seen`; the generation then.
    pub fn sleep_until(&self, until: Instant, seen: u64) -> u64 {
        let mut generation = lock(&self.wake.generation);
        loop {
            let now = Instant::now();
            if *generation != seen || now >= until {
                return *generation;
            }
            generation = match self.wake.changed.wait_timeout(generation, until - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Every sampler reads now: returns once each has (or after
    /// [`READ_NOW_WAIT`]).
    pub fn read_now(&self) {
        let target = {
            let mut generation = lock(&self.wake.generation);
            *generation += 1;
            *generation
        };
        self.wake.changed.notify_all();
        let deadline = Instant::now() + READ_NOW_WAIT;
        loop {
            let behind = lock(&self.wake.samplers).iter().any(|w| {
                w.upgrade()
                    .is_some_and(|s| s.load(std::sync::atomic::Ordering::Acquire) < target)
            });
            if !behind || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The meter of `source`, made by `make` the first time. A meter made while
    /// runs are open joins them from now.
    pub fn meter(
        &self,
        source: &str,
        total: bool,
        make: impl FnOnce(Instant) -> Meter,
    ) -> MeterHandle {
        let mut inner = lock(&self.inner);
        if let Some(handle) = inner.meters.get(source) {
            return handle.clone();
        }
        let now = Instant::now();
        let mut meter = make(now);
        for (key, _) in &inner.open {
            meter.open(*key, now, Some(inner.trace(now, &self.traces)));
        }
        let source: Arc<str> = source.into();
        let handle = Arc::new(Mutex::new(Metered {
            meter,
            source: source.clone(),
            total,
        }));
        inner.meters.insert(source, handle.clone());
        handle
    }

    /// Opens run `key` (not 0) on every meter at `at`.
    pub fn open_run(&self, key: u64, at: Instant) {
        let mut inner = lock(&self.inner);
        inner.open.push((key, at));
        self.open_runs
            .store(inner.open.len(), std::sync::atomic::Ordering::Relaxed);
        for handle in inner.meters.values() {
            let trace = inner.trace(at, &self.traces);
            lock(handle).meter.open(key, at, Some(trace));
        }
    }

    /// Run `key` on every meter so far, sorted by source.
    pub fn peek_run(&self, key: u64, now: Instant) -> Vec<SourceWindow> {
        self.each_run_window(|m| m.peek(key, now).map(|w| (w, None)))
    }

    /// The traces of run `key` so far, by source.
    pub fn peek_trace(&self, key: u64) -> Vec<(Arc<str>, TracePoints)> {
        let handles: Vec<MeterHandle> = lock(&self.inner).meters.values().cloned().collect();
        let mut found: Vec<(Arc<str>, TracePoints)> = handles
            .iter()
            .filter_map(|h| {
                let m = lock(h);
                Some((m.source.clone(), m.meter.peek_trace(key)?))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Closes run `key` on every meter and returns what each saw, with its trace.
    pub fn close_run(&self, key: u64, now: Instant) -> Vec<SourceWindow> {
        let found = self.each_run_window(|m| m.close(key, now));
        let mut inner = lock(&self.inner);
        inner.open.retain(|(k, _)| *k != key);
        self.open_runs
            .store(inner.open.len(), std::sync::atomic::Ordering::Relaxed);
        found
    }

    fn each_run_window(
        &self,
        mut f: impl FnMut(&mut Meter) -> Option<(Window, Option<TracePoints>)>,
    ) -> Vec<SourceWindow> {
        let handles: Vec<MeterHandle> = lock(&self.inner).meters.values().cloned().collect();
        let mut found: Vec<SourceWindow> = handles
            .iter()
            .filter_map(|h| {
                let mut m = lock(h);
                let (window, trace) = f(&mut m.meter)?;
                Some(SourceWindow {
                    source: m.source.clone(),
                    total: m.total,
                    window,
                    trace,
                })
            })
            .collect();
        found.sort_by(|a, b| a.source.cmp(&b.source));
        found
    }

    /// The layer's own metrics: meters, and gaps per source.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        let handles: Vec<MeterHandle> = lock(&self.inner).meters.values().cloned().collect();
        out.push(Sample::own(&METERS, handles.len() as f64));
        for handle in handles {
            let m = lock(&handle);
            let (gaps, seconds) = m.meter.gaps();
            out.push(Sample::own(&GAPS, gaps as f64).const_label("source", m.source.clone()));
            out.push(Sample::own(&GAP_SECONDS, seconds).const_label("source", m.source.clone()));
        }
    }
}

/// What one source's meter saw in a run.
#[derive(Debug, Clone)]
pub struct SourceWindow {
    pub source: Arc<str>,
    pub total: bool,
    pub window: Window,
    /// Its readings, when the run is closed.
    pub trace: Option<TracePoints>,
}

/// A collector's way to its meters: records readings and pushes the watts, joules
/// and peak series. Keeps the handles it has used, so a reading costs one lock.
#[derive(Debug)]
pub struct Meters {
    registry: Arc<Registry>,
    /// The source's sample period: the gap rule and the shown watts follow it.
    period: Duration,
    /// The publish interval (`interval`).
    interval: Duration,
    handles: HashMap<Arc<str>, MeterHandle>,
}

impl Meters {
    pub fn new(registry: Arc<Registry>, period: Duration, interval: Duration) -> Self {
        Meters {
            registry,
            period,
            interval,
            handles: HashMap::new(),
        }
    }

    /// The publish interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The meter of the series `watts_id` (with `const_labels`), of power readings.
    pub fn power(&mut self, watts_id: &str, const_labels: &[Label], total: bool) -> MeterHandle {
        self.handle(watts_id, const_labels, total, Meter::power)
    }

    /// The meter of the series `watts_id`, fed by a hardware energy counter.
    pub fn counter(&mut self, watts_id: &str, const_labels: &[Label], total: bool) -> MeterHandle {
        self.handle(watts_id, const_labels, total, Meter::counter)
    }

    fn handle(
        &mut self,
        watts_id: &str,
        const_labels: &[Label],
        total: bool,
        make: fn(Duration, Instant) -> Meter,
    ) -> MeterHandle {
        let source = source_name(watts_id, const_labels);
        if let Some(h) = self.handles.get(source.as_str()) {
            return h.clone();
        }
        let period = self.period;
        let handle = self.registry.meter(&source, total, |now| make(period, now));
        {
            // An existing meter (a rebuilt collector) takes this source's period.
            let mut m = lock(&handle);
            if m.meter.period() != period {
                m.meter.set_period(period);
            }
        }
        self.handles.insert(source.into(), handle.clone());
        handle
    }

    /// Records `sample`'s value (watts) taken at `at`, then pushes it with its
    /// joules and peak companions (see [`Meters::push_published`]).
    pub fn push_reading(
        &mut self,
        out: &mut SampleSink,
        families: &'static PowerFamilies,
        sample: Sample,
        at: Instant,
    ) {
        let handle = self.power(&sample.id, &sample.const_labels, families.total);
        lock(&handle).meter.record(at, sample.value);
        publish(out, families, &handle, sample, self.interval);
    }

    /// Records a hardware energy counter (`joules`, with the power the hardware
    /// reports beside it, if any) read at `at`, and pushes `template` (a watts
    /// sample) with the mean over the interval and the peak. The hardware counter
    /// itself is the collector's to push (`families.joules` is None).
    pub fn push_counter(
        &mut self,
        out: &mut SampleSink,
        families: &'static PowerFamilies,
        template: Sample,
        at: Instant,
        joules: f64,
        watts: Option<f64>,
    ) {
        let handle = self.counter(&template.id, &template.const_labels, families.total);
        lock(&handle).meter.record_counter(at, joules, watts);
        publish(out, families, &handle, template, self.interval);
    }
}

/// Pushes what `handle`'s meter has for the publish interval (of length
/// `interval`) that ends now, as `template` (a watts sample: its id, labels and
/// observed time; its value is replaced): the shown watts, the energy counter and
/// the peak. Nothing when the meter has no reading yet.
pub fn publish(
    out: &mut SampleSink,
    families: &'static PowerFamilies,
    handle: &MeterHandle,
    template: Sample,
    interval: Duration,
) {
    let (shown, joules, peak) = {
        let mut m = lock(handle);
        let window = m.meter.publish(Instant::now());
        let latest = m.meter.latest().map(|(_, w)| w);
        (
            m.meter.shown_watts(&window, interval),
            m.meter.joules(),
            window.peak.or(latest),
        )
    };
    let Some(shown) = shown else { return };
    let companion = |id: String, family: &'static Family, value: f64| {
        let mut s = Sample::with_id(id, family, value);
        s.labels.clone_from(&template.labels);
        s.const_labels.clone_from(&template.const_labels);
        s.observed_at = template.observed_at;
        s.device = template.device;
        s
    };
    let (joules_id, peak_id) = (
        companion_id(&template.id, "_joules_total"),
        companion_id(&template.id, "_peak_watts"),
    );
    out.push(Sample {
        value: shown,
        ..template.clone()
    });
    if let Some(family) = &families.joules {
        out.push(companion(joules_id, family, joules));
    }
    if let Some(peak) = peak {
        out.push(companion(peak_id, &families.peak, peak));
    }
}
