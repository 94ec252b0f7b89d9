//! The exporter dropped into a Prometheus estate that runs node_exporter: its
//! flags (`--web.*`, `--collector.*`, `--log.*`), exporter-toolkit's web config
//! file scraped by a real Prometheus with a bcrypt user, and `check-config
//! --strict`.

use std::path::Path;
use std::time::Duration;

use crate::energy::{ORIN_NANO_LINE, jetson};
use crate::support::*;
use crate::tls::{OwnPrometheus, https_get, port_of, trusting};

fn options_with<'a>(config: &'a str, args: &[&str]) -> Options<'a> {
    let mut options = Options::new(config);
    options.args = args.iter().map(|a| (*a).to_owned()).collect();
    options
}

/// Series names of a metrics page.
fn names(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
        .collect()
}

#[test]
fn collector_switches_as_node_exporter_spells_them() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    // Everything: host series and the Jetson's.
    let all = Exporter::start(&j.config);
    // tegrastats, linux and the sysfs rails each publish on their own first round.
    all.metrics_until("tegrastats, linux and the rails", |b| {
        b.contains("\njetson_ram_used_mb{")
            && b.contains("\nhost_ram_used_mb{")
            && b.contains("\njetson_power_vdd_in_watts{")
    });

    // --no-collector.linux: no host_ series, the rest stays.
    let no_linux = Exporter::start_with(options_with(&j.config, &["--no-collector.linux"]));
    let body = no_linux.metrics_until("tegrastats and the rails", |b| {
        b.contains("\njetson_ram_used_mb{") && b.contains("\njetson_power_vdd_in_watts{")
    });
    assert!(
        !names(&body).iter().any(|n| n.starts_with("host_")),
        "{body}"
    );
    assert!(
        body.contains("\njetson_power_vdd_in_watts{"),
        "the sysfs rails stay"
    );
    let health = no_linux.api_get("/health").json();
    let collectors = collector_names(&health);
    assert!(!collectors.iter().any(|c| c == "linux"), "{collectors:?}");

    // Only tegrastats: its series, no rails from sysfs (tegrastats' own instead).
    let only = Exporter::start_with(options_with(
        &j.config,
        &["--collector.disable-defaults", "--collector.tegrastats"],
    ));
    let body = only.metrics_until("tegrastats", |b| b.contains("\njetson_ram_used_mb{"));
    let health = only.api_get("/health").json();
    let collectors = collector_names(&health);
    assert_eq!(collectors, ["tegrastats"], "{health}");
    assert_eq!(health["collector"], "tegrastats");
    assert!(!names(&body).iter().any(|n| n.starts_with("host_")));
    // Without the sysfs rails, tegrastats' VDD_IN (12.479 W) is the power.
    assert!(
        body.contains("jetson_power_vdd_in_watts{device_type=\"jetson_orin\",hostname=\"fixture-host\"} 12.479"),
        "{body}"
    );
    // An unknown collector is refused by the command line.
    let (status, _, err) = run_binary(&["--collector.toaster"], Path::new("/"));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--collector.toaster"), "{err}");
}

#[test]
fn listen_addresses_telemetry_path_exporter_metrics_and_log_flags() {
    let root = fixtures().join("linux/x86-laptop");
    let config = fixture_config(&root, "");
    let (a, b) = (free_port(), free_port());
    let first = format!("127.0.0.1:{a}");
    let second = format!("127.0.0.1:{b}");
    let exporter = Exporter::start_with(options_with(
        &config,
        &[
            "--web.listen-address",
            &first,
            "--web.listen-address",
            &second,
            "--web.telemetry-path=/node-metrics",
            "--web.disable-exporter-metrics",
            // A filter: the daemon's info lines (the test waits for them), the
            // rest at warn, so the scheduler's "collector started" is not shown.
            "--log.level=edge_metrics_exporter::daemon=info,warn",
            "--log.format",
            "json",
        ],
    ));
    for port in [a, b] {
        let body = eventually("metrics on both listeners", Duration::from_secs(10), || {
            let r = get(&format!("http://127.0.0.1:{port}/node-metrics"), &[]);
            (r.status == 200 && r.body.contains("host_ram_total_mb")).then_some(r.body)
        });
        // The device's series only: no edge_exporter_*, no process_*.
        assert!(
            !names(&body)
                .iter()
                .any(|n| n.starts_with("edge_exporter_") || n.starts_with("process_")),
            "{body}"
        );
        let old = get(&format!("http://127.0.0.1:{port}/metrics"), &[]);
        assert_eq!(old.status, 404);
        assert!(old.body.contains("/node-metrics"), "{}", old.body);
    }
    // JSON lines, filtered as --log.level says (over the environment's info).
    let log = exporter.log_text();
    assert!(
        log.lines().all(|l| l.starts_with('{')) && log.contains("\"level\":\"INFO\""),
        "{log}"
    );
    assert!(!log.contains("collector started"), "{log}");
    // A bad address or path is a start-up error naming the flag.
    for args in [
        &["--web.listen-address", "nowhere"][..],
        &["--web.telemetry-path", "/ready"][..],
    ] {
        let (status, _, err) = run_binary(args, Path::new("/"));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[0]), "{err}");
    }
}

