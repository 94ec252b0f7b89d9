//! Feeds arbitrary bytes to the Shelly frame parser and, for what parses as a
//! notification or a reply, to the status document and the power reading: no
//! panic, and every value a reading gives is finite.
#![no_main]

use edge_metrics_exporter::sources::shelly::{CompactStatus, Incoming, parse_frame, reading};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let params = match parse_frame(text) {
        Ok(Incoming::Notification { params, method, .. }) => {
            let full = method == "NotifyFullStatus";
            (params, full)
        }
        Ok(Incoming::Response {
            result: Ok(serde_json::Value::Object(status)),
            ..
        }) => (status, true),
        _ => return,
    };
    let mut status = CompactStatus::default();
    status.apply(&params.0, params.1);
    status.apply(&params.0, false);
    let r = status.reading();
    assert_eq!(r, reading(&status.to_map()), "the view and a rebuilt document agree");
    let m = &r.metrics;
    for v in [
        m.power_total_watts,
        m.power_voltage_volts,
        m.power_current_amps,
        m.power_factor,
        m.power_frequency_hertz,
        m.energy_total_joules,
        m.energy_returned_joules,
        m.temperature_celsius,
    ]
    .into_iter()
    .flatten()
    {
        assert!(v.is_finite());
    }
    // What the hub serves reads back the same.
    let json = serde_json::to_string(&r).expect("serialise");
    let back: edge_metrics_exporter::sources::shelly::Reading =
        serde_json::from_str(&json).expect("read back");
    assert_eq!(back, r);
});
