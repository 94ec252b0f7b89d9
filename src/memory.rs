//! The heap as the system sees it. glibc's allocator keeps freed memory for
//! reuse, in one arena per thread that ever allocated: after a burst (a group
//! change that restacks 10,000 devices) the process keeps the peak as resident
//! memory for good. Here the arenas are capped at start and, after such a
//! burst, what is free is handed back. On other C libraries (musl, the static
//! release builds) both are no-ops: musl returns freed memory by itself.

/// Arenas the allocator may use (glibc's default is eight per core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: i32 = 2;

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
