//! A Shelly Gen2+ plug simulator: connects out to a hub like a real plug with an
//! outbound WebSocket, sends `NotifyFullStatus` first, pushes `NotifyStatus`
//! patches on demand and answers RPC requests with the frame shapes of Shelly's
//! docs (replies echo `id`, carry the plug's `src` and `dst` = the request's `src`).
//! It can also fall silent, answer with an error, send garbage or oversized frames,
//! and disconnect. Used by the integration tests and `benches/shelly_fleet.rs`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How the simulated plug answers requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Answer,
    /// Never answers (the hub must time out).
    Silent,
    /// Answers every request with this error.
    Error(i64, String),
}

/// Commands to a running simulated plug.
#[derive(Debug)]
enum Command {
    Raw(Message),
    Close,
}

/// A connected simulated plug.
pub struct SimPlug {
    pub id: String,
    status: Arc<Mutex<Value>>,
    mode: Arc<Mutex<Mode>>,
    commands: mpsc::UnboundedSender<Command>,
    pub task: tokio::task::JoinHandle<()>,
}

/// A Plus Plug S status: one metered switch.
pub fn plug_status(apower: f64, voltage: f64, current: f64, energy_wh: f64) -> Value {
    json!({
        "switch:0": {"id": 0, "source": "init", "output": true, "apower": apower, "voltage": voltage,
                     "current": current, "freq": 50.0, "pf": 0.92,
                     "aenergy": {"total": energy_wh, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1_733_140_800},
                     "temperature": {"tC": 35.2, "tF": 95.4}},
        "sys": {"mac": "A8032AB12345", "uptime": 1234, "unixtime": 1_733_140_800},
        "ws": {"connected": true}
    })
}

impl SimPlug {
    /// Connects to `url` as plug `id` with `status`.
    pub async fn connect(url: &str, id: &str, status: Value) -> SimPlug {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect to the hub");
        Self::run(socket, id, status).await
    }

    /// Connects to a `wss://` URL, trusting the CA certificates in `ca` (PEM).
    pub async fn connect_tls(
        url: &str,
        id: &str,
        status: Value,
        ca: &std::path::Path,
    ) -> Result<SimPlug, String> {
        let tls = edge_metrics_exporter::net::tls::client(
            &edge_metrics_exporter::config::TlsClientConfig {
                ca_file: Some(ca.to_owned()),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let authority = url
            .trim_start_matches("wss://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h);
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (socket, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self::run(socket, id, status).await)
    }

    async fn run<S>(
        socket: tokio_tungstenite::WebSocketStream<S>,
        id: &str,
        status: Value,
    ) -> SimPlug
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = socket.split();
        let mut params = status.as_object().cloned().unwrap_or_default();
        params.insert("ts".into(), json!(1_733_140_800.0));
        let hello = json!({"src": id, "dst": "ws", "method": "NotifyFullStatus", "params": params});
        sink.send(Message::Text(hello.to_string().into()))
            .await
            .expect("send full status");

        let status = Arc::new(Mutex::new(status));
        let mode = Arc::new(Mutex::new(Mode::Answer));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (task_status, task_mode, plug_id) = (status.clone(), mode.clone(), id.to_owned());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(Command::Raw(message)) => {
                            if sink.send(message).await.is_err() { return; }
                        }
                        Some(Command::Close) | None => {
                            let _ = sink.close().await;
                            return;
                        }
                    },
                    incoming = stream.next() => match incoming {
                        Some(Ok(Message::Text(text))) => {
                            let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                            let reply = answer(&plug_id, &request, &task_status.lock().unwrap(), &task_mode.lock().unwrap());
                            if let Some(reply) = reply
                                && sink.send(Message::Text(reply.to_string().into())).await.is_err()
                            {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            }
        });
        SimPlug {
            id: id.to_owned(),
            status,
            mode,
            commands: tx,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Changes the status the plug reports (and pushes the changed component as a
    /// partial `NotifyStatus`, as a real plug does).
    pub fn update(&self, component: &str, patch: Value) {
        {
            let mut status = self.status.lock().unwrap();
            let target = status
                .as_object_mut()
                .and_then(|s| s.get_mut(component))
                .and_then(Value::as_object_mut);
            if let (Some(target), Some(patch)) = (target, patch.as_object()) {
                for (k, v) in patch {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        let frame = json!({"src": self.id, "dst": "ws", "method": "NotifyStatus",
                           "params": {"ts": 1_733_140_900.0, component: patch}});
        self.send_raw(Message::Text(frame.to_string().into()));
    }

    pub fn send_raw(&self, message: Message) {
        let _ = self.commands.send(Command::Raw(message));
    }

    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// The reply a plug sends to `request`, if any.
fn answer(id: &str, request: &Value, status: &Value, mode: &Mode) -> Option<Value> {
    let request_id = request.get("id")?.clone();
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let mut reply = json!({"id": request_id, "src": id});
    if let Some(src) = request.get("src") {
        reply["dst"] = src.clone();
    }
    match mode {
        Mode::Silent => return None,
        Mode::Error(code, message) => {
            reply["error"] = json!({"code": code, "message": message});
            return Some(reply);
        }
        Mode::Answer => {}
    }
    // Methods are case-insensitive on real firmware.
    match method.to_ascii_lowercase().as_str() {
        "shelly.getstatus" => reply["result"] = status.clone(),
        "switch.getstatus" => {
            reply["result"] = status.get("switch:0").cloned().unwrap_or(Value::Null)
        }
        "shelly.getdeviceinfo" => {
            reply["result"] = json!({"id": id, "mac": "A8032AB12345", "slot": 1, "model": "SNPL-00112EU",
                "gen": 2, "fw_id": "20241011-114455/1.4.4-g6d2a586", "ver": "1.4.4", "app": "PlusPlugS",
                "auth_en": false, "auth_domain": null})
        }
        _ => reply["error"] = json!({"code": 404, "message": format!("No handler for {method}")}),
    }
    Some(reply)
}
