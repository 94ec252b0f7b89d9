//! One tegrastats line to samples: the spec's flat ids
//! (`jetson_power_vdd_gpu_soc_watts`, `jetson_cpu_core0_usage_percent`, ...) and
//! the labeled families (`jetson_power_watts{rail="vdd_gpu_soc"}`). The collector
//! and the `parse` command share it.
//!
//! A [`LineMapper`] keeps every series it has seen (id, family, labels) and hands
//! out small indices, so mapping a line allocates nothing once its series are
//! known: a board prints the same fields every second, and a log replays the same
//! few boards. What one line may add is bounded ([`MAX_CORES`], [`MAX_GPCS`],
//! [`MAX_NAMES`] per kind of name), so a corrupt line naming thousands of CPUs or
//! rails cannot grow the table past [`MAX_SERIES`]: its extra values are dropped
//! and counted.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::energy::{PowerFamilies, families};
use crate::sample::{Family, Label, MHZ, MIB};
use crate::sources::board::INPUT_RAILS;
use crate::sources::tegrastats::parse::{EngineState, Field, LineStats, parse_line};

/// The most series a mapper can hold: every plain id, every numbered one up to
/// its limit, [`MAX_NAMES`] of each named kind. Real boards print fewer than 200.
pub const MAX_SERIES: usize = 32 + 3 * MAX_CORES as usize + MAX_GPCS as usize + 9 * MAX_NAMES;

static RAM_USED: Family = Family::gauge(
    "jetson_memory_used_bytes",
    "RAM in use (tegrastats)",
    "bytes",
)
.scaled(MIB);
static RAM_TOTAL: Family = Family::gauge(
    "jetson_memory_total_bytes",
    "Total RAM (tegrastats)",
    "bytes",
)
.scaled(MIB);
static RAM_PERCENT: Family = Family::gauge(
    "jetson_memory_used_percent",
    "RAM in use as a share of total",
    "percent",
);
static LFB_BLOCKS: Family = Family::gauge(
    "jetson_memory_lfb_blocks",
    "Number of free blocks of the largest free block size",
    "",
);
static LFB_BLOCK_SIZE: Family = Family::gauge(
    "jetson_memory_lfb_block_size_bytes",
    "Size of the largest free block",
    "bytes",
)
.scaled(MIB);
static LFB_TOTAL: Family = Family::gauge(
    "jetson_memory_lfb_bytes",
    "Free memory in blocks of the largest free block size (blocks times size)",
    "bytes",
)
.scaled(MIB);
static SWAP_USED: Family =
    Family::gauge("jetson_swap_used_bytes", "Swap in use", "bytes").scaled(MIB);
static SWAP_TOTAL: Family =
    Family::gauge("jetson_swap_total_bytes", "Total swap", "bytes").scaled(MIB);
static SWAP_CACHED: Family =
    Family::gauge("jetson_swap_cached_bytes", "Swap also held in RAM", "bytes").scaled(MIB);
static IRAM_USED: Family =
    Family::gauge("jetson_iram_used_bytes", "Internal RAM in use", "bytes").scaled(1024.0);
static IRAM_TOTAL: Family =
    Family::gauge("jetson_iram_total_bytes", "Total internal RAM", "bytes").scaled(1024.0);
static IRAM_PERCENT: Family = Family::gauge(
    "jetson_iram_used_percent",
    "Internal RAM in use as a share of total",
    "percent",
);
static IRAM_LFB: Family = Family::gauge(
    "jetson_iram_lfb_bytes",
    "Largest free block of internal RAM",
    "bytes",
)
.scaled(1024.0);
static CPU_USAGE: Family = Family::gauge("jetson_cpu_usage_percent", "CPU core usage", "percent");
static CPU_FREQ: Family =
    Family::gauge("jetson_cpu_frequency_hertz", "CPU core frequency", "hertz").scaled(MHZ);
static CPU_ONLINE: Family =
    Family::gauge("jetson_cpu_online", "CPU core online (1) or off (0)", "");
static CPU_AVG: Family = Family::gauge(
    "jetson_cpu_avg_usage_percent",
    "Average usage of the online CPU cores",
    "percent",
);
static CPU_ACTIVE: Family =
    Family::gauge("jetson_cpu_active_cores", "Number of online CPU cores", "");
static GPU_USAGE: Family = Family::gauge("jetson_gpu_usage_percent", "GPU (GR3D) usage", "percent");
static GPU2_USAGE: Family = Family::gauge(
    "jetson_gpu2_usage_percent",
    "Second GPU usage figure (GR3D2_FREQ, early Orin releases)",
    "percent",
);
static GPU_FREQ: Family =
    Family::gauge("jetson_gpu_frequency_hertz", "GPU clock per GPC", "hertz").scaled(MHZ);
