//! One tokenizing parser for every tegrastats line format (see
//! `../shared/tegrastats/NOTES.md` and `docs/tegrastats.md`).
//!
//! [`parse_line`] splits a line on runs of whitespace and hands each field it
//! recognises to a callback as a typed [`Field`], in base-ish units as tegrastats
//! prints them (MB, kB, MHz, mW, °C). It never allocates, never panics, and never
//! fails: a token it does not know is skipped and counted, and a line it cannot read
//! at all simply yields no fields. Names (`VDD_IN`, `NVENC0`) are borrowed from the
//! line; turning them into metric ids is the collector's job.

/// The largest free block: `blocks` blocks of `block_mb` MB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lfb {
    pub blocks: f64,
    pub block_mb: f64,
}

/// An engine's state: `off`, or running with whatever tegrastats printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineState {
    Off,
    On {
        usage: Option<f64>,
        freq_mhz: Option<f64>,
    },
}

/// One recognised field of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// `RAM used/totalMB (lfb NxSMB)`.
    Ram {
        used_mb: f64,
        total_mb: f64,
        lfb: Option<Lfb>,
    },
    /// `SWAP used/totalMB (cached cMB)`.
    Swap {
        used_mb: f64,
        total_mb: f64,
        cached_mb: Option<f64>,
    },
    /// `IRAM used/totalkB(lfb skB)`.
    Iram {
        used_kb: f64,
        total_kb: f64,
        lfb_kb: Option<f64>,
    },
    /// One entry of `CPU [...]` (or of the old `cpu [...]@f`), in printed order.
    CpuCore {
        index: u32,
        online: bool,
        usage: Option<f64>,
        freq_mhz: Option<f64>,
    },
    /// `EMC_FREQ` (or the old `EMC`).
    Emc {
        usage: Option<f64>,
        freq_mhz: Option<f64>,
    },
    /// `GR3D_FREQ` (or the old `GR3D`) utilization; `GR3D2_FREQ` has `second: true`.
    GpuUsage { second: bool, usage: f64 },
    /// A GPU clock per GPC: `@f`, `@[f,f,...]`; `GR3D2_FREQ @f` is GPC 1.
    GpuFreq { gpc: u32, mhz: f64 },
    /// Any other engine (`APE`, `VIC`, `NVENC0`, `PVA0`, `NVDEC`, `AVP`, ...), with
    /// the `_FREQ`/`_LOAD` suffix removed from its name.
    Engine { name: &'a str, state: EngineState },
    /// `MTS fg p% bg p%`.
    Mts { fg: f64, bg: f64 },
    /// `EDP limit mhz` (old TX1).
    EdpLimit { mhz: f64 },
    /// `name@valueC[/maxC]`. `celsius` is `None` for the -256 °C sentinel.
    Temp {
        name: &'a str,
        celsius: Option<f64>,
        max_celsius: Option<f64>,
    },
    /// `NAME cur/avg[/max]`, mW with or without the unit. `NC` rails are skipped.
    Rail {
        name: &'a str,
        current_mw: f64,
        average_mw: Option<f64>,
        max_mw: Option<f64>,
    },
}

/// What `parse_line` saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Fields recognised (a CPU list counts once).
    pub fields: u32,
    /// Tokens skipped because they match no known form.
    pub unknown: u32,
    /// Values left out because they are past what a board can have (set by the
    /// id mapping, `collectors::tegrastats::LineMapper`, not by `parse_line`).
    pub dropped: u32,
}

/// Temperatures at or below this are sentinels ("sensor off"), not readings.
const SENTINEL_CELSIUS: f64 = -256.0;

