//! The hub at fleet scale, with simulated plugs: readings served from what plugs
//! push (`?max_age`), one RPC for many waiting readers, every plug on
//! `/plugs/metrics` per channel and phase with its device info, and that page read
//! by promtool and scraped by a real Prometheus.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::shelly_hub::runtime;
use crate::shelly_sim::{Mode, SimPlug, plug_status};
use crate::support::*;

fn rpc_requests(server: &ShellyServer) -> u64 {
    server.get("/devices").json()["stats"]["rpc_requests"]
        .as_u64()
        .unwrap_or(0)
}

/// A Plus 2PM: two metered relays.
fn plus_2pm() -> Value {
    json!({
        "switch:0": {"id": 0, "output": true, "apower": 120.5, "voltage": 229.8, "current": 0.55, "freq": 50.0, "pf": 0.95,
                     "aenergy": {"total": 1000.0}, "temperature": {"tC": 41.0}},
        "switch:1": {"id": 1, "output": false, "apower": 0.0, "voltage": 229.8, "current": 0.0, "freq": 50.0, "pf": 0.0,
                     "aenergy": {"total": 250.0}, "temperature": {"tC": 41.0}},
        "sys": {"uptime": 3600, "available_updates": {"stable": {"version": "1.5.0"}}},
        "wifi": {"sta_ip": "10.0.0.7", "status": "got ip", "rssi": -61}
    })
}

/// A Pro 3EM: one three-phase meter and its energy counters.
fn pro_3em() -> Value {
    json!({
        "em:0": {"id": 0, "a_current": 1.0, "a_voltage": 230.1, "a_act_power": 200.0, "a_pf": 0.9, "a_freq": 50.0,
                 "b_current": 2.0, "b_voltage": 231.2, "b_act_power": 400.0, "b_pf": 0.91, "b_freq": 50.0,
                 "c_current": 0.5, "c_voltage": 229.9, "c_act_power": 100.0, "c_pf": 0.8, "c_freq": 50.0,
                 "total_current": 3.5, "total_act_power": 700.0},
        "emdata:0": {"id": 0, "a_total_act_energy": 10.0, "a_total_act_ret_energy": 0.0,
                     "b_total_act_energy": 20.0, "b_total_act_ret_energy": 0.0,
                     "c_total_act_energy": 5.0, "c_total_act_ret_energy": 1.0,
                     "total_act": 35.0, "total_act_ret": 1.0}
    })
}

