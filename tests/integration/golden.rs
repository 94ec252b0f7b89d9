//! Golden exposition files: `/metrics` of every fixture machine in both metric
//! styles and both formats (text 0.0.4 and OpenMetrics), compared byte for byte
//! with `tests/golden/`. A change of a HELP text, an order, a name or a label then
//! shows in review as a diff of these files.
//!
//! `UPDATE_GOLDEN=1 cargo test golden` writes them anew from the running binary.
//!
//! Left out, because their values are timings and counts that differ from run to
//! run: the exporter's own series (`edge_exporter_*`, `process_*`). The energy
//! layer's counters (`…power…_joules_total`) grow with time: their lines are in,
//! with the value written as `<integrated>`. Everything else a machine's collectors
//! produce is in as it is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

/// A fixture machine and what its config adds to the common fixture config.
struct Machine {
    fixture: &'static str,
    extra: String,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn machines(tools: &Path) -> Vec<Machine> {
    let vcgencmd = write_script(
        tools,
        "vcgencmd",
        &format!(
            "#!/bin/sh\n[ \"$1\" = pmic_read_adc ] || exit 2\ncat '{}'\n",
            fixtures().join("vcgencmd/pi5-pmic_read_adc.txt").display()
        ),
    );
    let nvpmodel = write_script(
        tools,
        "nvpmodel",
        "#!/bin/sh\n[ \"$1\" = \"-q\" ] || exit 3\necho 'NV Fan Mode:quiet'\necho 'NV Power Mode: MAXN'\necho 0\n",
    );
    // One line replayed again and again: the same values at every collection.
    let line = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings/agx-orin-jp6.log"),
    )
    .expect("recording")
    .lines()
    .find(|l| !l.starts_with('#') && !l.trim().is_empty())
    .expect("a line")
    .to_owned();
    let recording = tools.join("orin-one-line.log");
    std::fs::write(&recording, format!("{line}\n")).expect("write");
    // The two Jetsons whose rails are in sysfs, each with one line of its own kind.
    let orin_nano = tools.join("orin-nano-one-line.log");
    std::fs::write(&orin_nano, format!("{}\n", crate::energy::ORIN_NANO_LINE)).expect("write");
    let nano = tools.join("nano-one-line.log");
    std::fs::write(&nano, format!("{}\n", crate::energy::NANO_LINE)).expect("write");
    let jetson = |fixture, recording: &Path| Machine {
        fixture,
        extra: format!(
            "tegrastats:\n  replay: {}\n  nvpmodel_command: {}\n",
            recording.display(),
            nvpmodel.display()
        ),
    };
    let plain = |fixture| Machine {
        fixture,
        extra: String::new(),
    };
    vec![
        plain("x86-laptop"),
        plain("raspberry-pi-4"),
        Machine {
            fixture: "raspberry-pi-5",
            extra: format!("pmic:\n  command: {}\n", vcgencmd.display()),
        },
        plain("orange-pi-5"),
        plain("orange-pi-a20"),
        plain("lattepanda-3-delta"),
        plain("ryzen-desktop"),
        jetson("jetson-agx-orin", &recording),
        jetson("jetson-orin-nano", &orin_nano),
        jetson("jetson-nano-jp4", &nano),
    ]
}

/// The body without the exporter's own families (their HELP, TYPE and UNIT
/// lines too), and with the integrated energy counters' values masked.
fn device_part(body: &str) -> String {
    let own = |name: &str| name.starts_with("edge_exporter_") || name.starts_with("process_");
    let integrated = |name: &str| name.contains("power") && name.ends_with("_joules_total");
    body.lines()
        .filter_map(|line| {
            let (name, sample) = match line.strip_prefix("# ") {
                Some(meta) => (meta.split(' ').nth(1).unwrap_or(""), false),
                None => (line.split(['{', ' ']).next().unwrap_or(""), true),
            };
            if own(name) {
                return None;
            }
            match line.rsplit_once(' ') {
                Some((series, _)) if sample && integrated(name) => {
                    Some(format!("{series} <integrated>\n"))
                }
                _ => Some(format!("{line}\n")),
            }
        })
        .collect()
}

fn scrape(exporter: &Exporter, accept: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
    let r = get(&format!("{}/metrics", exporter.metrics_url), &headers);
    assert_eq!(r.status, 200, "{}", r.body);
    device_part(&r.body)
}

/// The exporter's bodies in both formats once every collector has run and two
/// scrapes a few collections apart agree (RAPL power and CPU usage need two
/// readings).
fn settled(exporter: &Exporter) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = (String::new(), String::new());
    loop {
        let health = exporter.api_get("/health").json();
        let ran = health["collectors"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["status"] != "starting"));
        let now = (scrape(exporter, None), scrape(exporter, Some(OPENMETRICS)));
        if ran && now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "the exposition never settled");
        last = now;
        std::thread::sleep(Duration::from_millis(600));
    }
}

