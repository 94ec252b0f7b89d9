//! `measure [--url URL] [--config PATH] [--json] -- COMMAND [ARGS…]`: runs a
//! command and says how much energy each power source used while it ran.
//!
//! With an exporter running, it opens a run on it (`POST /runs` on the
//! management API, `EDGE_EXPORTER_API_TOKEN` when set) and stops it when the
//! command ends, so the numbers come from the exporter's own meters. When no
//! exporter answers, it builds the collectors the config asks for, samples them
//! itself every `power.sample_interval`, and reads its own meters. Either way it
//! prints a table (or, with `--json`, the run's JSON) and exits with the
//! command's exit status.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::MeasureArgs;
use crate::collectors::{self, BuildContext};
use crate::config::{Config, Overrides, Source, Store};
use crate::energy::Registry;
use crate::energy::runs::{RunReport, RunRequest, Runs};
use crate::sample::SampleSink;

/// How long the exporter may take to open or stop a run.
const API_TIMEOUT: Duration = Duration::from_secs(3);

/// `measure`: the command's exit status, or 1 when nothing could be measured
/// (127 when the command cannot be started, as a shell says).
pub fn run(args: &MeasureArgs) -> ExitCode {
    let Some((program, program_args)) = args.command.split_first() else {
        eprintln!("error: measure needs a command: measure -- COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let request = match request(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let api = Api::new(args);
    let outcome = rt.block_on(async {
        match api.open(&request).await {
            Ok(id) => {
                let status = run_command(program, program_args).await;
                let report = api.stop(&id).await;
                (
                    status,
                    report.map_err(|e| format!("stopping run {id} on {}: {e}", api.base)),
                )
            }
            Err(why) => {
                tracing::info!(reason = %why, "no exporter answers; sampling the sources here");
                measure_here(args, request, program, program_args).await
            }
        }
    });
    let (status, report) = outcome;
    let code = match status {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: cannot run {program}: {e}");
            127
        }
    };
    match report {
        Ok(mut report) => {
            report.exit_code = Some(code);
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("error: {e}"),
                }
            } else {
                print_table(&report);
            }
        }
        Err(e) => eprintln!("error: no measurement: {e}"),
    }
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// The run's name (`--name`, else the command line) and labels.
fn request(args: &MeasureArgs) -> Result<RunRequest, String> {
    let name = args.name.clone().unwrap_or_else(|| {
        let line = args.command.join(" ");
        line.chars()
            .filter(|c| !c.is_control())
            .take(crate::energy::runs::MAX_NAME)
            .collect()
    });
    let mut labels = BTreeMap::new();
    for pair in &args.label {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--label {pair:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    let request = RunRequest { name, labels };
    request.validate().map_err(|e| e.to_string())?;
    Ok(request)
}

/// Runs the command with this process's stdin, stdout and stderr; its exit
/// status (128 + the signal when a signal ended it).
async fn run_command(program: &str, args: &[String]) -> std::io::Result<i32> {
    let status = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .status()
        .await?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// The management API of a running exporter.
struct Api {
    base: String,
    headers: Vec<(hyper::header::HeaderName, String)>,
    client: crate::http::client::Client,
}

impl Api {
    fn new(args: &MeasureArgs) -> Self {
        let base = args.url.trim_end_matches('/').to_owned();
        let tls = base
            .starts_with("https://")
            .then(|| {
                crate::http::tls::client(&crate::config::TlsClientConfig {
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
            client: crate::http::client::Client::new(tls),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", self.base);
        let mut headers = self.headers.clone();
        headers.push((hyper::header::CONTENT_TYPE, "application/json".into()));
        let r = self
            .client
            .request(method, &url, &headers, body.into(), API_TIMEOUT, 4 << 20)
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status, r.body.to_vec()))
    }

    /// Opens a run; its id, or why not.
    async fn open(&self, request: &RunRequest) -> Result<String, String> {
        let body = serde_json::json!({"name": request.name, "labels": request.labels});
        let (status, body) = self
            .call(Method::POST, "/runs", body.to_string().into_bytes())
            .await?;
        if status != 201 {
            return Err(format!(
                "{} answered {status}: {}",
                self.base,
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        value["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no run id in the answer".to_owned())
    }

    async fn stop(&self, id: &str) -> Result<RunReport, String> {
        let (status, body) = self
            .call(Method::POST, &format!("/runs/{id}/stop"), Vec::new())
            .await?;
        if status != 200 {
            return Err(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a run report: {e}"))
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

/// Without an exporter: the configured collectors, sampled here.
async fn measure_here(
    args: &MeasureArgs,
    request: RunRequest,
    program: &str,
    program_args: &[String],
) -> (std::io::Result<i32>, Result<RunReport, String>) {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => {
            // Still run the command: the caller asked for it.
            let status = run_command(program, program_args).await;
            return (status, Err(e));
        }
    };
    let device = collectors::resolve_device(&config);
    let registry = Registry::new();
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
    .await;
    let Ok(collectors) = built else {
        let status = run_command(program, program_args).await;
        return (status, Err("the collectors could not be built".into()));
    };
    let collectors = Arc::new(std::sync::Mutex::new(collectors));
    let period = config.power.sample_interval;
    // A first reading of everything, and the samplers' first reads, before the run.
    collect_all(&collectors).await;
    tokio::time::sleep(period).await;
    let runs = Runs::new(registry, None);
    let started = runs.start(request);
    let id = match started {
        Ok(id) => id,
        Err(e) => {
            let status = run_command(program, program_args).await;
            return (status, Err(e.to_string()));
        }
    };
    let command = run_command(program, program_args);
    tokio::pin!(command);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = loop {
        tokio::select! {
            status = &mut command => break status,
            _ = ticker.tick() => collect_all(&collectors).await,
        }
    };
    collect_all(&collectors).await;
    let report = runs.stop(&id, None).map_err(|e| e.to_string());
    cancel.cancel();
    drop(collectors);
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    (status, report)
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
    use crate::escape::Escaped;
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
        "{:<width$}  {:>12}  {:>9}  {:>9}  {:>7}",
        "source", "energy (J)", "mean (W)", "peak (W)", "samples"
    );
    let watts = |w: Option<f64>| w.map_or("-".to_owned(), |w| format!("{w:.3}"));
    for s in &report.sources {
        let name = if s.total {
            format!("{} (total)", Escaped(&s.source))
        } else {
            Escaped(&s.source).to_string()
        };
        println!(
            "{name:<width$}  {:>12.3}  {:>9}  {:>9}  {:>7}",
            s.joules,
            watts(s.mean_watts),
            watts(s.peak_watts),
            s.samples
        );
    }
    if report.totals().next().is_none() {
        println!("(no source here measures the whole device: rails are parts, never add them up)");
    }
}
