//! Runs the collectors in the background and publishes the snapshot scrapes serve.
//!
//! Each collector runs in its own task every `interval`, on a blocking thread, with
//! a timeout, never two collections of one collector at once. The scheduler owns
//! collector health (duration, success, last success, sample count, exported as the
//! `edge_exporter_collector_*` metrics), expiry (a sample not refreshed for three
//! intervals is dropped, never repeated), the enabled filter of `metrics:`, and the
//! hand-off of never-seen ids to auto-discovery. A scrape only reads the latest
//! [`Snapshot`]: it never waits on hardware.
//!
//! It does not know what a collector reads (`collectors`) nor how samples are
//! written (`exposition`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::collectors::{
    self, BuildContext, CollectError, Collector, CollectorSpec, ResolvedDevice,
};
use crate::config::{Config, Store};
use crate::exposition::{self, DeviceLabels, Format, MetricStyle};
use crate::lock::lock;
use crate::sample::{Family, Sample, SampleSink};

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

/// The published state of all collectors: what `/metrics` serves.
#[derive(Debug)]
pub struct Snapshot {
    samples: Vec<Sample>,
    style: MetricStyle,
    device: DeviceLabels,
    /// Each body is rendered once per snapshot, on the first scrape that asks.
    text: OnceLock<Bytes>,
    openmetrics: OnceLock<Bytes>,
}

impl Snapshot {
    pub fn new(mut samples: Vec<Sample>, style: MetricStyle, device: DeviceLabels) -> Self {
        exposition::sort_for(style, &mut samples);
        Snapshot {
            samples,
            style,
            device,
            text: OnceLock::new(),
            openmetrics: OnceLock::new(),
        }
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn style(&self) -> MetricStyle {
        self.style
    }

    pub fn device(&self) -> &DeviceLabels {
        &self.device
    }

    pub fn body(&self, format: Format) -> Bytes {
        let cell = match format {
            Format::Text004 => &self.text,
            Format::OpenMetrics => &self.openmetrics,
        };
        cell.get_or_init(|| {
            Bytes::from(exposition::render(
                &self.samples,
                self.style,
                format,
                &self.device,
            ))
        })
        .clone()
    }
}

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
                hostname: config.hostname.clone().unwrap_or_else(system_hostname),
            },
            specs: collectors::plan(config, &resolved),
            resolved,
        }
    }

    /// The device's own collector (`tegrastats` on a Jetson), else `linux`: the
    /// spec's `collector` field of `/health`.
    pub fn primary_collector(&self) -> &'static str {
        self.specs
            .get(1)
            .or_else(|| self.specs.first())
            .map_or(collectors::linux::NAME, CollectorSpec::name)
    }
}

/// The machine's hostname (the spec's `hostname` label and default device id).
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            let name = std::fs::read_to_string(p).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

struct Running {
    spec: CollectorSpec,
    cancel: CancellationToken,
}

/// State shared by the collector tasks and the HTTP handlers.
struct Shared {
    store: Arc<Store>,
    /// The embedded plug hub, handed to collectors that read it.
    hub: Option<Arc<crate::shelly::Hub>>,
    device: ArcSwap<DeviceInfo>,
    states: Mutex<BTreeMap<&'static str, CollectorState>>,
    snapshot: ArcSwap<Snapshot>,
    discovered: mpsc::UnboundedSender<Vec<Arc<str>>>,
    /// Other parts of the daemon that report on themselves (remote write, ...).
    self_metrics: Mutex<Vec<SelfMetrics>>,
}

/// Adds the exporter's own samples of some part of the daemon to each snapshot.
pub type SelfMetrics = Arc<dyn Fn(&mut Vec<Sample>) + Send + Sync>;

