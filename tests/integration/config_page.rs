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

    /// Types `text` into the element `selector` selects, as a keyboard would.
    fn type_into(&mut self, selector: &str, text: &str) {
        self.eval(&format!("document.querySelector({selector:?}).focus()"));
        self.call("Input.insertText", json!({"text": text}));
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

/// Headless Chromium with one page open on `url`; the browser process and the
/// page's DevTools connection.
fn open_browser(
    chromium: &std::path::Path,
    dir: &std::path::Path,
    url: &str,
) -> (std::process::Child, Page) {
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
            dir.join("chromium").display()
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

    page.call("Page.navigate", json!({"url": url}));
    (browser, page)
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

    let (mut browser, mut page) = open_browser(&chromium, dir.path(), &format!("{}/", server.url));
    page.wait_for(
        "the device in the list",
        "[...document.querySelectorAll('#devices button.device')].some(b => b.textContent === 'edge-web')",
    );
    let cells = page.eval(
        "[...document.querySelector('#devices tr[data-device=\"edge-web\"]').cells].map(c => c.textContent)",
    );
    assert_eq!(cells[2], "linux", "{cells}");
    assert!(
        cells[8].as_str().is_some_and(|t| t.ends_with("s ago")),
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

#[test]
fn a_group_made_in_the_browser_reaches_its_devices() {
    let Some(chromium) = peer("chromium") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ConfigServer::start(&dir.path().join("configs.db"), 0, None);
    let config = fixture_config(&fixtures().join("linux/x86-laptop"), "")
        .replace("new_metrics_enabled: true", "new_metrics_enabled: false");
    let ids = ["edge-g1", "edge-g2", "edge-g3"];
    let devices: Vec<Exporter> = ids
        .iter()
        .map(|id| {
            let mut options = Options::new(&config);
            options.env = vec![
                ("CONFIG_SERVER_URL", server.url.clone()),
                ("DEVICE_ID", (*id).to_owned()),
                ("CONFIG_POLL_INTERVAL", "0.5".to_owned()),
            ];
            Exporter::start_with(options)
        })
        .collect();
    for id in ids {
        eventually(&format!("{id} registered"), Duration::from_secs(15), || {
            (server.get(&format!("/config/{id}")).status == 200).then_some(())
        });
    }
    let metric = "host_cpu_active_cores";
    assert!(!devices[0].metrics().contains(&format!("\n{metric}{{")));

    let (mut browser, mut page) = open_browser(&chromium, dir.path(), &format!("{}/", server.url));
    page.wait_for(
        "the devices in the list",
        "document.querySelectorAll('#devices tr[data-device]').length === 3",
    );
    // Create a group.
    page.type_into("#new-group", "lab");
    page.click("#create-group");
    page.wait_for(
        "the group in the list",
        "document.querySelector('#groups tr[data-group=\"lab\"]') !== null",
    );
    // Assign two devices to it.
    for id in &ids[..2] {
        page.click(&format!("#devices tr[data-device=\"{id}\"] input.pick"));
    }
    page.eval("(() => { const s = document.getElementById('bulk-group'); s.value = 'lab'; s.dispatchEvent(new Event('change')); })()");
    page.click("#bulk-assign");
    let status = page.wait_for(
        "the assignment saved",
        "document.getElementById('status').textContent.includes('assigned to lab') && document.getElementById('status').textContent",
    );
    eprintln!("page: {status}");
    // Switch a metric on for the group.
    let select = format!("select[data-group-metric=\"{metric}\"]");
    page.wait_for(
        "the group's switch for the metric",
        &format!("document.querySelector({select:?}) !== null"),
    );
    page.eval(&format!(
        "(() => {{ const s = document.querySelector({select:?}); s.value = 'true'; s.dispatchEvent(new Event('change')); }})()"
    ));
    let status = page.wait_for(
        "the group saved",
        "document.getElementById('status').textContent.includes('for 2 members') && document.getElementById('status').textContent",
    );
    eprintln!("page: {status}");

    // Both members follow; the third device does not.
    for (device, id) in devices.iter().zip(ids).take(2) {
        eventually(
            &format!("{id} shows the group's metric"),
            Duration::from_secs(15),
            || {
                device
                    .metrics()
                    .contains(&format!("\n{metric}{{"))
                    .then_some(())
            },
        );
    }
    assert!(!devices[2].metrics().contains(&format!("\n{metric}{{")));
    assert_eq!(
        server.get("/groups/lab").json(),
        json!({"metrics": {metric: true}})
    );
    let row = page.wait_for(
        "the table shows the groups",
        "(() => { const r = document.querySelector('#devices tr[data-device=\"edge-g1\"]'); return r && r.cells[3].textContent === 'lab' && r.cells[3].textContent; })()",
    );
    assert_eq!(row, "lab");
    let _ = browser.kill();
    let _ = browser.wait();
}
