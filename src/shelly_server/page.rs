//! `GET /plugs/metrics`: every connected plug in Prometheus text, from the status
//! the hub keeps (item: readings from notifications). Per channel (`channel`, and
//! `phase` for the three phases of an `em` meter), a device total where the device
//! reports one, what the plug is (`shelly_plug_info`) and how it is (Wi-Fi, uptime,
//! pending update).
//!
//! `?max_age=SECONDS` (default 60): a plug whose status is older gets one
//! `Shelly.GetStatus` (shared with other readers), all such plugs at once within the
//! RPC timeout; a plug whose status is still older than three times `max_age` is
//! left out, as the exporter drops samples older than three intervals.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::hub::{Hub, Plug};
use crate::http::body::QueryParams;
use crate::http::error::ApiError;
use crate::sample::{Family, Sample};
use crate::sources::shelly::{self, Measurements};

/// The default freshness of `/plugs/metrics`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// Refreshes of stale plugs in flight at once.
const REFRESHES: usize = 256;

#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    max_age: Option<f64>,
}

macro_rules! families {
    ($($id:ident $kind:ident $name:literal $help:literal $unit:literal;)*) => {
        $(static $id: Family = Family::$kind($name, $help, $unit);)*
    };
}

families! {
    POWER gauge "shelly_plug_power_watts" "Active power of a plug's channel (negative when a bidirectional meter exports)" "watts";
    VOLTAGE gauge "shelly_plug_voltage_volts" "Voltage of a plug's channel" "volts";
    CURRENT gauge "shelly_plug_current_amps" "Current of a plug's channel" "amps";
    FACTOR gauge "shelly_plug_power_factor" "Power factor of a plug's channel" "";
    FREQUENCY gauge "shelly_plug_frequency_hertz" "Mains frequency at a plug's channel" "hertz";
    ENERGY counter "shelly_plug_energy_joules_total" "Active energy through a plug's channel, the device's own counter" "joules";
    RETURNED counter "shelly_plug_returned_energy_joules_total" "Energy a plug's channel returned to the grid, the device's own counter" "joules";
    TEMPERATURE gauge "shelly_plug_temperature_celsius" "Temperature of a plug's relay" "celsius";
    RELAY gauge "shelly_plug_relay_on" "Relay of a plug's channel on (1) or off (0)" "";
    TOTAL_POWER gauge "shelly_plug_total_power_watts" "Active power of a whole device, as the device totals it (three-phase meters)" "watts";
    TOTAL_CURRENT gauge "shelly_plug_total_current_amps" "Current of a whole device, as the device totals it" "amps";
    TOTAL_ENERGY counter "shelly_plug_total_energy_joules_total" "Active energy of a whole device, as the device totals it" "joules";
    TOTAL_RETURNED counter "shelly_plug_total_returned_energy_joules_total" "Returned energy of a whole device, as the device totals it" "joules";
    INFO gauge "shelly_plug_info" "A connected plug: model, generation, firmware, MAC (Shelly.GetDeviceInfo); always 1" "";
    RSSI gauge "shelly_plug_wifi_rssi_dbm" "Wi-Fi signal strength the plug reports" "dbm";
    UPTIME gauge "shelly_plug_uptime_seconds" "Seconds since the plug started" "seconds";
    UPDATE gauge "shelly_plug_update_available" "A firmware update is available for the plug (1) or not (0)" "";
    AGE gauge "shelly_plug_status_age_seconds" "Age of the plug status the page was made from" "seconds";
    CONNECTED gauge "shelly_plugs_connected" "Plugs connected to the hub" "";
}

