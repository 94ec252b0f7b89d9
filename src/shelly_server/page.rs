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
use super::measures::MEASURES;
use crate::exposition::{Format, escape_label_value, write_family_header, write_family_line};
use crate::net::body::QueryParams;
use crate::net::error::ApiError;
use crate::sample::Family;
use crate::sources::shelly::StatusView;

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

// The measurements' families (per channel, per device total) are
// `measures::MEASURES`, shared with the `shelly` collector; these are the page's
// own, about the plugs.
families! {
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
        [(axum::http::header::CONTENT_TYPE, FORMAT.content_type())],
        body,
    )
        .into_response()
}

/// A per-plug value of the page.
type PlugValue = fn(&PlugPage) -> Option<f64>;

/// The page is text 0.0.4, as it always was.
const FORMAT: Format = Format::Text004;

/// What one plug contributes to the page: its labels, and what its kept status
/// reads as (taken from its leaves; no document is rebuilt).
struct PlugPage {
    /// `plug="…",alias="…"`, escaped.
    labels: String,
    age: f64,
    view: StatusView,
    /// Parts of its statuses left out, by reason.
    refused: Vec<(String, f64)>,
    /// Labels of each of `view.channels` (`component="switch",channel="0"`, with
    /// `phase="a"` for the phases of an `em`).
    channels: Vec<String>,
}

fn plug_labels(plug: &Plug) -> String {
    let mut labels = String::from("plug=\"");
    escape_label_value(&mut labels, &plug.id);
    labels.push('"');
    if let Some(alias) = &plug.alias {
        labels.push_str(",alias=\"");
        escape_label_value(&mut labels, alias);
        labels.push('"');
    }
    labels
}

impl PlugPage {
    /// `None` when the plug's status is older than `oldest` and it did not
    /// answer after `asked_at`.
    fn of(plug: &Plug, oldest: Duration, asked_at: std::time::Instant) -> Option<PlugPage> {
        let (view, age) = plug.snapshot();
        let answered_now = plug.updated_at().is_some_and(|t| t >= asked_at);
        let age = age.filter(|a| *a <= oldest || answered_now)?;
        let channels = view
            .channels
            .iter()
            .map(|c| {
                let mut labels = format!("component=\"{}\",channel=\"{}\"", c.component, c.index);
                if let Some(p) = c.phase {
                    labels.push_str(&format!(",phase=\"{p}\""));
                }
                labels
            })
            .collect();
        Some(PlugPage {
            labels: plug_labels(plug),
            age: age.as_secs_f64(),
            refused: plug
                .refused()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (format!("reason=\"{}\"", r.as_str()), *n as f64))
                .collect(),
            channels,
            view,
        })
    }
}

/// One family: its header (type from `Family.kind`), then a line per plug (or
/// channel) that has a value; nothing when none has.
fn family<'a>(
    out: &mut String,
    family: &Family,
    rows: impl Iterator<Item = (&'a str, &'a str, Option<f64>)>,
) {
    let mut header = false;
    for (labels, extra, value) in rows {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            continue;
        };
        if !header {
            write_family_header(out, family, FORMAT);
            header = true;
        }
        write_family_line(out, family, &[labels, extra], v, FORMAT);
    }
}

fn render(connected: usize, plugs: &[Arc<Plug>], pages: &[PlugPage]) -> String {
    use std::fmt::Write as _;
    let lines: usize = pages.iter().map(|p| 4 + p.channels.len() * 9).sum();
    let mut out = String::with_capacity(lines * 96 + 4096);
    write_family_header(&mut out, &CONNECTED, FORMAT);
    write_family_line(&mut out, &CONNECTED, &[], connected as f64, FORMAT);
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
                    if !extra.is_empty() {
                        extra.push(',');
                    }
                    let _ = write!(extra, "{name}=\"");
                    escape_label_value(&mut extra, v);
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
        (&RSSI, |p| p.view.rssi),
        (&UPTIME, |p| p.view.uptime),
        (&UPDATE, |p| {
            p.view.update_available.map(|b| f64::from(u8::from(b)))
        }),
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
    for m in &MEASURES {
        family(
            &mut out,
            m.channel,
            pages.iter().flat_map(|p| {
                p.view
                    .channels
                    .iter()
                    .zip(&p.channels)
                    .map(move |(c, extra)| {
                        (p.labels.as_str(), extra.as_str(), (m.value)(&c.metrics))
                    })
            }),
        );
    }
    for m in &MEASURES {
        let Some(total) = m.total else { continue };
        family(
            &mut out,
            total,
            pages.iter().filter_map(|p| {
                let t = p.view.total.as_ref()?;
                Some((p.labels.as_str(), "", (m.value)(t)))
            }),
        );
    }
    out
}