/// Parses one line, calling `emit` for every field it recognises.
pub fn parse_line<'a>(line: &'a str, mut emit: impl FnMut(Field<'a>)) -> LineStats {
    let mut stats = LineStats::default();
    let mut tokens = Tokens::new(line);
    let mut first = true;
    while let Some(token) = tokens.next() {
        let was_first = std::mem::replace(&mut first, false);
        // The R35+ timestamp prefix: `MM-DD-YYYY hh:mm:ss`.
        if was_first && is_date(token) {
            if tokens.peek().is_some_and(is_time) {
                tokens.next();
            }
            continue;
        }
        // Keywords are 3 or 4 bytes long; everything else skips the comparisons.
        let keyword = if matches!(token.len(), 3 | 4) {
            token
        } else {
            ""
        };
        let recognised = match keyword {
            "RAM" => parse_ram(&mut tokens, &mut emit),
            "SWAP" => parse_swap(&mut tokens, &mut emit),
            "IRAM" => parse_iram(&mut tokens, &mut emit),
            "MTS" => parse_mts(&mut tokens, &mut emit),
            "EDP" => parse_edp(&mut tokens, &mut emit),
            "CPU" if tokens.peek().is_some_and(|t| t.starts_with('[')) => tokens
                .next()
                .is_some_and(|list| parse_cpu_list(list, &mut emit)),
            "cpu" if tokens.peek().is_some_and(|t| t.starts_with('[')) => tokens
                .next()
                .is_some_and(|list| parse_old_cpu_list(list, &mut emit)),
            _ => match shape(token) {
                Shape::NameAt(at) => parse_temp(token, at, &mut emit),
                Shape::Name => match tokens.peek() {
                    Some(value) if parse_named(token, value, &mut emit) => {
                        tokens.next();
                        true
                    }
                    _ => false,
                },
                Shape::Other => false,
            },
        };
        if recognised {
            stats.fields += 1;
        } else {
            stats.unknown += 1;
        }
    }
    stats
}

/// Tokens separated by runs of ASCII whitespace, with one token of look-ahead
/// always read (cheaper than peeking on demand).
struct Tokens<'a> {
    line: &'a str,
    at: usize,
    ahead: Option<&'a str>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0C' | b'\r')
}

impl<'a> Tokens<'a> {
    fn new(line: &'a str) -> Self {
        let mut t = Tokens {
            line,
            at: 0,
            ahead: None,
        };
        t.ahead = t.read_token();
        t
    }

    #[inline(always)]
    fn read_token(&mut self) -> Option<&'a str> {
        let bytes = self.line.as_bytes();
        let mut i = self.at;
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        if i == bytes.len() {
            self.at = i;
            return None;
        }
        let start = i;
        let i = token_end(bytes, start);
        self.at = i;
        // Whitespace is ASCII, so token edges are char boundaries: slicing the
        // remaining text from the front keeps the check to one split.
        let (token, _) = self.line.get(start..)?.split_at_checked(i - start)?;
        Some(token)
    }

    fn peek(&self) -> Option<&'a str> {
        self.ahead
    }

    fn next_if(&mut self, pred: impl FnOnce(&str) -> bool) -> Option<&'a str> {
        match self.ahead {
            Some(t) if pred(t) => self.next(),
            _ => None,
        }
    }
}

/// The index of the first whitespace byte at or after `from` (or the end).
///
/// Eight bytes at a time: a word-sized test flags every byte below `0x21` (spaces
/// and control characters), and only flagged bytes are checked exactly. Lines are
/// mostly short tokens, and this keeps the scan to a few instructions per word.
#[inline(always)]
fn token_end(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // High bit set in each byte < 0x21 (bytes >= 0x80 are excluded by `!x`).
        let mut flagged = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        while flagged != 0 {
            let at = i + (flagged.trailing_zeros() / 8) as usize;
            if is_space(bytes[at]) {
                return at;
            }
            flagged &= flagged - 1;
        }
        i += 8;
    }
    while i < bytes.len() && !is_space(bytes[i]) {
        i += 1;
    }
    i
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let current = self.ahead?;
        self.ahead = self.read_token();
        Some(current)
    }
}

/// What a token looks like, from one pass over its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Letters, digits, `_`, starting with a letter: a field name.
    Name,
    /// A name, then `@` at this byte index: a temperature candidate.
    NameAt(usize),
    Other,
}

/// Bytes that may appear in a field name.
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    table
};

fn shape(t: &str) -> Shape {
    let bytes = t.as_bytes();
    match bytes.first() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return Shape::Other,
    }
    match bytes.iter().position(|&b| !NAME_BYTE[usize::from(b)]) {
        None => Shape::Name,
        Some(i) if bytes[i] == b'@' => Shape::NameAt(i),
        Some(_) => Shape::Other,
    }
}

fn is_date(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 10 && b[2] == b'-' && b[5] == b'-' && digits_except(b, &[2, 5])
}

fn is_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 8 && b[2] == b':' && b[5] == b':' && digits_except(b, &[2, 5])
}

fn digits_except(b: &[u8], separators: &[usize]) -> bool {
    b.iter()
        .enumerate()
        .all(|(i, c)| separators.contains(&i) || c.is_ascii_digit())
}

