//! `install.sh` and `uninstall.sh` staged into a directory (`--root`): what lands
//! where, the rendered units checked by `systemd-analyze verify` (no warning
//! allowed) and `systemd-analyze security` (exposure bounded), the sudoers line
//! checked by `visudo -c`, upgrades keeping the edited config, and removal.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a script of the repository without stdin.
fn run_script(name: &str, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join(name))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash")
}

/// Runs a script that must succeed; stdout and stderr together.
fn script(name: &str, args: &[&str]) -> String {
    let out = run_script(name, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} {args:?} failed:\n{text}");
    text
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// A staging root that looks like a Jetson with RAPL (both markers are read
/// under `--root`), with the host's stock units for `systemd-analyze --root`.
fn machine(stage: &Path) {
    std::fs::create_dir_all(stage.join("etc")).expect("mkdir");
    std::fs::write(stage.join("etc/nv_tegra_release"), "# R36 (release)\n").expect("write");
    std::fs::create_dir_all(stage.join("sys/class/powercap/intel-rapl:0")).expect("mkdir");
}

fn with_stock_units(stage: &Path) {
    // verify resolves every dependency (sysinit.target ...) and ExecReload's
    // /bin/sh inside the root.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p {0}/usr/lib/systemd {0}/bin && cp -a /usr/lib/systemd/system {0}/usr/lib/systemd/ && cp /bin/sh {0}/bin/sh",
            stage.display()
        ))
        .status()
        .expect("sh");
    assert!(status.success());
}

#[test]
fn install_renders_verified_units_and_uninstall_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stage = dir.path().join("root");
    machine(&stage);
    let out = script(
        "install.sh",
        &[
            "--root",
            stage.to_str().expect("utf-8"),
            "--binary",
            BIN,
            "--yes",
            "--tegrastats-sudo",
            "--shelly-server",
            "--config-server-service",
            "--config-server-url",
            "http://cfg.example:8080",
        ],
    );
    let etc = stage.join("etc");
    let units = etc.join("systemd/system");
    let binary = stage.join("usr/local/bin/edge-metrics-exporter");
    assert_eq!(mode(&binary), 0o755);
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));

    let exporter_unit = read(&units.join("edge-metrics-exporter.service"));
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "ExecStart=/usr/local/bin/edge-metrics-exporter serve --config /etc/edge-metrics-exporter/config.yaml",
        "User=edge-metrics",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/etc/edge-metrics-exporter",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(exporter_unit.contains(line), "{line:?} in\n{exporter_unit}");
    }
    for unit in [
        "edge-metrics-exporter.service",
        "shelly-server.service",
        "edge-metrics-config-server.service",
    ] {
        let text = read(&units.join(unit));
        assert!(!text.contains("{{"), "placeholder left in {unit}");
        assert!(text.contains("Type=notify"), "{unit}");
    }
    let dropins = units.join("edge-metrics-exporter.service.d");
    assert!(read(&dropins.join("rapl.conf")).contains("AmbientCapabilities=CAP_DAC_READ_SEARCH"));
    assert!(read(&dropins.join("tegrastats-sudo.conf")).contains("NoNewPrivileges=no"));
    let sudoers = etc.join("sudoers.d/edge-metrics-exporter");
    assert_eq!(mode(&sudoers), 0o440);
    assert!(read(&sudoers).contains("edge-metrics ALL=(root) NOPASSWD: "));
    assert!(
        read(&etc.join("default/edge-metrics-exporter"))
            .contains("\nCONFIG_SERVER_URL=http://cfg.example:8080\n")
    );
    let config = etc.join("edge-metrics-exporter/config.yaml");
    let text = read(&config);
    assert!(text.contains("tegrastats:\n  sudo: true"), "{text}");
    assert!(text.contains("\ndevice_type: auto\n"), "{text}");
    assert!(text.contains("\nnew_metrics_enabled: true"), "{text}");
    let (status, stdout, stderr) = run_binary(
        &["check-config", "--config", config.to_str().expect("utf-8")],
        dir.path(),
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(out.contains("staged in"), "{out}");

    // The peers: the sudoers line parses, the units load without a warning, and
    // the hardening keeps the exposure low.
    if let Some(visudo) = peer("visudo") {
        let out = Command::new(visudo)
            .arg("-cf")
            .arg(&sudoers)
            .output()
            .expect("visudo");
        assert!(out.status.success(), "{out:?}");
    }
    if let Some(analyze) = peer("systemd-analyze") {
        with_stock_units(&stage);
        let unit_paths: Vec<PathBuf> = std::fs::read_dir(&units)
            .expect("units")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "service"))
            .collect();
        assert_eq!(unit_paths.len(), 3);
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", stage.display()))
            .args(&unit_paths)
            .output()
            .expect("systemd-analyze");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "verify:\n{said}"
        );
        for (unit, most) in [
            // The drop-ins (sudo, RAPL) loosen the exporter on purpose.
            ("edge-metrics-exporter.service", 5.0),
            ("shelly-server.service", 2.0),
            ("edge-metrics-config-server.service", 2.0),
        ] {
            let out = Command::new(&analyze)
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(format!("--root={}", stage.display()))
                .arg(unit)
                .output()
                .expect("systemd-analyze security");
            let text = String::from_utf8_lossy(&out.stdout);
            let level: f64 = text
                .lines()
                .find_map(|l| l.split("Overall exposure level for ").nth(1))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}"));
            eprintln!("{unit}: exposure {level}");
            assert!(level <= most, "{unit}: exposure {level} > {most}\n{text}");
        }
    }

    // Upgrading keeps the config the exporter (or a person) edited.
    std::fs::write(&config, format!("{}# edited\n", read(&config))).expect("edit");
    let out = script(
        "install.sh",
        &[
            "--root",
            stage.to_str().expect("utf-8"),
            "--binary",
            BIN,
            "--yes",
        ],
    );
    assert!(out.contains("kept the existing config.yaml"), "{out}");
    assert!(read(&config).ends_with("# edited\n"));

    // Uninstalling removes the services and keeps the config; --purge removes it.
    script("uninstall.sh", &["--root", stage.to_str().expect("utf-8")]);
    assert!(!binary.exists());
    assert!(!units.join("edge-metrics-exporter.service").exists());
    assert!(!units.join("shelly-server.service").exists());
    assert!(!dropins.exists());
    assert!(!sudoers.exists());
    assert!(config.exists());
    script(
        "uninstall.sh",
        &["--root", stage.to_str().expect("utf-8"), "--purge"],
    );
    assert!(!config.exists());
    assert!(!etc.join("default/edge-metrics-exporter").exists());
}

#[test]
fn install_refuses_bad_input_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stage = dir.path().join("root");
    for args in [
        vec!["--user", "bad user"],
        vec!["--device-type", "toaster!"],
        // Well formed, but not a device type: the rendered config fails check-config.
        vec!["--device-type", "toaster"],
        vec!["--binary", "/nonexistent/edge-metrics-exporter"],
        vec!["--frobnicate"],
    ] {
        // The built binary unless the case names another (never a cargo build).
        let mut all = vec![
            "--root",
            stage.to_str().expect("utf-8"),
            "--yes",
            "--binary",
            BIN,
        ];
        all.extend_from_slice(&args);
        let out = run_script("install.sh", &all);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
        assert!(!stage.exists(), "{args:?} wrote files");
    }
}
