//! `/metrics` against the x86-laptop fixture tree: every value, both styles, both
//! formats, promtool, and expiry of samples a stuck collector no longer refreshes.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Every flat sample the fixture yields, with its exact value.
const EXPECTED_FLAT: &[(&str, f64)] = &[
    ("host_cpu_active_cores", 3.0),
    ("host_cpu_core0_status", 1.0),
    ("host_cpu_core1_status", 1.0),
    ("host_cpu_core2_status", 1.0),
    ("host_cpu_core3_status", 0.0),
    ("host_cpu_core0_freq_mhz", 1800.0),
    ("host_cpu_core1_freq_mhz", 2400.0),
    ("host_cpu_core2_freq_mhz", 800.0),
    ("host_cpu_core0_usage_percent", 30.0),
    ("host_cpu_core1_usage_percent", 60.0),
    ("host_cpu_core2_usage_percent", 10.0),
    ("host_ram_total_mb", 7812.5),
    ("host_ram_available_mb", 5859.375),
    ("host_ram_used_mb", 1953.125),
    ("host_ram_used_percent", 25.0),
    ("host_swap_total_mb", 2048.0),
    ("host_swap_used_mb", 1024.0),
    ("host_swap_cached_mb", 2.0),
    ("host_temp_acpitz_0_celsius", 45.0),
    ("host_temp_acpitz_1_celsius", 47.5),
    ("host_temp_x86_pkg_temp_celsius", 52.0),
    ("host_temp_coretemp_package_id_0_celsius", 52.0),
    ("host_temp_coretemp_temp2_celsius", 49.0),
    ("host_temp_coretemp_temp3_celsius", 50.0),
    ("host_temp_nvme_1_composite_celsius", 38.85),
    ("host_temp_nvme_2_composite_celsius", 40.85),
    ("host_voltage_ina3221_vdd_in_volts", 5.08),
    ("host_current_ina3221_vdd_in_amps", 1.234),
    ("host_power_ina3221_vdd_in_watts", 6.27),
    ("host_current_ina3221_vdd_cpu_gpu_amps", 1.0),
    ("host_fan_thinkpad_fan1_rpm", 2100.0),
    ("host_fan_thinkpad_fan2_rpm", 0.0),
    ("host_temp_it8728_temp1_celsius", 33.0),
    ("host_energy_amdgpu_energy1_joules_total", 123.456789),
    ("host_power_amdgpu_ppt_watts", 15.0),
    ("host_power_supply_ac_online", 1.0),
    ("host_power_supply_bat0_voltage_volts", 12.4),
    ("host_power_supply_bat0_current_amps", -1.5),
    ("host_power_supply_bat0_capacity_percent", 87.0),
    ("host_power_supply_bat0_temp_celsius", 29.5),
];

/// Ids the fixture must not produce: an offline core's usage and frequency, the
/// -256 °C sentinel zone, a sensor that answers nothing, attributes the driver
/// does not provide.
const ABSENT: &[&str] = &[
    "host_cpu_core3_usage_percent",
    "host_cpu_core3_freq_mhz",
    "host_temp_gpu_therm_celsius",
    "host_temp_iwlwifi_1_celsius",
    "host_power_supply_bat0_online",
    "host_power_supply_bat0_power_watts",
    "host_power_supply_ac_voltage_volts",
];

/// Fields drop in order: the ticker stops before its directory goes.
pub struct Machine {
    pub _ticker: StatTicker,
    pub root: std::path::PathBuf,
    pub _tmp: tempfile::TempDir,
}

/// A private copy of the fixture with a ticking `/proc/stat`.
pub fn machine() -> Machine {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = copy_fixture("linux/x86-laptop", tmp.path());
    let ticker = StatTicker::start(&root.join("proc"));
    Machine {
        _tmp: tmp,
        root,
        _ticker: ticker,
    }
}

/// Waits for the second collection (CPU usage needs two readings).
fn wait_complete(exporter: &Exporter) -> String {
    exporter.metrics_until("CPU usage", |b| {
        b.contains("host_cpu_core2_usage_percent{")
            || b.contains("host_cpu_usage_percent{core=\"2\"")
    })
}

#[test]
fn flat_values_match_the_fixture() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    let body = wait_complete(&exporter);
    for (id, want) in EXPECTED_FLAT {
        let got = sample_value(&body, &flat(id)).unwrap_or_else(|| panic!("{id} missing:\n{body}"));
        assert_eq!(got, *want, "{id}");
    }
    let avg = sample_value(&body, &flat("host_cpu_avg_usage_percent")).expect("avg");
    assert!((avg - 100.0 / 3.0).abs() < 1e-9, "avg {avg}");
    for id in ABSENT {
        assert!(
            !body.contains(&format!("\n{id}{{")),
            "{id} should be absent:\n{body}"
        );
    }
    // A counter is typed as one; help texts carry the varying part.
    assert!(body.contains("# TYPE host_energy_amdgpu_energy1_joules_total counter\n"));
    assert!(body.contains(
        "# HELP host_cpu_core0_usage_percent CPU core usage over the last interval (core 0)\n"
    ));
    // The framework's own health samples.
    assert_eq!(
        sample_value(
            &body,
            "edge_exporter_collector_success{collector=\"linux\"}"
        ),
        Some(1.0)
    );
    assert!(
        sample_value(
            &body,
            "edge_exporter_collector_duration_seconds{collector=\"linux\"}"
        )
        .is_some()
    );
    assert!(
        sample_value(
            &body,
            "edge_exporter_collector_last_success_timestamp_seconds{collector=\"linux\"}"
        )
        .is_some()
    );
    // No NaN anywhere, deterministic order.
    assert!(!body.contains("NaN"));
    let names: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "flat output is sorted by id");
}

