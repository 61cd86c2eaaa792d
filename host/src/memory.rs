//! Keeping the host's resident memory near what it uses. glibc's allocator keeps
//! freed memory in per-thread arenas and returns only the top of each heap: after
//! a burst (a member's relist, a thousand objects at once) the host's RSS stayed
//! at its peak. The host limits the arenas and, every [`TRIM_EVERY`], gives freed
//! pages back. Other C libraries: nothing to do.

use std::time::Duration;

/// How often freed memory is returned to the system.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Arenas glibc may create: one per core by default times eight; a few keep
/// contention low for the host's handful of busy threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 4;

/// Limits the allocator's arenas. Call before any thread is started.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Gives freed memory back to the system now; true when some was.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Trims every [`TRIM_EVERY`] on a thread of its own, for the life of the process.
pub fn start_trimming() {
    let spawned = std::thread::Builder::new()
        .name("fedwasm-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            trim();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory trimming thread");
    }
}
