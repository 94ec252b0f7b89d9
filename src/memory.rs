//! Resident memory as the system sees it.
//!
//! * The heap: glibc's allocator keeps freed memory for reuse, in one arena per
//!   thread that ever allocated: after a burst (a group change that restacks
//!   10,000 devices) the process keeps the peak as resident memory for good.
//!   Here the allocator keeps one arena (a second one held 1.5 MB of a
//!   2-core exporter's 3 MB heap) and, after such a burst, what is free is
//!   handed back. On other C libraries (musl, the static release builds) both
//!   are no-ops: musl returns freed memory by itself.
//! * The binary's pages: what start-up alone touched is unmapped once it is
//!   over ([`settle`]).

/// Arenas the allocator may use (glibc's default is eight per core): one; the
/// threads' own caches take most allocations without the arena's lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: i32 = 1;

/// Caps the allocator's arenas; call once at start, before threads start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; it is called before
    // the runtime starts its threads, and on failure it changes nothing.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Hands the heap's free memory back to the system, after a burst of
/// allocations that are gone again.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes
    // the allocator's own locks and touches no memory in use.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When start-up is over: the first collections, scrapes and the first
/// remote-write round have run.
pub const START_UP: std::time::Duration = std::time::Duration::from_secs(60);

/// Drops this process's mappings of the file pages it has touched so far and
/// never wrote (the code and read-only data of the executable and its shared
/// libraries), so that what only start-up used (argument parsing, the config,
/// TLS setup, the relocation tables, the first probes) stops counting as
/// resident. The kernel maps file pages in runs of 64 kB around each page
/// touched, so start-up alone leaves most of an 11 MB executable mapped;
/// afterwards only what runs is mapped back.
///
/// Nothing is lost: only private, read-only file mappings without a single
/// written (copy-on-write) page are released, so discarding their pages only
/// unmaps them; they stay in the page cache, and the next use maps the same
/// bytes again (a minor fault). The relocated read-only data (RELRO) has
/// written pages and is left alone. Returns the bytes released.
pub fn release_start_up_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut released = 0;
        for (start, end) in clean_file_mappings(&smaps) {
            // SAFETY: the range is a whole private, read-only file mapping of
            // this process with no anonymous (written) page, from
            // /proc/self/smaps: MADV_DONTNEED only unmaps its pages, and the
            // next use maps the same bytes again from the file.
            #[allow(unsafe_code)]
            let ok = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) == 0
            };
            if ok {
                released += end - start;
            }
        }
        released
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// The private, read-only file mappings of a `/proc/PID/smaps` text that hold
/// no anonymous page (never written): code and read-only data of the
/// executable and libraries; not `[vdso]`, not anonymous, writable, shared or
/// relocated (RELRO) mappings.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anon) = line.strip_prefix("Anonymous:") {
            let written = anon.trim().trim_end_matches("kB").trim() != "0";
            if let Some(range) = current.take().filter(|_| !written) {
                out.push(range);
            }
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // A mapping's header: `start-end perms offset dev inode path`.
        let path = fields.nth(3).unwrap_or("");
        let clean = perms.len() == 4
            && perms.starts_with('r')
            && !perms.contains('w')
            && perms.ends_with('p')
            && path.starts_with('/');
        current = (clean && end > start).then_some((start, end));
    }
    out
}

/// After [`START_UP`], releases the pages only start-up used (see
/// [`release_start_up_pages`]) and the heap start-up freed, once.
pub async fn settle(shutdown: tokio_util::sync::CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(START_UP) => {
            let bytes = release_start_up_pages();
            release_free();
            tracing::debug!(bytes, "released the pages only start-up used");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_only_file_mappings_never_written() {
        let smaps = "\
5652e4839000-5652e4a0c000 r--p 00000000 fe:00 10027032                   /usr/bin/edge-metrics-exporter
Size:               2960 kB
Rss:                1152 kB
Anonymous:             0 kB
5652e4a0c000-5652e5458000 r-xp 00351000 fe:00 10027032                   /usr/bin/edge-metrics-exporter
Size:              10584 kB
Anonymous:             0 kB
5652e5458000-5652e54a5000 r--p 00d9d000 fe:00 10027032                   /usr/bin/edge-metrics-exporter
Size:                308 kB
Anonymous:           308 kB
5652e5500000-5652e5510000 rw-p 00e45000 fe:00 10027032                   /usr/bin/edge-metrics-exporter
Anonymous:            32 kB
7f230e28c000-7f230e3e2000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f230e400000-7f230e401000 r--s 00000000 fe:00 1                          /dev/shm/x
Anonymous:             0 kB
7f230e402000-7f230e403000 r--p 00000000 00:00 0
Anonymous:             0 kB
7f230e559000-7f230e55b000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            [
                (0x5652e4839000, 0x5652e4a0c000),
                (0x5652e4a0c000, 0x5652e5458000),
                (0x7f230e28c000, 0x7f230e3e2000)
            ]
        );
    }

    /// Released pages come back: the process keeps working after its own
    /// code and read-only data were unmapped.
    #[test]
    fn released_pages_come_back() {
        let released = release_start_up_pages();
        assert!(
            released > 0,
            "no clean file mapping found in /proc/self/smaps"
        );
        let text: String = (0..1000).map(|i| format!("{i},")).collect();
        assert_eq!(text.split(',').filter(|s| !s.is_empty()).count(), 1000);
    }
}
