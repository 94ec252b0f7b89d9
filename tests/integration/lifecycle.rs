//! The daemon's life: first start without a config, bad configs, `check-config`,
//! reload (API and SIGHUP), shutdown, and a crash in the middle of config writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::metrics_endpoint::machine;
use crate::support::*;

/// The newcomer's path: no config file at all. The starter file uses the default
/// ports, so this test needs 9101 and 9102 free (always so in CI).
#[test]
fn first_start_writes_a_starter_file_and_shows_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.yaml");
    let (status, _, stderr) = run_binary(
        &["check-config", "--config", missing.to_str().expect("utf8")],
        dir.path(),
    );
    assert_eq!(
        status.code(),
        Some(2),
        "a missing file is an error for check-config: {stderr}"
    );

    let free = ["127.0.0.1:9101", "0.0.0.0:9102"]
        .iter()
        .all(|a| std::net::TcpListener::bind(a).is_ok());
    if !free {
        assert!(!in_ci(), "ports 9101/9102 must be free in CI");
        eprintln!("SKIPPED: default ports 9101/9102 are in use on this machine");
        return;
    }
    let mut options = Options::new("");
    options.write_config = false;
    let mut exporter = Exporter::start_with(options);
    assert_eq!(exporter.metrics_url, "http://127.0.0.1:9102");
    assert_eq!(exporter.api_url, "http://127.0.0.1:9101");
    exporter.wait_log("wrote a commented starter file");
    let text = exporter.config_text();
    assert!(
        text.starts_with("# edge-metrics-exporter configuration."),
        "{text}"
    );
    // new_metrics_enabled: true in the starter, so the first run shows real data.
    exporter.metrics_until("real host metrics", |b| b.contains("host_ram_total_mb{"));
    exporter.metrics_until("discovery", |_| {
        exporter.config_text().contains("  host_ram_total_mb: true")
    });
}

#[test]
fn help_and_version_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, stdout, _) = run_binary(&["--version"], dir.path());
    assert!(status.success());
    assert_eq!(
        stdout.trim(),
        format!("edge-metrics-exporter {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
    ] {
        let (status, stdout, _) = run_binary(args, dir.path());
        assert!(status.success(), "{args:?}");
        assert!(stdout.contains("Usage:"), "{args:?}: {stdout}");
    }
    let (status, _, stderr) = run_binary(&["no-such-command"], dir.path());
    assert_eq!(status.code(), Some(2), "{stderr}");
}

#[test]
fn invalid_config_at_start_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "port: 1\ndevice_type: toaster\n",
            ":2: device_type: Unsupported device type: toaster",
        ),
        (
            "interval: 1\nmetrics:\n  a_b: maybe\n",
            ":3: metrics.a_b: invalid type",
        ),
        (
            "interval: -3\n",
            ":1: interval: must be a number of seconds",
        ),
        ("port: [1\n", ":2:"),
    ];
    for (text, want) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, text).expect("write");
        let (status, _, stderr) =
            run_binary(&["--config", path.to_str().expect("utf8")], dir.path());
        assert_eq!(status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("{}{want}", path.display())),
            "{text}: {stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            text,
            "the file is left alone"
        );

        let (status, _, stderr) = run_binary(
            &["check-config", "--config", path.to_str().expect("utf8")],
            dir.path(),
        );
        assert_eq!(status.code(), Some(2));
        assert!(stderr.contains(want), "{stderr}");
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "interval: 0.5\nmetrics:\n  a_b: true\nmystery: 1\n").expect("write");
    let (status, stdout, _) = run_binary(
        &["check-config", "--config", good.to_str().expect("utf8")],
        dir.path(),
    );
    assert!(status.success());
    assert!(
        stdout.contains("OK")
            && stdout.contains("1 listed, 1 enabled")
            && stdout.contains("mystery"),
        "{stdout}"
    );
}

