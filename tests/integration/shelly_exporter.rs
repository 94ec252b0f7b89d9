//! The exporter's `shelly` collector: through a real `shelly-server`, through the
//! hub embedded in the exporter, and polling plugs over HTTP (Gen2 with digest
//! auth, Gen1 with basic auth). And the whole chain into a real Prometheus.

use std::net::SocketAddr;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::prometheus::prometheus;
use crate::shelly_hub::runtime;
use crate::shelly_sim::{SimPlug, plug_status};
use crate::support::*;

const PLUG: &str = "shellyplusplugs-a8032ab12345";

fn series(name: &str) -> String {
    format!("{name}{{plug=\"{PLUG}\",{DEVICE}}}")
}

#[test]
fn through_the_hub_by_hostname() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    // The plug's URL names the device it powers: the exporter's hostname.
    let plug = rt.block_on(SimPlug::connect(
        &format!("{}/fixture-host", server.ws_url),
        PLUG,
        plug_status(45.3, 220.5, 0.205, 1234.5),
    ));
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(
        &m.root,
        &format!("shelly:\n  server_url: {}\n", server.api_url),
    ));
    let body = exporter.metrics_until("plug samples", |b| b.contains("power_total_watts{"));
    for (name, want) in [
        ("power_total_watts", 45.3),
        ("power_voltage_volts", 220.5),
        ("power_current_amps", 0.205),
        ("power_factor", 0.92),
        ("power_frequency_hertz", 50.0),
        ("power_energy_joules_total", 1234.5 * 3600.0),
        ("power_device_temperature_celsius", 35.2),
        ("power_output_on", 1.0),
    ] {
        assert_eq!(
            sample_value(&body, &series(name)),
            Some(want),
            "{name}\n{body}"
        );
    }
    assert!(body.contains("# TYPE power_energy_joules_total counter"));
    assert_eq!(exporter.api_get("/health").json()["status"], "healthy");

    // The plug reboots and its energy total steps back: the counter holds.
    plug.update(
        "switch:0",
        json!({"aenergy": {"total": 1234.4}, "apower": 50.0}),
    );
    exporter.metrics_until("the new power", |b| {
        sample_value(b, &series("power_total_watts")) == Some(50.0)
    });
    let body = exporter.metrics();
    assert_eq!(
        sample_value(&body, &series("power_energy_joules_total")),
        Some(1234.5 * 3600.0)
    );
}

#[test]
fn the_only_plug_when_none_is_named_after_the_host() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let _plug = rt.block_on(SimPlug::connect(
        &format!("{}/", server.ws_url),
        PLUG,
        plug_status(10.0, 230.0, 0.05, 1.0),
    ));
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(
        &m.root,
        &format!("shelly:\n  server_url: {}\n", server.api_url),
    ));
    exporter.metrics_until("plug samples", |b| {
        sample_value(b, &series("power_total_watts")) == Some(10.0)
    });

    // A configured device id is taken literally: no fallback.
    let named = Exporter::start(&fixture_config(
        &m.root,
        &format!(
            "shelly:\n  server_url: {}\n  device_id: some-other-host\n",
            server.api_url
        ),
    ));
    let body = named.metrics_until("the failure", |b| {
        sample_value(b, "edge_exporter_collector_success{collector=\"shelly\"}") == Some(0.0)
    });
    assert!(!body.contains("power_total_watts{"));
}

#[test]
fn an_unreachable_hub_is_reported_and_the_rest_keeps_serving() {
    let m = crate::metrics_endpoint::machine();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let exporter = Exporter::start(&fixture_config(
        &m.root,
        &format!("shelly:\n  server_url: http://127.0.0.1:{port}\n"),
    ));
    let body = exporter.metrics_until("the failure", |b| {
        sample_value(b, "edge_exporter_collector_success{collector=\"shelly\"}") == Some(0.0)
    });
    assert!(body.contains("host_ram_total_mb{"));
    let health = exporter.api_get("/health").json();
    let shelly = health["collectors"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["name"] == "shelly")
        .cloned()
        .expect("shelly");
    assert!(
        shelly["error"]
            .as_str()
            .expect("error")
            .contains("cannot connect"),
        "{shelly}"
    );
}

#[test]
fn the_embedded_hub() {
    let m = crate::metrics_endpoint::machine();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = fixture_config(
        &m.root,
        &format!("shelly:\n  listen: 127.0.0.1:{port}\n  secret: plug-secret\n"),
    );
    let mut exporter = Exporter::start(&config);
    exporter.wait_log("shelly websocket listening on");
    let rt = runtime();
    let _plug = rt.block_on(SimPlug::connect(
        &format!("ws://127.0.0.1:{port}/?token=plug-secret"),
        PLUG,
        plug_status(12.5, 229.0, 0.06, 2.0),
    ));
    exporter.metrics_until("plug samples", |b| {
        sample_value(b, &series("power_total_watts")) == Some(12.5)
    });

    // Switching Shelly off removes the collector and its samples.
    exporter.edit_config(&[("shelly:\n  listen", "shelly:\n  enabled: false\n  listen")]);
    assert_eq!(exporter.api_post("/reload", "").status, 200);
    exporter.metrics_until("no plug samples", |b| {
        !b.contains("power_total_watts{") && !b.contains("collector=\"shelly\"")
    });
}

