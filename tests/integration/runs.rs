//! Measured runs as an instrument, against the real binary: runs never leak
//! (signals passed on by `measure`, `timeout_s`, shutdown, a crash recovered
//! from the journal, every run in `runs.jsonl` found), `measure`'s repeats,
//! idle baseline and comparisons, its refusal to measure something else when
//! the exporter answers with an error, traces as CSV and JSON, and the run
//! pages, drawn by headless Chromium and looked at as a screenshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::energy::{ORIN_NANO_LINE, jetson};
use crate::support::*;

fn measure_command(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("EDGE_EXPORTER_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    die_with_parent(&mut command);
    command
}

fn output(child: std::process::Child) -> (Option<i32>, String, String) {
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The run of `name` among the exporter's runs.
fn run_named(exporter: &Exporter, name: &str) -> serde_json::Value {
    let list = exporter.api_get("/runs").json();
    list["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no run {name} in {list}"))
        .clone()
}

#[test]
fn measure_passes_signals_on_and_the_run_is_stored() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    let exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_vdd_in_joules_total"));
    let cwd = j.root.parent().expect("tmp").to_owned();
    let marker = cwd.join("saw");

    // SIGTERM to measure's pid only: the command gets it from measure.
    let script = format!(
        "trap 'kill $!; echo TERM > {}; exit 5' TERM; sleep 30 & wait",
        marker.display()
    );
    let child = measure_command(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--name",
            "term",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &cwd,
        &[],
    )
    .spawn()
    .expect("measure");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill has no memory effects; the pid is measure's.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM to measure");
    let (code, out, err) = output(child);
    assert_eq!(code, Some(128 + 15), "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(&marker).expect("the command saw it"),
        "TERM\n"
    );
    assert!(
        out.contains("jetson_power_input (total)"),
        "the report printed: {out}"
    );
    let run = run_named(&exporter, "term");
    assert_eq!(run["end"], "exit");
    assert_eq!(run["exit_code"], 5);
    assert_eq!(run["running"], false);

    // SIGINT to the whole process group (a Ctrl-C): measure waits for the
    // command, reports, exits 130.
    std::fs::remove_file(&marker).ok();
    let script = format!(
        "trap 'kill $!; echo INT >> {}; exit 7' INT; sleep 30 & wait",
        marker.display()
    );
    let mut command = measure_command(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--name",
            "int",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &cwd,
        &[],
    );
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let child = command.spawn().expect("measure");
    std::thread::sleep(Duration::from_millis(1500));
    let group = i32::try_from(child.id()).expect("pid");
    assert!(group > 1);
    // SAFETY: kill has no memory effects; the group is measure's own.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(-group, libc::SIGINT) };
    assert_eq!(sent, 0, "SIGINT to the group");
    let (code, out, err) = output(child);
    assert_eq!(code, Some(130), "{out}{err}");
    assert!(
        std::fs::read_to_string(&marker)
            .expect("saw")
            .starts_with("INT")
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("the report, as JSON");
    assert_eq!(report["end"], "exit");
    assert_eq!(run_named(&exporter, "int")["exit_code"], 7);
}

/// A Ctrl-C typed at a terminal: the kernel sends SIGINT to the whole
/// foreground process group, the command included, so `measure` must not send
/// it again (the command's trap runs once). `script` gives the terminal: a
/// pseudo-terminal whose line discipline turns the ^C written to it into the
/// signal, as a real one does.
#[test]
fn a_ctrl_c_at_the_terminal_reaches_the_command_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("saw");
    let inner = format!(
        "trap 'echo INT >> {}' INT; i=0; while [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; exit 7",
        marker.display()
    );
    let measure = format!(
        "{BIN} measure --standalone --config {} --name tty -- sh -c \"{}\"",
        dir.path().join("none.yaml").display(),
        inner.replace('$', "\\$")
    );
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-c", &measure, "/dev/null"])
        .current_dir(dir.path())
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("script (util-linux) runs");
    std::thread::sleep(Duration::from_millis(1500));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"\x03").expect("a Ctrl-C");
    stdin.flush().expect("flush");
    let code = wait_timeout(&mut child, Duration::from_secs(20)).and_then(|s| s.code());
    drop(stdin);
    let (_, out, err) = output(child);
    assert_eq!(code, Some(130), "{out}{err}");
    assert!(out.contains("exit 7"), "the report printed: {out}{err}");
    assert_eq!(
        std::fs::read_to_string(&marker).expect("the command saw it"),
        "INT\n",
        "the command got the terminal's SIGINT once: {out}{err}"
    );
}

