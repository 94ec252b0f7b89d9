//! `shelly provision` against a simulated Gen2 plug's local HTTP RPC: the three
//! request forms real firmware answers (`GET /rpc/Method?…`, `POST /rpc/Method`,
//! `POST /rpc` JSON-RPC), SHA-256 digest authentication checked independently of
//! the exporter's code, `Ws.SetConfig` with a restart, and a reboot after which the
//! simulated plug really connects to the real hub with the URL it was given.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::shelly_sim::{SimPlug, plug_status};
use crate::support::*;

struct PlugState {
    id: String,
    generation: u8,
    password: Option<String>,
    ws: Value,
    connected: bool,
    reboots: u32,
    forms: BTreeSet<String>,
    sim: Option<SimPlug>,
}

/// A plug's local HTTP RPC.
struct HttpPlug {
    url: String,
    state: Arc<Mutex<PlugState>>,
    /// Runs the simulated plug's WebSocket after a reboot; kept for its lifetime.
    _runtime: Arc<tokio::runtime::Runtime>,
}

fn hex(data: impl AsRef<[u8]>) -> String {
    Sha256::digest(data.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The parameters of a `Digest` authorization header.
fn digest_params(header: &str) -> Option<std::collections::HashMap<String, String>> {
    let rest = header.strip_prefix("Digest ")?;
    Some(
        rest.split(',')
            .filter_map(|kv| kv.trim().split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect(),
    )
}

impl HttpPlug {
    fn start(id: &str, generation: u8, password: Option<&str>) -> HttpPlug {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(PlugState {
            id: id.to_owned(),
            generation,
            password: password.map(str::to_owned),
            ws: json!({"enable": false, "server": null, "ssl_ca": "ca.pem"}),
            connected: false,
            reboots: 0,
            forms: BTreeSet::new(),
            sim: None,
        }));
        let runtime = Arc::new(crate::shelly_hub::runtime());
        let (st, rt) = (state.clone(), runtime.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (st, rt) = (st.clone(), rt.clone());
                std::thread::spawn(move || serve(stream, &st, &rt));
            }
        });
        HttpPlug {
            url,
            state,
            _runtime: runtime,
        }
    }
}

fn serve(
    mut stream: std::net::TcpStream,
    state: &Arc<Mutex<PlugState>>,
    runtime: &Arc<tokio::runtime::Runtime>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, extra, answer) = handle(&method, &target, &headers, &body, state, runtime);
    let text = answer.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
        text.len()
    );
}

