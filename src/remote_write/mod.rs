//! Pushing samples with Prometheus remote write 1.0 (`remote_write:` in the config),
//! through an on-disk buffer so an outage of the receiver loses nothing.
//!
//! Every `interval` the pusher takes the snapshot `/metrics` serves — the same
//! enabled samples, names, labels and values, in the configured `metric_style`, plus
//! the configured extra labels — and appends the samples not pushed before, each
//! with its collection timestamp, to the buffer (`buffer`). A sender task sends the
//! buffer in order, up to `batch_size` samples per request (protobuf, snappy,
//! `X-Prometheus-Remote-Write-Version: 0.1.0`). As the protocol says, a 5xx or 429
//! is retried (with backoff, jitter, and `Retry-After`) and any other 4xx is not: the
//! batch is dropped and counted as failed. Scraping `/metrics` works beside it.

pub mod buffer;
pub mod proto;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use hyper::header::{self, HeaderName};
use tokio_util::sync::CancellationToken;

use crate::config::{RemoteAuth, RemoteWriteConfig, Store};
use crate::exposition;
use crate::lock::lock;
use crate::sample::{Family, Sample};
use crate::snapshot::{Latest, Snapshot};
use buffer::Buffer;

/// The longest wait between two attempts to send.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_millis(500);

static SENT: Family = Family::counter(
    "edge_exporter_remote_write_samples_sent_total",
    "Samples the remote write receiver accepted",
    "",
);
static FAILED: Family = Family::counter(
    "edge_exporter_remote_write_samples_failed_total",
    "Samples the receiver refused for good (a 4xx other than 429); not retried",
    "",
);
static DROPPED: Family = Family::counter(
    "edge_exporter_remote_write_samples_dropped_total",
    "Samples dropped unsent, by reason: buffer_full (its size limit; the oldest go), disk_full (no room on the disk; the oldest go, then the newest), corrupt (a record failed its check)",
    "",
);
static RETRIES: Family = Family::counter(
    "edge_exporter_remote_write_retries_total",
    "Requests retried (receiver unreachable, 5xx or 429)",
    "",
);
static PENDING: Family = Family::gauge(
    "edge_exporter_remote_write_buffer_samples",
    "Samples waiting in the on-disk buffer",
    "",
);
static BYTES: Family = Family::gauge(
    "edge_exporter_remote_write_buffer_bytes",
    "Size of the on-disk buffer",
    "bytes",
);
static LAST_SUCCESS: Family = Family::gauge(
    "edge_exporter_remote_write_last_success_timestamp_seconds",
    "Unix time the receiver last accepted a request",
    "seconds",
);

/// The pusher's counters, shown among the exporter's own metrics.
#[derive(Debug, Default)]
pub struct Stats {
    sent: AtomicU64,
    failed: AtomicU64,
    /// By [`buffer::DropReason`].
    dropped: [AtomicU64; 4],
    retries: AtomicU64,
    pending: AtomicU64,
    bytes: AtomicU64,
    /// Milliseconds since the epoch; 0 for never.
    last_success_ms: AtomicU64,
    active: std::sync::atomic::AtomicBool,
}

