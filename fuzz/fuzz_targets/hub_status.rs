//! Feeds a plug's frames (one per input line) to the hub's status, one after
//! the other, as a connected plug would send them: no panic, and whatever was
//! sent the kept status stays inside its bounds (components, values), every
//! channel is one component's (no two share type, index and phase), and every
//! value the page would show is finite.
#![no_main]

use std::collections::BTreeSet;

use edge_metrics_exporter::sources::shelly::{
    CompactStatus, Incoming, parse_frame, status::MAX_COMPONENTS, status::MAX_LEAVES,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut status = CompactStatus::default();
    for line in text.lines().take(64) {
        let (params, full) = match parse_frame(line) {
            Ok(Incoming::Notification { params, method, .. }) => {
                (params, method == "NotifyFullStatus")
            }
            Ok(Incoming::Response {
                result: Ok(serde_json::Value::Object(status)),
                ..
            }) => (status, true),
            _ => continue,
        };
        let refused = status.apply(&params, full);
        assert!(status.len() <= MAX_LEAVES, "{} values kept", status.len());
        assert!(
            status.component_count() <= MAX_COMPONENTS,
            "{} components kept",
            status.component_count()
        );
        let _ = refused.any();
    }
    let view = status.view();
    let (chans, total) = (&view.channels, &view.total);
    let mut seen = BTreeSet::new();
    for c in chans {
        assert!(
            seen.insert((c.component, c.index, c.phase)),
            "two channels {} {} {:?}",
            c.component,
            c.index,
            c.phase
        );
        let m = &c.metrics;
        for v in [
            m.power_total_watts,
            m.power_voltage_volts,
            m.power_current_amps,
            m.energy_total_joules,
        ]
        .into_iter()
        .flatten()
        {
            assert!(v.is_finite());
        }
    }
    if let Some(t) = total {
        assert!(t.power_total_watts.is_none_or(f64::is_finite));
    }
});
