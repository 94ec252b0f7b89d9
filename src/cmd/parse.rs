//! `parse [FILE]`: tegrastats lines (a `tegrastats --logfile` log, or standard
//! input) to JSON, one object per input line, mapping every flat metric id found in
//! the line to its number, in line order. A line with nothing recognisable gives
//! `{}` and a warning on stderr; only an input that cannot be opened or read fails
//! (exit 1).
//!
//! Built for logs of millions of lines: one [`LineMapper`] for the whole input (so
//! ids are built once), the JSON written straight into an output buffer, numbers
//! formatted without going through `fmt`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::collectors::tegrastats::{LineMapper, Mapped};

/// Bytes gathered before they are written to standard output.
const FLUSH_AT: usize = 64 * 1024;

/// Runs the command on `file` (standard input when `None` or `-`).
pub fn run(file: Option<&Path>) -> ExitCode {
    let input: Box<dyn Read> = match file {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", p.display());
                return ExitCode::from(1);
            }
        },
    };
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let mut reader = BufReader::with_capacity(FLUSH_AT, input);
    let mut mapper = LineMapper::new();
    let (mut raw, mut mapped) = (Vec::new(), Vec::new());
    let mut json = Vec::with_capacity(FLUSH_AT * 2);
    let mut numbers = ryu::Buffer::new();
    for number in 1.. {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading input: {e}");
                return ExitCode::from(1);
            }
        }
        // Garbage bytes are not fatal: they become U+FFFD and are skipped as
        // unknown tokens.
        let line = match std::str::from_utf8(&raw) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&raw),
        };
        mapped.clear();
        mapper.map(line.trim_end_matches(['\n', '\r']), &mut mapped);
        if mapped.is_empty() {
            eprintln!("warning: line {number}: no tegrastats fields recognised");
        }
        write_object(&mapper, &mapped, &mut json, &mut numbers);
        json.push(b'\n');
        if json.len() >= FLUSH_AT {
            if stdout.write_all(&json).is_err() {
                // Broken pipe (`| head`): stop quietly.
                return ExitCode::SUCCESS;
            }
            json.clear();
        }
    }
    let _ = stdout.write_all(&json).and_then(|()| stdout.flush());
    ExitCode::SUCCESS
}

/// Appends the JSON object of one mapped line: `{"id":value,...}`, `{}` when
/// nothing was recognised.
pub fn write_object(
    mapper: &LineMapper,
    mapped: &[Mapped],
    out: &mut Vec<u8>,
    numbers: &mut ryu::Buffer,
) {
    out.push(b'{');
    for (i, m) in mapped.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Ids are `[a-z0-9_]` (sanitized), so they need no JSON escaping.
        out.push(b'"');
        out.extend_from_slice(mapper.series(m).id.as_bytes());
        out.extend_from_slice(b"\":");
        write_number(out, m.value, numbers);
    }
    out.push(b'}');
}

/// Writes a finite `v` exactly as `f64`'s `Display` does (the shortest text that
/// reads back to `v`, never an exponent): `2690`, `5.079`, `-0`.
///
/// Through ryu's shortest digits: with 15 significant digits or fewer the shortest
/// text is unique (two such decimals are further apart than a double's rounding
/// interval is wide), so they are `Display`'s digits; with 16 or 17, two candidates
/// can be equally near, the two algorithms may pick differently, and `Display`
/// writes it.
pub fn write_number(out: &mut Vec<u8>, v: f64, numbers: &mut ryu::Buffer) {
    // Most tegrastats values are whole numbers (MB, MHz, %) or have a few
    // decimals (mW / 1000, °C): the fewest decimals that read back to `v`.
    if !(v == 0.0 && v.is_sign_negative()) && v.abs() < 1e9 {
        for (places, scale) in [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6].into_iter().enumerate() {
            let n = (v * scale).round();
            if n / scale == v {
                write_decimal(out, n as i64, places);
                return;
            }
        }
    }
    let text = numbers.format_finite(v);
    let significant = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|d| *d == b'0')
        .count();
    if text.contains('e') || significant > 15 {
        // Outside ryu's plain range (below 1e-5 or from 1e16), or a long fraction
        // such as a computed percentage.
        let _ = write!(out, "{v}");
        return;
    }
    out.extend_from_slice(text.strip_suffix(".0").unwrap_or(text).as_bytes());
}

