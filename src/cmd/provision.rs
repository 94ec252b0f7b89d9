//! `shelly provision --plug http://ADDR --hub ws://HOST:PORT[/SECRET] [--user U
//! --password P] [--alias NAME] [--ssl-ca CA]`: points a Gen2+ plug's outbound
//! WebSocket at a hub over the plug's local HTTP RPC, and waits until it is
//! connected.
//!
//! 1. `GET /rpc/Shelly.GetDeviceInfo` (digest authentication when the plug asks
//!    for it): which plug, which generation; a Gen1 plug has no `/rpc` and no
//!    outbound WebSocket.
//! 2. `POST /rpc` (JSON-RPC) `Ws.GetConfig`: already pointed at this hub? Then
//!    nothing is changed (the command is idempotent).
//! 3. `POST /rpc/Ws.SetConfig` with `enable`, `server` and, for `wss://`,
//!    `ssl_ca`; `POST /rpc/Shelly.Reboot` when the reply says a restart is needed.
//! 4. `Ws.GetStatus` until `connected` is true (the plug's own word that it
//!    reached the hub), within `--timeout`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::escape::Escaped;
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::cli::ProvisionArgs;
use crate::net::client::Client;
use crate::sources::shelly::{digest, poll::client_nonce};

/// Why a plug could not be provisioned.
#[derive(Debug, thiserror::Error)]
enum ProvisionError {
    #[error("cannot reach the plug at {0}: {1}")]
    Unreachable(String, String),
    #[error(
        "{0} is a Gen1 device: it has no outbound WebSocket; read it with shelly.poll (generation: 1) instead"
    )]
    Gen1(String),
    #[error("{0} asks for a password: give --password (and --user if it is not admin)")]
    NeedsPassword(String),
    #[error("{0} refused the password (user {1})")]
    WrongPassword(String, String),
    #[error("{0} answered {1} to {2}: {3}")]
    Refused(String, u16, String, String),
    #[error("{0}")]
    Usage(String),
    #[error(
        "{plug} never reported a connection to {hub} within {waited:?}: is the hub reachable from the plug, the secret right, and (for wss://) the plug's ssl_ca trusting the hub's certificate?"
    )]
    NeverConnected {
        plug: String,
        hub: String,
        waited: Duration,
    },
}

/// The plug's local RPC, with digest authentication once it asked for it.
struct PlugRpc {
    base: String,
    client: Client,
    user: String,
    password: Option<String>,
    /// The challenge of the last 401, reused for the next requests.
    challenge: Option<digest::Challenge>,
}

