//! The config server and the devices that sync with it, as real processes: the
//! server's API contract (revisions, ETags, validation, bounds, token), concurrent
//! writers, durability across a kill, and three exporters syncing both ways through
//! a server that goes away, comes back, or answers garbage.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const POLL: &str = "0.5";
const WAIT: Duration = Duration::from_secs(15);

/// An exporter on the x86-laptop fixture that syncs with `server` as `id`; every
/// metric starts disabled, so a switch shows in `/metrics`.
fn device_options<'a>(config: &'a str, server: &str, id: &str) -> Options<'a> {
    let mut options = Options::new(config);
    options.env = vec![
        ("CONFIG_SERVER_URL", server.to_owned()),
        ("DEVICE_ID", id.to_owned()),
        ("CONFIG_POLL_INTERVAL", POLL.to_owned()),
        ("CONFIG_TIMEOUT", "2".to_owned()),
    ];
    options
}

fn device_config() -> String {
    fixture_config(&fixtures().join("linux/x86-laptop"), "")
        .replace("new_metrics_enabled: true", "new_metrics_enabled: false")
}

fn health(device: &Exporter) -> Value {
    device.api_get("/health").json()
}

/// The server's config of `id` and its ETag.
fn server_config(server: &ConfigServer, id: &str) -> Option<(Value, String)> {
    let r = server.get(&format!("/config/{id}"));
    (r.status == 200).then(|| (r.json(), r.header("etag").unwrap_or_default().to_owned()))
}

fn metric_on_server(server: &ConfigServer, id: &str, metric: &str) -> Option<bool> {
    server_config(server, id).and_then(|(c, _)| c["metrics"][metric].as_bool())
}

/// Switches a metric on the server the way the web page does: latest config,
/// changed, written with If-Match.
fn switch_on_server(server: &ConfigServer, id: &str, metric: &str, on: bool) -> u64 {
    let (mut config, etag) = server_config(server, id).expect("config");
    config["metrics"][metric] = json!(on);
    let r = send(
        "PUT",
        &format!("{}/config/{id}", server.url),
        &config.to_string(),
        &[("If-Match", &etag), ("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["revision"].as_u64().expect("revision")
}

fn shows(device: &Exporter, metric: &str) -> bool {
    device.metrics().contains(&format!("\n{metric}{{"))
}

#[test]
fn server_api_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let url = |path: &str| format!("{}{path}", server.url);
    let json_header = [("Content-Type", "application/json")];

    let r = server.get("/config/edge-01");
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "Unknown device: edge-01"}))
    );

    let first = json!({"device_type": "jetson_orin", "interval": 1, "metrics": {"a_b": true}});
    let r = send(
        "PUT",
        &url("/config/edge-01"),
        &first.to_string(),
        &json_header,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.json()["revision"], 1);

    let r = server.get("/config/edge-01");
    assert_eq!((r.status, r.header("etag")), (200, Some("\"1\"")));
    assert_eq!(r.json(), first);
    let r = get(&url("/config/edge-01"), &[("If-None-Match", "\"1\"")]);
    assert_eq!((r.status, r.body.as_str()), (304, ""));

    // Invalid configs are refused with the reason and not stored.
    for (body, wanted) in [
        (
            json!({"device_type": "toaster"}).to_string(),
            "Unsupported device type: toaster",
        ),
        (json!({"interval": "fast"}).to_string(), "invalid type"),
        (json!([1, 2]).to_string(), "JSON object"),
        ("{not json".to_owned(), "Invalid JSON"),
    ] {
        let r = send("PUT", &url("/config/edge-01"), &body, &json_header);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(wanted), "{body}: {error}");
    }
    assert_eq!(server.get("/config/edge-01").header("etag"), Some("\"1\""));

    // Bounded bodies (refused from the declared length, before reading it) and names.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .write_all(b"PUT /config/edge-01 HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n{")
        .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(server.get("/config/bad%20id").status, 400);

    // Revisions, stale writers, deletion, history.
    let second = json!({"device_type": "jetson_orin", "metrics": {"a_b": false}});
    let r = send(
        "PUT",
        &url("/config/edge-01"),
        &second.to_string(),
        &[("If-Match", "\"1\"")],
    );
    assert_eq!((r.status, r.header("etag")), (200, Some("\"2\"")));
    let r = send(
        "PUT",
        &url("/config/edge-01"),
        &first.to_string(),
        &[("If-Match", "\"1\"")],
    );
    assert_eq!(r.status, 412);
    assert_eq!(r.json()["revision"], 2);
    let r = send(
        "PUT",
        &url("/config/edge-01"),
        &first.to_string(),
        &[("If-None-Match", "*")],
    );
    assert_eq!(r.status, 412, "create-only on an existing device");
    let devices = server.get("/devices").json();
    assert_eq!(devices["devices"][0]["device_id"], "edge-01");
    assert_eq!(devices["devices"][0]["device_type"], "jetson_orin");
    assert_eq!(devices["devices"][0]["revision"], 2);
    assert_eq!(
        devices["devices"][0]["last_contact"],
        Value::Null,
        "no device asked yet"
    );
    let r = send(
        "DELETE",
        &url("/config/edge-01"),
        "",
        &[("If-Match", "\"1\"")],
    );
    assert_eq!(r.status, 412);
    let r = send("DELETE", &url("/config/edge-01"), "", &[]);
    assert_eq!((r.status, r.json()["revision"].as_u64()), (200, Some(3)));
    assert_eq!(server.get("/config/edge-01").status, 404);
    let history = server.get("/config/edge-01/history").json();
    let revisions: Vec<(u64, Value)> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["revision"].as_u64().expect("revision"),
                h["config"].clone(),
            )
        })
        .collect();
    assert_eq!(
        revisions,
        [(1, first.clone()), (2, second), (3, Value::Null)]
    );
    assert_eq!(
        server.get("/config/edge-01/history?limit=1").json()["history"][0]["revision"],
        3
    );
    // Created again, the revisions go on: an old ETag never matches again.
    let r = send("PUT", &url("/config/edge-01"), &first.to_string(), &[]);
    assert_eq!((r.status, r.header("etag")), (201, Some("\"4\"")));
    assert_eq!(server.get("/nope").status, 404);
    // The same JSON 404 and 405 as the exporter's API and the plug hub.
    assert_eq!(server.get("/nope").json()["error"], "Not found: /nope");
    let r = send("POST", &url("/config/edge-01"), "{}", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json()["error"],
        "Method POST not allowed on /config/edge-01"
    );
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"));
}

