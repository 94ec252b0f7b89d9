//! `measure [--url URL | --standalone] [--repeat N] [--warmup K] [--idle S]
//! [-c CMD …] [--json] [--export-csv F] [--trace F.csv] [--plot F.svg] -- COMMAND
//! [ARGS…]`: runs commands and says how much energy each power source used
//! while they ran.
//!
//! With an exporter answering at `--url`, each measured run is a run on it
//! (`POST /runs` on the management API, `EDGE_EXPORTER_API_TOKEN` when set),
//! so the numbers come from the exporter's own meters, read fast while the run
//! is open. When nothing answers there (or with `--standalone`) it builds the
//! collectors the config asks for and samples them itself, fast. An answer it
//! cannot use (401, 429, 5xx) is an error: it never measures something else
//! quietly.
//!
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to the running command;
//! `measure` waits for it, stores and prints what was measured, and exits
//! 128 + the signal. Otherwise it exits with the (last) command's status. A
//! signal the terminal sent (Ctrl-C, `Ctrl-\`, a hangup) went to the whole
//! foreground process group, the command included, and is not sent again.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::MeasureArgs;
use crate::collectors::{self, BuildContext};
use crate::config::{Config, Overrides, Source, Store};
use crate::energy::Registry;
use crate::energy::plot;
use crate::energy::runs::{End, RunReport, RunRequest, RunTrace, Runs};
use crate::escape::Escaped;
use crate::sample::SampleSink;

/// How long the exporter may take to answer.
const API_TIMEOUT: Duration = Duration::from_secs(3);

/// A command to measure.
#[derive(Debug, Clone)]
enum Command {
    /// `-- PROGRAM ARGS…`
    Argv(Vec<String>),
    /// `-c 'CMD'`, through `sh -c`.
    Shell(String),
}

