//! Runs the collectors and publishes one snapshot per collection tick.
//!
//! Every `interval` a tick starts a collection of each collector that is not still
//! busy with the previous one, each on a blocking thread (never two collections of
//! one collector at once). The tick waits until those collections end, or until the
//! next tick is due, then publishes one [`Snapshot`] of every collector's current
//! samples to [`Latest`]. A collector added by a reload gets its first collection at
//! once; a change of `metrics:` republishes at once.
//!
//! The scheduler owns collector health (duration, success, last success, sample
//! count, exported as the `edge_exporter_collector_*` metrics), timeouts (a
//! collection running for more than twice the interval is reported as failing),
//! expiry (a sample not refreshed for three intervals is dropped, never repeated),
//! the enabled filter of `metrics:`, and the hand-off of never-seen ids to
//! auto-discovery. A scrape only reads the latest snapshot: it never waits on
//! hardware.
//!
//! It does not know what a collector reads (`collectors`) nor how samples are
//! written (`exposition`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::collectors::{
    self, BuildContext, CollectError, Collector, CollectorSpec, ResolvedDevice,
};
use crate::config::{Config, Store};
use crate::exposition::DeviceLabels;
use crate::lock::lock;
use crate::sample::{Family, Sample, SampleSink};
use crate::snapshot::{Latest, Snapshot};

/// Samples older than this many intervals are dropped.
pub const EXPIRY_INTERVALS: u32 = 3;

static COLLECTOR_DURATION: Family = Family::gauge(
    "edge_exporter_collector_duration_seconds",
    "How long the collector's last collection took",
    "seconds",
);
static COLLECTOR_SUCCESS: Family = Family::gauge(
    "edge_exporter_collector_success",
    "Whether the collector's last collection succeeded (1) or not (0)",
    "",
);
static COLLECTOR_LAST_SUCCESS: Family = Family::gauge(
    "edge_exporter_collector_last_success_timestamp_seconds",
    "Unix time of the collector's last successful collection",
    "seconds",
);
static COLLECTOR_SAMPLES: Family = Family::gauge(
    "edge_exporter_collector_samples",
    "Samples the collector currently holds (enabled or not)",
    "",
);
static COLLECTOR_ERRORS: Family = Family::counter(
    "edge_exporter_collector_errors_total",
    "Collections that failed (not counting \"hardware absent\")",
    "",
);
static COLLECTOR_COLLECTED: Family = Family::counter(
    "edge_exporter_samples_collected_total",
    "Samples collected, enabled or not",
    "",
);
static COLLECTOR_REJECTED: Family = Family::counter(
    "edge_exporter_samples_rejected_total",
    "Readings dropped because they are impossible (a negative amount or counter, a percentage over 100, a temperature outside -100..250 C)",
    "",
);

/// Health of one collector, for `/health` and the metrics above.
#[derive(Debug, Clone, Default)]
pub struct CollectorState {
    samples: Vec<Sample>,
    pub last_duration: Option<Duration>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<CollectError>,
    /// Whether the collector has finished a collection since it was (re)built.
    pub ran: bool,
    /// Collections that failed (not "no data"), since the daemon started.
    pub errors: u64,
    /// Samples collected, since the daemon started.
    pub collected: u64,
    /// Impossible readings dropped (negative amounts and counters, percentages
    /// over 100, implausible temperatures), since the daemon started.
    pub rejected: u64,
}

impl CollectorState {
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }
}

/// The resolved device and the labels it gives every device sample.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub resolved: ResolvedDevice,
    pub labels: DeviceLabels,
    /// The collectors the config asks for, in plan order.
    pub specs: Vec<CollectorSpec>,
}

impl DeviceInfo {
    pub fn from_config(config: &Config) -> Self {
        let resolved = collectors::resolve_device(config);
        DeviceInfo {
            labels: DeviceLabels {
                device_type: resolved.device_type.as_str().to_owned(),
                hostname: config
                    .hostname
                    .clone()
                    .unwrap_or_else(|| config.paths.hostname()),
            },
            specs: collectors::plan(config, &resolved),
            resolved,
        }
    }

