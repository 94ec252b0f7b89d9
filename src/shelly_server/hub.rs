//! The plug hub: the WebSocket endpoint Shelly Gen2+ plugs connect out to, the
//! registry of connected plugs, and RPC over their sockets.
//!
//! A plug is known by the `src` of its first frame (and optionally by an alias from
//! its connection URL, e.g. the edge device's hostname). Its status document is
//! kept from `NotifyFullStatus`/`NotifyStatus` pushes and RPC replies. Requests carry
//! numeric ids and replies are matched by id, so any number can be in flight. A
//! plug that reconnects replaces its old connection. Pings find dead sockets; frames
//! are bounded; garbage is logged, counted and ignored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::lock::lock;
use crate::sources::shelly::{
    self, CompactStatus, Incoming, PlugReading, Reading, Refused, RpcError, StatusView,
};

/// The `src` our requests carry; replies come back with it as `dst`.
pub const HUB_SRC: &str = "edge-metrics-exporter";

/// Limits and timings of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How long an RPC may take (the spec's 5 s, then 504).
    pub rpc_timeout: Duration,
    /// Largest frame accepted from a plug.
    pub max_frame: usize,
    /// How often the hub pings each plug.
    pub ping_every: Duration,
    /// Silence after which a plug counts as gone (it answers pings when alive).
    pub dead_after: Duration,
    /// How long a new connection has to send its first frame.
    pub first_frame_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            rpc_timeout: Duration::from_secs(5),
            max_frame: 64 * 1024,
            ping_every: Duration::from_secs(20),
            dead_after: Duration::from_secs(45),
            first_frame_timeout: Duration::from_secs(10),
        }
    }
}

/// Why [`Hub::pick`] found no plug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pick {
    #[error("No Shelly device connected: {0}")]
    Unknown(String),
    #[error("No Shelly device connected")]
    None,
    #[error("several plugs are connected; set shelly.device_id")]
    Several,
}

/// Why an RPC got no usable answer; each maps to the spec's HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcFailure {
    #[error("No Shelly device connected: {0}")]
    NotConnected(String),
    #[error("Device connection lost: {0}")]
    ConnectionLost(String),
    #[error("RPC request timeout ({0} s): {1}")]
    Timeout(u64, String),
    #[error("RPC error from {0}: code {1}: {2}")]
    Device(String, i64, String),
    #[error("Invalid RPC response from {0}: {1}")]
    Invalid(String, String),
}

/// A connected plug.
#[derive(Debug)]
pub struct Plug {
    /// The plug's own id (`src`), e.g. `shellyplusplugs-a8032ab12345`.
    pub id: String,
    /// A name from the connection URL, e.g. the edge device's hostname.
    pub alias: Option<String>,
    pub connected_at: SystemTime,
    connection: u64,
    /// The socket's sending half; requests and pings take turns on it.
    sink: tokio::sync::Mutex<SplitSink<WebSocket, Message>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>,
    /// Its status as numbers and flags by path, parsed once per notification;
    /// readers take typed readings from it, never a rebuilt document.
    status: Mutex<CompactStatus>,
    /// When the status was last brought up to date (a status notification or an
    /// RPC reply).
    updated: Mutex<Option<std::time::Instant>>,
    /// Readers that found the status too old take turns here, so one RPC serves
    /// all who were waiting.
    refresh: tokio::sync::Mutex<()>,
    /// `Shelly.GetDeviceInfo`, asked once per connection.
    info: Mutex<Option<DeviceInfo>>,
    /// Parts of its statuses left out (bounds), by [`shelly::Refusal`].
    refused: [AtomicU64; 3],
    closed: CancellationToken,
}

/// What `Shelly.GetDeviceInfo` tells of a plug.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub model: Option<String>,
    pub generation: Option<String>,
    pub firmware: Option<String>,
    pub mac: Option<String>,
    /// The product line (`PlusPlugS`, `Pro3EM`).
    pub app: Option<String>,
}

/// Longest plug id (`src`), alias or device-info value kept; Shelly's are
/// a few dozen characters.
pub const MAX_NAME: usize = 128;

impl DeviceInfo {
    fn from_result(v: &Value) -> DeviceInfo {
        let text = |k: &str| match v.get(k) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        DeviceInfo {
            model: text("model"),
            generation: text("gen"),
            firmware: text("ver").or_else(|| text("fw_id")),
            mac: text("mac"),
            app: text("app"),
        }
    }
}

impl Plug {
    /// The plug's current status (power components).
    pub fn status(&self) -> Map<String, Value> {
        lock(&self.status).to_map()
    }