impl Stats {
    pub fn samples(&self, out: &mut Vec<Sample>) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        for (family, value) in [
            (&SENT, get(&self.sent)),
            (&FAILED, get(&self.failed)),
            (&RETRIES, get(&self.retries)),
            (&PENDING, get(&self.pending)),
            (&BYTES, get(&self.bytes)),
        ] {
            out.push(Sample::own(family, value));
        }
        for reason in buffer::DropReason::ALL {
            out.push(
                Sample::own(&DROPPED, get(&self.dropped[reason as usize]))
                    .const_label("reason", reason.as_str()),
            );
        }
        let last = self.last_success_ms.load(Ordering::Relaxed);
        if last > 0 {
            out.push(Sample::own(&LAST_SUCCESS, last as f64 / 1000.0));
        }
    }

    /// `/status`'s `remote_write` object; `None` when not pushing.
    pub fn summary(&self) -> Option<serde_json::Value> {
        if !self.active.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_success_ms.load(Ordering::Relaxed);
        Some(serde_json::json!({
            "buffer_samples": self.pending.load(Ordering::Relaxed),
            "samples_sent": self.sent.load(Ordering::Relaxed),
            "samples_dropped": self.dropped.iter().map(|d| d.load(Ordering::Relaxed)).sum::<u64>(),
            "last_success": (last > 0).then(|| crate::clock::rfc3339(last as f64 / 1000.0)),
        }))
    }

    /// Takes the buffer's gauges, and its drops since `dropped_before` (what
    /// this buffer had dropped when last observed; a new buffer starts at 0).
    fn observe(&self, buffer: &Buffer, dropped_before: &mut [u64; 4]) {
        self.pending.store(buffer.pending(), Ordering::Relaxed);
        self.bytes.store(buffer.bytes(), Ordering::Relaxed);
        for reason in buffer::DropReason::ALL {
            let now = buffer.dropped(reason);
            let i = reason as usize;
            self.dropped[i].fetch_add(now - dropped_before[i], Ordering::Relaxed);
            dropped_before[i] = now;
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// Where the buffer goes when the config does not say.
pub fn default_buffer_dir(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("remote-write-buffer")
}

/// Runs the pusher for as long as the daemon runs, following config reloads.
pub async fn run(
    store: Arc<Store>,
    snapshots: Arc<Latest>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut current: Option<(RemoteWriteConfig, Pusher)> = None;
    loop {
        let wanted = store.live().remote_write.clone();
        if current.as_ref().map(|(c, _)| c) != wanted.as_ref() {
            if let Some((_, old)) = current.take() {
                old.stop().await;
            }
            if let Some(cfg) = wanted {
                match Pusher::start(&cfg, store.path(), stats.clone(), &shutdown) {
                    Ok(p) => {
                        tracing::info!(url = %cfg.url, interval = ?cfg.interval, "remote write started");
                        current = Some((cfg, p));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "remote write cannot start");
                        stats.active.store(false, Ordering::Relaxed);
                    }
                }
            } else {
                stats.active.store(false, Ordering::Relaxed);
            }
        }
        let wait = current
            .as_ref()
            .map_or(Duration::from_secs(1), |(c, _)| c.interval);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        if let Some((cfg, pusher)) = current.as_mut() {
            pusher.push_snapshot(cfg, &snapshots).await;
        }
    }
    if let Some((_, p)) = current {
        p.stop().await;
    }
}

/// Why remote write cannot start with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the buffer {}: {source}", dir.display())]
    Buffer {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
}

/// One configured receiver: the buffer, the series already pushed, the sender.
struct Pusher {
    buffer: Arc<Mutex<Buffer>>,
    stats: Arc<Stats>,
    /// Series (by hash of name and labels) → timestamp last buffered.
    last: HashMap<u64, i64>,
    wake: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
    sender: tokio::task::JoinHandle<()>,
    dropped_seen: [u64; 4],
}

impl Pusher {
    fn start(
        cfg: &RemoteWriteConfig,
        config_path: &Path,
        stats: Arc<Stats>,
        shutdown: &CancellationToken,
    ) -> Result<Pusher, StartError> {
        let dir = cfg
            .buffer_path
            .clone()
            .unwrap_or_else(|| default_buffer_dir(config_path));
        let buffer =
            Buffer::open(&dir, cfg.buffer_max_bytes).map_err(|source| StartError::Buffer {
                dir: dir.clone(),
                source,
            })?;
        if buffer.pending() > 0 {
            tracing::info!(samples = buffer.pending(), dir = %dir.display(), "remote write: sending the samples already in the buffer");
        }
        let tls = if cfg.url.starts_with("https://") {
            Some(crate::net::tls::client(&cfg.tls)?)
        } else {
            None
        };
        let mut dropped_seen = [0; 4];
        stats.observe(&buffer, &mut dropped_seen);
        stats.active.store(true, Ordering::Relaxed);
        let buffer = Arc::new(Mutex::new(buffer));
        let wake = Arc::new(tokio::sync::Notify::new());
        let cancel = shutdown.child_token();
        let sender = tokio::spawn(send_loop(
            Sender {
                cfg: cfg.clone(),
                client: crate::net::client::Client::new(tls),
                buffer: buffer.clone(),
                stats: stats.clone(),
            },
            wake.clone(),
            cancel.clone(),
        ));
        Ok(Pusher {
            buffer,
            stats,
            last: HashMap::new(),
            wake,
            cancel,
            sender,
            dropped_seen,
        })
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.sender.await;
    }

    /// Buffers the snapshot's samples that were not pushed yet.
    async fn push_snapshot(&mut self, cfg: &RemoteWriteConfig, snapshots: &Latest) {
        let snapshot = snapshots.get();
        let now = unix_ms(SystemTime::now());
        let records = encode(cfg, &snapshot, now, &mut self.last);
        if records.is_empty() {
            return;
        }
        let buffer = self.buffer.clone();
        let stats = self.stats.clone();
        let mut dropped_seen = self.dropped_seen;
        let result = tokio::task::spawn_blocking(move || {
            let mut b = lock(&buffer);
            let r = b.append(&records);
            stats.observe(&b, &mut dropped_seen);
            r.map(|()| dropped_seen)
        })
        .await;
        match result {
            Ok(Ok(seen)) => self.dropped_seen = seen,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "remote write: cannot write the buffer; these samples are lost")
            }
            Err(e) => tracing::error!(error = %e, "remote write: buffer task failed"),
        }
        self.wake.notify_one();
    }
}