static EMC_USAGE: Family = Family::gauge(
    "jetson_emc_usage_percent",
    "Memory controller (EMC) usage",
    "percent",
);
static EMC_FREQ: Family = Family::gauge(
    "jetson_emc_frequency_hertz",
    "Memory controller (EMC) clock",
    "hertz",
)
.scaled(MHZ);
static ENGINE_USAGE: Family = Family::gauge(
    "jetson_engine_usage_percent",
    "Engine usage (NVENC, NVDEC, VIC, ...)",
    "percent",
);
static ENGINE_FREQ: Family = Family::gauge(
    "jetson_engine_frequency_hertz",
    "Engine clock (APE, VIC, NVENC, ...)",
    "hertz",
)
.scaled(MHZ);
static ENGINE_ACTIVE: Family =
    Family::gauge("jetson_engine_active", "Engine running (1) or off (0)", "");
static MTS_FG: Family = Family::gauge(
    "jetson_mts_fg_percent",
    "Denver MTS foreground usage",
    "percent",
);
static MTS_BG: Family = Family::gauge(
    "jetson_mts_bg_percent",
    "Denver MTS background usage",
    "percent",
);
static EDP_LIMIT: Family = Family::gauge(
    "jetson_edp_limit_hertz",
    "CPU clock limit set by EDP (old TX1 releases)",
    "hertz",
)
.scaled(MHZ);
static TEMP: Family = Family::gauge("jetson_temp_celsius", "Temperature (tegrastats)", "celsius");
static TEMP_MAX: Family = Family::gauge(
    "jetson_temp_max_celsius",
    "Highest temperature tegrastats has seen (JetPack 7.2)",
    "celsius",
);
static POWER_AVG: Family = Family::gauge(
    "jetson_power_avg_watts",
    "Power rail, average since tegrastats started",
    "watts",
)
.at_least(0.0);
static POWER_MAX: Family = Family::gauge(
    "jetson_power_max_watts",
    "Power rail, highest seen by tegrastats (JetPack 7.2)",
    "watts",
)
.at_least(0.0);

/// What one flat id is: its family and its labels for the labeled style.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub id: Arc<str>,
    pub family: &'static Family,
    pub labels: Vec<Label>,
    /// The energy families of a series that gets a meter (a rail's watts).
    pub power: Option<&'static PowerFamilies>,
}

/// One value of a line: which series, and its number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mapped {
    series: u32,
    pub value: f64,
}

/// Not known yet, in the fast tables.
const UNKNOWN: u32 = u32::MAX;
/// A name that sanitizes to nothing: it gives no series.
const NAMELESS: u32 = u32::MAX - 1;

/// An id of its own, without a varying part.
#[derive(Debug, Clone, Copy)]
struct Plain(&'static str, &'static Family);

/// Ids that vary by a name or a number: `<prefix><name><suffix>`, the name also a
/// label; `fixed` ids keep the label but not the name in the id.
#[derive(Debug)]
struct Template {
    prefix: &'static str,
    suffix: &'static str,
    label: &'static str,
    family: &'static Family,
    fixed: bool,
    /// Its series get a meter, with these energy families.
    power: Option<&'static PowerFamilies>,
}

impl Template {
    const fn new(
        prefix: &'static str,
        suffix: &'static str,
        label: &'static str,
        family: &'static Family,
    ) -> Self {
        Template {
            prefix,
            suffix,
            label,
            family,
            fixed: false,
            power: None,
        }
    }

    /// The same, its series metered with `power` (whose watts is its family).
    const fn metered(
        power: &'static PowerFamilies,
        prefix: &'static str,
        suffix: &'static str,
    ) -> Self {
        Template {
            power: Some(power),
            ..Template::new(prefix, suffix, "rail", power.watts)
        }
    }
}

