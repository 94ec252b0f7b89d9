//! The management API: every route, every error, and what reaches `config.yaml`.

use crate::metrics_endpoint::machine;
use crate::support::*;

const COMMENTED: &str = "\
# test config
device_type: linux   # the board
interval: 0.2
port: 0
reload_port: 0
hostname: fixture-host
new_metrics_enabled: false
site_owner: lab-3    # unknown key, kept
metrics:
  # memory
  host_ram_total_mb: true   # keep this comment
  host_ram_used_mb: false
";

fn start_commented(root: &std::path::Path) -> Exporter {
    let config = format!(
        "{COMMENTED}path:\n  procfs: {}\n  sysfs: {}\n",
        root.join("proc").display(),
        root.join("sys").display()
    );
    Exporter::start(&config)
}

#[test]
fn health_config_and_list() {
    let m = machine();
    let exporter = start_commented(&m.root);
    exporter.metrics_until("discovery", |_| {
        exporter.config_text().contains("host_swap_total_mb: false")
    });

    // The file is written first, the live config follows: wait for both.
    let health = eventually(
        "discovered ids in the live config",
        std::time::Duration::from_secs(10),
        || {
            let r = exporter.api_get("/health");
            (r.json()["metrics_count"].as_u64().unwrap_or(0) > 2).then_some(r)
        },
    );
    assert_eq!(health.status, 200);
    assert_eq!(health.content_type, "application/json");
    let h = health.json();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["device_type"], "linux");
    assert_eq!(h["collector"], "linux");
    assert_eq!(h["config_source"], "local");
    assert!(h["metrics_count"].as_u64().expect("count") > 2);

    let c = exporter.api_get("/config").json();
    assert_eq!(c["device_type"], "linux");
    assert_eq!(c["interval"], 0.2);
    assert_eq!(c["port"], 0);
    assert_eq!(c["site_owner"], "lab-3");
    assert_eq!(c["shelly"]["enabled"], false);
    assert_eq!(c["shelly"]["server_url"], "http://localhost:8766");
    assert_eq!(c["metrics"]["host_ram_total_mb"], true);

    let list = exporter.api_get("/metrics/list").json();
    assert_eq!(list["device_type"], "linux");
    assert_eq!(list["source"], "local");
    assert_eq!(list["metrics"]["host_ram_total_mb"], true);
    assert_eq!(list["metrics"]["host_ram_used_mb"], false);
    // Auto-discovery listed the rest as disabled.
    assert_eq!(list["metrics"]["host_swap_total_mb"], false);
}

