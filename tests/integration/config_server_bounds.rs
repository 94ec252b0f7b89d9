//! The config server under what the fail-closed issue tried: a glob made to
//! backtrack (`*` + `a`×N + `b`) sent with a device token while an admin
//! writes, and a change to a group of 10,000 members, with the server's
//! resident memory and its database measured around it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const ADMIN: &str = "the-admin-token";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn put(url: &str, body: &Value, token: &str) -> Response {
    send(
        "PUT",
        url,
        &body.to_string(),
        &[
            ("Authorization", &bearer(token)),
            ("Content-Type", "application/json"),
        ],
    )
}

/// The database and its WAL, in bytes.
fn db_bytes(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    size(db) + size(&db.with_extension("db-wal"))
}

#[test]
fn a_glob_made_to_backtrack_is_refused_and_holds_no_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("configs.db");
    let server = ConfigServer::start(&db, 0, Some(ADMIN));
    let (ok, token, err) = {
        let db = db.display().to_string();
        let (status, out, err) = run_binary(
            &["config-server", "token", "create", "dev-1", "--db", &db],
            Path::new("/"),
        );
        (status.success(), out.trim().to_owned(), err)
    };
    assert!(ok, "{err}");
    let url = |path: &str| format!("{}{path}", server.url);
    let r = put(
        &url("/config/dev-1"),
        &json!({"device_type": "linux", "metrics": {"host_ram_used_mb": true}}),
        &token,
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);

    // The pattern at 160k characters against a 160k-character id:
    // refused at once, naming the key, before any lock is taken.
    let n = 160_000;
    let pattern = format!("*{}b", "a".repeat(n));
    let id = "a".repeat(n);
    let started = Instant::now();
    let r = put(
        &url("/config/dev-1"),
        &json!({"device_type": "linux", "metrics": {pattern: true, id: true}}),
        &token,
    );
    let refused_in = started.elapsed();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("at most"), "{}", r.body);

    // The most a device may send: 64 patterns of 120 characters that no literal
    // end rejects, and ids of 256 characters that nearly match, while an admin
    // writes another device meanwhile.
    let mut metrics = serde_json::Map::new();
    for i in 0..64 {
        let p = format!("*{}{:02}*", "a?".repeat(58), i);
        metrics.insert(p[..p.len().min(120)].to_owned(), json!(true));
    }
    for i in 0..2_500 {
        metrics.insert(format!("{}{i:05}", "a".repeat(251)), json!(false));
    }
    let heavy = json!({"device_type": "linux", "metrics": metrics});
    let admin = {
        let url = url("/config/dev-2");
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            for i in 0..20 {
                let started = Instant::now();
                let r = put(
                    &url,
                    &json!({"device_type": "linux", "interval": 10 + i}),
                    ADMIN,
                );
                assert!(r.status == 200 || r.status == 201, "{}", r.body);
                worst = worst.max(started.elapsed());
            }
            worst
        })
    };
    let started = Instant::now();
    let r = put(&url("/config/dev-1"), &heavy, &token);
    let heavy_in = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    let worst = admin.join().expect("admin writes");
    eprintln!(
        "160k-character glob refused in {refused_in:?}; the heaviest allowed device write took {heavy_in:?}; the admin's slowest write meanwhile {worst:?}"
    );
    // What it stored is what was sent.
    let stored = server.get("/config/dev-1");
    assert_eq!(stored.status, 401, "a token is needed");
    let stored = get(&url("/config/dev-1"), &[("Authorization", &bearer(ADMIN))]).json();
    assert_eq!(
        stored["metrics"].as_object().map(|m| m.len()),
        Some(64 + 2_500)
    );
}

#[test]
fn a_change_to_ten_thousand_members_gives_its_memory_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("configs.db");
    let server = ConfigServer::start_with(
        &db,
        0,
        Some(ADMIN),
        &[("CONFIG_SERVER_HISTORY_KEEP", "3".to_owned())],
    );
    let pid = server.child.id();
    let metrics: serde_json::Map<String, Value> = (0..50)
        .map(|i| (format!("bench_metric_{i:03}_watts"), json!(i % 3 == 0)))
        .collect();
    let body = json!({"device_type": "jetson_orin", "interval": 1, "metrics": metrics});
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let (base, body) = (server.url.clone(), body.clone());
            std::thread::spawn(move || {
                for n in (k * 2_500)..((k + 1) * 2_500) {
                    let r = put(&format!("{base}/config/dev-{n}"), &body, ADMIN);
                    assert!(r.status == 201 || r.status == 200, "{}", r.body);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("seed");
    }
    eprintln!("10,000 devices seeded in {:?}", started.elapsed());
    let url = format!("{}/groups/all", server.url);
    let group = |interval: u64| {
        json!({"match": {"hostname": "dev-*"}, "interval": interval,
               "metrics": {"bench_metric_002_watts": false}})
    };
    let r = put(&url, &group(2), ADMIN);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["members"], 10_000);
    let (rss_before, db_before) = (rss_kb(pid), db_bytes(&db));
    let mut sizes = Vec::new();
    for interval in 3..=8 {
        let started = Instant::now();
        let r = put(&url, &group(interval), ADMIN);
        assert_eq!(r.status, 200, "{}", r.body);
        sizes.push((started.elapsed(), rss_kb(pid), db_bytes(&db)));
    }
    eprintln!(
        "10,000-member group changes: RSS {rss_before} kB and database {db_before} B before; then {:?}",
        sizes
            .iter()
            .map(|(t, rss, db)| format!("{t:?}: {rss} kB, {db} B"))
            .collect::<Vec<_>>()
    );
    let (_, rss_after, _) = sizes[sizes.len() - 1];
    assert!(
        rss_after * 10 <= rss_before * 12,
        "RSS {rss_before} kB → {rss_after} kB"
    );
    // History keeps 3 revisions: after the third change the database stops
    // growing (deleted revisions' pages are reused).
    let (_, _, db_third) = sizes[2];
    let (_, _, db_last) = sizes[sizes.len() - 1];
    assert!(
        db_last * 10 <= db_third * 11,
        "database {db_third} B → {db_last} B"
    );
    let history = get(
        &format!("{}/config/dev-7/history", server.url),
        &[("Authorization", &bearer(ADMIN))],
    )
    .json();
    assert_eq!(
        history["history"].as_array().map(Vec::len),
        Some(3),
        "{history}"
    );
    // And every member has the last change.
    let config = get(
        &format!("{}/config/dev-9999", server.url),
        &[("Authorization", &bearer(ADMIN))],
    )
    .json();
    assert_eq!(config["interval"], 8);
}
