//! Targeted edits of the user's `config.yaml` text that keep comments, key order
//! and unknown keys.
//!
//! Every edit is applied twice: to the text, through yaml-edit's lossless tree, and
//! to the parsed value, which says what the result must mean. [`apply`] re-parses
//! the edited text and accepts it only if it means exactly that; otherwise it falls
//! back to re-serializing the value (comments lost, reported to the caller) rather
//! than ever writing a file that says something other than intended.

use std::collections::BTreeMap;
use std::str::FromStr;

use yaml_edit::Document;
use yaml_serde::Value;

/// A change the daemon makes to the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Sets `metrics.<id>` for each entry, adding the ids that are missing.
    SetMetrics(BTreeMap<String, bool>),
    /// Replaces the legacy `enabled_metrics:` list by entries under `metrics:`
    /// (`true` for each listed id; an explicit `metrics:` entry wins).
    ConvertLegacyList,
    /// Makes the file say exactly this mapping (a config from the config server),
    /// touching only the keys and metric entries that differ.
    Replace(yaml_serde::Mapping),
}

/// The result of editing a text.
#[derive(Debug)]
pub struct Edited {
    pub text: String,
    /// The lossless edit could not be used and the file was re-serialized; its
    /// comments are gone. The caller logs this.
    pub regenerated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the file on disk is not valid YAML: {0}")]
    Unparseable(String),
    #[error("the file on disk is not a mapping of keys to values")]
    NotAMapping,
    #[error("could not write YAML: {0}")]
    Serialize(String),
}

/// Applies `edits` to `text`.
pub fn apply(text: &str, edits: &[Edit]) -> Result<Edited, EditError> {
    let mut expected: Value =
        yaml_serde::from_str(text).map_err(|e| EditError::Unparseable(e.to_string()))?;
    if expected.is_null() {
        expected = Value::Mapping(Default::default());
    }
    let Value::Mapping(map) = &mut expected else {
        return Err(EditError::NotAMapping);
    };
    for edit in edits {
        apply_to_value(map, edit);
    }
    let map = map.clone();
    // Switching and adding metrics, the common write, goes straight to the text of
    // the `metrics:` block: linear in the file, however many ids are new.
    if let Some(edited) = set_metrics_in_text(text, edits) {
        let reparsed: Option<Value> = yaml_serde::from_str(&edited).ok();
        if reparsed.as_ref() == Some(&expected) {
            return Ok(Edited {
                text: edited,
                regenerated: false,
            });
        }
    }
    if let Some(edited) = edit_text(text, &map, edits) {
        let reparsed: Option<Value> = yaml_serde::from_str(&edited).ok();
        if reparsed.as_ref() == Some(&expected) {
            return Ok(Edited {
                text: edited,
                regenerated: false,
            });
        }
    }
    let text = yaml_serde::to_string(&expected).map_err(|e| EditError::Serialize(e.to_string()))?;
    Ok(Edited {
        text,
        regenerated: true,
    })
}

fn metrics_key() -> Value {
    Value::String("metrics".into())
}

fn apply_to_value(map: &mut yaml_serde::Mapping, edit: &Edit) {
    match edit {
        Edit::SetMetrics(changes) => {
            let metrics = map
                .entry(metrics_key())
                .or_insert_with(|| Value::Mapping(Default::default()));
            if !metrics.is_mapping() {
                *metrics = Value::Mapping(Default::default());
            }
            if let Value::Mapping(m) = metrics {
                for (id, on) in changes {
                    m.insert(Value::String(id.clone()), Value::Bool(*on));
                }
            }
        }
        Edit::Replace(new) => *map = new.clone(),
        Edit::ConvertLegacyList => {
            let listed = map.remove("enabled_metrics");
            let metrics = map
                .entry(metrics_key())
                .or_insert_with(|| Value::Mapping(Default::default()));
            if !metrics.is_mapping() {
                *metrics = Value::Mapping(Default::default());
            }
            if let (Some(Value::Sequence(ids)), Value::Mapping(m)) = (listed, metrics) {
                for id in ids {
                    if !m.contains_key(&id) {
                        m.insert(id, Value::Bool(true));
                    }
                }
            }
        }
    }
}

