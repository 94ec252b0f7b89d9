//! Board power sensors end to end: detection of each board from its fixture tree,
//! the collectors that run for it, INA260 through hwmon, the Pi 5 PMIC through a
//! recorded `vcgencmd`, the Orange Pi input supply, RAPL (wrap, a vanished zone,
//! permission denied), and the hwmon and RAPL readings compared with Debian's
//! `prometheus-node-exporter` run on the same trees.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// A config for a board fixture: `device_type: auto`, every root in the tree.
fn board_config(root: &Path, extra: &str) -> String {
    fixture_config(root, &format!("  rootfs: {}\n{extra}", root.display()))
        .replace("device_type: linux", "device_type: auto")
}

/// `/health` once every collector has run.
fn settled_health(exporter: &Exporter) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = exporter.api_get("/health").json();
        let starting = health["collectors"]
            .as_array()
            .expect("collectors")
            .iter()
            .any(|c| c["status"] == "starting");
        if !starting {
            return health;
        }
        assert!(Instant::now() < deadline, "collectors never ran: {health}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn statuses(health: &serde_json::Value) -> BTreeMap<String, String> {
    health["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                c["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect()
}

fn error_of(health: &serde_json::Value, collector: &str) -> String {
    health["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .find(|c| c["name"] == collector)
        .and_then(|c| c["error"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A `vcgencmd` that prints the recorded Pi 5 output for `pmic_read_adc`.
fn fake_vcgencmd(dir: &Path) -> PathBuf {
    let path = dir.join("vcgencmd");
    let fixture = fixtures().join("vcgencmd/pi5-pmic_read_adc.txt");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = pmic_read_adc ] || exit 2\ncat '{}'\n",
            fixture.display()
        ),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// One parsed sample line.
#[derive(Debug, Clone)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(body: &str) -> Vec<Line> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").expect("label");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            Line {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("number"),
            }
        })
        .collect()
}

fn value_of(lines: &[Line], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    lines
        .iter()
        .find(|l| {
            l.name == name
                && labels
                    .iter()
                    .all(|(k, v)| l.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|l| l.value)
}

#[test]
fn each_board_is_detected_and_runs_its_collectors() {
    let tools = tempfile::tempdir().expect("tempdir");
    let vcgencmd = fake_vcgencmd(tools.path());
    let pmic = format!("pmic:\n  command: {}\n", vcgencmd.display());
    // Fixture, extra config, device type, collectors and their status, and what
    // /health says measures the board's power.
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "raspberry-pi-5",
            &pmic,
            "raspberry_pi",
            &[("linux", "ok"), ("ina2xx", "ok"), ("pmic", "ok")],
            "PMIC rails",
        ),
        (
            "raspberry-pi-4",
            "",
            "raspberry_pi",
            &[("linux", "ok"), ("ina2xx", "no_data")],
            "no power sensor on the board",
        ),
        (
            "orange-pi-5",
            "",
            "orange_pi",
            &[("linux", "ok")],
            "add an INA260/INA226/INA219",
        ),
        (
            "orange-pi-a20",
            "",
            "orange_pi",
            &[("linux", "ok"), ("board", "ok")],
            "AXP PMIC",
        ),
        (
            "lattepanda-3-delta",
            "",
            "lattepanda",
            &[("linux", "ok"), ("rapl", "ok")],
            "RAPL",
        ),
        ("x86-laptop", "", "linux", &[("linux", "ok")], ""),
    ];
    for (fixture, extra, device_type, collectors, power) in cases {
        let root = fixtures().join("linux").join(fixture);
        let exporter = Exporter::start(&board_config(&root, extra));
        let health = settled_health(&exporter);
        assert_eq!(health["device_type"], *device_type, "{fixture}: {health}");
        let mut wanted: BTreeMap<String, String> = collectors
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        // Every board says what it is.
        wanted.insert("device_info".into(), "ok".into());
        assert_eq!(statuses(&health), wanted, "{fixture}: {health}");
        let described = health["board"]["power"].as_str().unwrap_or_default();
        assert!(described.contains(power), "{fixture}: {health}");
        if *fixture == "raspberry-pi-4" {
            // The default INA260 is looked for, and its absence explained.
            let error = error_of(&health, "ina2xx");
            assert!(
                error.contains("board (ina260 at 0x40 on bus 1)")
                    && error.contains("/dev/i2c-1 does not exist"),
                "{error}"
            );
        }
    }
}

