//! The `shelly` collector: wall-socket power from a Shelly plug, read one of three
//! ways (config `shelly:`):
//!
//! * through a plug hub (`shelly-server`) at `server_url` (the spec's setup);
//! * from the hub running inside this exporter (`shelly.listen`);
//! * straight from plugs over HTTP (`shelly.poll`), for plugs that cannot connect
//!   out: Gen2+ `/rpc/Shelly.GetStatus` (digest auth) and Gen1 `/status`.
//!
//! Which plug powers this device is `shelly.device_id`, by default the hostname;
//! when that is not set and the hub knows no plug by the hostname, the hub's only
//! plug is used. Samples carry a `plug` label with the plug's id. Energy is a
//! counter in joules that never goes backwards: when a plug's total drops (reboot,
//! counter reset) the collector continues from where it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{CollectError, Collector};
use crate::config::PollTarget;
use crate::http::{client, digest};
use crate::sample::{Family, Sample, SampleSink, sanitize};
use crate::shelly::Hub;
use crate::sources::shelly::{self, Reading};

pub const NAME: &str = "shelly";

/// Time for one request: the hub's RPC timeout (5 s) plus a margin.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
const MAX_BODY: usize = 256 * 1024;

static POWER: Family = Family::gauge(
    "power_total_watts",
    "AC power drawn at the wall socket (Shelly plug)",
    "watts",
);
static VOLTAGE: Family = Family::gauge(
    "power_voltage_volts",
    "AC voltage at the wall socket (Shelly plug)",
    "volts",
);
static CURRENT: Family = Family::gauge(
    "power_current_amps",
    "AC current at the wall socket (Shelly plug)",
    "amps",
);
static FACTOR: Family = Family::gauge(
    "power_factor",
    "Power factor at the wall socket (Shelly plug)",
    "",
);
static FREQUENCY: Family = Family::gauge(
    "power_frequency_hertz",
    "AC frequency (Shelly plug)",
    "hertz",
);
static ENERGY: Family = Family::counter(
    "power_energy_joules_total",
    "Energy drawn at the wall socket since the exporter started counting (Shelly plug; never decreases)",
    "joules",
);
static RETURNED: Family = Family::counter(
    "power_returned_energy_joules_total",
    "Energy returned to the grid (bidirectional Shelly meters; never decreases)",
    "joules",
);
static TEMPERATURE: Family = Family::gauge(
    "power_device_temperature_celsius",
    "Shelly plug's internal temperature",
    "celsius",
);
static OUTPUT: Family = Family::gauge("power_output_on", "Shelly plug relay on (1) or off (0)", "");
static ERROR: Family = Family::gauge(
    "power_error",
    "Error flag a Shelly plug reports (overtemp, overpower, ...), 1 while set",
    "",
);

/// Where the collector reads plugs.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellySource {
    Hub { url: String },
    Embedded,
    Poll(Vec<PollTarget>),
}

/// Keeps an energy total monotonic across resets of the device's counter.
#[derive(Debug, Default, Clone, Copy)]
struct Monotonic {
    last_raw: Option<f64>,
    offset: f64,
}

impl Monotonic {
    fn update(&mut self, raw: f64) -> f64 {
        if let Some(last) = self.last_raw
            && raw < last
        {
            // A reboot (a small step back) or a reset (to about 0): carry on from
            // the last value rather than report a drop.
            self.offset += last - raw;
        }
        self.last_raw = Some(raw);
        raw + self.offset
    }
}

#[derive(Debug)]
pub struct ShellyCollector {
    source: ShellySource,
    /// Configured device id, or `None` for "the hostname, else the only plug".
    device_id: Option<String>,
    hostname: String,
    hub: Option<Arc<Hub>>,
    energy: HashMap<String, (Monotonic, Monotonic)>,
}

impl ShellyCollector {
    pub fn new(
        source: ShellySource,
        device_id: Option<String>,
        hostname: String,
        hub: Option<Arc<Hub>>,
    ) -> Self {
        ShellyCollector {
            source,
            device_id,
            hostname,
            hub,
            energy: HashMap::new(),
        }
    }

