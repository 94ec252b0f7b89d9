//! The energy layer end to end, on the real binary and fixture trees that the
//! tests rewrite while the exporter runs (a temp file renamed over the sensor's
//! file): Jetson rails from sysfs (JetPack 6 hwmon, JetPack 4 IIO) at their own
//! rate, INA260 through hwmon and the Pi 5 PMIC, measured runs in the API and the
//! `measure` command, and a real Prometheus computing `increase()` of a counter.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

const NVPMODEL: &str =
    "#!/bin/sh\n[ \"$1\" = \"-q\" ] || exit 3\necho 'NV Power Mode: MAXN_SUPER'\necho 2\n";
/// An Orin Nano 8 GB line (beszel's test data, in `../shared/tegrastats`): its
/// rails say 12.479 W, which must not show while sysfs has them.
pub const ORIN_NANO_LINE: &str = "RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB) CPU [15%@729,11%@729,14%@729,13%@729,11%@729,8%@729] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@53.968C soc2@52.437C soc0@50.75C gpu@53.343C tj@53.968C soc1@51.656C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW VDD_SOC 2817mW/2817mW";
pub const NANO_LINE: &str = "RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB) CPU [5%@1224,4%@1224,3%@1224,6%@1224] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@37C CPU@40C PMIC@50C GPU@40C AO@45C thermal@40C POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406";

const ORIN: &str = "device_type=\"jetson_orin\",hostname=\"fixture-host\"";

