//! The same distribute algorithm (`weighted-spread`) called natively and through
//! Wasm as the host calls it (warm instance, conversions and output validation
//! included), at 9 and 100 clusters. The ratio is the cost of the sandbox. The
//! part of it any plugin pays whatever its code does is measured, on the same
//! request, by `cargo bench -p fedwasm-tests --bench distribute_floor`.
//!
//! `cargo bench -p fedwasm-host --bench distribute`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fedwasm_host::metrics::Metrics;
use fedwasm_host::runtime::{Registry, Runtime, RuntimeConfig};

#[path = "common/distribute_request.rs"]
mod distribute_request;
use distribute_request::request;

fn bench(c: &mut Criterion) {
    let runtime =
        Runtime::new(RuntimeConfig::default(), Arc::new(Metrics::new())).expect("runtime");
    let registry = Registry::new(runtime).expect("built-ins");
    let plugin = registry.get("weighted-spread").expect("built-in");
    let mut group = c.benchmark_group("distribute");
    for clusters in [9usize, 100] {
        let req = request(clusters);
        // Same answer both ways, or the comparison means nothing.
        assert_eq!(
            weighted_spread::plan(&req).plan,
            plugin.distribute(&req).expect("wasm").plan
        );
        group.bench_with_input(BenchmarkId::new("native", clusters), &req, |b, req| {
            b.iter(|| weighted_spread::plan(black_box(req)))
        });
        group.bench_with_input(BenchmarkId::new("wasm", clusters), &req, |b, req| {
            b.iter(|| plugin.distribute(black_box(req)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