    async fn fetch(&self) -> Vec<Result<(String, Reading), String>> {
        match &self.source {
            ShellySource::Hub { url } => vec![self.read_hub(url).await],
            ShellySource::Embedded => vec![self.read_embedded().await],
            ShellySource::Poll(targets) => {
                let mut out = Vec::new();
                for t in targets {
                    out.push(poll(t).await.map(|r| (t.name.clone(), r)));
                }
                out
            }
        }
    }

    fn wanted(&self) -> &str {
        self.device_id.as_deref().unwrap_or(&self.hostname)
    }

    async fn read_hub(&self, base: &str) -> Result<(String, Reading), String> {
        let base = base.trim_end_matches('/');
        let url = format!("{base}/metrics/{}", self.wanted());
        let response = client::get(&url, &[], REQUEST_TIMEOUT, MAX_BODY)
            .await
            .map_err(|e| e.to_string())?;
        let response = if response.status == 404 && self.device_id.is_none() {
            // No plug named after this host: use the hub's only plug, if it has one.
            client::get(&format!("{base}/metrics"), &[], REQUEST_TIMEOUT, MAX_BODY)
                .await
                .map_err(|e| e.to_string())?
        } else {
            response
        };
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        match response.status {
            200 => {
                let plug = body["device_id"].as_str().unwrap_or("").to_owned();
                Ok((plug, reading_from_hub_json(&body)))
            }
            409 => Err(format!(
                "several plugs are connected to the hub ({}); set shelly.device_id",
                body["devices"]
            )),
            status => Err(format!(
                "the hub at {base} answered {status}: {}",
                body["error"].as_str().unwrap_or("(no reason given)")
            )),
        }
    }

    async fn read_embedded(&self) -> Result<(String, Reading), String> {
        let hub = self
            .hub
            .as_ref()
            .ok_or("the embedded plug hub is not running")?;
        let plug = match (hub.resolve(self.wanted()), &self.device_id) {
            (Some(plug), _) => plug,
            (None, Some(id)) => return Err(format!("No Shelly device connected: {id}")),
            (None, None) => match hub.plugs().as_slice() {
                [one] => one.clone(),
                [] => return Err("No Shelly device connected".into()),
                _ => return Err("several plugs are connected; set shelly.device_id".into()),
            },
        };
        let reading = hub.read(&plug).await.map_err(|e| e.to_string())?;
        Ok((plug.id.clone(), reading))
    }

    fn push(&mut self, out: &mut SampleSink, plug: &str, r: &Reading) {
        let mk = |family: &'static Family, v: f64| {
            Sample::new(family, v).const_label("plug", plug.to_owned())
        };
        out.push_some(r.power_watts, |v| mk(&POWER, v));
        out.push_some(r.voltage_volts, |v| mk(&VOLTAGE, v));
        out.push_some(r.current_amps, |v| mk(&CURRENT, v));
        out.push_some(r.power_factor, |v| mk(&FACTOR, v));
        out.push_some(r.frequency_hertz, |v| mk(&FREQUENCY, v));
        out.push_some(r.temperature_celsius, |v| mk(&TEMPERATURE, v));
        out.push_some(r.output_on.map(|o| if o { 1.0 } else { 0.0 }), |v| {
            mk(&OUTPUT, v)
        });
        let (energy, returned) = self.energy.entry(plug.to_owned()).or_default();
        // Wh to J.
        let energy_j = r.energy_wh.map(|wh| energy.update(wh) * 3600.0);
        let returned_j = r.returned_energy_wh.map(|wh| returned.update(wh) * 3600.0);
        out.push_some(energy_j, |v| mk(&ENERGY, v));
        out.push_some(returned_j, |v| mk(&RETURNED, v));
        for e in &r.errors {
            if let Some(flag) = sanitize(e) {
                out.push(
                    Sample::with_id(format!("power_error_{flag}"), &ERROR, 1.0)
                        .label("error", flag.clone())
                        .const_label("plug", plug.to_owned()),
                );
            }
        }
    }
}