#[test]
fn pi5_ina260_through_hwmon_and_the_pmic_estimate() {
    let tools = tempfile::tempdir().expect("tempdir");
    let vcgencmd = fake_vcgencmd(tools.path());
    let root = fixtures().join("linux/raspberry-pi-5");
    let exporter = Exporter::start(&board_config(
        &root,
        &format!("pmic:\n  command: {}\n", vcgencmd.display()),
    ));
    let body = exporter.metrics_until("board samples", |b| {
        b.contains("board_power_board_watts") && b.contains("board_pmic_power_estimate_watts")
    });
    let lines = parse_exposition(&body);
    let device = [
        ("device_type", "raspberry_pi"),
        ("hostname", "fixture-host"),
    ];
    // The kernel driver's units: in1 5125 mV, curr1 1214 mA, power1 6220000 µW.
    assert_eq!(
        value_of(&lines, "board_power_board_watts", &device),
        Some(6.22)
    );
    assert_eq!(
        value_of(&lines, "board_voltage_board_volts", &device),
        Some(5.125)
    );
    assert_eq!(
        value_of(&lines, "board_current_board_amps", &device),
        Some(1.214)
    );
    assert_eq!(
        value_of(&lines, "board_pmic_vdd_core_current_amps", &device),
        Some(5.03652)
    );
    assert_eq!(
        value_of(&lines, "board_pmic_ext5v_voltage_volts", &device),
        Some(4.9245)
    );
    let estimate = value_of(&lines, "board_pmic_power_estimate_watts", &device).expect("estimate");
    assert!((estimate - 5.921_612).abs() < 1e-5, "{estimate}");
    // Apart from the Shelly collector's names.
    assert!(!body.contains("power_total_watts"));
    assert!(
        body.contains("# HELP board_pmic_power_estimate_watts ESTIMATE"),
        "the estimate says so"
    );
    // Reading through hwmon is logged once, with the node it uses.
    let log = exporter.log_text();
    assert_eq!(
        log.matches("reading through the kernel's hwmon driver")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn orange_pi_input_supply() {
    let root = fixtures().join("linux/orange-pi-a20");
    let exporter = Exporter::start(&board_config(&root, ""));
    let body = exporter.metrics_until("input power", |b| b.contains("board_input_power_watts"));
    let lines = parse_exposition(&body);
    let labels = [("supply", "axp20x-ac"), ("device_type", "orange_pi")];
    // 5.016 V × 0.4125 A: the AXP209 reports no power_now.
    let watts = value_of(&lines, "board_input_power_watts", &labels).expect("power");
    assert!((watts - 2.0691).abs() < 1e-9, "{watts}");
    assert_eq!(
        value_of(&lines, "board_input_voltage_volts", &labels),
        Some(5.016)
    );
    assert_eq!(
        value_of(&lines, "board_input_current_amps", &labels),
        Some(0.4125)
    );
}

/// The value of a flat RAPL sample of the lattepanda fixture.
fn rapl_value(exporter: &Exporter, name: &str) -> Option<f64> {
    sample_value(
        &exporter.metrics(),
        &format!("{name}{{device_type=\"lattepanda\",hostname=\"fixture-host\"}}"),
    )
}

fn wait_value(exporter: &Exporter, name: &str, pred: impl Fn(Option<f64>) -> bool) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = rapl_value(exporter, name);
        if pred(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rapl_counts_through_a_wrap_and_drops_a_vanished_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = copy_fixture("linux/lattepanda-3-delta", dir.path());
    let package = root.join("sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj");
    let exporter = Exporter::start(&board_config(&root, ""));
    let start = wait_value(&exporter, "energy_package_joules_total", |v| v.is_some());
    assert_eq!(start, Some(48213.770315), "raw energy_uj / 1e6 at start");
    wait_value(&exporter, "power_package_watts", |v| v == Some(0.0));

    // 1 J below the wrap point (max_energy_range_uj 262143328850), then past it to 2 J.
    std::fs::write(&package, "262142328850\n").expect("write");
    wait_value(&exporter, "energy_package_joules_total", |v| {
        v == Some(262142.32885)
    });
    std::fs::write(&package, "2000000\n").expect("write");
    let after = wait_value(&exporter, "energy_package_joules_total", |v| {
        v != Some(262142.32885)
    });
    // 1 J to the wrap and 2 J after it: the counter went up by 3 J, not down.
    assert_eq!(after, Some(262145.32885));
    let power = rapl_value(&exporter, "power_package_watts").expect("power");
    assert!(power >= 0.0 && power.is_finite(), "{power}");

    // psys goes away (its zone is gone): its samples expire, the rest stay.
    assert!(rapl_value(&exporter, "energy_psys_joules_total").is_some());
    std::fs::remove_file(root.join("sys/class/powercap/intel-rapl:1")).expect("rm");
    wait_value(&exporter, "energy_psys_joules_total", |v| v.is_none());
    assert_eq!(
        rapl_value(&exporter, "energy_package_joules_total"),
        Some(262145.32885)
    );
    assert_eq!(statuses(&settled_health(&exporter))["rapl"], "ok");
}

#[test]
fn rapl_permission_denied_is_failing_and_told_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = copy_fixture("linux/lattepanda-3-delta", dir.path());
    // As the kernel has it since 5.10: energy_uj readable by root only.
    let status = Command::new("find")
        .arg(&root)
        .args(["-name", "energy_uj", "-exec", "chmod", "0400", "{}", "+"])
        .status()
        .expect("find");
    assert!(status.success());
    let mut options_config = board_config(&root, "");
    options_config.push('\n');
    let mut options = Options::new(&options_config);
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root_user = unsafe { libc::geteuid() } == 0;
    if root_user {
        // Root reads anything: run the exporter as nobody, from a copy nobody can run.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let program = dir.path().join("edge-metrics-exporter");
        std::fs::copy(BIN, &program).expect("copy binary");
        options.program = Some(program);
        options.uid = Some(65534);
    } else {
        let status = Command::new("find")
            .arg(&root)
            .args(["-name", "energy_uj", "-exec", "chmod", "0000", "{}", "+"])
            .status()
            .expect("find");
        assert!(status.success());
    }
    let exporter = Exporter::start_with(options);
    let health = settled_health(&exporter);
    assert_eq!(statuses(&health)["rapl"], "failing", "{health}");
    let error = error_of(&health, "rapl");
    assert!(
        error.starts_with("permission denied reading ") && error.contains("intel-rapl:0/energy_uj"),
        "{error}"
    );
    assert_eq!(health["status"], "degraded");
    // Several more collections: still failing, and the fix was logged once.
    thread::sleep(Duration::from_millis(1000));
    let body = exporter.metrics();
    assert_eq!(
        sample_value(&body, "edge_exporter_collector_success{collector=\"rapl\"}"),
        Some(0.0)
    );
    assert!(!body.contains("energy_package_joules_total"));
    let log = exporter.log_text();
    assert_eq!(
        log.matches("AmbientCapabilities=CAP_DAC_READ_SEARCH")
            .count(),
        1,
        "{log}"
    );
}

/// Debian's node_exporter on a fixture tree, hwmon and RAPL collectors only.
fn node_exporter(node: &Path, root: &Path) -> Vec<Line> {
    let port = free_port();
    let mut command = Command::new(node);
    command
        .arg(format!("--path.sysfs={}", root.join("sys").display()))
        .arg(format!("--path.procfs={}", root.join("proc").display()))
        .args([
            "--collector.disable-defaults",
            "--collector.hwmon",
            "--collector.rapl",
        ])
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let (mut child, _log) = spawn_logged(command);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Ok(mut r) = ureq::get(&url).call() {
            break r.body_mut().read_to_string().expect("body");
        }
        assert!(Instant::now() < deadline, "node_exporter did not answer");
        thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    parse_exposition(&body)
}

/// hwmon readings as (kind, chip name, value), kinds named after ours.
type Reading = (String, String, f64);

fn node_hwmon(lines: &[Line]) -> Vec<Reading> {
    let names: BTreeMap<&str, &str> = lines
        .iter()
        .filter(|l| l.name == "node_hwmon_chip_names")
        .map(|l| (l.labels["chip"].as_str(), l.labels["chip_name"].as_str()))
        .collect();
    let kinds = [
        ("node_hwmon_in_volts", "voltage"),
        ("node_hwmon_curr_amps", "current"),
        ("node_hwmon_power_watt", "power"),
        ("node_hwmon_temp_celsius", "temp"),
        ("node_hwmon_fan_rpm", "fan"),
        ("node_hwmon_energy_joule_total", "energy"),
    ];
    let mut readings: Vec<Reading> = Vec::new();
    for (metric, kind) in kinds {
        for l in lines.iter().filter(|l| l.name == metric) {
            let chip = names.get(l.labels["chip"].as_str()).copied().unwrap_or("?");
            readings.push((kind.into(), chip.into(), l.value));
        }
    }
    // node_exporter 1.5 divides humidity's milli-percent by 10^6 (45678 → 0.045678);
    // ours is in percent (45.678).
    for l in lines.iter().filter(|l| l.name == "node_hwmon_humidity") {
        let chip = names.get(l.labels["chip"].as_str()).copied().unwrap_or("?");
        readings.push(("humidity".into(), chip.into(), l.value * 1000.0));
    }
    // A power sensor with only power1_average: ours reads it as the sensor's power.
    for l in lines
        .iter()
        .filter(|l| l.name == "node_hwmon_power_average_watt")
    {
        let has_input = lines.iter().any(|o| {
            o.name == "node_hwmon_power_watt"
                && o.labels["chip"] == l.labels["chip"]
                && o.labels["sensor"] == l.labels["sensor"]
        });
        if !has_input {
            let chip = names.get(l.labels["chip"].as_str()).copied().unwrap_or("?");
            readings.push(("power".into(), chip.into(), l.value));
        }
    }
    readings
}

/// Ours as (kind, chip name, value), and the chip names ours had to number
/// because two chips share them (`nvme_2`, `nvme_3`).
fn our_hwmon(lines: &[Line], chip_names: &BTreeSet<String>) -> (Vec<Reading>, BTreeSet<String>) {
    let mut readings = Vec::new();
    let mut shared = BTreeSet::new();
    for l in lines {
        // The energy layer's counter and peak beside a power sensor are ours alone.
        if l.name == "host_hwmon_power_joules_total" || l.name == "host_hwmon_power_peak_watts" {
            continue;
        }
        // Frequencies: node_exporter 1.5 does not read them (checked on their own).
        if l.name == "host_hwmon_frequency_hertz" {
            continue;
        }
        let Some(kind) = l
            .name
            .strip_prefix("host_hwmon_")
            .and_then(|rest| rest.split('_').next())
        else {
            continue;
        };
        let chip = &l.labels["chip"];
        let base = if chip_names.contains(chip) {
            chip.clone()
        } else {
            match chip.rsplit_once('_') {
                Some((base, n)) if chip_names.contains(base) && n.parse::<u32>().is_ok() => {
                    shared.insert(base.to_owned());
                    base.to_owned()
                }
                // A chip the peer could not name (its name sits under `device/`).
                _ => "?".to_owned(),
            }
        };
        readings.push((kind.to_owned(), base, l.value));
    }
    (readings, shared)
}

/// Readings grouped by (kind, chip), values sorted.
fn grouped(items: Vec<Reading>) -> BTreeMap<(String, String), Vec<f64>> {
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (kind, chip, value) in items {
        groups.entry((kind, chip)).or_default().push(value);
    }
    for values in groups.values_mut() {
        values.sort_by(f64::total_cmp);
    }
    groups
}

/// The same readings, to the last bits of a double: the peer scales with
/// `× 0.001` (40925 m°C → 40.925000000000004), ours divides by 1000 (40.925).
fn assert_same(got: Vec<Reading>, expected: Vec<Reading>, what: &str) {
    let (got, expected) = (grouped(got), grouped(expected));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: sensors\nours: {got:?}\npeer: {expected:?}"
    );
    for (key, values) in &got {
        let theirs = &expected[key];
        let close = values.len() == theirs.len()
            && values
                .iter()
                .zip(theirs)
                .all(|(a, b)| (a - b).abs() <= 1e-12 * a.abs().max(1.0));
        assert!(close, "{what}: {key:?}: ours {values:?}, peer {theirs:?}");
    }
}