#[test]
fn runs_end_by_timeout_shutdown_or_crash_and_are_all_found() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    let mut exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_vdd_in_joules_total"));
    let open = |exporter: &Exporter, body: &str| {
        let r = exporter.api_post("/runs", body);
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_str().expect("id").to_owned()
    };
    // Bad timeouts say why.
    let r = exporter.api_post("/runs", r#"{"name": "x", "timeout_s": -1}"#);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("timeout_s"), "{}", r.body);
    // A timeout closes it.
    let timed = open(&exporter, r#"{"name": "timed", "timeout_s": 1}"#);
    let run = eventually("the timeout", Duration::from_secs(10), || {
        let r = exporter.api_get(&format!("/runs/{timed}")).json();
        (r["running"] == false).then_some(r)
    });
    assert_eq!(run["end"], "timeout");
    assert!(run["duration_s"].as_f64().expect("duration") < 2.5, "{run}");
    assert_eq!(
        exporter.api_post(&format!("/runs/{timed}/stop"), "").status,
        409
    );

    // Killed with a run open: the journal brings it back at the next start.
    let crashed = open(&exporter, r#"{"name": "crashed"}"#);
    std::thread::sleep(Duration::from_millis(2500));
    exporter.respawn(Options::new(""));
    let run = exporter.api_get(&format!("/runs/{crashed}")).json();
    assert_eq!(run["end"], "crash", "{run}");
    assert_eq!(run["running"], false);
    let joules = run["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "jetson_power_input")
        .and_then(|s| s["joules"].as_f64())
        .expect("input joules");
    // 10 W for at least the 1.5 s of the last checkpoint.
    assert!(joules > 15.0, "{run}");

    // Stopped with a run open (SIGTERM): stored as shutdown.
    let open_at_stop = open(&exporter, r#"{"name": "at shutdown"}"#);
    exporter.signal(libc::SIGTERM);
    let _ = wait_timeout(&mut exporter.child, Duration::from_secs(10));
    exporter.respawn(Options::new(""));
    let run = exporter.api_get(&format!("/runs/{open_at_stop}")).json();
    assert_eq!(run["end"], "shutdown", "{run}");

    // Beyond the 100 kept in memory, still found in runs.jsonl.
    for i in 0..105 {
        let id = open(&exporter, &format!(r#"{{"name": "filler {i}"}}"#));
        assert_eq!(
            exporter.api_post(&format!("/runs/{id}/stop"), "").status,
            200
        );
    }
    let run = exporter.api_get(&format!("/runs/{timed}"));
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(run.json()["name"], "timed");
    assert_eq!(
        exporter.api_post(&format!("/runs/{timed}/stop"), "").status,
        409
    );
}

#[test]
fn measure_repeats_compares_and_writes_what_it_saw() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    let exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_vdd_in_joules_total"));
    let cwd: PathBuf = j.root.parent().expect("tmp").to_owned();
    let (csv, trace, plot) = (
        cwd.join("runs.csv"),
        cwd.join("trace.csv"),
        cwd.join("plot.svg"),
    );
    let child = measure_command(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--repeat",
            "3",
            "--warmup",
            "1",
            "--idle",
            "0.5",
            "-c",
            "sleep 0.3",
            "-c",
            "sleep 0.6",
            "--json",
            "--export-csv",
            csv.to_str().expect("path"),
            "--trace",
            trace.to_str().expect("path"),
            "--plot",
            plot.to_str().expect("path"),
        ],
        &cwd,
        &[],
    )
    .spawn()
    .expect("measure");
    let (code, out, err) = output(child);
    assert_eq!(code, Some(0), "{out}{err}");
    let all: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(all["commands"].as_array().map(Vec::len), Some(2));
    assert_eq!(all["commands"][0]["runs"].as_array().map(Vec::len), Some(3));
    assert!(
        all["idle"]["sources"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    let summary = |k: usize| {
        all["commands"][k]["summary"]
            .as_array()
            .expect("summary")
            .iter()
            .find(|s| s["source"] == "jetson_power_input")
            .expect("input")
            .clone()
    };
    let (a, b) = (summary(0), summary(1));
    let mean = |s: &serde_json::Value| s["joules"]["mean"].as_f64().expect("mean");
    // A steady 10 W: energy follows duration.
    assert!((mean(&a) / 10.0 - 0.3).abs() < 0.1, "{a}");
    assert!(b["joules"]["stddev"].as_f64().expect("sd") < 0.5, "{b}");
    // Net of idle, the same steady power leaves almost nothing.
    assert!(
        a["net_joules"]["mean"].as_f64().expect("net").abs() < 0.5,
        "{a}"
    );
    let compare = all["comparison"]
        .as_array()
        .expect("comparison")
        .iter()
        .find(|c| c["source"] == "jetson_power_input")
        .expect("input compared")
        .clone();
    assert_eq!(compare["command"], "sleep 0.6");
    assert!(compare["uncertainty"].as_f64().is_some(), "{compare}");
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert!(
        text.starts_with("command,repetition,source,joules,joules_bound,"),
        "{text}"
    );
    assert!(
        text.contains("\"sleep 0.6\",3,\"jetson_power_input\","),
        "{text}"
    );
    let trace_text = std::fs::read_to_string(&trace).expect("trace");
    assert!(trace_text.starts_with("command,repetition,t_s,source,watts\n"));
    assert!(
        trace_text.contains("\"sleep 0.3\",2,"),
        "{}{err}",
        &trace_text[..200.min(trace_text.len())]
    );
    let svg = std::fs::read_to_string(&plot).expect("plot");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");

    // Without --json, the table with the comparison line.
    let child = measure_command(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--repeat",
            "2",
            "-c",
            "sleep 0.2",
            "-c",
            "sleep 0.4",
        ],
        &cwd,
        &[],
    )
    .spawn()
    .expect("measure");
    let (code, out, err) = output(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("energy relative to [1] sleep 0.2"), "{out}");
    assert!(out.contains(" ×"), "{out}");
}

#[test]
fn measure_refuses_an_exporter_that_answers_with_an_error() {
    let j = jetson(
        "jetson-orin-nano",
        ORIN_NANO_LINE,
        "api_token: secret-token\n",
    );
    let exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_vdd_in_joules_total"));
    let cwd: PathBuf = j.root.parent().expect("tmp").to_owned();
    // No token: 401, an error naming it, the command not run.
    let marker = cwd.join("ran");
    let child = measure_command(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--",
            "touch",
            marker.to_str().expect("path"),
        ],
        &cwd,
        &[],
    )
    .spawn()
    .expect("measure");
    let (code, out, err) = output(child);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!marker.exists(), "nothing measured, nothing run");
    // With the token it measures through the exporter.
    let child = measure_command(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--json",
            "--",
            "sleep",
            "0.3",
        ],
        &cwd,
        &[("EDGE_EXPORTER_API_TOKEN", "secret-token")],
    )
    .spawn()
    .expect("measure");
    let (code, out, err) = output(child);
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["end"], "exit");
    // --standalone samples here on purpose, at the run rate.
    let config = cwd.join("standalone.yaml");
    std::fs::write(&config, &j.config).expect("config");
    let child = measure_command(
        &[
            "measure",
            "--standalone",
            "--config",
            config.to_str().expect("path"),
            "--json",
            "--",
            "sleep",
            "1",
        ],
        &cwd,
        &[],
    )
    .spawn()
    .expect("measure");
    let (code, out, err) = output(child);
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let input = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "jetson_power_input")
        .expect("input")
        .clone();
    // Read every 10 ms, not every 100 ms.
    assert!(input["samples"].as_u64().expect("samples") >= 50, "{input}");
    assert!(input["joules_bound"].as_f64().is_some(), "{input}");
}

