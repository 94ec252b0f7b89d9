//! What an attacker or a clumsy operator can do to the daemon, each reproduced on
//! the real binary and shown to hold: impossible readings, floods of ids, trickled
//! headers, hand edits during API writes, crashes during writes.

use std::path::Path;
use std::time::Duration;

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
    if let Some(parser) = strict_parser() {
        parser.check(&om.body).expect("the strict parser reads it");
    }

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

/// A person editing `config.yaml` (appending in place, and saving by rename like an
/// editor does) while API writes switch metrics: every hand edit is in the file at
/// the end, and every API answer came in time.
#[test]
fn hand_edits_during_api_writes_are_never_lost() {
    use std::io::Write as _;
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(
        &fixture_config(&m.root, "")
            .replace("new_metrics_enabled: true", "new_metrics_enabled: false"),
    );
    exporter.wait_settled();
    let path = exporter.config_path.clone();
    let api = exporter.api_url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut answered, mut stored) = (0, 0);
            let mut slowest = std::time::Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let on = answered % 2 == 0;
                let started = std::time::Instant::now();
                let r = post(
                    &format!("{api}/metrics/enable"),
                    &format!("{{\"host_ram_total_mb\": {on}}}"),
                    &[],
                );
                slowest = slowest.max(started.elapsed());
                answered += 1;
                // Under saves a few milliseconds apart a write may give up: it
                // then says so and acknowledges nothing.
                match r.status {
                    200 => stored += 1,
                    500 => assert!(r.body.contains("keeps changing"), "{}", r.body),
                    other => panic!("{other}: {}", r.body),
                }
            }
            (answered, stored, slowest)
        })
    };
    const EDITS: usize = 1000;
    for i in 0..EDITS {
        let line = format!("hand_edit_{i}: {i}\n");
        if i % 2 == 0 {
            // In place, as `echo >> config.yaml` does.
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            file.write_all(line.as_bytes()).expect("append");
        } else {
            // Read, change, write a temp file, rename it over: an editor's save.
            let mut text = std::fs::read_to_string(&path).expect("read");
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            let temp = path.with_file_name(format!(".editor-{i}.swp"));
            std::fs::write(&temp, text).expect("write");
            std::fs::rename(&temp, &path).expect("rename");
        }
        std::thread::sleep(std::time::Duration::from_millis(8));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, stored, slowest) = writer.join().expect("writer");
    let text = std::fs::read_to_string(&path).expect("read");
    let missing: Vec<usize> = (0..EDITS)
        .filter(|i| !text.contains(&format!("hand_edit_{i}: {i}\n")))
        .collect();
    eprintln!(
        "{answered} API writes ({stored} stored) during {EDITS} hand edits, slowest answer {slowest:?}"
    );
    assert!(
        stored >= 20,
        "only {stored} of {answered} API writes stored"
    );
    assert!(missing.is_empty(), "hand edits lost: {missing:?}");
    assert!(slowest < std::time::Duration::from_secs(1), "{slowest:?}");
    // The file is still a config the exporter accepts.
    assert_eq!(exporter.api_post("/reload", "").status, 200);
}