    /// The device's own collector (`tegrastats` on a Jetson), else `linux`: the
    /// spec's `collector` field of `/health`.
    pub fn primary_collector(&self) -> &'static str {
        self.specs
            .iter()
            .map(CollectorSpec::name)
            .find(|n| ![collectors::linux::NAME, collectors::device_info::NAME].contains(n))
            .unwrap_or(collectors::linux::NAME)
    }
}

/// Adds the exporter's own samples of some part of the daemon to each snapshot.
pub type SelfMetrics = Arc<dyn Fn(&mut Vec<Sample>) + Send + Sync>;

/// One running collector.
struct Slot {
    spec: CollectorSpec,
    /// Cancelled when the collector is stopped (reload) or the daemon shuts down.
    cancel: CancellationToken,
    job: Job,
    state: CollectorState,
    /// Keeps its counters from going backwards; kept when the collector is rebuilt.
    counters: CounterGuard,
}

/// Where a collector's object is between ticks.
enum Job {
    /// Ready for the next tick; `None` when it must be built first (at start, and
    /// after a panic).
    Idle(Option<Box<dyn Collector>>),
    /// A collection is running; its result comes back to [`Shared::finish`].
    Busy {
        since: Instant,
        /// The timeout was reported already.
        overdue: bool,
    },
}

/// State shared by the tick task, the collection jobs and the HTTP handlers.
struct Shared {
    store: Arc<Store>,
    /// The embedded plug hub, handed to collectors that read it.
    hub: Option<Arc<crate::shelly_server::Hub>>,
    /// The power meters, kept across collector rebuilds.
    energy: Arc<crate::energy::Registry>,
    device: ArcSwap<DeviceInfo>,
    slots: Mutex<BTreeMap<&'static str, Slot>>,
    latest: Arc<Latest>,
    /// Ids seen for the first time, waiting to be written to `config.yaml`: a set,
    /// so an id waits once, and bounded by `max_metrics`.
    discovered: Mutex<HashSet<Arc<str>>>,
    discovery: Notify,
    /// Ids of the last snapshot refused because `max_metrics` is reached.
    refused: std::sync::atomic::AtomicUsize,
    /// Other parts of the daemon that report on themselves (remote write, ...).
    self_metrics: Mutex<Vec<SelfMetrics>>,
    /// Collections started by the current round and not finished yet.
    outstanding: Mutex<BTreeSet<&'static str>>,
    finished: Notify,
    /// A reload added collectors: start their first collection now.
    kick: Notify,
    /// Ticks run so far.
    ticks: std::sync::atomic::AtomicU64,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// Starts, stops and rebuilds collectors; publishes snapshots.
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Creates the scheduler and starts the collectors the live config asks for;
    /// the first tick runs at once.
    pub fn start(
        store: Arc<Store>,
        hub: Option<Arc<crate::shelly_server::Hub>>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let config = store.live();
        let device = DeviceInfo::from_config(&config);
        let shared = Arc::new(Shared {
            latest: Arc::new(Latest::new(Snapshot::new(
                Vec::new(),
                config.metric_style,
                device.labels.clone(),
            ))),
            device: ArcSwap::from_pointee(device),
            slots: Mutex::new(BTreeMap::new()),
            store,
            hub,
            energy: crate::energy::Registry::new(),
            discovered: Mutex::new(HashSet::new()),
            discovery: Notify::new(),
            refused: std::sync::atomic::AtomicUsize::new(0),
            self_metrics: Mutex::new(Vec::new()),
            outstanding: Mutex::new(BTreeSet::new()),
            finished: Notify::new(),
            kick: Notify::new(),
            ticks: std::sync::atomic::AtomicU64::new(0),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        });
        let scheduler = Scheduler { shared };
        tracker.spawn(discovery_task(scheduler.shared.clone()));
        scheduler.apply(&config);
        tracker.spawn(tick_task(scheduler.shared.clone()));
        let energy = scheduler.shared.energy.clone();
        scheduler.add_self_metrics(Arc::new(move |out| energy.samples(out)));
        scheduler
    }

