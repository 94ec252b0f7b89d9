//! The `tegrastats` collector: Jetson RAM, CPU, GPU, EMC, engines, temperatures and
//! power rails, from one long-lived `tegrastats` child (or a replayed recording).
//!
//! [`map_line`] turns one line into samples with the spec's flat ids
//! (`jetson_power_vdd_gpu_soc_watts`, `jetson_cpu_core0_usage_percent`, ...) and
//! labeled families (`jetson_power_watts{rail="vdd_gpu_soc"}`); the `parse`
//! subcommand and the collector share it. The stream itself (child process,
//! restarts, replay) is `sources::tegrastats::stream`. Every id is listed in
//! `docs/metrics.md`, the per-board rules in `docs/tegrastats.md`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::DropGuard;

use super::{BuildContext, CollectError, Collector};
use crate::lock::lock;
use crate::sample::{Family, MHZ, MIB, Sample, SampleSink, sanitize};
use crate::sources::tegrastats::parse::{EngineState, Field, LineStats, parse_line};
use crate::sources::tegrastats::stream::{self, LineSink, Source, StreamStatus};

pub const NAME: &str = "tegrastats";

static RESTARTS: Family = Family::counter(
    "edge_exporter_tegrastats_restarts_total",
    "Times tegrastats was started again after it exited, failed to start or went silent",
    "",
);
static LINES: Family = Family::counter(
    "edge_exporter_tegrastats_lines_total",
    "tegrastats lines read",
    "",
);
static UNKNOWN_TOKENS: Family = Family::counter(
    "edge_exporter_tegrastats_unknown_tokens_total",
    "tegrastats tokens that matched no known form and were skipped",
    "",
);
static UNREADABLE: Family = Family::counter(
    "edge_exporter_tegrastats_unreadable_lines_total",
    "tegrastats lines with nothing recognisable, too long or not UTF-8",
    "",
);
static UP: Family = Family::gauge(
    "edge_exporter_tegrastats_up",
    "Whether tegrastats lines are arriving (1) or not (0)",
    "",
);

/// Reads tegrastats in the background and hands out the latest line's samples.
pub struct TegrastatsCollector {
    shared: Arc<Mutex<Shared>>,
    started: Instant,
    interval: Duration,
    /// Stops the stream (and its child) when the collector goes away.
    _stop: DropGuard,
}

impl std::fmt::Debug for TegrastatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TegrastatsCollector")
            .finish_non_exhaustive()
    }
}

/// What the stream task shares with the collector.
#[derive(Debug)]
struct Shared {
    latest: Vec<Mapped>,
    observed: Option<SystemTime>,
    status: StreamStatus,
    restarts: u64,
    lines: u64,
    unknown_tokens: u64,
    unreadable: u64,
    /// Reused for mapping each line.
    scratch: Vec<Mapped>,
}

struct Sink(Arc<Mutex<Shared>>);

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.0)
    }
}

impl LineSink for Sink {
    fn line(&mut self, line: &str) {
        let mut shared = self.lock();
        let shared = &mut *shared;
        shared.scratch.clear();
        let stats = map_line(line, &mut shared.scratch);
        shared.lines += 1;
        shared.unknown_tokens += u64::from(stats.unknown);
        if shared.scratch.is_empty() {
            shared.unreadable += 1;
            return;
        }
        std::mem::swap(&mut shared.latest, &mut shared.scratch);
        shared.observed = Some(SystemTime::now());
    }

    fn unreadable(&mut self) {
        let mut shared = self.lock();
        shared.lines += 1;
        shared.unreadable += 1;
    }

    fn status(&mut self, status: StreamStatus) {
        self.lock().status = status;
    }

    fn restarted(&mut self) {
        self.lock().restarts += 1;
    }
}

impl TegrastatsCollector {
    /// Starts the stream on the context's tracker; it stops with the collector.
    pub fn start(source: Source, interval: Duration, ctx: &BuildContext) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            latest: Vec::new(),
            observed: None,
            status: StreamStatus::Starting,
            restarts: 0,
            lines: 0,
            unknown_tokens: 0,
            unreadable: 0,
            scratch: Vec::new(),
        }));
        let cancel = ctx.cancel.child_token();
        ctx.tracker.spawn(stream::run(
            source,
            interval,
            Sink(shared.clone()),
            cancel.clone(),
        ));
        TegrastatsCollector {
            shared,
            started: Instant::now(),
            interval,
            _stop: cancel.drop_guard(),
        }
    }
}