#[test]
fn legacy_enabled_metrics_are_converted_and_written_back() {
    let m = machine();
    let config = fixture_config(
        &m.root,
        "enabled_metrics:\n  - host_ram_total_mb\n  - host_swap_total_mb\n",
    )
    .replace("new_metrics_enabled: true", "new_metrics_enabled: false");
    let mut exporter = Exporter::start(&config);
    exporter.wait_log("converted enabled_metrics to the metrics map");
    let text = exporter.config_text();
    assert!(!text.contains("enabled_metrics"), "{text}");
    assert!(text.starts_with("# test config\n"));
    assert!(
        text.contains("metrics:\n  host_ram_total_mb: true\n  host_swap_total_mb: true\n"),
        "{text}"
    );
    let body = exporter.metrics_until("enabled samples", |b| b.contains("host_ram_total_mb{"));
    assert!(body.contains("host_swap_total_mb{"));
    assert!(!body.contains("host_ram_used_mb{"));
}

#[test]
fn reload_applies_metrics_and_rejects_bad_files() {
    let m = machine();
    let config = fixture_config(&m.root, "metrics:\n  host_ram_total_mb: true\n");
    let mut exporter = Exporter::start(&config);
    exporter.wait_settled();

    // A valid change: disable one metric, change the port (ignored with a warning).
    exporter.edit_config(&[
        ("host_ram_total_mb: true", "host_ram_total_mb: false"),
        ("\nport: 0\n", "\nport: 1\n"),
    ]);
    let r = exporter.api_post("/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["status"], "success");
    assert_eq!(j["source"], "local");
    assert!(j["metrics_count"].as_u64().expect("count") > 1);
    assert_eq!(
        j["restarted_collectors"],
        serde_json::json!([]),
        "only metrics changed: nothing rebuilt"
    );
    exporter.metrics_until("ram disabled", |b| !b.contains("host_ram_total_mb{"));
    exporter.wait_log("Port change detected");
    assert!(exporter.log_text().contains("cannot be applied."));
    assert!(
        exporter
            .log_text()
            .contains("Please restart the service: sudo systemctl restart edge-metrics-exporter")
    );
    assert_eq!(
        get(&format!("{}/metrics", exporter.metrics_url), &[]).status,
        200,
        "still on the old port"
    );

    // Invalid files: rejected with the reason, running config and file untouched.
    for (text, message) in [
        (
            "device_type: unknown_device\n",
            "Unsupported device type: unknown_device",
        ),
        ("interval: [\n", ""),
        ("metrics:\n  host_ram_total_mb: sometimes\n", "invalid type"),
    ] {
        std::fs::write(&exporter.config_path, text).expect("write");
        let r = exporter.api_post("/reload", "");
        assert_eq!(r.status, 400, "{text}: {}", r.body);
        let j = r.json();
        let error = j["error"].as_str().expect("error");
        assert!(error.contains(message), "{error}");
        if text.starts_with("device_type") {
            assert_eq!(
                error, "Unsupported device type: unknown_device",
                "the spec's exact message"
            );
            assert_eq!(j["line"], 1);
            assert_eq!(j["field"], "device_type");
        }
        assert_eq!(exporter.config_text(), text, "file left as it is");
        assert_eq!(
            exporter.api_get("/config").json()["interval"],
            0.2,
            "running config stays"
        );
    }
    let body = exporter.metrics();
    assert!(body.contains("host_swap_total_mb{"), "still collecting");

    // A changed sysfs root rebuilds the collectors that read it.
    let other_dir = m._tmp.path().join("other");
    std::fs::create_dir(&other_dir).expect("mkdir");
    let other = copy_fixture("linux/x86-laptop", &other_dir);
    std::fs::write(
        other.join("sys/class/thermal/thermal_zone2/temp"),
        "61000\n",
    )
    .expect("write");
    let config = fixture_config(&m.root, "").replace(
        &format!("sysfs: {}", m.root.join("sys").display()),
        &format!("sysfs: {}", other.join("sys").display()),
    );
    std::fs::write(&exporter.config_path, config).expect("write");
    let r = exporter.api_post("/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    // device_info reads the same roots, so it is rebuilt too.
    assert_eq!(
        r.json()["restarted_collectors"],
        serde_json::json!(["linux", "device_info"])
    );
    exporter.metrics_until("values from the new tree", |b| {
        sample_value(b, &flat("host_temp_x86_pkg_temp_celsius")) == Some(61.0)
    });
}

#[test]
fn sighup_reloads_like_the_api() {
    let m = machine();
    let mut exporter = Exporter::start(&fixture_config(
        &m.root,
        "metrics:\n  host_swap_used_mb: true\n",
    ));
    exporter.wait_settled();
    exporter.edit_config(&[
        ("host_swap_used_mb: true", "host_swap_used_mb: false"),
        ("hostname: fixture-host", "hostname: renamed-host"),
    ]);
    exporter.signal(libc::SIGHUP);
    exporter.wait_log("configuration reloaded");
    let body = exporter.metrics_until("reloaded", |b| !b.contains("host_swap_used_mb{"));
    exporter.metrics_until("new hostname label", |b| {
        b.contains("hostname=\"renamed-host\"")
    });
    assert!(!body.contains("host_swap_used_mb"));
}

#[test]
fn sigterm_stops_quickly_and_cleanly() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    exporter.metrics_until("running", |b| b.contains("host_ram_total_mb{"));
    let (status, took) = exporter.stop();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(6), "stopped in {took:?}");
}

