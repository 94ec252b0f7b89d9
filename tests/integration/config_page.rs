//! The config server's web page in a real browser: headless Chromium (Debian's
//! `chromium`), driven over the DevTools protocol, opens the page, picks a device,
//! clicks a metric's switch with the mouse, and the device picks the change up.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

use crate::support::*;

/// A DevTools connection to one page.
struct Page {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(request.to_string()))
            .expect("send");
        loop {
            let message = self.socket.read().expect("read");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).expect("json");
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        result["result"]["value"].clone()
    }

    fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        eventually(what, Duration::from_secs(20), || {
            let v = self.eval(expression);
            (!v.is_null() && v != json!(false) && v != json!("")).then_some(v)
        })
    }

    /// A mouse click in the middle of the element `selector` selects.
    fn click(&mut self, selector: &str) {
        let rect = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); e.scrollIntoView({{block: 'center'}});
                const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (rect[0].as_f64().expect("x"), rect[1].as_f64().expect("y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }
}

#[test]
fn a_switch_clicked_in_the_browser_reaches_the_device() {
    let Some(chromium) = peer("chromium") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let config = fixture_config(&fixtures().join("linux/x86-laptop"), "")
        .replace("new_metrics_enabled: true", "new_metrics_enabled: false");
    let mut options = Options::new(&config);
    options.env = vec![
        ("CONFIG_SERVER_URL", server.url.clone()),
        ("DEVICE_ID", "edge-web".to_owned()),
        ("CONFIG_POLL_INTERVAL", "0.5".to_owned()),
    ];
    let device = Exporter::start_with(options);
    eventually("the device registered", Duration::from_secs(15), || {
        let r = server.get("/config/edge-web");
        (r.status == 200 && r.json()["metrics"]["host_cpu_active_cores"] == false).then_some(())
    });
    assert!(!device.metrics().contains("\nhost_cpu_active_cores{"));

    let mut command = Command::new(chromium);
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("chromium").display()
        ))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (mut browser, log) = spawn_logged(command);
    let browser_ws = wait_log(&mut browser, &log, "DevTools listening on ");
    let http = browser_ws
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    let targets = eventually("a page target", Duration::from_secs(10), || {
        let r = get(&format!("http://{http}/json/list"), &[]);
        let list: Value = serde_json::from_str(&r.body).ok()?;
        list.as_array()?
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
    });
    let (socket, _) = tungstenite::connect(targets.as_str()).expect("devtools");
    let mut page = Page { socket, next_id: 0 };

    page.call("Page.navigate", json!({"url": format!("{}/", server.url)}));
    page.wait_for(
        "the device in the list",
        "[...document.querySelectorAll('#devices button.device')].some(b => b.textContent === 'edge-web')",
    );
    let cells = page.eval(
        "[...document.querySelector('#devices tr[data-device=\"edge-web\"]').cells].map(c => c.textContent)",
    );
    assert_eq!(cells[1], "linux", "{cells}");
    assert!(
        cells[3].as_str().is_some_and(|t| t.ends_with("s ago")),
        "last contact: {cells}"
    );
    page.click("#devices tr[data-device=\"edge-web\"] button");
    let switch = "input[data-metric=\"host_cpu_active_cores\"]";
    page.wait_for(
        "the metric's switch",
        &format!("document.querySelector({switch:?}) !== null"),
    );
    assert_eq!(
        page.eval(&format!("document.querySelector({switch:?}).checked")),
        false
    );
    page.click(switch);
    let status = page.wait_for(
        "the page saved it",
        "document.getElementById('status').textContent.includes('saved as revision') && document.getElementById('status').textContent",
    );
    eprintln!("page: {status}");

    eventually(
        "the device shows the metric",
        Duration::from_secs(15),
        || {
            device
                .metrics()
                .contains("\nhost_cpu_active_cores{")
                .then_some(())
        },
    );
    assert_eq!(
        server.get("/config/edge-web").json()["metrics"]["host_cpu_active_cores"],
        true
    );
    let _ = browser.kill();
    let _ = browser.wait();
}