/// `SetMetrics` edits made on the text of a block `metrics:` mapping whose entries
/// are one `id: true|false` per line: values changed in place (comments kept), new
/// ids appended after the last entry, in one pass. `None` for anything else (other
/// edits, no block, entries of another shape), which the general edit then takes.
fn set_metrics_in_text(text: &str, edits: &[Edit]) -> Option<String> {
    let mut changes: BTreeMap<&str, bool> = BTreeMap::new();
    for edit in edits {
        let Edit::SetMetrics(set) = edit else {
            return None;
        };
        changes.extend(set.iter().map(|(id, on)| (id.as_str(), *on)));
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let top_level = |line: &str| {
        let trimmed = line.trim_end();
        !trimmed.is_empty() && !line.starts_with([' ', '\t']) && !trimmed.starts_with('#')
    };
    let start = lines.iter().position(|line| {
        line.strip_prefix("metrics:").is_some_and(|rest| {
            let rest = rest.trim();
            rest.is_empty() || rest.starts_with('#')
        })
    })?;
    let end = lines[start + 1..]
        .iter()
        .position(|line| top_level(line))
        .map_or(lines.len(), |i| start + 1 + i);
    // Each entry: its line, and where its value is in that line.
    let mut entries: std::collections::HashMap<&str, (usize, usize, usize)> =
        std::collections::HashMap::new();
    let mut indent: Option<&str> = None;
    let mut last_entry = None;
    for (i, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        let body = line.trim_start_matches([' ', '\t']);
        if body.trim().is_empty() || body.starts_with('#') {
            continue;
        }
        let this_indent = &line[..line.len() - body.len()];
        if *indent.get_or_insert(this_indent) != this_indent {
            return None;
        }
        let (key, rest) = body.split_once(':')?;
        let key = key.trim().trim_matches(['"', '\'']);
        let value_at = line.len() - rest.len();
        let value = rest.trim_start();
        let value_start = line.len() - value.len();
        let value_len = value
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(value.len());
        if value_at == value_start || !matches!(&value[..value_len], "true" | "false") {
            return None;
        }
        entries.insert(key, (i, value_start, value_start + value_len));
        last_entry = Some(i);
    }
    let indent = indent?;
    let last_entry = last_entry?;
    let mut replaced: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    let mut added = String::new();
    for (id, on) in &changes {
        match entries.get(id) {
            Some(&(line, from, to)) => {
                let old = replaced.get(&line).map_or(lines[line], String::as_str);
                let new = format!("{}{on}{}", &old[..from], &old[to..]);
                replaced.insert(line, new);
            }
            None => added.push_str(&format!("{indent}{id}: {on}\n")),
        }
    }
    let mut out = String::with_capacity(text.len() + added.len());
    for (i, line) in lines.iter().enumerate() {
        out.push_str(replaced.get(&i).map_or(line, String::as_str));
        if i == last_entry && !added.is_empty() {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&added);
        }
    }
    Some(out)
}

/// The lossless edit. `None` when yaml-edit cannot take this text.
fn edit_text(text: &str, expected: &yaml_serde::Mapping, edits: &[Edit]) -> Option<String> {
    let doc = Document::from_str(text).ok()?;
    let root = doc.as_mapping()?;
    for edit in edits {
        if let Edit::Replace(new) = edit {
            replace_text(&root, text, new)?;
            continue;
        }
        let changes: Vec<(String, bool)> = match edit {
            Edit::SetMetrics(changes) => changes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Edit::Replace(_) => continue,
            Edit::ConvertLegacyList => {
                root.remove("enabled_metrics");
                // Everything the converted map holds goes in; entries that exist
                // already are rewritten to the same value, which changes nothing.
                metric_entries(expected)
            }
        };
        // A flow mapping (`metrics: {}` in the template) is rewritten as a block, so
        // hundreds of ids do not end up on one line.
        match root.get_mapping("metrics").filter(|m| !m.is_flow_style()) {
            Some(metrics) => {
                for (id, on) in &changes {
                    metrics.set(id.as_str(), *on);
                }
            }
            None => {
                // No block mapping yet (`metrics:` absent, null or flow): write the
                // whole block, as the value says it must end up.
                let all = metric_entries(expected);
                if all.is_empty() {
                    continue;
                }
                let block: String = all.iter().map(|(id, on)| format!("{id}: {on}\n")).collect();
                let fresh = Document::from_str(&block).ok()?;
                root.set("metrics", fresh.as_mapping()?);
            }
        }
    }
    Some(doc.to_string())
}

