//! The fixed cost of a distribute call through the sandbox: the request of the
//! host's `distribute` bench (`host/benches/distribute.rs`), at 9 and 100
//! clusters, answered by a plugin that does nothing (the `chaos` test plugin
//! planning nothing, every candidate zero, for an object named `*/nothing`). What it
//! measures is what any plugin pays around its own code: the host taking the
//! request apart and writing it into the guest, the SDK turning it into the
//! plain types (names, maps by name) and the answer back into one count per
//! candidate, and the host checking that answer and building its map by name.
//!
//! Read beside `cargo bench -p fedwasm-host --bench distribute`: a plugin's call
//! costs this floor plus its own code run in Wasm.
//!
//! `cargo bench -p fedwasm-tests --bench distribute_floor`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fedwasm_host::metrics::Metrics;
use fedwasm_host::runtime::{PluginSource, Registry, Runtime, RuntimeConfig};
use fedwasm_tests::plugins;

#[path = "../../host/benches/common/distribute_request.rs"]
mod distribute_request;
use distribute_request::request;

fn bench(c: &mut Criterion) {
    let runtime =
        Runtime::new(RuntimeConfig::default(), Arc::new(Metrics::new())).expect("runtime");
    let registry = Registry::new(runtime).expect("built-ins");
    let plugin = registry
        .load("chaos", plugins::CHAOS, PluginSource::BuiltIn)
        .expect("the chaos test plugin loads");
    let mut group = c.benchmark_group("distribute-floor");
    for clusters in [9usize, 100] {
        let mut req = request(clusters);
        req.object = "default/nothing".into();
        // A valid answer, or this measures a refusal's cost instead.
        let plan = plugin.distribute(&req).expect("chaos answers").plan;
        assert_eq!(plan.len(), clusters);
        assert!(plan.values().all(|&n| n == 0));
        group.bench_with_input(BenchmarkId::new("wasm", clusters), &req, |b, req| {
            b.iter(|| plugin.distribute(black_box(req)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
