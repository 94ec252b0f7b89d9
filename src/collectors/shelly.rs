//! The `shelly` collector: wall-socket power from a Shelly plug, read one of three
//! ways (config `shelly:`):
//!
//! * through a plug hub (`shelly-server`) at `server_url` (the spec's setup);
//! * from the hub running inside this exporter (`shelly.listen`);
//! * straight from plugs over HTTP (`shelly.poll`), for plugs that cannot connect
//!   out: Gen2+ `/rpc/Shelly.GetStatus` (digest auth) and Gen1 `/status`.
//!
//! How each way reads is `sources::shelly` (`hub_client`, `poll`) and the hub's
//! own [`Hub::read`]; this module only maps readings to samples.
//!
//! Which plug powers this device is `shelly.device_id`, by default the hostname;
//! when that is not set and the hub knows no plug by the hostname, the hub's only
//! plug is used. Samples carry a `plug` label with the plug's id. Energy is a
//! counter in joules; when a plug's total drops (reboot, counter reset) the
//! scheduler's counter guard continues from where it was, so it never goes
//! backwards. From that counter the energy layer gives the mean power over the
//! interval (`power_mean_watts`) and the highest reading in it (`power_peak_watts`).

use std::sync::Arc;
use std::time::Instant;

use super::{CollectError, Collector};
use crate::config::PollTarget;
use crate::energy::{Meters, families};
use crate::lock::lock;
use crate::sample::{Family, Sample, SampleSink};
use crate::shelly_server::measures::MEASURES;
use crate::shelly_server::{Hub, Pick, RpcFailure};
use crate::sources::shelly::hub_client::{self, HubError};
use crate::sources::shelly::poll::{self, PollError};
use crate::sources::shelly::{Reading, error_flag};

pub const NAME: &str = "shelly";

/// Why one plug gave no reading.
#[derive(Debug, thiserror::Error)]
pub enum ShellyError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Poll(#[from] PollError),
    #[error("the embedded plug hub is not running")]
    NoEmbeddedHub,
    #[error(transparent)]
    Pick(#[from] Pick),
    #[error(transparent)]
    Rpc(#[from] RpcFailure),
}

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

#[derive(Debug)]
pub struct ShellyCollector {
    source: ShellySource,
    /// Configured device id, or `None` for "the hostname, else the only plug".
    device_id: Option<String>,
    hostname: String,
    hub: Option<Arc<Hub>>,
    meters: Meters,
}

impl ShellyCollector {
    pub fn new(
        source: ShellySource,
        device_id: Option<String>,
        hostname: String,
        hub: Option<Arc<Hub>>,
        meters: Meters,
    ) -> Self {
        ShellyCollector {
            source,
            device_id,
            hostname,
            hub,
            meters,
        }
    }

    /// The plug that powers this device: `shelly.device_id`, else the hostname.
    fn wanted(&self) -> &str {
        self.device_id.as_deref().unwrap_or(&self.hostname)
    }

    /// One reading per plug read: `(plug label, reading)` or why there is none.
    async fn fetch(&self) -> Vec<Result<(String, Reading), ShellyError>> {
        // Without `shelly.device_id`, a hub's only plug stands in for the hostname.
        let only_fallback = self.device_id.is_none();
        match &self.source {
            ShellySource::Hub { url } => {
                // A reading one interval old is as good as a new one: the hub
                // serves it from what the plug pushed, without an RPC.
                let max_age = self.meters.interval();
                let read = hub_client::read(url, self.wanted(), only_fallback, Some(max_age)).await;
                vec![read.map(|r| (r.device_id, r.reading)).map_err(Into::into)]
            }
            ShellySource::Embedded => vec![self.read_embedded(only_fallback).await],
            ShellySource::Poll(targets) => {
                let mut out = Vec::new();
                for t in targets {
                    let read = poll::read(t).await;
                    out.push(read.map(|r| (t.name.clone(), r)).map_err(Into::into));
                }
                out
            }
        }
    }

    async fn read_embedded(&self, only_fallback: bool) -> Result<(String, Reading), ShellyError> {
        let hub = self.hub.as_ref().ok_or(ShellyError::NoEmbeddedHub)?;
        let plug = hub.pick(self.wanted(), only_fallback)?;
        let reading = hub.read_fresh(&plug, self.meters.interval()).await?;
        Ok((plug.id.clone(), reading))
    }

    fn push(&mut self, out: &mut SampleSink, plug: &str, r: &Reading, at: Instant) {
        let mk = |family: &'static Family, v: f64| {
            Sample::new(family, v).const_label("plug", plug.to_owned())
        };
        for measure in &MEASURES {
            out.push_some((measure.value)(&r.metrics), |v| mk(measure.device, v));
        }
        // A negative total is dropped by the sink; a total that drops (a reboot,
        // a reset) is carried on by the scheduler's counter guard. The plug's
        // counter (a wall plug: the device's total) gives the mean over the
        // interval; the readings in it, the peak.
        if let Some(joules) = r.metrics.energy_total_joules.filter(|j| *j >= 0.0) {
            let const_labels = [("plug", Arc::<str>::from(plug))];
            let handle = self
                .meters
                .counter(families::SHELLY_PLUG_WATTS.name, &const_labels, true);
            let (mean, peak) = {
                let mut m = lock(&handle);
                m.meter
                    .record_counter(at, joules, r.metrics.power_total_watts);
                let window = m.meter.publish(Instant::now());
                (
                    m.meter.shown_watts(&window, self.meters.interval()),
                    window.peak,
                )
            };
            out.push_some(mean, |v| mk(families::SHELLY_PLUG.watts, v));
            out.push_some(peak, |v| mk(&families::SHELLY_PLUG.peak, v));
        }
        // The documented flags, and `other` for the rest: what a device (or
        // something posing as one) reports cannot make new ids.
        for e in &r.errors {
            let flag = error_flag(e);
            out.push(
                Sample::with_id(format!("power_error_{flag}"), &ERROR, 1.0)
                    .label("error", flag)
                    .const_label("plug", plug.to_owned()),
            );
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
                Ok((plug, reading)) => self.push(out, &plug, &reading, Instant::now()),
                Err(e) => errors.push(CollectError::from(e)),
            }
        }
        CollectError::all(errors).map_or(Ok(()), Err)
    }
}