impl Command {
    fn line(&self) -> String {
        match self {
            Command::Argv(argv) => argv.join(" "),
            Command::Shell(text) => text.clone(),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// Its exit status (128 + the signal that ended it).
    code: i32,
    /// A signal `measure` received (and passed on) meanwhile.
    signal: Option<i32>,
}

/// The four signals passed on to the command, waited on all the time.
struct Signals(Vec<(i32, Signal)>);

/// `si_code` of a signal the kernel sent (Linux's `SI_KERNEL`): for these four,
/// the terminal's, which goes to the whole foreground process group.
const SI_KERNEL: i32 = 0x80;

/// The latest of the four received since [`take_received`] (0: none), noted
/// in the handler itself: a command that exits at once on a signal sent to its
/// whole group can be seen to exit before the signal's stream wakes.
static RECEIVED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal received since the last call, if any.
fn take_received() -> Option<i32> {
    match RECEIVED.swap(0, std::sync::atomic::Ordering::AcqRel) {
        0 => None,
        n => Some(n),
    }
}

/// Whether the latest of each signal came from the kernel, by number.
static FROM_KERNEL: [std::sync::atomic::AtomicBool; 32] =
    [const { std::sync::atomic::AtomicBool::new(false) }; 32];

/// Whether the latest `n` received came from the kernel (the terminal).
fn from_kernel(n: i32) -> bool {
    usize::try_from(n)
        .ok()
        .and_then(|i| FROM_KERNEL.get(i))
        .is_some_and(|f| f.load(std::sync::atomic::Ordering::Acquire))
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let mut all = Vec::new();
        for (number, kind) in [
            (libc::SIGINT, SignalKind::interrupt()),
            (libc::SIGTERM, SignalKind::terminate()),
            (libc::SIGHUP, SignalKind::hangup()),
            (libc::SIGQUIT, SignalKind::quit()),
        ] {
            // Where each came from is noted in the handler itself, before the
            // stream below wakes.
            let slot = usize::try_from(number).map_err(std::io::Error::other)?;
            // SAFETY: the action only stores to an atomic, which is
            // async-signal-safe.
            #[allow(unsafe_code)]
            unsafe {
                signal_hook_registry::register_sigaction(number, move |info: &libc::siginfo_t| {
                    FROM_KERNEL[slot].store(
                        info.si_code == SI_KERNEL,
                        std::sync::atomic::Ordering::Release,
                    );
                    RECEIVED.store(number, std::sync::atomic::Ordering::Release);
                })?;
            }
            all.push((number, signal(kind)?));
        }
        Ok(Signals(all))
    }

    /// The next signal received.
    async fn next(&mut self) -> i32 {
        let waits = self.0.iter_mut().map(|(n, s)| {
            let n = *n;
            Box::pin(async move {
                s.recv().await;
                n
            })
        });
        futures_util::future::select_all(waits).await.0
    }
}

/// `measure`: the command's exit status, 128 + a signal received, 1 when
/// nothing could be measured, 2 for a wrong command line (127 when the command
/// cannot be started, as a shell says).
pub fn run(args: &MeasureArgs) -> ExitCode {
    let commands: Vec<Command> = match (args.commands.is_empty(), args.command.is_empty()) {
        (false, true) => args.commands.iter().cloned().map(Command::Shell).collect(),
        (true, false) => vec![Command::Argv(args.command.clone())],
        (false, false) => {
            eprintln!("error: give commands either with -c or after --, not both");
            return ExitCode::from(2);
        }
        (true, true) => {
            eprintln!("error: measure needs a command: measure -- COMMAND [ARGS...] or -c 'CMD'");
            return ExitCode::from(2);
        }
    };
    if let Some(s) = args.idle
        && !(s.is_finite() && s > 0.0 && s <= 3600.0)
    {
        eprintln!("error: --idle must be seconds above 0 and at most 3600, got {s}");
        return ExitCode::from(2);
    }
    let labels = match labels(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(measure(args, commands, labels))
}

fn labels(args: &MeasureArgs) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in &args.label {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--label {pair:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    RunRequest {
        name: "check".into(),
        labels: labels.clone(),
        timeout_s: None,
    }
    .validate()
    .map_err(|e| e.to_string())?;
    Ok(labels)
}

/// A run's name: the given one or the command line, without control
/// characters, cut to the longest name a run takes.
fn run_name(base: &str, suffix: &str) -> String {
    let room = crate::energy::runs::MAX_NAME.saturating_sub(suffix.chars().count());
    let mut name: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(room)
        .collect();
    if name.trim().is_empty() {
        name = "run".into();
    }
    name.push_str(suffix);
    name
}

/// What one command came to.
struct Measured {
    command: Command,
    runs: Vec<RunReport>,
    traces: Vec<RunTrace>,
}

async fn measure(
    args: &MeasureArgs,
    commands: Vec<Command>,
    labels: BTreeMap<String, String>,
) -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot handle signals: {e}");
            return ExitCode::from(1);
        }
    };
    let meter = match Meter::connect(args).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {}", Escaped(&e));
            return ExitCode::from(1);
        }
    };
    let want_trace = args.trace.is_some() || args.plot.is_some();
    let single = commands.len() == 1 && args.repeat == 1 && args.idle.is_none();
    let mut received: Option<i32> = None;
    let mut last_code = 0;
    let mut failure: Option<String> = None;

    // Idle first: what the device draws doing nothing.
    let mut idle: Option<RunReport> = None;
    if let Some(seconds) = args.idle {
        match meter
            .open(&RunRequest {
                name: "idle".into(),
                labels: labels.clone(),
                timeout_s: None,
            })
            .await
        {
            Ok(id) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
                    n = signals.next() => received = Some(n),
                }
                match meter.stop(&id, None, End::Stop).await {
                    Ok(report) => idle = Some(report),
                    Err(e) => failure = Some(e),
                }
            }
            Err(e) => failure = Some(e),
        }
    }

    let mut measured: Vec<Measured> = Vec::new();
    'commands: for (k, command) in commands.iter().enumerate() {
        if received.is_some() || failure.is_some() {
            break;
        }
        for _ in 0..args.warmup {
            match run_command(command, &mut signals).await {
                Ok(outcome) if outcome.signal.is_some() => {
                    received = outcome.signal;
                    break 'commands;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("error: cannot run {}: {e}", Escaped(&command.line()));
                    return finish(meter, ExitCode::from(127)).await;
                }
            }
        }
        let base = match (&args.name, commands.len()) {
            (Some(name), 1) => name.clone(),
            (Some(name), _) => format!("{name} [{}]", k + 1),
            (None, _) => command.line(),
        };
        let mut this = Measured {
            command: command.clone(),
            runs: Vec::new(),
            traces: Vec::new(),
        };
        for i in 0..args.repeat {
            let suffix = if args.repeat > 1 {
                format!(" ({}/{})", i + 1, args.repeat)
            } else {
                String::new()
            };
            let request = RunRequest {
                name: run_name(&base, &suffix),
                labels: labels.clone(),
                timeout_s: None,
            };
            let id = match meter.open(&request).await {
                Ok(id) => id,
                Err(e) => {
                    failure = Some(e);
                    break 'commands;
                }
            };
            let outcome = run_command(command, &mut signals).await;
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: cannot run {}: {e}", Escaped(&command.line()));
                    let _ = meter.stop(&id, Some(127), End::Exit).await;
                    return finish(meter, ExitCode::from(127)).await;
                }
            };
            last_code = outcome.code;
            match meter.stop(&id, Some(outcome.code), End::Exit).await {
                Ok(report) => {
                    if want_trace {
                        match meter.trace(&id).await {
                            Ok(t) => this.traces.push(t),
                            Err(e) => eprintln!("warning: no trace of run {id}: {}", Escaped(&e)),
                        }
                    }
                    this.runs.push(report);
                }
                Err(e) => failure = Some(e),
            }
            if outcome.signal.is_some() {
                received = outcome.signal;
            }
            if received.is_some() || failure.is_some() {
                measured.push(this);
                break 'commands;
            }
        }
        measured.push(this);
    }

    if let Some(e) = &failure {
        eprintln!("error: no measurement: {}", Escaped(e));
    }
    if single {
        if let Some(report) = measured.first().and_then(|m| m.runs.first()) {
            if args.json {
                match serde_json::to_string_pretty(report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("error: {e}"),
                }
            } else {
                print_table(report);
            }
        }
    } else if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(idle.as_ref(), &measured, args.warmup))
                .unwrap_or_default()
        );
    } else {
        print_summary(idle.as_ref(), &measured, args.warmup);
    }
    write_files(args, &measured, single);
    let code = match (received, &failure) {
        (Some(n), _) => ExitCode::from(u8::try_from(128 + n).unwrap_or(1)),
        (None, Some(_)) if measured.iter().all(|m| m.runs.is_empty()) => ExitCode::from(1),
        _ => ExitCode::from(u8::try_from(last_code.clamp(0, 255)).unwrap_or(1)),
    };
    finish(meter, code).await
}

