//! Text from outside (plug ids, models, firmware versions, device ids, run
//! names, labels, what a peer answered) on its way to a log line or a terminal.
//!
//! [`Escaped`] writes it with every control character as an escape (`\n`, `\r`,
//! `\t`, `\0`, `\x1b`, `\u{85}`), the Unicode marks that reorder text on a screen
//! (`\u{202e}`) likewise, and a backslash doubled, so the text can neither
//! start a forged log line nor drive a terminal, and what is shown can be read
//! back unambiguously.

use std::fmt;

/// `text`, escaped when displayed.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        let text = self.0;
        // The common case, nothing to escape, in one write.
        if !text.chars().any(needs_escape) {
            return f.write_str(text);
        }
        for c in text.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\0' => f.write_str("\\0")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x80 && c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Control characters, the backslash, and the bidirectional controls that make
/// a terminal show text in another order than it is.
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` escaped, as an owned string.
pub fn escaped(text: &str) -> String {
    Escaped(text).to_string()
}

/// The field formatter of the text log: every value (the message, `%`
/// displays, `?` debugs, strings) goes through [`Escaped`], so whatever a field
/// holds (a plug's id, a peer's error text) stays on its own line and cannot
/// drive the terminal. Strings are quoted, as the default formatter quotes
/// them. (The JSON log escapes by being JSON.)
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'a> tracing_subscriber::field::MakeVisitor<tracing_subscriber::fmt::format::Writer<'a>>
    for LogFields
{
    type Visitor = LogVisitor<'a>;

    fn make_visitor(&self, writer: tracing_subscriber::fmt::format::Writer<'a>) -> LogVisitor<'a> {
        LogVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's fields for [`LogFields`].
#[derive(Debug)]
pub struct LogVisitor<'a> {
    writer: tracing_subscriber::fmt::format::Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl LogVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, value: &str, quoted: bool) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::replace(&mut self.first, false) {
            ""
        } else {
            " "
        };
        let name = field.name();
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", Escaped(value))
        } else if quoted {
            // A quote inside is escaped too, so the value's end is unambiguous.
            write!(
                self.writer,
                "{separator}{}=\"{}\"",
                name.strip_prefix("r#").unwrap_or(name),
                Escaped(value).to_string().replace('"', "\\\"")
            )
        } else {
            write!(
                self.writer,
                "{separator}{}={}",
                name.strip_prefix("r#").unwrap_or(name),
                Escaped(value)
            )
        };
    }
}

impl tracing::field::Visit for LogVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field, value, true);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        // Field names starting with `log.` are the `log` crate's metadata.
        if field.name().starts_with("log.") {
            return;
        }
        self.write(field, &format!("{value:?}"), false);
    }
}

impl tracing_subscriber::field::VisitOutput<fmt::Result> for LogVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl tracing_subscriber::field::VisitFmt for LogVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_cannot_be_forged() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Buffer::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(LogFields)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let id = "plug\nERROR forged \x1b[31mred";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(plug = %id, model = id, other = ?id, "seen {id}");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains("seen plug\\nERROR forged \\x1b[31mred plug=plug\\nERROR"),
            "{text}"
        );
        assert!(text.contains("model=\"plug\\nERROR"), "{text}");
    }

    #[test]
    fn controls_become_escapes() {
        for (raw, shown) in [
            ("shellyplug-a8032ab12345", "shellyplug-a8032ab12345"),
            ("plug\nINFO forged line", "plug\\nINFO forged line"),
            ("a\rb\tc\0d", "a\\rb\\tc\\0d"),
            ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
            ("c:\\path", "c:\\\\path"),
            ("x\u{85}y\u{202e}z", "x\\u{85}y\\u{202e}z"),
            ("Ünïcödé ok", "Ünïcödé ok"),
        ] {
            assert_eq!(escaped(raw), shown, "{raw:?}");
            assert!(!escaped(raw).chars().any(|c| c.is_control()));
        }
    }
}
