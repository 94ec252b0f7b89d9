//! tegrastats parser throughput over the corpus, and heap allocations per line.
//!
//! `cargo bench --bench tegrastats` prints criterion's timings (lines per second
//! follow from the per-line time) and, first, the allocation counts measured with a
//! counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group};
use edge_metrics_exporter::cmd::parse::write_object;
use edge_metrics_exporter::collectors::tegrastats::LineMapper;
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

    // The mapping to metric ids, with one mapper and its output buffer reused as
    // the collector and `parse` do (the first round learns the corpus's ids).
    let mut mapper = LineMapper::new();
    let mut out = Vec::with_capacity(256);
    for line in lines {
        out.clear();
        mapper.map(line, &mut out);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..ROUNDS {
        for line in lines {
            out.clear();
            mapper.map(black_box(line), &mut out);
        }
    }
    let map = ALLOCATIONS.load(Ordering::Relaxed) - before;
    // The same plus the `parse` command's JSON, into a reused buffer.
    let mut json = Vec::with_capacity(64 * 1024);
    let mut numbers = ryu::Buffer::new();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..ROUNDS {
        for line in lines {
            out.clear();
            json.clear();
            mapper.map(black_box(line), &mut out);
            write_object(&mapper, &out, &mut json, &mut numbers);
        }
    }
    let to_json = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let n = ROUNDS * lines.len() as u64;
    println!(
        "allocations per line over {n} lines: parse_line {:.3}, mapping {:.3}, mapping and JSON {:.3}",
        parse as f64 / n as f64,
        map as f64 / n as f64,
        to_json as f64 / n as f64
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
    group.bench_function("LineMapper::map (corpus, per line)", |b| {
        let mut mapper = LineMapper::new();
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            for line in &lines {
                out.clear();
                mapper.map(black_box(line), &mut out);
            }
            black_box(out.len())
        })
    });
    group.bench_function("map and write JSON (corpus, per line)", |b| {
        let mut mapper = LineMapper::new();
        let mut out = Vec::with_capacity(256);
        let mut json = Vec::with_capacity(64 * 1024);
        let mut numbers = ryu::Buffer::new();
        b.iter(|| {
            json.clear();
            for line in &lines {
                out.clear();
                mapper.map(black_box(line), &mut out);
                write_object(&mapper, &out, &mut json, &mut numbers);
            }
            black_box(json.len())
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