async fn finish(meter: Meter, code: ExitCode) -> ExitCode {
    meter.close().await;
    code
}

/// `--export-csv`, `--trace`, `--plot`.
fn write_files(args: &MeasureArgs, measured: &[Measured], single: bool) {
    let write = |path: &std::path::Path, text: String| {
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
        }
    };
    if let Some(path) = &args.export_csv {
        let mut out = String::from(
            "command,repetition,source,joules,joules_bound,duration_s,mean_watts,peak_watts,samples,exit_code\n",
        );
        for m in measured {
            let command = csv_text(&m.command.line());
            for (i, run) in m.runs.iter().enumerate() {
                for s in &run.sources {
                    out.push_str(&format!(
                        "{command},{},{},{},{},{},{},{},{},{}\n",
                        i + 1,
                        csv_text(&s.source),
                        s.joules,
                        s.joules_bound,
                        run.duration_s,
                        s.mean_watts.map(|v| v.to_string()).unwrap_or_default(),
                        s.peak_watts.map(|v| v.to_string()).unwrap_or_default(),
                        s.samples,
                        run.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    ));
                }
            }
        }
        write(path, out);
    }
    if let Some(path) = &args.trace {
        if single {
            if let Some(t) = measured.first().and_then(|m| m.traces.first()) {
                write(path, plot::trace_csv(t));
            }
        } else {
            let mut out = String::from("command,repetition,t_s,source,watts\n");
            for m in measured {
                let command = csv_text(&m.command.line());
                for (i, t) in m.traces.iter().enumerate() {
                    for line in plot::trace_csv(t).lines().skip(1) {
                        out.push_str(&format!("{command},{},{line}\n", i + 1));
                    }
                }
            }
            write(path, out);
        }
    }
    if let Some(path) = &args.plot
        && let Some(m) = measured.iter().rev().find(|m| !m.runs.is_empty())
        && let (Some(report), Some(trace)) = (m.runs.last(), m.traces.last())
    {
        write(path, plot::svg(report, trace, 960, 420));
    }
}

