//! Jetson device types end to end: `auto` detection from the device tree and
//! `/etc/nv_tegra_release`, the read-only control status, and `serve --demo`.

use std::path::Path;

use crate::support::*;

const NVPMODEL: &str = "#!/bin/sh\n[ \"$1\" = \"-q\" ] || exit 3\necho 'NV Fan Mode:quiet'\necho 'NV Power Mode: MAXN'\necho 0\n";

fn jetson_config(root: &Path, nvpmodel: &Path) -> String {
    let recording = Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings/agx-orin-jp6.log");
    fixture_config(
        root,
        &format!(
            "  rootfs: {}\ntegrastats:\n  replay: {}\n  nvpmodel_command: {}\n",
            root.display(),
            recording.display(),
            nvpmodel.display()
        ),
    )
    .replace("device_type: linux", "device_type: auto")
}

#[test]
fn auto_detects_an_orin_and_reports_control_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = copy_fixture("linux/jetson-agx-orin", tmp.path());
    let nvpmodel = write_script(tmp.path(), "nvpmodel", NVPMODEL);
    let exporter = Exporter::start(&jetson_config(&root, &nvpmodel));
    let dt = "device_type=\"jetson_orin\",hostname=\"fixture-host\"";
    let body = exporter.metrics_until("control status", |b| b.contains("jetson_clocks_active{"));
    let health = exporter.api_get("/health").json();
    assert_eq!(health["device_type"], "jetson_orin");
    let names = collector_names(&health);
    assert_eq!(names, ["control", "device_info", "linux", "tegrastats"]);
    let cases = [
        (
            format!("jetson_nvpmodel_mode_info{{mode=\"MAXN\",{dt}}}"),
            1.0,
        ),
        (
            format!("jetson_nvpmodel_mode_id{{mode=\"MAXN\",{dt}}}"),
            0.0,
        ),
        (format!("jetson_clocks_active{{{dt}}}"), 1.0),
        (
            format!("jetson_fan_pwm_percent{{{dt}}}"),
            128.0 * 100.0 / 255.0,
        ),
        (format!("jetson_fan_rpm{{{dt}}}"), 2400.0),
        (
            format!("jetson_cpu_core0_governor_info{{governor=\"schedutil\",{dt}}}"),
            1.0,
        ),
        (
            format!("jetson_cpu_core3_governor_info{{governor=\"performance\",{dt}}}"),
            1.0,
        ),
        (
            format!("jetson_gpu_governor_info{{governor=\"nvhost_podgov\",{dt}}}"),
            1.0,
        ),
        (format!("jetson_gpu_railgate_enabled{{{dt}}}"), 1.0),
        (format!("host_temp_tj_thermal_celsius{{{dt}}}"), 53.0),
    ];
    for (series, want) in &cases {
        assert_eq!(sample_value(&body, series), Some(*want), "{series}\n{body}");
    }
    assert!(
        !body.contains("host_temp_cv0_thermal_celsius"),
        "-256 sentinel zone is absent"
    );
    // The replayed recording is there too.
    exporter.metrics_until("tegrastats samples", |b| {
        b.contains("jetson_power_vdd_gpu_soc_watts{")
    });

    // jetson_clocks off: one core no longer pinned.
    std::fs::write(
        root.join("sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq"),
        "729600\n",
    )
    .expect("write");
    exporter.metrics_until("jetson_clocks off", |b| {
        sample_value(b, &format!("jetson_clocks_active{{{dt}}}")) == Some(0.0)
    });
}

#[test]
fn control_status_is_absent_where_the_board_lacks_it() {
    let m = crate::metrics_endpoint::machine();
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-nvpmodel");
    // An x86 tree forced to a Jetson type: no fan, no GPU devfreq, no nvpmodel.
    let config =
        jetson_config(&m.root, &missing).replace("device_type: auto", "device_type: jetson");
    let exporter = Exporter::start(&config);
    let body = exporter.metrics_until("a control collection", |b| {
        sample_value(b, "edge_exporter_collector_success{collector=\"control\"}") == Some(1.0)
    });
    for absent in [
        "jetson_nvpmodel",
        "jetson_fan_",
        "jetson_gpu_governor",
        "jetson_gpu_railgate",
    ] {
        assert!(!body.contains(absent), "{absent} should be absent:\n{body}");
    }
    // The x86 fixture's cpufreq has no min/max files: jetson_clocks is unknown, not 0.
    assert!(!body.contains("jetson_clocks_active"));
}

#[test]
fn auto_on_a_plain_linux_box_is_linux() {
    let m = crate::metrics_endpoint::machine();
    let config = fixture_config(&m.root, "").replace("device_type: linux", "device_type: auto");
    let exporter = Exporter::start(&config);
    exporter.metrics_until("samples", |b| b.contains("host_ram_total_mb{"));
    let health = exporter.api_get("/health").json();
    assert_eq!(health["device_type"], "linux");
    let names = collector_names(&health);
    assert_eq!(names, ["device_info", "linux"]);
}

#[test]
fn demo_replays_a_shipped_recording() {
    let m = crate::metrics_endpoint::machine();
    let mut options = Options::new("");
    let config = fixture_config(&m.root, "");
    options.config = &config;
    options.args = vec!["--demo".into(), "xavier-nx-jp5".into()];
    let exporter = Exporter::start_with(options);
    let body = exporter.metrics_until("demo samples", |b| {
        b.contains("jetson_power_vdd_cpu_gpu_cv_watts{")
    });
    assert!(body.contains("device_type=\"jetson_xavier\""));
    assert!(
        body.contains("host_ram_total_mb{device_type=\"jetson_xavier\""),
        "plus the linux collector"
    );
    assert_eq!(
        exporter.api_get("/health").json()["device_type"],
        "jetson_xavier"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (status, _, stderr) = run_binary(&["serve", "--demo", "nope"], dir.path());
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("no recording named \"nope\"") && stderr.contains("agx-orin-jp6"),
        "{stderr}"
    );
}
