//! The real `shelly-server` driven by simulated plugs (`shelly_sim`): the spec's
//! HTTP API, RPC over the plugs' sockets, partial status merges, error replies,
//! silent and vanishing plugs, garbage and oversized frames, reconnects, secrets,
//! PM Mini and Pro 3EM statuses, and a thousand plugs at once.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::shelly_sim::{Mode, SimPlug, plug_status};
use crate::support::*;

const PLUG: &str = "shellyplusplugs-a8032ab12345";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn device_count(server: &ShellyServer) -> u64 {
    server.get("/devices").json()["count"].as_u64().unwrap_or(0)
}

#[test]
fn metrics_devices_and_status_with_one_plug() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = server.plug(
        &rt,
        "/edge-01",
        PLUG,
        plug_status(45.3, 220.5, 0.205, 1234.5),
    );

    let devices = server.get("/devices").json();
    assert_eq!(devices["devices"], json!(["edge-01"]));
    assert_eq!(devices["plugs"][0]["id"], PLUG);

    for path in ["/metrics/edge-01", &format!("/metrics/{PLUG}"), "/metrics"] {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let j = r.json();
        assert_eq!(j["device_id"], PLUG);
        assert_eq!(j["metrics"]["power_total_watts"], 45.3);
        assert_eq!(j["metrics"]["power_voltage_volts"], 220.5);
        assert_eq!(j["metrics"]["power_current_amps"], 0.205);
        assert_eq!(j["metrics"]["power_factor"], 0.92);
        assert_eq!(j["metrics"]["power_frequency_hertz"], 50.0);
        assert_eq!(j["metrics"]["energy_total_wh"], 1234.5);
        assert_eq!(j["metrics"]["temperature_celsius"], 35.2);
        assert_eq!(j["metrics"]["output_on"], 1.0);
        assert!(j["timestamp"].as_f64().expect("timestamp") > 1.7e9);
    }

    // A partial NotifyStatus is merged over the full status.
    plug.update("switch:0", json!({"voltage": 231.0}));
    wait_for("the merge", Duration::from_secs(5), || {
        server.get("/status/edge-01").json()["status"]["switch:0"]["voltage"] == 231.0
    });
    let status = server.get("/status/edge-01").json();
    assert_eq!(
        status["status"]["switch:0"]["apower"], 45.3,
        "untouched fields stay"
    );
    // Power components, and the numbers of `sys` and `wifi` the plug page shows;
    // nothing else (`ws`), and no strings (`sys.mac`).
    assert!(status["status"].get("ws").is_none(), "{status}");
    assert_eq!(status["status"]["sys"]["uptime"], 1234);
    assert!(status["status"]["sys"].get("mac").is_none(), "{status}");

    let r = server.get("/nope");
    assert_eq!(
        (r.status, r.json()["error"].as_str().map(str::to_owned)),
        (404, Some("Not found: /nope".into()))
    );
    assert_eq!(server.get("/metrics/unknown-device").status, 404);
    assert_eq!(
        server.get("/metrics/unknown-device").json()["error"],
        "No Shelly device connected: unknown-device"
    );
}

#[test]
fn no_device_and_several_devices() {
    let server = ShellyServer::start(None);
    let r = server.get("/metrics");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "No Shelly device connected");
    let rt = runtime();
    let _a = server.plug(
        &rt,
        "/pi-01",
        "shellyplugsg3-000000000001",
        plug_status(5.0, 230.0, 0.02, 1.0),
    );
    let _b = server.plug(
        &rt,
        "/pi-02",
        "shellyplugsg3-000000000002",
        plug_status(7.0, 230.0, 0.03, 2.0),
    );
    let r = server.get("/metrics");
    assert_eq!(r.status, 409, "no plug picked at random");
    assert_eq!(r.json()["devices"], json!(["pi-01", "pi-02"]));
    assert_eq!(
        server.get("/metrics/pi-02").json()["metrics"]["power_total_watts"],
        7.0
    );
}

