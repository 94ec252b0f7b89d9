//! The tegrastats collector against a fake `tegrastats`: a script that prints
//! lines, exits, hangs, prints garbage and huge lines, or ignores SIGTERM. The
//! exporter keeps serving, drops stale samples, restarts the child, and leaves no
//! zombie and no orphan.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

const LINE: &str = "RAM 1000/4000MB (lfb 10x4MB) CPU [10%@1000,20%@1000] GR3D_FREQ 50%@[600] tj@45.5C VDD_IN 5000mW/5000mW";

const SCRIPT: &str = r#"#!/bin/bash
# fake tegrastats: --interval MS MODE PIDFILE
mode=$3
echo $$ >> "$4"
line='RAM 1000/4000MB (lfb 10x4MB) CPU [10%@1000,20%@1000] GR3D_FREQ 50%@[600] tj@45.5C VDD_IN 5000mW/5000mW'
case $mode in
  normal) while true; do echo "$line"; sleep 0.1; done ;;
  exit) echo "$line"; echo "$line"; exit 3 ;;
  hang) echo "$line"; exec sleep 1000 ;;
  garbage)
    printf '\x01\x02 junk ###\n'
    head -c 100000 /dev/zero | tr '\0' 'A'; echo
    printf '\xff\xfe\n'
    while true; do echo "$line"; echo "WHAT 1/2/3/4/5"; sleep 0.1; done ;;
  ignore-term) trap '' TERM; while true; do echo "$line"; sleep 0.1; done ;;
esac
"#;

struct Fake {
    _dir: tempfile::TempDir,
    script: PathBuf,
    pidfile: PathBuf,
}

fn fake() -> Fake {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("tegrastats");
    std::fs::write(&script, SCRIPT).expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pidfile = dir.path().join("pids");
    Fake {
        script,
        pidfile,
        _dir: dir,
    }
}

fn config(root: &Path, fake: &Fake, mode: &str) -> String {
    fixture_config(
        root,
        &format!(
            "tegrastats:\n  command: {}\n  args: [{mode}, {}]\n",
            fake.script.display(),
            fake.pidfile.display()
        ),
    )
    .replace("device_type: linux", "device_type: jetson_nano")
}

fn pids(fake: &Fake) -> Vec<i32> {
    std::fs::read_to_string(&fake.pidfile)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Zombie children of `parent`.
fn zombies_of(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<i32>().ok()),
        );
        if state == Some("Z") && ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// The `/health` entry of one collector.
fn collector_health(exporter: &Exporter, name: &str) -> serde_json::Value {
    exporter.api_get("/health").json()["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no collector {name}"))
}

fn restarts(body: &str) -> f64 {
    sample_value(body, "edge_exporter_tegrastats_restarts_total").unwrap_or(-1.0)
}

#[test]
fn a_running_child_feeds_metrics_and_is_reaped_on_shutdown() {
    let m = crate::metrics_endpoint::machine();
    let fake = fake();
    let exporter = Exporter::start(&config(&m.root, &fake, "normal"));
    let body = exporter.metrics_until("jetson samples", |b| b.contains("jetson_ram_used_mb{"));
    let dt = "device_type=\"jetson_nano\",hostname=\"fixture-host\"";
    for (id, want) in [
        ("jetson_ram_used_mb", 1000.0),
        ("jetson_cpu_core1_usage_percent", 20.0),
        ("jetson_gpu_usage_percent", 50.0),
        ("jetson_gpu_freq0_mhz", 600.0),
        ("jetson_temp_tj_celsius", 45.5),
        ("jetson_power_vdd_in_watts", 5.0),
        ("jetson_power_input_watts", 5.0),
    ] {
        assert_eq!(
            sample_value(&body, &format!("{id}{{{dt}}}")),
            Some(want),
            "{id}"
        );
    }
    // Host metrics are served beside it.
    assert!(body.contains("host_ram_total_mb{device_type=\"jetson_nano\""));
    assert_eq!(
        sample_value(&body, "edge_exporter_tegrastats_up"),
        Some(1.0)
    );
    let health = exporter.api_get("/health").json();
    assert_eq!(health["device_type"], "jetson_nano");
    assert_eq!(health["collector"], "tegrastats");
    // One child, passed the interval in ms.
    let children = pids(&fake);
    assert_eq!(
        children.len(),
        1,
        "one long-lived child, not one per scrape"
    );
    let cmdline =
        std::fs::read_to_string(format!("/proc/{}/cmdline", children[0])).expect("cmdline");
    assert!(
        cmdline.contains("--interval\x00200\x00normal"),
        "{cmdline:?}"
    );

    let (status, _) = exporter.stop();
    assert!(status.success());
    assert!(!alive(children[0]), "the child is gone after shutdown");
}