/// Our temp files beside the config and in the remote-write buffer (what a kill -9
/// during a write leaves) are gone after the next start; nothing else is touched.
/// Then rounds of kill -9 during API writes: no temp file after each restart.
#[test]
fn temp_files_of_a_crash_are_removed_at_start() {
    let m = crate::metrics_endpoint::machine();
    let config = fixture_config(
        &m.root,
        "remote_write:\n  url: http://127.0.0.1:9/api/v1/write\n  interval: 0.5\n",
    );
    let mut exporter = Exporter::start(&config);
    exporter.wait_settled();
    let dir = exporter.config_path.parent().expect("dir").to_owned();
    let buffer = dir.join("remote-write-buffer");
    let planted = [
        dir.join(".config.yaml.Xa1b2c.tmp"),
        dir.join(".config-Qz9y8x.tmp"),
        dir.join(".config.yaml.sync.json.Kk3j2h.tmp"),
        buffer.join(".cursor.Pp0o9i.tmp"),
    ];
    let kept = [
        dir.join("notes.tmp"),
        dir.join(".vimrc.tmp"),
        dir.join(".config.yaml.swp"),
    ];
    for path in planted.iter().chain(&kept) {
        std::fs::write(path, "x").expect("plant");
    }
    exporter.respawn(Options::new(&config));
    exporter.wait_log("removed temp files an interrupted write left");
    // The buffer is opened with remote write, a moment after the listeners.
    eventually(
        "the buffer's leftover removed",
        Duration::from_secs(10),
        || planted.iter().all(|p| !p.exists()).then_some(()),
    );
    for path in &kept {
        assert!(path.exists(), "{} was removed", path.display());
    }

    let ours = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("list")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| {
                n.ends_with(".tmp") && (n.starts_with(".config") || n.starts_with(".cursor"))
            })
            .collect()
    };
    for round in 0..8 {
        let api = exporter.api_url.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..40 {
                let body = format!("{{\"host_ram_total_mb\": {}}}", i % 2 == 0);
                if try_post(&format!("{api}/metrics/enable"), &body).is_none() {
                    return; // killed
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20 + 15 * round));
        exporter.respawn(Options::new(&config));
        writer.join().expect("writer");
        // The start before any write of ours removed what the kill left.
        eventually("no temp file of ours", Duration::from_secs(10), || {
            (ours(&dir).is_empty() && ours(&buffer).is_empty()).then_some(())
        });
    }
}

/// One tegrastats line listing 10,000 CPUs (50 KB, under the line limit) every
/// collection: the ids stay capped, the file gets them in one cheap write, the API
/// answers within a second all along, and memory stays flat.
#[test]
fn a_line_with_ten_thousand_cpus_is_capped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recording = tmp.path().join("huge.log");
    let cores: Vec<String> = (0..10_000).map(|i| format!("{}%@1", i % 10)).collect();
    let line = format!(
        "RAM 1000/4000MB CPU [{}] gpu@40C VDD_IN 5000mW/5000mW\n",
        cores.join(",")
    );
    assert!(
        line.len() > 50_000 && line.len() < 64 * 1024,
        "{}",
        line.len()
    );
    std::fs::write(&recording, line).expect("write");
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(
        &fixture_config(
            &m.root,
            &format!("tegrastats:\n  replay: {}\n", recording.display()),
        )
        .replace("device_type: linux", "device_type: jetson_orin"),
    );
    exporter.metrics_until("the capped cores", |b| {
        b.contains("jetson_cpu_core255_usage_percent{")
    });
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        let t = std::time::Instant::now();
        let r = exporter.api_post(
            "/metrics/enable",
            r#"{"jetson_cpu_core1_usage_percent": false}"#,
        );
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.body);
        rss.push(rss_kb(u32::try_from(exporter.pid()).expect("pid")));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("slowest API write {slowest:?}, RSS kB {rss:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    let text = exporter.config_text();
    let cores = text
        .lines()
        .filter(|l| l.trim_start().starts_with("jetson_cpu_core"))
        .count();
    assert_eq!(cores, 256 * 3, "three ids per core, 256 cores");
    assert!(!text.contains("jetson_cpu_core256_"));
    let body = exporter.metrics();
    assert!(
        sample_value(&body, "edge_exporter_tegrastats_dropped_values_total")
            .is_some_and(|v| v >= 9744.0),
        "{body}"
    );
    // Flat after the first seconds: no queue that grows with every collection.
    let (first, last) = (rss[rss.len() / 2], rss[rss.len() - 1]);
    assert!(
        last < first + 4 * 1024,
        "RSS grew from {first} to {last} kB"
    );
    assert!(last < 80 * 1024, "RSS {last} kB");
}

