//! The files under `deploy/` against real peers: the alert and recording rules
//! (`promtool check rules`, `promtool test rules`), the example prometheus.yml
//! (`promtool check config`), every query of the Grafana dashboard run by the
//! shared Prometheus against a Jetson replay with a simulated Shelly plug, and the
//! Kubernetes manifests (`kubernetes-validate --strict`, the ServiceMonitor →
//! Service → DaemonSet wiring, and the DaemonSet's args and probes run on the
//! real binary).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::prometheus::prometheus;
use crate::shelly_hub::runtime;
use crate::shelly_sim::{SimPlug, plug_status};
use crate::support::*;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn run_ok(program: &Path, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?}:\n{text}",
        program.display()
    );
    text
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    let Some(promtool) = peer("promtool") else {
        return;
    };
    let dir = deploy("prometheus");
    let out = run_ok(&promtool, &["check", "rules", "rules.yml"], &dir);
    assert!(out.contains("SUCCESS: 19 rules found"), "{out}");
    let out = run_ok(&promtool, &["test", "rules", "rules_test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(&promtool, &["check", "config", "prometheus.yml"], &dir);
    assert!(
        out.contains("is valid prometheus config file syntax"),
        "{out}"
    );
}

/// Every `expr` of the dashboard, with its variables bound to this test's targets.
fn dashboard_queries() -> Vec<(String, String)> {
    dashboard_queries_bound("job=\"edge\",test=\"dashboard\"")
}

/// Every `expr` of the dashboard (panel title, query), with the job and instance
/// variables replaced by `selector`: the device panels, or with a selector naming
/// `hub` the panels of the plug hub's page.
pub fn dashboard_queries_bound(selector: &str) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(deploy("grafana/edge-metrics-exporter.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "edge-metrics-exporter");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title").to_owned();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            // The hub's plug panels select the hub's job instead.
            let hub_panel = expr.contains("job=\"$hub_job\"");
            assert!(
                expr.contains("job=\"$job\",instance=~\"$instance\"") || hub_panel,
                "{title}: every selector follows the variables: {expr}"
            );
            if hub_panel != selector.contains("hub") {
                continue;
            }
            let bound = expr
                .replace("job=\"$job\",instance=~\"$instance\"", selector)
                .replace("job=\"$hub_job\"", selector)
                .replace("$__rate_interval", "30s")
                .replace("$__range", "5m");
            assert!(
                !bound.contains("$__"),
                "{title}: unbound variable in {bound}"
            );
            out.push((title.clone(), bound));
        }
    }
    out
}

#[test]
fn every_dashboard_query_answers_from_a_real_prometheus() {
    let queries = dashboard_queries();
    let Some(prom) = prometheus() else { return };
    let m = crate::metrics_endpoint::machine();
    let port = free_port();
    let recording = Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings/orin-nx-jp6.log");
    let extra = format!(
        "tegrastats:\n  replay: {}\nshelly:\n  listen: 127.0.0.1:{port}\n",
        recording.display()
    );
    let config =
        fixture_config(&m.root, &extra).replace("device_type: linux", "device_type: jetson_orin");
    let mut exporter = Exporter::start(&config);
    exporter.wait_log("shelly websocket listening on");
    let rt = runtime();
    let _plug = rt.block_on(SimPlug::connect(
        &format!("ws://127.0.0.1:{port}/"),
        "shellyplusplugs-b8d61a000010",
        plug_status(21.5, 230.0, 0.1, 3.0),
    ));
    prom.add_target("dashboard", &exporter.metrics_url);
    prom.wait_value("power_total_watts{test=\"dashboard\"}");
    // Long enough for rates over 30 s to have two points.
    std::thread::sleep(Duration::from_secs(3));

    // Panels that must show data for this Jetson + plug (the rest must parse).
    let must_answer = [
        "Wall power (Shelly plug)",
        "Input power (the device's own sensor)",
        "Internal / external power",
        "Power per rail and sensor",
        "Device energy per day",
        "Mean and peak power",
        "Temperatures",
        "Hottest sensor",
        "CPU usage",
        "GPU usage",
        "Memory used",
        "Up",
        "Collectors failing",
        "Collection duration",
        "Requests by route and code",
        "Resident memory",
        "Plugs connected (embedded hub)",
    ];
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    for (title, query) in &queries {
        let url = format!("{}/api/v1/query?query={}", prom.url, urlencode(query));
        let body = get(&url, &[]).body;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["status"], "success", "{title}: {query}\n{body}");
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        *answered.entry(title.clone()).or_default() += n;
    }
    for title in must_answer {
        assert!(
            answered.get(title).is_some_and(|n| *n > 0),
            "{title} shows nothing: {answered:?}"
        );
    }
    // The values behind the power panels.
    let value = |title: &str| -> f64 {
        let (_, query) = queries.iter().find(|(t, _)| t == title).expect("panel");
        let url = format!("{}/api/v1/query?query={}", prom.url, urlencode(query));
        let v: Value = serde_json::from_str(&get(&url, &[]).body).expect("json");
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a value")
    };
    assert_eq!(value("Wall power (Shelly plug)"), 21.5);
    let device = value("Input power (the device's own sensor)");
    let ratio = value("Internal / external power");
    assert!(
        (10.0..20.0).contains(&device),
        "VDD_IN of the recording: {device}"
    );
    assert!(
        (ratio - device / 21.5).abs() < 0.2,
        "{ratio} vs {device}/21.5"
    );
    eprintln!("dashboard: {} queries, {answered:?}", queries.len());
}