/// Starts, stops and rebuilds collectors; publishes snapshots.
pub struct Scheduler {
    shared: Arc<Shared>,
    running: Mutex<BTreeMap<&'static str, Running>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Creates the scheduler and starts the collectors the live config asks for.
    pub fn start(
        store: Arc<Store>,
        hub: Option<Arc<crate::shelly::Hub>>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let config = store.live();
        let device = DeviceInfo::from_config(&config);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::new(
                Vec::new(),
                config.metric_style,
                device.labels.clone(),
            )),
            device: ArcSwap::from_pointee(device),
            states: Mutex::new(BTreeMap::new()),
            store,
            hub,
            discovered: tx,
            self_metrics: Mutex::new(Vec::new()),
        });
        tracker.spawn(discovery_task(shared.store.clone(), rx, shutdown.clone()));
        tracker.spawn(sweep_task(shared.clone(), shutdown.clone()));
        let scheduler = Scheduler {
            shared,
            running: Mutex::new(BTreeMap::new()),
            tracker,
            shutdown,
        };
        scheduler.apply(&config);
        scheduler
    }

    /// Brings the running collectors in line with `config`: stops those no longer
    /// planned, rebuilds those whose spec changed, leaves the rest running.
    /// Returns the names of the collectors (re)started.
    pub fn apply(&self, config: &Config) -> Vec<&'static str> {
        let device = DeviceInfo::from_config(config);
        let specs = device.specs.clone();
        self.shared.device.store(Arc::new(device));
        let mut running = lock(&self.running);
        let stale: Vec<&'static str> = running
            .iter()
            .filter(|(_, r)| !specs.contains(&r.spec))
            .map(|(name, _)| *name)
            .collect();
        for name in stale {
            if let Some(r) = running.remove(name) {
                r.cancel.cancel();
                lock(&self.shared.states).remove(name);
                tracing::info!(collector = name, "collector stopped");
            }
        }
        let mut started = Vec::new();
        for spec in specs {
            let name = spec.name();
            if running.contains_key(name) {
                continue;
            }
            let cancel = self.shutdown.child_token();
            lock(&self.shared.states).insert(name, CollectorState::default());
            self.tracker.spawn(collector_task(
                self.shared.clone(),
                spec.clone(),
                cancel.clone(),
                self.tracker.clone(),
            ));
            running.insert(name, Running { spec, cancel });
            started.push(name);
            tracing::info!(collector = name, "collector started");
        }
        drop(running);
        self.shared.publish();
        started
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    pub fn device(&self) -> Arc<DeviceInfo> {
        self.shared.device.load_full()
    }

    /// Health of every running collector, by name.
    pub fn collector_states(&self) -> BTreeMap<&'static str, CollectorState> {
        lock(&self.shared.states).clone()
    }

    /// Adds a source of the exporter's own metrics to every snapshot from now on.
    pub fn add_self_metrics(&self, source: SelfMetrics) {
        lock(&self.shared.self_metrics).push(source);
    }

    /// Re-publishes now (after `metrics:` changed, so the filter applies at once).
    pub fn republish(&self) {
        self.shared.publish();
    }
}

impl Shared {
    fn record(
        &self,
        name: &'static str,
        cancel: &CancellationToken,
        result: Result<(), CollectError>,
        mut samples: Vec<Sample>,
        duration: Duration,
    ) {
        let now = SystemTime::now();
        for s in &mut samples {
            s.observed_at.get_or_insert(now);
        }
        let mut states = lock(&self.states);
        // Checked under the lock: `apply` cancels before it removes the state, so a
        // collection that ends after its collector was stopped is dropped here.
        if cancel.is_cancelled() {
            return;
        }
        let state = states.entry(name).or_default();
        match &result {
            Ok(()) => {
                if state.last_error.is_some() {
                    tracing::info!(collector = name, "collector recovered");
                }
                state.last_success = Some(now);
            }
            Err(e) => {
                if state.last_error.as_ref() != Some(e) {
                    match e {
                        CollectError::NoData(_) => {
                            tracing::info!(collector = name, error = %e, "collector has no data")
                        }
                        CollectError::Failed(_) => {
                            tracing::warn!(collector = name, error = %e, "collection failed")
                        }
                    }
                }
            }
        }
        state.collected += samples.len() as u64;
        // A collection that failed outright keeps the previous samples until they
        // expire; one that returned samples replaces them.
        if result.is_ok() || !samples.is_empty() {
            state.samples = samples;
        }
        if matches!(result, Err(CollectError::Failed(_))) {
            state.errors += 1;
        }
        state.last_error = result.err();
        state.last_duration = Some(duration);
        state.ran = true;
    }

    fn record_failure(
        &self,
        name: &'static str,
        cancel: &CancellationToken,
        message: String,
        duration: Duration,
    ) {
        self.record(
            name,
            cancel,
            Err(CollectError::Failed(message)),
            Vec::new(),
            duration,
        );
    }

