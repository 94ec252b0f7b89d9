//! Test harness: starts the real binary on free loopback ports with a temporary
//! config and fixture trees, talks HTTP to it, and stops every process it starts.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_edge-metrics-exporter");

/// The repository's fixture directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Whether the suite runs in CI, where a missing peer is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds a peer program (promtool, prometheus). Under CI a missing one fails the
/// test; on a developer machine the test is skipped with a note.
pub fn peer(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "{program} is required under CI=true (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: {program} not installed");
    }
    found
}

/// Copies a fixture tree (symlinks kept) into a temporary directory, so a test may
/// change it while the exporter reads it.
pub fn copy_fixture(name: &str, into: &Path) -> PathBuf {
    let dest = into.join(name.replace('/', "_"));
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixtures().join(name))
        .arg(&dest)
        .status()
        .expect("cp");
    assert!(status.success());
    dest
}

/// A running exporter. Dropping it kills the process.
pub struct Exporter {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub metrics_url: String,
    pub api_url: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub struct Options<'a> {
    pub config: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(&'a str, String)>,
    /// Write `config` to the config file (false: leave the file missing).
    pub write_config: bool,
    /// Run the exporter as this user and group id (the test must be root).
    pub uid: Option<u32>,
    /// The binary to run instead of the one cargo built (a copy others can run).
    pub program: Option<PathBuf>,
    /// Limit of open files (soft and hard) the exporter runs with.
    pub nofile: Option<u64>,
    /// The directory of `config.yaml` (and what lives beside it: `runs.jsonl`,
    /// the remote-write buffer) instead of the exporter's temp directory.
    pub config_dir: Option<PathBuf>,
}

impl<'a> Options<'a> {
    pub fn new(config: &'a str) -> Self {
        Options {
            config,
            args: Vec::new(),
            env: Vec::new(),
            write_config: true,
            uid: None,
            program: None,
            nofile: None,
            config_dir: None,
        }
    }
}

/// A config for a fixture machine: ports chosen by the kernel, fast interval.
pub fn fixture_config(root: &Path, extra: &str) -> String {
    format!(
        "# test config\ndevice_type: linux\ninterval: 0.2\nport: 0\nreload_port: 0\nhostname: fixture-host\n\
         new_metrics_enabled: true\npath:\n  procfs: {}\n  sysfs: {}\n{extra}",
        root.join("proc").display(),
        root.join("sys").display()
    )
}

impl Exporter {
    pub fn start(config: &str) -> Exporter {
        Self::start_with(Options::new(config))
    }

    pub fn start_with(options: Options<'_>) -> Exporter {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = options
            .config_dir
            .as_deref()
            .unwrap_or(dir.path())
            .join("config.yaml");
        if options.write_config {
            std::fs::write(&config_path, options.config).expect("write config");
        }
        if options.uid.is_some() {
            // The unprivileged exporter reads and rewrites its config here.
            use std::os::unix::fs::PermissionsExt;
            for path in [dir.path(), config_path.as_path()] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
            }
        }
        let (child, log) = spawn(&config_path, dir.path(), &options);
        let mut exporter = Exporter {
            child,
            dir,
            config_path,
            metrics_url: String::new(),
            api_url: String::new(),
            log,
        };
        let metrics = exporter.wait_log("metrics endpoint listening on ");
        let api = exporter.wait_log("management API listening on ");
        exporter.metrics_url = format!("http://{}", loopback(&metrics));
        exporter.api_url = format!("http://{}", loopback(&api));
        exporter
    }