/// kill -9 while a client streams `/metrics/enable` requests: afterwards the file
/// parses and holds every change that was acknowledged.
#[test]
fn crash_during_writes_loses_nothing_acknowledged() {
    let m = machine();
    let ids: Vec<String> = (0..4)
        .map(|n| format!("host_cpu_core{n}_status"))
        .chain([
            "host_ram_total_mb".into(),
            "host_ram_used_mb".into(),
            "host_swap_total_mb".into(),
            "host_swap_used_mb".into(),
        ])
        .collect();
    let mut config = fixture_config(&m.root, "metrics:\n");
    for id in &ids {
        config.push_str(&format!("  {id}: false\n"));
    }
    let exporter = Exporter::start(&config);
    let url = format!("{}/metrics/enable", exporter.api_url);
    // Per id: the last acknowledged value, and a request sent but not answered
    // (it may or may not have landed when the process died).
    type Ledger = BTreeMap<String, (Option<bool>, Option<bool>)>;
    let ledger: Arc<std::sync::Mutex<Ledger>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..2 {
        let (url, ids, ledger, stop) = (url.clone(), ids.clone(), ledger.clone(), stop.clone());
        clients.push(thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Each client owns half the ids and sends one request at a time.
                let id = &ids[(n * 2 + client) % ids.len()];
                let value = (n / ids.len()) % 2 == 0;
                n += 1;
                ledger.lock().unwrap().entry(id.clone()).or_default().1 = Some(value);
                match try_post(&url, &format!("{{\"{id}\": {value}}}")) {
                    Some(r) if r.status == 200 => {
                        let mut l = ledger.lock().unwrap();
                        let entry = l.entry(id.clone()).or_default();
                        *entry = (Some(value), None);
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ledger
        .lock()
        .unwrap()
        .values()
        .filter(|(acked, _)| acked.is_some())
        .count()
        < ids.len()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the request stream made no progress"
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    exporter.signal(libc::SIGKILL);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let ledger = ledger.lock().unwrap().clone();
    let text = exporter.config_text();
    let value: yaml_serde::Value =
        yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    for (id, (acked, in_flight)) in &ledger {
        let on_disk = value["metrics"][id.as_str()].as_bool();
        let acked = acked.expect("every id was acknowledged once");
        assert!(
            on_disk == Some(acked) || (in_flight.is_some() && on_disk == *in_flight),
            "{id}: acknowledged {acked}, in flight {in_flight:?}, on disk {on_disk:?}:\n{text}"
        );
    }
}
