//! The host's memory trimming, alone in its own test binary: it reads the
//! process's RSS, which tests running beside it would disturb.

/// Freed memory goes back: a large free block in an arena (not only the top of
/// the heap) is released by a trim.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_trim_gives_freed_pages_back() {
    fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
    // Many small blocks (below the mmap threshold, so they live in the heap),
    // all touched, then all freed but one at the end that pins the heap's top.
    let mut blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 16 << 10]).collect();
    let pin = vec![1u8; 16 << 10];
    let before = rss_kb();
    blocks.clear();
    blocks.shrink_to_fit();
    let freed_only = rss_kb();
    fedwasm_host::memory::trim();
    let trimmed = rss_kb();
    drop(pin);
    assert!(
        trimmed + 32 * 1024 < freed_only,
        "64 MiB freed behind a pinned top: RSS {before} kB, after free {freed_only} kB, after trim {trimmed} kB"
    );
}
