//! The snapshot: what the outputs serve, published once per collection tick.
//!
//! The scheduler builds a [`Snapshot`] from every collector's current samples (the
//! enabled ones, in output order) and stores it in [`Latest`]. Outputs only read:
//! `/metrics` asks for the body in the scraper's format, remote write walks the
//! samples. A snapshot never changes once published; each body is rendered once,
//! on the first scrape that asks for it, and shared by every later one.
//!
//! It does not know how samples are collected (`scheduler`) nor how bytes are
//! written (`exposition`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::exposition::{self, DeviceLabels, Format, MetricStyle};
use crate::sample::Sample;

/// The published state of all collectors: what `/metrics` serves.
#[derive(Debug)]
pub struct Snapshot {
    samples: Vec<Sample>,
    style: MetricStyle,
    device: DeviceLabels,
    /// Each body is rendered once per snapshot, on the first scrape that asks;
    /// so is its gzip form.
    text: OnceLock<Bytes>,
    openmetrics: OnceLock<Bytes>,
    text_gzip: OnceLock<Bytes>,
    openmetrics_gzip: OnceLock<Bytes>,
}

impl Snapshot {
    /// Puts `samples` in output order for `style`.
    pub fn new(mut samples: Vec<Sample>, style: MetricStyle, device: DeviceLabels) -> Self {
        exposition::sort_for(style, &mut samples);
        Snapshot {
            samples,
            style,
            device,
            text: OnceLock::new(),
            openmetrics: OnceLock::new(),
            text_gzip: OnceLock::new(),
            openmetrics_gzip: OnceLock::new(),
        }
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn style(&self) -> MetricStyle {
        self.style
    }

    pub fn device(&self) -> &DeviceLabels {
        &self.device
    }

    /// The exposition in `format`, rendered on first use.
    pub fn body(&self, format: Format) -> Bytes {
        let cell = match format {
            Format::Text004 => &self.text,
            Format::OpenMetrics => &self.openmetrics,
        };
        cell.get_or_init(|| {
            Bytes::from(exposition::render(
                &self.samples,
                self.style,
                format,
                &self.device,
            ))
        })
        .clone()
    }
}

impl Snapshot {
    /// The exposition in `format`, gzip-compressed, made on first use.
    pub fn body_gzip(&self, format: Format) -> Bytes {
        let cell = match format {
            Format::Text004 => &self.text_gzip,
            Format::OpenMetrics => &self.openmetrics_gzip,
        };
        cell.get_or_init(|| Bytes::from(gzip(&self.body(format))))
            .clone()
    }
}

/// `data` as a gzip stream (level 6, zlib's default: within a few percent of the
/// best ratio for this text, at a fraction of level 9's time).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 6 + 64),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// The latest published snapshot: written by the scheduler, read lock-free by the
/// outputs.
#[derive(Debug)]
pub struct Latest {
    current: ArcSwap<Snapshot>,
    /// Snapshots published so far.
    published: AtomicU64,
}

impl Latest {
    pub fn new(first: Snapshot) -> Self {
        Latest {
            current: ArcSwap::from_pointee(first),
            published: AtomicU64::new(0),
        }
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// How many snapshots have been published (the first one not counted).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}