#[test]
fn every_plug_on_one_page_per_channel_from_what_it_pushes() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    // A plug that answers no RPC at all: only its notifications are known.
    let quiet = rt.block_on(SimPlug::connect(
        &format!("{}/orin-01", server.ws_url),
        "shellyplusplugs-000000000001",
        plug_status(45.3, 220.5, 0.205, 1234.5),
    ));
    quiet.set_mode(Mode::Silent);
    let _two = rt.block_on(SimPlug::connect(
        &server.ws_url,
        "shellyplus2pm-000000000002",
        plus_2pm(),
    ));
    let _three = rt.block_on(SimPlug::connect(
        &server.ws_url,
        "shellypro3em-000000000003",
        pro_3em(),
    ));
    wait_for("three plugs", Duration::from_secs(5), || {
        server.get("/devices").json()["count"] == 3
    });
    // The device info is asked once per connection (not of the quiet plug: it
    // never answers).
    let page = |path: &str| server.get(path).body;
    let body = eventually("device info", Duration::from_secs(10), || {
        let b = page("/plugs/metrics");
        b.contains("shelly_plug_info{plug=\"shellyplus2pm-000000000002\"")
            .then_some(b)
    });
    let value = |body: &str, series: &str| sample_value(body, series);
    // The quiet plug, from its notifications.
    let quiet_power = "shelly_plug_power_watts{plug=\"shellyplusplugs-000000000001\",alias=\"orin-01\",component=\"switch\",channel=\"0\"}";
    assert_eq!(value(&body, quiet_power), Some(45.3), "{body}");
    quiet.update("switch:0", json!({"apower": 50.25}));
    eventually("the notified value", Duration::from_secs(5), || {
        (value(&page("/plugs/metrics"), quiet_power) == Some(50.25)).then_some(())
    });
    // The spec's endpoint with max_age: from the kept status, no RPC (the plug
    // would never answer one).
    let started = Instant::now();
    let r = server.get("/metrics/orin-01?max_age=30");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["metrics"]["power_total_watts"], 50.25);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Without max_age, as the spec says: an RPC, and the silent plug's 504 in 5 s.
    let started = Instant::now();
    let r = server.get("/metrics/orin-01");
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(7));

    let body = page("/plugs/metrics");
    let two = "plug=\"shellyplus2pm-000000000002\"";
    for (series, want) in [
        (
            format!("shelly_plug_power_watts{{{two},component=\"switch\",channel=\"0\"}}"),
            120.5,
        ),
        (
            format!("shelly_plug_power_watts{{{two},component=\"switch\",channel=\"1\"}}"),
            0.0,
        ),
        (
            format!("shelly_plug_relay_on{{{two},component=\"switch\",channel=\"1\"}}"),
            0.0,
        ),
        (
            format!("shelly_plug_energy_joules_total{{{two},component=\"switch\",channel=\"1\"}}"),
            900_000.0,
        ),
        (format!("shelly_plug_wifi_rssi_dbm{{{two}}}"), -61.0),
        (format!("shelly_plug_uptime_seconds{{{two}}}"), 3600.0),
        (format!("shelly_plug_update_available{{{two}}}"), 1.0),
    ] {
        assert_eq!(value(&body, &series), Some(want), "{series}\n{body}");
    }
    assert!(
        body.contains(&format!(
            "shelly_plug_info{{{two},model=\"SNPL-00112EU\",gen=\"2\",firmware=\"1.4.4\",mac=\"A8032AB12345\",app=\"PlusPlugS\"}} 1"
        )),
        "{body}"
    );
    let three = "plug=\"shellypro3em-000000000003\"";
    for (series, want) in [
        (
            format!(
                "shelly_plug_power_watts{{{three},component=\"em\",channel=\"0\",phase=\"a\"}}"
            ),
            200.0,
        ),
        (
            format!(
                "shelly_plug_power_watts{{{three},component=\"em\",channel=\"0\",phase=\"b\"}}"
            ),
            400.0,
        ),
        (
            format!(
                "shelly_plug_voltage_volts{{{three},component=\"em\",channel=\"0\",phase=\"c\"}}"
            ),
            229.9,
        ),
        (
            format!(
                "shelly_plug_returned_energy_joules_total{{{three},component=\"em\",channel=\"0\",phase=\"c\"}}"
            ),
            3600.0,
        ),
        (format!("shelly_plug_total_power_watts{{{three}}}"), 700.0),
        (
            format!("shelly_plug_total_energy_joules_total{{{three}}}"),
            126_000.0,
        ),
    ] {
        assert_eq!(value(&body, &series), Some(want), "{series}\n{body}");
    }
    assert_eq!(value(&body, "shelly_plugs_connected"), Some(3.0));

    // promtool reads the page.
    if let Some(promtool) = peer("promtool") {
        let (status, out, err) = run_with_stdin(&promtool, &["check", "metrics"], body.as_bytes());
        assert!(
            status.success() && out.trim().is_empty(),
            "{out}{err}\n{body}"
        );
    }
    // A real Prometheus scrapes it.
    if let Some(prom) = crate::prometheus::prometheus() {
        prom.add_target_path("hub", &server.api_url, "/plugs/metrics");
        prom.wait_value("shelly_plug_total_power_watts{test=\"hub\"}");
        prom.wait_value("shelly_plug_power_watts{test=\"hub\",plug=\"shellyplus2pm-000000000002\",component=\"switch\",channel=\"0\"}");
        // The dashboard's hub panels answer for every plug.
        for (title, query) in crate::deploy::dashboard_queries_bound("job=\"edge\",test=\"hub\"") {
            let plugs = eventually(
                &format!("the {title} panel"),
                Duration::from_secs(30),
                || {
                    let result = prom.query(&query);
                    (result.len() == 3).then_some(result)
                },
            );
            let names: Vec<&str> = plugs
                .iter()
                .filter_map(|r| r["metric"]["plug"].as_str())
                .collect();
            assert!(
                names.contains(&"shellypro3em-000000000003"),
                "{title}: {names:?}"
            );
        }
        let power =
            prom.query(&crate::deploy::dashboard_queries_bound("job=\"edge\",test=\"hub\"")[0].1);
        let three = power
            .iter()
            .find(|r| r["metric"]["plug"] == "shellypro3em-000000000003")
            .expect("the 3EM");
        assert_eq!(
            three["value"][1], "700",
            "the device's own total, not a sum"
        );
    }
    drop(quiet);
}

