//! Where a config error is: the file, the line and the field, and the message
//! that says what was wrong and what would be accepted. Errors from serde's YAML
//! reader are brought into the same shape.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a config text came from, to point errors at a file and line.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn embedded() -> Source<'static> {
        Source {
            file: Path::new("<embedded default>"),
            text: "",
        }
    }

    pub(super) fn error(&self, field: &[&str], message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: line_of(self.text, field),
            field: Some(field.join(".")),
            message,
            hint: None,
        }
    }

    /// A serde error: `metrics.x: invalid type ... at line 4 column 8` becomes
    /// field `metrics.x`, line 4 and the message in between.
    pub(super) fn yaml_error(&self, e: &yaml_serde::Error) -> ConfigError {
        let message = strip_location(&e.to_string());
        let (field, detail) = match message.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') => (Some(path.to_owned()), rest.to_owned()),
            _ => (None, message.clone()),
        };
        ConfigError {
            file: self.file.to_owned(),
            line: e.location().map(|l| l.line()),
            field,
            message: detail,
            hint: None,
        }
    }
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Finds the 1-based line of a key path (`["shelly", "server_url"]`) in block YAML.
/// Good enough for pointing at a field; `None` when the key is not found.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut parent_indent: Option<usize> = None;
    let mut depth = 0;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if parent_indent.is_some_and(|p| indent <= p) {
            return None;
        }
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches(['"', '\'']));
        let want = path.get(depth)?;
        let child_level = parent_indent.is_none() && indent == 0 || parent_indent.is_some();
        if child_level && key == Some(want) {
            depth += 1;
            if depth == path.len() {
                return Some(number + 1);
            }
            parent_indent = Some(indent);
        }
    }
    None
}

/// A config that cannot be used, pointing at the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: Option<String>,
    /// The spec's error message (`Unsupported device type: X`), kept exact.
    pub message: String,
    /// What would be accepted instead, shown after the message.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_lookup() {
        let text = "a: 1\nshelly:\n  # c\n  enabled: true\n  server_url: x\nserver_url: y\n";
        assert_eq!(line_of(text, &["shelly", "server_url"]), Some(5));
        assert_eq!(line_of(text, &["server_url"]), Some(6));
        assert_eq!(line_of(text, &["shelly", "nope"]), None);
    }
}
