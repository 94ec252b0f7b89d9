//! The unit of data every collector produces and every output consumes.
//!
//! A [`Sample`] is one number with a stable id: the flat metric name of the spec
//! (`host_cpu_core0_usage_percent`), which is also its key under `metrics:` in
//! `config.yaml` and in the management API. Its [`Family`] says what the number is
//! (help, unit, gauge or counter) and names the idiomatic family the labeled style
//! groups it into (`host_cpu_usage_percent{core="0"}`).
//!
//! This module owns the data model only; rendering lives in `exposition`, health and
//! expiry in `scheduler`.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Whether a value can go up and down or only up (until a reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    Counter,
    /// Samples `<name>_bucket{le}`, `<name>_sum`, `<name>_count` under one header.
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// What a group of samples measures. Families are `static`: the varying part of a
/// sample (a core, a sensor, a rail) is a label, never a new family.
#[derive(Debug, PartialEq)]
pub struct Family {
    /// Family name in the labeled style, e.g. `host_cpu_usage_percent`.
    pub name: &'static str,
    /// One line of help; the flat style appends the sample's labels to it.
    pub help: &'static str,
    /// Unit of the labeled family as OpenMetrics writes it (`celsius`, `bytes`);
    /// empty for none.
    pub unit: &'static str,
    pub kind: MetricKind,
    /// The labeled style shows `value × labeled_scale`, so its families are in
    /// base units where the flat ids are not (MiB → bytes, MHz → hertz).
    pub labeled_scale: f64,
    /// The values the quantity can physically take (in the flat value's unit); a
    /// reading outside is dropped by the [`SampleSink`] and counted. Set from the
    /// unit (see [`valid_range`]); counters are never negative.
    pub min: f64,
    pub max: f64,
}

/// Lowest temperature accepted, °C: below any place a board runs.
pub const MIN_CELSIUS: f64 = -100.0;
/// Highest temperature accepted, °C: above any silicon that still works.
pub const MAX_CELSIUS: f64 = 250.0;