impl PlugRpc {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ProvisionError> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let mut headers = Vec::new();
            if body.is_some() {
                headers.push((CONTENT_TYPE, "application/json".to_owned()));
            }
            if let (Some(challenge), Some(password)) = (&self.challenge, &self.password) {
                // The URI digested is the request's path (and query).
                let uri = path;
                let header = digest::authorization(
                    challenge,
                    &self.user,
                    password,
                    method.as_str(),
                    uri,
                    &format!("{:016x}", client_nonce()),
                )
                .ok_or_else(|| {
                    ProvisionError::Usage(format!(
                        "{} asks for digest algorithm {}",
                        self.base, challenge.algorithm
                    ))
                })?;
                headers.push((AUTHORIZATION, header));
            }
            let payload = body
                .as_ref()
                .map_or_else(bytes::Bytes::new, |b| b.to_string().into());
            let r = self
                .client
                .request(
                    method.clone(),
                    &url,
                    &headers,
                    payload,
                    Duration::from_secs(10),
                    256 * 1024,
                )
                .await
                .map_err(|e| ProvisionError::Unreachable(self.base.clone(), e.to_string()))?;
            match r.status {
                200 => {
                    return serde_json::from_slice(&r.body).map_err(|e| {
                        ProvisionError::Refused(
                            self.base.clone(),
                            200,
                            path.to_owned(),
                            e.to_string(),
                        )
                    });
                }
                401 if attempt == 0 => {
                    if self.password.is_none() {
                        return Err(ProvisionError::NeedsPassword(self.base.clone()));
                    }
                    let challenge = r
                        .headers
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(digest::parse_challenge);
                    match challenge {
                        Some(c) => self.challenge = Some(c),
                        None => {
                            return Err(ProvisionError::Usage(format!(
                                "{} sent no usable digest challenge",
                                self.base
                            )));
                        }
                    }
                }
                401 => {
                    return Err(ProvisionError::WrongPassword(
                        self.base.clone(),
                        self.user.clone(),
                    ));
                }
                status => {
                    let text = String::from_utf8_lossy(&r.body).chars().take(200).collect();
                    return Err(ProvisionError::Refused(
                        self.base.clone(),
                        status,
                        path.to_owned(),
                        text,
                    ));
                }
            }
        }
        Err(ProvisionError::WrongPassword(
            self.base.clone(),
            self.user.clone(),
        ))
    }

    /// JSON-RPC over `POST /rpc`: the `result`, or the device's error.
    async fn json_rpc(&mut self, method: &str, params: Value) -> Result<Value, ProvisionError> {
        let answer = self
            .call(
                Method::POST,
                "/rpc",
                Some(json!({"id": 1, "src": "edge-metrics-exporter", "method": method, "params": params})),
            )
            .await?;
        match (answer.get("result"), answer.get("error")) {
            (Some(result), _) => Ok(result.clone()),
            (None, Some(error)) => Err(ProvisionError::Refused(
                self.base.clone(),
                200,
                method.to_owned(),
                error.to_string(),
            )),
            _ => Err(ProvisionError::Refused(
                self.base.clone(),
                200,
                method.to_owned(),
                "no result".into(),
            )),
        }
    }
}

/// The hub URL the plug is given: `--hub` with `--alias` as the last segment.
fn server_url(hub: &str, alias: Option<&str>) -> Result<String, ProvisionError> {
    let hub = hub.trim().trim_end_matches('/');
    let rest = hub
        .strip_prefix("ws://")
        .or_else(|| hub.strip_prefix("wss://"))
        .filter(|r| !r.is_empty() && !r.starts_with('/'))
        .ok_or_else(|| {
            ProvisionError::Usage(format!(
                "--hub must be ws://HOST:PORT[/SECRET] or wss://…, got {hub:?}"
            ))
        })?;
    if rest.contains(['?', '#', ' ']) {
        return Err(ProvisionError::Usage(
            "--hub: give the secret as a path segment (ws://HOST:PORT/SECRET), not a query".into(),
        ));
    }
    Ok(match alias {
        Some(a) => format!("{hub}/{a}"),
        None => hub.to_owned(),
    })
}

/// The URL with its secret path segment hidden, for printing.
fn shown(url: &str, alias: Option<&str>) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let mut parts: Vec<&str> = rest.split('/').collect();
    let secret_at = 1;
    let has_secret = parts.len() > 2 || (parts.len() == 2 && alias.is_none());
    if has_secret {
        parts[secret_at] = "***";
    }
    format!("{scheme}://{}", parts.join("/"))
}