/// Splits at the first `sep` byte. A plain loop: tokens are short, and this beats
/// the general `str::split_once` searcher on them.
fn split_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == sep)?;
    // `sep` is ASCII, so both sides are on char boundaries.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Reads a value token left to right.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor {
            bytes: s.as_bytes(),
            at: 0,
        }
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &[u8]) -> bool {
        if self.bytes.get(self.at..self.at + s.len()) == Some(s) {
            self.at += s.len();
            true
        } else {
            false
        }
    }

    /// A decimal number (`2201`, `-256`, `52.968`) at the cursor.
    ///
    /// Read directly: the digits as an integer divided by a power of ten, both exact
    /// in an f64, so the one IEEE division gives the double nearest the decimal,
    /// exactly what `str::parse` returns. More than 15 digits: `None` (tegrastats
    /// never prints that many).
    fn number(&mut self) -> Option<f64> {
        const POW10: [f64; 16] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
        ];
        let start = self.at;
        let negative = self.eat(b'-');
        let mut mantissa: u64 = 0;
        let mut digits = 0usize;
        let mut decimals: Option<usize> = None;
        while let Some(b) = self.peek() {
            match b {
                b'0'..=b'9' => {
                    digits += 1;
                    if digits > 15 {
                        self.at = start;
                        return None;
                    }
                    mantissa = mantissa * 10 + u64::from(b - b'0');
                    if let Some(d) = decimals.as_mut() {
                        *d += 1;
                    }
                }
                b'.' if decimals.is_none() => decimals = Some(0),
                _ => break,
            }
            self.at += 1;
        }
        if digits == 0 {
            self.at = start;
            return None;
        }
        let value = mantissa as f64 / POW10[decimals.unwrap_or(0)];
        Some(if negative { -value } else { value })
    }
}

/// A whole token that is a decimal number. Exponent forms (never printed by
/// tegrastats) go through `str::parse`; never "inf" or "nan".
fn number(s: &str) -> Option<f64> {
    let mut c = Cursor::new(s);
    match c.number() {
        Some(v) if c.done() => Some(v),
        _ if s.bytes().any(|b| matches!(b, b'e' | b'E' | b'+')) || s.len() > 15 => slow_number(s),
        _ => None,
    }
}