    /// The power meters every collector feeds.
    pub fn energy(&self) -> Arc<crate::energy::Registry> {
        self.shared.energy.clone()
    }

    /// Brings the running collectors in line with `config`: stops those no longer
    /// planned, rebuilds those whose spec changed, leaves the rest running.
    /// Returns the names of the collectors (re)started.
    pub fn apply(&self, config: &Config) -> Vec<&'static str> {
        let device = DeviceInfo::from_config(config);
        let specs = device.specs.clone();
        self.shared.device.store(Arc::new(device));
        let mut started = Vec::new();
        {
            let mut slots = lock(&self.shared.slots);
            let mut guards = BTreeMap::new();
            slots.retain(|name, slot| {
                let keep = specs.contains(&slot.spec);
                if !keep {
                    // A collection still running is dropped when it ends.
                    slot.cancel.cancel();
                    guards.insert(*name, std::mem::take(&mut slot.counters));
                    tracing::info!(collector = *name, "collector stopped");
                }
                keep
            });
            for spec in specs {
                let name = spec.name();
                if slots.contains_key(name) {
                    continue;
                }
                slots.insert(
                    name,
                    Slot {
                        spec,
                        cancel: self.shared.shutdown.child_token(),
                        job: Job::Idle(None),
                        state: CollectorState::default(),
                        // A rebuilt collector carries on from its counters.
                        counters: guards.remove(name).unwrap_or_default(),
                    },
                );
                started.push(name);
                tracing::info!(collector = name, "collector started");
            }
        }
        if !started.is_empty() {
            self.shared.kick.notify_one();
        }
        self.shared.publish();
        started
    }

    /// Where the outputs read the published snapshots.
    pub fn latest(&self) -> Arc<Latest> {
        self.shared.latest.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.latest.get()
    }

    pub fn device(&self) -> Arc<DeviceInfo> {
        self.shared.device.load_full()
    }

    /// Health of every running collector, by name.
    pub fn collector_states(&self) -> BTreeMap<&'static str, CollectorState> {
        lock(&self.shared.slots)
            .iter()
            .map(|(name, slot)| (*name, slot.state.clone()))
            .collect()
    }

    /// The collectors whose last run failed ("no data" is not a failure).
    pub fn failing_collectors(&self) -> Vec<String> {
        lock(&self.shared.slots)
            .iter()
            .filter(|(_, slot)| {
                slot.state.ran
                    && slot
                        .state
                        .last_error
                        .as_ref()
                        .is_some_and(|e| !e.is_no_data())
            })
            .map(|(name, _)| (*name).to_owned())
            .collect()
    }

    /// Adds a source of the exporter's own metrics to every snapshot from now on.
    pub fn add_self_metrics(&self, source: SelfMetrics) {
        lock(&self.shared.self_metrics).push(source);
    }

    /// Collection ticks run so far (each publishes one snapshot).
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Re-publishes now (after `metrics:` changed, so the filter applies at once).
    pub fn republish(&self) {
        self.shared.publish();
    }
}

/// How long one collection may run before it is reported as failing.
fn collection_timeout(interval: Duration) -> Duration {
    (interval * 2).max(Duration::from_secs(2))
}

impl Shared {
    /// Starts a collection of every idle collector that `wanted` picks; they form
    /// the round [`Shared::wait_round`] waits for. Returns how many started.
    fn launch(self: &Arc<Self>, wanted: impl Fn(&CollectorState) -> bool) -> usize {
        let mut outstanding = lock(&self.outstanding);
        outstanding.clear();
        let mut slots = lock(&self.slots);
        for (name, slot) in slots.iter_mut() {
            if !matches!(slot.job, Job::Idle(_)) || !wanted(&slot.state) {
                continue;
            }
            let Job::Idle(collector) = std::mem::replace(
                &mut slot.job,
                Job::Busy {
                    since: Instant::now(),
                    overdue: false,
                },
            ) else {
                continue;
            };
            outstanding.insert(*name);
            self.tracker.spawn(collect_once(
                self.clone(),
                name,
                slot.spec.clone(),
                slot.cancel.clone(),
                collector,
            ));
        }
        outstanding.len()
    }

