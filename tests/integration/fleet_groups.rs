//! Fleet configuration on the config server, with real processes: groups that
//! reach every member (matched or assigned), a device's own change that wins over
//! its group and outlives later group changes, dropping it, two groups in order,
//! the fleet view fed by the devices' polls, and the groups API's If-Match,
//! validation and history.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const POLL: &str = "0.5";
const WAIT: Duration = Duration::from_secs(15);

fn device_config() -> String {
    fixture_config(&fixtures().join("linux/x86-laptop"), "")
        .replace("new_metrics_enabled: true", "new_metrics_enabled: false")
}

fn start_device(config: &str, server: &ConfigServer, id: &str) -> Exporter {
    let mut options = Options::new(config);
    options.env = vec![
        ("CONFIG_SERVER_URL", server.url.clone()),
        ("DEVICE_ID", id.to_owned()),
        ("CONFIG_POLL_INTERVAL", POLL.to_owned()),
        ("CONFIG_TIMEOUT", "2".to_owned()),
    ];
    Exporter::start_with(options)
}

fn shows(device: &Exporter, metric: &str) -> bool {
    device.metrics().contains(&format!("\n{metric}{{"))
}

/// Waits until `device`'s `/metrics` shows (or not) `metric`; how long it took.
fn follows(device: &Exporter, name: &str, metric: &str, on: bool) -> Duration {
    let started = Instant::now();
    eventually(
        &format!("{name} {} {metric}", if on { "shows" } else { "drops" }),
        WAIT,
        || (shows(device, metric) == on).then_some(()),
    );
    started.elapsed()
}

fn put(url: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    send("PUT", url, &body.to_string(), &all)
}

fn etag_of(server: &ConfigServer, path: &str) -> String {
    server.get(path).header("etag").expect("an ETag").to_owned()
}