/// Writes `value` to `path` the way a test rewrites a sensor: temp file, rename.
fn rewrite(path: &Path, value: &str) {
    let tmp = path.with_extension("tmp-rewrite");
    std::fs::write(&tmp, format!("{value}\n")).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A copy of a Jetson fixture, with a one-line tegrastats recording and nvpmodel.
pub struct Jetson {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub config: String,
}

pub fn jetson(fixture: &str, line: &str, extra: &str) -> Jetson {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = copy_fixture(&format!("linux/{fixture}"), tmp.path());
    let recording = tmp.path().join("one-line.log");
    std::fs::write(&recording, format!("{line}\n")).expect("write");
    let nvpmodel = write_script(tmp.path(), "nvpmodel", NVPMODEL);
    let config = fixture_config(
        &root,
        &format!(
            "  rootfs: {}\ntegrastats:\n  replay: {}\n  nvpmodel_command: {}\n{extra}",
            root.display(),
            recording.display(),
            nvpmodel.display()
        ),
    )
    .replace("device_type: linux", "device_type: auto");
    Jetson {
        _tmp: tmp,
        root,
        config,
    }
}

/// The Orin Nano's VDD_IN current file (the real one, behind the driver's link).
fn vdd_in_current(root: &Path) -> PathBuf {
    root.join("sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1/curr1_input")
}

/// Polls `/metrics` until the value of `series` differs from the first one seen
/// (a new snapshot was published): that value and when it appeared.
fn next_value(exporter: &Exporter, series: &str) -> (f64, Instant) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = sample_value(&exporter.metrics(), series);
    loop {
        let now = Instant::now();
        let v = sample_value(&exporter.metrics(), series);
        if let Some(v) = v
            && Some(v) != first
        {
            return (v, now);
        }
        assert!(Instant::now() < deadline, "{series} never changed");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The energy `series` gained over about `span`, and the seconds it took, both
/// read at the moments new snapshots appeared.
fn energy_over(exporter: &Exporter, series: &str, span: Duration) -> (f64, f64) {
    let (j1, t1) = next_value(exporter, series);
    thread::sleep(span);
    let (j2, t2) = next_value(exporter, series);
    (j2 - j1, (t2 - t1).as_secs_f64())
}

fn within(got: f64, want: f64, fraction: f64) -> bool {
    (got - want).abs() <= fraction * want.abs()
}

#[test]
fn jetson_rails_from_hwmon_count_energy_at_their_own_rate() {
    let j = jetson(
        "jetson-orin-nano",
        ORIN_NANO_LINE,
        "power:\n  sample_interval: 0.02\n",
    );
    let exporter = Exporter::start(&j.config);
    let joules = format!("jetson_power_vdd_in_joules_total{{{ORIN}}}");
    let avg = format!("jetson_power_vdd_in_avg_watts{{{ORIN}}}");
    let body = exporter.metrics_until("rails from sysfs and tegrastats' line", |b| {
        b.contains(&joules) && b.contains(&avg)
    });
    // The rails come from sysfs, not tegrastats: 5 V × 2 A, and no second series.
    let watts = format!("jetson_power_vdd_in_watts{{{ORIN}}}");
    assert_eq!(sample_value(&body, &watts), Some(10.0), "{body}");
    assert_eq!(body.matches(&format!("\n{watts} ")).count(), 1);
    assert_eq!(
        sample_value(&body, &format!("jetson_power_input_watts{{{ORIN}}}")),
        Some(10.0)
    );
    assert_eq!(
        sample_value(
            &body,
            &format!("jetson_rail_vdd_in_voltage_volts{{{ORIN}}}")
        ),
        Some(5.0)
    );
    assert_eq!(
        sample_value(
            &body,
            &format!("jetson_rail_vdd_soc_current_amps{{{ORIN}}}")
        ),
        Some(0.3)
    );
    // Everything else still comes from tegrastats, its own averages included.
    assert_eq!(
        sample_value(&body, &format!("jetson_power_vdd_in_avg_watts{{{ORIN}}}")),
        Some(12.479)
    );
    assert!(body.contains(&format!("jetson_ram_used_mb{{{ORIN}}} 6185")));
    let health = exporter.api_get("/health").json();
    let rails = health["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .find(|c| c["name"] == "jetson_rails")
        .cloned()
        .expect("jetson_rails collector");
    assert_eq!(rails["status"], "ok", "{health}");

    // 10 W: the counter's increase between two snapshots is watts × seconds.
    let (gained, seconds) = energy_over(&exporter, &joules, Duration::from_secs(5));
    assert!(
        within(gained, 10.0 * seconds, 0.02),
        "10 W: {gained} J over {seconds} s"
    );
    // 20 W.
    rewrite(&vdd_in_current(&j.root), "4000");
    thread::sleep(Duration::from_millis(500));
    let (gained, seconds) = energy_over(&exporter, &joules, Duration::from_secs(5));
    assert!(
        within(gained, 20.0 * seconds, 0.02),
        "20 W: {gained} J over {seconds} s"
    );
    assert_eq!(sample_value(&exporter.metrics(), &watts), Some(20.0));

    // A 200 ms pulse of 30 W over 10 W: in the peak, and 4 J more energy.
    rewrite(&vdd_in_current(&j.root), "2000");
    thread::sleep(Duration::from_millis(600));
    let (j1, t1) = next_value(&exporter, &joules);
    rewrite(&vdd_in_current(&j.root), "6000");
    thread::sleep(Duration::from_millis(200));
    rewrite(&vdd_in_current(&j.root), "2000");
    let peak = format!("jetson_power_vdd_in_peak_watts{{{ORIN}}}");
    let input_peak = format!("jetson_power_input_peak_watts{{{ORIN}}}");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut peaks = Vec::new();
    while Instant::now() < deadline {
        let body = exporter.metrics();
        peaks.push((
            sample_value(&body, &peak).unwrap_or(0.0),
            sample_value(&body, &input_peak).unwrap_or(0.0),
        ));
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        peaks.contains(&(30.0, 30.0)),
        "the pulse never peaked: {peaks:?}"
    );
    let (j2, t2) = next_value(&exporter, &joules);
    let extra = (j2 - j1) - 10.0 * (t2 - t1).as_secs_f64();
    assert!(
        (2.8..=5.2).contains(&extra),
        "the pulse added {extra} J, not about 4"
    );
    assert!(
        peaks.last().is_some_and(|p| p.0 == 10.0),
        "the peak falls back: {peaks:?}"
    );
}

#[test]
fn energy_ids_are_discovered_and_switched_like_any_other() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    let exporter = Exporter::start(&j.config);
    let joules = format!("jetson_power_vdd_in_joules_total{{{ORIN}}}");
    let peak = format!("jetson_power_vdd_in_peak_watts{{{ORIN}}}");
    let watts = format!("jetson_power_vdd_in_watts{{{ORIN}}}");
    exporter.metrics_until("rails from sysfs", |b| b.contains(&joules));
    // Discovery writes the new ids into the config file, switched on.
    let ids = [
        "jetson_power_vdd_in_joules_total",
        "jetson_power_vdd_in_peak_watts",
        "jetson_power_input_joules_total",
        "jetson_rail_vdd_in_voltage_volts",
        "jetson_rail_vdd_soc_current_amps",
    ];
    eventually(
        "the energy ids in the config",
        Duration::from_secs(10),
        || {
            let text = exporter.config_text();
            ids.iter()
                .all(|id| text.contains(&format!("  {id}: true")))
                .then_some(())
        },
    );
    // The API's switches turn a counter and a peak off, and back on.
    let body = exporter.metrics_until("some energy counted", |b| {
        sample_value(b, &joules).is_some_and(|v| v > 0.0)
    });
    let before = sample_value(&body, &joules).expect("counter");
    let r = exporter.api_post(
        "/metrics/enable",
        r#"{"jetson_power_vdd_in_joules_total": false, "jetson_power_vdd_in_peak_watts": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = exporter.metrics_until("the switched-off ids gone", |b| {
        !b.contains(&joules) && !b.contains(&peak)
    });
    assert!(body.contains(&watts), "{body}");
    assert!(
        exporter
            .config_text()
            .contains("  jetson_power_vdd_in_joules_total: false")
    );
    thread::sleep(Duration::from_secs(1));
    let r = exporter.api_post(
        "/metrics/enable",
        r#"{"jetson_power_vdd_in_joules_total": true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = exporter.metrics_until("the counter back", |b| b.contains(&joules));
    // Switching off only hid it: the meter kept counting (10 W for the time it
    // was hidden), so the counter never went down.
    let after = sample_value(&body, &joules).expect("counter");
    assert!(after >= before + 8.0, "{before} J before, {after} J after");
}

#[test]
fn jetpack4_iio_rails_and_labeled_families() {
    let j = jetson(
        "jetson-nano-jp4",
        NANO_LINE,
        "metric_style: labeled\npower:\n  sample_interval: 0.05\n",
    );
    let exporter = Exporter::start(&j.config);
    let nano = "device_type=\"jetson_nano\",hostname=\"fixture-host\"";
    let joules = format!("jetson_power_joules_total{{rail=\"pom_5v_in\",{nano}}}");
    let body = exporter.metrics_until("IIO rails", |b| b.contains(&joules));
    let value = |series: &str| sample_value(&body, series);
    // The driver's own power (2000 mW), not V × I.
    assert_eq!(
        value(&format!("jetson_power_watts{{rail=\"pom_5v_in\",{nano}}}")),
        Some(2.0)
    );
    assert_eq!(
        value(&format!(
            "jetson_power_input_watts{{rail=\"pom_5v_in\",{nano}}}"
        )),
        Some(2.0)
    );
    assert_eq!(
        value(&format!(
            "jetson_rail_voltage_volts{{rail=\"pom_5v_in\",{nano}}}"
        )),
        Some(5.048)
    );
    assert_eq!(
        value(&format!(
            "jetson_rail_current_amps{{rail=\"pom_5v_cpu\",{nano}}}"
        )),
        Some(0.08)
    );
    assert!(body.contains("# TYPE jetson_power_joules_total counter"));
    assert!(body.contains("# TYPE jetson_power_peak_watts gauge"));
    let (gained, seconds) = energy_over(&exporter, &joules, Duration::from_secs(4));
    assert!(
        within(gained, 2.0 * seconds, 0.02),
        "2 W: {gained} J over {seconds} s"
    );
    // tegrastats' rails (1750 mW) are not served beside sysfs'.
    assert!(!body.contains("} 1.75\n"), "{body}");
}

#[test]
fn pi5_ina260_through_hwmon_and_the_pmic_estimate_count_energy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = copy_fixture("linux/raspberry-pi-5", tmp.path());
    let vcgencmd = write_script(
        tmp.path(),
        "vcgencmd",
        &format!(
            "#!/bin/sh\n[ \"$1\" = pmic_read_adc ] || exit 2\ncat '{}'\n",
            fixtures().join("vcgencmd/pi5-pmic_read_adc.txt").display()
        ),
    );
    let config = fixture_config(
        &root,
        &format!(
            "  rootfs: {}\npmic:\n  command: {}\n",
            root.display(),
            vcgencmd.display()
        ),
    )
    .replace("device_type: linux", "device_type: auto");
    let exporter = Exporter::start(&config);
    let pi = "device_type=\"raspberry_pi\",hostname=\"fixture-host\"";
    let board = format!("board_power_board_joules_total{{{pi}}}");
    let estimate = format!("board_pmic_power_estimate_joules_total{{{pi}}}");
    exporter.metrics_until("energy", |b| b.contains(&board) && b.contains(&estimate));
    let (gained, seconds) = energy_over(&exporter, &board, Duration::from_secs(4));
    // Sampled at the default 10 Hz: a reading's age at publish adds up to 0.1 s
    // of timing noise to what the test sees, 2.5 % of 4 s.
    assert!(
        within(gained, 6.22 * seconds, 0.04),
        "INA260 6.22 W: {gained} J over {seconds} s"
    );
    // 12 W through the driver's power file.
    let power = root.join(
        "sys/devices/platform/axi/1000120000.pcie/1f00074000.i2c/i2c-1/1-0040/hwmon/hwmon4/power1_input",
    );
    rewrite(&power, "12000000");
    thread::sleep(Duration::from_millis(400));
    let (gained, seconds) = energy_over(&exporter, &board, Duration::from_secs(4));
    assert!(
        within(gained, 12.0 * seconds, 0.04),
        "INA260 12 W: {gained} J over {seconds} s"
    );
    // The PMIC estimate (5.921612 W), read by vcgencmd at each collection.
    let (gained, seconds) = energy_over(&exporter, &estimate, Duration::from_secs(4));
    assert!(
        within(gained, 5.921_612 * seconds, 0.05),
        "PMIC estimate: {gained} J over {seconds} s"
    );
}

/// Runs `measure` with `args`; its exit status and stdout.
fn measure(args: &[&str], cwd: &Path) -> (Option<i32>, String, String) {
    let (status, out, err) = run_binary(args, cwd);
    (status.code(), out, err)
}

fn input_joules(report: &serde_json::Value) -> f64 {
    report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "jetson_power_input")
        .unwrap_or_else(|| panic!("no module input in {report}"))["joules"]
        .as_f64()
        .expect("joules")
}