/// Writes `n / 10^places` in decimal: `5079, 3` is `5.079`, `-5, 2` is `-0.05`.
/// `n` is the exact integer a value was scaled to, so its text is that value's
/// shortest: with at most 15 significant digits, no other decimal as short reads
/// back to the same double.
fn write_decimal(out: &mut Vec<u8>, n: i64, places: usize) {
    let mut digits = [b'0'; 24];
    let mut i = digits.len();
    let mut rest = n.unsigned_abs();
    while rest > 0 {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    // At least one digit before the point.
    let len = (digits.len() - i).max(places + 1);
    let digits = &digits[digits.len() - len..];
    if n < 0 {
        out.push(b'-');
    }
    let (whole, fraction) = digits.split_at(len - places);
    out.extend_from_slice(whole);
    if places > 0 {
        out.push(b'.');
        out.extend_from_slice(fraction);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(line: &str) -> String {
        let mut mapper = LineMapper::new();
        let mut mapped = Vec::new();
        mapper.map(line, &mut mapped);
        let mut out = Vec::new();
        write_object(&mapper, &mapped, &mut out, &mut ryu::Buffer::new());
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn json_lines() {
        assert_eq!(
            json("RAM 1/4MB (lfb 1x1MB) tj@41.5C"),
            r#"{"jetson_ram_used_mb":1,"jetson_ram_total_mb":4,"jetson_ram_used_percent":25,"jetson_lfb_blocks":1,"jetson_lfb_block_size_mb":1,"jetson_lfb_total_mb":1,"jetson_temp_tj_celsius":41.5}"#
        );
        assert_eq!(json(""), "{}");
    }

    /// Numbers as `Display` writes them, over every magnitude and the values
    /// tegrastats lines give (mW / 1000, percentages of MB).
    #[test]
    fn numbers_as_display_writes_them() {
        let mut numbers = ryu::Buffer::new();
        let mut check = |v: f64| {
            let mut out = Vec::new();
            write_number(&mut out, v, &mut numbers);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                format!("{v}"),
                "{v:e}"
            );
        };
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            9.0e15,
            -8.999_999_999_999_999e15,
            1e14,
            5.079,
            2690.0,
            39.5,
            0.1,
            1e-5,
            9.99e-6,
            1e-7,
            1e15,
            1e16,
            1.5e17,
            123456789.125,
            1e300,
            -2.5e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            check(v);
        }
        // A fixed sequence of pseudo-random bit patterns (xorshift), all magnitudes.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                check(v);
            }
        }
        for mw in -20_000..20_000 {
            check(f64::from(mw) / 1000.0);
            check(f64::from(mw) / 1e6);
            check(f64::from(mw) * 100.0 / 7_620.0);
            check(f64::from(mw) * 0.001 + 1e8);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Whatever the line: one JSON object, each id once, each number reading
        /// back to its value.
        #[test]
        fn json_reads_back(line in "[A-Za-z0-9_ %@/\\[\\],.()x-]{0,300}") {
            let mut mapper = LineMapper::new();
            let mut mapped = Vec::new();
            mapper.map(&line, &mut mapped);
            let mut out = Vec::new();
            write_object(&mapper, &mapped, &mut out, &mut ryu::Buffer::new());
            let parsed: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&out).expect("a JSON object");
            proptest::prop_assert_eq!(parsed.len(), mapped.len());
            // Numbers read with `str::parse` (serde_json's float reading is not exact).
            let text = std::str::from_utf8(&out).expect("utf-8");
            let pairs: Vec<&str> =
                text[1..text.len() - 1].split(',').filter(|p| !p.is_empty()).collect();
            proptest::prop_assert_eq!(pairs.len(), mapped.len());
            for (pair, m) in pairs.iter().zip(&mapped) {
                let (id, number) = pair.split_once(':').expect("id:number");
                proptest::prop_assert_eq!(id.trim_matches('"'), &*mapper.series(m).id);
                proptest::prop_assert_eq!(number.parse::<f64>().ok(), Some(m.value));
            }
        }
    }
}