fn device_row(server: &ConfigServer, id: &str) -> Value {
    server.get("/devices").json()["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["device_id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn group_changes_reach_members_and_a_device_override_wins_until_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let config = device_config();
    let ids = ["edge-a", "edge-b", "edge-c"];
    let devices: Vec<Exporter> = ids
        .iter()
        .map(|id| start_device(&config, &server, id))
        .collect();
    for id in ids {
        eventually(&format!("{id} registered"), WAIT, || {
            let r = server.get(&format!("/config/{id}"));
            (r.status == 200 && r.json()["metrics"]["host_cpu_active_cores"] == false).then_some(())
        });
    }
    for d in &devices {
        assert!(!shows(d, "host_cpu_active_cores"));
    }

    // A group that matches every edge-* device switches a metric on for all.
    let group_url = format!("{}/groups/lab", server.url);
    let r = put(
        &group_url,
        &json!({"match": {"hostname": "edge-*", "device_type": "linux"},
                "metrics": {"host_cpu_active_cores": true}}),
        &[("If-None-Match", "*")],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["members"], 3);
    for (d, id) in devices.iter().zip(ids) {
        let took = follows(d, id, "host_cpu_active_cores", true);
        eprintln!("group → {id}: {took:?} (poll {POLL} s)");
    }
    let groups = server.get("/groups").json();
    assert_eq!(groups["groups"][0]["name"], "lab");
    assert_eq!(groups["groups"][0]["members"], 3);

    // edge-a switches it off itself: an override on the server, kept on the device.
    let r = devices[0].api_post("/metrics/enable", r#"{"host_cpu_active_cores": false}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("edge-a's override on the server", WAIT, || {
        let layer = server.get("/config/edge-a?layer=device").json();
        (layer["metrics"]["host_cpu_active_cores"] == false).then_some(())
    });
    assert!(!shows(&devices[0], "host_cpu_active_cores"));
    assert_eq!(
        server.get("/devices").json()["devices"][0]["overrides"],
        1,
        "edge-a has one override"
    );

    // The group changes another key: every member follows it, edge-a keeps its own.
    let etag = etag_of(&server, "/groups/lab");
    let r = put(
        &group_url,
        &json!({"match": {"hostname": "edge-*", "device_type": "linux"},
                "metrics": {"host_cpu_active_cores": true, "host_ram_used_mb": true}}),
        &[("If-Match", &etag)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for (d, id) in devices.iter().zip(ids) {
        follows(d, id, "host_ram_used_mb", true);
    }
    assert!(
        !shows(&devices[0], "host_cpu_active_cores"),
        "the override survived"
    );
    assert!(shows(&devices[1], "host_cpu_active_cores"));

    // Dropping the override brings the group's value back.
    let etag = etag_of(&server, "/config/edge-a");
    let r = send(
        "DELETE",
        &format!(
            "{}/config/edge-a/overrides/metrics.host_cpu_active_cores",
            server.url
        ),
        "",
        &[("If-Match", &etag)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    follows(&devices[0], "edge-a", "host_cpu_active_cores", true);
    assert_eq!(server.get("/config/edge-a?layer=device").json(), json!({}));

    // edge-c in a second group, later in its order: the later group's value.
    let r = put(
        &format!("{}/groups/quiet", server.url),
        &json!({"metrics": {"host_ram_used_mb": false}}),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let etag = etag_of(&server, "/devices/edge-c/groups");
    let r = put(
        &format!("{}/devices/edge-c/groups", server.url),
        &json!(["quiet"]),
        &[("If-Match", &etag)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["effective_groups"], json!(["lab", "quiet"]));
    follows(&devices[2], "edge-c", "host_ram_used_mb", false);
    assert!(shows(&devices[1], "host_ram_used_mb"));

    // The fleet view: what each device reported with its polls.
    let version = devices[0].api_get("/health").json()["version"].clone();
    for id in ids {
        let row = eventually(&format!("{id} reported its applied revision"), WAIT, || {
            let row = device_row(&server, id);
            (row["applied_revision"] == row["revision"] && row["pending_changes"] == 0)
                .then_some(row)
        });
        assert_eq!(row["version"], version, "{row}");
        assert!(row["failing_collectors"].is_array(), "{row}");
        assert!(row["last_contact"].as_f64().is_some(), "{row}");
    }
    let quiet = server.get("/devices?group=quiet").json();
    assert_eq!(quiet["devices"].as_array().map(Vec::len), Some(1));
    assert_eq!(quiet["devices"][0]["device_id"], "edge-c");
    assert_eq!(
        server.get("/devices?device_type=jetson_*").json()["devices"],
        json!([])
    );

    // The history says which layer made each revision.
    let history = server.get("/config/edge-a/history").json();
    let layers: Vec<&str> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|r| r["layer"].as_str())
        .collect();
    assert_eq!(layers.first(), Some(&"device"), "{layers:?}");
    assert!(layers.contains(&"group:lab"), "{layers:?}");
    assert_eq!(
        layers.last(),
        Some(&"device"),
        "the dropped override: {layers:?}"
    );
    let history = server.get("/config/edge-c/history").json();
    assert!(
        history["history"]
            .as_array()
            .expect("history")
            .iter()
            .any(|r| r["layer"] == "membership"),
        "{history}"
    );
}

#[test]
fn a_failing_collector_shows_in_the_fleet_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    // tegrastats pointed at a program that cannot start: the collector fails.
    let config = format!(
        "{}tegrastats:\n  command: /nonexistent/tegrastats\n",
        device_config()
    )
    .replace("device_type: linux", "device_type: jetson_orin");
    let device = start_device(&config, &server, "orin-broken");
    let row = eventually("the device reports its failing collector", WAIT, || {
        let row = device_row(&server, "orin-broken");
        row["failing_collectors"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
            .then_some(row)
    });
    let health = device.api_get("/health").json();
    let failing: Vec<Value> = health["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .filter(|c| c["status"] == "failing")
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(row["failing_collectors"], Value::Array(failing), "{row}");
}

#[test]
fn groups_api_if_match_validation_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let url = |path: &str| format!("{}{path}", server.url);

    // Invalid groups are refused with the field, and nothing is stored.
    for (body, field) in [
        (json!({"interval": "fast"}), "interval"),
        (json!({"path": {"sysfs": "/tmp"}}), "path"),
        (json!({"device_type": "jetson_orin"}), "device_type"),
        (json!({"hostname": "same-for-all"}), "hostname"),
        (json!({"shelly": {"secret": "x"}}), "shelly.secret"),
        (json!({"match": {"os": "linux"}}), "match"),
        (json!({"match": "jetson_*"}), "match"),
    ] {
        let r = put(&url("/groups/lab"), &body, &[]);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["field"], field, "{body}: {}", r.body);
    }
    let r = put(&url("/groups/lab"), &json!([1, 2]), &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = put(&url("/groups/a%2Fb"), &json!({}), &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(server.get("/groups/lab").status, 404);
    assert_eq!(server.get("/groups").json(), json!({"groups": []}));

    // Create only once; then If-Match by HTTP's rules.
    let group = json!({"interval": 30, "metrics": {"host_*": false}});
    let r = put(&url("/groups/lab"), &group, &[("If-None-Match", "*")]);
    assert_eq!(
        (r.status, r.header("etag")),
        (201, Some("\"1\"")),
        "{}",
        r.body
    );
    let r = put(&url("/groups/lab"), &group, &[("If-None-Match", "*")]);
    assert_eq!(r.status, 412, "{}", r.body);
    assert_eq!(r.json()["revision"], 1);
    let got = server.get("/groups/lab");
    assert_eq!(got.json(), group);
    assert_eq!(got.header("etag"), Some("\"1\""));
    let changed = json!({"interval": 60});
    for tag in ["\"2\"", "\"no-such-revision\"", "W/\"1\"", "garbage", "\"1"] {
        let r = put(&url("/groups/lab"), &changed, &[("If-Match", tag)]);
        assert_eq!(r.status, 412, "If-Match: {tag}: {}", r.body);
    }
    assert_eq!(server.get("/groups/lab").json(), group, "nothing stored");
    let r = put(
        &url("/groups/lab"),
        &changed,
        &[("If-Match", "\"7\", \"1\"")],
    );
    assert_eq!(
        (r.status, r.header("etag")),
        (200, Some("\"2\"")),
        "{}",
        r.body
    );
    let r = send("DELETE", &url("/groups/lab"), "", &[("If-Match", "\"1\"")]);
    assert_eq!(r.status, 412, "{}", r.body);
    let r = send("DELETE", &url("/groups/lab"), "", &[("If-Match", "\"2\"")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(server.get("/groups/lab").status, 404);
    let history = server.get("/groups/lab/history").json();
    let configs: Vec<Value> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|r| r["config"].clone())
        .collect();
    assert_eq!(configs, [group, changed, Value::Null]);

    // The same rules on a device's config, its layers and its groups.
    let device = json!({"device_type": "linux", "metrics": {"host_ram_used_mb": true}});
    assert_eq!(put(&url("/config/edge-01"), &device, &[]).status, 201);
    for tag in ["\"no-such-revision\"", "\"2\"", "W/\"1\""] {
        let r = put(&url("/config/edge-01"), &device, &[("If-Match", tag)]);
        assert_eq!(r.status, 412, "If-Match: {tag}: {}", r.body);
    }
    let r = put(
        &url("/config/edge-01"),
        &device,
        &[("If-None-Match", "\"1\"")],
    );
    assert_eq!(
        r.status, 412,
        "If-None-Match on the current tag: {}",
        r.body
    );
    assert_eq!(server.get("/config/edge-01?layer=bogus").status, 400);
    assert_eq!(server.get("/config/edge-01?layer=device").json(), json!({}));
    let r = put(&url("/devices/edge-01/groups"), &json!(["nope"]), &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = put(&url("/devices/edge-01/groups"), &json!({"groups": []}), &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = put(&url("/devices/nobody/groups"), &json!([]), &[]);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = send(
        "DELETE",
        &url("/config/edge-01/overrides/interval"),
        "",
        &[],
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(server.get("/config/edge-01").header("etag"), Some("\"1\""));
}