#[test]
fn prometheus_scrapes_with_a_bcrypt_user_from_a_web_config_file() {
    let Some(prometheus) = peer("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (cert, key) = pki.leaf("metrics");
    let hash = bcrypt::hash("scrape-pass", 6).expect("bcrypt");
    // The format of exporter-toolkit's docs; relative paths from the file.
    let web = dir.path().join("web-config.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS12\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
             basic_auth_users:\n  prometheus: {hash}\n",
            cert.file_name().expect("name").to_string_lossy(),
            key.display()
        ),
    )
    .expect("web config");
    let root = fixtures().join("linux/x86-laptop");
    let config = fixture_config(&root, "");
    let web_flag = web.display().to_string();
    let exporter = Exporter::start_with(options_with(&config, &["--web.config.file", &web_flag]));
    let port = port_of(&exporter.metrics_url);
    let url = format!("https://127.0.0.1:{port}/metrics");
    let trust = trusting(&pki.ca);
    let basic = edge_metrics_exporter::net::auth::basic_header;
    let status_as = |user: &str, password: &str| {
        https_get(&url, &trust, &[("Authorization", &basic(user, password))])
            .expect("https")
            .0
    };
    let (status, _) = https_get(&url, &trust, &[]).expect("https");
    assert_eq!(status, 401);
    assert_eq!(status_as("prometheus", "wrong"), 401);
    let (status, body) = https_get(
        &url,
        &trust,
        &[("Authorization", &basic("prometheus", "scrape-pass"))],
    )
    .expect("https");
    assert_eq!(status, 200);
    assert!(body.contains("host_ram_total_mb"));
    // The management API keeps its own rules (plain HTTP, no user here).
    assert_eq!(exporter.api_get("/health").status, 200);

    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "scrape-pass").expect("password");
    let tls_block = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n",
        pki.ca.display()
    );
    let target = format!("127.0.0.1:{port}");
    let jobs = format!(
        "  - job_name: web_config\n{tls_block}    basic_auth:\n      username: prometheus\n      password_file: {}\n    static_configs:\n      - targets: ['{target}']\n\
         \x20 - job_name: wrong_password\n{tls_block}    basic_auth:\n      username: prometheus\n      password: nope\n    static_configs:\n      - targets: ['{target}']\n",
        password_file.display()
    );
    let prom = OwnPrometheus::start(&prometheus, dir.path(), &jobs);
    prom.wait_for("up{job=\"web_config\"}", 1.0);
    prom.wait_for("up{job=\"wrong_password\"}", 0.0);
    prom.wait_for("count(host_ram_total_mb{job=\"web_config\"})", 1.0);
    // Re-read at a reload: another user, the old one refused (even though its
    // check was remembered).
    let second = bcrypt::hash("second-pass", 4).expect("bcrypt");
    let text = std::fs::read_to_string(&web).expect("read");
    let (head, _) = text.split_once("basic_auth_users:").expect("users");
    std::fs::write(
        &web,
        format!("{head}basic_auth_users:\n  second: {second}\n"),
    )
    .expect("write");
    assert_eq!(exporter.api_post("/reload", "").status, 200);
    assert_eq!(status_as("second", "second-pass"), 200);
    assert_eq!(status_as("prometheus", "scrape-pass"), 401);
    std::fs::write(
        &web,
        format!("{head}basic_auth_users:\n  prometheus: {hash}\n"),
    )
    .expect("write");
    assert_eq!(exporter.api_post("/reload", "").status, 200);
    // The header of the web config is on the answers.
    let headers = https_headers(&url, &pki.ca, &basic("prometheus", "scrape-pass"));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-frame-options: deny"),
        "{headers}"
    );
}