#[test]
fn token_protects_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, Some("s3cret"));
    for path in [
        "/",
        "/devices",
        "/config/edge-01",
        "/config/edge-01/history",
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.contains("Basic"))
        );
    }
    let bearer = [("Authorization", "Bearer s3cret")];
    let r = send(
        "PUT",
        &format!("{}/config/edge-01", server.url),
        "{}",
        &bearer,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // A browser sends the token as the password of its login prompt.
    let basic = format!("Basic {}", "b3BlcmF0b3I6czNjcmV0"); // operator:s3cret
    let r = get(
        &format!("{}/devices", server.url),
        &[("Authorization", &basic)],
    );
    assert_eq!(r.status, 200);
    let r = get(&format!("{}/", server.url), &[("Authorization", &basic)]);
    assert!(
        r.status == 200 && r.body.contains("<title>"),
        "{}",
        r.status
    );
    let wrong = [("Authorization", "Bearer s3cre")];
    assert_eq!(get(&format!("{}/devices", server.url), &wrong).status, 401);
    let log = server.log.lock().expect("log").join("\n");
    assert!(!log.contains("s3cret"), "the token is never logged");
}

#[test]
fn concurrent_writers_with_one_if_match_exactly_one_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let url = format!("{}/config/edge-01", server.url);
    assert_eq!(send("PUT", &url, "{}", &[]).status, 201);
    for round in 1..=5u64 {
        let etag = format!("\"{round}\"");
        let handles: Vec<_> = (0..8)
            .map(|writer| {
                let url = url.clone();
                let etag = etag.clone();
                thread::spawn(move || {
                    let body = json!({"metrics": {format!("w{writer}_x"): true}}).to_string();
                    send("PUT", &url, &body, &[("If-Match", &etag)]).status
                })
            })
            .collect();
        let statuses: Vec<u16> = handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 412).count(),
            7,
            "round {round}: {statuses:?}"
        );
    }
    let history = server.get("/config/edge-01/history").json();
    assert_eq!(history["history"].as_array().map(Vec::len), Some(6));
}

#[test]
fn acknowledged_writes_survive_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("configs.db");
    let server = ConfigServer::start(&db, 0, None);
    let url = format!("{}/config/edge-01", server.url);
    for i in 0..20 {
        let body = json!({"interval": 1 + i}).to_string();
        assert!(matches!(send("PUT", &url, &body, &[]).status, 200 | 201));
    }
    server.kill();
    let server = ConfigServer::start(&db, 0, None);
    let r = server.get("/config/edge-01");
    assert_eq!((r.status, r.header("etag")), (200, Some("\"20\"")));
    assert_eq!(r.json()["interval"], 20);
}

