//! `GET /plugs/metrics`: every connected plug in Prometheus text, from the status
//! the hub keeps (item: readings from notifications). Per channel (`channel`, and
//! `phase` for the three phases of an `em` meter), a device total where the device
//! reports one, what the plug is (`shelly_plug_info`) and how it is (Wi-Fi, uptime,
//! pending update).
//!
//! Each channel is labelled with its component's type and index (`component`,
//! `channel`), so `switch:0` and `pm1:0` of one device never share a series.
//!
//! `?max_age=SECONDS` (default 60): a plug whose status is older gets one
//! `Shelly.GetStatus` (shared with other readers), all such plugs at once within the
//! RPC timeout; a plug whose status is still older than three times `max_age` is
//! left out, as the exporter drops samples older than three intervals, unless it
//! answered during this request: `?max_age=0` asks every plug now and shows those
//! that answered.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::hub::{Hub, Plug};
use crate::net::body::QueryParams;
use crate::net::error::ApiError;
use crate::sample::Family;
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
    REFUSED counter "shelly_plug_status_refused_total" "Parts of a plug's statuses the hub left out, by reason: bad_key (a component index that is not canonical, like switch:00), too_many_components, too_large" "";
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
    let asked_at = std::time::Instant::now();
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
    let oldest = max_age * 3;
    let pages: Vec<PlugPage> = plugs
        .iter()
        .filter_map(|p| PlugPage::of(p, oldest, asked_at))
        .collect();
    let body = render(plugs.len(), &plugs, &pages);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::exposition::Format::Text004.content_type(),
        )],
        body,
    )
        .into_response()
}

/// A per-plug value of the page.
type PlugValue = fn(&PlugPage) -> Option<f64>;
/// A value of a channel's (or a device total's) measurements.
type MeasurementValue = fn(&Measurements) -> Option<f64>;

/// What one plug contributes to the page, read once.
struct PlugPage {
    /// `plug="…",alias="…"`, escaped.
    labels: String,
    age: f64,
    rssi: Option<f64>,
    uptime: Option<f64>,
    update: Option<f64>,
    /// Parts of its statuses left out, by reason.
    refused: Vec<(String, f64)>,
    /// Extra labels of each channel (`,component="switch",channel="0"`, with
    /// `,phase="a"` for the phases of an `em`).
    channels: Vec<(String, Measurements)>,
    total: Option<Measurements>,
}

fn plug_labels(plug: &Plug) -> String {
    let mut labels = String::from("plug=\"");
    crate::exposition::escape_label_value(&mut labels, &plug.id);
    labels.push('"');
    if let Some(alias) = &plug.alias {
        labels.push_str(",alias=\"");
        crate::exposition::escape_label_value(&mut labels, alias);
        labels.push('"');
    }
    labels
}

impl PlugPage {
    /// `None` when the plug's status is older than `oldest` and it did not
    /// answer after `asked_at`.
    fn of(plug: &Plug, oldest: Duration, asked_at: std::time::Instant) -> Option<PlugPage> {
        let (status, age) = plug.snapshot();
        let answered_now = plug.updated_at().is_some_and(|t| t >= asked_at);
        let age = age.filter(|a| *a <= oldest || answered_now)?;
        let (channels, total) = shelly::channels(&status.to_map());
        Some(PlugPage {
            labels: plug_labels(plug),
            age: age.as_secs_f64(),
            rssi: status.number("wifi.rssi"),
            uptime: status.number("sys.uptime"),
            update: status
                .flag("sys.update_available")
                .map(|b| f64::from(u8::from(b))),
            refused: plug
                .refused()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (format!(",reason=\"{}\"", r.as_str()), *n as f64))
                .collect(),
            channels: channels
                .into_iter()
                .map(|c| {
                    let mut extra =
                        format!(",component=\"{}\",channel=\"{}\"", c.component, c.index);
                    if let Some(p) = c.phase {
                        extra.push_str(&format!(",phase=\"{p}\""));
                    }
                    (extra, c.metrics)
                })
                .collect(),
            total,
        })
    }
}

