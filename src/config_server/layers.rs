//! How a device's config is made of layers, as pure functions on JSON documents.
//!
//! A device's **effective config** (what `GET /config/{id}` serves) is, in order:
//!
//! 1. its **base**: the file it registered with, plus metric ids it discovered
//!    later (an id nothing listed yet is the device reporting what it has, not a
//!    choice);
//! 2. its **groups**, in precedence order (later wins), each a partial config;
//! 3. its **overrides**: what the device or an admin changed on the device itself,
//!    where that differs from what the layers below give.
//!
//! Layers merge by top-level key; `metrics:` merges entry by entry. A layer's glob
//! pattern (`jetson_gpu_*: false`) takes over the entries of lower layers it covers
//! (exact ids and narrower patterns), so a group's pattern is not undone by ids the
//! device listed one by one. Within one layer, exact ids beat patterns as in a file.
//!
//! Not here: storage (`db`), routes (`api`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::doc;
pub use crate::config::doc::Doc;
use crate::config::{Glob, glob_match, is_metric_pattern};

const METRICS: &str = "metrics";
/// The top-level key of a group's match rules (not a config key).
pub const MATCH: &str = "match";

/// Group names: letters, digits, `.`, `_`, `-`; 1 to 64 characters.
pub fn is_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keys a group may not set: what stays on each machine, the device's type
/// (which groups match on) and its host name label.
pub fn forbidden_in_group(key: &str) -> Option<&'static str> {
    match key {
        "device_type" => return Some("device_type belongs to each device (groups match on it)"),
        "hostname" => return Some("hostname names each device in its samples"),
        _ => {}
    }
    doc::LOCAL_ONLY
        .contains(&key)
        .then_some("this key stays on each device and is never taken from the server")
}

/// Applies one layer on top of `doc`: its keys replace, its `metrics` entries
/// merge (a `null` removes), and each of its patterns first clears the entries
/// below that it covers.
pub fn apply_layer(doc: &mut Doc, layer: &Doc) {
    if let (Some(Value::Object(below)), Some(Value::Object(entries))) =
        (doc.get_mut(METRICS), layer.get(METRICS))
    {
        // A pattern set (not one removed with null) takes over what it covers.
        for pattern in entries
            .iter()
            .filter(|(k, v)| is_metric_pattern(k) && !v.is_null())
            .map(|(k, _)| k)
        {
            // Compiled once, matched in one pass per id (a pattern too long to
            // compile was refused when it was written).
            let Ok(glob) = Glob::new(pattern) else {
                continue;
            };
            below.retain(|id, _| id == pattern || !glob.matches(id));
        }
    }
    doc::apply(doc, layer);
}

/// The effective config: `base`, then each group, then `overrides`.
pub fn effective<'a>(
    base: &Doc,
    groups: impl IntoIterator<Item = &'a Doc>,
    overrides: &Doc,
) -> Doc {
    let mut out = base.clone();
    for group in groups {
        apply_layer(&mut out, group);
    }
    apply_layer(&mut out, overrides);
    out
}

/// Whether two configs say the same: equal, where an empty `metrics:` is no
/// `metrics:`.
pub fn same(a: &Doc, b: &Doc) -> bool {
    let empty = |d: &Doc| {
        d.get(METRICS)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    };
    if empty(a) || empty(b) {
        let strip = |d: &Doc| {
            let mut d = d.clone();
            if empty(&d) {
                d.remove(METRICS);
            }
            d
        };
        strip(a) == strip(b)
    } else {
        a == b
    }
}