impl Collector for TegrastatsCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let shared = lock(&self.shared);
        if let Some(observed) = shared.observed {
            for m in &shared.latest {
                let mut sample =
                    Sample::with_id(m.id.as_str(), m.family, m.value).observed(observed);
                for (k, v) in &m.labels {
                    sample = sample.label(k, v.as_str());
                }
                out.push(sample);
            }
        }
        let up = matches!(shared.status, StreamStatus::Running);
        for (family, value) in [
            (&RESTARTS, shared.restarts as f64),
            (&LINES, shared.lines as f64),
            (&UNKNOWN_TOKENS, shared.unknown_tokens as f64),
            (&UNREADABLE, shared.unreadable as f64),
            (&UP, if up { 1.0 } else { 0.0 }),
        ] {
            out.push(Sample::own(family, value));
        }
        match &shared.status {
            StreamStatus::Running => Ok(()),
            StreamStatus::Down(reason) => Err(CollectError::Stream(reason.clone())),
            // The first line takes one interval to arrive.
            StreamStatus::Starting
                if self.started.elapsed() < stream::silence_limit(self.interval) =>
            {
                Ok(())
            }
            StreamStatus::Starting => Err(CollectError::Silent(self.started.elapsed().as_secs())),
        }
    }
}

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
static POWER: Family = Family::gauge("jetson_power_watts", "Power rail, instantaneous", "watts");
static POWER_AVG: Family = Family::gauge(
    "jetson_power_avg_watts",
    "Power rail, average since tegrastats started",
    "watts",
);
static POWER_MAX: Family = Family::gauge(
    "jetson_power_max_watts",
    "Power rail, highest seen by tegrastats (JetPack 7.2)",
    "watts",
);
static POWER_INPUT: Family = Family::gauge(
    "jetson_power_input_watts",
    "Power into the module, from its input rail (VDD_IN, POM_5V_IN or VIN); absent on boards without one",
    "watts",
);

/// Rails that measure the power into the whole module, where a board has one.
/// `VIN_SYS_5V0` (AGX Orin, Thor) is a 5 V system rail, not the module input, and
/// AGX Xavier's rails overlap: neither gets a total, and no rails are ever summed.
pub const INPUT_RAILS: &[&str] = &["VDD_IN", "POM_5V_IN", "VIN"];

/// One sample built from a line, before the collector stamps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub id: String,
    pub family: &'static Family,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// Maps one tegrastats line to samples, appended to `out` in line order. Ids are
/// unique within a line (the first wins).
pub fn map_line(line: &str, out: &mut Vec<Mapped>) -> LineStats {
    let mut m = Mapper {
        out,
        seen: HashSet::new(),
        cpu_sum: 0.0,
        cpu_with_usage: 0,
        cpu_online: 0,
        cpu_listed: false,
    };
    let stats = parse_line(line, |field| m.field(field));
    m.finish();
    stats
}

struct Mapper<'o> {
    out: &'o mut Vec<Mapped>,
    seen: HashSet<String>,
    cpu_sum: f64,
    cpu_with_usage: u32,
    cpu_online: u32,
    cpu_listed: bool,
}