    /// Builds and swaps in a new snapshot from the collectors' current samples.
    fn publish(&self) {
        let config = self.store.live();
        let device = self.device.load();
        let now = SystemTime::now();
        let max_age = config.interval * EXPIRY_INTERVALS;
        let mut out = Vec::new();
        let mut unseen: Vec<Arc<str>> = Vec::new();
        {
            let mut states = lock(&self.states);
            for (name, state) in states.iter_mut() {
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
                    if !config.metrics.contains_key(&*s.id) {
                        unseen.push(s.id.clone());
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
        self.snapshot.store(Arc::new(Snapshot::new(
            out,
            config.metric_style,
            device.labels.clone(),
        )));
        if !unseen.is_empty() {
            // The receiver lives as long as the daemon; after shutdown nothing
            // needs discovering.
            let _ = self.discovered.send(unseen);
        }
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
}

/// One collector's loop: build, then collect every interval until cancelled.
async fn collector_task(
    shared: Arc<Shared>,
    spec: CollectorSpec,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let name = spec.name();
    let mut collector: Option<Box<dyn Collector>> = None;
    loop {
        let started = Instant::now();
        let interval = shared.store.live().interval;
        // Building may read hardware too (priming counters), so it runs off the
        // async threads like collection does.
        let mut current = match collector.take() {
            Some(c) => c,
            None => {
                let spec = spec.clone();
                let ctx = BuildContext {
                    tracker: tracker.clone(),
                    cancel: cancel.clone(),
                    hub: shared.hub.clone(),
                };
                match tokio::task::spawn_blocking(move || spec.build(&ctx)).await {
                    Ok(c) => c,
                    Err(e) => {
                        shared.record_failure(
                            name,
                            &cancel,
                            format!("collector could not be built: {e}"),
                            started.elapsed(),
                        );
                        if sleep_or_cancel(&cancel, started + interval).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let timeout = (interval * 2).max(Duration::from_secs(2));
        let mut job = tokio::task::spawn_blocking(move || {
            let mut sink = SampleSink::default();
            let result = current.collect(&mut sink);
            (current, result, sink.samples)
        });
        let mut timed_out = false;
        let joined = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                joined = &mut job => break joined,
                _ = tokio::time::sleep(timeout), if !timed_out => {
                    timed_out = true;
                    shared.record_failure(name, &cancel, format!("collection has taken more than {timeout:?}"), started.elapsed());
                    shared.publish();
                }
            }
        };
        match joined {
            Ok((c, result, samples)) => {
                shared.record(name, &cancel, result, samples, started.elapsed());
                collector = Some(c);
            }
            Err(e) => {
                // A panic inside a collector is a bug; the collector is rebuilt on
                // the next round rather than taking the daemon down.
                shared.record_failure(
                    name,
                    &cancel,
                    format!("collector panicked: {e}"),
                    started.elapsed(),
                );
            }
        }
        shared.publish();
        let next = started + shared.store.live().interval;
        if sleep_or_cancel(&cancel, next).await {
            return;
        }
    }
}

/// Sleeps until `deadline`; true when cancelled first.
async fn sleep_or_cancel(cancel: &CancellationToken, deadline: Instant) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep_until(deadline.into()) => false,
    }
}

/// Re-publishes every interval so samples of a stuck collector still expire.
async fn sweep_task(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let interval = shared.store.live().interval;
        if sleep_or_cancel(&shutdown, Instant::now() + interval).await {
            return;
        }
        shared.publish();
    }
}

/// Writes ids seen for the first time to `config.yaml`, one batch at a time.
async fn discovery_task(
    store: Arc<Store>,
    mut rx: mpsc::UnboundedReceiver<Vec<Arc<str>>>,
    shutdown: CancellationToken,
) {
    let mut last_error: Option<String> = None;
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            batch = rx.recv() => match batch { Some(b) => b, None => return },
        };
        // Coalesce whatever else is queued into one write.
        let mut ids: HashSet<Arc<str>> = batch.into_iter().collect();
        while let Ok(more) = rx.try_recv() {
            ids.extend(more);
        }
        let ids: Vec<Arc<str>> = ids.into_iter().collect();
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || store.add_discovered(&ids)).await;
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