fn handle(
    method: &str,
    target: &str,
    headers: &std::collections::HashMap<String, String>,
    body: &[u8],
    state: &Arc<Mutex<PlugState>>,
    runtime: &Arc<tokio::runtime::Runtime>,
) -> (u16, String, Value) {
    let mut s = state.lock().unwrap();
    if s.generation == 1 {
        return match target {
            "/shelly" => (
                200,
                String::new(),
                json!({"type": "SHPLG-S", "mac": "A8032AB00001", "auth": false, "fw": "20230913-112003/v1.14.0"}),
            ),
            _ => (404, String::new(), json!("Not Found")),
        };
    }
    if let Some(password) = s.password.clone() {
        let realm = s.id.clone();
        let ok = headers
            .get("authorization")
            .and_then(|h| digest_params(h))
            .is_some_and(|p| {
                let get = |k: &str| p.get(k).cloned().unwrap_or_default();
                let ha1 = hex(format!("{}:{realm}:{password}", get("username")));
                let ha2 = hex(format!("{method}:{}", get("uri")));
                let want = hex(format!(
                    "{ha1}:{}:{}:{}:{}:{ha2}",
                    get("nonce"),
                    get("nc"),
                    get("cnonce"),
                    get("qop")
                ));
                get("username") == "admin" && get("realm") == realm && get("response") == want
            });
        if !ok {
            let challenge = format!(
                "WWW-Authenticate: Digest qop=\"auth\", realm=\"{realm}\", nonce=\"6630a8f2\", algorithm=SHA-256\r\n"
            );
            return (
                401,
                challenge,
                json!({"code": 401, "message": "unauthorized"}),
            );
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (rpc_method, params, json_rpc) = if path == "/rpc" && method == "POST" {
        s.forms.insert("POST /rpc".into());
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        (
            v["method"].as_str().unwrap_or("").to_owned(),
            v.get("params").cloned().unwrap_or(json!({})),
            Some(v.get("id").cloned().unwrap_or(json!(1))),
        )
    } else if let Some(name) = path.strip_prefix("/rpc/") {
        if method == "GET" {
            s.forms.insert("GET /rpc/Method".into());
            let params: serde_json::Map<String, Value> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), serde_json::from_str(v).unwrap_or(json!(v))))
                .collect();
            (name.to_owned(), Value::Object(params), None)
        } else {
            s.forms.insert("POST /rpc/Method".into());
            (
                name.to_owned(),
                serde_json::from_slice(body).unwrap_or(json!({})),
                None,
            )
        }
    } else {
        return (404, String::new(), json!("Not Found"));
    };
    let result = match rpc_method.to_ascii_lowercase().as_str() {
        "shelly.getdeviceinfo" => {
            json!({"id": s.id, "mac": "A8032AB12345", "model": "SNPL-00112EU", "gen": 2,
                                          "ver": "1.4.4", "app": "PlusPlugS", "auth_en": s.password.is_some()})
        }
        "ws.getconfig" => s.ws.clone(),
        "ws.getstatus" => json!({"connected": s.connected}),
        "ws.setconfig" => {
            if let Some(config) = params.get("config").and_then(Value::as_object) {
                for (k, v) in config {
                    s.ws[k] = v.clone();
                }
            }
            json!({"restart_required": true})
        }
        "shelly.reboot" => {
            s.reboots += 1;
            s.connected = false;
            s.sim = None;
            let (state, runtime) = (state.clone(), runtime.clone());
            std::thread::spawn(move || reboot(&state, &runtime));
            Value::Null
        }
        other => {
            return (
                404,
                String::new(),
                json!({"code": 404, "message": format!("No handler for {other}")}),
            );
        }
    };
    match json_rpc {
        Some(id) => (
            200,
            String::new(),
            json!({"id": id, "src": s.id, "result": result}),
        ),
        None => (200, String::new(), result),
    }
}

/// A reboot: down for a moment, then the outbound WebSocket as configured.
fn reboot(state: &Arc<Mutex<PlugState>>, runtime: &Arc<tokio::runtime::Runtime>) {
    std::thread::sleep(Duration::from_millis(300));
    let (enable, server, id) = {
        let s = state.lock().unwrap();
        (
            s.ws["enable"] == true,
            s.ws["server"].as_str().map(str::to_owned),
            s.id.clone(),
        )
    };
    let (true, Some(server)) = (enable, server) else {
        return;
    };
    let connect = async {
        let (socket, _) = tokio_tungstenite::connect_async(&server).await.ok()?;
        drop(socket);
        Some(SimPlug::connect(&server, &id, plug_status(20.0, 230.0, 0.09, 5.0)).await)
    };
    // A hub that refuses (a wrong secret) or is not there leaves it unconnected.
    let sim = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .ok()
            .flatten()
    });
    let mut s = state.lock().unwrap();
    s.connected = sim.is_some();
    s.sim = sim;
}

fn provision(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["shelly", "provision"];
    all.extend_from_slice(args);
    let (status, out, err) = run_binary(&all, Path::new("/"));
    (status.code(), out, err)
}

