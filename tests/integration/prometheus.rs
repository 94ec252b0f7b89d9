//! One real Prometheus for the whole test binary: it starts on first use, scrapes
//! every second, and finds targets through `file_sd` files that each test adds,
//! each with a `test` label so tests never see each other's series. It is killed
//! with the test process (PDEATHSIG from a thread that lives as long as it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

pub struct Prometheus {
    pub url: String,
    targets_dir: PathBuf,
}

static INSTANCE: OnceLock<Option<Prometheus>> = OnceLock::new();

/// The shared Prometheus, or `None` (skip) when it is not installed outside CI.
pub fn prometheus() -> Option<&'static Prometheus> {
    INSTANCE.get_or_init(start).as_ref()
}

fn start() -> Option<Prometheus> {
    let binary = peer("prometheus")?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let targets_dir = dir.join("targets");
    std::fs::create_dir_all(&targets_dir).expect("mkdir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: edge\n    file_sd_configs:\n      - files: ['{}/*.json']\n        refresh_interval: 1s\n",
            targets_dir.display()
        ),
    )
    .expect("write prometheus.yml");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (tx, rx) = std::sync::mpsc::channel();
    let log_path = dir.join("prometheus.log");
    // The spawning thread parks forever: PDEATHSIG fires when it dies, which is
    // when the test process exits.
    thread::spawn(move || {
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command.spawn().expect("spawn prometheus");
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        tx.send(()).expect("send");
        let _keep = child;
        loop {
            thread::park();
        }
    });
    rx.recv().expect("prometheus started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_ok(&format!("{url}/-/ready")).is_none() {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        thread::sleep(Duration::from_millis(100));
    }
    Some(Prometheus { url, targets_dir })
}

fn get_ok(url: &str) -> Option<String> {
    ureq::get(url)
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
}

impl Prometheus {
    /// Adds a scrape target labelled `test=<name>`.
    pub fn add_target(&self, name: &str, metrics_url: &str) {
        let target = metrics_url.trim_start_matches("http://");
        let body =
            format!("[{{\"targets\": [\"{target}\"], \"labels\": {{\"test\": \"{name}\"}}}}]\n");
        let tmp = self.targets_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).expect("write target");
        std::fs::rename(&tmp, self.targets_dir.join(format!("{name}.json")))
            .expect("rename target");
    }

    /// [`Prometheus::add_target`] for a page at another path than `/metrics`.
    pub fn add_target_path(&self, name: &str, base_url: &str, path: &str) {
        let target = base_url.trim_start_matches("http://");
        let body = format!(
            "[{{\"targets\": [\"{target}\"], \"labels\": {{\"test\": \"{name}\", \"__metrics_path__\": \"{path}\"}}}}]\n"
        );
        let tmp = self.targets_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).expect("write target");
        std::fs::rename(&tmp, self.targets_dir.join(format!("{name}.json")))
            .expect("rename target");
    }

    /// Runs an instant query; the result vector.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let url = format!("{}/api/v1/query?query={}", self.url, urlencode(promql));
        let Some(body) = get_ok(&url) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until `promql` returns exactly one series; returns its value.
    pub fn wait_value(&self, promql: &str) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let result = self.query(promql);
            if result.len() == 1 {
                let value = result[0]["value"][1].as_str().expect("value string");
                return value.parse().expect("number");
            }
            assert!(
                result.len() <= 1,
                "{promql} matched several series: {result:?}"
            );
            assert!(
                Instant::now() < deadline,
                "no result for {promql} within 60 s"
            );
            thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Prometheus scrapes the exporter (flat and labeled) and the values read back
