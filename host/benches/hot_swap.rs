//! Hot-swap latency: from a plugin file written (by rename, as deploy tools do) to
//! the new generation answering calls, with the default debounce. Prints the median
//! and worst of several swaps, and the same minus the debounce.
//!
//! `cargo bench -p fedwasm-host --bench hot_swap`

use std::sync::Arc;
use std::time::{Duration, Instant};

use fedwasm_host::metrics::Metrics;
use fedwasm_host::runtime::{
    built_in_bytes, DirWatcher, Registry, Runtime, RuntimeConfig, DEFAULT_DEBOUNCE,
};
use fedwasm_sdk::DistributeRequest;

/// The built-in bytes plus a custom section: a distinct file (new sha256, new
/// generation) with the same behaviour.
fn variant(base: &[u8], n: u32) -> Vec<u8> {
    let name = b"fedwasm-bench";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = base.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits in one LEB128 byte
    out.extend_from_slice(&section);
    out
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to filter here.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    };
    let runtime = Runtime::new(config, Arc::new(Metrics::new())).expect("runtime");
    let registry = Registry::new(runtime).expect("built-ins");
    let _watch = DirWatcher::start(registry.clone(), dir.path(), DEFAULT_DEBOUNCE).expect("watch");
    let base = built_in_bytes("weighted-spread").expect("built-in");
    let request = DistributeRequest::new("default/web", 90, (0..9).map(|i| format!("c{i}")));
    let mut samples = Vec::new();
    for n in 0..20 {
        let before = registry.get("swap").map(|p| p.generation()).ok();
        let tmp = dir.path().join("swap.wasm.tmp");
        std::fs::write(&tmp, variant(base, n)).expect("write");
        let started = Instant::now();
        std::fs::rename(&tmp, dir.path().join("swap.wasm")).expect("rename");
        loop {
            if let Ok(p) = registry.get("swap") {
                if Some(p.generation()) != before && p.distribute(&request).is_ok() {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "swap {n} never happened"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let worst = samples[samples.len() - 1];
    println!(
        "hot swap (debounce {} ms), {} swaps: median {:.1} ms, worst {:.1} ms; after the debounce: median {:.1} ms, worst {:.1} ms",
        DEFAULT_DEBOUNCE.as_millis(),
        samples.len(),
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        (median.saturating_sub(DEFAULT_DEBOUNCE)).as_secs_f64() * 1e3,
        (worst.saturating_sub(DEFAULT_DEBOUNCE)).as_secs_f64() * 1e3,
    );
}
