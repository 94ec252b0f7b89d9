//! Config documents as the config server holds them (JSON objects) and the changes
//! between them, as pure functions.
//!
//! A [`Patch`] is a JSON object of top-level keys to their new values; `null`
//! removes a key. `metrics` is merged entry by entry (a `null` entry removes the
//! id), so two patches that switch different metrics do not overwrite each other.
//! Keys in [`LOCAL_ONLY`] belong to the machine (its tokens, its filesystem roots)
//! and never leave it nor get replaced by the server's.

use serde_json::{Map, Value};

pub type Doc = Map<String, Value>;
pub type Patch = Map<String, Value>;

/// Top-level keys that stay on the device.
pub const LOCAL_ONLY: &[&str] = &[
    "metrics_token",
    "api_token",
    "metrics_basic_auth",
    "api_basic_auth",
    "tls",
    "path",
    "remote_write",
];
/// Keys of the `shelly:` section that stay on the device.
pub const LOCAL_ONLY_SHELLY: &[&str] = &["secret"];

const METRICS: &str = "metrics";

/// The part of a local document the server may see.
pub fn shareable(doc: &Doc) -> Doc {
    let mut out = doc.clone();
    for key in LOCAL_ONLY {
        out.remove(*key);
    }
    if let Some(Value::Object(shelly)) = out.get_mut("shelly") {
        for key in LOCAL_ONLY_SHELLY {
            shelly.remove(*key);
        }
    }
    out
}