/// The documents of a multi-document YAML file.
fn documents(path: &Path) -> Vec<yaml_serde::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).expect("manifest");
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| yaml_serde::Value::deserialize(d).expect("yaml"))
        .collect()
}

fn of_kind<'a>(docs: &'a [yaml_serde::Value], kind: &str) -> &'a yaml_serde::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(v: &yaml_serde::Value) -> Vec<String> {
    v.as_sequence()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

#[test]
fn kubernetes_manifests_validate_and_their_args_run_on_the_binary() {
    let manifests = [
        deploy("kubernetes/edge-metrics-exporter.yaml"),
        deploy("kubernetes/config-server.yaml"),
    ];
    if let Some(validate) = peer("kubernetes-validate") {
        for path in &manifests {
            let out = Command::new(&validate)
                .arg("--strict")
                .arg(path)
                .output()
                .expect("kubernetes-validate");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}:\n{text}", path.display());
            // Only the ServiceMonitor (a CRD) has no built-in schema.
            for line in text.lines().filter(|l| !l.starts_with("INFO")) {
                assert!(line.contains("kind ServiceMonitor"), "{line}");
            }
        }
    }

    // ServiceMonitor → Service → DaemonSet pods, by labels and port names.
    let docs = documents(&manifests[0]);
    let daemonset = of_kind(&docs, "DaemonSet");
    let service = of_kind(&docs, "Service");
    let monitor = of_kind(&docs, "ServiceMonitor");
    let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&daemonset["spec"]["selector"]["matchLabels"], pod_labels);
    assert_eq!(&service["spec"]["selector"], pod_labels);
    let service_labels = &service["metadata"]["labels"];
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels")
    {
        assert_eq!(&service_labels[k.as_str().expect("key")], v);
    }
    let port_name = monitor["spec"]["endpoints"][0]["port"]
        .as_str()
        .expect("port");
    assert_eq!(
        service["spec"]["ports"][0]["name"].as_str(),
        Some(port_name)
    );
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["name"].as_str(), Some(port_name));
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(9102));

    // The container's args and env on the real binary: host paths → a fixture
    // machine, the config server's Service → a real config server.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let m = crate::metrics_endpoint::machine();
    let args: Vec<String> = strings(&container["args"])
        .into_iter()
        .map(|a| {
            a.replace("/host/proc", &m.root.join("proc").display().to_string())
                .replace("/host/sys", &m.root.join("sys").display().to_string())
                .replace("/host/root", &m.root.display().to_string())
                .replace(
                    "/var/lib/edge-metrics-exporter",
                    &dir.path().display().to_string(),
                )
        })
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--config=")), "{args:?}");
    let mut env = Vec::new();
    for e in container["env"].as_sequence().expect("env") {
        let name = e["name"].as_str().expect("name");
        let value = match name {
            "DEVICE_ID" => "node-7".to_owned(),
            "CONFIG_SERVER_URL" => server.url.clone(),
            _ => e["value"].as_str().expect("value").to_owned(),
        };
        env.push((name, value));
    }
    // The binary listens on the manifest's port; a test cannot own 9102, so the
    // port moves to a free one through the config the server hands out.
    let port = free_port();
    let config = format!("device_type: linux\ninterval: 0.2\nport: {port}\nreload_port: 0\n");
    let put = send(
        "PUT",
        &format!("{}/config/node-7", server.url),
        &serde_json::to_string(&yaml_serde::from_str::<Value>(&config).expect("yaml"))
            .expect("json"),
        &[("Content-Type", "application/json")],
    );
    assert!(matches!(put.status, 200 | 201), "{}", put.body);
    let mut command = Command::new(BIN);
    command
        .args(&args)
        .env_remove("EDGE_EXPORTER_API_TOKEN")
        .env_remove("EDGE_EXPORTER_METRICS_TOKEN")
        .env_remove("CONFIG_SERVER_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in &env {
        command.env(k, v);
    }
    let (mut child, log) = spawn_logged(command);
    wait_log(&mut child, &log, "exporter running");
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("\"device_id\":\"node-7\"")),
        "JSON logs name the device: {:?}",
        log.lock().unwrap()
    );
    let base = format!("http://127.0.0.1:{port}");
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().expect("path");
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some(port_name)
        );
        eventually(probe, Duration::from_secs(10), || {
            (get(&format!("{base}{path}"), &[]).status == 200).then_some(())
        });
    }
    assert!(
        get(&format!("{base}/metrics"), &[])
            .body
            .contains("host_ram_total_mb")
    );
    let _ = child.kill();
    let _ = child.wait();
}
