//! HTTPS on the exporter's listeners: a real Prometheus scrapes over TLS with a
//! bearer token and with Basic credentials, a wrong token is refused, the
//! certificate is re-read on SIGHUP (a broken one leaves the old one serving),
//! and client certificates are required when `client_ca_file` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edge_metrics_exporter::config::TlsClientConfig;
use edge_metrics_exporter::net::{client, tls};

use crate::support::*;

/// GET over HTTPS with the crate's own client: status and body, or the error.
pub fn https_get(
    url: &str,
    client_tls: &TlsClientConfig,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let tls = tls::client(client_tls).map_err(|e| e.to_string())?;
    let headers: Vec<(hyper::header::HeaderName, String)> = headers
        .iter()
        .map(|(k, v)| (k.parse().expect("header name"), (*v).to_owned()))
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(client::Client::new(Some(tls)).get(
            url,
            &headers,
            Duration::from_secs(5),
            4 << 20,
        ))
        .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
        .map_err(|e| e.to_string())
}

pub fn trusting(ca: &Path) -> TlsClientConfig {
    TlsClientConfig {
        ca_file: Some(ca.to_owned()),
        ..Default::default()
    }
}

/// The subject of the certificate served on `port`, as openssl prints it.
fn served_subject(port: &str, ca: &Path) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -CAfile {} </dev/null 2>/dev/null \
         | openssl x509 -noout -subject",
        ca.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn port_of(url: &str) -> String {
    url.rsplit(':').next().expect("port").to_owned()
}

pub struct OwnPrometheus {
    child: Child,
    url: String,
}

impl Drop for OwnPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OwnPrometheus {
    pub fn start(binary: &Path, dir: &Path, scrape_configs: &str) -> OwnPrometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{scrape_configs}"
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let prometheus = OwnPrometheus {
            child: command.spawn().expect("spawn prometheus"),
            url: format!("http://127.0.0.1:{port}"),
        };
        eventually("prometheus ready", Duration::from_secs(30), || {
            (get_or_none(&format!("{}/-/ready", prometheus.url))? == 200).then_some(())
        });
        prometheus
    }

    /// The value of `promql` once it returns one series equal to `want`.
    pub fn wait_for(&self, promql: &str, want: f64) {
        let url = format!("{}/api/v1/query?query={}", self.url, urlencode(promql));
        let mut last = String::new();
        let found = (0..240).any(|_| {
            last = get(&url, &[]).body;
            let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            let hit = result.len() == 1
                && result[0]["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    == Some(want);
            if !hit {
                std::thread::sleep(Duration::from_millis(250));
            }
            hit
        });
        assert!(found, "{promql} never became {want}; last answer {last}");
    }
}

fn get_or_none(url: &str) -> Option<u16> {
    ureq::get(url).call().ok().map(|r| r.status().as_u16())
}