/// A CSV field, quoted.
fn csv_text(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Runs `command` with this process's stdin, stdout and stderr, passing on the
/// four signals; waits for it whatever it does with them.
async fn run_command(command: &Command, signals: &mut Signals) -> std::io::Result<Outcome> {
    let mut child = match command {
        Command::Argv(argv) => {
            let (program, rest) = argv
                .split_first()
                .ok_or_else(|| std::io::Error::other("no command"))?;
            tokio::process::Command::new(program).args(rest).spawn()?
        }
        Command::Shell(text) => tokio::process::Command::new("sh")
            .arg("-c")
            .arg(text)
            .spawn()?,
    };
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let mut received = None;
    // What arrived before the command started is not the command's.
    take_received();
    let status = loop {
        tokio::select! {
            // A signal to the whole group can end the command before its
            // stream below wakes; the handler has run by then (the kernel
            // delivers it before the SIGCHLD that ends the wait).
            status = child.wait() => break (status?, take_received()),
            n = signals.next() => {
                received = Some(n);
                // The terminal's signal reached the command too (it is in our
                // process group): sending it again would deliver it twice.
                if from_kernel(n) {
                    continue;
                }
                if let (Some(pid), Ok(sig)) = (pid, nix::sys::signal::Signal::try_from(n)) {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            }
        }
    };
    let (status, late) = status;
    use std::os::unix::process::ExitStatusExt;
    Ok(Outcome {
        code: status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1),
        signal: received.or(late),
    })
}

/// Where runs are measured: a running exporter, or the sources sampled here.
enum Meter {
    Api(Box<Api>),
    Local(Local),
}

impl Meter {
    /// The exporter at `--url` when it answers, the sources here when nothing
    /// answers there (or with `--standalone`); an error for an answer that
    /// cannot be used.
    async fn connect(args: &MeasureArgs) -> Result<Meter, String> {
        if args.standalone {
            return Local::start(args).await.map(Meter::Local);
        }
        let api = Api::new(args);
        match api.call(Method::GET, "/runs", Vec::new()).await {
            Ok((200, _)) => Ok(Meter::Api(Box::new(api))),
            Ok((status, body)) => Err(format!(
                "{} answered {status} ({}): it cannot measure this; fix that, or use --standalone to sample the sources here",
                api.base,
                String::from_utf8_lossy(&body).trim()
            )),
            Err(why) => {
                tracing::info!(url = %api.base, reason = %why, "no exporter answers; sampling the sources here");
                Local::start(args).await.map(Meter::Local)
            }
        }
    }

    async fn open(&self, request: &RunRequest) -> Result<String, String> {
        match self {
            Meter::Api(api) => api.open(request).await,
            Meter::Local(local) => local.runs.start(request.clone()).map_err(|e| e.to_string()),
        }
    }

    async fn stop(&self, id: &str, exit_code: Option<i32>, end: End) -> Result<RunReport, String> {
        match self {
            Meter::Api(api) => api.stop(id, exit_code, end).await,
            Meter::Local(local) => {
                // One more collection, for sources read at each collection.
                local.collect().await;
                local
                    .runs
                    .stop(id, exit_code, end)
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn trace(&self, id: &str) -> Result<RunTrace, String> {
        match self {
            Meter::Api(api) => api.trace(id).await,
            Meter::Local(local) => local
                .runs
                .trace(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no trace".to_owned()),
        }
    }

    async fn close(self) {
        if let Meter::Local(local) = self {
            local.stop().await;
        }
    }
}

/// The management API of a running exporter.
struct Api {
    base: String,
    headers: Vec<(hyper::header::HeaderName, String)>,
    client: crate::net::client::Client,
}

impl Api {
    fn new(args: &MeasureArgs) -> Self {
        let base = args.url.trim_end_matches('/').to_owned();
        let tls = base
            .starts_with("https://")
            .then(|| {
                crate::net::tls::client(&crate::config::TlsClientConfig {
                    ca_file: args.ca_file.clone(),
                    insecure_skip_verify: args.insecure,
                    ..Default::default()
                })
                .ok()
            })
            .flatten();
        Api {
            base,
            headers: super::api_token_header(),
            client: crate::net::client::Client::new(tls),
        }
    }

    /// A request; its status and body, or why nothing answered.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", self.base);
        let mut headers = self.headers.clone();
        headers.push((hyper::header::CONTENT_TYPE, "application/json".into()));
        headers.push((hyper::header::ACCEPT, "application/json".into()));
        let r = self
            .client
            .request(method, &url, &headers, body.into(), API_TIMEOUT, 256 << 20)
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status, r.body.to_vec()))
    }

    fn refused(&self, status: u16, body: &[u8]) -> String {
        format!(
            "{} answered {status}: {}",
            self.base,
            String::from_utf8_lossy(body).trim()
        )
    }

    async fn open(&self, request: &RunRequest) -> Result<String, String> {
        let body = serde_json::json!({"name": request.name, "labels": request.labels});
        let (status, body) = self
            .call(Method::POST, "/runs", body.to_string().into_bytes())
            .await?;
        if status != 201 {
            return Err(self.refused(status, &body));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        value["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no run id in the answer".to_owned())
    }

    async fn stop(&self, id: &str, exit_code: Option<i32>, end: End) -> Result<RunReport, String> {
        let body = serde_json::json!({"exit_code": exit_code, "end": end});
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/runs/{id}/stop"),
                body.to_string().into_bytes(),
            )
            .await?;
        if status != 200 {
            return Err(self.refused(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a run report: {e}"))
    }

    async fn trace(&self, id: &str) -> Result<RunTrace, String> {
        let (status, body) = self
            .call(Method::GET, &format!("/runs/{id}/trace"), Vec::new())
            .await?;
        if status != 200 {
            return Err(self.refused(status, &body));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let sources = value["sources"]
            .as_array()
            .ok_or("no sources in the trace")?
            .iter()
            .filter_map(|s| {
                let name = s["source"].as_str()?.to_owned();
                let ts = s["t_s"].as_array()?;
                let ws = s["watts"].as_array()?;
                let points = ts
                    .iter()
                    .zip(ws)
                    .filter_map(|(t, w)| Some((t.as_f64()? as f32, w.as_f64()? as f32)))
                    .collect();
                let stride = s["stride"].as_u64().unwrap_or(1) as u32;
                Some((name, crate::energy::TracePoints { points, stride }))
            })
            .collect();
        Ok(RunTrace { sources })
    }
}

/// The sources of the config, sampled here (fast) by their collectors.
struct Local {
    runs: Runs,
    collectors: Arc<std::sync::Mutex<Vec<Box<dyn collectors::Collector>>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Local {
    async fn start(args: &MeasureArgs) -> Result<Local, String> {
        let config = load_config(&args.config)?;
        let device = collectors::resolve_device(&config);
        let registry = Registry::new();
        // Measuring is all this process does: the sources go fast at once.
        registry.force_fast(true);
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let ctx = BuildContext {
            tracker: tracker.clone(),
            cancel: cancel.clone(),
            hub: None,
            energy: registry.clone(),
        };
        let specs = collectors::plan(&config, &device);
        let built = tokio::task::spawn_blocking(move || {
            specs.iter().map(|s| s.build(&ctx)).collect::<Vec<_>>()
        })
        .await
        .map_err(|_| "the collectors could not be built".to_owned())?;
        let local = Local {
            runs: Runs::new(registry, None),
            collectors: Arc::new(std::sync::Mutex::new(built)),
            cancel,
            tracker,
        };
        // A first reading of everything, and the samplers' first reads.
        let period = config
            .power
            .run_sample_interval
            .max(config.power.sample_interval);
        local.collect().await;
        tokio::time::sleep(period).await;
        // Sources read at each collection (not by a sampler) are collected here
        // every sample interval.
        let (collectors, cancel) = (local.collectors.clone(), local.cancel.clone());
        let every = config.power.sample_interval;
        local.tracker.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => collect_all(&collectors).await,
                }
            }
        });
        Ok(local)
    }

    async fn collect(&self) {
        collect_all(&self.collectors).await;
    }

    async fn stop(self) {
        self.cancel.cancel();
        drop(self.collectors);
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
    }
}

/// The config `--config` names, or the embedded default when there is no file.
fn load_config(path: &std::path::Path) -> Result<Config, String> {
    let overrides = Overrides::default().with_env_tokens();
    if path.exists() {
        Store::check(path, &overrides).map_err(|e| e.to_string())
    } else {
        Config::parse(crate::config::TEMPLATE, &overrides, &Source::embedded())
            .map_err(|e| e.to_string())
    }
}

/// One collection of every collector, for the readings it records in the meters.
async fn collect_all(collectors: &Arc<std::sync::Mutex<Vec<Box<dyn collectors::Collector>>>>) {
    let collectors = collectors.clone();
    let started = Instant::now();
    let _ = tokio::task::spawn_blocking(move || {
        let mut all = crate::lock::lock(&collectors);
        for c in all.iter_mut() {
            let mut sink = SampleSink::default();
            let _ = c.collect(&mut sink);
        }
    })
    .await;
    tracing::trace!(took = ?started.elapsed(), "collected");
}

fn print_table(report: &RunReport) {
    println!(
        "{}: {:.3} s, exit {}",
        Escaped(&report.name),
        report.duration_s,
        report.exit_code.unwrap_or(0)
    );
    if report.sources.is_empty() {
        println!("no power source was read (see `edge-metrics-exporter health`)");
        return;
    }
    let width = report
        .sources
        .iter()
        .map(|s| s.source.len() + if s.total { 8 } else { 0 })
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:>12}  {:>10}  {:>9}  {:>9}  {:>7}",
        "source", "energy (J)", "± (J)", "mean (W)", "peak (W)", "samples"
    );
    let watts = |w: Option<f64>| w.map_or("-".to_owned(), |w| format!("{w:.3}"));
    for s in &report.sources {
        let name = if s.total {
            format!("{} (total)", Escaped(&s.source))
        } else {
            Escaped(&s.source).to_string()
        };
        println!(
            "{name:<width$}  {:>12.3}  {:>10.4}  {:>9}  {:>9}  {:>7}",
            s.joules,
            s.joules_bound,
            watts(s.mean_watts),
            watts(s.peak_watts),
            s.samples
        );
    }
    if report.totals().next().is_none() {
        println!("(no source here measures the whole device: rails are parts, never add them up)");
    }
}

/// Mean, sample standard deviation, min and max.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stat {
    pub mean: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Some(Stat {
            mean,
            stddev: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n,
        })
    }

    /// The standard error of the mean.
    fn error(&self) -> f64 {
        self.stddev / (self.n as f64).sqrt()
    }
}