impl Collector for ShellyCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        // `collect` runs on a blocking thread, where waiting on the runtime is fine.
        let results = tokio::runtime::Handle::current().block_on(self.fetch());
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok((plug, reading)) => self.push(out, &plug, &reading),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CollectError::Failed(errors.join("; ")))
        }
    }
}

/// The hub's `/metrics` JSON back to a reading.
fn reading_from_hub_json(body: &Value) -> Reading {
    let m = &body["metrics"];
    let f = |k: &str| m.get(k).and_then(Value::as_f64).filter(|v| v.is_finite());
    Reading {
        power_watts: f("power_total_watts"),
        voltage_volts: f("power_voltage_volts"),
        current_amps: f("power_current_amps"),
        power_factor: f("power_factor"),
        frequency_hertz: f("power_frequency_hertz"),
        energy_wh: f("energy_total_wh"),
        returned_energy_wh: f("energy_returned_wh"),
        temperature_celsius: f("temperature_celsius"),
        output_on: f("output_on").map(|v| v != 0.0),
        errors: body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        components: Vec::new(),
    }
}

/// Reads one plug over HTTP.
async fn poll(target: &PollTarget) -> Result<Reading, String> {
    let path = if target.generation == 1 {
        "/status"
    } else {
        "/rpc/Shelly.GetStatus"
    };
    let url = format!("{}{path}", target.url);
    let mut headers = Vec::new();
    if target.generation == 1
        && let Some(password) = &target.password
    {
        headers.push((
            hyper::header::AUTHORIZATION,
            crate::http::auth::basic_header(&target.username, password.expose()),
        ));
    }
    let mut response = client::get(&url, &headers, REQUEST_TIMEOUT, MAX_BODY)
        .await
        .map_err(|e| e.to_string())?;
    if response.status == 401 && target.generation == 2 {
        let password = target.password.as_ref().ok_or_else(|| {
            format!(
                "{} asks for a password; set shelly.poll[].password",
                target.name
            )
        })?;
        let challenge = response
            .headers
            .get(hyper::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(digest::parse_challenge)
            .ok_or_else(|| format!("{} sent no usable digest challenge", target.name))?;
        let cnonce = format!("{:016x}", rand_u64());
        let header = digest::authorization(
            &challenge,
            &target.username,
            password.expose(),
            "GET",
            path,
            &cnonce,
        )
        .ok_or_else(|| {
            format!(
                "{} asks for digest algorithm {}",
                target.name, challenge.algorithm
            )
        })?;
        response = client::get(
            &url,
            &[(hyper::header::AUTHORIZATION, header)],
            REQUEST_TIMEOUT,
            MAX_BODY,
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    if response.status != 200 {
        return Err(format!(
            "{} answered {} to {path}",
            target.name, response.status
        ));
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("{} sent invalid JSON: {e}", target.name))?;
    let reading = match (target.generation, &body) {
        (1, _) => shelly::gen1_reading(&body),
        (_, Value::Object(status)) => shelly::reading(status),
        _ => {
            return Err(format!(
                "{} sent a status that is not an object",
                target.name
            ));
        }
    };
    if reading.components.is_empty() {
        return Err(format!("{} reports no power component", target.name));
    }
    Ok(reading)
}

/// A client nonce: not a secret, only needs to differ between requests.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_never_goes_backwards() {
        let mut m = Monotonic::default();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(m.update(100.0), 100.0));
        assert!(close(m.update(150.0), 150.0));
        // A reboot steps back slightly; the counter holds its value.
        assert!(close(m.update(149.9), 150.0));
        assert!(close(m.update(160.0), 160.1));
        // A reset to zero continues from where it was.
        assert!(close(m.update(0.0), 160.1));
        assert!(close(m.update(5.0), 165.1));
    }
}