#[test]
fn three_devices_sync_both_ways_and_survive_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("configs.db");
    let server = ConfigServer::start(&db, 0, None);
    let config = device_config();
    let ids = ["edge-a", "edge-b", "edge-c"];
    let mut devices: Vec<Exporter> = ids
        .iter()
        .map(|id| Exporter::start_with(device_options(&config, &server.url, id)))
        .collect();

    // Each registers, with the metrics it discovered (all off).
    for id in ids {
        eventually(&format!("{id} registered with its metrics"), WAIT, || {
            (metric_on_server(&server, id, "host_cpu_active_cores") == Some(false)).then_some(())
        });
    }
    let listed = server.get("/devices").json();
    let listed: Vec<(&str, &str)> = listed["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap_or(""),
                d["device_type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("edge-a", "linux"),
            ("edge-b", "linux"),
            ("edge-c", "linux")
        ]
    );
    for d in &devices {
        assert_eq!(health(d)["config_source"], "server");
        assert!(!shows(d, "host_cpu_active_cores"));
    }

    // Switched on at the server: edge-b shows it within its poll, the others do not.
    let started = Instant::now();
    switch_on_server(&server, "edge-b", "host_cpu_active_cores", true);
    eventually("edge-b picks up the server's switch", WAIT, || {
        shows(&devices[1], "host_cpu_active_cores").then_some(())
    });
    eprintln!("server → device: {:?} (poll {POLL} s)", started.elapsed());
    assert!(!shows(&devices[0], "host_cpu_active_cores"));
    assert!(!shows(&devices[2], "host_cpu_active_cores"));
    let text = std::fs::read_to_string(&devices[1].config_path).expect("config");
    assert!(
        text.contains("host_cpu_active_cores: true"),
        "written to the device's file"
    );
    assert!(text.starts_with("# test config"), "comments kept");

    // Switched on at a device: the server has it.
    let r = devices[2].api_post("/metrics/enable", r#"{"host_ram_used_mb": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("edge-c's switch reaches the server", WAIT, || {
        (metric_on_server(&server, "edge-c", "host_ram_used_mb") == Some(true)).then_some(())
    });

    // The server goes away: devices keep running on their files and say so.
    let port = server.port;
    server.kill();
    for d in &devices {
        eventually("a device notices the server is gone", WAIT, || {
            (health(d)["config_source"] == "local").then_some(())
        });
        assert!(health(d)["config_server"]["last_error"].is_string());
        assert!(d.metrics().contains("edge_exporter_build_info"));
    }
    // Changes made meanwhile wait in order, also across a restart of the device.
    for (metric, on) in [
        ("host_ram_used_mb", true),
        ("host_swap_used_mb", true),
        ("host_ram_used_mb", false),
    ] {
        let body = json!({ metric: on }).to_string();
        assert_eq!(devices[0].api_post("/metrics/enable", &body).status, 200);
    }
    assert_eq!(health(&devices[0])["config_server"]["pending_changes"], 3);
    devices[0].respawn(device_options(
        "",
        &format!("http://127.0.0.1:{port}"),
        "edge-a",
    ));
    assert_eq!(health(&devices[0])["config_server"]["pending_changes"], 3);
    assert_eq!(health(&devices[0])["config_source"], "local");

    // The server is back: the queued changes land, in order.
    let server = ConfigServer::start(&db, port, None);
    eventually("edge-a's queue drains", WAIT, || {
        (health(&devices[0])["config_server"]["pending_changes"] == 0).then_some(())
    });
    let history = server.get("/config/edge-a/history").json();
    let states: Vec<(Option<bool>, Option<bool>)> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            let m = &h["config"]["metrics"];
            (
                m["host_ram_used_mb"].as_bool(),
                m["host_swap_used_mb"].as_bool(),
            )
        })
        .collect();
    let tail = &states[states.len() - 3..];
    assert_eq!(
        tail,
        [
            (Some(true), Some(false)),
            (Some(true), Some(true)),
            (Some(false), Some(true))
        ],
        "{states:?}"
    );
    for d in &devices {
        eventually("devices are back on the server", WAIT, || {
            (health(d)["config_source"] == "server").then_some(())
        });
    }
}

/// A fake config server: every request gets `response`. Returns its URL and a
/// count of the requests it got.
fn fake_server(response: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 65536];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes());
            });
        }
    });
    (url, count)
}