/// through its query API equal the fixture's.
#[test]
fn prometheus_scrapes_real_values() {
    let Some(prom) = prometheus() else { return };
    let m = crate::metrics_endpoint::machine();
    let flat_exporter = Exporter::start(&fixture_config(&m.root, ""));
    let labeled_exporter = Exporter::start(&fixture_config(&m.root, "metric_style: labeled\n"));
    prom.add_target("e2e_flat", &flat_exporter.metrics_url);
    prom.add_target("e2e_labeled", &labeled_exporter.metrics_url);

    let checks = [
        ("up{test=\"e2e_flat\"}", 1.0),
        ("up{test=\"e2e_labeled\"}", 1.0),
        (
            "host_ram_total_mb{test=\"e2e_flat\",hostname=\"fixture-host\",device_type=\"linux\"}",
            7812.5,
        ),
        (
            "host_temp_nvme_2_composite_celsius{test=\"e2e_flat\"}",
            40.85,
        ),
        ("host_power_ina3221_vdd_in_watts{test=\"e2e_flat\"}", 6.27),
        (
            "host_energy_amdgpu_energy1_joules_total{test=\"e2e_flat\"}",
            123.456789,
        ),
        ("host_cpu_core1_usage_percent{test=\"e2e_flat\"}", 60.0),
        (
            "host_memory_used_bytes{test=\"e2e_labeled\"}",
            2_048_000_000.0,
        ),
        (
            "host_hwmon_power_watts{test=\"e2e_labeled\",chip=\"ina3221\",sensor=\"vdd_in\"}",
            6.27,
        ),
        (
            "host_cpu_usage_percent{test=\"e2e_labeled\",core=\"2\"}",
            10.0,
        ),
        (
            "edge_exporter_collector_success{test=\"e2e_flat\",collector=\"linux\"}",
            1.0,
        ),
    ];
    for (query, want) in checks {
        assert_eq!(prom.wait_value(query), want, "{query}");
    }
}

/// The exporter replays a recording, Prometheus scrapes it, and the queried values
/// equal the recording's (JetPack 7.2 AGX Orin: three-value rails, `/max`
/// temperatures, two GPCs).
#[test]
fn prometheus_scrapes_a_replayed_recording() {
    let Some(prom) = prometheus() else { return };
    let m = crate::metrics_endpoint::machine();
    let recording =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings/agx-orin-jp7.log");
    let extra = format!("tegrastats:\n  replay: {}\n", recording.display());
    let config =
        fixture_config(&m.root, &extra).replace("device_type: linux", "device_type: jetson_orin");
    let flat_exporter = Exporter::start(&config);
    let labeled_exporter = Exporter::start(&format!("{config}metric_style: labeled\n"));
    prom.add_target("e2e_replay_flat", &flat_exporter.metrics_url);
    prom.add_target("e2e_replay_labeled", &labeled_exporter.metrics_url);
    let checks = [
        (
            "jetson_power_vdd_gpu_soc_watts{test=\"e2e_replay_flat\",device_type=\"jetson_orin\"}",
            5.139,
        ),
        (
            "jetson_power_vdd_cpu_cv_max_watts{test=\"e2e_replay_flat\"}",
            3.268,
        ),
        ("jetson_gpu_freq1_mhz{test=\"e2e_replay_flat\"}", 1300.0),
        ("jetson_gpu_usage_percent{test=\"e2e_replay_flat\"}", 12.0),
        (
            "jetson_temp_cpu_max_celsius{test=\"e2e_replay_flat\"}",
            52.968,
        ),
        (
            "jetson_cpu_core11_usage_percent{test=\"e2e_replay_flat\"}",
            27.0,
        ),
        ("jetson_ram_used_mb{test=\"e2e_replay_flat\"}", 20642.0),
        ("jetson_ape_freq_mhz{test=\"e2e_replay_flat\"}", 174.0),
        ("jetson_nvenc0_status{test=\"e2e_replay_flat\"}", 0.0),
        (
            "jetson_power_watts{test=\"e2e_replay_labeled\",rail=\"vdd_cpu_cv\"}",
            3.268,
        ),
        (
            "jetson_gpu_frequency_hertz{test=\"e2e_replay_labeled\",gpc=\"1\"}",
            1.3e9,
        ),
        (
            "jetson_memory_used_bytes{test=\"e2e_replay_labeled\"}",
            20642.0 * 1024.0 * 1024.0,
        ),
        (
            "jetson_temp_celsius{test=\"e2e_replay_labeled\",sensor=\"soc0\"}",
            49.531,
        ),
    ];
    for (query, want) in checks {
        assert_eq!(prom.wait_value(query), want, "{query}");
    }
    let input = prom.query("jetson_power_input_watts{test=\"e2e_replay_flat\"}");
    assert!(
        input.is_empty(),
        "AGX Orin has no module input rail: {input:?}"
    );
}
