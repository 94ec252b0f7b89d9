//! `edge-metrics-exporter shelly-server`: the Shelly plug hub (the spec's
//! `shelly_server`). Gen2+ plugs connect out to its WebSocket endpoint
//! (`--ws-port`, 8765) and it answers for them over HTTP (`--http-port`, 8766,
//! loopback by default). It also runs inside the exporter (`shelly.listen`).
//!
//! * `hub`: the registry of connected plugs, their sockets and RPC;
//! * `api`: the routers: the WebSocket endpoint (with its secret check) and the
//!   HTTP API (`/metrics`, `/metrics/{device_id}`, `/devices`, `/status/{id}`,
//!   `/telemetry`);
//! * `page`: `/plugs/metrics`, every plug in Prometheus text (through
//!   `exposition`);
//! * `measures`: which metric shows each measurement, for the page and for the
//!   `shelly` collector alike.
//!
//! The protocol (frames, status documents, readings) is `sources::shelly`.

pub mod api;
pub mod hub;
pub mod measures;
pub mod page;

pub use hub::{Hub, HubConfig, Pick, RpcFailure};

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Secret;
use crate::net::serve::{HUB_API_CONNECTIONS, Limits, PLUG_CONNECTIONS, serve};

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub ws: SocketAddr,
    pub http: SocketAddr,
    pub secret: Option<Secret>,
    pub hub: HubConfig,
    /// `wss://` for plugs: certificate and key, re-read on SIGHUP.
    pub ws_tls: Option<crate::config::ServerTlsConfig>,
}

/// Binds both listeners and serves until `shutdown`.
pub async fn run(options: ServerOptions, shutdown: CancellationToken) -> std::io::Result<()> {
    let ws_tls = std::sync::Arc::new(crate::net::tls::ServerTls::default());
    if let Some(cfg) = &options.ws_tls {
        ws_tls.set(Some(
            crate::net::tls::server(cfg).map_err(|e| std::io::Error::other(e.to_string()))?,
        ));
        tracing::info!("plugs connect with wss:// (TLS)");
    }
    let ws = bind("shelly websocket", options.ws).await?;
    let http = bind("shelly HTTP API", options.http).await?;
    if options.secret.is_none() {
        tracing::info!(
            "no secret set: any client that reaches the WebSocket port can register as a plug"
        );
    }
    let hub = Hub::new(options.hub);
    let tracker = TaskTracker::new();
    tracker.spawn(crate::net::serve::serve_tls(
        ws,
        api::ws_router(hub.clone(), options.secret, shutdown.clone()),
        shutdown.clone(),
        ws_tls.clone(),
        Limits::new(PLUG_CONNECTIONS),
    ));
    tracker.spawn(crate::net::tls::reload_on_hangup(
        options.ws_tls.clone(),
        ws_tls,
        shutdown.clone(),
    ));
    tracker.spawn(serve(
        http,
        crate::telemetry::track(api::api_router(hub), "shelly_api"),
        shutdown.clone(),
        Limits::new(HUB_API_CONNECTIONS),
    ));
    tracker.spawn(crate::systemd::run(
        format!(
            "plugs connect on port {}, HTTP API on port {}",
            options.ws.port(),
            options.http.port()
        ),
        shutdown.clone(),
    ));
    tracing::info!("shelly-server running");
    shutdown.cancelled().await;
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    Ok(())
}

pub async fn bind(what: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(%local, "{what} listening on {local}");
    Ok(listener)
}