/// Sets the top-level keys whose values differ from the file's, entry by entry
/// inside a block `metrics:` mapping, and removes the keys `new` lacks.
fn replace_text(root: &yaml_edit::Mapping, text: &str, new: &yaml_serde::Mapping) -> Option<()> {
    let old: Value = yaml_serde::from_str(text).ok()?;
    let empty = yaml_serde::Mapping::new();
    let old = old.as_mapping().unwrap_or(&empty);
    for (key, value) in new {
        let name = key.as_str()?;
        let before = old.get(key);
        if before == Some(value) {
            continue;
        }
        let block = root.get_mapping(name).filter(|m| !m.is_flow_style());
        match (name, before, value, block) {
            ("metrics", Some(Value::Mapping(before)), Value::Mapping(after), Some(metrics)) => {
                for (id, on) in after {
                    if before.get(id) != Some(on) {
                        metrics.set(id.as_str()?, on.as_bool()?);
                    }
                }
                for id in before.keys() {
                    if !after.contains_key(id) {
                        metrics.remove(id.as_str()?);
                    }
                }
            }
            _ => set_value(root, name, value)?,
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            root.remove(key.as_str()?);
        }
    }
    Some(())
}

/// Sets `key` to any YAML value; `None` for values this cannot write losslessly.
fn set_value(root: &yaml_edit::Mapping, key: &str, value: &Value) -> Option<()> {
    match value {
        Value::Bool(b) => root.set(key, *b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => root.set(key, i),
            (None, Some(f)) => root.set(key, f),
            _ => return None,
        },
        Value::String(s) => root.set(key, s.as_str()),
        Value::Mapping(_) | Value::Sequence(_) => {
            let fresh = Document::from_str(&yaml_serde::to_string(value).ok()?).ok()?;
            match value {
                Value::Mapping(_) => root.set(key, fresh.as_mapping()?),
                _ => root.set(key, fresh.as_sequence()?),
            }
        }
        Value::Null | Value::Tagged(_) => return None,
    }
    Some(())
}