#[test]
fn ten_readers_of_a_stale_plug_cause_one_rpc() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let _plug = rt.block_on(SimPlug::connect(
        &format!("{}/edge-01", server.ws_url),
        "shellyplusplugs-a8032ab12345",
        plug_status(45.3, 220.5, 0.205, 1234.5),
    ));
    wait_for(
        "the plug and its device info",
        Duration::from_secs(5),
        || server.get("/devices").json()["count"] == 1 && rpc_requests(&server) == 1,
    );
    // Its pushed status is 1.5 s old: stale for max_age=1.
    std::thread::sleep(Duration::from_millis(1500));
    let before = rpc_requests(&server);
    let url = format!("{}/metrics/edge-01?max_age=1", server.api_url);
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || get(&url, &[]))
        })
        .collect();
    for r in readers {
        let r = r.join().expect("reader");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["metrics"]["power_total_watts"], 45.3);
    }
    assert_eq!(rpc_requests(&server) - before, 1, "one RPC for ten readers");
    let telemetry = server.get("/telemetry").body;
    let saved = sample_value(
        &telemetry,
        "edge_exporter_shelly_hub_events_total{event=\"rpc_saved\"}",
    );
    assert_eq!(saved, Some(9.0), "{telemetry}");
    // A bad max_age is a 400 with the reason.
    let r = server.get("/metrics/edge-01?max_age=-1");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("max_age"), "{}", r.body);
}

#[test]
fn plugs_connect_over_wss_with_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let (cert, key) = pki.leaf("hub");
    let mut server = ShellyServer::start_with(
        Some("s3cret"),
        &[
            ("SHELLY_WS_TLS_CERT_FILE", cert.display().to_string()),
            ("SHELLY_WS_TLS_KEY_FILE", key.display().to_string()),
        ],
    );
    let wss = server.ws_url.replace("ws://", "wss://");
    let rt = runtime();
    // With the secret as the first path segment, over TLS.
    let plug = rt
        .block_on(SimPlug::connect_tls(
            &format!("{wss}/s3cret/orin-01"),
            "shellyplusplugs-0000000000aa",
            plug_status(12.5, 230.0, 0.06, 10.0),
            &pki.ca,
        ))
        .expect("a TLS connection");
    wait_for("the plug over wss", Duration::from_secs(5), || {
        server.get("/devices").json()["devices"] == json!(["orin-01"])
    });
    assert_eq!(
        server.get("/metrics/orin-01").json()["metrics"]["power_total_watts"],
        12.5
    );
    // The secret as a query parameter works too; without it, refused.
    let second = rt.block_on(SimPlug::connect_tls(
        &format!("{wss}/pi-02?token=s3cret"),
        "shellyplusplugs-0000000000bb",
        plug_status(3.0, 230.0, 0.01, 1.0),
        &pki.ca,
    ));
    assert!(second.is_ok());
    let refused = rt.block_on(SimPlug::connect_tls(
        &format!("{wss}/pi-03"),
        "shellyplusplugs-0000000000cc",
        plug_status(3.0, 230.0, 0.01, 1.0),
        &pki.ca,
    ));
    assert!(refused.is_err(), "no secret, no plug");
    // Plain ws:// to the TLS port is not a plug connection.
    let plain = rt.block_on(tokio_tungstenite::connect_async(format!(
        "{}/s3cret/x",
        server.ws_url
    )));
    assert!(plain.is_err());
    wait_for("two plugs", Duration::from_secs(5), || {
        server.get("/devices").json()["count"] == 2
    });
    // SIGHUP re-reads the certificate.
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    server.wait_log("TLS certificate re-read");
    assert_eq!(server.get("/devices").json()["count"], 2, "plugs stay");
    drop(plug);
}
