//! What one hostile plug can cost the hub: a plug (no secret needed when the
//! hub has none) that sends 1,500 new `switch:N` keys per 64 KB frame, frame
//! after frame, keeps a bounded status and a bounded page, and its refusals are
//! counted; colliding component keys (`switch:0`, `pm1:0`, `em1:0`, `switch:00`,
//! `switch:+0`) stay three series, scraped by a real Prometheus; `?max_age=0`
//! asks every plug now.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::shelly_hub::runtime;
use crate::shelly_sim::{Mode, SimPlug, plug_status};
use crate::support::*;

fn rss(server: &ShellyServer) -> f64 {
    sample_value(
        &server.get("/telemetry").body,
        "process_resident_memory_bytes",
    )
    .expect("rss")
}

#[test]
fn an_amplifying_plug_costs_what_a_four_channel_plug_costs() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let plug = rt.block_on(SimPlug::connect(
        &server.ws_url,
        "shellyplus-amplifier",
        plug_status(10.0, 230.0, 0.05, 1.0),
    ));
    eventually("the plug", Duration::from_secs(5), || {
        (server.get("/devices").json()["count"] == 1).then_some(())
    });
    let before = rss(&server);
    let mut sent = 0usize;
    for frame in 0..20 {
        let mut params = serde_json::Map::new();
        params.insert("ts".into(), json!(1_733_140_900.0));
        for i in 0..1_500 {
            // Indexes 1..255 are canonical (32 components at most are kept);
            // the rest are not.
            let index = frame * 1_500 + i + 1;
            params.insert(format!("switch:{index}"), json!({"apower": 1.0}));
        }
        let text = json!({"src": "shellyplus-amplifier", "dst": "ws", "method": "NotifyStatus",
                          "params": params})
        .to_string();
        assert!(text.len() < 64 * 1024, "{}", text.len());
        sent += text.len();
        plug.send_raw(Message::Text(text.into()));
    }
    // The last frame is in when its refusals are counted.
    let page = eventually("the refusals counted", Duration::from_secs(20), || {
        let page = server.get("/plugs/metrics").body;
        let bad = sample_value(
            &page,
            "shelly_plug_status_refused_total{plug=\"shellyplus-amplifier\",reason=\"bad_key\"}",
        )?;
        (bad >= (20 * 1_500 - 255) as f64).then_some(page)
    });
    let too_many = sample_value(
        &page,
        "shelly_plug_status_refused_total{plug=\"shellyplus-amplifier\",reason=\"too_many_components\"}",
    );
    assert_eq!(
        too_many,
        Some(255.0 - 31.0),
        "255 canonical, 32 kept (one was there)"
    );
    let channels = page
        .lines()
        .filter(|l| l.starts_with("shelly_plug_power_watts{plug=\"shellyplus-amplifier\""))
        .count();
    assert_eq!(channels, 32, "{page}");
    let status = server.get("/status/shellyplus-amplifier").json();
    let components = status["status"]
        .as_object()
        .map_or(0, |m| m.keys().filter(|k| k.starts_with("switch:")).count());
    assert_eq!(components, 32);
    let after = rss(&server);
    eprintln!(
        "{sent} bytes of status sent; page {} bytes; hub RSS {:.1} → {:.1} MB",
        page.len(),
        before / 1e6,
        after / 1e6
    );
    assert!(
        page.len() < 16 * 1024,
        "the page stays small: {}",
        page.len()
    );
    // 1.3 MB of status went in; what is kept is a few KB.
    assert!(
        after - before < 8e6,
        "the hub grew {:.1} MB",
        (after - before) / 1e6
    );
    // The plug still works: its real channel is read.
    let r = server.get("/metrics/shellyplus-amplifier?max_age=60");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn colliding_component_keys_stay_apart_for_prometheus() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    // serde_json keeps all five keys; only three are canonical.
    let mut status = serde_json::Map::new();
    for (key, field, watts) in [
        ("switch:0", "apower", 10.0),
        ("pm1:0", "apower", 20.0),
        ("em1:0", "act_power", 30.0),
        ("switch:00", "apower", 40.0),
        ("switch:+0", "apower", 50.0),
    ] {
        status.insert(key.into(), json!({ field: watts, "voltage": 230.0 }));
    }
    let _plug = rt.block_on(SimPlug::connect(
        &server.ws_url,
        "shellypro-collider",
        Value::Object(status),
    ));
    let page = eventually("the plug's page", Duration::from_secs(10), || {
        let page = server.get("/plugs/metrics").body;
        page.contains("plug=\"shellypro-collider\"").then_some(page)
    });
    let power = |component: &str| {
        sample_value(
            &page,
            &format!(
                "shelly_plug_power_watts{{plug=\"shellypro-collider\",component=\"{component}\",channel=\"0\"}}"
            ),
        )
    };
    assert_eq!(power("switch"), Some(10.0), "{page}");
    assert_eq!(power("pm1"), Some(20.0), "{page}");
    assert_eq!(power("em1"), Some(30.0), "{page}");
    assert_eq!(
        page.lines()
            .filter(|l| l.starts_with("shelly_plug_power_watts{plug=\"shellypro-collider\""))
            .count(),
        3,
        "{page}"
    );
    assert_eq!(
        sample_value(
            &page,
            "shelly_plug_status_refused_total{plug=\"shellypro-collider\",reason=\"bad_key\"}"
        ),
        Some(2.0)
    );
    if let Some(promtool) = peer("promtool") {
        let (status, out, err) = run_with_stdin(&promtool, &["check", "metrics"], page.as_bytes());
        assert!(status.success() && out.trim().is_empty(), "{out}{err}");
    }
    // A real Prometheus keeps three series, one per component.
    if let Some(prom) = crate::prometheus::prometheus() {
        prom.add_target_path("collider", &server.api_url, "/plugs/metrics");
        let series = eventually("three series scraped", Duration::from_secs(60), || {
            let r = prom
                .query("shelly_plug_power_watts{test=\"collider\",plug=\"shellypro-collider\"}");
            (r.len() == 3).then_some(r)
        });
        let mut seen: Vec<(String, f64)> = series
            .iter()
            .map(|r| {
                (
                    r["metric"]["component"].as_str().unwrap_or("").to_owned(),
                    r["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN),
                )
            })
            .collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            [
                ("em1".to_owned(), 30.0),
                ("pm1".to_owned(), 20.0),
                ("switch".to_owned(), 10.0)
            ]
        );
    }
}

