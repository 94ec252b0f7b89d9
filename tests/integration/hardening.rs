//! What an attacker or a clumsy operator can do to the daemon, each reproduced on
//! the real binary and shown to hold: impossible readings, floods of ids, trickled
//! headers, hand edits during API writes, crashes during writes.

use std::path::Path;

use serde_json::json;

use crate::shelly_hub::runtime;
use crate::shelly_sim::{SimPlug, plug_status};
use crate::support::*;

const PLUG: &str = "shellyplusplugs-a8032ab12345";

/// The lines of `body` for the series `name{...}` (any labels).
fn lines_of<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .collect()
}

fn rejected(body: &str, collector: &str) -> f64 {
    sample_value(
        body,
        &format!("edge_exporter_samples_rejected_total{{collector=\"{collector}\"}}"),
    )
    .unwrap_or(0.0)
}

/// The strict OpenMetrics parser of python3-prometheus-client, when installed
/// (required under CI): whether it reads `body`.
fn strict_parser_accepts(body: &str) -> bool {
    let python = Path::new("/usr/bin/python3");
    let has_client = python.is_file()
        && std::process::Command::new(python)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_client {
        assert!(
            !in_ci(),
            "python3-prometheus-client is required under CI=true"
        );
        return true;
    }
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\nlist(text_string_to_metric_families(sys.stdin.read()))\n";
    let (status, _, stderr) = run_with_stdin(python, &["-c", script], body.as_bytes());
    assert!(status.success(), "{stderr}");
    status.success()
}

/// A plug whose energy total is negative: the counter is not exported (and the
/// OpenMetrics page stays valid) until the plug reports a real total; the rest of
/// its readings are.
#[test]
fn a_negative_plug_energy_never_reaches_metrics() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = rt.block_on(SimPlug::connect(
        &format!("{}/fixture-host", server.ws_url),
        PLUG,
        plug_status(45.3, 220.5, 0.205, -5.0),
    ));
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(
        &m.root,
        &format!("shelly:\n  server_url: {}\n", server.api_url),
    ));
    let body = exporter.metrics_until("the plug's power and the rejection", |b| {
        b.contains("power_total_watts{") && rejected(b, "shelly") >= 1.0
    });
    assert!(
        lines_of(&body, "power_energy_joules_total").is_empty(),
        "{body}"
    );
    let om = get(
        &format!("{}/metrics", exporter.metrics_url),
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert!(strict_parser_accepts(&om.body));

    plug.update("switch:0", json!({"aenergy": {"total": 3.0}}));
    let body = exporter.metrics_until("the real total", |b| {
        !lines_of(b, "power_energy_joules_total").is_empty()
    });
    assert_eq!(
        sample_value(
            &body,
            &format!("power_energy_joules_total{{plug=\"{PLUG}\",{DEVICE}}}")
        ),
        Some(3.0 * 3600.0)
    );
}

/// tegrastats printing impossible figures (negative memory, a core at 150 %, a
/// sensor at 300 °C, a rail drawing negative power): those are dropped and counted,
/// the plausible ones of the same line are served.
#[test]
fn impossible_tegrastats_figures_never_reach_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recording = tmp.path().join("bad.log");
    std::fs::write(
        &recording,
        "RAM -5/-10MB (lfb 1x1MB) CPU [150%@1000,20%@1000] GR3D_FREQ 0%@[305] cpu@300C gpu@40.5C VDD_IN -5000mW/5000mW VDD_GPU 1200mW/1100mW\n",
    )
    .expect("write");
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(
        &fixture_config(
            &m.root,
            &format!("tegrastats:\n  replay: {}\n", recording.display()),
        )
        .replace("device_type: linux", "device_type: jetson_orin"),
    );
    let body = exporter.metrics_until("the plausible figures", |b| {
        b.contains("jetson_temp_gpu_celsius{") && rejected(b, "tegrastats") >= 1.0
    });
    let dt = "device_type=\"jetson_orin\",hostname=\"fixture-host\"";
    for (name, value) in [
        ("jetson_temp_gpu_celsius", 40.5),
        ("jetson_cpu_core1_usage_percent", 20.0),
        ("jetson_power_vdd_gpu_watts", 1.2),
        ("jetson_power_vdd_in_avg_watts", 5.0),
        // Derived figures leave the impossible ones out.
        ("jetson_cpu_avg_usage_percent", 20.0),
    ] {
        assert_eq!(
            sample_value(&body, &format!("{name}{{{dt}}}")),
            Some(value),
            "{name}"
        );
    }
    for name in [
        "jetson_ram_used_mb",
        "jetson_ram_total_mb",
        "jetson_ram_used_percent",
        "jetson_cpu_core0_usage_percent",
        "jetson_temp_cpu_celsius",
        "jetson_power_vdd_in_watts",
        "jetson_power_input_watts",
    ] {
        assert!(
            lines_of(&body, name).is_empty(),
            "{name} was served:\n{body}"
        );
    }
    // RAM used and total, core 0, the cpu sensor, VDD_IN and the input total.
    assert!(rejected(&body, "tegrastats") >= 6.0, "{body}");
}