#[test]
fn traces_and_run_pages() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    let exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_vdd_in_joules_total"));
    let r = exporter.api_post(
        "/runs",
        r#"{"name": "traced <run>", "labels": {"model": "yolo"}}"#,
    );
    let id = r.json()["id"].as_str().expect("id").to_owned();
    // A workload to look at: the module input and the CPU/GPU rail follow a
    // 40 ms spike, a 200 ms burst and a ramp (the run opened on 10 W).
    let chip = j
        .root
        .join("sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1");
    let set = |file: &str, milliamps: u32| {
        let tmp = chip.join(format!("{file}.tmp"));
        std::fs::write(&tmp, format!("{milliamps}\n")).expect("write");
        std::fs::rename(&tmp, chip.join(file)).expect("rename");
    };
    let opened = std::time::Instant::now();
    while opened.elapsed() < Duration::from_millis(800) {
        let ms = opened.elapsed().as_millis() as u32;
        let (input, cpu) = match ms {
            0..150 => (2000, 400),
            150..190 => (5000, 2000),
            190..300 => (2000, 400),
            300..500 => (3400, 1200),
            500..700 => (2000 + (ms - 500) * 6, 400 + (ms - 500) * 4),
            _ => (2000, 400),
        };
        set("curr1_input", input);
        set("curr2_input", cpu);
        std::thread::sleep(Duration::from_millis(5));
    }
    // While it runs, the trace so far.
    let live = get(&format!("{}/runs/{id}/trace", exporter.api_url), &[]);
    assert_eq!(live.status, 200);
    assert!(
        live.content_type.starts_with("text/csv"),
        "{}",
        live.content_type
    );
    assert!(live.body.starts_with("t_s,source,watts\n"));
    let stopped = exporter.api_post(&format!("/runs/{id}/stop"), "");
    assert_eq!(stopped.status, 200);
    let report = stopped.json();
    let csv = get(&format!("{}/runs/{id}/trace", exporter.api_url), &[]).body;
    let rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains("\"jetson_power_input\""))
        .collect();
    let samples = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "jetson_power_input")
        .and_then(|s| s["samples"].as_u64())
        .expect("samples");
    // The reading the run opened on, then every reading of the run, read at
    // the run rate (10 ms).
    assert_eq!(rows.len() as u64, samples + 1, "{report}");
    assert!(samples >= 50, "{samples}");
    // The fixture's rails: 5 V × 2 A.
    assert!(rows[0].ends_with(",10"), "{}", rows[0]);
    let first: f64 = rows[0]
        .split(',')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("t");
    assert!(first < 0.05, "the first reading comes at once: {first} s");
    let json = get(
        &format!("{}/runs/{id}/trace", exporter.api_url),
        &[("Accept", "application/json")],
    )
    .json();
    let input = json["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "jetson_power_input")
        .expect("input")
        .clone();
    assert_eq!(
        input["t_s"].as_array().map(Vec::len),
        Some(samples as usize + 1)
    );
    // The run page and the list, as a browser gets them.
    let html = [("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let page = get(&format!("{}/runs/{id}", exporter.api_url), &html);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("traced &lt;run&gt;") && page.body.contains("<svg"));
    assert!(
        page.body
            .contains("class=\"trace\" data-source=\"jetson_power_input\"")
    );
    let list = get(&format!("{}/runs", exporter.api_url), &html);
    assert!(
        list.body.contains(&format!("href=\"/runs/{id}\""))
            && list.body.contains("class=\"spark\"")
    );
    // JSON stays the default.
    assert!(
        exporter
            .api_get(&format!("/runs/{id}"))
            .body
            .starts_with('{')
    );

    // Headless Chromium draws the page; the screenshot is kept for a look.
    let Some(chromium) = peer("chromium") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let shot = dir.path().join("run.png");
    let status = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1100,940",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{}/runs/{id}", exporter.api_url))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("chromium");
    assert!(status.success());
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("RUN_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep the screenshot");
    }
    let dom = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile2").display()
        ))
        .arg(format!("{}/runs/{id}", exporter.api_url))
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<polyline class=\"trace\""), "{dom}");
}