#[test]
fn a_plug_is_pointed_at_the_hub_and_connects() {
    let server = ShellyServer::start(Some("s3cret"));
    let plug = HttpPlug::start("shellyplusplugs-a8032ab12345", 2, None);
    let hub = format!("{}/s3cret", server.ws_url);
    let (code, out, err) = provision(&[
        "--plug",
        &plug.url,
        "--hub",
        &hub,
        "--alias",
        "orin-01",
        "--timeout",
        "15",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("plug shellyplusplugs-a8032ab12345 (SNPL-00112EU, gen 2, firmware 1.4.4)"),
        "{out}"
    );
    assert!(
        out.contains("rebooted") && out.contains("connected to the hub"),
        "{out}"
    );
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "the secret is not printed: {out}"
    );
    assert_eq!(server.get("/devices").json()["devices"], json!(["orin-01"]));
    {
        let s = plug.state.lock().unwrap();
        assert_eq!(s.ws["server"], format!("{hub}/orin-01"));
        assert_eq!(s.ws["enable"], true);
        assert_eq!(s.reboots, 1);
        // The three request forms of the firmware's RPC.
        assert_eq!(s.forms.len(), 3, "{:?}", s.forms);
    }
    // Again: nothing to change, no reboot.
    let (code, out, _) = provision(&[
        "--plug",
        &plug.url,
        "--hub",
        &hub,
        "--alias",
        "orin-01",
        "--timeout",
        "15",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(plug.state.lock().unwrap().reboots, 1);
}

#[test]
fn digest_auth_and_the_failures_say_why() {
    let server = ShellyServer::start(None);
    let plug = HttpPlug::start("shellyplusplugs-a8032ab99999", 2, Some("plug-pass"));
    let hub = server.ws_url.clone();
    let (code, _, err) = provision(&["--plug", &plug.url, "--hub", &hub]);
    assert_eq!(code, Some(1));
    assert!(err.contains("asks for a password"), "{err}");
    let (code, _, err) = provision(&["--plug", &plug.url, "--hub", &hub, "--password", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("refused the password"), "{err}");
    let mut command_env = vec![
        "--plug",
        &plug.url,
        "--hub",
        &hub,
        "--alias",
        "pi-02",
        "--timeout",
        "15",
    ];
    command_env.extend_from_slice(&["--password", "plug-pass"]);
    let (code, out, err) = provision(&command_env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(server.get("/devices").json()["devices"], json!(["pi-02"]));

    // A Gen1 plug.
    let gen1 = HttpPlug::start("shellyplug-s-000001", 1, None);
    let (code, _, err) = provision(&["--plug", &gen1.url, "--hub", &hub]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Gen1"), "{err}");
    // Nothing at the address.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = provision(&["--plug", &closed, "--hub", &hub]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the plug"), "{err}");
    // A hub the plug cannot reach: it never connects.
    let lost = HttpPlug::start("shellyplusplugs-a8032ab77777", 2, None);
    let nowhere = format!("ws://127.0.0.1:{}", free_port());
    let (code, _, err) = provision(&["--plug", &lost.url, "--hub", &nowhere, "--timeout", "2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("never reported a connection"), "{err}");
    // Usage errors: exit 2.
    let (code, _, _) = provision(&["--plug", &lost.url, "--hub", "http://x"]);
    assert_eq!(code, Some(2));
}

/// A plug that answers with control characters in its id: `provision` prints it
/// escaped, and the hub it connects to logs it escaped, so neither the terminal
/// nor the log can be driven or forged.
#[test]
fn what_a_plug_says_reaches_the_terminal_and_the_log_escaped() {
    let mut server = ShellyServer::start(None);
    let id = "evil\x1b]0;owned\x07\nINFO forged";
    let plug = HttpPlug::start(id, 2, None);
    let (code, out, err) = provision(&[
        "--plug",
        &plug.url,
        "--hub",
        &server.ws_url,
        "--timeout",
        "15",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!out.contains('\x1b') && !err.contains('\x1b'), "{out:?}");
    assert!(
        out.contains("plug evil\\x1b]0;owned\\x07\\nINFO forged (SNPL-00112EU"),
        "{out}"
    );
    server.wait_log("plug connected");
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(log.lines().all(|l| !l.starts_with("INFO forged")), "{log}");
    assert!(
        log.contains("plug=evil\\x1b]0;owned\\x07\\nINFO forged"),
        "{log}"
    );
}