pub fn run(args: &ProvisionArgs) -> ExitCode {
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(provision(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The plug's answers are in some errors: escaped for the terminal.
            eprintln!("error: {}", Escaped(&e.to_string()));
            ExitCode::from(match e {
                ProvisionError::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}

async fn provision(args: &ProvisionArgs) -> Result<(), ProvisionError> {
    if let Some(alias) = &args.alias
        && !(1..=64).contains(&alias.len())
    {
        return Err(ProvisionError::Usage(
            "--alias must be 1 to 64 characters".into(),
        ));
    }
    let server = server_url(&args.hub, args.alias.as_deref())?;
    let wss = server.starts_with("wss://");
    let base = args.plug.trim().trim_end_matches('/').to_owned();
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(ProvisionError::Usage(format!(
            "--plug must be http://ADDRESS, got {base:?}"
        )));
    }
    let mut rpc = PlugRpc {
        base: base.clone(),
        client: Client::new(None),
        user: args.user.clone(),
        password: args.password.clone(),
        challenge: None,
    };
    // 1. Which plug; Gen1 has no /rpc.
    let info = match rpc
        .call(Method::GET, "/rpc/Shelly.GetDeviceInfo", None)
        .await
    {
        Ok(info) => info,
        Err(ProvisionError::Refused(_, 404, ..)) => return Err(ProvisionError::Gen1(base)),
        Err(e) => return Err(e),
    };
    let generation = info.get("gen").and_then(Value::as_u64).unwrap_or(1);
    if generation < 2 {
        return Err(ProvisionError::Gen1(base));
    }
    let id = info
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    // What the plug says of itself reaches the terminal escaped: a model or
    // firmware string cannot carry escape sequences to it.
    println!(
        "plug {} ({}, gen {generation}, firmware {}) at {}",
        Escaped(&id),
        Escaped(
            info.get("model")
                .and_then(Value::as_str)
                .unwrap_or("model unknown")
        ),
        Escaped(info.get("ver").and_then(Value::as_str).unwrap_or("?")),
        Escaped(&base),
    );
    // 2. Already pointed here?
    let current = rpc.json_rpc("Ws.GetConfig", json!({})).await?;
    let ssl_ca = if wss {
        Some(args.ssl_ca.as_str())
    } else {
        None
    };
    let same = current.get("enable") == Some(&Value::Bool(true))
        && current.get("server").and_then(Value::as_str) == Some(server.as_str())
        && ssl_ca.is_none_or(|ca| current.get("ssl_ca").and_then(Value::as_str) == Some(ca));
    if same {
        println!(
            "outbound WebSocket already set to {}: nothing changed",
            shown(&server, args.alias.as_deref())
        );
    } else {
        // 3. Set it, and restart when the plug says so.
        let mut config = json!({"enable": true, "server": server});
        if let Some(ca) = ssl_ca {
            config["ssl_ca"] = json!(ca);
        }
        let reply = rpc
            .call(
                Method::POST,
                "/rpc/Ws.SetConfig",
                Some(json!({"config": config})),
            )
            .await?;
        println!(
            "outbound WebSocket set to {}",
            shown(&server, args.alias.as_deref())
        );
        if reply.get("restart_required") == Some(&Value::Bool(true)) {
            rpc.call(Method::POST, "/rpc/Shelly.Reboot", Some(json!({})))
                .await?;
            println!("rebooted the plug to apply it");
        }
    }
    // 4. Until the plug says it is connected.
    let started = Instant::now();
    let limit = Duration::from_secs_f64(args.timeout.clamp(1.0, 3600.0));
    loop {
        // Unreachable while it reboots: keep asking.
        if let Ok(status) = rpc.json_rpc("Ws.GetStatus", json!({})).await
            && status.get("connected") == Some(&Value::Bool(true))
        {
            println!(
                "connected to the hub after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(ProvisionError::NeverConnected {
                plug: id,
                hub: shown(&server, args.alias.as_deref()),
                waited: limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_url_and_how_it_is_shown() {
        assert_eq!(
            server_url("ws://hub:8765/s3/", Some("orin-01")).expect("url"),
            "ws://hub:8765/s3/orin-01"
        );
        assert_eq!(
            server_url("wss://hub:8765", None).expect("url"),
            "wss://hub:8765"
        );
        assert!(server_url("http://hub", None).is_err());
        assert!(server_url("ws://hub/?token=x", None).is_err());
        assert_eq!(
            shown("ws://hub:8765/s3/orin-01", Some("orin-01")),
            "ws://hub:8765/***/orin-01"
        );
        assert_eq!(shown("ws://hub:8765/s3", None), "ws://hub:8765/***");
        assert_eq!(
            shown("ws://hub:8765/orin-01", Some("orin-01")),
            "ws://hub:8765/orin-01"
        );
        assert_eq!(shown("ws://hub:8765", None), "ws://hub:8765");
    }
}