fn metric_entries(map: &yaml_serde::Mapping) -> Vec<(String, bool)> {
    match map.get("metrics") {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_bool()?)))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, bool)]) -> Edit {
        Edit::SetMetrics(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn keeps_comments_and_order() {
        let text = "# top\ndevice_type: linux  # dt\n\n# metrics below\nmetrics:\n  # cpu\n  a_x: true\n  b_x: false  # keep\nextra_key: [1, 2]\n";
        let out = apply(text, &[set(&[("b_x", true), ("c_x", false)])]).expect("edit");
        assert!(!out.regenerated);
        assert_eq!(
            out.text,
            "# top\ndevice_type: linux  # dt\n\n# metrics below\nmetrics:\n  # cpu\n  a_x: true\n  b_x: true  # keep\n  c_x: false\nextra_key: [1, 2]\n"
        );
    }

    #[test]
    fn metrics_edited_as_text_in_one_pass() {
        let text = "# top\nmetrics:  # ids\n  # cpu\n  a_x: true   # keep\n  'b_x': false\n\n# next\nport: 9\n";
        let out = apply(
            text,
            &[set(&[("b_x", true), ("a_x", false), ("c_x", true)])],
        )
        .expect("edit");
        assert!(!out.regenerated);
        assert_eq!(
            out.text,
            "# top\nmetrics:  # ids\n  # cpu\n  a_x: false   # keep\n  'b_x': true\n  c_x: true\n\n# next\nport: 9\n"
        );
        // That was the one-pass edit, not the general one.
        assert!(set_metrics_in_text(text, &[set(&[("c_x", true)])]).is_some());
        // The last key of the file, without a final newline.
        let out = apply("metrics:\n  a_x: true", &[set(&[("z_z", false)])]).expect("edit");
        assert_eq!(out.text, "metrics:\n  a_x: true\n  z_z: false\n");
        // Shapes it does not take go to the general edit.
        for other in [
            "metrics: {a_x: true}\n",
            "metrics:\n  a_x: yes\n",
            "metrics:\n  a_x: true\n   b_x: false\n",
            "port: 9\n",
        ] {
            assert!(
                set_metrics_in_text(other, &[set(&[("c_x", true)])]).is_none(),
                "{other}"
            );
        }
        assert!(
            set_metrics_in_text("metrics:\n  a_x: true\n", &[Edit::ConvertLegacyList]).is_none()
        );
    }

    #[test]
    fn creates_the_block_from_nothing_null_or_flow() {
        for text in [
            "device_type: linux\n",
            "device_type: linux\nmetrics:\nport: 9\n",
            "device_type: linux\nmetrics: {}\nport: 9\n",
            "device_type: linux\nmetrics: ~\n",
            "",
        ] {
            let out = apply(text, &[set(&[("x_y", true)])]).expect("edit");
            let v: Value = yaml_serde::from_str(&out.text).expect("valid");
            assert_eq!(
                v["metrics"]["x_y"],
                Value::Bool(true),
                "from {text:?}: {}",
                out.text
            );
            if !text.is_empty() {
                assert!(out.text.contains("device_type: linux"));
            }
        }
    }

    #[test]
    fn the_template_gets_a_block() {
        let out = apply(
            crate::config::TEMPLATE,
            &[set(&[("b_b", true), ("a_a", false)])],
        )
        .expect("edit");
        assert!(!out.regenerated);
        assert!(
            out.text.ends_with("metrics:\n  a_a: false\n  b_b: true\n"),
            "{}",
            out.text
        );
        assert!(
            out.text
                .starts_with("# edge-metrics-exporter configuration.")
        );
    }

    #[test]
    fn flow_mapping_with_entries() {
        let out = apply("metrics: {a_b: true}\n# end\n", &[set(&[("c_d", false)])]).expect("edit");
        let v: Value = yaml_serde::from_str(&out.text).expect("valid");
        assert_eq!(v["metrics"]["a_b"], Value::Bool(true));
        assert_eq!(v["metrics"]["c_d"], Value::Bool(false));
    }

    #[test]
    fn replace_touches_only_what_differs() {
        let text = "# top\ndevice_type: linux  # dt\ninterval: 1\nold_key: 3\nmetrics:\n  # cpu\n  a_x: true  # keep\n  b_x: false\n  gone_x: true\nshelly:\n  enabled: false\n";
        let new: yaml_serde::Mapping = yaml_serde::from_str(
            "device_type: linux\ninterval: 5\nmetrics:\n  a_x: true\n  b_x: true\n  c_x: false\nshelly:\n  enabled: true\n  server_url: http://hub:8766\nhostname: edge-9\n",
        )
        .expect("yaml");
        let out = apply(text, &[Edit::Replace(new.clone())]).expect("edit");
        assert!(!out.regenerated, "{}", out.text);
        let v: Value = yaml_serde::from_str(&out.text).expect("valid");
        assert_eq!(v, Value::Mapping(new));
        for kept in [
            "# top",
            "device_type: linux  # dt",
            "# cpu",
            "a_x: true  # keep",
        ] {
            assert!(out.text.contains(kept), "{kept}: {}", out.text);
        }
        assert!(!out.text.contains("gone_x") && !out.text.contains("old_key"));
    }

    #[test]
    fn converts_the_legacy_list() {
        let text = "# keep me\ndevice_type: linux\nenabled_metrics:\n  - a_x\n  - b_x\nmetrics:\n  b_x: false\nport: 9102\n";
        let out = apply(text, &[Edit::ConvertLegacyList]).expect("edit");
        assert!(!out.regenerated, "{}", out.text);
        assert!(out.text.starts_with("# keep me\n"));
        assert!(!out.text.contains("enabled_metrics"));
        let v: Value = yaml_serde::from_str(&out.text).expect("valid");
        assert_eq!(v["metrics"]["a_x"], Value::Bool(true));
        assert_eq!(v["metrics"]["b_x"], Value::Bool(false));
        assert_eq!(v["port"], Value::Number(9102.into()));
    }

    #[test]
    fn legacy_list_without_metrics() {
        let out = apply("enabled_metrics: [a_x]\n", &[Edit::ConvertLegacyList]).expect("edit");
        let v: Value = yaml_serde::from_str(&out.text).expect("valid");
        assert_eq!(v["metrics"]["a_x"], Value::Bool(true));
        assert!(v.get("enabled_metrics").is_none());
    }

    #[test]
    fn broken_files_are_refused() {
        assert!(matches!(
            apply("a: [1\n", &[set(&[("x", true)])]),
            Err(EditError::Unparseable(_))
        ));
        assert!(matches!(
            apply("- 1\n", &[set(&[("x", true)])]),
            Err(EditError::NotAMapping)
        ));
    }
}
