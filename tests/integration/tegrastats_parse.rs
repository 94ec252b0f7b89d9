//! `parse` on the whole tegrastats corpus against a reviewed golden file, and its
//! behaviour on bad input.

use crate::support::*;

/// The `line` column of the corpus, one line per record.
fn corpus_lines() -> String {
    let corpus = std::fs::read_to_string(fixtures().join("tegrastats/corpus.tsv")).expect("corpus");
    corpus
        .lines()
        .skip(1)
        .map(|row| row.rsplit('\t').next().unwrap_or(""))
        .fold(String::new(), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        })
}

fn run_parse(args: &[&str], stdin: &str) -> (std::process::ExitStatus, String, String) {
    let mut all = vec!["parse"];
    all.extend_from_slice(args);
    run_with_stdin(std::path::Path::new(BIN), &all, stdin.as_bytes())
}

/// `UPDATE_GOLDEN=1 cargo test` rewrites the golden file; review its diff.
#[test]
fn corpus_matches_the_golden_file() {
    let input = corpus_lines();
    let (status, stdout, stderr) = run_parse(&[], &input);
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr, "", "every corpus line is readable");
    assert_eq!(
        stdout.lines().count(),
        input.lines().count(),
        "one object per line, in order"
    );
    let golden = fixtures().join("tegrastats/corpus.parse.jsonl");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &stdout).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden)
        .expect("golden file (UPDATE_GOLDEN=1 cargo test writes it)");
    for (n, (got, want)) in stdout.lines().zip(want.lines()).enumerate() {
        assert_eq!(got, want, "corpus record {}", n + 1);
    }
    assert_eq!(stdout, want);
    // Every line is JSON mapping ids to numbers.
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert!(
            v.as_object()
                .expect("object")
                .values()
                .all(|x| x.is_number())
        );
    }
}

#[test]
fn unreadable_lines_give_empty_objects_and_a_warning() {
    let input = "RAM 1/4MB (lfb 1x1MB)\n\u{1}\u{2} garbage !!\n\nVDD_IN 5079mW/5079mW\n";
    let (status, stdout, stderr) = run_parse(&["-"], input);
    assert!(status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("{\"jetson_ram_used_mb\":1,"));
    assert_eq!(lines[1], "{}");
    assert_eq!(lines[2], "{}");
    assert_eq!(
        lines[3],
        "{\"jetson_power_vdd_in_watts\":5.079,\"jetson_power_vdd_in_avg_watts\":5.079,\"jetson_power_input_watts\":5.079}"
    );
    assert!(
        stderr.contains("line 2: no tegrastats fields recognised"),
        "{stderr}"
    );
    assert!(stderr.contains("line 3:"), "{stderr}");

    // Invalid UTF-8 and a huge line do not stop it.
    let mut bytes = b"\xff\xfe RAM 2/4MB (lfb 1x1MB)\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'A', 1 << 20));
    bytes.extend(b"\nAPE 150\n");
    let (status, stdout, _) = run_with_stdin(std::path::Path::new(BIN), &["parse"], &bytes);
    assert!(status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].contains("\"jetson_ram_used_mb\":2"));
    assert_eq!(lines[1], "{}");
    assert_eq!(
        lines[2],
        "{\"jetson_ape_status\":1,\"jetson_ape_freq_mhz\":150}"
    );
}

#[test]
fn a_file_argument_and_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("log.txt");
    std::fs::write(&file, "APE 25\n").expect("write");
    let (status, stdout, _) = run_parse(&[file.to_str().expect("utf8")], "");
    assert!(status.success());
    assert_eq!(
        stdout,
        "{\"jetson_ape_status\":1,\"jetson_ape_freq_mhz\":25}\n"
    );
    let (status, stdout, stderr) = run_parse(&["/nonexistent/tegrastats.log"], "");
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("cannot open /nonexistent/tegrastats.log"),
        "{stderr}"
    );
}
