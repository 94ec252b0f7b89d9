//! Feeds arbitrary bytes to the tegrastats parser, the id mapping and the `parse`
//! command's JSON (seeds: `fuzz/seeds/tegrastats_line/`, the corpus). How to run
//! every target: `fuzz/run.sh`.
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
    // The JSON is one valid object, each id once, whose numbers read back exactly
    // (read with `str::parse`: serde_json's float reading is not exact).
    let mut json = Vec::new();
    write_object(&mapper, &out, &mut json, &mut ryu::Buffer::new());
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).expect("valid JSON object");
    assert_eq!(parsed.len(), out.len());
    let text = std::str::from_utf8(&json).expect("utf-8");
    let inner = &text[1..text.len() - 1];
    let pairs: Vec<&str> = inner.split(',').filter(|p| !p.is_empty()).collect();
    assert_eq!(pairs.len(), out.len());
    for (pair, m) in pairs.iter().zip(&out) {
        let (id, number) = pair.split_once(':').expect("id:number");
        assert_eq!(id.trim_matches('"'), &*mapper.series(m).id);
        assert_eq!(number.parse::<f64>().ok(), Some(m.value), "{pair}");
    }
});