#[test]
fn labeled_style_groups_families() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, "metric_style: labeled\n"));
    let body = wait_complete(&exporter);
    let cases = [
        ("host_cpu_usage_percent{core=\"1\",", 60.0),
        ("host_cpu_frequency_hertz{core=\"0\",", 1.8e9),
        ("host_cpu_online{core=\"3\",", 0.0),
        ("host_temp_celsius{zone=\"acpitz_1\",", 47.5),
        (
            "host_hwmon_temp_celsius{chip=\"nvme_2\",sensor=\"composite\",",
            40.85,
        ),
        (
            "host_hwmon_power_watts{chip=\"ina3221\",sensor=\"vdd_in\",",
            6.27,
        ),
        (
            "host_hwmon_energy_joules_total{chip=\"amdgpu\",sensor=\"energy1\",",
            123.456789,
        ),
        ("host_power_supply_voltage_volts{supply=\"bat0\",", 12.4),
        ("host_memory_used_bytes{", 2_048_000_000.0),
        ("host_swap_cached_bytes{", 2_097_152.0),
    ];
    for (prefix, want) in cases {
        let series = format!("{prefix}{DEVICE}}}");
        assert_eq!(
            sample_value(&body, &series),
            Some(want),
            "{series}:\n{body}"
        );
    }
    // One HELP/TYPE per family.
    assert_eq!(
        body.matches("# TYPE host_cpu_usage_percent gauge").count(),
        1
    );
    assert!(!body.contains("host_cpu_core0_usage_percent"));
}

#[test]
fn openmetrics_when_asked() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    wait_complete(&exporter);
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let r = get(
        &format!("{}/metrics", exporter.metrics_url),
        &[("Accept", prometheus_accept)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(r.body.ends_with("# EOF\n"));
    assert!(
        r.body
            .contains("# TYPE host_energy_amdgpu_energy1_joules counter\n")
    );
    assert!(
        r.body
            .contains("# UNIT host_energy_amdgpu_energy1_joules joules\n")
    );
    assert!(
        r.body
            .contains("\nhost_energy_amdgpu_energy1_joules_total{")
    );
    let plain = get(&format!("{}/metrics", exporter.metrics_url), &[]);
    assert_eq!(
        plain.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!plain.body.contains("# EOF"));
}

#[test]
fn promtool_accepts_both_styles() {
    let Some(promtool) = peer("promtool") else {
        return;
    };
    for style in ["flat", "labeled"] {
        let m = machine();
        let exporter = Exporter::start(&fixture_config(
            &m.root,
            &format!("metric_style: {style}\n"),
        ));
        let body = wait_complete(&exporter);
        let (status, stdout, stderr) =
            run_with_stdin(&promtool, &["check", "metrics"], body.as_bytes());
        let report = format!("{stdout}{stderr}");
        match style {
            "labeled" => assert!(
                status.success() && report.trim().is_empty(),
                "labeled: {report}"
            ),
            _ => {
                // Exit 3 is "lint problems"; 1 would be a parse error.
                assert!(matches!(status.code(), Some(0 | 3)), "flat: {report}");
                for line in report.lines() {
                    let spec_unit = line
                        .ends_with("metric names should not contain abbreviated units")
                        && line
                            .split_whitespace()
                            .next()
                            .is_some_and(|id| id.ends_with("_mb") || id.ends_with("_kb"));
                    assert!(spec_unit, "flat: unexpected promtool finding: {line}");
                }
            }
        }
    }
}

/// The OpenMetrics output, both styles, read by a strict parser: the one in
/// Debian's python3-prometheus-client (it rejects blank lines, a missing `# EOF`,
/// a bad `_total`, ...).
#[test]
fn strict_openmetrics_parser_accepts_both_styles() {
    let python = std::path::Path::new("/usr/bin/python3");
    let has_client = python.is_file()
        && Command::new(python)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_client {
        assert!(
            !in_ci(),
            "python3-prometheus-client is required under CI=true"
        );
        eprintln!("SKIPPED: python3-prometheus-client not installed");
        return;
    }
    let script = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
families = list(text_string_to_metric_families(sys.stdin.read()))\n\
print(sum(len(f.samples) for f in families))\n";
    for style in ["flat", "labeled"] {
        let m = machine();
        let exporter = Exporter::start(&fixture_config(
            &m.root,
            &format!("metric_style: {style}\n"),
        ));
        wait_complete(&exporter);
        let r = get(
            &format!("{}/metrics", exporter.metrics_url),
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        );
        let (status, stdout, stderr) = run_with_stdin(python, &["-c", script], r.body.as_bytes());
        assert!(status.success(), "{style}: {stderr}\n{}", r.body);
        let parsed: usize = stdout.trim().parse().expect("count");
        let lines = r.body.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(parsed, lines, "{style}: every sample line parsed");
    }
}

#[test]
fn landing_page_and_unknown_paths() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    let r = get(&format!("{}/", exporter.metrics_url), &[]);
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/html"));
    assert!(r.body.contains("href=\"/metrics\""));
    assert_eq!(
        get(&format!("{}/nope", exporter.metrics_url), &[]).status,
        404
    );
    assert_eq!(
        request("DELETE", &format!("{}/metrics", exporter.metrics_url)).status,
        405
    );
}