/// `b / a` and its uncertainty from the two means' standard errors.
pub fn ratio(a: &Stat, b: &Stat) -> Option<(f64, f64)> {
    if a.mean == 0.0 || !a.mean.is_finite() || !b.mean.is_finite() {
        return None;
    }
    let r = b.mean / a.mean;
    let rel_a = a.error() / a.mean;
    let rel_b = if b.mean == 0.0 {
        0.0
    } else {
        b.error() / b.mean
    };
    Some((r, r.abs() * (rel_a * rel_a + rel_b * rel_b).sqrt()))
}

/// Per source of one command's runs: energy, duration and mean power, and the
/// energy above idle power when idle was measured.
#[derive(Debug, serde::Serialize)]
struct SourceSummary {
    source: String,
    total: bool,
    joules: Stat,
    /// The widest `joules_bound` of its runs.
    joules_bound: f64,
    duration_s: Stat,
    mean_watts: Stat,
    #[serde(skip_serializing_if = "Option::is_none")]
    net_joules: Option<Stat>,
}

fn summarize(runs: &[RunReport], idle: Option<&RunReport>) -> Vec<SourceSummary> {
    let mut names: Vec<(String, bool)> = Vec::new();
    for r in runs {
        for s in &r.sources {
            if !names.iter().any(|(n, _)| *n == s.source) {
                names.push((s.source.clone(), s.total));
            }
        }
    }
    names
        .into_iter()
        .filter_map(|(name, total)| {
            let rows: Vec<(f64, f64, Option<f64>, f64)> = runs
                .iter()
                .filter_map(|r| {
                    let s = r.sources.iter().find(|s| s.source == name)?;
                    Some((s.joules, r.duration_s, s.mean_watts, s.joules_bound))
                })
                .collect();
            let joules: Vec<f64> = rows.iter().map(|r| r.0).collect();
            let durations: Vec<f64> = rows.iter().map(|r| r.1).collect();
            // The run's own mean (its energy over the time it has readings for).
            let power: Vec<f64> = rows.iter().filter_map(|r| r.2).collect();
            let idle_watts = idle
                .and_then(|i| i.sources.iter().find(|s| s.source == name))
                .and_then(|s| s.mean_watts);
            let net: Option<Vec<f64>> =
                idle_watts.map(|w| rows.iter().map(|r| r.0 - w * r.1).collect());
            Some(SourceSummary {
                source: name,
                total,
                joules: Stat::of(&joules)?,
                joules_bound: rows.iter().map(|r| r.3).fold(0.0, f64::max),
                duration_s: Stat::of(&durations)?,
                mean_watts: Stat::of(&power)?,
                net_joules: net.as_deref().and_then(Stat::of),
            })
        })
        .collect()
}