/// A device's own layers after a write of `body` over its effective config
/// `current` (`None` when the device registers): the new base and overrides.
///
/// * Registering: the body is the base; the groups then apply on top of it.
/// * Otherwise each changed key is an override, except a metric id that nothing
///   listed yet (discovered on the device), which joins the base. A changed value
///   equal to what the base and groups give is no override (the device follows
///   its groups for it again); overrides the write does not touch stay.
pub fn split_write(
    current: Option<&Doc>,
    base: &Doc,
    groups: &[&Doc],
    overrides: &Doc,
    body: &Doc,
) -> (Doc, Doc) {
    let Some(current) = current else {
        return (body.clone(), Doc::new());
    };
    let change = doc::diff(current, body);
    let mut base = base.clone();
    let mut overrides = overrides.clone();
    let mut added = Doc::new();
    let mut changed = Doc::new();
    for (key, value) in &change {
        match (key.as_str(), value) {
            // The whole `metrics:` gone: each entry it had is removed.
            (METRICS, Value::Null) => {
                if let Some(Value::Object(had)) = current.get(METRICS) {
                    let target = metrics_of(&mut changed);
                    for id in had.keys() {
                        target.insert(id.clone(), Value::Null);
                    }
                }
            }
            (METRICS, Value::Object(entries)) => {
                let listed = current.get(METRICS).and_then(Value::as_object);
                let globs: Vec<Glob> = listed
                    .map(|m| {
                        m.keys()
                            .filter(|p| is_metric_pattern(p))
                            .filter_map(|p| Glob::new(p).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                for (id, on) in entries {
                    let new_id = !on.is_null()
                        && listed.is_none_or(|m| {
                            !m.contains_key(id) && !globs.iter().any(|g| g.matches(id))
                        });
                    let into = if new_id { &mut added } else { &mut changed };
                    metrics_of(into).insert(id.clone(), on.clone());
                }
            }
            _ => {
                changed.insert(key.clone(), value.clone());
            }
        }
    }
    doc::apply(&mut base, &added);
    let below = effective(&base, groups.iter().copied(), &Doc::new());
    // A new id keeps its value only if nothing above the base changes it (a
    // group that lists it, or an override that removed it): else it is an
    // override too.
    if let Some(Value::Object(ids)) = added.get(METRICS) {
        for (id, on) in ids {
            let given = below
                .get(METRICS)
                .and_then(|m| m.get(id))
                .unwrap_or(&Value::Null);
            let target = metrics_of(&mut overrides);
            if given == on {
                target.remove(id);
            } else {
                target.insert(id.clone(), on.clone());
            }
        }
    }
    for (key, value) in changed {
        if key == METRICS {
            let Value::Object(entries) = value else {
                continue;
            };
            for (id, on) in entries {
                let given = below
                    .get(METRICS)
                    .and_then(|m| m.get(&id))
                    .unwrap_or(&Value::Null);
                let target = metrics_of(&mut overrides);
                if *given == on {
                    target.remove(&id);
                } else {
                    target.insert(id, on);
                }
            }
        } else if below.get(&key).unwrap_or(&Value::Null) == &value {
            overrides.remove(&key);
        } else {
            overrides.insert(key, value);
        }
    }
    // An override pattern clears what it covers below it: the ids the device
    // listed under it go with it.
    let patterns: Vec<Glob> = overrides
        .get(METRICS)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, v)| is_metric_pattern(k) && !v.is_null())
                .filter_map(|(k, _)| Glob::new(k).ok())
                .collect()
        })
        .unwrap_or_default();
    if !patterns.is_empty()
        && let Some(Value::Object(written)) = body.get(METRICS)
    {
        for (id, on) in written {
            if patterns.iter().any(|p| p.as_str() != id && p.matches(id)) {
                metrics_of(&mut overrides).insert(id.clone(), on.clone());
            }
        }
    }
    if overrides
        .get(METRICS)
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        overrides.remove(METRICS);
    }
    (base, overrides)
}