#[test]
fn silent_plug_times_out_after_five_seconds() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = server.plug(&rt, "/edge-01", PLUG, plug_status(1.0, 230.0, 0.01, 1.0));
    plug.set_mode(Mode::Silent);
    let started = Instant::now();
    let r = server.get("/metrics/edge-01");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .expect("error")
            .starts_with("RPC request timeout (5 s)")
    );
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(7),
        "{took:?}"
    );
}

#[test]
fn error_replies_are_500_with_the_reason() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = server.plug(&rt, "/edge-01", PLUG, plug_status(1.0, 230.0, 0.01, 1.0));
    plug.set_mode(Mode::Error(-109, "shutting down in 952 ms".into()));
    let r = server.get("/metrics/edge-01");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"],
        format!("RPC error from edge-01: code -109: shutting down in 952 ms")
    );
    // A status without any power component is an invalid answer, not zeros.
    plug.set_mode(Mode::Answer);
    let bare = server.plug(
        &rt,
        "/bare",
        "shellyplus1-000000000009",
        json!({"switch:0": {"id": 0, "output": true}}),
    );
    let r = server.get("/metrics/bare");
    assert_eq!(r.status, 500);
    assert!(
        r.json()["error"]
            .as_str()
            .expect("error")
            .starts_with("Invalid RPC response from bare")
    );
    drop(bare);
}

#[test]
fn a_plug_that_goes_away_is_502_while_waiting_and_404_after() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = server.plug(&rt, "/edge-01", PLUG, plug_status(1.0, 230.0, 0.01, 1.0));
    plug.set_mode(Mode::Silent);
    let url = format!("{}/metrics/edge-01", server.api_url);
    let waiting = std::thread::spawn(move || get(&url, &[]));
    std::thread::sleep(Duration::from_millis(300));
    plug.close();
    let r = waiting.join().expect("join");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"], "Device connection lost: edge-01");
    wait_for("the plug to be gone", Duration::from_secs(5), || {
        device_count(&server) == 0
    });
    assert_eq!(server.get("/metrics/edge-01").status, 404);
}

#[test]
fn garbage_is_counted_and_oversized_frames_close_the_socket() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = server.plug(&rt, "/edge-01", PLUG, plug_status(3.0, 230.0, 0.01, 1.0));
    for junk in [
        "not json",
        "[1,2,3]",
        "{\"hello\":1}",
        "{\"id\":999999,\"result\":{}}",
    ] {
        plug.send_raw(Message::Text(junk.into()));
    }
    plug.send_raw(Message::Binary(vec![0xff, 0xfe].into()));
    wait_for("garbage counted", Duration::from_secs(5), || {
        server.get("/devices").json()["stats"]["invalid_frames"].as_u64() == Some(4)
    });
    // Still serving after the garbage.
    assert_eq!(
        server.get("/metrics/edge-01").json()["metrics"]["power_total_watts"],
        3.0
    );

    plug.send_raw(Message::Text("x".repeat(200 * 1024).into()));
    wait_for(
        "the oversized frame to close the socket",
        Duration::from_secs(5),
        || device_count(&server) == 0,
    );
    assert_eq!(
        server.get("/devices").json()["stats"]["oversized_frames"],
        1
    );
}

#[test]
fn a_reconnect_replaces_the_old_connection() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let first = server.plug(&rt, "/edge-01", PLUG, plug_status(1.0, 230.0, 0.01, 1.0));
    let second = rt.block_on(SimPlug::connect(
        &format!("{}/edge-01", server.ws_url),
        PLUG,
        plug_status(2.0, 230.0, 0.01, 1.0),
    ));
    wait_for(
        "the old socket to be closed",
        Duration::from_secs(5),
        || first.task.is_finished(),
    );
    assert_eq!(device_count(&server), 1);
    assert_eq!(
        server.get("/metrics/edge-01").json()["metrics"]["power_total_watts"],
        2.0
    );
    assert_eq!(server.get("/devices").json()["stats"]["replaced"], 1);
    drop(second);
}

