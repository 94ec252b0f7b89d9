//! What writing newly discovered ids into `config.yaml` costs: `N` new ids added in
//! one batch to a commented config that already lists 100 (the store's whole write:
//! edit, check, atomic replace), for N from 1,000 to 30,000. The cost should grow
//! linearly with N (it grew with N² before the metrics block was edited as text).
//!
//! `cargo bench --bench discovery` prints one line per N.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use edge_metrics_exporter::config::{Overrides, Store};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 3_000, 6_000, 10_000, 30_000]
    } else {
        sizes
    };
    println!(
        "{:>7} {:>10} {:>12} {:>10}",
        "ids", "seconds", "µs per id", "file kB"
    );
    for n in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let mut text =
            String::from("# a commented config\ndevice_type: linux\ninterval: 1\nmetrics:\n");
        for i in 0..100 {
            text.push_str(&format!("  # id {i}\n  host_known_{i}_percent: true\n"));
        }
        text.push_str("shelly:\n  enabled: false\n");
        std::fs::write(&path, &text).expect("write");
        let (store, _) = Store::open(path.clone(), Overrides::default()).expect("open");
        let ids: Vec<Arc<str>> = (0..n)
            .map(|i| Arc::from(format!("jetson_cpu_core{i}_usage_percent")))
            .collect();
        let started = Instant::now();
        let added = store.add_discovered(&ids).expect("write");
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(added, n);
        let size = std::fs::metadata(&path).expect("meta").len();
        println!(
            "{n:>7} {seconds:>10.3} {:>12.1} {:>10}",
            seconds * 1e6 / n as f64,
            size / 1024
        );
    }
}