fn metrics_of(doc: &mut Doc) -> &mut Map<String, Value> {
    let entry = doc
        .entry(METRICS)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Removes the override `key` (`interval`, or `metrics.<id>` for one metric);
/// whether there was one.
pub fn drop_override(overrides: &mut Doc, key: &str) -> bool {
    if let Some(id) = key.strip_prefix("metrics.") {
        let Some(Value::Object(entries)) = overrides.get_mut(METRICS) else {
            return false;
        };
        let had = entries.remove(id).is_some();
        if entries.is_empty() {
            overrides.remove(METRICS);
        }
        had
    } else {
        overrides.remove(key).is_some()
    }
}

/// The names of a device's overrides: `interval`, `metrics.<id>`.
pub fn override_keys(overrides: &Doc) -> Vec<String> {
    let mut keys = Vec::new();
    for (key, value) in overrides {
        match (key.as_str(), value) {
            (METRICS, Value::Object(entries)) => {
                keys.extend(entries.keys().map(|id| format!("metrics.{id}")));
            }
            _ => keys.push(key.clone()),
        }
    }
    keys
}

/// A group's match rules: every rule given must match (glob patterns).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rules {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Matched against the device id (the device's host name unless `DEVICE_ID`
    /// says otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl Rules {
    /// Reads a group's `match` object.
    pub fn parse(value: &Value) -> Result<Rules, String> {
        let Value::Object(rules) = value else {
            return Err("match must be an object such as {\"device_type\": \"jetson_*\"}".into());
        };
        let mut out = Rules::default();
        for (key, pattern) in rules {
            let max = crate::config::glob::MAX_PATTERN;
            let Some(pattern) = pattern.as_str().filter(|p| (1..=max).contains(&p.len())) else {
                return Err(format!(
                    "match.{key} must be a glob pattern of 1 to {max} characters"
                ));
            };
            match key.as_str() {
                "device_type" => out.device_type = Some(pattern.to_owned()),
                "hostname" => out.hostname = Some(pattern.to_owned()),
                other => {
                    return Err(format!(
                        "unknown match rule {other:?}: use device_type and/or hostname"
                    ));
                }
            }
        }
        if out.device_type.is_none() && out.hostname.is_none() {
            return Err("match needs device_type and/or hostname".into());
        }
        Ok(out)
    }

    pub fn matches(&self, device_id: &str, device_type: Option<&str>) -> bool {
        self.device_type
            .as_deref()
            .is_none_or(|p| device_type.is_some_and(|t| glob_match(p, t)))
            && self
                .hostname
                .as_deref()
                .is_none_or(|p| glob_match(p, device_id))
    }
}

/// One group as the server holds it.
#[derive(Debug, Clone)]
pub struct Group {
    pub revision: u64,
    /// The partial config (without `match`).
    pub config: Doc,
    pub rules: Option<Rules>,
    pub updated_at: f64,
}

impl Group {
    /// The group as its API shows it: the partial config with `match`.
    pub fn document(&self) -> Doc {
        let mut out = self.config.clone();
        if let Some(rules) = &self.rules {
            out.insert(
                MATCH.to_owned(),
                serde_json::to_value(rules).unwrap_or(Value::Null),
            );
        }
        out
    }
}