#[test]
fn max_age_zero_asks_every_plug_now() {
    let server = ShellyServer::start(None);
    let rt = runtime();
    let _answers = rt.block_on(SimPlug::connect(
        &server.ws_url,
        "shellyplus-answers",
        plug_status(12.5, 230.0, 0.06, 3.0),
    ));
    let silent = rt.block_on(SimPlug::connect(
        &server.ws_url,
        "shellyplus-silent",
        plug_status(7.0, 230.0, 0.03, 3.0),
    ));
    silent.set_mode(Mode::Silent);
    eventually("two plugs", Duration::from_secs(5), || {
        (server.get("/devices").json()["count"] == 2).then_some(())
    });
    let before = server.get("/devices").json()["stats"]["rpc_requests"]
        .as_u64()
        .unwrap_or(0);
    let page = server.get("/plugs/metrics?max_age=0").body;
    let after = server.get("/devices").json()["stats"]["rpc_requests"]
        .as_u64()
        .unwrap_or(0);
    assert!(after >= before + 2, "both asked: {before} → {after}");
    assert!(
        page.contains("shelly_plug_power_watts{plug=\"shellyplus-answers\""),
        "a plug that answers at once is shown: {page}"
    );
    assert!(
        !page.contains("plug=\"shellyplus-silent\""),
        "one that did not answer is not: {page}"
    );
}
