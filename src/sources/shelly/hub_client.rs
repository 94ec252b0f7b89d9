//! Reading a plug through a plug hub's HTTP API (`shelly-server`, the spec's
//! setup): `GET /metrics/{name}`, and, when the exporter was not told which plug
//! powers it and the hub knows none by its name, `GET /metrics` (the hub's only
//! plug; several are a 409 that lists them).

use super::{MAX_BODY, PlugReading, REQUEST_TIMEOUT};
use crate::net::client::{self, ClientError};

/// Why the hub gave no reading.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Http(#[from] ClientError),
    #[error("several plugs are connected to the hub ({0}); set shelly.device_id")]
    Several(String),
    #[error("the hub at {base} answered {status}: {reason}")]
    Status {
        base: String,
        status: u16,
        reason: String,
    },
    #[error("the hub at {base} sent a reading that is not one: {source}")]
    Invalid {
        base: String,
        source: serde_json::Error,
    },
}

/// Reads plug `name` from the hub at `base`; with `only_fallback`, the hub's only
/// plug when it knows none by that name. With `max_age`, a reading that old is
/// good enough (`?max_age=`: the hub answers from what the plug pushed).
pub async fn read(
    base: &str,
    name: &str,
    only_fallback: bool,
    max_age: Option<std::time::Duration>,
) -> Result<PlugReading, HubError> {
    let base = base.trim_end_matches('/');
    let query = max_age.map_or(String::new(), |a| format!("?max_age={}", a.as_secs_f64()));
    let url = format!("{base}/metrics/{name}{query}");
    let mut response = client::get(&url, &[], REQUEST_TIMEOUT, MAX_BODY).await?;
    if response.status == 404 && only_fallback {
        response = client::get(
            &format!("{base}/metrics{query}"),
            &[],
            REQUEST_TIMEOUT,
            MAX_BODY,
        )
        .await?;
    }
    match response.status {
        200 => serde_json::from_slice(&response.body).map_err(|source| HubError::Invalid {
            base: base.to_owned(),
            source,
        }),
        status => {
            let body: serde_json::Value =
                serde_json::from_slice(&response.body).unwrap_or_default();
            if status == 409 {
                return Err(HubError::Several(body["devices"].to_string()));
            }
            Err(HubError::Status {
                base: base.to_owned(),
                status,
                reason: body["error"]
                    .as_str()
                    .unwrap_or("(no reason given)")
                    .to_owned(),
            })
        }
    }
}