/// Compares with (or, updating, writes) one golden file; the mismatch message
/// shows the first lines that differ.
fn check(name: &str, got: &str) -> Result<(), String> {
    let path = golden_dir().join(name);
    if updating() {
        std::fs::create_dir_all(golden_dir()).expect("mkdir");
        std::fs::write(&path, got).expect("write golden");
        return Ok(());
    }
    let want = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (run UPDATE_GOLDEN=1 cargo test golden)",
            path.display()
        )
    })?;
    if want == got {
        return Ok(());
    }
    let diff: Vec<String> = want
        .lines()
        .zip(got.lines())
        .filter(|(w, g)| w != g)
        .take(5)
        .map(|(w, g)| format!("  golden: {w}\n  now:    {g}"))
        .collect();
    Err(format!(
        "{name} differs from tests/golden ({} lines there, {} now):\n{}",
        want.lines().count(),
        got.lines().count(),
        diff.join("\n")
    ))
}

#[test]
fn exposition_matches_the_golden_files() {
    let tools = tempfile::tempdir().expect("tempdir");
    let machines = machines(tools.path());
    let failures: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = machines
            .iter()
            .flat_map(|m| ["flat", "labeled"].map(|style| (m, style)))
            .map(|(machine, style)| {
                scope.spawn(move || {
                    let root = fixtures().join("linux").join(machine.fixture);
                    let config = fixture_config(
                        &root,
                        &format!(
                            "  rootfs: {}\nmetric_style: {style}\n{}",
                            root.display(),
                            machine.extra
                        ),
                    )
                    .replace("device_type: linux", "device_type: auto");
                    let exporter = Exporter::start(&config);
                    let (text, openmetrics) = settled(&exporter);
                    let base = format!("{}.{style}", machine.fixture);
                    [
                        check(&format!("{base}.prom"), &text),
                        check(&format!("{base}.om"), &openmetrics),
                    ]
                })
            })
            .collect();
        runs.into_iter()
            .flat_map(|run| run.join().expect("thread"))
            .filter_map(Result::err)
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if !updating() {
        // Every golden file belongs to a machine and style this test runs.
        let expected = machines.len() * 4;
        let present = std::fs::read_dir(golden_dir()).expect("golden dir").count();
        assert_eq!(present, expected + 1, "golden files and their README");
    }
}

#[test]
fn own_series_are_left_out_and_the_rest_kept() {
    let body = "# HELP edge_exporter_uptime_seconds x\n# TYPE edge_exporter_uptime_seconds gauge\n\
                edge_exporter_uptime_seconds 3.2\n# HELP host_ram_total_mb RAM\n\
                # TYPE host_ram_total_mb gauge\nhost_ram_total_mb{hostname=\"h\"} 7\n\
                process_open_fds 9\n# EOF\n";
    assert_eq!(
        device_part(body),
        "# HELP host_ram_total_mb RAM\n# TYPE host_ram_total_mb gauge\nhost_ram_total_mb{hostname=\"h\"} 7\n# EOF\n"
    );
}

/// Every golden file is valid for the real readers: promtool for the text files
/// (the flat style's only finding is the spec's `_mb`/`_kb` ids), the strict
/// OpenMetrics parser of Debian's python3-prometheus-client for the others (the
/// masked energy counters given a number again).
#[test]
fn golden_files_pass_promtool_and_the_strict_parser() {
    let Some(promtool) = peer("promtool") else {
        return;
    };
    let parser = strict_parser();
    let mut checked = 0;
    for entry in std::fs::read_dir(golden_dir()).expect("golden dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        // The masked energy counters read as a number, as they are served.
        let body = std::fs::read_to_string(&path)
            .expect("read")
            .replace(" <integrated>\n", " 1.5\n")
            .into_bytes();
        if name.ends_with(".prom") {
            let (status, stdout, stderr) = run_with_stdin(&promtool, &["check", "metrics"], &body);
            let report = format!("{stdout}{stderr}");
            for line in report.lines() {
                let spec_unit = line.ends_with("metric names should not contain abbreviated units")
                    && name.contains(".flat.");
                assert!(spec_unit, "{name}: {line}");
            }
            assert!(matches!(status.code(), Some(0 | 3)), "{name}: {report}");
            checked += 1;
        } else if name.ends_with(".om")
            && let Some(parser) = &parser
        {
            let text = String::from_utf8(body).expect("text");
            let samples = parser
                .check(&text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(samples > 0, "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} files checked");
}