/// A server document made local: the server's keys with this machine's own.
pub fn with_local(server: &Doc, local: &Doc) -> Doc {
    let mut out = shareable(server);
    for key in LOCAL_ONLY {
        if let Some(v) = local.get(*key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    if let (Some(Value::Object(shelly)), Some(Value::Object(local_shelly))) =
        (out.get_mut("shelly"), local.get("shelly"))
    {
        for key in LOCAL_ONLY_SHELLY {
            if let Some(v) = local_shelly.get(*key) {
                shelly.insert((*key).to_owned(), v.clone());
            }
        }
    }
    out
}

/// Applies `patch` to `doc`.
pub fn apply(doc: &mut Doc, patch: &Patch) {
    for (key, value) in patch {
        match (key.as_str(), value) {
            (_, Value::Null) => {
                doc.remove(key);
            }
            (METRICS, Value::Object(entries)) => {
                let metrics = doc
                    .entry(METRICS)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !metrics.is_object() {
                    *metrics = Value::Object(Map::new());
                }
                if let Value::Object(m) = metrics {
                    for (id, on) in entries {
                        if on.is_null() {
                            m.remove(id);
                        } else {
                            m.insert(id.clone(), on.clone());
                        }
                    }
                }
            }
            _ => {
                doc.insert(key.clone(), value.clone());
            }
        }
    }
}

/// `doc` with `patch` applied.
pub fn applied(doc: &Doc, patch: &Patch) -> Doc {
    let mut out = doc.clone();
    apply(&mut out, patch);
    out
}

/// Folds `later` into `patch`: applying the result is applying both in turn.
pub fn merge(patch: &mut Patch, later: &Patch) {
    for (key, value) in later {
        match (patch.get_mut(key), value) {
            (Some(Value::Object(entries)), Value::Object(more)) if key == METRICS => {
                for (id, on) in more {
                    entries.insert(id.clone(), on.clone());
                }
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The patch that turns `from` into `to` (empty when they are equal).
pub fn diff(from: &Doc, to: &Doc) -> Patch {
    let mut patch = Patch::new();
    for (key, new) in to {
        let old = from.get(key);
        if old == Some(new) {
            continue;
        }
        match (key.as_str(), old, new) {
            (METRICS, Some(Value::Object(old)), Value::Object(new)) => {
                let mut entries = Map::new();
                for (id, on) in new {
                    if old.get(id) != Some(on) {
                        entries.insert(id.clone(), on.clone());
                    }
                }
                for id in old.keys() {
                    if !new.contains_key(id) {
                        entries.insert(id.clone(), Value::Null);
                    }
                }
                patch.insert(key.clone(), Value::Object(entries));
            }
            _ => {
                patch.insert(key.clone(), new.clone());
            }
        }
    }
    for key in from.keys() {
        if !to.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    patch
}

/// A local change the server had also changed, differently: the server's value was
/// kept and the local one is recorded here.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// `interval`, or `metrics.<id>` for a metric.
    pub key: String,
    pub local: Value,
    pub server: Value,
}

/// Rebases a local `patch` made against `base` onto `server`: where the server
/// changed a key since `base` and the patch sets it to something else, the server
/// wins and the local value is returned as a [`Conflict`]; the rest of the patch
/// stays.
pub fn rebase(patch: &Patch, base: &Doc, server: &Doc) -> (Patch, Vec<Conflict>) {
    let mut kept = Patch::new();
    let mut conflicts = Vec::new();
    for (key, value) in patch {
        match (key.as_str(), value) {
            (METRICS, Value::Object(entries)) => {
                let entry = |doc: &Doc, id: &str| {
                    doc.get(METRICS)
                        .and_then(|m| m.get(id))
                        .cloned()
                        .unwrap_or(Value::Null)
                };
                let mut kept_entries = Map::new();
                for (id, on) in entries {
                    let (was, now) = (entry(base, id), entry(server, id));
                    if was != now && *on != now {
                        conflicts.push(Conflict {
                            key: format!("metrics.{id}"),
                            local: on.clone(),
                            server: now,
                        });
                    } else {
                        kept_entries.insert(id.clone(), on.clone());
                    }
                }
                if !kept_entries.is_empty() {
                    kept.insert(key.clone(), Value::Object(kept_entries));
                }
            }
            _ => {
                let was = base.get(key).cloned().unwrap_or(Value::Null);
                let now = server.get(key).cloned().unwrap_or(Value::Null);
                if was != now && *value != now {
                    conflicts.push(Conflict {
                        key: key.clone(),
                        local: value.clone(),
                        server: now,
                    });
                } else {
                    kept.insert(key.clone(), value.clone());
                }
            }
        }
    }
    (kept, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Doc {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test documents are objects"),
        }
    }

    #[test]
    fn diff_then_apply_gives_the_target() {
        let from =
            doc(json!({"interval": 1, "metrics": {"a": true, "b": false, "gone": true}, "old": 1}));
        let to =
            doc(json!({"interval": 2, "metrics": {"a": true, "b": true, "new": false}, "port": 9}));
        let patch = diff(&from, &to);
        assert_eq!(
            Value::Object(patch.clone()),
            json!({"interval": 2, "metrics": {"b": true, "new": false, "gone": null}, "port": 9, "old": null})
        );
        assert_eq!(applied(&from, &patch), to);
        assert!(diff(&to, &to).is_empty());
    }

    #[test]
    fn merged_patches_apply_as_both() {
        let start = doc(json!({"interval": 1, "metrics": {"a": true, "b": true}}));
        let first = doc(json!({"metrics": {"a": false, "c": true}, "port": 1}));
        let second = doc(json!({"metrics": {"c": null, "d": true}, "port": null}));
        let mut merged = first.clone();
        merge(&mut merged, &second);
        assert_eq!(
            applied(&start, &merged),
            applied(&applied(&start, &first), &second)
        );
    }

    #[test]
    fn local_only_keys_stay_local() {
        let local = doc(
            json!({"api_token": "t", "path": {"sysfs": "/host/sys"}, "shelly": {"secret": "s", "device_id": "p"}, "interval": 1}),
        );
        assert_eq!(
            Value::Object(shareable(&local)),
            json!({"shelly": {"device_id": "p"}, "interval": 1})
        );
        let server =
            doc(json!({"api_token": "from-server", "shelly": {"device_id": "q"}, "interval": 5}));
        assert_eq!(
            Value::Object(with_local(&server, &local)),
            json!({"api_token": "t", "path": {"sysfs": "/host/sys"}, "shelly": {"device_id": "q", "secret": "s"}, "interval": 5})
        );
    }

    #[test]
    fn rebase_keeps_the_server_on_real_conflicts_only() {
        let base = doc(json!({"interval": 1, "metrics": {"a": false, "b": false, "c": false}}));
        // The server switched a and c on and changed the interval.
        let server = doc(json!({"interval": 5, "metrics": {"a": true, "b": false, "c": true}}));
        // Locally: a off (conflict), b on (no conflict), c on (same as server), interval 2 (conflict).
        let patch = doc(json!({"interval": 2, "metrics": {"a": false, "b": true, "c": true}}));
        let (kept, conflicts) = rebase(&patch, &base, &server);
        assert_eq!(
            Value::Object(kept.clone()),
            json!({"metrics": {"b": true, "c": true}})
        );
        assert_eq!(
            conflicts,
            [
                Conflict {
                    key: "interval".into(),
                    local: json!(2),
                    server: json!(5)
                },
                Conflict {
                    key: "metrics.a".into(),
                    local: json!(false),
                    server: json!(true)
                },
            ]
        );
        assert_eq!(
            Value::Object(applied(&server, &kept)),
            json!({"interval": 5, "metrics": {"a": true, "b": true, "c": true}})
        );
    }
}