    async fn send(&self, message: Message) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        self.sink.lock().await.send(message).await.is_ok()
    }

    /// The name `/devices` lists: the alias where there is one.
    pub fn name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.id)
    }

    /// The device info, once the plug answered `Shelly.GetDeviceInfo`.
    pub fn info(&self) -> Option<DeviceInfo> {
        lock(&self.info).clone()
    }

    /// How old the status is (`None`: never brought up to date).
    pub fn age(&self) -> Option<Duration> {
        lock(&self.updated).map(|t| t.elapsed())
    }

    /// When the status was last brought up to date.
    pub fn updated_at(&self) -> Option<std::time::Instant> {
        *lock(&self.updated)
    }

    /// Parts of this plug's statuses left out, by reason.
    pub fn refused(&self) -> [(shelly::Refusal, u64); 3] {
        shelly::Refusal::ALL.map(|r| (r, self.refused[r as usize].load(Ordering::Relaxed)))
    }

    /// Applies a status (full or partial) and counts what was left out, saying
    /// so in the log for the first and then every hundredth refusal.
    fn apply_status(&self, params: &Map<String, Value>, full: bool) {
        let refused = lock(&self.status).apply(params, full);
        self.count_refused(refused);
    }

    /// Takes a full status already read (an RPC's answer) as the kept one.
    fn replace_status(&self, status: CompactStatus, refused: Refused) {
        *lock(&self.status) = status;
        self.count_refused(refused);
    }

    fn count_refused(&self, refused: Refused) {
        if !refused.any() {
            return;
        }
        let mut before = 0;
        for (i, n) in refused.0.iter().enumerate() {
            before += self.refused[i].fetch_add(*n, Ordering::Relaxed);
        }
        let total = before + refused.0.iter().sum::<u64>();
        if before == 0 || before / 100 != total / 100 {
            tracing::warn!(
                plug = %self.id,
                refused = total,
                "parts of a plug's status left out: non-canonical component keys, too many components or too large (see shelly_plug_status_refused_total)"
            );
        }
    }

    /// What the page shows of the status, and its age, read together.
    pub fn snapshot(&self) -> (StatusView, Option<Duration>) {
        (lock(&self.status).view(), self.age())
    }

    fn touch(&self) {
        *lock(&self.updated) = Some(std::time::Instant::now());
    }

    /// The reading of the kept status when it is at most `max_age` old and has a
    /// power component.
    fn fresh_reading(&self, max_age: Duration) -> Option<Reading> {
        if self.age().is_none_or(|age| age > max_age) {
            return None;
        }
        let reading = lock(&self.status).reading();
        (!reading.components.is_empty()).then_some(reading)
    }
}

/// Counters of what the hub saw, for logs, `/devices` and self-telemetry.
#[derive(Debug, Default)]
pub struct HubStats {
    pub connections: AtomicU64,
    pub replaced: AtomicU64,
    pub invalid_frames: AtomicU64,
    pub oversized_frames: AtomicU64,
    pub rejected: AtomicU64,
    pub rpc_requests: AtomicU64,
    pub rpc_failures: AtomicU64,
    /// Readings served from the kept status instead of an RPC (`max_age`).
    pub rpc_saved: AtomicU64,
}

#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, Arc<Plug>>,
    alias_to_id: HashMap<String, String>,
}

#[derive(Debug)]
pub struct Hub {
    pub config: HubConfig,
    registry: Mutex<Registry>,
    next_request: AtomicU64,
    next_connection: AtomicU64,
    pub stats: HubStats,
}

static PLUGS: crate::sample::Family = crate::sample::Family::gauge(
    "edge_exporter_shelly_plugs_connected",
    "Shelly plugs connected to the hub",
    "",
);
static HUB_EVENTS: crate::sample::Family = crate::sample::Family::counter(
    "edge_exporter_shelly_hub_events_total",
    "What the plug hub saw, by event: connections, replaced connections, invalid or oversized frames, rejected connections, RPC requests sent and failed, RPCs saved by a fresh enough kept status",
    "",
);