#[test]
fn measure_a_command_through_the_exporter_and_alone() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    let exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_vdd_in_joules_total"));
    let cwd = j.root.parent().expect("tmp");

    let (code, out, err) = measure(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--json",
            "--",
            "sleep",
            "2",
        ],
        cwd,
    );
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["name"], "sleep 2");
    let duration = report["duration_s"].as_f64().expect("duration");
    assert!((2.0..2.5).contains(&duration), "{report}");
    let joules = input_joules(&report);
    assert!(
        within(joules, 20.0, 0.05),
        "10 W for 2 s: {joules} J\n{report}"
    );
    let input = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "jetson_power_input")
        .expect("input");
    assert_eq!(input["total"], true);
    assert_eq!(input["peak_watts"], 10.0);
    assert!(input["samples"].as_u64().expect("samples") >= 15, "{input}");
    // Nested rails are never totals.
    assert!(
        report["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .filter(|s| s["total"] == true)
            .all(|s| s["source"] == "jetson_power_input"),
        "{report}"
    );
    // The exporter keeps the run.
    let runs = exporter.api_get("/runs").json();
    assert_eq!(runs["runs"][0]["name"], "sleep 2");

    // The command's exit status is measure's.
    let (code, out, _) = measure(
        &[
            "measure",
            "--url",
            &exporter.api_url,
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
        cwd,
    );
    assert_eq!(code, Some(3));
    assert!(out.contains("jetson_power_input (total)"), "{out}");

    // No exporter answers: the sources of the config are sampled here.
    let config_path = cwd.join("measure-config.yaml");
    std::fs::write(&config_path, &j.config).expect("write");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, out, err) = measure(
        &[
            "measure",
            "--url",
            &closed,
            "--config",
            config_path.to_str().expect("path"),
            "--json",
            "--",
            "sleep",
            "2",
        ],
        cwd,
    );
    assert_eq!(code, Some(0), "{err}");
    let alone: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let joules_alone = input_joules(&alone);
    assert!(
        within(joules_alone, joules, 0.05),
        "alone {joules_alone} J, through the exporter {joules} J"
    );
    assert_eq!(
        std::fs::read_to_string(&config_path).expect("config"),
        j.config,
        "measure never writes the config"
    );
    let (code, _, err) = measure(
        &["measure", "--url", &closed, "--", "/nonexistent/cmd"],
        cwd,
    );
    assert_eq!(code, Some(127), "{err}");
}