/// Encodes the new samples of `snapshot` into compressed records of at most
/// `cfg.batch_size` samples each.
pub fn encode(
    cfg: &RemoteWriteConfig,
    snapshot: &Snapshot,
    now_ms: i64,
    last: &mut HashMap<u64, i64>,
) -> Vec<(u32, Vec<u8>)> {
    let style = snapshot.style();
    let device = snapshot.device();
    let mut records = Vec::new();
    let mut body = Vec::new();
    let mut count = 0u32;
    let mut encoder = snap::raw::Encoder::new();
    let mut flush = |body: &mut Vec<u8>, count: &mut u32| {
        if *count > 0 {
            if let Ok(compressed) = encoder.compress_vec(body) {
                records.push((*count, compressed));
            }
            body.clear();
            *count = 0;
        }
    };
    let instance = cfg
        .instance
        .clone()
        .unwrap_or_else(|| format!("{}:{}", device.hostname, cfg.port));
    // What a scraping Prometheus would add: the job and the target. Every series,
    // the exporter's own included, so two devices never share one.
    let identity = [("job", cfg.job.as_str()), ("instance", instance.as_str())];
    for sample in snapshot.samples() {
        let name = exposition::name(sample, style);
        let mut labels: Vec<(&str, &str)> = exposition::labels(sample, style, device).collect();
        let added = cfg.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (k, v) in added.chain(identity) {
            // A label the series has is never overwritten.
            if !labels.iter().any(|(n, _)| *n == k) {
                labels.push((k, v));
            }
        }
        labels.push(("__name__", name));
        labels.sort_by(|a, b| a.0.cmp(b.0));
        let ts = sample.observed_at.map_or(now_ms, unix_ms);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut hasher);
        let key = hasher.finish();
        if last.get(&key).is_some_and(|prev| *prev >= ts) {
            continue;
        }
        last.insert(key, ts);
        proto::encode_series(&mut body, &labels, exposition::value(sample, style), ts);
        count += 1;
        if count as usize >= cfg.batch_size {
            flush(&mut body, &mut count);
        }
    }
    flush(&mut body, &mut count);
    records
}

struct Sender {
    cfg: RemoteWriteConfig,
    /// Keeps the connection to the receiver open between pushes.
    client: crate::net::client::Client,
    buffer: Arc<Mutex<Buffer>>,
    stats: Arc<Stats>,
}

/// What became of one request.
enum Outcome {
    Accepted,
    Retry(Option<Duration>, String),
    Refused(String),
}