/// The range a quantity of `unit` can take: percentages 0–100; amounts (bytes,
/// hertz, rpm, joules, seconds) not negative; temperatures [`MIN_CELSIUS`] to
/// [`MAX_CELSIUS`]; anything else (watts, volts, amps, which a meter can report
/// negative) unbounded.
pub const fn valid_range(unit: &str) -> (f64, f64) {
    const fn is(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    if is(unit, "percent") {
        (0.0, 100.0)
    } else if is(unit, "bytes")
        || is(unit, "hertz")
        || is(unit, "rpm")
        || is(unit, "joules")
        || is(unit, "seconds")
    {
        (0.0, f64::INFINITY)
    } else if is(unit, "celsius") {
        (MIN_CELSIUS, MAX_CELSIUS)
    } else {
        (f64::NEG_INFINITY, f64::INFINITY)
    }
}

impl Family {
    pub const fn gauge(name: &'static str, help: &'static str, unit: &'static str) -> Family {
        let (min, max) = valid_range(unit);
        Family {
            name,
            help,
            unit,
            kind: MetricKind::Gauge,
            labeled_scale: 1.0,
            min,
            max,
        }
    }

    /// A counter: it only goes up, and is never negative.
    pub const fn counter(name: &'static str, help: &'static str, unit: &'static str) -> Family {
        let gauge = Family::gauge(name, help, unit);
        Family {
            kind: MetricKind::Counter,
            min: if gauge.min > 0.0 { gauge.min } else { 0.0 },
            ..gauge
        }
    }

    /// Only values from `min` up are possible (a rail's power, say).
    pub const fn at_least(self, min: f64) -> Family {
        Family { min, ..self }
    }

    /// Whether `value` is a reading this family can take.
    pub fn admits(&self, value: f64) -> bool {
        value.is_finite() && value >= self.min && value <= self.max
    }

    /// A histogram: its samples are the `_bucket`, `_sum` and `_count` series.
    pub const fn histogram(name: &'static str, help: &'static str, unit: &'static str) -> Family {
        Family {
            kind: MetricKind::Histogram,
            ..Family::gauge(name, help, unit)
        }
    }

    /// Sets the factor from the flat value to the labeled family's unit.
    pub const fn scaled(self, labeled_scale: f64) -> Family {
        Family {
            labeled_scale,
            ..self
        }
    }
}

/// MiB (the "MB" of flat ids such as `host_ram_used_mb`) in bytes.
pub const MIB: f64 = 1024.0 * 1024.0;
/// MHz in hertz.
pub const MHZ: f64 = 1e6;

/// One label of a sample. Label names are static; values come from the device.
pub type Label = (&'static str, Arc<str>);

/// One measured value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The stable flat id (the spec's metric name).
    pub id: Arc<str>,
    pub family: &'static Family,
    /// Labels that carry the varying part of the id; used by the labeled style only.
    pub labels: Vec<Label>,
    /// Labels shown in both styles (e.g. `plug` on Shelly samples, `collector` on the
    /// exporter's own health samples).
    pub const_labels: Vec<Label>,
    pub value: f64,
    /// When the value was observed at its source. Stream sources (tegrastats, plugs)
    /// set the time a line or frame arrived; the scheduler fills in collection time
    /// for the rest. Expiry is judged on this.
    pub observed_at: Option<SystemTime>,
    /// Device samples carry `device_type` and `hostname`; the exporter's own do not.
    pub device: bool,
}

impl Sample {
    /// A device sample with no labels: its id and family name are the same.
    pub fn new(family: &'static Family, value: f64) -> Self {
        Self::with_id(family.name, family, value)
    }

    /// A device sample whose flat id differs from its family name.
    pub fn with_id(id: impl Into<Arc<str>>, family: &'static Family, value: f64) -> Self {
        Sample {
            id: id.into(),
            family,
            labels: Vec::new(),
            const_labels: Vec::new(),
            value,
            observed_at: None,
            device: true,
        }
    }

    /// One of the exporter's own samples (its health, HTTP and process metrics):
    /// without the device labels, always shown, never listed under `metrics:`.
    pub fn own(family: &'static Family, value: f64) -> Self {
        Self::own_with_id(family.name, family, value)
    }

    /// An own sample whose id differs from its family name (a histogram's series).
    pub fn own_with_id(id: impl Into<Arc<str>>, family: &'static Family, value: f64) -> Self {
        Sample {
            device: false,
            ..Self::with_id(id, family, value)
        }
    }

    /// Adds a label used by the labeled style.
    pub fn label(mut self, name: &'static str, value: impl Into<Arc<str>>) -> Self {
        self.labels.push((name, value.into()));
        self
    }

    /// Adds a label shown in both styles.
    pub fn const_label(mut self, name: &'static str, value: impl Into<Arc<str>>) -> Self {
        self.const_labels.push((name, value.into()));
        self
    }

    pub fn observed(mut self, at: SystemTime) -> Self {
        self.observed_at = Some(at);
        self
    }
}

/// What a collector pushes its samples into during one collection.
///
/// Two rules hold for everything a collector produces, so no collector writes them
/// itself:
/// * "a missing value is absent: never 0, never NaN": every reader returns
///   `Option`, [`SampleSink::push_some`] turns it into a sample or nothing, and a
///   value that is not finite is dropped;
/// * a series is unique within one collection: a second sample with the id and
///   constant labels of one already pushed is dropped (the first wins), so two
///   sources that would name the same series cannot make the output invalid.
#[derive(Debug, Default)]
pub struct SampleSink {
    samples: Vec<Sample>,
    /// Series pushed so far: hash of id and constant labels → index in `samples`.
    series: std::collections::HashMap<u64, usize>,
    /// Readings dropped because their family cannot take them.
    rejected: u64,
}

impl SampleSink {
    /// Takes `sample` if its value is one its family can take (finite, within the
    /// family's range: no negative amount or counter, no percentage over 100, no
    /// temperature outside the plausible) and its series is new; returns whether it
    /// was taken. An impossible reading is counted in [`SampleSink::rejected`].
    pub fn push(&mut self, sample: Sample) -> bool {
        use std::hash::{BuildHasher, Hash, Hasher};
        if !sample.value.is_finite() {
            return false;
        }
        if !sample.family.admits(sample.value) {
            tracing::debug!(id = %sample.id, value = sample.value, "impossible reading dropped");
            self.rejected += 1;
            return false;
        }
        let mut hasher =
            std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
        sample.id.hash(&mut hasher);
        sample.const_labels.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(&i) = self.series.get(&key) {
            let first = &self.samples[i];
            if first.id == sample.id && first.const_labels == sample.const_labels {
                tracing::debug!(id = %sample.id, "duplicate series in one collection skipped");
                return false;
            }
        } else {
            self.series.insert(key, self.samples.len());
        }
        self.samples.push(sample);
        true
    }

    /// Pushes `make(v)` when `value` is `Some(v)`.
    pub fn push_some(&mut self, value: Option<f64>, make: impl FnOnce(f64) -> Sample) {
        if let Some(v) = value {
            self.push(make(v));
        }
    }

    /// Pushes the device sample `id()` of `family`, with `labels` for the labeled
    /// style, when `value` is known; the id is only built then.
    pub fn push_series(
        &mut self,
        value: Option<f64>,
        id: impl FnOnce() -> String,
        family: &'static Family,
        labels: &[(&'static str, &str)],
    ) {
        let Some(value) = value else { return };
        let mut sample = Sample::with_id(id(), family, value);
        for (name, v) in labels {
            sample = sample.label(name, *v);
        }
        self.push(sample);
    }

    /// The samples taken so far, in push order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Readings dropped in this collection because they were impossible.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    pub fn into_samples(self) -> Vec<Sample> {
        self.samples
    }
}

/// Turns a device-provided string (a thermal zone type, an hwmon chip name or label)
/// into the lowercase `[a-z0-9_]` fragment used inside metric ids.
///
/// Runs of other characters become one `_`; leading and trailing `_` are dropped.
/// Returns `None` when nothing usable is left.
pub fn sanitize(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut pending_sep = false;
    for ch in raw.trim().chars() {
        if ch.is_ascii_alphanumeric() {
            if pending_sep && !out.is_empty() {
                out.push('_');
            }
            pending_sep = false;
            out.push(ch.to_ascii_lowercase());
        } else {
            pending_sep = true;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Metric ids are plain Prometheus names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.id, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let cases = [
            ("CPU-therm", Some("cpu_therm")),
            ("  x86_pkg_temp ", Some("x86_pkg_temp")),
            ("Package id 0", Some("package_id_0")),
            ("--", None),
            ("", None),
            ("GPU@temp", Some("gpu_temp")),
            ("ÄÖ-ina3221", Some("ina3221")),
            ("a__b", Some("a_b")),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize(raw).as_deref(), want, "sanitize({raw:?})");
        }
    }

    #[test]
    fn metric_name_validity() {
        assert!(is_valid_metric_name("host_cpu_core0_usage_percent"));
        assert!(is_valid_metric_name("_x:y"));
        assert!(!is_valid_metric_name("0abc"));
        assert!(!is_valid_metric_name("a-b"));
        assert!(!is_valid_metric_name(""));
    }

    #[test]
    fn ranges_follow_the_unit() {
        static PERCENT: Family = Family::gauge("p", "p", "percent");
        static TEMP: Family = Family::gauge("t", "t", "celsius");
        static BYTES: Family = Family::gauge("b", "b", "bytes");
        static WATTS: Family = Family::gauge("w", "w", "watts");
        static RAIL: Family = Family::gauge("r", "r", "watts").at_least(0.0);
        static COUNT: Family = Family::counter("c", "c", "");
        let cases: [(&Family, &[f64], &[f64]); 6] = [
            (&PERCENT, &[0.0, 55.5, 100.0], &[-0.1, 100.5]),
            (&TEMP, &[-40.0, 0.0, 105.0], &[-256.0, 300.0]),
            (&BYTES, &[0.0, 1e12], &[-5.0]),
            (&WATTS, &[-1500.0, 0.0, 3000.0], &[]),
            (&RAIL, &[0.0, 5.1], &[-0.001]),
            (&COUNT, &[0.0, 1e15], &[-18000.0]),
        ];
        for (family, good, bad) in cases {
            for v in good {
                assert!(family.admits(*v), "{} takes {v}", family.name);
            }
            for v in bad {
                assert!(!family.admits(*v), "{} refuses {v}", family.name);
            }
            assert!(!family.admits(f64::NAN));
        }
    }

    #[test]
    fn sink_drops_non_finite_and_missing() {
        static F: Family = Family::gauge("x", "x", "");
        let mut sink = SampleSink::default();
        sink.push(Sample::new(&F, f64::NAN));
        sink.push(Sample::new(&F, f64::INFINITY));
        sink.push_some(None, |v| Sample::new(&F, v));
        sink.push_some(Some(1.5), |v| Sample::new(&F, v));
        assert_eq!(sink.samples().len(), 1);
        assert_eq!(sink.samples()[0].value, 1.5);
    }

    #[test]
    fn sink_keeps_series_unique() {
        static F: Family = Family::gauge("x", "x", "");
        let mut sink = SampleSink::default();
        assert!(sink.push(Sample::with_id("a", &F, 1.0)));
        assert!(!sink.push(Sample::with_id("a", &F, 2.0)), "the first wins");
        assert!(sink.push(Sample::with_id("a", &F, 3.0).const_label("plug", "p1")));
        assert!(sink.push(Sample::with_id("a", &F, 4.0).const_label("plug", "p2")));
        assert!(!sink.push(Sample::with_id("a", &F, 5.0).const_label("plug", "p2")));
        // Labels of the labeled style only do not make another series of an id.
        assert!(!sink.push(Sample::with_id("a", &F, 6.0).label("core", "1")));
        let values: Vec<f64> = sink.samples().iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 3.0, 4.0]);
    }
}