/// A Shelly plug's HTTP side: Gen2 `/rpc/Shelly.GetStatus` behind SHA-256 digest
/// auth, Gen1 `/status` behind basic auth. The digest check is written here from
/// RFC 7616 and Shelly's docs, apart from the exporter's code.
fn fake_http_plug(rt: &tokio::runtime::Runtime) -> SocketAddr {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    fn hex(data: &str) -> String {
        Sha256::digest(data.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
    async fn gen2(headers: HeaderMap) -> axum::response::Response {
        let realm = "shellyplusplugs-b8d61a000001";
        let nonce = "1698245525";
        let challenge = || {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, format!("Digest qop=\"auth\", realm=\"{realm}\", nonce=\"{nonce}\", algorithm=SHA-256"))],
            )
                .into_response()
        };
        let Some(auth) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return challenge();
        };
        let field = |name: &str| {
            auth.split(',').find_map(|p| {
                let (k, v) = p.trim().trim_start_matches("Digest ").split_once('=')?;
                (k.trim() == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        let (Some(nc), Some(cnonce), Some(uri), Some(response)) = (
            field("nc"),
            field("cnonce"),
            field("uri"),
            field("response"),
        ) else {
            return challenge();
        };
        let ha1 = hex(&format!("admin:{realm}:plug-password"));
        let ha2 = hex(&format!("GET:{uri}"));
        if response != hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")) {
            return challenge();
        }
        axum::Json(plug_status(99.5, 231.0, 0.43, 10.0)).into_response()
    }
    async fn gen1(headers: HeaderMap) -> axum::response::Response {
        // "admin:gen1-pass" in base64.
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some("Basic YWRtaW46Z2VuMS1wYXNz")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        axum::Json(json!({"meters":[{"power":48.52,"overpower":0.0,"is_valid":true,"timestamp":1606215925,"counters":[48.663,48.776,46.173],"total":394}],"relays":[{"ison":true}],"temperature":40.1})).into_response()
    }
    let router = axum::Router::new()
        .route("/rpc/Shelly.GetStatus", get(gen2))
        .route("/status", get(gen1));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    })
}

#[test]
fn polling_gen2_with_digest_and_gen1_with_basic_auth() {
    let rt = runtime();
    let addr = fake_http_plug(&rt);
    let m = crate::metrics_endpoint::machine();
    let poll = format!(
        "shelly:\n  poll:\n    - url: http://{addr}\n      password: plug-password\n      name: plus-plug\n    - url: http://{addr}\n      generation: 1\n      password: gen1-pass\n      name: old-plug\n"
    );
    let exporter = Exporter::start(&fixture_config(&m.root, &poll));
    let body = exporter.metrics_until("both plugs", |b| {
        b.contains("plug=\"plus-plug\"") && b.contains("plug=\"old-plug\"")
    });
    let at = |plug: &str, name: &str| {
        sample_value(&body, &format!("{name}{{plug=\"{plug}\",{DEVICE}}}"))
    };
    assert_eq!(at("plus-plug", "power_total_watts"), Some(99.5));
    assert_eq!(at("plus-plug", "power_voltage_volts"), Some(231.0));
    assert_eq!(at("old-plug", "power_total_watts"), Some(48.52));
    // Gen1 reports watt-minutes: 394 Wmin = 6.5667 Wh = 23,640 J.
    assert_eq!(
        at("old-plug", "power_energy_joules_total"),
        Some(394.0 / 60.0 * 3600.0)
    );
    assert_eq!(
        at("old-plug", "power_device_temperature_celsius"),
        Some(40.1)
    );
    let log = exporter.log_text();
    assert!(!log.contains("plug-password") && !log.contains("gen1-pass"));

    // A wrong password is a clear failure, not zeros.
    let wrong = poll.replace("plug-password", "nope");
    let exporter = Exporter::start(&fixture_config(&m.root, &wrong));
    let body = exporter.metrics_until("the failure", |b| {
        sample_value(b, "edge_exporter_collector_success{collector=\"shelly\"}") == Some(0.0)
    });
    assert!(!body.contains("plug=\"plus-plug\""));
}

/// Simulated plug → `shelly-server` → exporter → a real Prometheus: the queried
/// `power_total_watts` equals what the plug sent.
#[test]
fn prometheus_reads_the_plug_through_the_hub() {
    let Some(prom) = prometheus() else { return };
    let server = ShellyServer::start(None);
    let rt = runtime();
    let _plug = rt.block_on(SimPlug::connect(
        &format!("{}/fixture-host", server.ws_url),
        PLUG,
        plug_status(61.25, 229.5, 0.29, 500.0),
    ));
    let m = crate::metrics_endpoint::machine();
    let exporter = Exporter::start(&fixture_config(
        &m.root,
        &format!("shelly:\n  server_url: {}\n", server.api_url),
    ));
    prom.add_target("e2e_shelly", &exporter.metrics_url);
    assert_eq!(
        prom.wait_value(&format!(
            "power_total_watts{{test=\"e2e_shelly\",plug=\"{PLUG}\"}}"
        )),
        61.25
    );
    assert_eq!(
        prom.wait_value("power_voltage_volts{test=\"e2e_shelly\"}"),
        229.5
    );
    assert_eq!(
        prom.wait_value("power_energy_joules_total{test=\"e2e_shelly\"}"),
        500.0 * 3600.0
    );
}
