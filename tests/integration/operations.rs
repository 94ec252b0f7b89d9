//! Operating the daemon: self-telemetry on every server (checked by promtool),
//! the probes, the health log, the `health` command and log settings from the
//! config.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn promtool_clean(body: &str, what: &str) {
    let Some(promtool) = peer("promtool") else {
        return;
    };
    let (status, out, err) = run_with_stdin(&promtool, &["check", "metrics"], body.as_bytes());
    // Exit 3 is lint findings; the flat style keeps the spec's `_mb` ids.
    let findings: Vec<&str> = out
        .lines()
        .chain(err.lines())
        .filter(|l| !l.contains("abbreviated units"))
        .collect();
    assert!(
        matches!(status.code(), Some(0 | 3)) && findings.is_empty(),
        "{what}: {out}{err}"
    );
}

#[test]
fn the_exporter_reports_on_itself() {
    let root = fixtures().join("linux/x86-laptop");
    let exporter = Exporter::start(&fixture_config(&root, "metrics_token: m-secret\n"));
    let auth = [("Authorization", "Bearer m-secret")];
    for _ in 0..3 {
        assert_eq!(exporter.api_get("/health").status, 200);
    }
    assert_eq!(exporter.api_get("/nope").status, 404);
    // CPU time is counted in 10 ms ticks: a young, mostly idle process may have
    // none yet, so wait for the first one too.
    let body = eventually(
        "requests and CPU time counted",
        Duration::from_secs(10),
        || {
            let body = get(&format!("{}/metrics", exporter.metrics_url), &auth).body;
            let cpu = sample_value(&body, "process_cpu_seconds_total").unwrap_or(0.0);
            // The counts are those of the last snapshot: wait for one taken after
            // all three requests.
            let health = sample_value(
                &body,
                "edge_exporter_http_requests_total{listener=\"api\",route=\"/health\",code=\"200\"}",
            )
            .unwrap_or(0.0);
            let other = sample_value(
                &body,
                "edge_exporter_http_requests_total{listener=\"api\",route=\"other\",code=\"404\"}",
            );
            (health >= 3.0 && other.is_some() && cpu > 0.0).then_some(body)
        },
    );
    let value = |series: &str| sample_value(&body, series);
    assert!(
        value("edge_exporter_http_requests_total{listener=\"api\",route=\"/health\",code=\"200\"}")
            .is_some_and(|n| n >= 3.0),
        "{body}"
    );
    assert_eq!(
        value("edge_exporter_http_requests_total{listener=\"api\",route=\"other\",code=\"404\"}"),
        Some(1.0),
        "unmatched paths make no new series"
    );
    assert!(body.contains("# TYPE edge_exporter_http_request_duration_seconds histogram"));
    assert!(body.contains(
        "edge_exporter_http_request_duration_seconds_bucket{listener=\"api\",route=\"/health\",le=\"+Inf\"}"
    ));
    for gauge in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_threads",
        "edge_exporter_uptime_seconds",
    ] {
        assert!(value(gauge).is_some_and(|v| v > 0.0), "{gauge}");
    }
    assert!(
        value("edge_exporter_samples_collected_total{collector=\"linux\"}")
            .is_some_and(|v| v > 0.0)
    );
    assert_eq!(
        value("edge_exporter_collector_errors_total{collector=\"linux\"}"),
        Some(0.0)
    );
    assert_eq!(
        value("edge_exporter_config_reloads_total{outcome=\"success\"}"),
        Some(0.0)
    );
    assert_eq!(exporter.api_post("/reload", "").status, 200);
    let body = eventually("the reload counted", Duration::from_secs(10), || {
        let body = get(&format!("{}/metrics", exporter.metrics_url), &auth).body;
        (sample_value(
            &body,
            "edge_exporter_config_reloads_total{outcome=\"success\"}",
        ) == Some(1.0))
        .then_some(body)
    });
    promtool_clean(&body, "exporter");

    // Probes answer without the metrics token; the API's need the API's (none here).
    let r = get(&format!("{}/healthz", exporter.metrics_url), &[]);
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"status": "ok"}))
    );
    let r = get(&format!("{}/ready", exporter.metrics_url), &[]);
    assert_eq!(r.status, 200);
    let ready = r.json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["collectors"], "ok");
    assert_eq!(ready["checks"]["config_sync"], "disabled");
    assert_eq!(ready["checks"]["plug_hub"], "disabled");
    let status = exporter.api_get("/status").json();
    assert_eq!(status["mode"], "exporter");
    assert_eq!(status["collectors"]["linux"], "ok");
    assert_eq!(status["config"]["source"], "local");
    assert!(status["uptime"].as_str().is_some_and(|u| u.ends_with('s')));
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn the_servers_report_on_themselves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    assert_eq!(server.get("/devices").status, 200);
    let body = server.get("/metrics").body;
    assert!(
        body.contains("edge_exporter_config_server_devices 0"),
        "{body}"
    );
    assert!(body.contains("route=\"/devices\""), "{body}");
    let info = format!(
        "edge_exporter_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.contains(&info), "{body}");
    promtool_clean(&body, "config-server");

    let hub = ShellyServer::start(None);
    assert_eq!(hub.get("/devices").status, 200);
    let body = hub.get("/telemetry").body;
    assert!(
        body.contains("edge_exporter_shelly_plugs_connected 0"),
        "{body}"
    );
    assert!(body.contains("listener=\"shelly_api\""), "{body}");
    assert!(body.contains(&info), "{body}");
    promtool_clean(&body, "shelly-server");
}

