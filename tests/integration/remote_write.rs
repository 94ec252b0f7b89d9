//! remote_write end to end against real receivers from Debian: Prometheus 2.42 with
//! its remote-write receiver, and VictoriaMetrics. A recording proxy between the
//! exporter and the receiver keeps every sample the receiver accepted, decoded
//! with prost (independent of the exporter's encoder); the test then reads the
//! receiver back and compares. The outage test stops the receiver, restarts the
//! exporter during the outage, and checks that nothing is lost or stored twice.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use prost::Message;

use crate::support::*;

#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<PbSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbSample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// A series as a sorted label set (including `__name__`).
pub type Series = BTreeMap<String, String>;
/// One stored point: series, timestamp (ms), value bits.
pub type Point = (Series, i64, u64);

/// Forwards remote write requests to `upstream` and records what it accepted.
pub struct Proxy {
    pub url: String,
    pub accepted: Arc<Mutex<Vec<Point>>>,
    pub requests: Arc<Mutex<Vec<u16>>>,
}

/// A request's headers and body.
type Request = (Vec<(String, String)>, Vec<u8>);

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (k, v) = trimmed.split_once(':')?;
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok()?;
        }
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((headers, body))
}

pub fn start_proxy(upstream: String) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/api/v1/write",
        listener.local_addr().expect("addr")
    );
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (acc, reqs) = (accepted.clone(), requests.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (acc, reqs, upstream) = (acc.clone(), reqs.clone(), upstream.clone());
            thread::spawn(move || {
                let Some((headers, body)) = read_request(&mut stream) else {
                    return;
                };
                let mut builder = ureq::http::Request::builder().method("POST").uri(&upstream);
                for (k, v) in &headers {
                    let keep = [
                        "content-type",
                        "content-encoding",
                        "x-prometheus-remote-write-version",
                        "user-agent",
                        "authorization",
                    ];
                    if keep.contains(&k.to_ascii_lowercase().as_str()) {
                        builder = builder.header(k, v);
                    }
                }
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let (status, answer) = match agent.run(builder.body(body.clone()).expect("request"))
                {
                    Ok(mut r) => (
                        r.status().as_u16(),
                        r.body_mut().read_to_string().unwrap_or_default(),
                    ),
                    Err(e) => (502, e.to_string()),
                };
                if (200..300).contains(&status) {
                    let plain = snap::raw::Decoder::new()
                        .decompress_vec(&body)
                        .expect("snappy");
                    let req = WriteRequest::decode(plain.as_slice()).expect("protobuf");
                    let mut acc = acc.lock().expect("lock");
                    for ts in req.timeseries {
                        let series: Series =
                            ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
                        for s in ts.samples {
                            acc.push((series.clone(), s.timestamp, s.value.to_bits()));
                        }
                    }
                }
                reqs.lock().expect("lock").push(status);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    Proxy {
        url,
        accepted,
        requests,
    }
}

/// A receiver process on `port` with its data in `dir`.
pub struct Receiver {
    child: Child,
    pub base: String,
    kind: &'static str,
}

impl Receiver {
    /// Stops the receiver as a service manager would (SIGTERM), so it writes out
    /// what it acknowledged.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = wait_timeout(&mut self.child, Duration::from_secs(30));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_receiver(kind: &'static str, program: &Path, dir: &Path, port: u16) -> Receiver {
    let mut command = Command::new(program);
    match kind {
        "prometheus" => {
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("config");
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver");
        }
        _ => {
            command
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-storageDataPath={}", dir.join("vm").display()))
                .arg("-retentionPeriod=100y")
                .arg("-search.latencyOffset=0s");
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut command);
    let child = command.spawn().expect("receiver");
    let base = format!("http://127.0.0.1:{port}");
    let ready = if kind == "prometheus" {
        "/-/ready"
    } else {
        "/health"
    };
    eventually(&format!("{kind} ready"), Duration::from_secs(30), || {
        ureq::get(&format!("{base}{ready}"))
            .call()
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    });
    Receiver { child, base, kind }
}

/// Every stored point of the series with `site="<site>"`, raw.
pub fn stored(receiver: &Receiver, site: &str) -> Vec<Point> {
    let mut points = Vec::new();
    if receiver.kind == "prometheus" {
        let query = format!("{{site=\"{site}\"}}[1h]");
        let r = get(
            &format!("{}/api/v1/query?query={}", receiver.base, urlencode(&query)),
            &[],
        );
        let v = r.json();
        for result in v["data"]["result"].as_array().expect("matrix") {
            let series: Series = serde_json::from_value(result["metric"].clone()).expect("labels");
            for pair in result["values"].as_array().expect("values") {
                let ts = (pair[0].as_f64().expect("t") * 1000.0).round() as i64;
                let value: f64 = pair[1].as_str().expect("v").parse().expect("number");
                points.push((series.clone(), ts, value.to_bits()));
            }
        }
    } else {
        let query = format!("{{site=\"{site}\"}}");
        let r = get(
            &format!(
                "{}/api/v1/export?match[]={}",
                receiver.base,
                urlencode(&query)
            ),
            &[],
        );
        for line in r.body.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            let series: Series = serde_json::from_value(v["metric"].clone()).expect("labels");
            let values = v["values"].as_array().expect("values");
            let stamps = v["timestamps"].as_array().expect("timestamps");
            for (value, ts) in values.iter().zip(stamps) {
                points.push((
                    series.clone(),
                    ts.as_i64().expect("ts"),
                    value.as_f64().expect("v").to_bits(),
                ));
            }
        }
    }
    points.sort();
    points
}

/// The same points: series and timestamps exactly, values exactly too except
/// that VictoriaMetrics keeps 12 significant digits.
pub fn assert_same(back: &[Point], accepted: &[Point], kind: &str) {
    let differ: Vec<String> = back
        .iter()
        .zip(accepted)
        .filter(|(b, a)| {
            let (vb, va) = (f64::from_bits(b.2), f64::from_bits(a.2));
            let close = if kind == "victoria-metrics" {
                (vb - va).abs() <= 1e-11 * va.abs().max(1e-300)
            } else {
                b.2 == a.2
            };
            b.0 != a.0 || b.1 != a.1 || !close
        })
        .take(5)
        .map(|(b, a)| {
            format!(
                "stored {:?} {} {} / pushed {:?} {} {}",
                b.0,
                b.1,
                f64::from_bits(b.2),
                a.0,
                a.1,
                f64::from_bits(a.2)
            )
        })
        .collect();
    assert!(
        back.len() == accepted.len() && differ.is_empty(),
        "{kind}: {} stored, {} pushed; first differences: {differ:#?}",
        back.len(),
        accepted.len()
    );
}

pub fn exporter_config(root: &Path, url: &str, site: &str, extra: &str) -> String {
    fixture_config(
        root,
        &format!(
            "metric_style: labeled\nremote_write:\n  url: {url}\n  interval: 0.5\n  batch_size: 40\n  labels:\n    site: {site}\n{extra}"
        ),
    )
}

fn self_metric(exporter: &Exporter, name: &str) -> Option<f64> {
    sample_value(&exporter.metrics(), name)
}

#[test]
fn receivers_store_exactly_what_was_collected() {
    let Some(prometheus) = peer("prometheus") else {
        return;
    };
    let Some(vm) = peer("victoria-metrics") else {
        return;
    };
    let root = fixtures().join("linux/x86-laptop");
    for (kind, program) in [("prometheus", prometheus), ("victoria-metrics", vm)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let receiver = start_receiver(kind, &program, dir.path(), free_port());
        let proxy = start_proxy(format!("{}/api/v1/write", receiver.base));
        let site = format!("e2e-{}", kind.len());
        let exporter = Exporter::start(&exporter_config(&root, &proxy.url, &site, ""));
        eventually("three pushes accepted", Duration::from_secs(20), || {
            (proxy
                .requests
                .lock()
                .expect("lock")
                .iter()
                .filter(|s| **s < 300)
                .count()
                >= 3)
                .then_some(())
        });
        // What /metrics shows is what is pushed: every series of a scrape is there,
        // with the extra label, the job and the instance.
        let scrape = exporter.metrics();
        let (status, _) = exporter.stop();
        assert!(status.success());
        let accepted: Vec<Point> = {
            let mut a = proxy.accepted.lock().expect("lock").clone();
            a.sort();
            a
        };
        let pushed_series: BTreeSet<&Series> = accepted.iter().map(|p| &p.0).collect();
        for line in scrape
            .lines()
            .filter(|l| l.starts_with("host_") || l.starts_with("edge_exporter_build_info"))
        {
            let (series, value) = line.rsplit_once(' ').expect("sample");
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let mut want: Series = labels
                .trim_end_matches('}')
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").expect("label");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            want.insert("__name__".into(), name.to_owned());
            want.insert("site".into(), site.clone());
            // What a scraping Prometheus would add: job and <hostname>:<port>.
            want.insert("job".into(), "edge-metrics-exporter".into());
            want.insert("instance".into(), "fixture-host:0".into());
            assert!(pushed_series.contains(&want), "{kind}: {line} not pushed");
            // Fixed values of the fixture come back exactly.
            if name == "host_memory_total_bytes" {
                let v: f64 = value.parse().expect("value");
                assert!(accepted.iter().any(|p| p.0 == want && p.2 == v.to_bits()));
            }
        }
        // The receiver holds exactly the accepted points: values and timestamps.
        let back = eventually(
            &format!("{kind} returns every point"),
            Duration::from_secs(20),
            || {
                let back = stored(&receiver, &site);
                (back.len() >= accepted.len()).then_some(back)
            },
        );
        assert_same(&back, &accepted, kind);
        eprintln!("{kind}: {} points pushed and read back", accepted.len());
    }
}

#[test]
fn an_outage_with_an_exporter_restart_loses_nothing() {
    let Some(vm) = peer("victoria-metrics") else {
        return;
    };
    let root = fixtures().join("linux/x86-laptop");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let receiver = start_receiver("victoria-metrics", &vm, dir.path(), port);
    let proxy = start_proxy(format!("{}/api/v1/write", receiver.base));
    let site = "outage";
    let config = exporter_config(&root, &proxy.url, site, "");
    let mut exporter = Exporter::start(&config);
    eventually("first pushes", Duration::from_secs(20), || {
        (proxy
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| **s < 300)
            .count()
            >= 2)
            .then_some(())
    });

    // The receiver goes away for about six seconds; the exporter keeps collecting
    // into its buffer, and is killed and restarted in the middle of it.
    receiver.stop();
    thread::sleep(Duration::from_secs(3));
    let before =
        self_metric(&exporter, "edge_exporter_remote_write_buffer_samples").expect("gauge");
    assert!(before > 0.0, "samples wait in the buffer");
    exporter.respawn(Options::new(""));
    thread::sleep(Duration::from_secs(3));
    let waiting =
        self_metric(&exporter, "edge_exporter_remote_write_buffer_samples").expect("gauge");
    assert!(
        waiting > before,
        "the buffer survived the restart and grew: {before} → {waiting}"
    );

    // The receiver is back (same data): the buffer drains, in order.
    let receiver = start_receiver("victoria-metrics", &vm, dir.path(), port);
    eventually("the buffer drains", Duration::from_secs(30), || {
        (self_metric(&exporter, "edge_exporter_remote_write_buffer_samples") == Some(0.0))
            .then_some(())
    });
    let metrics = exporter.metrics();
    for counter in [
        "edge_exporter_remote_write_samples_dropped_total{reason=\"buffer_full\"}",
        "edge_exporter_remote_write_samples_dropped_total{reason=\"disk_full\"}",
        "edge_exporter_remote_write_samples_dropped_total{reason=\"corrupt\"}",
        "edge_exporter_remote_write_samples_dropped_total{reason=\"write_error\"}",
        "edge_exporter_remote_write_samples_failed_total",
    ] {
        assert_eq!(sample_value(&metrics, counter), Some(0.0), "{counter}");
    }
    assert!(
        sample_value(&metrics, "edge_exporter_remote_write_retries_total").is_some_and(|n| n > 0.0)
    );
    let (status, _) = exporter.stop();
    assert!(status.success());

    let mut accepted = proxy.accepted.lock().expect("lock").clone();
    accepted.sort();
    let back = eventually("every point is stored", Duration::from_secs(20), || {
        let back = stored(&receiver, site);
        (back.len() >= accepted.len()).then_some(back)
    });
    // VictoriaMetrics keeps duplicates (no deduplication configured): none twice.
    let unique: BTreeSet<(&Series, i64)> = back.iter().map(|p| (&p.0, p.1)).collect();
    assert_eq!(unique.len(), back.len(), "a point stored twice");
    accepted.dedup();
    assert_same(&back, &accepted, "victoria-metrics");
    // And what was collected through the outage is there: a series collected
    // every 0.5 s has no gap longer than the exporter's restart.
    let series: Vec<i64> = back
        .iter()
        .filter(|p| p.0.get("__name__").map(String::as_str) == Some("host_memory_total_bytes"))
        .map(|p| p.1)
        .collect();
    assert!(series.len() >= 10, "{series:?}");
    let gaps: Vec<i64> = series.windows(2).map(|w| w[1] - w[0]).collect();
    let long: Vec<&i64> = gaps.iter().filter(|g| **g > 1500).collect();
    assert!(
        long.len() <= 1 && long.iter().all(|g| **g < 5000),
        "gaps (ms): {gaps:?}"
    );
    eprintln!(
        "outage: {} points, {} series points of host_memory_total_bytes, gaps {gaps:?}",
        back.len(),
        series.len()
    );
}

#[test]
fn pushes_over_tls_and_refuses_an_unknown_certificate() {
    let Some(prometheus) = peer("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (cert, key) = pki.leaf("server");
    let ca = pki.ca.clone();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("web config");
    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("config");
    let mut command = Command::new(prometheus);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", web.display()))
        .arg("--web.enable-remote-write-receiver")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut command);
    let child = command.spawn().expect("prometheus");
    let receiver = Receiver {
        child,
        base: format!("https://127.0.0.1:{port}"),
        kind: "prometheus",
    };
    // Our own client (the crate's) reads the TLS receiver back.
    let tls =
        edge_metrics_exporter::net::tls::client(&edge_metrics_exporter::config::TlsClientConfig {
            ca_file: Some(ca.clone()),
            ..Default::default()
        })
        .expect("tls client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = edge_metrics_exporter::net::client::Client::new(Some(tls));
    let fetch = |path: &str| -> Option<String> {
        let url = format!("{}{path}", receiver.base);
        runtime
            .block_on(client.get(&url, &[], Duration::from_secs(5), 1 << 20))
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
    };
    eventually("prometheus ready over TLS", Duration::from_secs(30), || {
        fetch("/-/ready")
    });

    let root = fixtures().join("linux/x86-laptop");
    let url = format!("{}/api/v1/write", receiver.base);
    // The trusted exporter goes through a proxy that counts its connections.
    let counting = CountingProxy::start(format!("127.0.0.1:{port}").parse().expect("addr"));
    let trusted = Exporter::start(&exporter_config(
        &root,
        &format!("https://{}/api/v1/write", counting.addr),
        "tls",
        &format!("  tls:\n    ca_file: {}\n", ca.display()),
    ));
    // Without the CA the system store does not trust the test CA's certificate.
    let untrusted = Exporter::start(&exporter_config(&root, &url, "untrusted", ""));
    eventually("samples accepted over TLS", Duration::from_secs(20), || {
        self_metric(&trusted, "edge_exporter_remote_write_samples_sent_total").filter(|n| *n > 0.0)
    });
    let query = format!(
        "/api/v1/query?query={}",
        urlencode("host_memory_total_bytes{site=\"tls\"}")
    );
    let answer = eventually("the series over TLS", Duration::from_secs(20), || {
        fetch(&query).filter(|b| b.contains("host_memory_total_bytes"))
    });
    assert!(answer.contains("\"site\":\"tls\""), "{answer}");
    eventually("the untrusted one retries", Duration::from_secs(20), || {
        self_metric(&untrusted, "edge_exporter_remote_write_retries_total").filter(|n| *n >= 2.0)
    });
    assert_eq!(
        self_metric(&untrusted, "edge_exporter_remote_write_samples_sent_total"),
        Some(0.0)
    );
    let log = untrusted.log_text();
    assert!(
        log.contains("receiver unavailable") && log.contains("TLS"),
        "{log}"
    );
    // Pushes every 0.5 s for 10 s more: one TLS connection (one handshake) kept.
    let sent = self_metric(&trusted, "edge_exporter_remote_write_samples_sent_total");
    thread::sleep(Duration::from_secs(10));
    assert!(
        self_metric(&trusted, "edge_exporter_remote_write_samples_sent_total") > sent,
        "still pushing"
    );
    let connections = counting.connections();
    eprintln!("TLS: {connections} connection(s) for 20 or more pushes");
    assert!(
        (1..=2).contains(&connections),
        "{connections} TLS connections"
    );
    drop(receiver);
}