fn slow_number(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

/// `used/total` followed by `unit`, e.g. `1736/15827MB` with unit `MB`.
fn used_total(t: &str, unit: &str) -> Option<(f64, f64)> {
    let mut c = Cursor::new(t.strip_suffix(unit)?);
    let used = c.number()?;
    if !c.eat(b'/') {
        return None;
    }
    let total = c.number()?;
    c.done().then_some((used, total))
}

/// A size with its unit, in MB: `4MB`, `512kB`.
fn size_mb(t: &str) -> Option<f64> {
    if let Some(v) = t.strip_suffix("MB") {
        number(v)
    } else {
        t.strip_suffix("kB").and_then(number).map(|kb| kb / 1024.0)
    }
}

fn parse_ram<'a>(tokens: &mut Tokens<'a>, emit: &mut impl FnMut(Field<'a>)) -> bool {
    let Some((used_mb, total_mb)) = tokens.peek().and_then(|t| used_total(t, "MB")) else {
        return false;
    };
    tokens.next();
    let mut lfb = None;
    if tokens.next_if(|t| t == "(lfb").is_some() {
        // `NxSMB)` or `NxSkB)`
        lfb = tokens.next().and_then(|t| {
            let (n, size) = split_byte(t.strip_suffix(')')?, b'x')?;
            Some(Lfb {
                blocks: number(n)?,
                block_mb: size_mb(size)?,
            })
        });
    }
    emit(Field::Ram {
        used_mb,
        total_mb,
        lfb,
    });
    true
}

fn parse_swap<'a>(tokens: &mut Tokens<'a>, emit: &mut impl FnMut(Field<'a>)) -> bool {
    let Some((used_mb, total_mb)) = tokens.peek().and_then(|t| used_total(t, "MB")) else {
        return false;
    };
    tokens.next();
    let mut cached_mb = None;
    if tokens.next_if(|t| t == "(cached").is_some() {
        cached_mb = tokens
            .next()
            .and_then(|t| t.strip_suffix(')'))
            .and_then(size_mb);
    }
    emit(Field::Swap {
        used_mb,
        total_mb,
        cached_mb,
    });
    true
}

/// `IRAM 0/252kB(lfb 252kB)`: the `(lfb` is glued to the totals.
fn parse_iram<'a>(tokens: &mut Tokens<'a>, emit: &mut impl FnMut(Field<'a>)) -> bool {
    let Some(head) = tokens.next_if(|t| t.as_bytes().contains(&b'/')) else {
        return false;
    };
    let (totals, has_lfb) = match head.strip_suffix("(lfb") {
        Some(totals) => (totals, true),
        None => (head, false),
    };
    let Some((used_kb, total_kb)) = used_total(totals, "kB") else {
        return false;
    };
    let mut lfb_kb = None;
    if has_lfb || tokens.next_if(|t| t == "(lfb").is_some() {
        lfb_kb = tokens
            .next()
            .and_then(|t| t.strip_suffix(')'))
            .and_then(size_mb)
            .map(|mb| mb * 1024.0);
    }
    emit(Field::Iram {
        used_kb,
        total_kb,
        lfb_kb,
    });
    true
}

fn percent(t: &str) -> Option<f64> {
    t.strip_suffix('%').and_then(number)
}

fn parse_mts<'a>(tokens: &mut Tokens<'a>, emit: &mut impl FnMut(Field<'a>)) -> bool {
    if tokens.next_if(|t| t == "fg").is_none() {
        return false;
    }
    let fg = tokens.next().and_then(percent);
    let bg = tokens
        .next_if(|t| t == "bg")
        .and_then(|_| tokens.next())
        .and_then(percent);
    match (fg, bg) {
        (Some(fg), Some(bg)) => {
            emit(Field::Mts { fg, bg });
            true
        }
        _ => false,
    }
}

fn parse_edp<'a>(tokens: &mut Tokens<'a>, emit: &mut impl FnMut(Field<'a>)) -> bool {
    if tokens.next_if(|t| t == "limit").is_none() {
        return false;
    }
    match tokens.next_if(|t| number(t).is_some()).and_then(number) {
        Some(mhz) => {
            emit(Field::EdpLimit { mhz });
            true
        }
        None => false,
    }
}

/// One entry of a CPU list: `off`, `p%@f`, `p%` (or the old form's `p%`). `None`
/// for anything else.
fn cpu_entry(entry: &[u8]) -> Option<(bool, Option<f64>, Option<f64>)> {
    if entry == b"off" {
        return Some((false, None, None));
    }
    let mut c = Cursor {
        bytes: entry,
        at: 0,
    };
    let usage = c.number().filter(|_| c.eat(b'%'));
    let freq = if c.eat(b'@') { c.number() } else { None };
    (c.done() && (usage.is_some() || freq.is_some())).then_some((true, usage, freq))
}

/// The entries between `[` and `]`, split at commas.
fn list_entries(inner: &[u8]) -> impl Iterator<Item = &[u8]> {
    inner.split(|b| *b == b',')
}

/// `[23%@2201,off,...]`: one entry per possible core, read in one pass (the
/// longest field of most lines). An entry that is not `off`, `p%`, `p%@f` or `@f`
/// is skipped; its index still counts.
fn parse_cpu_list<'a>(list: &'a str, emit: &mut impl FnMut(Field<'a>)) -> bool {
    let Some(inner) = list.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
        return false;
    };
    let mut c = Cursor::new(inner);
    let mut any = false;
    let mut index = 0u32;
    loop {
        let entry = if c.eat_str(b"off") {
            Some((false, None, None))
        } else {
            let usage = c.number().filter(|_| c.eat(b'%'));
            let freq = if c.eat(b'@') { c.number() } else { None };
            (usage.is_some() || freq.is_some()).then_some((true, usage, freq))
        };
        match entry {
            Some((online, usage, freq_mhz)) if c.done() || c.peek() == Some(b',') => {
                emit(Field::CpuCore {
                    index,
                    online,
                    usage,
                    freq_mhz,
                });
                any = true;
            }
            _ => {
                while !c.done() && c.peek() != Some(b',') {
                    c.at += 1;
                }
            }
        }
        if !c.eat(b',') {
            break;
        }
        index += 1;
    }
    any
}

/// Old TX1 form: `[17%,13%,29%,5%]@408`, one clock for the cluster.
fn parse_old_cpu_list<'a>(token: &'a str, emit: &mut impl FnMut(Field<'a>)) -> bool {
    let Some((list, freq)) = token.rsplit_once("]@") else {
        return parse_cpu_list(token, emit);
    };
    let freq = number(freq);
    let Some(inner) = list.strip_prefix('[') else {
        return false;
    };
    let mut any = false;
    for (index, entry) in list_entries(inner.as_bytes()).enumerate() {
        let (online, usage) = match cpu_entry(entry) {
            Some((false, _, _)) => (false, None),
            Some((true, Some(u), None)) => (true, Some(u)),
            _ => continue,
        };
        emit(Field::CpuCore {
            index: index as u32,
            online,
            usage,
            freq_mhz: if online { freq } else { None },
        });
        any = true;
    }
    any
}