#[test]
fn health_log_lines() {
    let root = fixtures().join("linux/x86-laptop");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("health.log");
    let config = fixture_config(
        &root,
        &format!(
            "telemetry_log: {}\ntelemetry_interval: 0.2\n",
            log.display()
        ),
    );
    let exporter = Exporter::start(&config);
    let lines = eventually("three lines", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (lines.len() >= 3).then_some(lines)
    });
    let last = &lines[lines.len() - 1];
    for key in [
        "time",
        "uptime_seconds",
        "requests",
        "errors",
        "samples_collected",
        "connected_clients",
    ] {
        assert!(last.get(key).is_some(), "{key}: {last}");
    }
    assert_eq!(last["status"], "healthy");
    assert!(last["samples_collected"].as_u64().is_some_and(|n| n > 0));
    drop(exporter);

    // The environment wins over the config.
    let other = dir.path().join("env.log");
    let mut options = Options::new(&config);
    options.env = vec![
        ("EDGE_EXPORTER_TELEMETRY_LOG", other.display().to_string()),
        ("EDGE_EXPORTER_TELEMETRY_INTERVAL", "0.2".to_owned()),
    ];
    let _exporter = Exporter::start_with(options);
    eventually(
        "a line in the environment's file",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&other)
                .ok()
                .filter(|t| !t.is_empty())
        },
    );
}

fn health_command(url: &str, json: bool) -> (i32, String) {
    let mut args = vec!["health", "--url", url];
    if json {
        args.push("--json");
    }
    let out = Command::new(BIN)
        .args(&args)
        .env_remove("EDGE_EXPORTER_API_TOKEN")
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn health_command_exit_codes() {
    let root = fixtures().join("linux/x86-laptop");
    let healthy = Exporter::start(&fixture_config(&root, ""));
    eventually("collected", Duration::from_secs(10), || {
        (healthy.api_get("/health").json()["status"] == "healthy").then_some(())
    });
    let (code, out) = health_command(&healthy.api_url, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": healthy") && out.contains("linux"), "{out}");
    let (code, out) = health_command(&healthy.api_url, true);
    assert_eq!(code, 0, "{out}");
    let parsed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(parsed["status"], "healthy");

    // RAPL asked for on a machine without it: no data, degraded.
    let degraded = Exporter::start(&fixture_config(&root, "rapl:\n  enabled: true\n"));
    eventually("degraded", Duration::from_secs(10), || {
        (degraded.api_get("/health").json()["status"] == "degraded").then_some(())
    });
    let (code, out) = health_command(&degraded.api_url, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no_data") && out.contains("rapl"), "{out}");

    let (code, out) = health_command("http://127.0.0.1:1", false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unreachable"), "{out}");
}

#[test]
fn log_format_from_the_config() {
    let root = fixtures().join("linux/x86-laptop");
    let exporter = Exporter::start(&fixture_config(
        &root,
        "log_format: json\nlog_level: debug\n",
    ));
    let log = exporter.log_text();
    let first = log.lines().next().expect("a line");
    let parsed: Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(
        parsed["level"].is_string() && parsed["timestamp"].is_string(),
        "{parsed}"
    );
    let bad = fixture_config(&root, "log_level: \"[[\"\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, bad).expect("write");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_level"));
}

/// Reads sd_notify datagrams until `until` is among them (or 10 s pass).
fn notifications(socket: &std::os::unix::net::UnixDatagram, until: &str) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline && !seen.iter().any(|m: &String| m.contains(until)) {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once serving,
/// WATCHDOG=1 at half the watchdog period, STOPPING=1 on SIGTERM, for each of
/// the three servers.
#[test]
fn every_server_speaks_the_systemd_notify_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    let env = vec![
        ("NOTIFY_SOCKET", path.display().to_string()),
        ("WATCHDOG_USEC", "200000".to_owned()),
    ];
    let check = |what: &str, seen: &[String]| {
        let ready = seen.iter().position(|m| m.starts_with("READY=1\nSTATUS="));
        let pings = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
        assert!(ready.is_some(), "{what}: no READY=1 in {seen:?}");
        assert!(pings >= 3, "{what}: {pings} watchdog pings in {seen:?}");
        assert_eq!(
            seen.last().map(String::as_str),
            Some("STOPPING=1"),
            "{what}"
        );
    };

    let root = fixtures().join("linux/x86-laptop");
    let mut options = Options::new("");
    let config = fixture_config(&root, "");
    options.config = &config;
    options.env = env.clone();
    let exporter = Exporter::start_with(options);
    let mut seen = notifications(&socket, "READY=1");
    assert!(seen[0].contains("serving metrics on port"), "{seen:?}");
    std::thread::sleep(Duration::from_millis(800));
    let pid = exporter.pid();
    let (status, _) = exporter.stop();
    assert!(status.success());
    seen.extend(notifications(&socket, "STOPPING=1"));
    check(&format!("serve (pid {pid})"), &seen);

    // SIGTERM, then the exit status of each server.
    let stop = |what: &str, child: &mut std::process::Child| {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = wait_timeout(child, Duration::from_secs(10)).expect("stopped");
        assert!(status.success(), "{what}: {status}");
    };
    let mut hub = ShellyServer::start_with(None, &env);
    let mut seen = notifications(&socket, "READY=1");
    std::thread::sleep(Duration::from_millis(800));
    stop("shelly-server", &mut hub.child);
    seen.extend(notifications(&socket, "STOPPING=1"));
    check("shelly-server", &seen);

    let mut server = ConfigServer::start_with(&dir.path().join("configs.db"), 0, None, &env);
    let mut seen = notifications(&socket, "READY=1");
    std::thread::sleep(Duration::from_millis(800));
    stop("config-server", &mut server.child);
    seen.extend(notifications(&socket, "STOPPING=1"));
    check("config-server", &seen);
}