/// A plug (or something posing as one) reporting new random error flags at every
/// status: only the documented flags and `other` become ids.
#[test]
fn a_flood_of_error_flags_makes_no_new_ids() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = rt.block_on(SimPlug::connect(
        &format!("{}/fixture-host", server.ws_url),
        PLUG,
        plug_status(45.3, 220.5, 0.205, 10.0),
    ));
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(
        &m.root,
        &format!("shelly:\n  server_url: {}\n", server.api_url),
    ));
    exporter.metrics_until("the plug", |b| b.contains("power_total_watts{"));
    for round in 0..30 {
        let flags: Vec<String> = (0..50).map(|i| format!("junk_{round}_{i}")).collect();
        let mut errors = flags.clone();
        errors.push("overtemp".into());
        plug.update("switch:0", json!({"errors": errors}));
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = exporter.metrics_until("the flags", |b| b.contains("power_error_other{"));
    assert!(body.contains("power_error_overtemp{"), "{body}");
    let text = exporter.config_text();
    assert!(!text.contains("junk"), "{text}");
    let flags: Vec<&str> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("power_error_"))
        .collect();
    assert_eq!(
        flags,
        ["power_error_other: true", "power_error_overtemp: true"],
        "{text}"
    );
}

/// `max_metrics`: beyond it new ids are neither written nor served, and counted.
#[test]
fn max_metrics_bounds_discovery() {
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(&m.root, "max_metrics: 10\n"));
    let body = exporter.metrics_until("the refusal", |b| {
        sample_value(b, "edge_exporter_discovery_refused_ids").is_some_and(|v| v > 0.0)
    });
    let listed = |text: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with("metrics:"))
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .count()
    };
    // Written in the meantime, never more than the limit.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(listed(&exporter.config_text()), 10);
    let served = body
        .lines()
        .filter(|l| l.starts_with("host_") && !l.starts_with('#'))
        .count();
    assert!(served <= 10, "{served} device samples served:\n{body}");
    let text = exporter.config_text();
    assert!(
        exporter.log_text().contains("max_metrics reached"),
        "{text}"
    );
}

