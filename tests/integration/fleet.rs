//! A fleet as an operator runs one: devices pushing into one receiver (a real
//! Prometheus and VictoriaMetrics) through counting proxies, and the config server
//! over TLS with per-device tokens, enrolment and an HTTPS proxy.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::remote_write::{Receiver, start_receiver};
use crate::support::*;

const JOB: &str = "edge-metrics-exporter";

/// An x86 laptop fixture named `name`, pushing to `url` every second.
fn pushing_device(name: &str, url: &str) -> String {
    fixture_config(
        &fixtures().join("linux/x86-laptop"),
        &format!("remote_write:\n  url: {url}\n  interval: 1\n"),
    )
    .replace("hostname: fixture-host", &format!("hostname: {name}"))
}

fn query(receiver: &Receiver, promql: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/query?query={}", receiver.base, urlencode(promql));
    let r = get(&url, &[]);
    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
    assert_eq!(v["status"], "success", "{promql}: {}", r.body);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The `instance` labels of a query's result.
fn instances(results: &[Value]) -> BTreeSet<String> {
    results
        .iter()
        .filter_map(|r| r["metric"]["instance"].as_str().map(str::to_owned))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://")
        .trim_start_matches("https://")
        .parse()
        .expect("receiver address")
}

/// The expression of alert `name` in the shipped rules, without its threshold.
fn alert_expression(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml");
    let rules: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(path).expect("rules")).expect("yaml");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if rule["alert"].as_str() == Some(name) {
                let expr = rule["expr"].as_str().expect("expr");
                let (left, _) = expr.rsplit_once('>').expect("a threshold");
                return left.trim().to_owned();
            }
        }
    }
    panic!("no alert {name}");
}

#[test]
fn devices_pushing_into_one_receiver_stay_apart_on_few_connections() {
    let (Some(prometheus), Some(vm)) = (peer("prometheus"), peer("victoria-metrics")) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["p", "v"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
    }
    let receivers = [
        start_receiver(
            "prometheus",
            &prometheus,
            &dir.path().join("p"),
            free_port(),
        ),
        start_receiver("victoria-metrics", &vm, &dir.path().join("v"), free_port()),
    ];
    let names = [["edge-a", "edge-b"], ["edge-c", "edge-d"]];
    let started = Instant::now();
    // Two devices per receiver, each through a proxy that counts its connections.
    let mut devices = Vec::new();
    for (receiver, pair) in receivers.iter().zip(&names) {
        for name in pair {
            let proxy = CountingProxy::start(addr_of(&receiver.base));
            let url = format!("http://{}/api/v1/write", proxy.addr);
            devices.push((*name, proxy, Exporter::start(&pushing_device(name, &url))));
        }
    }
    for (receiver, pair) in receivers.iter().zip(&names) {
        let want = set(&[&format!("{}:0", pair[0]), &format!("{}:0", pair[1])]);
        // The exporter's own series, which carry no device labels, are one per device.
        eventually("both devices' own series", Duration::from_secs(30), || {
            let up = query(
                receiver,
                &format!("edge_exporter_uptime_seconds{{job=\"{JOB}\"}}"),
            );
            (instances(&up) == want && up.len() == 2).then_some(())
        });
        // No pushed series lacks the job or the instance.
        for missing in ["job", "instance"] {
            let bare = query(receiver, &format!("{{__name__=~\".+\",{missing}=\"\"}}"));
            assert!(bare.is_empty(), "series without {missing}: {bare:?}");
        }
        // Device series are apart too, and keep their hostname.
        let memory = query(receiver, "host_ram_total_mb");
        assert_eq!(instances(&memory), want, "{memory:?}");
        assert_eq!(memory.len(), 2);
    }

    // The dashboard and the alerts see both devices of a receiver.
    let prom = &receivers[0];
    let both = set(&["edge-a:0", "edge-b:0"]);
    let selector = format!("job=\"{JOB}\",instance=~\"edge-a:0|edge-b:0\"");
    let queries = crate::deploy::dashboard_queries_bound(&selector);
    for title in [
        "Up",
        "Temperatures",
        "Memory used",
        "Collectors failing",
        "Collection duration",
        "Resident memory",
    ] {
        let seen = || -> BTreeSet<String> {
            queries
                .iter()
                .filter(|(t, _)| t == title)
                .flat_map(|(_, q)| instances(&query(prom, q)))
                .collect()
        };
        let shown = eventually(
            &format!("both devices in the {title} panel"),
            Duration::from_secs(20),
            || {
                let s = seen();
                (s == both).then_some(s)
            },
        );
        assert_eq!(shown, both);
    }
    let up = queries
        .iter()
        .find(|(t, _)| t == "Up")
        .map(|(_, q)| query(prom, q))
        .expect("Up panel");
    assert!(
        up.iter().all(|r| r["value"][1] == "1"),
        "push-only devices show as up: {up:?}"
    );
    let silent_for = query(prom, &alert_expression("EdgeDeviceSilent"));
    assert_eq!(instances(&silent_for), both, "{silent_for:?}");
    for r in &silent_for {
        let age: f64 = r["value"][1]
            .as_str()
            .expect("value")
            .parse()
            .expect("number");
        assert!(age < 60.0, "a pushing device is not silent: {r}");
    }
    let failing = query(
        prom,
        &format!("edge_exporter_collector_success{{job=\"{JOB}\"}}"),
    );
    assert_eq!(instances(&failing), both);

    // A minute of pushes every second: each device keeps its connection.
    let minute = Duration::from_secs(60);
    if let Some(rest) = minute.checked_sub(started.elapsed()) {
        thread::sleep(rest);
    }
    for (name, proxy, exporter) in &devices {
        let body = exporter.metrics();
        let sent = sample_value(&body, "edge_exporter_remote_write_samples_sent_total");
        let last = sample_value(
            &body,
            "edge_exporter_remote_write_last_success_timestamp_seconds",
        )
        .expect("a success");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(sent.is_some_and(|n| n > 0.0), "{name}: {body}");
        assert!(now - last < 5.0, "{name} still pushes every second");
        let connections = proxy.connections();
        eprintln!("{name}: {connections} connection(s) for a minute of pushes");
        assert!(
            (1..=2).contains(&connections),
            "{name} opened {connections} connections"
        );
    }
}