impl Hub {
    /// The hub's own samples: plugs connected, and its event counters.
    pub fn telemetry_samples(&self, out: &mut Vec<crate::sample::Sample>) {
        use crate::sample::Sample;
        out.push(Sample::own(&PLUGS, self.connected() as f64));
        let s = &self.stats;
        for (event, counter) in [
            ("connection", &s.connections),
            ("replaced", &s.replaced),
            ("invalid_frame", &s.invalid_frames),
            ("oversized_frame", &s.oversized_frames),
            ("rejected", &s.rejected),
            ("rpc_request", &s.rpc_requests),
            ("rpc_failure", &s.rpc_failures),
            ("rpc_saved", &s.rpc_saved),
        ] {
            out.push(
                Sample::own(
                    &HUB_EVENTS,
                    counter.load(std::sync::atomic::Ordering::Relaxed) as f64,
                )
                .const_label("event", event),
            );
        }
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Arc<Self> {
        Arc::new(Hub {
            config,
            registry: Mutex::new(Registry::default()),
            next_request: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            stats: HubStats::default(),
        })
    }

    /// A connected plug by id or alias.
    pub fn resolve(&self, name: &str) -> Option<Arc<Plug>> {
        let registry = lock(&self.registry);
        let id = registry
            .alias_to_id
            .get(name)
            .map(String::as_str)
            .unwrap_or(name);
        registry.by_id.get(id).cloned()
    }

    /// Every connected plug, sorted by name.
    pub fn plugs(&self) -> Vec<Arc<Plug>> {
        let mut plugs: Vec<Arc<Plug>> = lock(&self.registry).by_id.values().cloned().collect();
        plugs.sort_by(|a, b| a.name().cmp(b.name()));
        plugs
    }

    pub fn connected(&self) -> usize {
        lock(&self.registry).by_id.len()
    }

    /// Sends `method` to the plug and waits for its reply.
    pub async fn rpc(&self, plug: &Plug, method: &str, params: Value) -> Result<Value, RpcFailure> {
        self.stats.rpc_requests.fetch_add(1, Ordering::Relaxed);
        let result = self.rpc_inner(plug, method, params).await;
        if result.is_err() {
            self.stats.rpc_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn rpc_inner(
        &self,
        plug: &Plug,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcFailure> {
        let lost = || RpcFailure::ConnectionLost(plug.name().to_owned());
        if plug.closed.is_cancelled() {
            return Err(lost());
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&plug.pending).insert(id, tx);
        let frame = shelly::request(id, HUB_SRC, method, params);
        let timeout = self.config.rpc_timeout;
        let exchange = async {
            if !plug.send(Message::Text(frame.into())).await {
                return Err(lost());
            }
            match rx.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(RpcFailure::Device(
                    plug.name().to_owned(),
                    e.code,
                    e.message,
                )),
                // The connection ended and dropped our reply slot.
                Err(_) => Err(lost()),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                lock(&plug.pending).remove(&id);
                Err(RpcFailure::Timeout(
                    timeout.as_secs(),
                    plug.name().to_owned(),
                ))
            }
        }
    }

    /// Asks a plug for its full status (`Shelly.GetStatus`), records it, and reads
    /// its power components.
    pub async fn read(&self, plug: &Plug) -> Result<Reading, RpcFailure> {
        let result = self
            .rpc(plug, "Shelly.GetStatus", serde_json::json!({}))
            .await?;
        let Value::Object(status) = result else {
            return Err(RpcFailure::Invalid(
                plug.name().to_owned(),
                "the status is not an object".into(),
            ));
        };
        let mut fresh = CompactStatus::default();
        let refused = fresh.apply(&status, true);
        let reading = fresh.reading();
        if reading.components.is_empty() {
            return Err(RpcFailure::Invalid(
                plug.name().to_owned(),
                "no power component (switch with apower, pm1, em1, em) in the status".into(),
            ));
        }
        plug.replace_status(fresh, refused);
        plug.touch();
        Ok(reading)
    }

    /// A reading at most `max_age` old: from the status the plug keeps pushing
    /// when it is fresh enough, else from one `Shelly.GetStatus` shared by every
    /// reader waiting at that moment.
    pub async fn read_fresh(&self, plug: &Plug, max_age: Duration) -> Result<Reading, RpcFailure> {
        if let Some(reading) = plug.fresh_reading(max_age) {
            self.stats.rpc_saved.fetch_add(1, Ordering::Relaxed);
            return Ok(reading);
        }
        let _turn = plug.refresh.lock().await;
        // Whoever held the turn may have just brought it up to date.
        if let Some(reading) = plug.fresh_reading(max_age) {
            self.stats.rpc_saved.fetch_add(1, Ordering::Relaxed);
            return Ok(reading);
        }
        self.read(plug).await
    }

    /// Asks a newly connected plug what it is (once per connection).
    async fn fetch_info(self: Arc<Self>, plug: Arc<Plug>) {
        match self
            .rpc(&plug, "Shelly.GetDeviceInfo", serde_json::json!({}))
            .await
        {
            Ok(result) => *lock(&plug.info) = Some(DeviceInfo::from_result(&result)),
            Err(e) => tracing::debug!(plug = %plug.id, error = %e, "no device info"),
        }
    }

    /// Adds `plug`; false when its alias belongs to another plug that is connected
    /// and the connection did not present the hub's secret (nobody takes over a
    /// plug's name silently; with a secret, whoever has it may).
    fn register(&self, plug: Arc<Plug>, trusted: bool) -> bool {
        let mut registry = lock(&self.registry);
        if let Some(alias) = &plug.alias
            && let Some(owner) = registry.alias_to_id.get(alias)
            && *owner != plug.id
            && registry.by_id.contains_key(owner)
            && !trusted
        {
            tracing::warn!(
                plug = %plug.id, alias, owner = %owner,
                "plug connection refused: its name belongs to another connected plug (set a secret to let plugs take names over)"
            );
            return false;
        }
        if let Some(old) = registry.by_id.insert(plug.id.clone(), plug.clone()) {
            self.stats.replaced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(plug = %plug.id, "plug reconnected; the old connection is closed");
            old.closed.cancel();
            if let Some(alias) = &old.alias {
                registry.alias_to_id.remove(alias);
            }
        }
        if let Some(alias) = &plug.alias {
            registry.alias_to_id.insert(alias.clone(), plug.id.clone());
        }
        true
    }

    fn unregister(&self, plug: &Plug) {
        let mut registry = lock(&self.registry);
        // A newer connection of the same plug may have replaced this one already.
        if registry
            .by_id
            .get(&plug.id)
            .is_some_and(|p| p.connection == plug.connection)
        {
            registry.by_id.remove(&plug.id);
            if let Some(alias) = &plug.alias
                && registry.alias_to_id.get(alias) == Some(&plug.id)
            {
                registry.alias_to_id.remove(alias);
            }
        }
    }

    /// Runs one plug connection until it closes, is replaced, dies or `shutdown`.
    /// `trusted`: the connection presented the hub's secret.
    pub async fn serve_socket(
        self: Arc<Self>,
        socket: WebSocket,
        alias: Option<String>,
        trusted: bool,
        shutdown: CancellationToken,
    ) {
        let (mut sink, mut stream) = socket.split();
        // The first frame names the plug.
        let first = tokio::time::timeout(self.config.first_frame_timeout, stream.next()).await;
        let (src, method, params) = match first {
            Ok(Some(Ok(Message::Text(text)))) => match shelly::parse_frame(text.as_str()) {
                Ok(Incoming::Notification {
                    src,
                    method,
                    params,
                }) if src.len() <= MAX_NAME => (src, method, params),
                other => {
                    self.stats.invalid_frames.fetch_add(1, Ordering::Relaxed);
                    let why = match other {
                        Ok(_) => {
                            format!("not a notification with a src of at most {MAX_NAME} bytes")
                        }
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(error = %why, "a connection's first frame is not a plug's; closing it");
                    let _ = sink.close().await;
                    return;
                }
            },
            _ => {
                tracing::debug!("a connection sent no first frame in time; closing it");
                let _ = sink.close().await;
                return;
            }
        };
        let plug = Arc::new(Plug {
            id: src,
            alias,
            connected_at: SystemTime::now(),
            connection: self.next_connection.fetch_add(1, Ordering::Relaxed),
            sink: tokio::sync::Mutex::new(sink),
            pending: Mutex::new(HashMap::new()),
            status: Mutex::new(CompactStatus::default()),
            updated: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            info: Mutex::new(None),
            refused: Default::default(),
            closed: shutdown.child_token(),
        });
        apply_notification(&plug, &method, &params);
        // The first frame is parsed into a JSON tree; it must not live as long as
        // the connection (the compact status holds what is needed).
        drop((method, params));
        if !self.register(plug.clone(), trusted) {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            let _ = plug.sink.lock().await.close().await;
            return;
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(plug = %plug.id, alias = ?plug.alias, "plug connected");
        tokio::spawn(self.clone().fetch_info(plug.clone()));

        let ping_every = self.config.ping_every;
        let dead_after = self.config.dead_after;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = tokio::time::Instant::now();
        let reason = loop {
            tokio::select! {
                _ = plug.closed.cancelled() => break "replaced or shutting down",
                _ = ping.tick() => {
                    if last_heard.elapsed() > dead_after {
                        break "no answer to pings";
                    }
                    if !plug.send(Message::Ping(Vec::new().into())).await {
                        break "send failed";
                    }
                }
                message = stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => self.handle_text(&plug, text.as_str()),
                        Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                            Ok(text) => self.handle_text(&plug, text),
                            Err(_) => self.garbage(&plug, "binary frame that is not UTF-8"),
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => break "closed by the plug",
                        Some(Err(e)) => {
                            let text = e.to_string();
                            if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                                self.stats.oversized_frames.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(plug = %plug.id, error = %text, "oversized frame; closing the connection");
                            }
                            break "socket error";
                        }
                    }
                }
            }
        };
        plug.closed.cancel();
        self.unregister(&plug);
        // Dropping the reply slots tells waiting requests the connection is lost.
        lock(&plug.pending).clear();
        let _ = plug.sink.lock().await.close().await;
        tracing::info!(plug = %plug.id, reason, "plug disconnected");
    }

    fn handle_text(&self, plug: &Plug, text: &str) {
        if text.len() > self.config.max_frame {
            self.stats.oversized_frames.fetch_add(1, Ordering::Relaxed);
            self.garbage(plug, "oversized frame");
            return;
        }
        match shelly::parse_frame(text) {
            Ok(Incoming::Notification {
                src,
                method,
                params,
            }) => {
                if src == plug.id {
                    apply_notification(plug, &method, &params);
                } else {
                    self.garbage(plug, "notification from another src on this connection");
                }
            }
            Ok(Incoming::Response { id, result, .. }) => {
                match lock(&plug.pending).remove(&id) {
                    // The requester may have timed out; its slot is simply gone.
                    Some(slot) => {
                        let _ = slot.send(result);
                    }
                    None => {
                        tracing::debug!(plug = %plug.id, id, "reply to an unknown or expired request")
                    }
                }
            }
            Err(e) => self.garbage(plug, &e.to_string()),
        }
    }

    fn garbage(&self, plug: &Plug, what: &str) {
        let n = self.stats.invalid_frames.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged for the first frames and then every 100th, so a broken plug
        // cannot flood the log.
        if n <= 10 || n.is_multiple_of(100) {
            tracing::warn!(plug = %plug.id, error = what, count = n, "invalid frame ignored");
        }
    }

    /// What `/metrics/{id}` answers for a reading of `plug`.
    pub fn plug_reading(plug: &Plug, reading: Reading) -> PlugReading {
        PlugReading {
            device_id: plug.id.clone(),
            alias: plug.alias.clone(),
            reading,
            timestamp: crate::clock::unix_now(),
        }
    }

    /// The plug known as `name`; with `only_fallback`, the only plug connected when
    /// none is known by that name (what the exporter does when it was not told
    /// which plug powers it).
    pub fn pick(&self, name: &str, only_fallback: bool) -> Result<Arc<Plug>, Pick> {
        if let Some(plug) = self.resolve(name) {
            return Ok(plug);
        }
        if !only_fallback {
            return Err(Pick::Unknown(name.to_owned()));
        }
        match self.plugs().as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Pick::None),
            _ => Err(Pick::Several),
        }
    }
}