/// A device's groups in precedence order (later wins): those its match rules
/// add, by name, then those it was assigned, in the order given.
pub fn resolve(
    assigned: &[String],
    device_id: &str,
    device_type: Option<&str>,
    groups: &BTreeMap<String, Arc<Group>>,
) -> Vec<String> {
    let mut out: Vec<String> = groups
        .iter()
        .filter(|(name, g)| {
            !assigned.contains(name)
                && g.rules
                    .as_ref()
                    .is_some_and(|r| r.matches(device_id, device_type))
        })
        .map(|(name, _)| name.clone())
        .collect();
    out.extend(
        assigned
            .iter()
            .filter(|name| groups.contains_key(*name))
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(v: Value) -> Doc {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn later_layers_win_and_patterns_cover_what_is_below() {
        let base =
            d(json!({"interval": 15, "metrics": {"gpu_a": true, "gpu_b": true, "cpu": true}}));
        let jetsons = d(json!({"metrics": {"gpu_*": false}, "interval": 30}));
        let lab = d(json!({"interval": 5}));
        let overrides = d(json!({"metrics": {"gpu_b": true}}));
        let eff = effective(&base, [&jetsons, &lab], &overrides);
        assert_eq!(
            Value::Object(eff),
            json!({"interval": 5, "metrics": {"cpu": true, "gpu_*": false, "gpu_b": true}})
        );
    }

    #[test]
    fn registration_is_the_base_and_groups_win_over_it() {
        let body = d(json!({"interval": 15, "metrics": {"gpu": true}}));
        let group = d(json!({"metrics": {"gpu": false}}));
        let (base, overrides) = split_write(None, &Doc::new(), &[&group], &Doc::new(), &body);
        assert_eq!(base, body);
        assert!(overrides.is_empty());
        let eff = effective(&base, [&group], &overrides);
        assert_eq!(eff["metrics"]["gpu"], false);
    }

    #[test]
    fn a_device_change_is_an_override_that_outlives_group_changes() {
        let base = d(json!({"interval": 15, "metrics": {"gpu": true, "cpu": true}}));
        let group = d(json!({"metrics": {"gpu": false}}));
        let current = effective(&base, [&group], &Doc::new());
        // The device switches gpu back on and discovers a new id.
        let mut body = current.clone();
        body["metrics"]["gpu"] = json!(true);
        body["metrics"]["fan"] = json!(true);
        let (base2, overrides) = split_write(Some(&current), &base, &[&group], &Doc::new(), &body);
        assert_eq!(
            Value::Object(overrides.clone()),
            json!({"metrics": {"gpu": true}})
        );
        assert_eq!(
            base2["metrics"]["fan"], true,
            "a discovered id joins the base"
        );
        assert_eq!(effective(&base2, [&group], &overrides), body);
        // The group changes another key: the override stays.
        let group2 = d(json!({"metrics": {"gpu": false}, "interval": 60}));
        let eff = effective(&base2, [&group2], &overrides);
        assert_eq!(eff["metrics"]["gpu"], true);
        assert_eq!(eff["interval"], 60);
        // Dropped: the group's value is back.
        let mut overrides = overrides;
        assert!(drop_override(&mut overrides, "metrics.gpu"));
        assert!(!drop_override(&mut overrides, "metrics.gpu"));
        assert!(overrides.is_empty());
        assert_eq!(
            effective(&base2, [&group2], &overrides)["metrics"]["gpu"],
            false
        );
    }

    #[test]
    fn setting_a_key_back_to_the_group_value_follows_the_group_again() {
        let base = d(json!({"interval": 15}));
        let group = d(json!({"interval": 30}));
        let overrides = d(json!({"interval": 10, "scrape_timeout": 3}));
        let current = effective(&base, [&group], &overrides);
        let mut body = current.clone();
        body["interval"] = json!(30);
        let (_, overrides) = split_write(Some(&current), &base, &[&group], &overrides, &body);
        assert_eq!(Value::Object(overrides), json!({"scrape_timeout": 3}));
        // Removing a key the group sets is an override too (a null).
        let current = effective(&base, [&group], &Doc::new());
        let mut body = current.clone();
        body.remove("interval");
        let (base2, overrides) = split_write(Some(&current), &base, &[&group], &Doc::new(), &body);
        assert_eq!(Value::Object(overrides.clone()), json!({"interval": null}));
        assert_eq!(effective(&base2, [&group], &overrides), body);
    }

    #[test]
    fn writes_that_replace_the_metrics_each_time_store_what_was_written() {
        let (mut base, mut overrides) = (Doc::new(), Doc::new());
        let mut current = Doc::new();
        for id in ["w3_x", "w5_x", "w1_x", "w3_x", "w5_x"] {
            let body = d(json!({"metrics": {id: true}}));
            (base, overrides) = split_write(Some(&current), &base, &[], &overrides, &body);
            current = effective(&base, [], &overrides);
            assert_eq!(current, body, "after writing {id}");
        }
    }

    /// A document from bits: which of a few keys and metric entries (ids and a
    /// pattern) it has, and their values.
    fn doc_from(bits: u32) -> Doc {
        let mut doc = Doc::new();
        if bits & 1 != 0 {
            doc.insert("interval".into(), json!(1 + (bits >> 1 & 3)));
        }
        if bits & 8 != 0 {
            doc.insert("metric_style".into(), json!("labeled"));
        }
        if bits & 16 != 0 {
            let mut metrics = Map::new();
            for (k, id) in ["a", "b", "g_1", "g_2", "g_*"].iter().enumerate() {
                if bits >> (5 + 2 * k) & 1 != 0 {
                    metrics.insert((*id).into(), json!(bits >> (6 + 2 * k) & 1 != 0));
                }
            }
            doc.insert(METRICS.into(), Value::Object(metrics));
        }
        doc
    }

    proptest::proptest! {
        /// Whatever a device had and whatever its groups say, after a write it
        /// gets exactly what it wrote, and again after a second write.
        #[test]
        fn a_write_is_what_the_device_then_gets(
            base in 0u32..1 << 15,
            group_a in 0u32..1 << 15,
            group_b in 0u32..1 << 15,
            first in 0u32..1 << 15,
            second in 0u32..1 << 15,
        ) {
            let groups = [doc_from(group_a), doc_from(group_b)];
            let groups: Vec<&Doc> = groups.iter().collect();
            let (mut base, mut overrides) = (doc_from(base), Doc::new());
            for body in [doc_from(first), doc_from(second)] {
                let current = effective(&base, groups.iter().copied(), &overrides);
                (base, overrides) = split_write(Some(&current), &base, &groups, &overrides, &body);
                let now = effective(&base, groups.iter().copied(), &overrides);
                proptest::prop_assert!(same(&now, &body), "got {:?} for {:?}: base {:?} overrides {:?}", now, body, base, overrides);
            }
        }
    }

    #[test]
    fn an_id_under_a_pattern_is_an_override() {
        let base = d(json!({"metrics": {"cpu": true}}));
        let group = d(json!({"metrics": {"gpu_*": false}}));
        let current = effective(&base, [&group], &Doc::new());
        let mut body = current.clone();
        body["metrics"]["gpu_freq"] = json!(true);
        let (base2, overrides) = split_write(Some(&current), &base, &[&group], &Doc::new(), &body);
        assert_eq!(
            Value::Object(overrides.clone()),
            json!({"metrics": {"gpu_freq": true}})
        );
        assert_eq!(effective(&base2, [&group], &overrides), body);
    }

    #[test]
    fn rules_and_precedence() {
        assert!(Rules::parse(&json!({})).is_err());
        assert!(Rules::parse(&json!({"os": "x"})).is_err());
        assert!(Rules::parse(&json!({"hostname": 3})).is_err());
        let rules =
            Rules::parse(&json!({"device_type": "jetson_*", "hostname": "lab-*"})).expect("rules");
        assert!(rules.matches("lab-01", Some("jetson_orin")));
        assert!(!rules.matches("prod-01", Some("jetson_orin")));
        assert!(!rules.matches("lab-01", Some("raspberry_pi")));
        assert!(!rules.matches("lab-01", None));
        let group = |rules: Option<Rules>| {
            Arc::new(Group {
                revision: 1,
                config: Doc::new(),
                rules,
                updated_at: 0.0,
            })
        };
        let mut groups = BTreeMap::new();
        groups.insert("b-auto".to_owned(), group(Some(rules.clone())));
        groups.insert("a-auto".to_owned(), group(Some(rules)));
        groups.insert("pinned".to_owned(), group(None));
        groups.insert("other".to_owned(), group(None));
        let assigned = ["pinned".to_owned(), "a-auto".to_owned(), "gone".to_owned()];
        assert_eq!(
            resolve(&assigned, "lab-01", Some("jetson_orin"), &groups),
            ["b-auto", "pinned", "a-auto"]
        );
        assert!(is_group_name("jetsons-lab_2"));
        assert!(!is_group_name("a/b"));
        assert!(!is_group_name(""));
        assert!(forbidden_in_group("path").is_some());
        assert!(forbidden_in_group("device_type").is_some());
        assert!(forbidden_in_group("interval").is_none());
    }
}