#[test]
fn pm_mini_and_pro_3em() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let pm = json!({"pm1:0":{"id":0,"voltage":230.9,"current":1,"apower":230,"freq":51,"aenergy":{"total":3195.88,"by_minute":[0,0,0],"minute_ts":1727857620},"ret_aenergy":{"total":0,"by_minute":[0,0,0],"minute_ts":1727857620}}});
    let em3 = json!({
        "em:0":{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,"a_freq":50,"b_current":4.027,"b_voltage":236.201,"b_act_power":-951.1,"c_current":3.03,"c_voltage":236.402,"c_act_power":715.4,"n_current":null,"total_current":11.083,"total_act_power":2484.782,"errors":["phase_sequence"]},
        "emdata:0":{"id":0,"total_act":1500.5,"total_act_ret":20.25}
    });
    let _pm = server.plug(&rt, "/pm", "shellypmminig3-84fce63f0001", pm);
    let _em = server.plug(&rt, "/em", "shellypro3em-ec62608f0001", em3);
    let pm = server.get("/metrics/pm").json();
    assert_eq!(pm["metrics"]["power_total_watts"], 230.0);
    assert_eq!(pm["metrics"]["power_voltage_volts"], 230.9);
    assert_eq!(pm["metrics"]["energy_total_wh"], 3195.88);
    assert!(
        pm["metrics"].get("output_on").is_none(),
        "a PM Mini has no relay"
    );
    let em = server.get("/metrics/em").json();
    assert_eq!(em["metrics"]["power_total_watts"], 2484.782);
    assert_eq!(em["metrics"]["power_current_amps"], 11.083);
    assert_eq!(em["metrics"]["energy_total_wh"], 1500.5);
    assert_eq!(em["metrics"]["energy_returned_wh"], 20.25);
    assert_eq!(em["errors"], json!(["phase_sequence"]));
}

#[test]
fn the_secret_is_required_in_the_url() {
    let server = ShellyServer::start(Some("s3cret"));
    let rt = runtime();
    let refused = rt.block_on(tokio_tungstenite::connect_async(format!(
        "{}/edge-01",
        server.ws_url
    )));
    assert!(refused.is_err(), "no token, no connection");
    let wrong = rt.block_on(tokio_tungstenite::connect_async(format!(
        "{}/edge-01?token=nope",
        server.ws_url
    )));
    assert!(wrong.is_err());
    let _ok = server.plug(
        &rt,
        "/edge-01?token=s3cret",
        PLUG,
        plug_status(1.0, 230.0, 0.01, 1.0),
    );
    let _path = server.plug(
        &rt,
        "/s3cret/edge-02",
        "shellyplusplugs-000000000002",
        plug_status(1.0, 230.0, 0.01, 1.0),
    );
    assert_eq!(server.get("/devices").json()["stats"]["rejected"], 2);
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("s3cret"),
        "the secret is never logged:\n{log}"
    );
}

#[test]
fn a_thousand_plugs_at_once() {
    // 2,000 sockets between this test and the server.
    raise_fd_limit();
    let server = ShellyServer::start(None);
    let rt = runtime();
    let url = server.ws_url.clone();
    let plugs = rt.block_on(async move {
        let mut handles = Vec::new();
        for n in 0..1000u32 {
            let url = format!("{url}/node-{n:04}");
            handles.push(tokio::spawn(async move {
                SimPlug::connect(
                    &url,
                    &format!("shellyplugsg3-{n:012x}"),
                    plug_status(f64::from(n), 230.0, 0.01, 1.0),
                )
                .await
            }));
        }
        let mut plugs = Vec::new();
        for h in handles {
            plugs.push(h.await.expect("connect"));
        }
        plugs
    });
    wait_for("1000 plugs", Duration::from_secs(20), || {
        device_count(&server) == 1000
    });
    for n in [0u32, 1, 499, 998, 999] {
        let j = server.get(&format!("/metrics/node-{n:04}")).json();
        assert_eq!(j["metrics"]["power_total_watts"], f64::from(n), "node {n}");
    }
    drop(plugs);
}
