//! Memory and swap from `/proc/meminfo`.
//!
//! Values are kept in KiB as the kernel writes them; the collector converts. "Used"
//! is total minus available, the figure `free` reports since procps 3.3.10, so page
//! cache that the kernel can drop does not count as used.

/// The `/proc/meminfo` fields the exporter reports, in KiB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemInfo {
    pub mem_total: Option<u64>,
    pub mem_available: Option<u64>,
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
    pub swap_cached: Option<u64>,
}

impl MemInfo {
    pub fn mem_used(&self) -> Option<u64> {
        self.mem_total?.checked_sub(self.mem_available?)
    }

    pub fn swap_used(&self) -> Option<u64> {
        self.swap_total?.checked_sub(self.swap_free?)
    }
}

/// Parses `/proc/meminfo`. Kernels before 3.14 have no `MemAvailable`; there it is
/// estimated as free + buffers + cached, as `free` does.
pub fn parse(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    let (mut free, mut buffers, mut cached) = (None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(value) = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        match key {
            "MemTotal" => info.mem_total = Some(value),
            "MemAvailable" => info.mem_available = Some(value),
            "MemFree" => free = Some(value),
            "Buffers" => buffers = Some(value),
            "Cached" => cached = Some(value),
            "SwapTotal" => info.swap_total = Some(value),
            "SwapFree" => info.swap_free = Some(value),
            "SwapCached" => info.swap_cached = Some(value),
            _ => {}
        }
    }
    if info.mem_available.is_none() {
        info.mem_available = match (free, buffers, cached) {
            (Some(f), b, c) => Some(f + b.unwrap_or(0) + c.unwrap_or(0)),
            _ => None,
        };
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_kernel() {
        let m = parse(
            "MemTotal:        3964000 kB\nMemFree:   100 kB\nMemAvailable:    2555000 kB\n\
             SwapCached:  12 kB\nSwapTotal:       1982000 kB\nSwapFree:        1982000 kB\n",
        );
        assert_eq!(m.mem_used(), Some(1409000));
        assert_eq!(m.swap_used(), Some(0));
        assert_eq!(m.swap_cached, Some(12));
    }

    #[test]
    fn old_kernel_without_available() {
        let m = parse("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n");
        assert_eq!(m.mem_available, Some(400));
        assert_eq!(m.swap_used(), None);
    }

    #[test]
    fn garbage_is_ignored() {
        assert_eq!(parse("nonsense\nMemTotal: x kB\n:\n"), MemInfo::default());
    }
}