async fn send_loop(sender: Sender, wake: Arc<tokio::sync::Notify>, cancel: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        let buffer = sender.buffer.clone();
        let batch_size = sender.cfg.batch_size as u64;
        let batch = tokio::task::spawn_blocking(move || lock(&buffer).peek(batch_size)).await;
        let batch = match batch {
            Ok(Ok(Some(batch))) => batch,
            Ok(Ok(None)) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = wake.notified() => continue,
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "remote write: cannot read the buffer");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(MAX_BACKOFF) => continue,
                }
            }
            Err(_) => return,
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = sender.send(&batch.body) => o,
        };
        match outcome {
            Outcome::Accepted | Outcome::Refused(_) => {
                if let Outcome::Refused(reason) = &outcome {
                    tracing::warn!(
                        samples = batch.samples,
                        reason,
                        "remote write: the receiver refused a batch; it is not retried"
                    );
                    sender
                        .stats
                        .failed
                        .fetch_add(batch.samples, Ordering::Relaxed);
                } else {
                    sender
                        .stats
                        .sent
                        .fetch_add(batch.samples, Ordering::Relaxed);
                    sender
                        .stats
                        .last_success_ms
                        .store(unix_ms(SystemTime::now()) as u64, Ordering::Relaxed);
                    if failing {
                        tracing::info!("remote write: the receiver accepts samples again");
                        failing = false;
                    }
                }
                backoff = MIN_BACKOFF;
                let buffer = sender.buffer.clone();
                let stats = sender.stats.clone();
                let committed = tokio::task::spawn_blocking(move || {
                    let mut b = lock(&buffer);
                    let r = b.commit(&batch);
                    stats.pending.store(b.pending(), Ordering::Relaxed);
                    stats.bytes.store(b.bytes(), Ordering::Relaxed);
                    r
                })
                .await;
                if let Ok(Err(e)) = committed {
                    tracing::error!(error = %e, "remote write: cannot save the buffer position; the batch may be sent again");
                }
            }
            Outcome::Retry(after, reason) => {
                sender.stats.retries.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(url = %sender.cfg.url, reason, "remote write: receiver unavailable; samples wait in the buffer");
                    failing = true;
                } else {
                    tracing::debug!(reason, "remote write: still unavailable");
                }
                let wait = after
                    .unwrap_or_else(|| jitter(backoff))
                    .min(Duration::from_secs(300));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// `d` plus or minus up to a quarter, so devices that lost the receiver together
/// do not come back in step.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let spread = d.as_secs_f64() / 2.0;
    let offset = (f64::from(nanos % 1_000_000) / 1_000_000.0 - 0.5) * spread;
    Duration::from_secs_f64((d.as_secs_f64() + offset).max(0.05))
}