#[test]
fn an_exiting_child_is_restarted_and_counted() {
    let m = crate::metrics_endpoint::machine();
    let fake = fake();
    let exporter = Exporter::start(&config(&m.root, &fake, "exit"));
    // Backoff 1 s, 2 s: two restarts within about 4 s.
    let body = exporter.metrics_until("two restarts", |b| restarts(b) >= 2.0);
    assert!(pids(&fake).len() >= 3);
    assert!(
        body.contains("host_ram_total_mb{"),
        "the rest keeps serving"
    );
    assert!(
        zombies_of(exporter.pid()).is_empty(),
        "every exited child was reaped"
    );
    let tegrastats = collector_health(&exporter, "tegrastats");
    if tegrastats["status"] == "failing" {
        assert!(
            tegrastats["error"]
                .as_str()
                .expect("error")
                .contains("tegrastats exited"),
            "{tegrastats}"
        );
    }
}

#[test]
fn a_silent_child_loses_its_samples_and_is_restarted() {
    let m = crate::metrics_endpoint::machine();
    let fake = fake();
    let exporter = Exporter::start(&config(&m.root, &fake, "hang"));
    exporter.metrics_until("the one line", |b| b.contains("jetson_ram_used_mb{"));
    // Three intervals (0.6 s) after the last line the samples are gone...
    let started = Instant::now();
    exporter.metrics_until("stale samples to expire", |b| {
        !b.contains("jetson_ram_used_mb{")
    });
    assert!(started.elapsed() < Duration::from_secs(3));
    // ...and after 5 s of silence the child is killed and started again.
    let first = pids(&fake)[0];
    exporter.metrics_until("a restart after silence", |b| restarts(b) >= 1.0);
    wait_for("the hung child to be gone", Duration::from_secs(5), || {
        !alive(first)
    });
    exporter.metrics_until("fresh samples", |b| b.contains("jetson_ram_used_mb{"));
    assert!(zombies_of(exporter.pid()).is_empty());
}

#[test]
fn garbage_and_huge_lines_are_counted_and_skipped() {
    let m = crate::metrics_endpoint::machine();
    let fake = fake();
    let exporter = Exporter::start(&config(&m.root, &fake, "garbage"));
    let body = exporter.metrics_until("samples after the garbage", |b| {
        b.contains("jetson_ram_used_mb{")
            && sample_value(b, "edge_exporter_tegrastats_unknown_tokens_total").unwrap_or(0.0)
                >= 4.0
    });
    // The control line, the 100 kB line and the invalid UTF-8 line.
    assert!(
        sample_value(&body, "edge_exporter_tegrastats_unreadable_lines_total").unwrap_or(0.0)
            >= 3.0,
        "{body}"
    );
    assert_eq!(
        sample_value(&body, "edge_exporter_tegrastats_up"),
        Some(1.0)
    );
    assert_eq!(restarts(&body), 0.0, "garbage is not a reason to restart");
}

#[test]
fn a_child_that_ignores_sigterm_is_killed() {
    let m = crate::metrics_endpoint::machine();
    let fake = fake();
    let exporter = Exporter::start(&config(&m.root, &fake, "ignore-term"));
    exporter.metrics_until("samples", |b| b.contains("jetson_ram_used_mb{"));
    let child = pids(&fake)[0];
    let (status, took) = exporter.stop();
    assert!(status.success());
    assert!(took < Duration::from_secs(6), "{took:?}");
    wait_for("the child to be killed", Duration::from_secs(3), || {
        !alive(child)
    });
}

#[test]
fn missing_tegrastats_is_reported_and_the_rest_keeps_serving() {
    let m = crate::metrics_endpoint::machine();
    let config = fixture_config(&m.root, "tegrastats:\n  command: /nonexistent/tegrastats\n")
        .replace("device_type: linux", "device_type: jetson_orin");
    let mut exporter = Exporter::start(&config);
    exporter.wait_log("tegrastats not found");
    let body = exporter.metrics_until("the failure", |b| {
        sample_value(
            b,
            "edge_exporter_collector_success{collector=\"tegrastats\"}",
        ) == Some(0.0)
    });
    assert!(body.contains("host_ram_total_mb{device_type=\"jetson_orin\""));
    assert!(!body.contains("jetson_ram_used_mb"));
    assert_eq!(exporter.api_get("/health").json()["status"], "degraded");
    let error = collector_health(&exporter, "tegrastats")["error"]
        .as_str()
        .map(str::to_owned)
        .expect("tegrastats error");
    assert!(error.contains("tegrastats not found"), "{error}");
}

#[test]
fn reload_to_another_device_type_stops_and_reaps_the_child() {
    let m = crate::metrics_endpoint::machine();
    let fake = fake();
    let exporter = Exporter::start(&config(&m.root, &fake, "normal"));
    exporter.metrics_until("samples", |b| b.contains("jetson_ram_used_mb{"));
    let child = pids(&fake)[0];
    exporter.edit_config(&[("device_type: jetson_nano", "device_type: linux")]);
    let r = exporter.api_post("/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("the child to stop", Duration::from_secs(5), || {
        !alive(child)
    });
    let body = exporter.metrics_until("linux labels", |b| b.contains("device_type=\"linux\""));
    assert!(!body.contains("collector=\"tegrastats\""));
    assert!(zombies_of(exporter.pid()).is_empty());
    // Replayed line check for the constant above, so it stays in sync with SCRIPT.
    assert!(SCRIPT.contains(LINE));
}
