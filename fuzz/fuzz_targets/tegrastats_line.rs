//! Feeds arbitrary bytes to the tegrastats parser, the id mapping and the `parse`
//! command's JSON. Run with `cargo +nightly fuzz run tegrastats_line` (seeds:
//! `fuzz/seeds/`, the corpus).
#![no_main]

use edge_metrics_exporter::cmd::parse::write_object;
use edge_metrics_exporter::collectors::tegrastats::LineMapper;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let mut mapper = LineMapper::new();
    let mut out = Vec::new();
    let stats = mapper.map(&line, &mut out);
    // Output is bounded by the input.
    assert!((stats.fields + stats.unknown) as usize <= line.split_ascii_whitespace().count());
    assert!(out.len() <= 8 * line.len() + 2);
    for m in &out {
        assert!(m.value.is_finite());
    }
    // The JSON is one object whose numbers read back to the values.
    let mut json = Vec::new();
    write_object(&mapper, &out, &mut json, &mut ryu::Buffer::new());
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).expect("valid JSON object");
    assert_eq!(parsed.len(), out.len());
    for m in &out {
        let id = &mapper.series(m).id;
        assert_eq!(parsed[&**id].as_f64(), Some(m.value), "{id}");
    }
});