#[test]
fn enable_writes_the_file_before_answering_and_keeps_comments() {
    let m = machine();
    let exporter = start_commented(&m.root);
    exporter.metrics_until("discovery", |_| {
        exporter.config_text().contains("host_swap_total_mb: false")
    });
    let body = exporter.metrics();
    assert!(body.contains("host_ram_total_mb{"));
    assert!(!body.contains("host_ram_used_mb{"), "disabled in the file");
    assert!(
        !body.contains("host_swap_total_mb{"),
        "discovered as disabled"
    );

    let r = exporter.api_post(
        "/metrics/enable",
        r#"{"host_ram_used_mb": true, "host_swap_total_mb": true, "host_ram_total_mb": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["status"], "success");
    assert_eq!(j["updated"], 3);
    assert_eq!(j["metrics"]["host_ram_used_mb"], true);
    assert_eq!(j["metrics"]["host_ram_total_mb"], false);

    // On disk before the answer: comments, order and unknown keys survive.
    let text = exporter.config_text();
    assert!(
        text.starts_with("# test config\ndevice_type: linux   # the board\n"),
        "{text}"
    );
    assert!(text.contains("site_owner: lab-3    # unknown key, kept\n"));
    assert!(text.contains("  # memory\n  host_ram_total_mb: false   # keep this comment\n  host_ram_used_mb: true\n"), "{text}");
    assert!(text.contains("  host_swap_total_mb: true\n"));

    let body = exporter.metrics_until("the change", |b| b.contains("host_ram_used_mb{"));
    assert!(body.contains("host_swap_total_mb{"));
    assert!(!body.contains("host_ram_total_mb{"));
}

#[test]
fn enable_rejects_bad_input_and_changes_nothing() {
    let m = machine();
    let exporter = start_commented(&m.root);
    exporter.metrics_until("discovery", |_| {
        exporter.config_text().contains("host_swap_total_mb: false")
    });
    let before = exporter.config_text();
    let cases: &[(&str, u16, &str)] = &[
        ("not json", 400, "Invalid JSON"),
        ("", 400, "Invalid JSON"),
        ("[\"host_ram_used_mb\"]", 400, "JSON object"),
        (
            "{\"host_ram_used_mb\": \"yes\"}",
            400,
            "Invalid value for host_ram_used_mb",
        ),
        ("{\"host_ram_used_mb\": 1}", 400, "expected true or false"),
        (
            "{\"host_ram_used_mb\": true, \"invalid_metric\": true}",
            400,
            "Invalid metric name: invalid_metric",
        ),
    ];
    for (body, status, message) in cases {
        let r = exporter.api_post("/metrics/enable", body);
        assert_eq!(r.status, *status, "{body}: {}", r.body);
        let error = r.json()["error"].as_str().expect("error string").to_owned();
        assert!(error.contains(message), "{body}: {error}");
    }
    assert_eq!(
        exporter
            .api_post("/metrics/enable", r#"{"invalid_metric": true}"#)
            .json()["error"],
        "Invalid metric name: invalid_metric"
    );
    // Over 100 KiB.
    let big = format!(
        "{{\"host_ram_used_mb\": true, \"pad\": \"{}\"}}",
        "x".repeat(101 * 1024)
    );
    let r = exporter.api_post("/metrics/enable", &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .expect("error")
            .contains("too large")
    );

    assert_eq!(exporter.config_text(), before, "nothing changed on disk");
    assert_eq!(
        exporter.api_get("/metrics/list").json()["metrics"]["host_ram_used_mb"],
        false
    );
}

#[test]
fn unknown_routes_and_methods_are_json() {
    let m = machine();
    let exporter = start_commented(&m.root);
    let r = exporter.api_get("/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "Not found: /nope");
    let r = exporter.api_get("/reload");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert!(
        r.json()["error"]
            .as_str()
            .expect("error")
            .contains("not allowed")
    );
    let r = exporter.api_post("/health", "");
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
}

#[test]
fn tokens_protect_metrics_and_api() {
    let m = machine();
    let config = fixture_config(
        &m.root,
        "metrics_token: m-secret\napi_token: a-secret\nshelly:\n  enabled: false\n  secret: s-secret\n\
         remote_write:\n  url: http://127.0.0.1:1/api/v1/write\n  interval: 60\n  basic_auth:\n    username: u\n    password: rw-secret\n",
    );
    let exporter = Exporter::start(&config);
    let metrics = format!("{}/metrics", exporter.metrics_url);
    let r = get(&metrics, &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        get(&metrics, &[("Authorization", "Bearer wrong")]).status,
        401
    );
    assert_eq!(
        get(&metrics, &[("Authorization", "Bearer m-secret")]).status,
        200
    );

    let health = format!("{}/health", exporter.api_url);
    assert_eq!(get(&health, &[]).status, 401);
    assert_eq!(
        get(&health, &[("Authorization", "Bearer m-secret")]).status,
        401
    );
    assert_eq!(
        get(&health, &[("Authorization", "Bearer a-secret")]).status,
        200
    );
    let enable = format!("{}/metrics/enable", exporter.api_url);
    assert_eq!(post(&enable, "{}", &[]).status, 401);
    // With a token the API listens beyond loopback; tokens never reach the log or /config.
    let log = exporter.log_text();
    assert!(
        log.contains("management API listening on 0.0.0.0:"),
        "{log}"
    );
    for secret in ["m-secret", "a-secret", "s-secret", "rw-secret"] {
        assert!(!log.contains(secret), "{secret}: {log}");
    }
    let c = get(
        &format!("{}/config", exporter.api_url),
        &[("Authorization", "Bearer a-secret")],
    )
    .json();
    assert_eq!(c["api_token"], "***");
    assert_eq!(c["metrics_token"], "***");
    assert_eq!(c["shelly"]["secret"], "***");
    assert_eq!(c["remote_write"]["basic_auth"]["password"], "***");
    assert_eq!(c["remote_write"]["basic_auth"]["username"], "u");
}

#[test]
fn tokens_from_the_environment() {
    let m = machine();
    let config = fixture_config(&m.root, "");
    let mut options = Options::new(&config);
    options
        .env
        .push(("EDGE_EXPORTER_METRICS_TOKEN", "env-m".into()));
    options
        .env
        .push(("EDGE_EXPORTER_API_TOKEN", "env-a".into()));
    let exporter = Exporter::start_with(options);
    let metrics = format!("{}/metrics", exporter.metrics_url);
    assert_eq!(get(&metrics, &[]).status, 401);
    assert_eq!(
        get(&metrics, &[("Authorization", "Bearer env-m")]).status,
        200
    );
    assert_eq!(
        get(
            &format!("{}/health", exporter.api_url),
            &[("Authorization", "Bearer env-a")]
        )
        .status,
        200
    );
}

#[test]
fn api_is_loopback_only_without_a_token() {
    let m = machine();
    let exporter = Exporter::start(&fixture_config(&m.root, ""));
    assert!(
        exporter.api_url.starts_with("http://127.0.0.1:"),
        "{}",
        exporter.api_url
    );
    assert!(!exporter.log_text().contains("management API is open"));

    let open = Exporter::start(&fixture_config(&m.root, "api_listen_address: 0.0.0.0\n"));
    let mut open = open;
    open.wait_log("the management API is open");
}