#[test]
fn runs_in_the_management_api() {
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "api_token: run-token\n");
    let mut exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_vdd_in_joules_total"));
    let auth = [("Authorization", "Bearer run-token")];
    let api = |method: &str, path: &str, body: &str| {
        send(method, &format!("{}{path}", exporter.api_url), body, &auth)
    };
    // Token rules as the rest of the API.
    let r = post(
        &format!("{}/runs", exporter.api_url),
        "{\"name\":\"x\"}",
        &[],
    );
    assert_eq!(r.status, 401);
    // Bad input says why, and opens nothing.
    for (body, why) in [
        ("not json", "Invalid run"),
        ("{}", "missing field `name`"),
        ("{\"name\":\"\"}", "must not be empty"),
        ("{\"name\":\"x\",\"labels\":{\"0bad\":\"v\"}}", "label name"),
        ("{\"name\":\"x\",\"colour\":1}", "unknown field"),
    ] {
        let r = api("POST", "/runs", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.json()["error"].as_str().expect("error").contains(why),
            "{}",
            r.body
        );
    }
    assert_eq!(
        api("GET", "/runs", "").json()["runs"],
        serde_json::json!([])
    );

    let r = api(
        "POST",
        "/runs",
        "{\"name\":\"resnet50\",\"labels\":{\"batch\":\"8\"}}",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(r.header("location"), Some(format!("/runs/{id}").as_str()));
    thread::sleep(Duration::from_millis(1500));
    let running = api("GET", &format!("/runs/{id}"), "").json();
    assert_eq!(running["running"], true);
    assert!(input_joules(&running) > 10.0, "{running}");
    let stopped = api("POST", &format!("/runs/{id}/stop"), "");
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    let report = stopped.json();
    assert_eq!(report["running"], false);
    assert_eq!(report["labels"]["batch"], "8");
    assert_eq!(report["exit_code"], serde_json::Value::Null);
    let duration = report["duration_s"].as_f64().expect("duration");
    assert!(
        within(input_joules(&report), 10.0 * duration, 0.05),
        "{report}"
    );
    assert_eq!(api("POST", &format!("/runs/{id}/stop"), "").status, 409);
    assert_eq!(api("GET", "/runs/12345", "").status, 404);
    assert_eq!(api("POST", "/runs/12345/stop", "").status, 404);
    assert_eq!(api("DELETE", "/runs", "").status, 405);

    // At most 64 open runs.
    let mut open = Vec::new();
    for i in 0..64 {
        let r = api("POST", "/runs", &format!("{{\"name\":\"r{i}\"}}"));
        assert_eq!(r.status, 201, "{}", r.body);
        open.push(r.json()["id"].as_str().expect("id").to_owned());
    }
    let r = api("POST", "/runs", "{\"name\":\"one too many\"}");
    assert_eq!(r.status, 429, "{}", r.body);
    let list = api("GET", "/runs", "").json();
    let runs = list["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 65);
    assert_eq!(runs[0]["name"], "r63", "newest first");
    assert_eq!(runs[64]["name"], "resnet50");
    for id in &open {
        assert_eq!(api("POST", &format!("/runs/{id}/stop"), "").status, 200);
    }

    // Finished runs are in runs.jsonl beside the config and survive a restart.
    let file = exporter.config_path.with_file_name("runs.jsonl");
    let text = std::fs::read_to_string(&file).expect("runs.jsonl");
    assert_eq!(text.lines().count(), 65);
    exporter.respawn(Options::new(&j.config));
    let again = send("GET", &format!("{}/runs/{id}", exporter.api_url), "", &auth);
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), report);
    // A run is never a metric label.
    assert!(!exporter.metrics().contains("resnet50"));
}

/// Prometheus scrapes every second; `increase()` over 15 s of the module's
/// energy counter equals what the fixture drew (10 W × 15 s).
#[test]
fn prometheus_increase_of_the_energy_counter() {
    let Some(prom) = crate::prometheus::prometheus() else {
        return;
    };
    let j = jetson("jetson-orin-nano", ORIN_NANO_LINE, "");
    let exporter = Exporter::start(&j.config);
    exporter.metrics_until("rails", |b| b.contains("jetson_power_input_joules_total"));
    prom.add_target("energy", &exporter.metrics_url);
    let series = "jetson_power_input_joules_total{test=\"energy\"}";
    // 20 s of scrapes, then the last 15 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = prom.wait_value(&format!("count_over_time({series}[20s])"));
        if n >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped only {n} times"
        );
        thread::sleep(Duration::from_secs(1));
    }
    let increase = prom.wait_value(&format!("increase({series}[15s])"));
    assert!(
        within(increase, 150.0, 0.03),
        "increase over 15 s at 10 W: {increase} J"
    );
    let rate = prom.wait_value(&format!("rate({series}[15s])"));
    assert!(within(rate, 10.0, 0.03), "rate: {rate} W");
}