impl Mapper<'_> {
    fn push(
        &mut self,
        id: String,
        family: &'static Family,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        if !value.is_finite() || !self.seen.insert(id.clone()) {
            return;
        }
        self.out.push(Mapped {
            id,
            family,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        });
    }

    fn push_some(
        &mut self,
        id: impl FnOnce() -> String,
        family: &'static Family,
        labels: &[(&'static str, &str)],
        value: Option<f64>,
    ) {
        if let Some(v) = value {
            self.push(id(), family, labels, v);
        }
    }

    fn field(&mut self, field: Field<'_>) {
        match field {
            Field::Ram {
                used_mb,
                total_mb,
                lfb,
            } => {
                self.push("jetson_ram_used_mb".into(), &RAM_USED, &[], used_mb);
                self.push("jetson_ram_total_mb".into(), &RAM_TOTAL, &[], total_mb);
                if total_mb > 0.0 {
                    self.push(
                        "jetson_ram_used_percent".into(),
                        &RAM_PERCENT,
                        &[],
                        used_mb * 100.0 / total_mb,
                    );
                }
                if let Some(lfb) = lfb {
                    self.push("jetson_lfb_blocks".into(), &LFB_BLOCKS, &[], lfb.blocks);
                    self.push(
                        "jetson_lfb_block_size_mb".into(),
                        &LFB_BLOCK_SIZE,
                        &[],
                        lfb.block_mb,
                    );
                    self.push(
                        "jetson_lfb_total_mb".into(),
                        &LFB_TOTAL,
                        &[],
                        lfb.blocks * lfb.block_mb,
                    );
                }
            }
            Field::Swap {
                used_mb,
                total_mb,
                cached_mb,
            } => {
                self.push("jetson_swap_used_mb".into(), &SWAP_USED, &[], used_mb);
                self.push("jetson_swap_total_mb".into(), &SWAP_TOTAL, &[], total_mb);
                self.push_some(
                    || "jetson_swap_cached_mb".into(),
                    &SWAP_CACHED,
                    &[],
                    cached_mb,
                );
            }
            Field::Iram {
                used_kb,
                total_kb,
                lfb_kb,
            } => {
                self.push("jetson_iram_used_kb".into(), &IRAM_USED, &[], used_kb);
                self.push("jetson_iram_total_kb".into(), &IRAM_TOTAL, &[], total_kb);
                if total_kb > 0.0 {
                    self.push(
                        "jetson_iram_used_percent".into(),
                        &IRAM_PERCENT,
                        &[],
                        used_kb * 100.0 / total_kb,
                    );
                }
                self.push_some(|| "jetson_iram_lfb_kb".into(), &IRAM_LFB, &[], lfb_kb);
            }
            Field::CpuCore {
                index,
                online,
                usage,
                freq_mhz,
            } => {
                self.cpu_listed = true;
                let n = index.to_string();
                let labels = [("core", n.as_str())];
                self.push(
                    format!("jetson_cpu_core{n}_status"),
                    &CPU_ONLINE,
                    &labels,
                    if online { 1.0 } else { 0.0 },
                );
                if online {
                    self.cpu_online += 1;
                    if let Some(u) = usage {
                        self.cpu_sum += u;
                        self.cpu_with_usage += 1;
                    }
                    self.push_some(
                        || format!("jetson_cpu_core{n}_usage_percent"),
                        &CPU_USAGE,
                        &labels,
                        usage,
                    );
                    self.push_some(
                        || format!("jetson_cpu_core{n}_freq_mhz"),
                        &CPU_FREQ,
                        &labels,
                        freq_mhz,
                    );
                }
            }
            Field::Emc { usage, freq_mhz } => {
                self.push_some(|| "jetson_emc_usage_percent".into(), &EMC_USAGE, &[], usage);
                self.push_some(|| "jetson_emc_freq_mhz".into(), &EMC_FREQ, &[], freq_mhz);
            }
            Field::GpuUsage {
                second: false,
                usage,
            } => {
                self.push("jetson_gpu_usage_percent".into(), &GPU_USAGE, &[], usage);
            }
            Field::GpuUsage {
                second: true,
                usage,
            } => {
                self.push("jetson_gpu2_usage_percent".into(), &GPU2_USAGE, &[], usage);
            }
            Field::GpuFreq { gpc, mhz } => {
                let n = gpc.to_string();
                self.push(
                    format!("jetson_gpu_freq{n}_mhz"),
                    &GPU_FREQ,
                    &[("gpc", &n)],
                    mhz,
                );
            }
            Field::Engine { name, state } => {
                let Some(engine) = sanitize(name) else { return };
                let labels = [("engine", engine.as_str())];
                match state {
                    EngineState::Off => {
                        self.push(
                            format!("jetson_{engine}_status"),
                            &ENGINE_ACTIVE,
                            &labels,
                            0.0,
                        );
                    }
                    EngineState::On { usage, freq_mhz } => {
                        // A clock means the engine runs; a bare `NAME_LOAD p%` says
                        // nothing about on or off.
                        if freq_mhz.is_some() {
                            self.push(
                                format!("jetson_{engine}_status"),
                                &ENGINE_ACTIVE,
                                &labels,
                                1.0,
                            );
                        }
                        self.push_some(
                            || format!("jetson_{engine}_usage_percent"),
                            &ENGINE_USAGE,
                            &labels,
                            usage,
                        );
                        self.push_some(
                            || format!("jetson_{engine}_freq_mhz"),
                            &ENGINE_FREQ,
                            &labels,
                            freq_mhz,
                        );
                    }
                }
            }
            Field::Mts { fg, bg } => {
                self.push("jetson_mts_fg_percent".into(), &MTS_FG, &[], fg);
                self.push("jetson_mts_bg_percent".into(), &MTS_BG, &[], bg);
            }
            Field::EdpLimit { mhz } => {
                self.push("jetson_edp_limit_mhz".into(), &EDP_LIMIT, &[], mhz)
            }
            Field::Temp {
                name,
                celsius,
                max_celsius,
            } => {
                let Some(sensor) = sanitize(name) else { return };
                let labels = [("sensor", sensor.as_str())];
                self.push_some(
                    || format!("jetson_temp_{sensor}_celsius"),
                    &TEMP,
                    &labels,
                    celsius,
                );
                self.push_some(
                    || format!("jetson_temp_{sensor}_max_celsius"),
                    &TEMP_MAX,
                    &labels,
                    max_celsius,
                );
            }
            Field::Rail {
                name,
                current_mw,
                average_mw,
                max_mw,
            } => {
                let Some(rail) = sanitize(name) else { return };
                let labels = [("rail", rail.as_str())];
                let watts = |mw: f64| mw / 1000.0;
                self.push(
                    format!("jetson_power_{rail}_watts"),
                    &POWER,
                    &labels,
                    watts(current_mw),
                );
                self.push_some(
                    || format!("jetson_power_{rail}_avg_watts"),
                    &POWER_AVG,
                    &labels,
                    average_mw.map(watts),
                );
                self.push_some(
                    || format!("jetson_power_{rail}_max_watts"),
                    &POWER_MAX,
                    &labels,
                    max_mw.map(watts),
                );
                if INPUT_RAILS.contains(&name) {
                    self.push(
                        "jetson_power_input_watts".into(),
                        &POWER_INPUT,
                        &labels,
                        watts(current_mw),
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        if !self.cpu_listed {
            return;
        }
        let online = self.cpu_online as f64;
        self.push("jetson_cpu_active_cores".into(), &CPU_ACTIVE, &[], online);
        if self.cpu_with_usage > 0 {
            let avg = self.cpu_sum / self.cpu_with_usage as f64;
            self.push("jetson_cpu_avg_usage_percent".into(), &CPU_AVG, &[], avg);
        }
    }
}

/// Writes the `parse` subcommand's JSON object for one line: every flat id found
/// to its number, in line order. `{}` when nothing was recognised.
pub fn line_to_json(mapped: &[Mapped], out: &mut String) {
    use std::fmt::Write as _;
    out.push('{');
    for (i, m) in mapped.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Ids are `[a-z0-9_]` (sanitized), so they need no JSON escaping.
        let _ = write!(out, "\"{}\":{}", m.id, m.value);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(line: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        map_line(line, &mut out);
        out.into_iter().map(|m| (m.id, m.value)).collect()
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

    #[test]
    fn json_lines() {
        let mut out = Vec::new();
        map_line("RAM 1/4MB (lfb 1x1MB) tj@41.5C", &mut out);
        let mut json = String::new();
        line_to_json(&out, &mut json);
        assert_eq!(
            json,
            r#"{"jetson_ram_used_mb":1,"jetson_ram_total_mb":4,"jetson_ram_used_percent":25,"jetson_lfb_blocks":1,"jetson_lfb_block_size_mb":1,"jetson_lfb_total_mb":1,"jetson_temp_tj_celsius":41.5}"#
        );
        let mut json = String::new();
        line_to_json(&[], &mut json);
        assert_eq!(json, "{}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::sample::is_valid_metric_name;
    use proptest::prelude::*;

    const CORPUS: &str = include_str!("../../tests/fixtures/tegrastats/corpus.tsv");

    fn corpus_lines() -> Vec<&'static str> {
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
        let stats = map_line(line, &mut out);
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
            assert!(is_valid_metric_name(&m.id), "{:?} from {line:?}", m.id);
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