    /// Waits until every collection of the round has ended, or `deadline`.
    async fn wait_round(&self, deadline: Instant) {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if lock(&self.outstanding).is_empty() {
                return;
            }
            tokio::select! {
                _ = finished => {}
                _ = tokio::time::sleep_until(deadline.into()) => return,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Reports collections that have run for longer than their timeout; their
    /// samples stay until they expire, and a late result still counts.
    fn report_overdue(&self, interval: Duration) {
        let timeout = collection_timeout(interval);
        let mut slots = lock(&self.slots);
        for (name, slot) in slots.iter_mut() {
            if let Job::Busy { since, overdue } = &mut slot.job
                && !*overdue
                && since.elapsed() > timeout
            {
                *overdue = true;
                let elapsed = since.elapsed();
                slot.state.record(
                    name,
                    Err(CollectError::Timeout(timeout)),
                    Vec::new(),
                    elapsed,
                );
            }
        }
    }

    /// Takes back a collector after its collection and records the outcome.
    fn finish(
        &self,
        name: &'static str,
        cancel: &CancellationToken,
        collector: Option<Box<dyn Collector>>,
        result: Result<(), CollectError>,
        mut collected: Collected,
        duration: Duration,
    ) {
        {
            let mut slots = lock(&self.slots);
            // Checked under the lock: `apply` cancels before it removes the slot, so
            // a collection that ends after its collector was stopped is dropped
            // here (and the collector with it).
            if cancel.is_cancelled() {
                return;
            }
            if let Some(slot) = slots.get_mut(name) {
                slot.counters.apply(&mut collected.samples);
                if collected.rejected > 0 && slot.state.rejected == 0 {
                    tracing::info!(
                        collector = name,
                        "impossible readings dropped (counted in edge_exporter_samples_rejected_total)"
                    );
                }
                slot.state.rejected += collected.rejected;
                slot.state.record(name, result, collected.samples, duration);
                slot.job = Job::Idle(collector);
            }
        }
        let mut outstanding = lock(&self.outstanding);
        if outstanding.remove(name) && outstanding.is_empty() {
            self.finished.notify_one();
        }
    }

    /// Builds and swaps in a new snapshot from the collectors' current samples.
    fn publish(&self) {
        let config = self.store.live();
        let device = self.device.load();
        let now = SystemTime::now();
        let max_age = config.interval * EXPIRY_INTERVALS;
        let mut out = Vec::new();
        let mut queued = false;
        let mut refused = HashSet::new();
        {
            let mut discovered = lock(&self.discovered);
            let mut slots = lock(&self.slots);
            for (name, slot) in slots.iter_mut() {
                let state = &mut slot.state;
                state.samples.retain(|s| {
                    let observed = s.observed_at.unwrap_or(now);
                    now.duration_since(observed).unwrap_or_default() <= max_age
                });
                for s in &state.samples {
                    // The exporter's own samples are always shown and never listed
                    // under `metrics:`; device samples follow the list.
                    if !s.device {
                        out.push(s.clone());
                        continue;
                    }
                    if !config.lists(&s.id) && !discovered.contains(&s.id) {
                        // Seen for the first time: written to the file, unless the
                        // file is full; then it is neither added nor served.
                        if config.metrics.len() + discovered.len() >= config.max_metrics {
                            refused.insert(s.id.clone());
                            continue;
                        }
                        discovered.insert(s.id.clone());
                        queued = true;
                    }
                    if config.is_enabled(&s.id) {
                        out.push(s.clone());
                    }
                }
                push_health(&mut out, name, state);
            }
        }
        let mut own = Vec::new();
        for source in lock(&self.self_metrics).iter() {
            source(&mut own);
        }
        debug_assert!(
            own.iter().all(|s| !s.device),
            "self-metrics use Sample::own"
        );
        out.extend(own);
        out.push(Sample::own(&DISCOVERY_REFUSED, refused.len() as f64));
        if !config.web.exporter_metrics {
            // --web.disable-exporter-metrics: the device's series only.
            out.retain(|s| s.device);
        }
        self.latest.publish(Snapshot::new(
            out,
            config.metric_style,
            device.labels.clone(),
        ));
        if queued {
            self.discovery.notify_one();
        }
        let was = self
            .refused
            .swap(refused.len(), std::sync::atomic::Ordering::Relaxed);
        if was == 0 && !refused.is_empty() {
            tracing::warn!(
                max_metrics = config.max_metrics,
                refused = refused.len(),
                "max_metrics reached: new metric ids are neither added to config.yaml nor served (edge_exporter_discovery_refused_ids)"
            );
        }
    }
}

impl CollectorState {
    /// Records the outcome of one collection (or of a timeout).
    fn record(
        &mut self,
        name: &'static str,
        result: Result<(), CollectError>,
        mut samples: Vec<Sample>,
        duration: Duration,
    ) {
        let now = SystemTime::now();
        for s in &mut samples {
            s.observed_at.get_or_insert(now);
        }
        match &result {
            Ok(()) => {
                if self.last_error.is_some() {
                    tracing::info!(collector = name, "collector recovered");
                }
                self.last_success = Some(now);
            }
            // Told once per new error, not at every collection.
            Err(e) if self.last_error.as_ref().map(ToString::to_string) != Some(e.to_string()) => {
                if e.is_no_data() {
                    tracing::info!(collector = name, error = %e, "collector has no data")
                } else {
                    tracing::warn!(collector = name, error = %e, "collection failed")
                }
            }
            Err(_) => {}
        }
        self.collected += samples.len() as u64;
        // A collection that failed outright keeps the previous samples until they
        // expire; one that returned samples replaces them.
        if result.is_ok() || !samples.is_empty() {
            self.samples = samples;
        }
        if result.as_ref().is_err_and(|e| !e.is_no_data()) {
            self.errors += 1;
        }
        self.last_error = result.err();
        self.last_duration = Some(duration);
        self.ran = true;
    }
}

fn push_health(out: &mut Vec<Sample>, name: &'static str, state: &CollectorState) {
    if !state.ran {
        return;
    }
    let mut push = |family: &'static Family, value: f64| {
        out.push(Sample::own(family, value).const_label("collector", name));
    };
    if let Some(d) = state.last_duration {
        push(&COLLECTOR_DURATION, d.as_secs_f64());
    }
    push(
        &COLLECTOR_SUCCESS,
        if state.last_error.is_none() { 1.0 } else { 0.0 },
    );
    if let Some(t) = state.last_success {
        push(
            &COLLECTOR_LAST_SUCCESS,
            t.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }
    push(&COLLECTOR_SAMPLES, state.samples.len() as f64);
    push(&COLLECTOR_ERRORS, state.errors as f64);
    push(&COLLECTOR_COLLECTED, state.collected as f64);
    push(&COLLECTOR_REJECTED, state.rejected as f64);
}

static DISCOVERY_REFUSED: Family = Family::gauge(
    "edge_exporter_discovery_refused_ids",
    "Metric ids of the last collection neither added to config.yaml nor served because max_metrics is reached",
    "",
);

/// What one collection gave.
#[derive(Default)]
struct Collected {
    samples: Vec<Sample>,
    /// Impossible readings the sink dropped.
    rejected: u64,
}

/// Keeps a collector's device counters from going backwards: when a source's
/// counter drops (a reboot, a driver reload, a reset to zero), the exported value
/// carries on from where it was instead. Series not seen for a long while are
/// forgotten, so the map stays as small as the collector's output.
#[derive(Debug, Default)]
struct CounterGuard {
    /// Series (hash of id and constant labels) → last raw value, offset added,
    /// collection it was last seen in.
    series: std::collections::HashMap<u64, (f64, f64, u64)>,
    collections: u64,
}

/// Collections after which a counter that stopped appearing is forgotten.
const COUNTER_MEMORY: u64 = 10_000;

impl CounterGuard {
    fn apply(&mut self, samples: &mut [Sample]) {
        use std::hash::{BuildHasher, Hash, Hasher};
        self.collections += 1;
        let now = self.collections;
        for s in samples.iter_mut() {
            if s.family.kind != crate::sample::MetricKind::Counter || !s.device {
                continue;
            }
            let mut h =
                std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
            s.id.hash(&mut h);
            s.const_labels.hash(&mut h);
            let entry = self.series.entry(h.finish()).or_insert((s.value, 0.0, now));
            let (last, offset, seen) = entry;
            if s.value < *last {
                // Carry on from the last value rather than report a drop.
                *offset += *last - s.value;
            }
            *last = s.value;
            *seen = now;
            s.value += *offset;
        }
        if now.is_multiple_of(1000) {
            self.series
                .retain(|_, (_, _, seen)| now - *seen < COUNTER_MEMORY);
        }
    }
}

/// The ticks: every interval, one round of collections and one snapshot.
async fn tick_task(shared: Arc<Shared>) {
    loop {
        let started = Instant::now();
        let interval = shared.store.live().interval;
        let next = started + interval;
        if shared.launch(|_| true) > 0 {
            shared.wait_round(next).await;
        }
        shared.report_overdue(interval);
        shared.publish();
        shared
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Until the next tick, collectors a reload added get their first
        // collection at once.
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next.into()) => break,
                _ = shared.kick.notified() => {
                    if shared.launch(|state| !state.ran) > 0 {
                        shared.wait_round(next).await;
                        shared.publish();
                    }
                }
            }
        }
    }
}