/// `name@52.968C` or `name@52.968C/52.968C`; `at` is the index of the `@` after a
/// valid name.
fn parse_temp<'a>(token: &'a str, at: usize, emit: &mut impl FnMut(Field<'a>)) -> bool {
    let (Some(name), Some(value)) = (token.get(..at), token.get(at + 1..)) else {
        return false;
    };
    let mut c = Cursor::new(value);
    let Some(raw) = c.number().filter(|_| c.eat(b'C')) else {
        return false;
    };
    let max_celsius = if c.eat(b'/') {
        match c.number().filter(|_| c.eat(b'C')) {
            Some(v) => Some(v),
            None => return false,
        }
    } else {
        None
    };
    if !c.done() {
        return false;
    }
    let live = |v: f64| (v > SENTINEL_CELSIUS).then_some(v);
    emit(Field::Temp {
        name,
        celsius: live(raw),
        max_celsius: max_celsius.and_then(live),
    });
    true
}

/// A named field with its value token: a rail, the GPU, the EMC or an engine.
fn parse_named<'a>(name: &'a str, value: &'a str, emit: &mut impl FnMut(Field<'a>)) -> bool {
    // Only rails have a `/` in their value.
    if value.as_bytes().contains(&b'/') {
        let Some(rail) = parse_rail(value) else {
            return false;
        };
        if name != "NC" {
            emit(Field::Rail {
                name,
                current_mw: rail.0,
                average_mw: rail.1,
                max_mw: rail.2,
            });
        }
        // A not-connected channel is recognised and deliberately dropped.
        return true;
    }
    let (base, load_only) = match name.strip_suffix("_LOAD") {
        Some(base) => (base, true),
        None => (name.strip_suffix("_FREQ").unwrap_or(name), false),
    };
    let state = if value == "off" {
        EngineState::Off
    } else {
        let Some(v) = parse_clock_value(value) else {
            return false;
        };
        if load_only && v.freqs.is_some() {
            return false;
        }
        match base {
            "GR3D" | "GR3D2" => {
                let second = base == "GR3D2";
                if let Some(usage) = v.usage {
                    emit(Field::GpuUsage { second, usage });
                }
                for (i, mhz) in v.freq_list() {
                    emit(Field::GpuFreq {
                        gpc: if second { 1 } else { i },
                        mhz,
                    });
                }
                return true;
            }
            "EMC" => {
                emit(Field::Emc {
                    usage: v.usage,
                    freq_mhz: v.first_freq(),
                });
                return true;
            }
            _ => EngineState::On {
                usage: v.usage,
                freq_mhz: v.first_freq(),
            },
        }
    };
    emit(Field::Engine { name: base, state });
    true
}

/// `cur/avg[/max]` with optional `mW` on each value.
fn parse_rail(value: &str) -> Option<(f64, Option<f64>, Option<f64>)> {
    let mut c = Cursor::new(value);
    let read = |c: &mut Cursor<'_>| {
        let v = c.number()?;
        c.eat_str(b"mW");
        Some(v)
    };
    let current = read(&mut c)?;
    if !c.eat(b'/') {
        return None;
    }
    let average = read(&mut c)?;
    let max = if c.eat(b'/') {
        Some(read(&mut c)?)
    } else {
        None
    };
    c.done().then_some((current, Some(average), max))
}

/// The value of a clocked field: `p%`, `p%@f`, `@f`, `p%@[f,f]`, `@[f,f]`, or a
/// bare clock `f`.
struct ClockValue<'a> {
    usage: Option<f64>,
    /// The clock part: `f` or `f,f,...` (brackets removed), already validated.
    freqs: Option<&'a [u8]>,
}

impl<'a> ClockValue<'a> {
    fn freq_list(&self) -> impl Iterator<Item = (u32, f64)> + 'a {
        list_entries(self.freqs.unwrap_or(b""))
            .enumerate()
            .filter_map(|(i, f)| Some((i as u32, whole_number(f)?)))
    }

    fn first_freq(&self) -> Option<f64> {
        self.freq_list().next().map(|(_, f)| f)
    }
}

fn whole_number(bytes: &[u8]) -> Option<f64> {
    let mut c = Cursor { bytes, at: 0 };
    c.number().filter(|_| c.done())
}