/// A client of the config server that trusts the test CA.
struct Https {
    runtime: tokio::runtime::Runtime,
    client: edge_metrics_exporter::net::client::Client,
    base: String,
}

impl Https {
    fn new(base: &str, ca: &Path) -> Https {
        let tls = edge_metrics_exporter::net::tls::client(
            &edge_metrics_exporter::config::TlsClientConfig {
                ca_file: Some(ca.to_owned()),
                ..Default::default()
            },
        )
        .expect("tls client");
        Https {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: edge_metrics_exporter::net::client::Client::new(Some(tls)),
            base: base.to_owned(),
        }
    }

    /// `method path` with an optional bearer token: status and body.
    fn send(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut headers = vec![(hyper::header::CONTENT_TYPE, "application/json".to_owned())];
        if let Some(token) = token {
            headers.push((hyper::header::AUTHORIZATION, format!("Bearer {token}")));
        }
        let r = self
            .runtime
            .block_on(self.client.request(
                method.parse().expect("method"),
                &format!("{}{path}", self.base),
                &headers,
                bytes::Bytes::from(body.to_owned()),
                Duration::from_secs(5),
                1 << 20,
            ))
            .expect("an answer");
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }
}

fn token_command(args: &[&str], db: &Path) -> (bool, String, String) {
    let mut all = vec!["config-server", "token"];
    all.extend_from_slice(args);
    let db = db.display().to_string();
    all.extend_from_slice(&["--db", &db]);
    let (status, out, err) = run_binary(&all, Path::new("/"));
    (status.success(), out, err)
}

fn device_env(url: &str, id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CONFIG_SERVER_URL", url.to_owned()),
        ("DEVICE_ID", id.to_owned()),
        ("CONFIG_POLL_INTERVAL", "0.5".to_owned()),
        ("CONFIG_TIMEOUT", "3".to_owned()),
    ]
}

fn laptop_config() -> String {
    fixture_config(&fixtures().join("linux/x86-laptop"), "")
}