/// One collection on a blocking thread, building the collector first when needed.
async fn collect_once(
    shared: Arc<Shared>,
    name: &'static str,
    spec: CollectorSpec,
    cancel: CancellationToken,
    collector: Option<Box<dyn Collector>>,
) {
    let started = Instant::now();
    let work = async {
        let collector = match collector {
            Some(c) => c,
            None => {
                // Building may read hardware too (priming counters), so it runs off
                // the async threads like collection does.
                let ctx = BuildContext {
                    tracker: shared.tracker.clone(),
                    cancel: cancel.clone(),
                    hub: shared.hub.clone(),
                    energy: shared.energy.clone(),
                };
                match tokio::task::spawn_blocking(move || spec.build(&ctx)).await {
                    Ok(c) => c,
                    Err(e) => {
                        return (
                            None,
                            Err(CollectError::Build(e.to_string())),
                            Collected::default(),
                        );
                    }
                }
            }
        };
        let job = tokio::task::spawn_blocking(move || {
            let mut current = collector;
            let mut sink = SampleSink::default();
            let result = current.collect(&mut sink);
            let collected = Collected {
                rejected: sink.rejected(),
                samples: sink.into_samples(),
            };
            (current, result, collected)
        });
        match job.await {
            Ok((c, result, collected)) => (Some(c), result, collected),
            // A panic inside a collector is a bug; the collector is rebuilt on the
            // next tick rather than taking the daemon down.
            Err(e) => (
                None,
                Err(CollectError::Panicked(e.to_string())),
                Collected::default(),
            ),
        }
    };
    // A hardware read that hangs must not hold up shutdown or a reload: the
    // blocking thread is left to finish on its own.
    let (collector, result, collected) = tokio::select! {
        _ = cancel.cancelled() => return,
        done = work => done,
    };
    shared.finish(
        name,
        &cancel,
        collector,
        result,
        collected,
        started.elapsed(),
    );
}

