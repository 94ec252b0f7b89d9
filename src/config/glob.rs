//! Glob patterns of `metrics:` and of the config server's match rules: `*` any
//! run of characters, `?` one.
//!
//! Matched in time linear in the text, whatever the pattern: a bit-parallel
//! automaton (one bit per pattern position, the whole state in a `u128`), never
//! backtracking, so `*aaaa…ab` against `aaaa…a` costs one pass. That needs a
//! pattern of at most [`MAX_PATTERN`] bytes, which the config enforces.
//! Compile a pattern once ([`Glob::new`]) to match it against many ids.

/// Longest glob pattern accepted (bytes, after runs of `*` are folded).
pub const MAX_PATTERN: usize = 120;

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    /// Bytes before the first wildcard, checked first (most ids fail there).
    prefix: usize,
    /// Bytes after the last wildcard.
    suffix: usize,
    /// Pattern positions (after folding `**`): `len` + 1 states.
    len: u32,
    /// State bits `i + 1` where position `i` is `?`.
    any: u128,
    /// State bits `i + 1` where position `i` is `*` (the state after a star
    /// stays put on any byte).
    stay: u128,
    /// State bits `i` where position `i` is `*` (a star may match nothing).
    star: u128,
    /// Per literal byte, state bits `i + 1` where position `i` is that byte;
    /// sorted by byte.
    literals: Vec<(u8, u128)>,
}

/// Why a pattern cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a pattern is at most {MAX_PATTERN} characters, got {0}")]
pub struct TooLong(pub usize);

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, TooLong> {
        let mut folded: Vec<u8> = Vec::with_capacity(pattern.len());
        for &b in pattern.as_bytes() {
            if !(b == b'*' && folded.last() == Some(&b'*')) {
                folded.push(b);
            }
        }
        if folded.len() > MAX_PATTERN {
            return Err(TooLong(pattern.len()));
        }
        let wild = |b: &u8| *b == b'*' || *b == b'?';
        let prefix = folded.iter().position(wild).unwrap_or(folded.len());
        let suffix = folded.iter().rev().position(wild).unwrap_or(folded.len());
        let mut glob = Glob {
            source: pattern.to_owned(),
            prefix,
            suffix,
            len: folded.len() as u32,
            any: 0,
            stay: 0,
            star: 0,
            literals: Vec::new(),
        };
        for (i, &b) in folded.iter().enumerate() {
            let next = 1u128 << (i + 1);
            match b {
                b'?' => glob.any |= next,
                b'*' => {
                    glob.stay |= next;
                    glob.star |= 1u128 << i;
                }
                _ => match glob.literals.binary_search_by_key(&b, |(c, _)| *c) {
                    Ok(k) => glob.literals[k].1 |= next,
                    Err(k) => glob.literals.insert(k, (b, next)),
                },
            }
        }
        Ok(glob)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` matches, in one pass over it.
    pub fn matches(&self, text: &str) -> bool {
        let (p, s) = (self.source_folded_prefix(), text.as_bytes());
        // Fast rejections: the literal ends.
        if s.len() < self.prefix + self.suffix && self.len as usize != self.prefix {
            return false;
        }
        if !s.starts_with(p) {
            return false;
        }
        if self.suffix > 0 && !s.ends_with(self.source_suffix()) {
            return false;
        }
        let accept = 1u128 << self.len;
        let mut state = self.closure(1);
        for &c in s {
            let lit = self
                .literals
                .binary_search_by_key(&c, |(b, _)| *b)
                .map_or(0, |k| self.literals[k].1);
            state = ((state << 1) & (lit | self.any)) | (state & self.stay);
            state = self.closure(state);
            if state == 0 {
                return false;
            }
        }
        state & accept != 0
    }

    /// Adds the states a star reaches without consuming anything (runs of
    /// stars were folded, so one step is enough).
    fn closure(&self, state: u128) -> u128 {
        state | ((state & self.star) << 1)
    }

    fn source_folded_prefix(&self) -> &[u8] {
        &self.source.as_bytes()[..self.prefix]
    }

    fn source_suffix(&self) -> &[u8] {
        let b = self.source.as_bytes();
        &b[b.len() - self.suffix..]
    }
}

/// Whether `text` matches the glob `pattern`; a pattern too long to compile
/// matches nothing (the config refuses such patterns).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).is_ok_and(|g| g.matches(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious backtracking matcher, as the reference.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, _) => s.is_empty(),
            (Some(b'*'), _) => reference(&p[1..], s) || (!s.is_empty() && reference(p, &s[1..])),
            (Some(b'?'), Some(_)) => reference(&p[1..], &s[1..]),
            (Some(c), Some(d)) if c == d => reference(&p[1..], &s[1..]),
            _ => false,
        }
    }

    #[test]
    fn agrees_with_the_definition() {
        let alphabet = [b'a', b'b', b'*', b'?'];
        // Every pattern of up to 5 symbols against every text of up to 5.
        let mut patterns = vec![Vec::new()];
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = patterns
                .iter()
                .flat_map(|p| {
                    alphabet.iter().map(move |c| {
                        let mut q = p.clone();
                        q.push(*c);
                        q
                    })
                })
                .collect();
            patterns.extend(longer);
            patterns.sort();
            patterns.dedup();
        }
        let texts: Vec<Vec<u8>> = patterns
            .iter()
            .filter(|p| !p.contains(&b'*') && !p.contains(&b'?'))
            .cloned()
            .collect();
        for p in &patterns {
            let pattern = String::from_utf8(p.clone()).expect("ascii");
            let glob = Glob::new(&pattern).expect("short");
            for s in &texts {
                let text = String::from_utf8(s.clone()).expect("ascii");
                assert_eq!(glob.matches(&text), reference(p, s), "{pattern:?} {text:?}");
            }
        }
        for (p, id, m) in [
            (
                "host_cpu_core*_usage_percent",
                "host_cpu_core12_usage_percent",
                true,
            ),
            (
                "host_cpu_core*_usage_percent",
                "host_cpu_core12_usage",
                false,
            ),
            ("*_celsius", "host_temp_cpu_celsius", true),
            ("jetson_*", "jetson_orin", true),
            ("lab-??", "lab-12", true),
            ("lab-??", "lab-123", false),
        ] {
            assert_eq!(glob_match(p, id), m, "{p} {id}");
        }
    }

    #[test]
    fn one_pass_whatever_the_pattern() {
        // The pattern that took 7 s at 160k characters with backtracking.
        let n = 160_000;
        let pattern = format!("*{}b", "a".repeat(MAX_PATTERN - 2));
        let text = "a".repeat(n);
        let glob = Glob::new(&pattern).expect("fits");
        assert!(!glob.matches(&text));
        let text = format!("{}b", "a".repeat(n));
        assert!(glob.matches(&text));
        // Stars in the middle, no literal ends to reject on.
        let pattern = format!("*{}*", "a?".repeat(50));
        assert!(
            Glob::new(&pattern)
                .expect("fits")
                .matches(&"ab".repeat(n / 2))
        );
        assert_eq!(
            Glob::new(&"a".repeat(MAX_PATTERN + 1)),
            Err(TooLong(MAX_PATTERN + 1))
        );
        assert_eq!(
            Glob::new(&format!("{}x", "*".repeat(500))).map(|g| g.len),
            Ok(2)
        );
    }
}