// Templates keyed by a number (a CPU core, a GPC) or by a raw name from the line.
const CORE_STATUS: usize = 0;
const CORE_USAGE: usize = 1;
const CORE_FREQ: usize = 2;
const GPC_FREQ: usize = 3;
static NUMBERED: [Template; 4] = [
    Template::new("jetson_cpu_core", "_status", "core", &CPU_ONLINE),
    Template::new("jetson_cpu_core", "_usage_percent", "core", &CPU_USAGE),
    Template::new("jetson_cpu_core", "_freq_mhz", "core", &CPU_FREQ),
    Template::new("jetson_gpu_freq", "_mhz", "gpc", &GPU_FREQ),
];
const ENGINE_STATUS: usize = 0;
const ENGINE_USAGE_T: usize = 1;
const ENGINE_FREQ_T: usize = 2;
const TEMP_T: usize = 3;
const TEMP_MAX_T: usize = 4;
const POWER_T: usize = 5;
const POWER_AVG_T: usize = 6;
const POWER_MAX_T: usize = 7;
const POWER_INPUT_T: usize = 8;
static NAMED: [Template; 9] = [
    Template::new("jetson_", "_status", "engine", &ENGINE_ACTIVE),
    Template::new("jetson_", "_usage_percent", "engine", &ENGINE_USAGE),
    Template::new("jetson_", "_freq_mhz", "engine", &ENGINE_FREQ),
    Template::new("jetson_temp_", "_celsius", "sensor", &TEMP),
    Template::new("jetson_temp_", "_max_celsius", "sensor", &TEMP_MAX),
    Template::metered(&families::JETSON_RAIL, "jetson_power_", "_watts"),
    Template::new("jetson_power_", "_avg_watts", "rail", &POWER_AVG),
    Template::new("jetson_power_", "_max_watts", "rail", &POWER_MAX),
    Template {
        prefix: "jetson_power_input_watts",
        suffix: "",
        label: "rail",
        family: &families::JETSON_INPUT_WATTS,
        fixed: true,
        power: Some(&families::JETSON_INPUT),
    },
];
/// CPU cores a line may list; past it (a corrupt line) entries are dropped. The
/// largest Jetson (Thor) has 14.
pub const MAX_CORES: u32 = 256;
/// GPU clusters (GPCs) a line may list; the largest Jetson GPU has 3.
pub const MAX_GPCS: u32 = 32;
/// Distinct rail, sensor and engine names a mapper takes per kind; a board prints
/// about 20. Values of further names are dropped.
pub const MAX_NAMES: usize = 128;
/// The largest number a template keeps a table entry for.
const MAX_NUMBER: u32 = MAX_CORES;

type IdMap = HashMap<Box<str>, u32, BuildHasherDefault<IdHasher>>;

/// Maps lines to samples, remembering the series it has seen.
///
/// A value's series is found without building its id: plain ids by a table of
/// their own, numbered ones (cores, GPCs) by their number, named ones (rails,
/// sensors, engines) by the raw name as tegrastats prints it. The id is built,
/// sanitized and interned only the first time.
#[derive(Debug, Default)]
pub struct LineMapper {
    series: Vec<Arc<Series>>,
    /// Every id kept, to its series.
    by_id: IdMap,
    /// Plain ids, by their text (a `&'static str`: a few dozen of them).
    plain: HashMap<&'static str, u32, BuildHasherDefault<IdHasher>>,
    numbered: [Vec<u32>; 4],
    named: [IdMap; 9],
    /// The line each series was last pushed in, to keep ids unique per line.
    pushed_in: Vec<u32>,
    line: u32,
    /// Scratch for building an id and a sanitized name.
    id: String,
    fragment: String,
    /// Values of the current line left out (past the limits).
    dropped: u32,
}