fn parse_clock_value(value: &str) -> Option<ClockValue<'_>> {
    let mut c = Cursor::new(value);
    let mut usage = None;
    if let Some(n) = c.number() {
        if c.eat(b'%') {
            usage = Some(n);
        } else if c.done() {
            // A bare number is a clock in MHz (`APE 150`, `VIC_FREQ 729`).
            return Some(ClockValue {
                usage: None,
                freqs: Some(value.as_bytes()),
            });
        } else {
            return None;
        }
    }
    let freqs = if c.eat(b'@') {
        let rest = &c.bytes[c.at..];
        let inner = match rest.split_first() {
            Some((b'[', tail)) => tail.strip_suffix(b"]")?,
            _ => rest,
        };
        if inner.is_empty() || !list_entries(inner).all(|f| whole_number(f).is_some()) {
            return None;
        }
        Some(inner)
    } else if c.done() {
        None
    } else {
        return None;
    };
    if usage.is_none() && freqs.is_none() {
        return None;
    }
    Some(ClockValue { usage, freqs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> (Vec<Field<'_>>, LineStats) {
        let mut out = Vec::new();
        let stats = parse_line(line, |f| out.push(f));
        (out, stats)
    }

    fn on(usage: Option<f64>, freq_mhz: Option<f64>) -> EngineState {
        EngineState::On { usage, freq_mhz }
    }

    /// One line of each form NOTES.md describes, with every field checked.
    #[test]
    fn memory_forms() {
        let (f, s) = fields(
            "RAM 1736/15827MB (lfb 3283x4MB) SWAP 2640/16384MB (cached 202MB) IRAM 0/252kB(lfb 252kB)",
        );
        assert_eq!(
            s,
            LineStats {
                fields: 3,
                unknown: 0,
                dropped: 0,
            }
        );
        assert_eq!(
            f,
            [
                Field::Ram {
                    used_mb: 1736.0,
                    total_mb: 15827.0,
                    lfb: Some(Lfb {
                        blocks: 3283.0,
                        block_mb: 4.0
                    })
                },
                Field::Swap {
                    used_mb: 2640.0,
                    total_mb: 16384.0,
                    cached_mb: Some(202.0)
                },
                Field::Iram {
                    used_kb: 0.0,
                    total_kb: 252.0,
                    lfb_kb: Some(252.0)
                },
            ]
        );
        let (f, _) = fields("RAM 5408/6834MB (lfb 2x128kB)");
        assert_eq!(
            f,
            [Field::Ram {
                used_mb: 5408.0,
                total_mb: 6834.0,
                lfb: Some(Lfb {
                    blocks: 2.0,
                    block_mb: 0.125
                })
            }]
        );
    }

    #[test]
    fn cpu_forms() {
        let (f, _) = fields("CPU [3%@345,off,0%@2035]");
        assert_eq!(
            f,
            [
                Field::CpuCore {
                    index: 0,
                    online: true,
                    usage: Some(3.0),
                    freq_mhz: Some(345.0)
                },
                Field::CpuCore {
                    index: 1,
                    online: false,
                    usage: None,
                    freq_mhz: None
                },
                Field::CpuCore {
                    index: 2,
                    online: true,
                    usage: Some(0.0),
                    freq_mhz: Some(2035.0)
                },
            ]
        );
        let (f, s) = fields("cpu [17%,13%,off]@408");
        assert_eq!(s.unknown, 0);
        assert_eq!(
            f,
            [
                Field::CpuCore {
                    index: 0,
                    online: true,
                    usage: Some(17.0),
                    freq_mhz: Some(408.0)
                },
                Field::CpuCore {
                    index: 1,
                    online: true,
                    usage: Some(13.0),
                    freq_mhz: Some(408.0)
                },
                Field::CpuCore {
                    index: 2,
                    online: false,
                    usage: None,
                    freq_mhz: None
                },
            ]
        );
    }

    #[test]
    fn emc_and_gpu_forms() {
        let cases: &[(&str, Vec<Field<'_>>)] = &[
            (
                "EMC_FREQ 0%",
                vec![Field::Emc {
                    usage: Some(0.0),
                    freq_mhz: None,
                }],
            ),
            (
                "EMC_FREQ 18%@3199",
                vec![Field::Emc {
                    usage: Some(18.0),
                    freq_mhz: Some(3199.0),
                }],
            ),
            (
                "EMC_FREQ @3199",
                vec![Field::Emc {
                    usage: None,
                    freq_mhz: Some(3199.0),
                }],
            ),
            (
                "EMC 1%@1600",
                vec![Field::Emc {
                    usage: Some(1.0),
                    freq_mhz: Some(1600.0),
                }],
            ),
            (
                "GR3D_FREQ 4%",
                vec![Field::GpuUsage {
                    second: false,
                    usage: 4.0,
                }],
            ),
            (
                "GR3D_FREQ 0%@76",
                vec![
                    Field::GpuUsage {
                        second: false,
                        usage: 0.0,
                    },
                    Field::GpuFreq { gpc: 0, mhz: 76.0 },
                ],
            ),
            ("GR3D_FREQ @0", vec![Field::GpuFreq { gpc: 0, mhz: 0.0 }]),
            (
                "GR3D_FREQ 63%@[621]",
                vec![
                    Field::GpuUsage {
                        second: false,
                        usage: 63.0,
                    },
                    Field::GpuFreq { gpc: 0, mhz: 621.0 },
                ],
            ),
            (
                "GR3D_FREQ 39%@[305,0]",
                vec![
                    Field::GpuUsage {
                        second: false,
                        usage: 39.0,
                    },
                    Field::GpuFreq { gpc: 0, mhz: 305.0 },
                    Field::GpuFreq { gpc: 1, mhz: 0.0 },
                ],
            ),
            (
                "GR3D_FREQ @[314,314,314]",
                vec![
                    Field::GpuFreq { gpc: 0, mhz: 314.0 },
                    Field::GpuFreq { gpc: 1, mhz: 314.0 },
                    Field::GpuFreq { gpc: 2, mhz: 314.0 },
                ],
            ),
            (
                "GR3D_FREQ 84%@1274 GR3D2_FREQ 99%@1274",
                vec![
                    Field::GpuUsage {
                        second: false,
                        usage: 84.0,
                    },
                    Field::GpuFreq {
                        gpc: 0,
                        mhz: 1274.0,
                    },
                    Field::GpuUsage {
                        second: true,
                        usage: 99.0,
                    },
                    Field::GpuFreq {
                        gpc: 1,
                        mhz: 1274.0,
                    },
                ],
            ),
            (
                "GR3D 39%@76",
                vec![
                    Field::GpuUsage {
                        second: false,
                        usage: 39.0,
                    },
                    Field::GpuFreq { gpc: 0, mhz: 76.0 },
                ],
            ),
        ];
        for (line, want) in cases {
            let (got, stats) = fields(line);
            assert_eq!(&got, want, "{line}");
            assert_eq!(stats.unknown, 0, "{line}");
        }
    }

    #[test]
    fn engine_forms() {
        let (f, s) = fields(
            "APE 150 VIC_FREQ 0%@115 NVENC off NVDEC 40%@115 NVENC0_FREQ @314 PVA0_FREQ off NVENC_LOAD 7% MSENC 192 AVP 1%@115",
        );
        assert_eq!(s.unknown, 0);
        assert_eq!(
            f,
            [
                Field::Engine {
                    name: "APE",
                    state: on(None, Some(150.0))
                },
                Field::Engine {
                    name: "VIC",
                    state: on(Some(0.0), Some(115.0))
                },
                Field::Engine {
                    name: "NVENC",
                    state: EngineState::Off
                },
                Field::Engine {
                    name: "NVDEC",
                    state: on(Some(40.0), Some(115.0))
                },
                Field::Engine {
                    name: "NVENC0",
                    state: on(None, Some(314.0))
                },
                Field::Engine {
                    name: "PVA0",
                    state: EngineState::Off
                },
                Field::Engine {
                    name: "NVENC",
                    state: on(Some(7.0), None)
                },
                Field::Engine {
                    name: "MSENC",
                    state: on(None, Some(192.0))
                },
                Field::Engine {
                    name: "AVP",
                    state: on(Some(1.0), Some(115.0))
                },
            ]
        );
        let (f, _) = fields("MTS fg 1% bg 9% EDP limit 1734");
        assert_eq!(
            f,
            [
                Field::Mts { fg: 1.0, bg: 9.0 },
                Field::EdpLimit { mhz: 1734.0 }
            ]
        );
    }

    #[test]
    fn temperature_forms() {
        let (f, s) =
            fields("tj@41.468C CV0@-256C cpu@52.968C/52.968C soc0@49.406C/49.5C thermal@29.45C");
        assert_eq!(s.unknown, 0);
        assert_eq!(
            f,
            [
                Field::Temp {
                    name: "tj",
                    celsius: Some(41.468),
                    max_celsius: None
                },
                Field::Temp {
                    name: "CV0",
                    celsius: None,
                    max_celsius: None
                },
                Field::Temp {
                    name: "cpu",
                    celsius: Some(52.968),
                    max_celsius: Some(52.968)
                },
                Field::Temp {
                    name: "soc0",
                    celsius: Some(49.406),
                    max_celsius: Some(49.5)
                },
                Field::Temp {
                    name: "thermal",
                    celsius: Some(29.45),
                    max_celsius: None
                },
            ]
        );
    }

    #[test]
    fn rail_forms() {
        let (f, s) = fields(
            "VDD_IN 3140/3208 VDD_IN 5079mW/5079mW VDD_GPU_SOC 5139mW/5139mW/5139mW NC 0mW/0mW GPU 466/466",
        );
        assert_eq!(
            s,
            LineStats {
                fields: 5,
                unknown: 0,
                dropped: 0,
            }
        );
        assert_eq!(
            f,
            [
                Field::Rail {
                    name: "VDD_IN",
                    current_mw: 3140.0,
                    average_mw: Some(3208.0),
                    max_mw: None
                },
                Field::Rail {
                    name: "VDD_IN",
                    current_mw: 5079.0,
                    average_mw: Some(5079.0),
                    max_mw: None
                },
                Field::Rail {
                    name: "VDD_GPU_SOC",
                    current_mw: 5139.0,
                    average_mw: Some(5139.0),
                    max_mw: Some(5139.0)
                },
                Field::Rail {
                    name: "GPU",
                    current_mw: 466.0,
                    average_mw: Some(466.0),
                    max_mw: None
                },
            ]
        );
    }

    #[test]
    fn timestamp_spaces_and_unknown_tokens() {
        let line = "07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB)    CPU [23%@2201]  WHAT 1/2/3/4/5 zz%% ???";
        let (f, s) = fields(line);
        assert_eq!(f.len(), 2);
        // WHAT (its value is not a known form), the value itself, zz%%, ???
        assert_eq!(
            s,
            LineStats {
                fields: 2,
                unknown: 4,
                dropped: 0,
            }
        );
        let (f, s) = fields("");
        assert!(f.is_empty());
        assert_eq!(s, LineStats::default());
        let (f, s) = fields("garbage line \u{fffd}\u{0} with @ signs @ and [ brackets ]");
        assert!(f.is_empty(), "{f:?}");
        assert!(s.unknown > 0);
    }

    #[test]
    fn token_ends_match_a_byte_scan() {
        let cases = [
            "",
            " ",
            "abc",
            "abcdefgh ij",
            "0123456789abcdef\tx",
            "\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9} z",
            "ÄÖÜäöüßéèê x",
            "exactly8",
            "exactly8 ",
            "12345678901234567890\r",
            "a\x0Cb",
        ];
        for s in cases {
            let b = s.as_bytes();
            for from in 0..=b.len() {
                let want = (from..b.len()).find(|&i| is_space(b[i])).unwrap_or(b.len());
                assert_eq!(token_end(b, from), want, "{s:?} from {from}");
            }
        }
    }

    #[test]
    fn fast_numbers_equal_std_parsing() {
        for s in [
            "0",
            "7",
            "2201",
            "-256",
            "52.968",
            "49.406",
            "0.125",
            "29.45",
            "-0.5",
            "123456789012345",
            "1e3",
            "1234567890123456789",
            ".5",
            "5.",
            "007",
            "3.14159265358979",
        ] {
            assert_eq!(number(s), s.parse::<f64>().ok(), "{s}");
        }
        for bad in ["", "-", ".", "1.2.3", "12a", "--1", "nan", "inf", "1e999"] {
            assert_eq!(number(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncated_fields_do_not_panic() {
        for line in [
            "RAM",
            "RAM 1/",
            "RAM 1/2MB (lfb",
            "RAM 1/2MB (lfb x)",
            "SWAP 1/2MB (cached",
            "IRAM 0/252kB(lfb",
            "CPU [",
            "CPU [,,,]",
            "cpu []@",
            "MTS fg",
            "MTS fg 1%",
            "EDP limit",
            "GR3D_FREQ @[",
            "GR3D_FREQ 1%@[,]",
            "VDD_IN 1/",
            "x@",
            "@C",
            "a@C/",
            "APE",
            "NVENC 1e999",
            "GPU nan/nan",
        ] {
            let _ = fields(line);
        }
        let (f, _) = fields("NVENC 1e999");
        assert!(f.is_empty());
    }
}

#[cfg(test)]
mod corpus {
    use super::*;

    /// Every token of every real line in the corpus is recognised.
    #[test]
    fn corpus_has_no_unknown_tokens() {
        let corpus = include_str!("../../../tests/fixtures/tegrastats/corpus.tsv");
        let mut failures = Vec::new();
        for (n, row) in corpus.lines().enumerate().skip(1) {
            let line = row.rsplit('\t').next().unwrap_or("");
            let stats = parse_line(line, |_| {});
            if stats.unknown > 0 {
                failures.push(format!(
                    "row {}: {} unknown: {}",
                    n + 1,
                    stats.unknown,
                    line
                ));
            }
            assert!(stats.fields > 0, "row {}: nothing recognised", n + 1);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