/// The energy each command takes relative to the first's, per source both
/// have (net of idle when idle was measured).
fn comparisons(summaries: &[(String, Vec<SourceSummary>)]) -> Vec<(String, String, f64, f64)> {
    let Some((_, first)) = summaries.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (command, these) in summaries.iter().skip(1) {
        for s in these {
            let Some(base) = first.iter().find(|f| f.source == s.source) else {
                continue;
            };
            let pick = |x: &SourceSummary| x.net_joules.unwrap_or(x.joules);
            if let Some((r, u)) = ratio(&pick(base), &pick(s)) {
                out.push((command.clone(), s.source.clone(), r, u));
            }
        }
    }
    out
}

fn summary_json(idle: Option<&RunReport>, measured: &[Measured], warmup: u32) -> serde_json::Value {
    let summaries: Vec<(String, Vec<SourceSummary>)> = measured
        .iter()
        .map(|m| (m.command.line(), summarize(&m.runs, idle)))
        .collect();
    let commands: Vec<serde_json::Value> = measured
        .iter()
        .zip(&summaries)
        .map(|(m, (line, summary))| {
            serde_json::json!({
                "command": line,
                "warmup": warmup,
                "runs": m.runs,
                "summary": summary,
            })
        })
        .collect();
    let comparison: Vec<serde_json::Value> = comparisons(&summaries)
        .into_iter()
        .map(|(command, source, r, u)| {
            serde_json::json!({"command": command, "source": source, "ratio": r, "uncertainty": u})
        })
        .collect();
    serde_json::json!({
        "idle": idle,
        "commands": commands,
        "comparison": comparison,
    })
}