pub async fn plugs_metrics(
    State(hub): State<Arc<Hub>>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Response {
    let max_age = match query.max_age {
        None => DEFAULT_MAX_AGE,
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => {
            return ApiError::bad_request(format!(
                "max_age must be seconds from 0 to 86400, got {s}"
            ))
            .into_response();
        }
    };
    let plugs = hub.plugs();
    // Stale plugs get one RPC each (shared with other readers), all at once.
    let stale: Vec<Arc<Plug>> = plugs
        .iter()
        .filter(|p| p.age().is_none_or(|a| a > max_age))
        .cloned()
        .collect();
    if !stale.is_empty() {
        let refresh = futures_util::stream::iter(stale)
            .map(|p| {
                let hub = hub.clone();
                async move {
                    let _ = hub.read_fresh(&p, max_age).await;
                }
            })
            .buffer_unordered(REFRESHES)
            .collect::<Vec<()>>();
        let _ = tokio::time::timeout(hub.config.rpc_timeout, refresh).await;
    }
    let mut out = Vec::with_capacity(plugs.len() * 12);
    out.push(Sample::own(&CONNECTED, plugs.len() as f64));
    for plug in &plugs {
        render_plug(plug, max_age * 3, &mut out);
    }
    crate::telemetry::page(out)
}

fn render_plug(plug: &Plug, oldest: Duration, out: &mut Vec<Sample>) {
    let with_plug = |s: Sample| -> Sample {
        let s = s.const_label("plug", plug.id.as_str());
        match &plug.alias {
            Some(alias) => s.const_label("alias", alias.as_str()),
            None => s,
        }
    };
    if let Some(info) = plug.info() {
        let mut s = with_plug(Sample::own(&INFO, 1.0));
        for (name, value) in [
            ("model", &info.model),
            ("gen", &info.generation),
            ("firmware", &info.firmware),
            ("mac", &info.mac),
            ("app", &info.app),
        ] {
            if let Some(v) = value {
                s = s.const_label(name, v.as_str());
            }
        }
        out.push(s);
    }
    let (status, age) = plug.snapshot();
    let Some(age) = age.filter(|a| *a <= oldest) else {
        return;
    };
    out.push(with_plug(Sample::own(&AGE, age.as_secs_f64())));
    for (family, value) in [
        (&RSSI, status.number("wifi.rssi")),
        (&UPTIME, status.number("sys.uptime")),
        (
            &UPDATE,
            status
                .flag("sys.update_available")
                .map(|b| f64::from(u8::from(b))),
        ),
    ] {
        if let Some(v) = value {
            out.push(with_plug(Sample::own(family, v)));
        }
    }
    let (channels, total) = shelly::channels(&status.to_map());
    for c in channels {
        let labelled = |s: Sample| -> Sample {
            let s = with_plug(s).const_label("channel", c.index.to_string());
            match c.phase {
                Some(p) => s.const_label("phase", p),
                None => s,
            }
        };
        push_measurements(&c.metrics, false, out, &labelled);
    }
    if let Some(total) = total {
        push_measurements(&total, true, out, &with_plug);
    }
}

fn push_measurements(
    m: &Measurements,
    total: bool,
    out: &mut Vec<Sample>,
    label: &dyn Fn(Sample) -> Sample,
) {
    let joules = |wh: Option<f64>| wh.map(|wh| wh * 3600.0);
    let rows: Vec<(&'static Family, Option<f64>)> = if total {
        vec![
            (&TOTAL_POWER, m.power_total_watts),
            (&TOTAL_CURRENT, m.power_current_amps),
            (&TOTAL_ENERGY, joules(m.energy_total_wh)),
            (&TOTAL_RETURNED, joules(m.energy_returned_wh)),
        ]
    } else {
        vec![
            (&POWER, m.power_total_watts),
            (&VOLTAGE, m.power_voltage_volts),
            (&CURRENT, m.power_current_amps),
            (&FACTOR, m.power_factor),
            (&FREQUENCY, m.power_frequency_hertz),
            (&ENERGY, joules(m.energy_total_wh)),
            (&RETURNED, joules(m.energy_returned_wh)),
            (&TEMPERATURE, m.temperature_celsius),
            (&RELAY, m.output_on.map(|on| f64::from(u8::from(on)))),
        ]
    };
    for (family, value) in rows {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            out.push(label(Sample::own(family, v)));
        }
    }
}