fn copy(from: &Path, to: &Path) {
    // Written beside and renamed, the way certificate tools replace files.
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

#[test]
fn prometheus_scrapes_over_tls_with_a_token_or_basic_auth_and_certificates_reload() {
    let Some(prometheus) = peer("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (first_cert, first_key) = pki.leaf("first");
    let (renewed_cert, renewed_key) = pki.leaf("renewed");
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    copy(&first_cert, &live_cert);
    copy(&first_key, &live_key);

    let root = fixtures().join("linux/x86-laptop");
    let extra = format!(
        "metrics_token: scrape-token\nmetrics_basic_auth:\n  username: prometheus\n  password: b4sic-pass\n\
         api_token: api-token\ntls:\n  cert_file: {}\n  key_file: {}\n",
        live_cert.display(),
        live_key.display()
    );
    let exporter = Exporter::start(&fixture_config(&root, &extra));
    let metrics_port = port_of(&exporter.metrics_url);
    let metrics = format!("https://127.0.0.1:{metrics_port}/metrics");
    let trust = trusting(&pki.ca);

    // Our own client: TLS without credentials is refused, with either it passes.
    let (status, _) = https_get(&metrics, &trust, &[]).expect("https");
    assert_eq!(status, 401);
    let (status, body) = https_get(
        &metrics,
        &trust,
        &[("Authorization", "Bearer scrape-token")],
    )
    .expect("https");
    assert_eq!(status, 200);
    assert!(body.contains("edge_exporter_build_info"), "{body}");
    // Plain HTTP to the HTTPS port gets no answer (and is counted).
    assert!(
        ureq::get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
            .call()
            .is_err()
    );
    // A client that does not trust the test CA does not connect.
    let untrusting = https_get(&metrics, &TlsClientConfig::default(), &[]);
    assert!(untrusting.is_err(), "{untrusting:?}");
    assert!(served_subject(&metrics_port, &pki.ca).contains("CN = first"));

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "scrape-token\n").expect("token");
    let target = format!("127.0.0.1:{metrics_port}");
    let tls_block = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n",
        pki.ca.display()
    );
    let jobs = format!(
        "  - job_name: tls_token\n{tls_block}    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n\
         \x20 - job_name: tls_basic\n{tls_block}    basic_auth:\n      username: prometheus\n      password: b4sic-pass\n    static_configs:\n      - targets: ['{target}']\n\
         \x20 - job_name: tls_wrong_token\n{tls_block}    authorization:\n      credentials: not-the-token\n    static_configs:\n      - targets: ['{target}']\n",
        token_file.display()
    );
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("mkdir");
    let prom = OwnPrometheus::start(&prometheus, &prom_dir, &jobs);
    prom.wait_for("up{job=\"tls_token\"}", 1.0);
    prom.wait_for("up{job=\"tls_basic\"}", 1.0);
    prom.wait_for("up{job=\"tls_wrong_token\"}", 0.0);
    prom.wait_for(
        "host_ram_total_mb{job=\"tls_token\",hostname=\"fixture-host\"}",
        7812.5,
    );

    // A renewed certificate at the same paths is served after SIGHUP, and
    // Prometheus goes on scraping (it sees the reload counted).
    copy(&renewed_cert, &live_cert);
    copy(&renewed_key, &live_key);
    exporter.signal(libc::SIGHUP);
    eventually("the renewed certificate", Duration::from_secs(10), || {
        served_subject(&metrics_port, &pki.ca)
            .contains("CN = renewed")
            .then_some(())
    });
    let api_port = port_of(&exporter.api_url);
    assert!(served_subject(&api_port, &pki.ca).contains("CN = renewed"));
    prom.wait_for(
        "edge_exporter_config_reloads_total{job=\"tls_token\",outcome=\"success\"}",
        1.0,
    );

    // A broken certificate is refused at reload; the renewed one keeps serving.
    std::fs::write(&live_cert, "not a certificate\n").expect("break");
    exporter.signal(libc::SIGHUP);
    prom.wait_for(
        "edge_exporter_config_reloads_total{job=\"tls_basic\",outcome=\"failure\"}",
        1.0,
    );
    assert!(served_subject(&metrics_port, &pki.ca).contains("CN = renewed"));
    assert!(exporter.log_text().contains("reload rejected"));
    prom.wait_for("up{job=\"tls_token\"}", 1.0);
    let counted = https_get(
        &metrics,
        &trust,
        &[("Authorization", "Bearer scrape-token")],
    )
    .expect("https")
    .1;
    assert!(
        sample_value(&counted, "edge_exporter_tls_handshake_failures_total")
            .is_some_and(|n| n >= 2.0),
        "{counted}"
    );

    // The management API is HTTPS too, and `health` reaches it with the CA.
    let api = format!("https://127.0.0.1:{api_port}");
    let (status, _) = https_get(&format!("{api}/health"), &trust, &[]).expect("https");
    assert_eq!(status, 401);
    let out = Command::new(BIN)
        .args(["health", "--url", &api, "--ca-file"])
        .arg(&pki.ca)
        .env("EDGE_EXPORTER_API_TOKEN", "api-token")
        .output()
        .expect("health");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = Command::new(BIN)
        .args(["health", "--url", &api])
        .env("EDGE_EXPORTER_API_TOKEN", "api-token")
        .output()
        .expect("health");
    assert_eq!(out.status.code(), Some(2), "untrusted certificate: {out:?}");
    drop(prom);
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (cert, key) = pki.leaf("server");
    let (client_cert, client_key) = pki.leaf("scraper");
    let other = TestPki::new(&{
        let d = dir.path().join("other");
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    });
    let (stranger_cert, stranger_key) = other.leaf("stranger");
    let root = fixtures().join("linux/x86-laptop");
    let extra = format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n",
        cert.display(),
        key.display(),
        pki.ca.display()
    );
    let exporter = Exporter::start(&fixture_config(&root, &extra));
    let url = format!(
        "https://127.0.0.1:{}/metrics",
        port_of(&exporter.metrics_url)
    );
    let with = |cert: &PathBuf, key: &PathBuf| TlsClientConfig {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(cert.clone()),
        key_file: Some(key.clone()),
        ..Default::default()
    };
    // The first collection may not be in yet.
    eventually("host metrics over mTLS", Duration::from_secs(10), || {
        let (status, body) = https_get(&url, &with(&client_cert, &client_key), &[]).expect("https");
        assert_eq!(status, 200);
        body.contains("host_ram_total_mb").then_some(())
    });
    // TLS 1.3 reports a refused client certificate on the first read.
    assert!(https_get(&url, &trusting(&pki.ca), &[]).is_err());
    assert!(https_get(&url, &with(&stranger_cert, &stranger_key), &[]).is_err());
}

#[test]
fn an_unusable_certificate_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (cert, _) = pki.leaf("server");
    let (_, other_key) = pki.leaf("other");
    let root = fixtures().join("linux/x86-laptop");
    for (cert_file, key_file, expect) in [
        (
            cert.clone(),
            dir.path().join("missing.key"),
            "cannot read the key",
        ),
        (
            cert.clone(),
            other_key.clone(),
            "do not make a certificate and key pair",
        ),
        (other_key.clone(), other_key.clone(), "holds no certificate"),
    ] {
        let config = fixture_config(
            &root,
            &format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n",
                cert_file.display(),
                key_file.display()
            ),
        );
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).expect("config");
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("CONFIG_SERVER_URL", "")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(expect) && stderr.contains("tls"),
            "{expect}: {stderr}"
        );
    }
}