#[test]
fn hwmon_and_rapl_match_node_exporter_on_the_same_trees() {
    let Some(node) = peer("prometheus-node-exporter") else {
        return;
    };
    for fixture in [
        "x86-laptop",
        "raspberry-pi-4",
        "raspberry-pi-5",
        "lattepanda-3-delta",
        "orange-pi-5",
        "ryzen-desktop",
    ] {
        let root = fixtures().join("linux").join(fixture);
        let theirs = node_exporter(&node, &root);
        let chip_names: BTreeSet<String> = theirs
            .iter()
            .filter(|l| l.name == "node_hwmon_chip_names")
            .map(|l| l.labels["chip_name"].clone())
            .collect();
        let config = board_config(&root, "metric_style: labeled\n");
        let exporter = Exporter::start(&config);
        settled_health(&exporter);
        let ours = parse_exposition(&exporter.metrics());
        // Two chips with one name and no device link (the x86-laptop's NVMe drives):
        // the peer refuses the second as a duplicate series, so that name is left
        // out of the comparison on both sides.
        let (ours_hwmon, shared) = our_hwmon(&ours, &chip_names);
        let keep = |r: &Reading| !shared.contains(&r.1);
        let expected: Vec<Reading> = node_hwmon(&theirs).into_iter().filter(keep).collect();
        assert!(!expected.is_empty(), "{fixture}: the peer read no hwmon");
        let got = ours_hwmon.into_iter().filter(keep).collect();
        assert_same(got, expected, &format!("{fixture}: hwmon"));
        if fixture == "ryzen-desktop" {
            // The GPU's clocks, in Hz, and both AUXTIN1 sensors; the name-less
            // chip named after its device.
            for (labels, want) in [
                ([("chip", "amdgpu"), ("sensor", "sclk")], 1.9e9),
                ([("chip", "amdgpu"), ("sensor", "fclk")], 1.6e9),
            ] {
                assert_eq!(
                    value_of(&ours, "host_hwmon_frequency_hertz", &labels),
                    Some(want)
                );
            }
            for (sensor, want) in [("temp9", 29.0), ("temp10", 31.5)] {
                assert_eq!(
                    value_of(
                        &ours,
                        "host_hwmon_temp_celsius",
                        &[("chip", "nct6798"), ("sensor", sensor)]
                    ),
                    Some(want)
                );
            }
            assert_eq!(
                value_of(
                    &ours,
                    "host_hwmon_fan_rpm",
                    &[("chip", "platform_acme_fan_0"), ("sensor", "fan1")]
                ),
                Some(2200.0)
            );
        }
        if fixture == "raspberry-pi-4" {
            assert_eq!(
                value_of(
                    &ours,
                    "host_hwmon_humidity_percent",
                    &[("chip", "sht3x"), ("sensor", "humidity1")]
                ),
                Some(45.678)
            );
        }

        // RAPL: node_rapl_<zone>_joules_total{index} is our
        // rapl_energy_joules_total{zone, package}. The peer also reads the
        // intel-rapl-mmio duplicate of the package, which ours leaves out.
        let theirs_rapl: BTreeMap<(String, String), f64> = theirs
            .iter()
            .filter(|l| l.name.starts_with("node_rapl_") && !l.labels["path"].contains("mmio"))
            .map(|l| {
                let zone = l.name["node_rapl_".len()..].trim_end_matches("_joules_total");
                ((zone.to_owned(), l.labels["index"].clone()), l.value)
            })
            .collect();
        let ours_rapl: BTreeMap<(String, String), f64> = ours
            .iter()
            .filter(|l| l.name == "rapl_energy_joules_total")
            .map(|l| {
                (
                    (l.labels["zone"].clone(), l.labels["package"].clone()),
                    l.value,
                )
            })
            .collect();
        assert_eq!(ours_rapl, theirs_rapl, "{fixture}: rapl");
        if fixture == "lattepanda-3-delta" {
            assert_eq!(ours_rapl.len(), 4, "package, core, uncore, psys");
        }
    }
}