/// `x` with three decimals, never "-0.000".
fn fixed3(x: f64) -> String {
    let text = format!("{x:.3}");
    match text.strip_prefix('-') {
        Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.to_owned(),
        _ => text,
    }
}

/// "mean ± stddev [min … max]".
fn spread(s: &Stat) -> String {
    format!(
        "{} ± {} [{} … {}]",
        fixed3(s.mean),
        fixed3(s.stddev),
        fixed3(s.min),
        fixed3(s.max)
    )
}

/// Rows of cells, the first column left-aligned and the others right-aligned,
/// each as wide as its widest cell.
fn print_rows(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("   ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        println!("{}", line.trim_end());
    }
}

fn print_summary(idle: Option<&RunReport>, measured: &[Measured], warmup: u32) {
    if let Some(idle) = idle {
        println!("idle, {:.3} s:", idle.duration_s);
        let rows: Vec<Vec<String>> = idle
            .sources
            .iter()
            .filter_map(|s| {
                let w = s.mean_watts?;
                Some(vec![
                    Escaped(&s.source).to_string(),
                    format!("{} W", fixed3(w)),
                ])
            })
            .collect();
        print_rows(&rows);
    }
    let mut summaries = Vec::new();
    for (k, m) in measured.iter().enumerate() {
        let summary = summarize(&m.runs, idle);
        println!(
            "\n[{}] {}: {} measured run{}{}",
            k + 1,
            Escaped(&m.command.line()),
            m.runs.len(),
            if m.runs.len() == 1 { "" } else { "s" },
            if warmup > 0 {
                format!(" after {warmup} warm-up")
            } else {
                String::new()
            }
        );
        let mut rows = vec![vec![
            "source".to_owned(),
            "energy (J)".to_owned(),
            "bound (J)".to_owned(),
            "duration (s)".to_owned(),
            "mean power (W)".to_owned(),
        ]];
        for s in &summary {
            let name = if s.total {
                format!("{} (total)", Escaped(&s.source))
            } else {
                Escaped(&s.source).to_string()
            };
            rows.push(vec![
                name,
                spread(&s.joules),
                format!("± {:.4}", s.joules_bound),
                spread(&s.duration_s),
                spread(&s.mean_watts),
            ]);
            if let Some(net) = &s.net_joules {
                rows.push(vec!["  above idle".to_owned(), spread(net)]);
            }
        }
        print_rows(&rows);
        summaries.push((m.command.line(), summary));
    }
    let compared = comparisons(&summaries);
    if !compared.is_empty() {
        let first = summaries
            .first()
            .map(|(l, _)| l.clone())
            .unwrap_or_default();
        println!(
            "\nenergy relative to [1] {}{}:",
            Escaped(&first),
            if idle.is_some() { " (above idle)" } else { "" }
        );
        let totals: Vec<_> = compared
            .iter()
            .filter(|(_, source, ..)| {
                summaries
                    .iter()
                    .flat_map(|(_, s)| s.iter())
                    .any(|s| s.source == *source && s.total)
            })
            .collect();
        let shown: Vec<&(String, String, f64, f64)> = if totals.is_empty() {
            compared.iter().collect()
        } else {
            totals
        };
        for (command, source, r, u) in shown {
            println!(
                "  {}  {}: {r:.2} ± {u:.2} ×",
                Escaped(command),
                Escaped(source)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_ratios() {
        let a = Stat::of(&[10.0, 10.2, 9.8, 10.0]).expect("stat");
        assert!((a.mean - 10.0).abs() < 1e-12);
        assert!((a.stddev - 0.163_299).abs() < 1e-5);
        assert_eq!((a.min, a.max, a.n), (9.8, 10.2, 4));
        let b = Stat::of(&[12.3, 12.3, 12.3, 12.3]).expect("stat");
        let (r, u) = ratio(&a, &b).expect("ratio");
        assert!((r - 1.23).abs() < 1e-12);
        // Only a's spread: 1.23 × (0.0816 / 10).
        assert!((u - 1.23 * 0.163_299 / 2.0 / 10.0).abs() < 1e-5, "{u}");
        assert!(ratio(&Stat::of(&[0.0]).expect("stat"), &b).is_none());
        assert_eq!(run_name("a\nb", " (1/2)"), "ab (1/2)");
    }
}