#[test]
fn devices_ignore_a_server_that_answers_errors_or_garbage() {
    let cases = [
        (
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
            "answered 500",
        ),
        (
            "HTTP/1.1 200 OK\r\nETag: \"9\"\r\nContent-Length: 12\r\nConnection: close\r\n\r\n<html>oops</",
            "invalid JSON",
        ),
        (
            "HTTP/1.1 200 OK\r\nETag: \"9\"\r\nContent-Length: 28\r\nConnection: close\r\n\r\n{\"device_type\": \"toaster\"}  ",
            "Unsupported device type: toaster",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            "no ETag",
        ),
        // Some other web server on the port.
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            "is CONFIG_SERVER_URL a config server?",
        ),
    ];
    let config = device_config();
    for (response, wanted) in cases {
        let (url, requests) = fake_server(response);
        let device = Exporter::start_with(device_options(&config, &url, "edge-x"));
        let error = eventually("the device reports the bad server", WAIT, || {
            let h = health(&device);
            h["config_server"]["last_error"].as_str().map(str::to_owned)
        });
        assert!(error.contains(wanted), "{wanted}: {error}");
        let h = health(&device);
        assert_eq!(h["config_source"], "local");
        assert_eq!(h["device_type"], "linux");
        assert!(device.metrics().contains("edge_exporter_build_info"));
        let text = std::fs::read_to_string(&device.config_path).expect("config");
        assert!(
            text.starts_with("# test config\ndevice_type: linux"),
            "{text}"
        );
        assert!(!text.contains("toaster"));
        // It backs off instead of hammering the server: over 2 s, polls every 0.5 s
        // and retries after 1 and 2 s.
        let before = requests.load(Ordering::SeqCst);
        thread::sleep(Duration::from_secs(2));
        let during = requests.load(Ordering::SeqCst) - before;
        assert!(during <= 12, "{wanted}: {during} requests in 2 s");
    }
}

#[test]
fn a_conflict_keeps_the_server_value_and_reports_the_local_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("configs.db");
    let server = ConfigServer::start(&db, 0, None);
    let config = device_config();
    let device = Exporter::start_with(device_options(&config, &server.url, "edge-k"));
    eventually("registered", WAIT, || {
        (metric_on_server(&server, "edge-k", "host_cpu_active_cores") == Some(false)).then_some(())
    });
    let port = server.port;
    server.kill();

    // Offline, on the device: a metric switched on, and the interval edited by hand.
    let body = r#"{"host_ram_used_mb": true}"#;
    assert_eq!(device.api_post("/metrics/enable", body).status, 200);
    device.edit_config(&[("interval: 0.2", "interval: 0.4")]);
    assert_eq!(device.api_post("/reload", "").json()["source"], "local");
    assert_eq!(health(&device)["config_server"]["pending_changes"], 2);

    // Meanwhile, on the server (a second instance on another port, which the
    // device does not know): another metric on, and the interval changed too.
    let other = ConfigServer::start(&db, 0, None);
    let (mut c, etag) = server_config(&other, "edge-k").expect("config");
    c["metrics"]["host_cpu_active_cores"] = json!(true);
    c["interval"] = json!(0.3);
    let r = send(
        "PUT",
        &format!("{}/config/edge-k", other.url),
        &c.to_string(),
        &[("If-Match", &etag)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    other.kill();

    // The device reaches the server again.
    let server = ConfigServer::start(&db, port, None);
    eventually("the device is in sync", WAIT, || {
        (health(&device)["config_server"]["pending_changes"] == 0).then_some(())
    });
    // Changed on one side only: taken from that side. Changed on both: the server's.
    let (c, _) = server_config(&server, "edge-k").expect("config");
    assert_eq!(c["metrics"]["host_ram_used_mb"], true, "device only");
    assert_eq!(c["metrics"]["host_cpu_active_cores"], true, "server only");
    assert_eq!(c["interval"], 0.3, "both: the server's");
    let h = health(&device);
    let conflicts = h["config_server"]["conflicts"]
        .as_array()
        .expect("conflicts")
        .clone();
    assert_eq!(conflicts.len(), 1, "{h}");
    assert_eq!(conflicts[0]["key"], "interval");
    assert_eq!(conflicts[0]["local"], 0.4);
    assert_eq!(conflicts[0]["server"], 0.3);
    assert!(device.log_text().contains("config conflict"));
    // The device's file says what the server says, and runs on it.
    let text = std::fs::read_to_string(&device.config_path).expect("config");
    assert!(
        text.contains("interval: 0.3") && text.contains("host_cpu_active_cores: true"),
        "{text}"
    );
    eventually("the device applies it", WAIT, || {
        shows(&device, "host_cpu_active_cores").then_some(())
    });
}