/// The response head of an HTTPS request, as curl-less openssl prints it.
fn https_headers(url: &str, ca: &Path, authorization: &str) -> String {
    let port = port_of(url.trim_end_matches("/metrics"));
    let script = format!(
        "printf 'GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: {authorization}\\r\\nConnection: close\\r\\n\\r\\n' \
         | openssl s_client -quiet -connect 127.0.0.1:{port} -CAfile {} 2>/dev/null | head -c 2000",
        ca.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_config_strict_names_a_typo_and_shows_what_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "device_type: linux\nintervall: 5\n").expect("write");
    let file = path.display().to_string();
    // Without --strict: valid, the typo reported with a suggestion.
    let (status, out, _) = run_binary(&["check-config", "--config", &file], dir.path());
    assert!(status.success());
    assert!(out.contains("intervall (did you mean interval?)"), "{out}");
    // With it: exit 2, the suggestion on stderr.
    let (status, _, err) = run_binary(&["check-config", "--strict", "--config", &file], dir.path());
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("unknown key intervall (did you mean interval?)"),
        "{err}"
    );
    // The flags win over the file, and the check says so.
    std::fs::write(&path, "device_type: linux\nport: 9200\n").expect("write");
    let (status, out, _) = run_binary(
        &[
            "check-config",
            "--strict",
            "--config",
            &file,
            "--web.listen-address",
            ":9300",
        ],
        dir.path(),
    );
    assert!(status.success(), "{out}");
    assert!(
        out.contains("metrics listen: 0.0.0.0:9300  [--web.listen-address (wins over the file)]"),
        "{out}"
    );
    let (_, out, _) = run_binary(&["check-config", "--config", &file], dir.path());
    assert!(out.contains("metrics listen: 0.0.0.0:9200"), "{out}");
}

#[test]
fn metric_patterns_switch_families_and_survive_the_exporters_edits() {
    let m = crate::metrics_endpoint::machine();
    let config = fixture_config(
        &m.root,
        "metrics:\n  host_cpu_core*_usage_percent: false\n  host_cpu_core2_usage_percent: true\n",
    );
    let exporter = Exporter::start(&config);
    let body = exporter.metrics_until("CPU usage", |b| {
        b.contains("\nhost_cpu_core2_usage_percent{")
    });
    // The exact id beats the pattern; the others are off.
    for core in [0, 1, 3] {
        assert!(
            !body.contains(&format!("\nhost_cpu_core{core}_usage_percent{{")),
            "core {core}: {body}"
        );
    }
    exporter.wait_settled();
    let text = exporter.config_text();
    // Discovery wrote the new ids, but none the pattern covers.
    assert!(text.contains("  host_ram_used_mb: true"), "{text}");
    assert!(!text.contains("host_cpu_core0_usage_percent"), "{text}");
    assert!(
        text.contains("  host_cpu_core*_usage_percent: false"),
        "{text}"
    );
    // The API's own edit keeps the pattern; an id the pattern covers may be
    // switched on by its own entry.
    let r = exporter.api_post(
        "/metrics/enable",
        r#"{"host_ram_used_mb": false, "host_cpu_core1_usage_percent": true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = exporter.metrics_until("core 1 on", |b| {
        b.contains("\nhost_cpu_core1_usage_percent{") && !b.contains("\nhost_ram_used_mb{")
    });
    assert!(!body.contains("\nhost_cpu_core0_usage_percent{"));
    let text = exporter.config_text();
    assert!(
        text.contains("  host_cpu_core*_usage_percent: false"),
        "{text}"
    );
    assert!(
        text.contains("  host_cpu_core1_usage_percent: true"),
        "{text}"
    );
}
