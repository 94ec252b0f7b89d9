//! The bridge between the YAML file and JSON: `GET /config` shows the file as
//! JSON, and a config that arrives as JSON (from the config server) is validated
//! exactly as the file would be, through its YAML text.

use std::path::Path;

use super::{Config, ConfigError, Overrides, Source};

/// YAML to JSON; keys that are not strings are written as their YAML text.
pub fn yaml_to_json(value: &yaml_serde::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    use yaml_serde::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => json!(s),
        Y::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s.clone(),
                        other => yaml_serde::to_string(other)
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_default(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(&tagged.value),
    }
}

/// Validates a config given as a JSON object (a config server's document). Returns
/// the config and the document as YAML text.
pub fn validate_json(
    value: &serde_json::Value,
    origin: &Path,
) -> Result<(Config, String), ConfigError> {
    let invalid = |message: String| ConfigError {
        file: origin.to_owned(),
        line: None,
        field: None,
        message,
        hint: None,
    };
    if !value.is_object() {
        return Err(invalid(
            "the config must be a JSON object of keys to values".into(),
        ));
    }
    let text = yaml_serde::to_string(value).map_err(|e| invalid(e.to_string()))?;
    let config = Config::parse(
        &text,
        &Overrides::default(),
        &Source {
            file: origin,
            text: &text,
        },
    )?;
    Ok((config, text))
}