fn apply_notification(plug: &Plug, method: &str, params: &Map<String, Value>) {
    match method {
        "NotifyFullStatus" => plug.apply_status(params, true),
        "NotifyStatus" => plug.apply_status(params, false),
        // Events (button presses, config changes) carry no status.
        _ => return,
    }
    plug.touch();
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as ClientMessage;

    /// A plug that stops answering pings (its socket is open but nobody reads it)
    /// is dropped after `dead_after`.
    #[tokio::test]
    async fn a_plug_that_stops_answering_pings_is_dropped() {
        let hub = Hub::new(HubConfig {
            ping_every: Duration::from_millis(100),
            dead_after: Duration::from_millis(400),
            ..HubConfig::default()
        });
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = super::super::api::ws_router(hub.clone(), None, shutdown.clone());
        tokio::spawn(crate::net::serve::serve(
            listener,
            router,
            shutdown.clone(),
            crate::net::serve::Limits::new(16),
        ));
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/quiet"))
            .await
            .expect("connect");
        let hello = r#"{"src":"shellyplusplugs-000000000042","dst":"ws","method":"NotifyFullStatus","params":{"switch:0":{"id":0,"apower":1}}}"#;
        socket
            .send(ClientMessage::Text(hello.into()))
            .await
            .expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while hub.connected() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The client never reads again, so it never answers a ping.
        let started = tokio::time::Instant::now();
        while hub.connected() == 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a silent plug was never dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        shutdown.cancel();
        drop(socket);
    }
}