/// A collector stuck in a read (here: `/proc/meminfo` replaced by a FIFO nobody
/// writes) stops refreshing its samples; after three intervals they are gone, the
/// collector is reported failing, and the endpoint keeps answering.
#[test]
fn samples_of_a_stuck_collector_expire() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    wait_complete(&exporter);
    let meminfo = m.root.join("proc/meminfo");
    std::fs::remove_file(&meminfo).expect("rm meminfo");
    let status = Command::new("mkfifo")
        .arg(&meminfo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let body = exporter.metrics_until("samples to expire", |b| !b.contains("host_ram_total_mb{"));
    assert!(
        !body.contains("host_cpu_active_cores{"),
        "all of the collector's samples expire"
    );
    exporter.metrics_until("the collector to be reported failing", |b| {
        sample_value(b, "edge_exporter_collector_success{collector=\"linux\"}") == Some(0.0)
    });
    let health = exporter.api_get("/health").json();
    assert_eq!(health["status"], "degraded");
    let linux = health["collectors"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["name"] == "linux")
        .expect("linux");
    assert_eq!(linux["status"], "failing");
    // Unblock the reader so the collector recovers.
    let writer = std::thread::spawn(move || {
        let _ = std::fs::write(&meminfo, "MemTotal: 1024 kB\nMemAvailable: 512 kB\n");
    });
    exporter.metrics_until("recovery", |b| {
        sample_value(b, &flat("host_ram_total_mb")) == Some(1.0)
    });
    let _ = writer.join();
    std::thread::sleep(Duration::from_millis(10));
}

/// `GET /metrics` with `headers` through the crate's client (it leaves bodies as
/// sent): status, headers, raw body.
fn raw_metrics(exporter: &Exporter, headers: &[(&str, &str)]) -> (u16, hyper::HeaderMap, Vec<u8>) {
    let headers: Vec<(hyper::header::HeaderName, String)> = headers
        .iter()
        .map(|(k, v)| (k.parse().expect("name"), (*v).to_owned()))
        .collect();
    let r = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(edge_metrics_exporter::net::client::Client::new(None).get(
            &format!("{}/metrics", exporter.metrics_url),
            &headers,
            Duration::from_secs(5),
            16 << 20,
        ))
        .expect("answer");
    (r.status, r.headers, r.body.to_vec())
}

fn gunzip(data: &[u8]) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut text)
        .expect("a gzip stream of UTF-8");
    text
}

#[test]
fn gzip_when_the_scraper_accepts_it_in_both_formats() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, "metric_style: labeled\n"));
    let plain = wait_complete(&exporter);
    let (status, headers, body) = raw_metrics(&exporter, &[("Accept-Encoding", "gzip")]);
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(
        headers["vary"]
            .to_str()
            .expect("vary")
            .contains("Accept-Encoding")
    );
    let text = gunzip(&body);
    assert!(
        body.len() * 4 < text.len(),
        "{} bytes compressed from {}",
        body.len(),
        text.len()
    );
    assert_eq!(text.lines().count(), plain.lines().count());
    // What came out of the gzip is what promtool accepts.
    if let Some(promtool) = peer("promtool") {
        let (status, stdout, stderr) =
            run_with_stdin(&promtool, &["check", "metrics"], text.as_bytes());
        assert!(
            status.success() && stdout.trim().is_empty(),
            "{stdout}{stderr}"
        );
    }
    // OpenMetrics, gzip'd too.
    let (_, headers, body) = raw_metrics(
        &exporter,
        &[
            ("Accept-Encoding", "gzip, deflate"),
            ("Accept", "application/openmetrics-text;version=1.0.0"),
        ],
    );
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(gunzip(&body).ends_with("# EOF\n"));
    // Not offered, or refused: identity.
    for offer in [None, Some("gzip;q=0"), Some("br")] {
        let headers: Vec<(&str, &str)> =
            offer.map(|o| ("Accept-Encoding", o)).into_iter().collect();
        let (_, h, body) = raw_metrics(&exporter, &headers);
        assert!(h.get("content-encoding").is_none(), "{offer:?}");
        assert!(String::from_utf8(body).expect("text").starts_with("# HELP"));
    }
}