#[test]
fn config_server_over_tls_with_device_tokens_and_a_proxy() {
    const ADMIN: &str = "admin-secret-for-the-fleet-test";
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (cert, key) = pki.leaf("server");
    let db = dir.path().join("configs.db");

    // A token made before the server runs: one line of 64 hex digits, nothing else.
    let (ok, out, _) = token_command(&["create", "edge-a"], &db);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "{out:?}");
    let token_a = out.trim().to_owned();
    assert!(
        token_a.len() == 64 && token_a.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token_a}"
    );
    let (ok, _, err) = token_command(&["create", "a/b"], &db);
    assert!(!ok && err.contains("not a device id"), "{err}");

    let server = ConfigServer::start_with(
        &db,
        0,
        Some(ADMIN),
        &[
            ("CONFIG_SERVER_TLS_CERT_FILE", cert.display().to_string()),
            ("CONFIG_SERVER_TLS_KEY_FILE", key.display().to_string()),
        ],
    );
    let base = format!("https://127.0.0.1:{}", server.port);
    let https = Https::new(&base, &pki.ca);
    // Plain HTTP to the TLS port gets no answer.
    let plain = try_post(&format!("http://127.0.0.1:{}/devices", server.port), "");
    assert!(
        plain.as_ref().is_none_or(|r| r.status != 200),
        "plain HTTP answered"
    );

    // Device edge-a registers and syncs over TLS with its own token, through the
    // proxy HTTPS_PROXY names.
    let proxy = ForwardProxy::start();
    let config = laptop_config();
    let mut options = Options::new(&config);
    options.env = device_env(&base, "edge-a");
    options.env.extend([
        ("CONFIG_SERVER_TOKEN", token_a.clone()),
        ("CONFIG_SERVER_CA_FILE", pki.ca.display().to_string()),
        ("HTTPS_PROXY", proxy.url.clone()),
    ]);
    let device = Exporter::start_with(options);
    let (status, body) = eventually("edge-a registered", Duration::from_secs(20), || {
        let r = https.send("GET", "/config/edge-a", Some(ADMIN), "");
        (r.0 == 200).then_some(r)
    });
    assert_eq!(status, 200);
    let tunnel = format!("CONNECT 127.0.0.1:{}", server.port);
    assert!(
        proxy.asked().contains(&tunnel),
        "the proxy carried nothing: {:?}",
        proxy.asked()
    );
    // Both ways: the device's switch reaches the server, the server's the device
    // (once discovery has written the id the switch names).
    eventually("discovery", Duration::from_secs(10), || {
        device
            .config_text()
            .contains("host_ram_used_mb: true")
            .then_some(())
    });
    let r = device.api_post("/metrics/enable", r#"{"host_ram_used_mb": false}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(
        "the device's change on the server",
        Duration::from_secs(15),
        || {
            let (_, body) = https.send("GET", "/config/edge-a", Some(ADMIN), "");
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["metrics"]["host_ram_used_mb"] == false).then_some(())
        },
    );
    let mut server_config: Value = serde_json::from_str(&body).expect("json");
    let (_, latest) = https.send("GET", "/config/edge-a", Some(ADMIN), "");
    server_config = serde_json::from_str(&latest).unwrap_or(server_config);
    server_config["metrics"]["host_swap_used_mb"] = Value::Bool(false);
    let (status, body) = https.send(
        "PUT",
        "/config/edge-a",
        Some(ADMIN),
        &server_config.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    eventually(
        "the server's change on the device",
        Duration::from_secs(15),
        || {
            device
                .config_text()
                .contains("host_swap_used_mb: false")
                .then_some(())
        },
    );
    assert!(device.log_text().matches(ADMIN).count() == 0);
    assert!(
        !device.log_text().contains(&token_a),
        "the token is never logged"
    );

    // What a device token may do.
    let a = Some(token_a.as_str());
    assert_eq!(https.send("GET", "/config/edge-a", a, "").0, 200);
    assert_eq!(https.send("GET", "/config/edge-a/history", a, "").0, 200);
    let (status, body) = https.send("GET", "/config/edge-b", a, "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("edge-a"), "{body}");
    assert_eq!(https.send("PUT", "/config/edge-b", a, "{}").0, 403);
    assert_eq!(https.send("GET", "/devices", a, "").0, 403);
    assert_eq!(https.send("GET", "/", a, "").0, 403);
    assert_eq!(https.send("DELETE", "/config/edge-a", a, "").0, 403);
    assert_eq!(https.send("GET", "/config/edge-a", None, "").0, 401);
    assert_eq!(
        https
            .send("GET", "/config/edge-a", Some("not-a-token"), "")
            .0,
        401
    );
    assert_eq!(https.send("GET", "/devices", Some(ADMIN), "").0, 200);

    // The list names devices and times, never tokens; a revoked token is refused
    // from the next request on, with the server running.
    let (ok, list, _) = token_command(&["list"], &db);
    assert!(ok && list.starts_with("edge-a\t20"), "{list}");
    assert!(!list.contains(&token_a));
    let (ok, _, _) = token_command(&["revoke", "edge-a"], &db);
    assert!(ok);
    assert_eq!(https.send("GET", "/config/edge-a", a, "").0, 401);
    let (ok, _, err) = token_command(&["revoke", "edge-a"], &db);
    assert!(!ok && err.contains("has no token"), "{err}");

    // NO_PROXY takes the server out of the proxy's way.
    let (ok, out, _) = token_command(&["create", "edge-b"], &db);
    assert!(ok);
    let before = proxy.asked().len();
    let mut options = Options::new(&config);
    options.env = device_env(&base, "edge-b");
    options.env.extend([
        ("CONFIG_SERVER_TOKEN", out.trim().to_owned()),
        ("CONFIG_SERVER_CA_FILE", pki.ca.display().to_string()),
        ("HTTPS_PROXY", proxy.url.clone()),
        ("NO_PROXY", "127.0.0.1".to_owned()),
    ]);
    let _device_b = Exporter::start_with(options);
    eventually(
        "edge-b registered directly",
        Duration::from_secs(20),
        || (https.send("GET", "/config/edge-b", Some(ADMIN), "").0 == 200).then_some(()),
    );
    assert_eq!(proxy.asked().len(), before, "{:?}", proxy.asked());

    // SIGHUP re-reads the certificate: a new one is served to new connections.
    let (new_cert, new_key) = pki.leaf("renewed");
    std::fs::copy(&new_cert, &cert).expect("copy");
    std::fs::copy(&new_key, &key).expect("copy");
    let mut server = server;
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    let log = server.log.clone();
    wait_log(&mut server.child, &log, "TLS certificate re-read");
    let fresh = Https::new(&base, &pki.ca);
    assert_eq!(fresh.send("GET", "/devices", Some(ADMIN), "").0, 200);
    // A renewal that went wrong (the key of another certificate) changes
    // nothing: the previous pair keeps serving.
    let (_, other_key) = pki.leaf("other");
    std::fs::copy(&other_key, &key).expect("copy");
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    wait_log(&mut server.child, &log, "the previous one stays");
    let after = Https::new(&base, &pki.ca);
    assert_eq!(after.send("GET", "/devices", Some(ADMIN), "").0, 200);
}

#[test]
fn an_unknown_device_enrolls_once_and_keeps_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("configs.db");
    let server = ConfigServer::start_with(
        &db,
        0,
        Some("the-admin-token"),
        &[("CONFIG_SERVER_ALLOW_ENROLL", "true".to_owned())],
    );
    let config = laptop_config();
    let mut options = Options::new(&config);
    options.env = device_env(&server.url, "edge-new");
    let mut device = Exporter::start_with(options);
    let token_file = device.dir.path().join("config.yaml.token");
    let token = eventually("the enrolled token saved", Duration::from_secs(20), || {
        std::fs::read_to_string(&token_file)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| t.len() == 64)
    });
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is the device's alone");
    }
    assert!(
        !device.log_text().contains(&token),
        "the token is never logged"
    );
    let auth = format!("Bearer {token}");
    let url = format!("{}/config/edge-new", server.url);
    assert_eq!(get(&url, &[("Authorization", &auth)]).status, 200);
    // Once enrolled, the id needs its token: no second enrolment, no reading.
    assert_eq!(get(&url, &[]).status, 401);
    let again = send("PUT", &url, "{}", &[("If-None-Match", "*")]);
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(get(&format!("{}/devices", server.url), &[]).status, 401);
    // Another unknown id may read its (absent) config and nothing else.
    assert_eq!(
        get(&format!("{}/config/edge-other", server.url), &[]).status,
        404
    );
    assert_eq!(
        get(&format!("{}/config/edge-new/history", server.url), &[]).status,
        401
    );
    // After a restart the device uses the saved token: changes still sync.
    eventually("discovery", Duration::from_secs(10), || {
        device
            .config_text()
            .contains("host_ram_used_mb: true")
            .then_some(())
    });
    let mut options = Options::new(&config);
    options.env = device_env(&server.url, "edge-new");
    device.respawn(options);
    let r = device.api_post("/metrics/enable", r#"{"host_ram_used_mb": false}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the change on the server", Duration::from_secs(15), || {
        let r = get(&url, &[("Authorization", &auth)]);
        (r.status == 200 && r.json()["metrics"]["host_ram_used_mb"] == false).then_some(())
    });
}