    /// Kills the process at once and starts it again on the same directory and
    /// config file (the file and everything beside it stay).
    pub fn respawn(&mut self, options: Options<'_>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let options = Options {
            write_config: false,
            ..options
        };
        let (child, log) = spawn(&self.config_path, self.dir.path(), &options);
        self.child = child;
        self.log = log;
        let metrics = self.wait_log("metrics endpoint listening on ");
        let api = self.wait_log("management API listening on ");
        self.metrics_url = format!("http://{}", loopback(&metrics));
        self.api_url = format!("http://{}", loopback(&api));
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for a log line containing `needle`; returns the text after it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                let rest = &line[line.find(needle).unwrap() + needle.len()..];
                return rest
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or("")
                    .to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exporter exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line {needle:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn metrics(&self) -> String {
        let r = get(&format!("{}/metrics", self.metrics_url), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Polls `/metrics` until `pred` holds; returns that body.
    pub fn metrics_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = self.metrics();
            if pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last body:\n{body}\nlog:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn api_get(&self, path: &str) -> Response {
        get(&format!("{}{path}", self.api_url), &[])
    }

    pub fn api_post(&self, path: &str, body: &str) -> Response {
        post(&format!("{}{path}", self.api_url), body, &[])
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).expect("read config")
    }

    /// Waits until auto-discovery has written the ids of both first collections
    /// (CPU usage appears with the second), so a test edits a settled file the way
    /// a person would.
    pub fn wait_settled(&self) {
        self.metrics_until("discovery to settle", |_| {
            self.config_text()
                .contains("host_cpu_core2_usage_percent: ")
        });
    }

    /// Rewrites the config file with each `(from, to)` replaced.
    pub fn edit_config(&self, replacements: &[(&str, &str)]) {
        let mut text = self.config_text();
        for (from, to) in replacements {
            assert!(text.contains(from), "{from:?} not in the config:\n{text}");
            text = text.replace(from, to);
        }
        std::fs::write(&self.config_path, text).expect("write config");
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal(libc::SIGTERM);
        let status = wait_timeout(&mut self.child, Duration::from_secs(15))
            .expect("exporter did not stop after SIGTERM");
        (status, started.elapsed())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loopback(addr: &str) -> String {
    // The metrics endpoint listens on 0.0.0.0 by default; talk to it on loopback.
    addr.replace("0.0.0.0", "127.0.0.1")
}

/// The variables the exporter's client takes proxies from.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

fn spawn(config: &Path, cwd: &Path, options: &Options<'_>) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut command = Command::new(options.program.as_deref().unwrap_or(Path::new(BIN)));
    command
        .arg("--config")
        .arg(config)
        .args(&options.args)
        .current_dir(cwd)
        .env_remove("EDGE_EXPORTER_METRICS_TOKEN")
        .env_remove("EDGE_EXPORTER_API_TOKEN")
        .env_remove("LOCAL_CONFIG_PATH")
        // No config server unless a test starts one.
        .env("CONFIG_SERVER_URL", "")
        .env_remove("DEVICE_ID")
        .env_remove("CONFIG_SERVER_TOKEN")
        .env("EDGE_EXPORTER_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Loopback peers only: a proxy of the machine's is never in the way, unless
    // a test names one.
    for var in PROXY_VARIABLES {
        command.env_remove(var);
    }
    for (k, v) in &options.env {
        command.env(k, v);
    }
    if let Some(id) = options.uid {
        use std::os::unix::process::CommandExt;
        command.uid(id).gid(id);
    }
    if let Some(limit) = options.nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    spawn_logged(command)
}

/// Spawns `command` (killed with the test) and collects its stderr lines.
pub fn spawn_logged(mut command: Command) -> (Child, Arc<Mutex<Vec<String>>>) {
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, log)
}

/// Makes the kernel kill `command`'s process if the thread that spawned it dies,
/// so no process outlives a crashed test run.
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Raises this process's open-file limit to its hard limit (children inherit it),
/// for tests that open thousands of sockets.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A running `config-server`. Dropping it kills the process.
pub struct ConfigServer {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
}

impl ConfigServer {
    /// Starts on `port` (0: any) with the database `db`.
    pub fn start(db: &Path, port: u16, token: Option<&str>) -> ConfigServer {
        Self::start_with(db, port, token, &[])
    }

    /// [`ConfigServer::start`] with more environment variables.
    pub fn start_with(
        db: &Path,
        port: u16,
        token: Option<&str>,
        env: &[(&str, String)],
    ) -> ConfigServer {
        let mut command = Command::new(BIN);
        command
            .args(["config-server", "--address", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--db")
            .arg(db)
            .env_remove("CONFIG_SERVER_TOKEN")
            .env("EDGE_EXPORTER_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("CONFIG_SERVER_TOKEN", token);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let (mut child, log) = spawn_logged(command);
        let addr = wait_log(&mut child, &log, "config server listening on ");
        let addr = addr.split_whitespace().next().expect("address").to_owned();
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        ConfigServer {
            child,
            log,
            url: format!("http://{addr}"),
            port,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        get(&format!("{}{path}", self.url), &[])
    }

    /// Kills the server at once (no graceful shutdown).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ConfigServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `pred` until it holds, failing after `limit` (see [`eventually`]).
pub fn wait_for(what: &str, limit: Duration, mut pred: impl FnMut() -> bool) {
    eventually(what, limit, || pred().then_some(()));
}

/// Writes an executable script `name` into `dir` (a stand-in for a board tool).
pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Resident memory of a process, kB. Fails when it cannot be read: a figure of 0
/// would make "memory stays flat" hold without measuring anything.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The strict OpenMetrics parser of python3-prometheus-client, as a peer: `None`
/// (the check skipped, with a note) on a developer machine without it; under CI
/// a missing one fails the test.
pub fn strict_parser() -> Option<StrictParser> {
    let python = Path::new("/usr/bin/python3");
    let found = python.is_file()
        && std::process::Command::new(python)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .status()
            .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !in_ci(),
            "python3-prometheus-client is required under CI=true"
        );
        eprintln!("SKIPPED: python3-prometheus-client not installed");
    }
    found.then_some(StrictParser)
}

/// The strict OpenMetrics parser, found.
pub struct StrictParser;

impl StrictParser {
    /// The samples it reads in `body`, or its complaint.
    pub fn check(&self, body: &str) -> Result<usize, String> {
        let script = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
print(sum(len(f.samples) for f in text_string_to_metric_families(sys.stdin.read())))\n";
        let (status, stdout, stderr) = run_with_stdin(
            Path::new("/usr/bin/python3"),
            &["-c", script],
            body.as_bytes(),
        );
        if !status.success() {
            return Err(stderr);
        }
        stdout.trim().parse().map_err(|e| format!("{e}: {stdout}"))
    }
}

/// Polls `f` every 50 ms until it returns `Some`, failing after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A running `shelly-server`. Dropping it kills the process.
pub struct ShellyServer {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    /// `ws://127.0.0.1:PORT`
    pub ws_url: String,
    /// `http://127.0.0.1:PORT`
    pub api_url: String,
}

impl ShellyServer {
    pub fn start(secret: Option<&str>) -> ShellyServer {
        Self::start_with(secret, &[])
    }

    /// [`ShellyServer::start`] with more environment variables.
    pub fn start_with(secret: Option<&str>, env: &[(&str, String)]) -> ShellyServer {
        let mut command = Command::new(BIN);
        command
            .args([
                "shelly-server",
                "--ws-port",
                "0",
                "--http-port",
                "0",
                "--ws-address",
                "127.0.0.1",
            ])
            .env_remove("SHELLY_WS_SECRET")
            .env("EDGE_EXPORTER_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(secret) = secret {
            command.env("SHELLY_WS_SECRET", secret);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let (child, log) = spawn_logged(command);
        let mut server = ShellyServer {
            child,
            log,
            ws_url: String::new(),
            api_url: String::new(),
        };
        server.ws_url = format!("ws://{}", server.wait_log("shelly websocket listening on "));
        server.api_url = format!(
            "http://{}",
            server.wait_log("shelly HTTP API listening on ")
        );
        server
    }

    pub fn wait_log(&mut self, needle: &str) -> String {
        wait_log(&mut self.child, &self.log, needle)
    }

    pub fn get(&self, path: &str) -> Response {
        get(&format!("{}{path}", self.api_url), &[])
    }

    /// Connects a simulated plug `id` with `status` to this hub at `path` (what
    /// follows the WebSocket URL: `/edge-01`, `/?token=…`) and waits until the
    /// hub lists it.
    pub fn plug(
        &self,
        rt: &tokio::runtime::Runtime,
        path: &str,
        id: &str,
        status: serde_json::Value,
    ) -> crate::shelly_sim::SimPlug {
        let plug = rt.block_on(crate::shelly_sim::SimPlug::connect(
            &format!("{}{path}", self.ws_url),
            id,
            status,
        ));
        wait_for(&format!("plug {id} listed"), Duration::from_secs(5), || {
            let devices = self.get("/devices").json();
            devices["plugs"]
                .as_array()
                .is_some_and(|plugs| plugs.iter().any(|p| p["id"] == id))
        });
        plug
    }
}

impl Drop for ShellyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a log line containing `needle`; returns the word after it.
pub fn wait_log(child: &mut Child, log: &Arc<Mutex<Vec<String>>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            let rest = &line[line.find(needle).unwrap() + needle.len()..];
            return rest
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap_or("")
                .to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "process exited ({status}) before logging {needle:?}:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "no log line {needle:?}:\n{}",
            log.lock().unwrap().join("\n")
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `program args` with `input` on stdin (written from a thread, so a large
/// input cannot deadlock against a full stdout); returns status, stdout, stderr.
pub fn run_with_stdin(program: &Path, args: &[&str], input: &[u8]) -> (ExitStatus, String, String) {
    use std::io::Write;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary to completion (for `check-config` and start-up failures).
pub fn run_binary(args: &[&str], cwd: &Path) -> (ExitStatus, String, String) {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    die_with_parent(&mut command);
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = child.wait_with_output().expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn convert(mut r: ureq::http::Response<ureq::Body>) -> Response {
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Response {
        status: r.status().as_u16(),
        content_type,
        headers,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    convert(req.call().unwrap_or_else(|e| panic!("GET {url}: {e}")))
}

pub fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    convert(
        req.send(body.as_bytes())
            .unwrap_or_else(|e| panic!("POST {url}: {e}")),
    )
}

/// Any method with a body and headers (`PUT`, `DELETE`).
pub fn send(method: &str, url: &str, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(body.to_owned()).expect("request");
    convert(
        agent()
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}")),
    )
}

/// A POST that returns `None` instead of panicking when the server is gone.
pub fn try_post(url: &str, body: &str) -> Option<Response> {
    agent().post(url).send(body.as_bytes()).ok().map(convert)
}

pub fn request(method: &str, url: &str) -> Response {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(())
        .expect("request");
    convert(
        agent()
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}")),
    )
}

/// The value of the sample line that starts with `series` (name plus labels).
pub fn sample_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().expect("number"))
}

/// The device labels every device sample carries in the fixture config.
pub const DEVICE: &str = "device_type=\"linux\",hostname=\"fixture-host\"";

/// `name{device labels}` for a flat sample.
pub fn flat(name: &str) -> String {
    format!("{name}{{{DEVICE}}}")
}

/// Keeps a fixture `/proc/stat` moving: every 20 ms each counter grows by a fixed
/// step, so the usage between any two readings is exactly step busy / step total.
/// Per step: cpu0 3 busy 7 idle (30 %), cpu1 6/4 (60 %), cpu2 1/9 (10 %).
pub struct StatTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl StatTicker {
    pub fn start(proc_dir: &Path) -> StatTicker {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dir = proc_dir.to_owned();
        let handle = thread::spawn(move || {
            let mut k: u64 = 1;
            while !flag.load(Ordering::Relaxed) {
                let core = |busy: u64, idle: u64| {
                    format!("{} 0 0 {} 0 0 0 0 0 0", busy * k * 10, idle * k * 10)
                };
                let text = format!(
                    "cpu  {}\ncpu0 {}\ncpu1 {}\ncpu2 {}\nintr 1\n",
                    core(10, 20),
                    core(3, 7),
                    core(6, 4),
                    core(1, 9)
                );
                let tmp = dir.join(".stat.tmp");
                std::fs::write(&tmp, text).expect("write stat");
                std::fs::rename(&tmp, dir.join("stat")).expect("rename stat");
                k += 1;
                thread::sleep(Duration::from_millis(20));
            }
        });
        StatTicker {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for StatTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A throwaway CA (openssl, EC P-256, valid one day) and the certificates it signs.
pub struct TestPki {
    dir: PathBuf,
    pub ca: PathBuf,
    ca_key: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let pki = TestPki {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=edge-test-ca",
            "-keyout",
            &pki.ca_key.display().to_string(),
            "-out",
            &pki.ca.display().to_string(),
        ]);
        pki
    }

    /// A server certificate for 127.0.0.1 and localhost (also usable as a client
    /// certificate): `<name>.pem` and `<name>.key`.
    pub fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let p = |suffix: &str| {
            self.dir
                .join(format!("{name}{suffix}"))
                .display()
                .to_string()
        };
        std::fs::write(
            p(".cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("extensions");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &p(".key"),
            "-out",
            &p(".csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-days",
            "1",
            "-CAcreateserial",
            "-in",
            &p(".csr"),
            "-CA",
            &self.ca.display().to_string(),
            "-CAkey",
            &self.ca_key.display().to_string(),
            "-extfile",
            &p(".cnf"),
            "-out",
            &p(".pem"),
        ]);
        (PathBuf::from(p(".pem")), PathBuf::from(p(".key")))
    }
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(status.success(), "openssl {args:?}");
}

/// A free loopback port, for a peer that cannot be given port 0.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A TCP proxy that forwards every connection to `upstream` byte for byte and
/// counts the connections: how many a client opened for its requests.
pub struct CountingProxy {
    pub addr: std::net::SocketAddr,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    pub fn start(upstream: std::net::SocketAddr) -> CountingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                splice(client, server);
            }
        });
        CountingProxy { addr, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies bytes both ways between two streams until either side closes.
pub fn splice(a: std::net::TcpStream, b: std::net::TcpStream) {
    use std::io::{Read as _, Write as _};
    let pump = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    pump(a, b2);
    pump(b, a2);
}

/// An HTTP forward proxy as `HTTPS_PROXY` / `HTTP_PROXY` name one: `CONNECT`
/// tunnels and absolute-form requests, each counted, with the target it asked for.
pub struct ForwardProxy {
    pub url: String,
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        use std::io::{BufRead as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let log = log.clone();
                thread::spawn(move || {
                    let Ok(read_half) = client.try_clone() else {
                        return;
                    };
                    let mut reader = std::io::BufReader::new(read_half);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut head = vec![line.clone()];
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        head.push(h);
                    }
                    let mut parts = line.split_whitespace();
                    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    log.lock().expect("lock").push(format!("{method} {target}"));
                    let mut client = client;
                    if method == "CONNECT" {
                        let Ok(server) = std::net::TcpStream::connect(target) else {
                            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                            return;
                        };
                        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                        splice(client, server);
                    } else {
                        // Absolute form: forward the head and whatever follows.
                        let authority = target
                            .trim_start_matches("http://")
                            .split('/')
                            .next()
                            .unwrap_or("")
                            .to_owned();
                        let Ok(mut server) = std::net::TcpStream::connect(&authority) else {
                            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                            return;
                        };
                        let path =
                            target.trim_start_matches("http://")[authority.len()..].to_owned();
                        let mut out = format!(
                            "{method} {} HTTP/1.1\r\n",
                            if path.is_empty() { "/" } else { &path }
                        );
                        for h in &head[1..] {
                            if !h.to_ascii_lowercase().starts_with("proxy-") {
                                out.push_str(h);
                            }
                        }
                        out.push_str("\r\n");
                        let _ = server.write_all(out.as_bytes());
                        let buffered = reader.buffer().to_vec();
                        let _ = server.write_all(&buffered);
                        splice(client, server);
                    }
                });
            }
        });
        ForwardProxy { url, asked }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

/// The collector names `/health` lists, in its order.
pub fn collector_names(health: &serde_json::Value) -> Vec<String> {
    health["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}
