//! tegrastats parser throughput over the corpus, and heap allocations per line.
//!
//! `cargo bench --bench tegrastats` prints criterion's timings (lines per second
//! follow from the per-line time) and, first, the allocation counts measured with a
//! counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group};
use edge_metrics_exporter::collectors::tegrastats::map_line;
use edge_metrics_exporter::sources::tegrastats::parse::{Field, parse_line};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn corpus() -> Vec<String> {
    include_str!("../tests/fixtures/tegrastats/corpus.tsv")
        .lines()
        .skip(1)
        .map(|row| row.rsplit('\t').next().unwrap_or("").to_owned())
        .collect()
}

/// A consumer that touches every value, so nothing is optimised away.
fn consume(sum: &mut f64, field: Field<'_>) {
    *sum += match field {
        Field::Ram { used_mb, .. } => used_mb,
        Field::CpuCore { usage, .. } => usage.unwrap_or(0.0),
        Field::Rail { current_mw, .. } => current_mw,
        Field::Temp { celsius, .. } => celsius.unwrap_or(0.0),
        _ => 1.0,
    };
}

fn allocations_per_line(lines: &[String]) {
    const ROUNDS: u64 = 1000;
    let mut sum = 0.0;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..ROUNDS {
        for line in lines {
            parse_line(black_box(line), |f| consume(&mut sum, f));
        }
    }
    let parse = ALLOCATIONS.load(Ordering::Relaxed) - before;
    black_box(sum);

    // The collector's mapping to metric ids, with its output buffer reused as the
    // collector does.
    let mut out = Vec::with_capacity(256);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..ROUNDS {
        for line in lines {
            out.clear();
            map_line(black_box(line), &mut out);
        }
    }
    let map = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let n = ROUNDS * lines.len() as u64;
    println!(
        "allocations per line over {n} lines: parse_line {:.3}, map_line {:.1}",
        parse as f64 / n as f64,
        map as f64 / n as f64
    );
}

fn throughput(c: &mut Criterion) {
    let lines = corpus();
    let bytes: usize = lines.iter().map(String::len).sum();
    let mut group = c.benchmark_group("tegrastats");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse_line (corpus, per line)", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for line in &lines {
                parse_line(black_box(line), |f| consume(&mut sum, f));
            }
            black_box(sum)
        })
    });
    group.bench_function("map_line (corpus, per line)", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            for line in &lines {
                out.clear();
                map_line(black_box(line), &mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
    println!("corpus: {} lines, {bytes} bytes", lines.len());
}

criterion_group!(benches, throughput);

fn main() {
    allocations_per_line(&corpus());
    benches();
    Criterion::default().configure_from_args().final_summary();
}
