//! A full disk, for real: a tmpfs of a few hundred KB (CI runs as root and
//! mounts it) under the remote-write buffer and under `runs.jsonl`. Appends are
//! whole records or nothing; the buffer gives up its oldest samples (counted as
//! `disk_full`), keeps the newest, survives a restart without cutting a record,
//! and delivers by itself once space returns; a run whose stop could not be
//! recorded stays stoppable and is recorded by the next stop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::remote_write::{exporter_config, start_proxy, start_receiver, stored};
use crate::support::*;

/// A tmpfs of `kib` KiB, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (the test is skipped) when not root; under CI=true that fails.
    fn mount(kib: u64) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            assert!(!in_ci(), "the full-disk tests mount a tmpfs: run as root");
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("small");
        std::fs::create_dir(&path).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs");
        Some(Tmpfs { path, _dir: dir })
    }

    /// Fills the filesystem with `name` until fewer than `leave` bytes are free
    /// (0: until a write fails).
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path.join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("filler");
        let chunk = [0u8; 1024];
        while self.free() > leave {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
        path
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("avail")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn dropped(body: &str, reason: &str) -> f64 {
    sample_value(
        body,
        &format!("edge_exporter_remote_write_samples_dropped_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn the_remote_write_buffer_on_a_full_disk_keeps_the_newest_and_resumes() {
    let Some(vm) = peer("victoria-metrics") else {
        return;
    };
    let Some(disk) = Tmpfs::mount(320) else {
        return;
    };
    let buffer = disk.path.join("buffer");
    // About 100 KB left for the buffer, whose own limit (1 MB) is far away.
    let filler = disk.fill("filler", 100 * 1024);
    let root = fixtures().join("linux/x86-laptop");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let receiver = start_receiver("victoria-metrics", &vm, dir.path(), port);
    let proxy = start_proxy(format!("{}/api/v1/write", receiver.base));
    let site = "disk-full";
    let config = exporter_config(
        &root,
        &proxy.url,
        site,
        &format!(
            "  buffer:\n    path: {}\n    max_size_mb: 1\n",
            buffer.display()
        ),
    );
    let mut exporter = Exporter::start(&config);
    eventually("first pushes", Duration::from_secs(20), || {
        (proxy
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| **s < 300)
            .count()
            >= 2)
            .then_some(())
    });

    // The receiver goes away: the buffer fills the disk, then gives up its
    // oldest samples for the newest.
    receiver.stop();
    let started = Instant::now();
    eventually("the disk fills up", Duration::from_secs(90), || {
        (dropped(&exporter.metrics(), "disk_full") > 0.0).then_some(())
    });
    eprintln!("the disk was full after {:?}", started.elapsed());
    // A few more rounds on the full disk.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = exporter.metrics();
    let waiting =
        sample_value(&metrics, "edge_exporter_remote_write_buffer_samples").expect("gauge");
    assert!(waiting > 0.0);
    assert_eq!(dropped(&metrics, "corrupt"), 0.0);
    assert_eq!(dropped(&metrics, "write_error"), 0.0);
    let log = exporter.log_text();
    assert_eq!(
        log.matches("the disk is full").count(),
        1,
        "said once: {log}"
    );

    // A restart on the full disk cuts no record: it finds at least what the
    // gauge showed (appends went on meanwhile).
    exporter.respawn(Options::new(""));
    let found: f64 = exporter
        .wait_log("sending the samples already in the buffer samples=")
        .parse()
        .expect("samples=N");
    assert!(
        found >= waiting,
        "{waiting} waited, {found} after the restart"
    );
    assert!(
        !exporter.log_text().contains("torn record"),
        "{}",
        exporter.log_text()
    );

    // Still without a receiver the new process fills the disk again; then space
    // returns and appends go on by themselves.
    eventually("the disk full again", Duration::from_secs(90), || {
        (dropped(&exporter.metrics(), "disk_full") > 0.0).then_some(())
    });
    std::fs::remove_file(&filler).expect("free the disk");
    eventually("appends resume", Duration::from_secs(20), || {
        exporter.log_text().contains("writable again").then_some(())
    });
    // And so does the receiver: the buffer drains by itself.
    let back_at = unix_ms();
    let receiver = start_receiver("victoria-metrics", &vm, dir.path(), port);
    eventually("the buffer drains", Duration::from_secs(60), || {
        (sample_value(
            &exporter.metrics(),
            "edge_exporter_remote_write_buffer_samples",
        ) == Some(0.0))
        .then_some(())
    });
    let metrics = exporter.metrics();
    assert_eq!(dropped(&metrics, "corrupt"), 0.0);
    assert_eq!(dropped(&metrics, "write_error"), 0.0);
    let (status, _) = exporter.stop();
    assert!(status.success());

    // Everything accepted is stored once, and the newest samples of the full
    // disk are among them: the seconds just before space returned.
    let mut accepted = proxy.accepted.lock().expect("lock").clone();
    accepted.sort();
    accepted.dedup();
    let back = eventually("every point is stored", Duration::from_secs(20), || {
        let back = stored(&receiver, site);
        (back.len() >= accepted.len()).then_some(back)
    });
    crate::remote_write::assert_same(&back, &accepted, "victoria-metrics");
    let stamps: Vec<i64> = back
        .iter()
        .filter(|p| p.0.get("__name__").map(String::as_str) == Some("host_memory_total_bytes"))
        .map(|p| p.1)
        .collect();
    assert!(
        stamps.iter().any(|t| (back_at - 4000..back_at).contains(t)),
        "the newest samples were kept: {stamps:?} (receiver back at {back_at})"
    );
}

#[test]
fn a_run_stopped_on_a_full_disk_is_recorded_whole_by_the_next_stop() {
    let Some(disk) = Tmpfs::mount(256) else {
        return;
    };
    let root = fixtures().join("linux/x86-laptop");
    let config = fixture_config(&root, "");
    let mut options = Options::new(&config);
    options.config_dir = Some(disk.path.clone());
    let mut exporter = Exporter::start_with(options);
    let runs_file = disk.path.join("runs.jsonl");
    let start = |exporter: &Exporter, body: &str| {
        let r = exporter.api_post("/runs", body);
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_str().expect("id").to_owned()
    };
    let first = start(&exporter, r#"{"name": "first"}"#);
    assert_eq!(
        exporter.api_post(&format!("/runs/{first}/stop"), "").status,
        200
    );
    // A run whose record is larger than what is left in the file's last page.
    let labels: Vec<String> = (0..16)
        .map(|i| format!("\"l{i}\": \"{}\"", "v".repeat(250)))
        .collect();
    let big = start(
        &exporter,
        &format!(r#"{{"name": "big", "labels": {{{}}}}}"#, labels.join(", ")),
    );
    let filler = disk.fill("filler", 0);
    let r = exporter.api_post(&format!("/runs/{big}/stop"), "");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("runs.jsonl"), "{}", r.body);
    // Nothing half-written: the file holds the first run, whole.
    let text = std::fs::read_to_string(&runs_file).expect("runs");
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    // Still there, and not "stopped already".
    let r = exporter.api_get(&format!("/runs/{big}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["running"], false);
    exporter.metrics_until("the failed append counted", |b| {
        sample_value(
            b,
            "edge_exporter_append_failures_total{file=\"runs.jsonl\"}",
        )
        .is_some_and(|n| n >= 1.0)
    });

    std::fs::remove_file(&filler).expect("free the disk");
    let r = exporter.api_post(&format!("/runs/{big}/stop"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["labels"]["l15"], "v".repeat(250));
    assert_eq!(
        exporter.api_post(&format!("/runs/{big}/stop"), "").status,
        409
    );
    // A third, acknowledged after the full disk, is not glued to anything.
    let third = start(&exporter, r#"{"name": "third"}"#);
    assert_eq!(
        exporter.api_post(&format!("/runs/{third}/stop"), "").status,
        200
    );
    let text = std::fs::read_to_string(&runs_file).expect("runs");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("a whole record per line");
    }
    assert_eq!(text.lines().count(), 3);

    // After a restart all three are there.
    let mut options = Options::new("");
    options.config_dir = Some(disk.path.clone());
    exporter.respawn(options);
    let list = exporter.api_get("/runs").json();
    let ids: Vec<&str> = list["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    for id in [&first, &big, &third] {
        assert!(ids.contains(&id.as_str()), "{id} after the restart: {list}");
    }
}