/// Writes the ids seen for the first time to `config.yaml`: whatever has gathered
/// since the last write, in one edit. An id stays in the waiting set until it is
/// written (or known in memory after a failed write), so it is never queued twice.
async fn discovery_task(shared: Arc<Shared>) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.discovery.notified() => {}
        }
        let ids: Vec<Arc<str>> = lock(&shared.discovered).iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let store = shared.store.clone();
        let batch = ids.clone();
        let result = tokio::task::spawn_blocking(move || store.add_discovered(&batch)).await;
        // Written, or (after a failed write) known in memory: no longer waiting.
        {
            let mut discovered = lock(&shared.discovered);
            for id in &ids {
                discovered.remove(id);
            }
        }
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(count = n, "new metrics discovered and added to config.yaml");
                last_error = None;
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!(error = %message, "discovered metrics could not be written to config.yaml; they are known until restart");
                }
                last_error = Some(message);
            }
            Err(e) => tracing::error!(error = %e, "discovery write panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    /// A plug's energy total through a reboot (a small step back) and a reset to
    /// zero: the exported counter carries on, per series.
    #[test]
    fn counters_never_go_backwards() {
        static ENERGY: Family = Family::counter("power_energy_joules_total", "e", "joules");
        static TEMP: Family = Family::gauge("t_celsius", "t", "celsius");
        let mut guard = CounterGuard::default();
        let mut run = |values: &[(f64, &str)]| -> Vec<f64> {
            let mut samples: Vec<Sample> = values
                .iter()
                .map(|(v, plug)| Sample::new(&ENERGY, *v).const_label("plug", *plug))
                .chain(std::iter::once(Sample::new(&TEMP, 20.0)))
                .collect();
            guard.apply(&mut samples);
            samples.iter().map(|s| s.value).collect()
        };
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-9);
        assert!(close(
            &run(&[(100.0, "a"), (7.0, "b")]),
            &[100.0, 7.0, 20.0]
        ));
        assert!(close(
            &run(&[(150.0, "a"), (8.0, "b")]),
            &[150.0, 8.0, 20.0]
        ));
        // A reboot steps back slightly; the counter holds its value.
        assert!(close(
            &run(&[(149.9, "a"), (9.0, "b")]),
            &[150.0, 9.0, 20.0]
        ));
        assert!(close(
            &run(&[(160.0, "a"), (9.5, "b")]),
            &[160.1, 9.5, 20.0]
        ));
        // A reset to zero continues from where it was; a gauge is left alone.
        assert!(close(&run(&[(0.0, "a"), (1.0, "b")]), &[160.1, 9.5, 20.0]));
        assert!(close(&run(&[(5.0, "a"), (2.0, "b")]), &[165.1, 10.5, 20.0]));
    }

    /// Three collectors (linux, rapl, pmic) on the LattePanda fixture: one snapshot
    /// per tick, not one per collector.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_snapshot_per_tick() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linux");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "interval: 0.1\nnew_metrics_enabled: true\nrapl:\n  enabled: true\npmic:\n  enabled: true\n  command: /bin/false\npath:\n  procfs: {root}/proc\n  sysfs: {root}/sys\n",
                root = fixture.join("lattepanda-3-delta").display()
            ),
        )
        .expect("config");
        let (store, _) = Store::open(path, Overrides::default()).expect("open");
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let scheduler = Scheduler::start(Arc::new(store), None, tracker.clone(), shutdown.clone());
        let latest = scheduler.latest();
        // Wait for the first round, then count over 20 ticks.
        while scheduler.collector_states().values().any(|s| !s.ran) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Counted from just after a tick published, so the window holds whole ticks.
        let start = scheduler.ticks();
        while scheduler.ticks() == start {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (ticks, published) = (scheduler.ticks(), latest.published());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let end = scheduler.ticks();
        while scheduler.ticks() == end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ticks = scheduler.ticks() - ticks;
        let published = latest.published() - published;
        // linux, pmic, rapl and device_info.
        assert_eq!(scheduler.collector_states().len(), 4);
        assert!(ticks >= 3, "{ticks} ticks");
        // One snapshot per collector and one per sweep would be 5 per tick. (The
        // two counters are read one after the other: a tick may fall between.)
        assert!(
            published.abs_diff(ticks) <= 1,
            "{published} snapshots in {ticks} ticks"
        );
        let samples = latest.get().samples().len();
        assert!(samples > 10, "{samples}");
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