impl LineMapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps one line, appending its values to `out` in line order. Ids are unique
    /// within a line (the first wins).
    pub fn map(&mut self, line: &str, out: &mut Vec<Mapped>) -> LineStats {
        self.line = self.line.wrapping_add(1);
        if self.line == 0 {
            // Wrapped: forget which line anything was pushed in.
            self.pushed_in.iter_mut().for_each(|l| *l = 0);
            self.line = 1;
        }
        self.dropped = 0;
        let mut line_state = LineState::default();
        let mut stats = parse_line(line, |field| self.field(field, &mut line_state, out));
        self.finish(&line_state, out);
        stats.dropped = self.dropped;
        stats
    }

    /// The series of a value this mapper produced.
    pub fn series(&self, m: &Mapped) -> &Arc<Series> {
        &self.series[m.series as usize]
    }

    /// Series kept across lines.
    pub fn known(&self) -> usize {
        self.series.len()
    }

    /// Appends `series` with `value`, unless the line has it already.
    fn emit(&mut self, out: &mut Vec<Mapped>, series: u32, value: f64) {
        let seen = &mut self.pushed_in[series as usize];
        if *seen == self.line {
            return;
        }
        *seen = self.line;
        out.push(Mapped { series, value });
    }

    /// The series of the id in `self.id`, made with `labels` when it is new.
    fn intern(
        &mut self,
        family: &'static Family,
        power: Option<&'static PowerFamilies>,
        labels: &[(&'static str, &str)],
    ) -> u32 {
        if let Some(&i) = self.by_id.get(self.id.as_str()) {
            return i;
        }
        let series = Arc::new(Series {
            id: Arc::from(self.id.as_str()),
            family,
            labels: labels.iter().map(|(k, v)| (*k, Arc::from(*v))).collect(),
            power,
        });
        let i = self.series.len() as u32;
        self.series.push(series);
        self.pushed_in.push(0);
        self.by_id.insert(self.id.as_str().into(), i);
        i
    }

    fn plain(&mut self, out: &mut Vec<Mapped>, Plain(id, family): Plain, value: f64) {
        if !value.is_finite() {
            return;
        }
        let series = match self.plain.get(id) {
            Some(&i) => i,
            None => {
                self.id.clear();
                self.id.push_str(id);
                let i = self.intern(family, None, &[]);
                self.plain.insert(id, i);
                i
            }
        };
        self.emit(out, series, value);
    }

    fn plain_some(&mut self, out: &mut Vec<Mapped>, id: Plain, value: Option<f64>) {
        if let Some(v) = value {
            self.plain(out, id, v);
        }
    }

    /// A value of a numbered template: `jetson_cpu_core<n>_...` with `core="<n>"`.
    fn numbered(&mut self, out: &mut Vec<Mapped>, t: usize, n: u32, value: Option<f64>) {
        let Some(value) = value.filter(|v| v.is_finite()) else {
            return;
        };
        let slot = n as usize;
        let known = self.numbered[t].get(slot).copied().unwrap_or(UNKNOWN);
        let series = if known != UNKNOWN {
            known
        } else {
            let template = &NUMBERED[t];
            let mut buf = [0u8; 10];
            let number = decimal(n, &mut buf);
            self.id.clear();
            self.id.push_str(template.prefix);
            self.id.push_str(number);
            self.id.push_str(template.suffix);
            let i = self.intern(template.family, template.power, &[(template.label, number)]);
            if n < MAX_NUMBER {
                let table = &mut self.numbered[t];
                if table.len() <= slot {
                    table.resize(slot + 1, UNKNOWN);
                }
                table[slot] = i;
            }
            i
        };
        self.emit(out, series, value);
    }

    /// A value of a named template, by the name as the line prints it.
    fn named(&mut self, out: &mut Vec<Mapped>, t: usize, raw: &str, value: Option<f64>) {
        let Some(value) = value.filter(|v| v.is_finite()) else {
            return;
        };
        let series = match self.named[t].get(raw) {
            Some(&i) => i,
            None if self.named[t].len() >= MAX_NAMES => {
                self.dropped += 1;
                return;
            }
            None => {
                let template = &NAMED[t];
                let mut name = std::mem::take(&mut self.fragment);
                name.clear();
                let i = if sanitize_into(raw, &mut name) {
                    self.id.clear();
                    self.id.push_str(template.prefix);
                    if !template.fixed {
                        self.id.push_str(&name);
                        self.id.push_str(template.suffix);
                    }
                    self.intern(template.family, template.power, &[(template.label, &name)])
                } else {
                    NAMELESS
                };
                self.fragment = name;
                self.named[t].insert(raw.into(), i);
                i
            }
        };
        if series != NAMELESS {
            self.emit(out, series, value);
        }
    }
}

/// What a line adds up over its CPU cores.
#[derive(Debug, Default)]
struct LineState {
    cpu_sum: f64,
    cpu_with_usage: u32,
    cpu_online: u32,
    cpu_listed: bool,
}

/// Writes `value` as `[a-z0-9_]` into `out` the way `sample::sanitize` does,
/// without allocating; false when nothing usable is left.
fn sanitize_into(raw: &str, out: &mut String) -> bool {
    let start = out.len();
    let mut pending_sep = false;
    for ch in raw.trim().chars() {
        if ch.is_ascii_alphanumeric() {
            if pending_sep && out.len() > start {
                out.push('_');
            }
            pending_sep = false;
            out.push(ch.to_ascii_lowercase());
        } else {
            pending_sep = true;
        }
    }
    out.len() > start
}

/// A small integer as text, without allocating.
fn decimal(n: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// A fast hash for short metric ids and names: a rotate, xor and multiply per 8
/// bytes. The keys come from tegrastats' output and the tables are bounded, so
/// the strength of a keyed hash is not needed here; its cost per value would be.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl LineMapper {
    fn field(&mut self, field: Field<'_>, line: &mut LineState, out: &mut Vec<Mapped>) {
        match field {
            Field::Ram {
                used_mb,
                total_mb,
                lfb,
            } => {
                self.plain(out, RAM_USED_ID, used_mb);
                self.plain(out, RAM_TOTAL_ID, total_mb);
                // Derived only from figures that are possible themselves.
                if total_mb > 0.0 && RAM_USED.admits(used_mb) {
                    self.plain(out, RAM_PERCENT_ID, used_mb * 100.0 / total_mb);
                }
                if let Some(lfb) = lfb {
                    self.plain(out, LFB_BLOCKS_ID, lfb.blocks);
                    self.plain(out, LFB_BLOCK_SIZE_ID, lfb.block_mb);
                    self.plain(out, LFB_TOTAL_ID, lfb.blocks * lfb.block_mb);
                }
            }
            Field::Swap {
                used_mb,
                total_mb,
                cached_mb,
            } => {
                self.plain(out, SWAP_USED_ID, used_mb);
                self.plain(out, SWAP_TOTAL_ID, total_mb);
                self.plain_some(out, SWAP_CACHED_ID, cached_mb);
            }
            Field::Iram {
                used_kb,
                total_kb,
                lfb_kb,
            } => {
                self.plain(out, IRAM_USED_ID, used_kb);
                self.plain(out, IRAM_TOTAL_ID, total_kb);
                if total_kb > 0.0 && IRAM_USED.admits(used_kb) {
                    self.plain(out, IRAM_PERCENT_ID, used_kb * 100.0 / total_kb);
                }
                self.plain_some(out, IRAM_LFB_ID, lfb_kb);
            }
            Field::CpuCore { index, .. } if index >= MAX_CORES => self.dropped += 1,
            Field::GpuFreq { gpc, .. } if gpc >= MAX_GPCS => self.dropped += 1,
            Field::CpuCore {
                index,
                online,
                usage,
                freq_mhz,
            } => {
                line.cpu_listed = true;
                let status = if online { 1.0 } else { 0.0 };
                self.numbered(out, CORE_STATUS, index, Some(status));
                if online {
                    line.cpu_online += 1;
                    if let Some(u) = usage.filter(|u| CPU_USAGE.admits(*u)) {
                        line.cpu_sum += u;
                        line.cpu_with_usage += 1;
                    }
                    self.numbered(out, CORE_USAGE, index, usage);
                    self.numbered(out, CORE_FREQ, index, freq_mhz);
                }
            }
            Field::Emc { usage, freq_mhz } => {
                self.plain_some(out, EMC_USAGE_ID, usage);
                self.plain_some(out, EMC_FREQ_ID, freq_mhz);
            }
            Field::GpuUsage {
                second: false,
                usage,
            } => self.plain(out, GPU_USAGE_ID, usage),
            Field::GpuUsage {
                second: true,
                usage,
            } => self.plain(out, GPU2_USAGE_ID, usage),
            Field::GpuFreq { gpc, mhz } => self.numbered(out, GPC_FREQ, gpc, Some(mhz)),
            Field::Engine { name, state } => match state {
                EngineState::Off => self.named(out, ENGINE_STATUS, name, Some(0.0)),
                EngineState::On { usage, freq_mhz } => {
                    // A clock means the engine runs; a bare `NAME_LOAD p%` says
                    // nothing about on or off.
                    if freq_mhz.is_some() {
                        self.named(out, ENGINE_STATUS, name, Some(1.0));
                    }
                    self.named(out, ENGINE_USAGE_T, name, usage);
                    self.named(out, ENGINE_FREQ_T, name, freq_mhz);
                }
            },
            Field::Mts { fg, bg } => {
                self.plain(out, MTS_FG_ID, fg);
                self.plain(out, MTS_BG_ID, bg);
            }
            Field::EdpLimit { mhz } => self.plain(out, EDP_LIMIT_ID, mhz),
            Field::Temp {
                name,
                celsius,
                max_celsius,
            } => {
                self.named(out, TEMP_T, name, celsius);
                self.named(out, TEMP_MAX_T, name, max_celsius);
            }
            Field::Rail {
                name,
                current_mw,
                average_mw,
                max_mw,
            } => {
                let watts = |mw: f64| mw / 1000.0;
                self.named(out, POWER_T, name, Some(watts(current_mw)));
                self.named(out, POWER_AVG_T, name, average_mw.map(watts));
                self.named(out, POWER_MAX_T, name, max_mw.map(watts));
                if INPUT_RAILS.contains(&name) {
                    self.named(out, POWER_INPUT_T, name, Some(watts(current_mw)));
                }
            }
        }
    }

    fn finish(&mut self, line: &LineState, out: &mut Vec<Mapped>) {
        if !line.cpu_listed {
            return;
        }
        self.plain(out, CPU_ACTIVE_ID, f64::from(line.cpu_online));
        if line.cpu_with_usage > 0 {
            let avg = line.cpu_sum / f64::from(line.cpu_with_usage);
            self.plain(out, CPU_AVG_ID, avg);
        }
    }
}

const RAM_USED_ID: Plain = Plain("jetson_ram_used_mb", &RAM_USED);
const RAM_TOTAL_ID: Plain = Plain("jetson_ram_total_mb", &RAM_TOTAL);
const RAM_PERCENT_ID: Plain = Plain("jetson_ram_used_percent", &RAM_PERCENT);
const LFB_BLOCKS_ID: Plain = Plain("jetson_lfb_blocks", &LFB_BLOCKS);
const LFB_BLOCK_SIZE_ID: Plain = Plain("jetson_lfb_block_size_mb", &LFB_BLOCK_SIZE);
const LFB_TOTAL_ID: Plain = Plain("jetson_lfb_total_mb", &LFB_TOTAL);
const SWAP_USED_ID: Plain = Plain("jetson_swap_used_mb", &SWAP_USED);
const SWAP_TOTAL_ID: Plain = Plain("jetson_swap_total_mb", &SWAP_TOTAL);
const SWAP_CACHED_ID: Plain = Plain("jetson_swap_cached_mb", &SWAP_CACHED);
const IRAM_USED_ID: Plain = Plain("jetson_iram_used_kb", &IRAM_USED);
const IRAM_TOTAL_ID: Plain = Plain("jetson_iram_total_kb", &IRAM_TOTAL);
const IRAM_PERCENT_ID: Plain = Plain("jetson_iram_used_percent", &IRAM_PERCENT);
const IRAM_LFB_ID: Plain = Plain("jetson_iram_lfb_kb", &IRAM_LFB);
const EMC_USAGE_ID: Plain = Plain("jetson_emc_usage_percent", &EMC_USAGE);
const EMC_FREQ_ID: Plain = Plain("jetson_emc_freq_mhz", &EMC_FREQ);
const GPU_USAGE_ID: Plain = Plain("jetson_gpu_usage_percent", &GPU_USAGE);
const GPU2_USAGE_ID: Plain = Plain("jetson_gpu2_usage_percent", &GPU2_USAGE);
const MTS_FG_ID: Plain = Plain("jetson_mts_fg_percent", &MTS_FG);
const MTS_BG_ID: Plain = Plain("jetson_mts_bg_percent", &MTS_BG);
const EDP_LIMIT_ID: Plain = Plain("jetson_edp_limit_mhz", &EDP_LIMIT);
const CPU_ACTIVE_ID: Plain = Plain("jetson_cpu_active_cores", &CPU_ACTIVE);
const CPU_AVG_ID: Plain = Plain("jetson_cpu_avg_usage_percent", &CPU_AVG);

/// Maps one line with a mapper of its own: `(id, value)` in line order. For tests
/// and one-off use; a stream keeps one [`LineMapper`].
pub fn map_line(line: &str) -> Vec<(Arc<str>, f64)> {
    let mut mapper = LineMapper::new();
    let mut out = Vec::new();
    mapper.map(line, &mut out);
    out.iter()
        .map(|m| (mapper.series(m).id.clone(), m.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(line: &str) -> Vec<(String, f64)> {
        map_line(line)
            .into_iter()
            .map(|(id, v)| (id.to_string(), v))
            .collect()
    }

    fn value(line: &str, id: &str) -> Option<f64> {
        ids(line).into_iter().find(|(i, _)| i == id).map(|(_, v)| v)
    }

    #[test]
    fn spec_names_from_the_spec_examples() {
        let xavier = "RAM 2690/6854MB (lfb 6x1MB) SWAP 479/3427MB (cached 3MB) CPU [3%@1904,7%@1906,1%@1905,0%@1907,off,off] \
                      EMC_FREQ 0%@1600 GR3D_FREQ 0%@[510] VIC_FREQ 601 APE 150 AUX@39C CPU@39.5C AO@37.5C GPU@37.5C PMIC@50C \
                      VDD_IN 5079mW/5079mW VDD_CPU_GPU_CV 696mW/696mW VDD_SOC 1104mW/1104mW";
        let cases = [
            ("jetson_ram_used_mb", 2690.0),
            ("jetson_ram_total_mb", 6854.0),
            ("jetson_lfb_blocks", 6.0),
            ("jetson_lfb_total_mb", 6.0),
            ("jetson_swap_used_mb", 479.0),
            ("jetson_swap_total_mb", 3427.0),
            ("jetson_swap_cached_mb", 3.0),
            ("jetson_cpu_core0_usage_percent", 3.0),
            ("jetson_cpu_core1_freq_mhz", 1906.0),
            ("jetson_cpu_core4_status", 0.0),
            ("jetson_cpu_core3_status", 1.0),
            ("jetson_cpu_avg_usage_percent", 2.75),
            ("jetson_cpu_active_cores", 4.0),
            ("jetson_emc_usage_percent", 0.0),
            ("jetson_emc_freq_mhz", 1600.0),
            ("jetson_gpu_usage_percent", 0.0),
            ("jetson_gpu_freq0_mhz", 510.0),
            ("jetson_vic_freq_mhz", 601.0),
            ("jetson_ape_freq_mhz", 150.0),
            ("jetson_temp_aux_celsius", 39.0),
            ("jetson_temp_cpu_celsius", 39.5),
            ("jetson_temp_pmic_celsius", 50.0),
            ("jetson_power_vdd_in_watts", 5.079),
            ("jetson_power_vdd_in_avg_watts", 5.079),
            ("jetson_power_vdd_cpu_gpu_cv_watts", 0.696),
            ("jetson_power_vdd_soc_avg_watts", 1.104),
            ("jetson_power_input_watts", 5.079),
        ];
        for (id, want) in cases {
            assert_eq!(value(xavier, id), Some(want), "{id}");
        }
        assert!(
            (value(xavier, "jetson_ram_used_percent").unwrap() - 2690.0 * 100.0 / 6854.0).abs()
                < 1e-12
        );
        assert_eq!(
            value(xavier, "jetson_cpu_core4_usage_percent"),
            None,
            "offline core has no usage"
        );

        let nano = "RAM 1409/3964MB (lfb 28x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) \
                    CPU [22%@518,67%@518,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 \
                    PLL@28.5C CPU@32C PMIC@50C GPU@30.5C AO@39.5C thermal@31.25C POM_5V_IN 2003/2003 POM_5V_GPU 0/0 POM_5V_CPU 320/320";
        assert_eq!(value(nano, "jetson_iram_used_kb"), Some(0.0));
        assert_eq!(value(nano, "jetson_iram_total_kb"), Some(252.0));
        assert_eq!(value(nano, "jetson_iram_used_percent"), Some(0.0));
        assert_eq!(value(nano, "jetson_iram_lfb_kb"), Some(252.0));
        assert_eq!(value(nano, "jetson_lfb_total_mb"), Some(112.0));
        assert_eq!(value(nano, "jetson_gpu_freq0_mhz"), Some(76.0));
        assert_eq!(value(nano, "jetson_temp_thermal_celsius"), Some(31.25));
        assert_eq!(value(nano, "jetson_power_pom_5v_in_watts"), Some(2.003));
        assert_eq!(value(nano, "jetson_power_input_watts"), Some(2.003));
        assert_eq!(value(nano, "jetson_cpu_avg_usage_percent"), Some(44.5));
    }

    #[test]
    fn no_input_total_where_the_board_has_none() {
        let agx_orin = "RAM 7822/62841MB (lfb 73x4MB) GR3D_FREQ 31%@[305,305] VDD_GPU_SOC 3176mW/3176mW VDD_CPU_CV 1187mW/1187mW VIN_SYS_5V0 4614mW/4614mW NC 0mW/0mW";
        let all = ids(agx_orin);
        assert!(
            all.iter().all(|(id, _)| id != "jetson_power_input_watts"),
            "{all:?}"
        );
        assert_eq!(value(agx_orin, "jetson_gpu_freq1_mhz"), Some(305.0));
        assert!(all.iter().all(|(id, _)| !id.starts_with("jetson_power_nc")));
        let xavier_agx = "GPU 466/466 CPU 466/466 SOC 932/932 CV 0/0 VDDRQ 0/0 SYS5V 1854/1854";
        assert!(
            ids(xavier_agx)
                .iter()
                .all(|(id, _)| id != "jetson_power_input_watts")
        );
        let thor = "VDD_GPU 2371mW/2371mW VDD_CPU_SOC_MSS 8299mW/8299mW VIN_SYS_5V0 7044mW/7044mW VIN 24830mW/24830mW";
        assert_eq!(value(thor, "jetson_power_input_watts"), Some(24.83));
    }

    #[test]
    fn engines_jp7_and_sentinels() {
        let line = "GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC 40%@115 PVA0_FREQ off APE 174 \
                    cpu@52.968C/52.968C CV0@-256C VDD_GPU_SOC 5139mW/5139mW/5139mW";
        assert_eq!(value(line, "jetson_nvenc0_status"), Some(0.0));
        assert_eq!(value(line, "jetson_nvenc0_freq_mhz"), None);
        assert_eq!(value(line, "jetson_nvdec_status"), Some(1.0));
        assert_eq!(value(line, "jetson_nvdec_usage_percent"), Some(40.0));
        assert_eq!(value(line, "jetson_nvdec_freq_mhz"), Some(115.0));
        assert_eq!(value(line, "jetson_pva0_status"), Some(0.0));
        assert_eq!(value(line, "jetson_temp_cpu_max_celsius"), Some(52.968));
        assert_eq!(
            value(line, "jetson_temp_cv0_celsius"),
            None,
            "-256 is absent"
        );
        assert_eq!(
            value(line, "jetson_power_vdd_gpu_soc_max_watts"),
            Some(5.139)
        );
    }

    /// One mapper over many lines gives what a fresh one gives for each line, and
    /// keeps no more series than it may.
    #[test]
    fn a_mapper_remembers_series_and_stays_bounded() {
        let corpus: Vec<&str> = properties::corpus_lines();
        let mut mapper = LineMapper::new();
        let mut out = Vec::new();
        for round in 0..3 {
            for line in &corpus {
                out.clear();
                mapper.map(line, &mut out);
                let reused: Vec<(String, f64)> = out
                    .iter()
                    .map(|m| (mapper.series(m).id.to_string(), m.value))
                    .collect();
                assert_eq!(reused, ids(line), "round {round}: {line}");
            }
        }
        let known = mapper.known();
        assert!(known > 100 && known < MAX_SERIES, "{known}");
        // A corrupt line naming 5,000 cores and 500 rails: the first MAX_CORES
        // cores and MAX_NAMES rail names, every id once; the rest dropped, counted.
        let cores: Vec<String> = (0..5000)
            .map(|i| format!("{}%@{}", i % 100, 1000 + i))
            .collect();
        let rails: Vec<String> = (0..500).map(|i| format!("RAIL_{i} 1mW/1mW")).collect();
        let huge = format!("CPU [{}] {}", cores.join(","), rails.join(" "));
        let mut fresh = LineMapper::new();
        out.clear();
        let stats = fresh.map(&huge, &mut out);
        // Cores past 255, and rails past the first 128 names (current and average).
        assert_eq!(stats.dropped, 4744 + (500 - MAX_NAMES as u32) * 2);
        assert!(fresh.known() <= MAX_SERIES, "{}", fresh.known());
        let mut seen = std::collections::HashSet::new();
        for m in &out {
            assert!(
                seen.insert(fresh.series(m).id.clone()),
                "unique ids in a line"
            );
        }
        let last_core = out
            .iter()
            .map(|m| fresh.series(m))
            .rfind(|s| s.id.ends_with("_freq_mhz"))
            .expect("cores");
        assert_eq!(&*last_core.id, "jetson_cpu_core255_freq_mhz");
        assert_eq!(last_core.labels, [("core", Arc::from("255"))]);
        // And the next ordinary line maps as before.
        out.clear();
        mapper.map(corpus[0], &mut out);
        let again: Vec<(String, f64)> = out
            .iter()
            .map(|m| (mapper.series(m).id.to_string(), m.value))
            .collect();
        assert_eq!(again, ids(corpus[0]));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::sample::is_valid_metric_name;
    use proptest::prelude::*;

    const CORPUS: &str = include_str!("../../../tests/fixtures/tegrastats/corpus.tsv");

    pub(super) fn corpus_lines() -> Vec<&'static str> {
        CORPUS
            .lines()
            .skip(1)
            .map(|r| r.rsplit('\t').next().unwrap_or(""))
            .collect()
    }

    /// Whatever the input: no panic, ids that are metric names, finite values,
    /// output bounded by the input's size.
    fn check(line: &str) {
        let mut out = Vec::new();
        let mut mapper = LineMapper::new();
        let stats = mapper.map(line, &mut out);
        let tokens = line.split_ascii_whitespace().count();
        assert!((stats.fields + stats.unknown) as usize <= tokens);
        // A CPU list token yields up to 3 samples per entry; others a handful.
        assert!(
            out.len() <= 8 * line.len() + 2,
            "{} samples from {} bytes",
            out.len(),
            line.len()
        );
        for m in &out {
            let id = &mapper.series(m).id;
            assert!(is_valid_metric_name(id), "{id:?} from {line:?}");
            assert!(m.value.is_finite());
        }
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Delete(usize, usize),
        Insert(usize, String),
        DuplicateToken(usize),
        SwapTokens(usize, usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), 0usize..20).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<usize>(), "[ -~%@/\\[\\],xkMBCmW\u{0}\u{fffd}]{0,8}")
                .prop_map(|(at, s)| Edit::Insert(at, s)),
            any::<usize>().prop_map(Edit::DuplicateToken),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapTokens(a, b)),
        ]
    }

    fn apply(line: &str, edits: &[Edit]) -> String {
        let mut s: Vec<char> = line.chars().collect();
        for e in edits {
            match e {
                Edit::Delete(at, n) if !s.is_empty() => {
                    let at = at % s.len();
                    let end = (at + n).min(s.len());
                    s.drain(at..end);
                }
                Edit::Insert(at, text) => {
                    let at = if s.is_empty() { 0 } else { at % (s.len() + 1) };
                    for (i, c) in text.chars().enumerate() {
                        s.insert(at + i, c);
                    }
                }
                Edit::DuplicateToken(i) | Edit::SwapTokens(i, _) => {
                    let text: String = s.iter().collect();
                    let mut tokens: Vec<&str> = text.split(' ').collect();
                    if tokens.is_empty() {
                        continue;
                    }
                    let a = i % tokens.len();
                    match e {
                        Edit::SwapTokens(_, j) => {
                            let b = j % tokens.len();
                            tokens.swap(a, b);
                        }
                        _ => tokens.insert(a, tokens[a]),
                    }
                    s = tokens.join(" ").chars().collect();
                }
                _ => {}
            }
        }
        s.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_breaks_the_parser(line in "\\PC{0,300}") {
            check(&line);
        }

        #[test]
        fn tegrastats_alphabet_never_breaks_the_parser(line in "[A-Za-z0-9_ %@/\\[\\],.()x-]{0,300}") {
            check(&line);
        }

        #[test]
        fn mutated_corpus_lines_never_break_the_parser(
            index in 0usize..66,
            edits in proptest::collection::vec(edit(), 0..12),
        ) {
            let lines = corpus_lines();
            let line = apply(lines[index % lines.len()], &edits);
            check(&line);
        }
    }
}