/// One family: HELP and TYPE, then a line per plug (or channel) that has a value.
fn family<'a>(
    out: &mut String,
    family: &Family,
    rows: impl Iterator<Item = (&'a str, &'a str, Option<f64>)>,
) {
    use std::fmt::Write as _;
    let mut header = false;
    for (labels, extra, value) in rows {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            continue;
        };
        if !header {
            let kind = if family.name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {kind}", family.name);
            header = true;
        }
        let _ = writeln!(out, "{}{{{labels}{extra}}} {v}", family.name);
    }
}

fn render(connected: usize, plugs: &[Arc<Plug>], pages: &[PlugPage]) -> String {
    use std::fmt::Write as _;
    let lines: usize = pages.iter().map(|p| 4 + p.channels.len() * 9).sum();
    let mut out = String::with_capacity(lines * 96 + 4096);
    let _ = writeln!(out, "# HELP {} {}", CONNECTED.name, CONNECTED.help);
    let _ = writeln!(
        out,
        "# TYPE {} gauge\n{} {connected}",
        CONNECTED.name, CONNECTED.name
    );
    // Info: labels from the device info.
    let infos: Vec<(String, String)> = plugs
        .iter()
        .filter_map(|p| {
            let info = p.info()?;
            let mut extra = String::new();
            for (name, value) in [
                ("model", &info.model),
                ("gen", &info.generation),
                ("firmware", &info.firmware),
                ("mac", &info.mac),
                ("app", &info.app),
            ] {
                if let Some(v) = value {
                    let _ = write!(extra, ",{name}=\"");
                    crate::exposition::escape_label_value(&mut extra, v);
                    extra.push('"');
                }
            }
            Some((plug_labels(p), extra))
        })
        .collect();
    family(
        &mut out,
        &INFO,
        infos
            .iter()
            .map(|(l, e)| (l.as_str(), e.as_str(), Some(1.0))),
    );
    let per_plug: [(&Family, PlugValue); 4] = [
        (&AGE, |p| Some(p.age)),
        (&RSSI, |p| p.rssi),
        (&UPTIME, |p| p.uptime),
        (&UPDATE, |p| p.update),
    ];
    for (f, get) in per_plug {
        family(
            &mut out,
            f,
            pages.iter().map(|p| (p.labels.as_str(), "", get(p))),
        );
    }
    family(
        &mut out,
        &REFUSED,
        pages.iter().flat_map(|p| {
            p.refused
                .iter()
                .map(move |(extra, n)| (p.labels.as_str(), extra.as_str(), Some(*n)))
        }),
    );
    let per_channel: [(&Family, MeasurementValue); 9] = [
        (&POWER, |m| m.power_total_watts),
        (&VOLTAGE, |m| m.power_voltage_volts),
        (&CURRENT, |m| m.power_current_amps),
        (&FACTOR, |m| m.power_factor),
        (&FREQUENCY, |m| m.power_frequency_hertz),
        (&ENERGY, |m| m.energy_total_wh.map(|wh| wh * 3600.0)),
        (&RETURNED, |m| m.energy_returned_wh.map(|wh| wh * 3600.0)),
        (&TEMPERATURE, |m| m.temperature_celsius),
        (&RELAY, |m| m.output_on.map(|on| f64::from(u8::from(on)))),
    ];
    for (f, get) in per_channel {
        family(
            &mut out,
            f,
            pages.iter().flat_map(|p| {
                p.channels
                    .iter()
                    .map(move |(extra, m)| (p.labels.as_str(), extra.as_str(), get(m)))
            }),
        );
    }
    let totals: [(&Family, MeasurementValue); 4] = [
        (&TOTAL_POWER, |m| m.power_total_watts),
        (&TOTAL_CURRENT, |m| m.power_current_amps),
        (&TOTAL_ENERGY, |m| m.energy_total_wh.map(|wh| wh * 3600.0)),
        (&TOTAL_RETURNED, |m| {
            m.energy_returned_wh.map(|wh| wh * 3600.0)
        }),
    ];
    for (f, get) in totals {
        family(
            &mut out,
            f,
            pages
                .iter()
                .filter_map(|p| p.total.as_ref().map(|t| (p.labels.as_str(), "", get(t)))),
        );
    }
    out
}