#[test]
fn promtool_accepts_every_board_in_both_styles() {
    let Some(promtool) = peer("promtool") else {
        return;
    };
    let tools = tempfile::tempdir().expect("tempdir");
    let vcgencmd = fake_vcgencmd(tools.path());
    for fixture in ["raspberry-pi-5", "orange-pi-a20", "lattepanda-3-delta"] {
        for style in ["flat", "labeled"] {
            let root = fixtures().join("linux").join(fixture);
            let exporter = Exporter::start(&board_config(
                &root,
                &format!(
                    "metric_style: {style}\npmic:\n  command: {}\n",
                    vcgencmd.display()
                ),
            ));
            settled_health(&exporter);
            // Power needs a second RAPL reading.
            let body = exporter.metrics_until("every sample", |b| {
                fixture != "lattepanda-3-delta"
                    || b.contains("power_package_watts")
                    || b.contains("rapl_power_watts")
            });
            let (status, stdout, stderr) =
                run_with_stdin(&promtool, &["check", "metrics"], body.as_bytes());
            let report = format!("{stdout}{stderr}");
            // The flat style keeps the spec's `_mb` ids of the linux collector.
            let findings: Vec<&str> = report
                .lines()
                .filter(|l| {
                    !(l.ends_with("metric names should not contain abbreviated units")
                        && l.split_whitespace()
                            .next()
                            .is_some_and(|id| id.ends_with("_mb")))
                })
                .collect();
            assert!(
                matches!(status.code(), Some(0 | 3)) && findings.is_empty(),
                "{fixture} {style}: {report}"
            );
        }
    }
}
