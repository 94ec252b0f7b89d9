//! Feeds arbitrary bytes to the tegrastats parser and id mapping. Run with
//! `cargo +nightly fuzz run tegrastats_line` (seeds: `fuzz/seeds/`, the corpus).
#![no_main]

use edge_metrics_exporter::collectors::tegrastats::map_line;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    let stats = map_line(&line, &mut out);
    // Output is bounded by the input.
    assert!((stats.fields + stats.unknown) as usize <= line.split_ascii_whitespace().count());
    assert!(out.len() <= 8 * line.len() + 2);
    for m in &out {
        assert!(m.value.is_finite());
    }
});