impl Sender {
    async fn send(&self, body: &[u8]) -> Outcome {
        let compressed = match snap::raw::Encoder::new().compress_vec(body) {
            Ok(c) => c,
            Err(e) => return Outcome::Refused(format!("cannot compress: {e}")),
        };
        let mut headers: Vec<(HeaderName, String)> = vec![
            (header::CONTENT_TYPE, "application/x-protobuf".into()),
            (header::CONTENT_ENCODING, "snappy".into()),
            (
                HeaderName::from_static("x-prometheus-remote-write-version"),
                "0.1.0".into(),
            ),
        ];
        match &self.cfg.auth {
            RemoteAuth::None => {}
            RemoteAuth::Bearer(token) => {
                headers.push((header::AUTHORIZATION, format!("Bearer {}", token.expose())));
            }
            RemoteAuth::Basic { username, password } => {
                headers.push((
                    header::AUTHORIZATION,
                    crate::net::auth::basic_header(username, password.expose()),
                ));
            }
        }
        let response = self
            .client
            .request(
                Method::POST,
                &self.cfg.url,
                &headers,
                Bytes::from(compressed),
                self.cfg.timeout,
                64 * 1024,
            )
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(None, e.to_string()),
        };
        let text = || {
            String::from_utf8_lossy(&response.body)
                .chars()
                .take(300)
                .collect::<String>()
        };
        match response.status {
            200..=299 => Outcome::Accepted,
            429 | 500..=599 => {
                let after = response
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Outcome::Retry(after, format!("{}: {}", response.status, text()))
            }
            status => Outcome::Refused(format!("{status}: {}", text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::DeviceLabels;
    use crate::exposition::MetricStyle;

    static TEMP: Family = Family::gauge("host_temp_celsius", "Temperature", "celsius");

    fn cfg(batch_size: usize) -> RemoteWriteConfig {
        RemoteWriteConfig {
            url: "http://x/api/v1/write".into(),
            interval: Duration::from_secs(1),
            batch_size,
            timeout: Duration::from_secs(1),
            auth: RemoteAuth::None,
            labels: vec![
                ("hostname".into(), "ignored".into()),
                ("site".into(), "lab-3".into()),
            ],
            job: crate::config::DEFAULT_JOB.into(),
            instance: None,
            port: 9102,
            tls: Default::default(),
            buffer_path: None,
            buffer_max_bytes: 1 << 20,
        }
    }

    #[test]
    fn the_snapshot_as_series_once_each() {
        use prost::Message;
        let t = UNIX_EPOCH + Duration::from_millis(1_795_316_215_123);
        let samples = vec![
            Sample::with_id("host_temp_cpu_celsius", &TEMP, 48.5)
                .label("zone", "cpu")
                .observed(t),
            Sample::with_id("host_temp_gpu_celsius", &TEMP, 41.0)
                .label("zone", "gpu")
                .observed(t),
        ];
        let device = DeviceLabels {
            device_type: "jetson_orin".into(),
            hostname: "orin-01".into(),
        };
        let snapshot = Snapshot::new(samples, MetricStyle::Labeled, device);
        let mut last = HashMap::new();
        let records = encode(&cfg(1), &snapshot, 0, &mut last);
        assert_eq!(records.len(), 2, "one record per batch of 1");
        let body: Vec<u8> = records
            .iter()
            .flat_map(|(_, r)| snap::raw::Decoder::new().decompress_vec(r).expect("snappy"))
            .collect();
        let req = proto::decode::WriteRequest::decode(body.as_slice()).expect("decode");
        let first = &req.timeseries[0];
        let labels: Vec<(&str, &str)> = first
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        // Sorted; the series' own hostname wins over the extra label of that name.
        assert_eq!(
            labels,
            [
                ("__name__", "host_temp_celsius"),
                ("device_type", "jetson_orin"),
                ("hostname", "orin-01"),
                ("instance", "orin-01:9102"),
                ("job", "edge-metrics-exporter"),
                ("site", "lab-3"),
                ("zone", "cpu"),
            ]
        );
        assert_eq!(
            (first.samples[0].value, first.samples[0].timestamp),
            (48.5, 1_795_316_215_123)
        );
        // The same collection again: nothing new to push.
        assert!(encode(&cfg(1), &snapshot, 0, &mut last).is_empty());
    }

    static UPTIME: Family = Family::gauge("edge_exporter_uptime_seconds", "Uptime", "seconds");

    #[test]
    fn every_series_carries_job_and_instance_and_keeps_its_own() {
        use prost::Message;
        let samples = vec![
            // The exporter's own: no device labels, but job and instance.
            Sample::own(&UPTIME, 5.0),
            // A series with its own job keeps it.
            Sample::with_id("host_temp_cpu_celsius", &TEMP, 48.5).label("job", "mine"),
        ];
        let device = DeviceLabels {
            device_type: "linux".into(),
            hostname: "pi-07".into(),
        };
        let snapshot = Snapshot::new(samples, MetricStyle::Labeled, device);
        let mut cfg = cfg(100);
        cfg.labels.clear();
        cfg.instance = Some("pi-07.lab:9102".into());
        let records = encode(&cfg, &snapshot, 1, &mut HashMap::new());
        let body = snap::raw::Decoder::new()
            .decompress_vec(&records[0].1)
            .expect("snappy");
        let req = proto::decode::WriteRequest::decode(body.as_slice()).expect("decode");
        let series: Vec<Vec<(String, String)>> = req
            .timeseries
            .iter()
            .map(|t| {
                t.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect()
            })
            .collect();
        let own = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(
            series.contains(&own(&[
                ("__name__", "edge_exporter_uptime_seconds"),
                ("instance", "pi-07.lab:9102"),
                ("job", "edge-metrics-exporter"),
            ])),
            "{series:?}"
        );
        assert!(
            series.contains(&own(&[
                ("__name__", "host_temp_celsius"),
                ("device_type", "linux"),
                ("hostname", "pi-07"),
                ("instance", "pi-07.lab:9102"),
                ("job", "mine"),
            ])),
            "{series:?}"
        );
    }

    #[test]
    fn jitter_stays_near() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(4));
            assert!(
                j >= Duration::from_secs(3) && j <= Duration::from_secs(5),
                "{j:?}"
            );
        }
    }
}
