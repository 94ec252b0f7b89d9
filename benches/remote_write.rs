//! remote_write costs: encoding a snapshot (labels, protobuf, snappy), appending it
//! to the on-disk buffer (synced), bytes on disk per buffered sample; then the push
//! throughput of the real binary draining a full buffer into a real receiver
//! (VictoriaMetrics from Debian, or any URL given).
//!
//! `cargo bench --bench remote_write -- [SAMPLES_PER_SNAPSHOT] [BUFFERED_SAMPLES]`
//! (defaults 1000 and 1,000,000). `RW_RECEIVER=http://host:port/api/v1/write`
//! uses that receiver instead of starting VictoriaMetrics. Prints figures only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_metrics_exporter::config::{RemoteAuth, RemoteWriteConfig};
use edge_metrics_exporter::exposition::{DeviceLabels, MetricStyle};
use edge_metrics_exporter::remote_write::{buffer::Buffer, encode};
use edge_metrics_exporter::sample::{Family, Sample};
use edge_metrics_exporter::snapshot::Snapshot;

static POWER: Family = Family::gauge("jetson_power_watts", "Rail power", "watts");
static TEMP: Family = Family::gauge("jetson_temp_celsius", "Temperature", "celsius");
static CPU: Family = Family::gauge("jetson_cpu_usage_percent", "CPU core usage", "percent");

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A snapshot shaped like a Jetson's: rails, temperatures, cores.
fn snapshot(n: usize, at: SystemTime) -> Snapshot {
    let samples = (0..n)
        .map(|i| {
            let (family, id, label) = match i % 3 {
                0 => (
                    &POWER,
                    format!("jetson_power_rail{i}_watts"),
                    ("rail", format!("vdd_rail_{i}")),
                ),
                1 => (
                    &TEMP,
                    format!("jetson_temp_sensor{i}_celsius"),
                    ("sensor", format!("sensor_{i}")),
                ),
                _ => (
                    &CPU,
                    format!("jetson_cpu_core{i}_usage_percent"),
                    ("core", i.to_string()),
                ),
            };
            Sample::with_id(id, family, (i as f64) * 0.731 + 3.25)
                .label(label.0, label.1)
                .observed(at)
        })
        .collect();
    Snapshot::new(
        samples,
        MetricStyle::Labeled,
        DeviceLabels {
            device_type: "jetson_orin".into(),
            hostname: "orin-bench-01".into(),
        },
    )
}

fn config(url: &str) -> RemoteWriteConfig {
    RemoteWriteConfig {
        url: url.into(),
        interval: Duration::from_secs(15),
        batch_size: 2000,
        timeout: Duration::from_secs(10),
        auth: RemoteAuth::None,
        labels: vec![("site".into(), "bench".into())],
        job: edge_metrics_exporter::config::DEFAULT_JOB.into(),
        instance: None,
        port: 9102,
        tls: Default::default(),
        buffer_path: None,
        buffer_max_bytes: 4 << 30,
    }
}

fn main() {
    let per_snapshot = arg(0, 1000) as usize;
    let buffered = arg(1, 1_000_000);
    let cfg = config("http://unused/api/v1/write");

    // 1. Encoding: snapshot → compressed records.
    let rounds = 200;
    let snapshots: Vec<Snapshot> = (0..rounds)
        .map(|r| {
            snapshot(
                per_snapshot,
                UNIX_EPOCH + Duration::from_secs(1_795_000_000 + r),
            )
        })
        .collect();
    let mut last = HashMap::new();
    let started = Instant::now();
    let mut records = Vec::new();
    for s in &snapshots {
        records.push(encode(&cfg, s, 0, &mut last));
    }
    let encode_time = started.elapsed();
    let samples = (rounds as usize * per_snapshot) as f64;
    println!(
        "encode: {per_snapshot} samples per snapshot: {:.0} ns per sample ({:.2} M samples/s, one core)",
        encode_time.as_nanos() as f64 / samples,
        samples / encode_time.as_secs_f64() / 1e6
    );

    // 2. The buffer: appends synced to disk, bytes per sample.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut buffer = Buffer::open(dir.path(), 4 << 30).expect("buffer");
    let started = Instant::now();
    for r in &records {
        buffer.append(r).expect("append");
    }
    let append_time = started.elapsed();
    println!(
        "buffer: {} appends (one per snapshot, each synced): {:.2} ms each; {:.1} bytes on disk per sample",
        records.len(),
        append_time.as_secs_f64() * 1000.0 / records.len() as f64,
        buffer.bytes() as f64 / buffer.pending() as f64
    );
    drop(buffer);

    // 3. Push throughput: the binary drains a full buffer into a real receiver.
    let fill_dir = tempfile::tempdir().expect("tempdir");
    let buffer_dir = fill_dir.path().join("buffer");
    let mut buffer = Buffer::open(&buffer_dir, 4 << 30).expect("buffer");
    let mut last = HashMap::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - buffered / per_snapshot as u64 * 10;
    let mut n = 0u64;
    let mut round = 0;
    while n < buffered {
        // Ten seconds apart, in the past: an outage's worth of collections.
        let s = snapshot(
            per_snapshot,
            UNIX_EPOCH + Duration::from_secs(now + round * 10),
        );
        buffer
            .append(&encode(&cfg, &s, 0, &mut last))
            .expect("append");
        n += per_snapshot as u64;
        round += 1;
    }
    println!(
        "filled: {} samples, {:.1} MB on disk",
        buffer.pending(),
        buffer.bytes() as f64 / 1e6
    );
    drop(buffer);
    let (receiver_url, mut vm) = match std::env::var("RW_RECEIVER") {
        Ok(url) => (url, None),
        Err(_) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("victoria-metrics")
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!(
                    "-storageDataPath={}",
                    fill_dir.path().join("vm").display()
                ))
                .arg("-retentionPeriod=100y")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("victoria-metrics (apt-get install victoria-metrics), or set RW_RECEIVER");
            std::thread::sleep(Duration::from_secs(2));
            (format!("http://127.0.0.1:{port}/api/v1/write"), Some(child))
        }
    };
    let config_path = fill_dir.path().join("config.yaml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config_path,
        format!(
            "interval: 0.2\nport: {port}\nreload_port: 0\nremote_write:\n  url: {receiver_url}\n  interval: 60\n  batch_size: 2000\n  buffer:\n    path: {}\n    max_size_mb: 4096\n",
            buffer_dir.display()
        ),
    )
    .unwrap();
    let binary = env!("CARGO_BIN_EXE_edge-metrics-exporter");
    let mut exporter = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .env("CONFIG_SERVER_URL", "")
        .env("EDGE_EXPORTER_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = exporter.id();
    let started = Instant::now();
    let gauge = |name: &str| -> Option<f64> {
        let body = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    };
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let left = gauge("edge_exporter_remote_write_buffer_samples");
        if left == Some(0.0) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            println!("not drained after 10 minutes: {left:?} left");
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid);
    println!(
        "push: {buffered} samples to {receiver_url} in {elapsed:.1} s: {:.0} samples/s; exporter CPU {cpu:.2} s = {:.2} µs per sample",
        buffered as f64 / elapsed,
        cpu * 1e6 / buffered as f64
    );
    let _ = exporter.kill();
    let _ = exporter.wait();
    if let Some(vm) = vm.as_mut() {
        let _ = vm.kill();
        let _ = vm.wait();
    }
}
