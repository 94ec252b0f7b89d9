//! Writes a snapshot of samples as Prometheus text 0.0.4 or OpenMetrics 1.0.
//!
//! Two styles of the same samples:
//! * **flat** (the default, the spec's names): every sample is its own family named by
//!   its id, e.g. `host_cpu_core0_usage_percent{device_type="linux",hostname="h"}`;
//! * **labeled**: samples grouped into idiomatic families with the varying part as a
//!   label, e.g. `host_cpu_usage_percent{core="0",device_type="linux",hostname="h"}`.
//!
//! The caller hands samples in output order (see [`sort_for`]); this module only
//! writes bytes. It owns escaping and the format rules (`# UNIT`, `_total`, `# EOF`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::sample::{Family, Label, MetricKind, Sample};

/// How samples are named in the output (config key `metric_style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricStyle {
    #[default]
    Flat,
    Labeled,
}

/// The wire format, chosen from the scrape's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text004,
    OpenMetrics,
}

impl Format {
    pub const TEXT_CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
    pub const OPENMETRICS_CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// OpenMetrics when the client lists it at all (Prometheus lists it first, with
    /// the highest weight); text 0.0.4 otherwise, as every scraper understands that.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept)
                if accept.split(',').any(|part| {
                    let mut params = part.split(';');
                    let media = params.next().unwrap_or("").trim();
                    let refused = params.any(|p| {
                        let p = p.trim();
                        p.strip_prefix("q=")
                            .and_then(|q| q.trim().parse::<f32>().ok())
                            .is_some_and(|q| q <= 0.0)
                    });
                    media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
                }) =>
            {
                Format::OpenMetrics
            }
            _ => Format::Text004,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text004 => Self::TEXT_CONTENT_TYPE,
            Format::OpenMetrics => Self::OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The labels added to every device sample (spec "Metric Labels").
#[derive(Debug, Clone)]
pub struct DeviceLabels {
    pub device_type: String,
    pub hostname: String,
}

/// Puts samples in the deterministic order `render` expects for `style`: by id for
/// flat, by family then id for labeled (so each family is contiguous).
pub fn sort_for(style: MetricStyle, samples: &mut [Sample]) {
    match style {
        MetricStyle::Flat => samples.sort_by(|a, b| a.id.cmp(&b.id)),
        MetricStyle::Labeled => {
            samples.sort_by(|a, b| (a.family.name, &a.id).cmp(&(b.family.name, &b.id)))
        }
    }
}

/// Writes `samples` (already in [`sort_for`] order) in `format`.
pub fn render(
    samples: &[Sample],
    style: MetricStyle,
    format: Format,
    device: &DeviceLabels,
) -> String {
    let mut out = String::with_capacity(samples.len() * 160 + 16);
    let mut previous_family: Option<&str> = None;
    for sample in samples {
        let name = name(sample, style);
        // Samples that share a name (one per collector, one per plug, the series of
        // a histogram) share one header: a second HELP for a name is a parse error.
        let header = match sample.family.kind {
            MetricKind::Histogram => sample.family.name,
            _ => name,
        };
        if previous_family != Some(header) {
            write_header(&mut out, sample, header, style, format);
            previous_family = Some(header);
        }
        write_sample_line(&mut out, sample, name, style, format, device);
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// The family name OpenMetrics puts in `# TYPE` for a counter: without `_total`.
fn metadata_name(name: &str, kind: MetricKind, format: Format) -> &str {
    match (kind, format) {
        (MetricKind::Counter, Format::OpenMetrics) => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

fn write_header(out: &mut String, sample: &Sample, name: &str, style: MetricStyle, format: Format) {
    let family = sample.family;
    let meta = metadata_name(name, family.kind, format);
    out.push_str("# HELP ");
    out.push_str(meta);
    out.push(' ');
    escape_help(out, family.help, format);
    if style == MetricStyle::Flat && !sample.labels.is_empty() {
        out.push_str(" (");
        for (i, (label, value)) in sample.labels.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(label);
            out.push(' ');
            escape_help(out, value, format);
        }
        out.push(')');
    }
    out.push('\n');
    write_type_and_unit(out, meta, family, format);
}

/// `# TYPE` from the family's kind, and in OpenMetrics its `# UNIT`.
fn write_type_and_unit(out: &mut String, meta: &str, family: &Family, format: Format) {
    let _ = writeln!(out, "# TYPE {meta} {}", family.kind.as_str());
    // OpenMetrics requires the unit to be a suffix of the family name; ids that do
    // not end in their unit (`host_ram_used_mb` does, `jetson_cpu_core0_status`
    // has none) simply carry no UNIT line.
    if format == Format::OpenMetrics
        && !family.unit.is_empty()
        && meta
            .strip_suffix(family.unit)
            .is_some_and(|rest| rest.ends_with('_'))
    {
        let _ = writeln!(out, "# UNIT {meta} {}", family.unit);
    }
}

/// For pages written family by family without [`Sample`]s (the plug hub's, one
/// line per plug and channel): the family's `# HELP`, `# TYPE` (from
/// `family.kind`) and, in OpenMetrics, `# UNIT`.
pub fn write_family_header(out: &mut String, family: &Family, format: Format) {
    let meta = metadata_name(family.name, family.kind, format);
    out.push_str("# HELP ");
    out.push_str(meta);
    out.push(' ');
    escape_help(out, family.help, format);
    out.push('\n');
    write_type_and_unit(out, meta, family, format);
}

/// One line of `family` whose labels are already written (`a="x",b="y"`, each
/// value through [`escape_label_value`]); empty `labels` writes none.
pub fn write_family_line(
    out: &mut String,
    family: &Family,
    labels: &[&str],
    value: f64,
    format: Format,
) {
    write_name(out, family.name, family.kind, format);
    let mut first = true;
    for part in labels.iter().filter(|p| !p.is_empty()) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(part);
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    out.push('\n');
}

/// A series' name; OpenMetrics counters always end in `_total`.
fn write_name(out: &mut String, name: &str, kind: MetricKind, format: Format) {
    out.push_str(name);
    if format == Format::OpenMetrics && kind == MetricKind::Counter && !name.ends_with("_total") {
        out.push_str("_total");
    }
}

fn write_sample_line(
    out: &mut String,
    sample: &Sample,
    name: &str,
    style: MetricStyle,
    format: Format,
    device: &DeviceLabels,
) {
    write_name(out, name, sample.family.kind, format);
    let mut first = true;
    for (key, value) in labels(sample, style, device) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    write_value(out, value(sample, style));
    out.push('\n');
}

/// The metric name of a sample in `style`, as the text format writes it (a
/// histogram's series keep their own names, `_bucket`, `_sum`, `_count`).
pub fn name(sample: &Sample, style: MetricStyle) -> &str {
    match (style, sample.family.kind) {
        (MetricStyle::Flat, _) | (_, MetricKind::Histogram) => &sample.id,
        (MetricStyle::Labeled, _) => sample.family.name,
    }
}

/// A sample's labels in `style`, in output order: its own (labeled style), its
/// constant ones, then the device's.
pub fn labels<'a>(
    sample: &'a Sample,
    style: MetricStyle,
    device: &'a DeviceLabels,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let own: &[Label] = match style {
        MetricStyle::Flat => &[],
        MetricStyle::Labeled => &sample.labels,
    };
    let device_labels = sample.device.then_some([
        ("device_type", device.device_type.as_str()),
        ("hostname", device.hostname.as_str()),
    ]);
    own.iter()
        .chain(&sample.const_labels)
        .map(|(k, v)| (*k, &**v))
        .chain(device_labels.into_iter().flatten())
}

/// A sample's value in `style` (the labeled style is in base units).
pub fn value(sample: &Sample, style: MetricStyle) -> f64 {
    match style {
        MetricStyle::Flat => sample.value,
        MetricStyle::Labeled => sample.value * sample.family.labeled_scale,
    }
}

fn write_value(out: &mut String, value: f64) {
    // Samples are finite by construction (SampleSink); integers print without a
    // fraction, the rest as the shortest text that reads back to the same f64.
    let _ = write!(out, "{value}");
}

pub fn escape_label_value(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, value: &str, format: Format) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static USAGE: Family = Family::gauge("host_cpu_usage_percent", "CPU core usage", "percent");
    static ENERGY: Family = Family::counter("host_energy_joules_total", "Energy", "joules");

    fn device() -> DeviceLabels {
        DeviceLabels {
            device_type: "linux".into(),
            hostname: "edge-01".into(),
        }
    }

    fn samples(style: MetricStyle) -> Vec<Sample> {
        let mut v = vec![
            Sample::with_id("host_cpu_core1_usage_percent", &USAGE, 20.0).label("core", "1"),
            Sample::with_id("host_cpu_core0_usage_percent", &USAGE, 12.5).label("core", "0"),
            Sample::with_id("host_energy_x_joules_total", &ENERGY, 3.25).label("chip", "x\"y"),
        ];
        sort_for(style, &mut v);
        v
    }

    #[test]
    fn flat_text() {
        let got = render(
            &samples(MetricStyle::Flat),
            MetricStyle::Flat,
            Format::Text004,
            &device(),
        );
        let want = "\
# HELP host_cpu_core0_usage_percent CPU core usage (core 0)
# TYPE host_cpu_core0_usage_percent gauge
host_cpu_core0_usage_percent{device_type=\"linux\",hostname=\"edge-01\"} 12.5
# HELP host_cpu_core1_usage_percent CPU core usage (core 1)
# TYPE host_cpu_core1_usage_percent gauge
host_cpu_core1_usage_percent{device_type=\"linux\",hostname=\"edge-01\"} 20
# HELP host_energy_x_joules_total Energy (chip x\"y)
# TYPE host_energy_x_joules_total counter
host_energy_x_joules_total{device_type=\"linux\",hostname=\"edge-01\"} 3.25
";
        assert_eq!(got, want);
    }

    #[test]
    fn samples_that_share_a_name_share_one_header() {
        static POWER: Family = Family::gauge("power_total_watts", "Active power", "watts");
        let mut v = vec![
            Sample::new(&POWER, 5.0).const_label("plug", "b"),
            Sample::new(&POWER, 4.0).const_label("plug", "a"),
        ];
        for style in [MetricStyle::Flat, MetricStyle::Labeled] {
            sort_for(style, &mut v);
            let got = render(&v, style, Format::Text004, &device());
            assert_eq!(got.matches("# HELP power_total_watts").count(), 1, "{got}");
            assert_eq!(got.matches("# TYPE power_total_watts").count(), 1, "{got}");
            assert_eq!(
                got.lines()
                    .filter(|l| l.starts_with("power_total_watts{"))
                    .count(),
                2
            );
        }
    }

    #[test]
    fn labeled_openmetrics() {
        let got = render(
            &samples(MetricStyle::Labeled),
            MetricStyle::Labeled,
            Format::OpenMetrics,
            &device(),
        );
        let want = "\
# HELP host_cpu_usage_percent CPU core usage
# TYPE host_cpu_usage_percent gauge
# UNIT host_cpu_usage_percent percent
host_cpu_usage_percent{core=\"0\",device_type=\"linux\",hostname=\"edge-01\"} 12.5
host_cpu_usage_percent{core=\"1\",device_type=\"linux\",hostname=\"edge-01\"} 20
# HELP host_energy_joules Energy
# TYPE host_energy_joules counter
# UNIT host_energy_joules joules
host_energy_joules_total{chip=\"x\\\"y\",device_type=\"linux\",hostname=\"edge-01\"} 3.25
# EOF
";
        assert_eq!(got, want);
    }

    /// Pages written family by family (the plug hub's) get the same rules:
    /// `# TYPE` from the family's kind, never from its name, and in OpenMetrics
    /// the counter's metadata name without `_total` and its unit.
    #[test]
    fn families_written_line_by_line() {
        static RELAY: Family = Family::gauge("relay_total", "A gauge named like a counter", "");
        let mut text = String::new();
        write_family_header(&mut text, &ENERGY, Format::Text004);
        write_family_line(
            &mut text,
            &ENERGY,
            &["plug=\"a\"", ""],
            7.5,
            Format::Text004,
        );
        write_family_header(&mut text, &RELAY, Format::Text004);
        write_family_line(&mut text, &RELAY, &[], 1.0, Format::Text004);
        assert_eq!(
            text,
            "# HELP host_energy_joules_total Energy\n# TYPE host_energy_joules_total counter\n\
             host_energy_joules_total{plug=\"a\"} 7.5\n\
             # HELP relay_total A gauge named like a counter\n# TYPE relay_total gauge\nrelay_total 1\n"
        );
        let mut om = String::new();
        write_family_header(&mut om, &ENERGY, Format::OpenMetrics);
        write_family_line(
            &mut om,
            &ENERGY,
            &["plug=\"a\"", "channel=\"0\""],
            7.5,
            Format::OpenMetrics,
        );
        assert_eq!(
            om,
            "# HELP host_energy_joules Energy\n# TYPE host_energy_joules counter\n\
             # UNIT host_energy_joules joules\n\
             host_energy_joules_total{plug=\"a\",channel=\"0\"} 7.5\n"
        );
    }

    #[test]
    fn negotiation() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text004);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text004);
        assert_eq!(Format::negotiate(None), Format::Text004);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Format::Text004
        );
    }

    #[test]
    fn escaping() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, "a\\\\b\\\"c\\nd");
    }
}