/// Sends `request` one byte every `every`, and returns how long the server took to
/// close the connection (`None`: still open after `limit`).
fn trickle(addr: &str, request: &[u8], every: Duration, limit: Duration) -> Option<Duration> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut next = 0;
    let mut buf = [0u8; 512];
    while started.elapsed() < limit {
        if started.elapsed() >= every * next as u32 && next < request.len() {
            if stream.write_all(&request[next..=next]).is_err() {
                return Some(started.elapsed());
            }
            next += 1;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned()
}

/// Headers trickled one byte every 5 s, which the 30 s idle timeout alone would
/// never cut: every listener closes the connection within the 10 s header
/// deadline: the metrics endpoint, the management API, the config server, the hub's
/// HTTP API and its WebSocket endpoint.
#[test]
fn trickled_headers_are_cut_off_on_every_listener() {
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    let hub = ShellyServer::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n\r\n";
    let upgrade = b"GET /plug HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let listeners = [
        ("metrics", host_port(&exporter.metrics_url), &request[..]),
        ("api", host_port(&exporter.api_url), &request[..]),
        ("config server", host_port(&config_server.url), &request[..]),
        ("hub api", host_port(&hub.api_url), &request[..]),
        ("hub websocket", host_port(&hub.ws_url), &upgrade[..]),
    ];
    let closed: Vec<(&str, Option<Duration>)> = std::thread::scope(|scope| {
        let runs: Vec<_> = listeners
            .iter()
            .map(|(name, addr, request)| {
                scope.spawn(move || {
                    let took = trickle(
                        addr,
                        request,
                        Duration::from_secs(5),
                        Duration::from_secs(20),
                    );
                    (*name, took)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("thread"))
            .collect()
    });
    for (name, took) in closed {
        let took = took.unwrap_or_else(|| panic!("{name}: still open after 20 s"));
        assert!(
            took >= Duration::from_secs(9) && took < Duration::from_secs(13),
            "{name}: closed after {took:?}"
        );
    }
    // Served as ever.
    assert_eq!(
        get(&format!("{}/metrics", exporter.metrics_url), &[]).status,
        200
    );
}

/// With few file descriptors, a flood of silent connections to the metrics port
/// takes no more than its share: the collectors keep reading, the API answers,
/// and once the flood is cut off, scrapes are served again.
#[test]
fn a_connection_flood_leaves_the_collectors_their_descriptors() {
    let m = crate::metrics_endpoint::machine();
    let config = fixture_config(&m.root, "");
    let mut options = Options::new(&config);
    options.nofile = Some(160);
    let exporter = Exporter::start_with(options);
    exporter.wait_settled();
    let addr = host_port(&exporter.metrics_url);
    // Past the listener's share and the kernel's queue, connects time out.
    let socket: std::net::SocketAddr = addr.parse().expect("address");
    let flood: Vec<std::net::TcpStream> = (0..150)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&socket, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(flood.len() >= 100, "{} connections", flood.len());
    std::thread::sleep(Duration::from_secs(3));
    let health = exporter.api_get("/health").json();
    let linux = health["collectors"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "linux").cloned())
        .expect("linux");
    assert_eq!(linux["status"], "ok", "{health}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let age = now - linux["last_success"].as_f64().expect("last success");
    assert!(age < 2.0, "the last collection was {age} s ago: {health}");
    assert!(exporter.log_text().contains("connection limit reached"));
    drop(flood);
    let r = get(&format!("{}/metrics", exporter.metrics_url), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("host_ram_total_mb"));
}

/// Bodies bounded on every route, `.` and `..` refused as names, JSON errors for
/// bad query strings and paths.
#[test]
fn bodies_ids_and_errors_at_the_edges() {
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    // `POST /reload` reads no body, and answers a large one with 413 all the same,
    // from its Content-Length, before any of it arrives. (Sent by hand: a client
    // that writes the 200 KiB first may get EPIPE when the server has answered and
    // closed, which is the server doing its job.)
    let answer = {
        use std::io::{Read as _, Write as _};
        let addr = exporter.api_url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            200 * 1024
        )
        .expect("head");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too large"), "{answer}");
    assert_eq!(exporter.api_post("/reload", "").status, 200);

    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    for id in [".", "..", "%2E%2E"] {
        let r = send("PUT", &format!("{}/config/{id}", server.url), "{}", &[]);
        assert_eq!(r.status, 400, "{id}: {}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("Invalid device id")),
            "{id}"
        );
    }
    let r = send("PUT", &format!("{}/config/edge-01", server.url), "{}", &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = server.get("/config/edge-01/history?limit=lots");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string(), "{}", r.body);
    let r = server.get("/config/%FF/history");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string(), "{}", r.body);

    let hub = ShellyServer::start(None);
    let r = hub.get("/metrics/%FF");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string(), "{}", r.body);
}

/// Without a secret, a second plug cannot take a connected plug's name; with the
/// secret (here given percent-encoded) it can.
#[test]
fn a_plug_name_is_not_taken_over_silently() {
    let rt = runtime();
    let open = ShellyServer::start(None);
    let first = "shellyplusplugs-000000000001";
    let _a = rt.block_on(SimPlug::connect(
        &format!("{}/orin-01", open.ws_url),
        first,
        plug_status(10.0, 230.0, 0.05, 1.0),
    ));
    eventually("the first plug", Duration::from_secs(5), || {
        (open.get("/metrics/orin-01").status == 200).then_some(())
    });
    let _b = rt.block_on(SimPlug::connect(
        &format!("{}/orin-01", open.ws_url),
        "shellyplusplugs-00000000bad0",
        plug_status(999.0, 230.0, 4.0, 1.0),
    ));
    std::thread::sleep(Duration::from_millis(500));
    let r = open.get("/metrics/orin-01");
    assert_eq!(r.json()["device_id"], first, "{}", r.body);
    assert_eq!(r.json()["metrics"]["power_total_watts"], 10.0);
    assert!(open.get("/devices").json()["stats"]["rejected"].as_u64() >= Some(1));

    let guarded = ShellyServer::start(Some("p+q=r"));
    let url = |tail: &str| format!("{}/orin-01?token=p%2Bq%3Dr{tail}", guarded.ws_url);
    let _c = rt.block_on(SimPlug::connect(
        &url(""),
        first,
        plug_status(10.0, 230.0, 0.05, 1.0),
    ));
    eventually("the first plug", Duration::from_secs(5), || {
        (guarded.get("/metrics/orin-01").status == 200).then_some(())
    });
    let second = "shellyplusplugs-000000000002";
    let _d = rt.block_on(SimPlug::connect(
        &url(""),
        second,
        plug_status(20.0, 230.0, 0.1, 1.0),
    ));
    eventually(
        "the name taken over by the plug with the secret",
        Duration::from_secs(5),
        || (guarded.get("/metrics/orin-01").json()["device_id"] == second).then_some(()),
    );
}
