//! The same distribute algorithm (`weighted-spread`) called natively and through
//! Wasm as the host calls it (warm instance, conversions and output validation
//! included), at 9 and 100 clusters. The ratio is the cost of the sandbox.
//!
//! `cargo bench -p fedwasm-host --bench distribute`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fedwasm_host::metrics::Metrics;
use fedwasm_host::runtime::{Registry, Runtime, RuntimeConfig};
use fedwasm_sdk::{ClusterPreference, DistributeRequest, Preferences};

/// A realistic request: weights, a minimum, a maximum, some capacity limits and
/// replicas already running.
fn request(clusters: usize) -> DistributeRequest {
    let names: Vec<String> = (0..clusters).map(|i| format!("cluster-{i:03}")).collect();
    let mut prefs = BTreeMap::new();
    prefs.insert(
        "*".to_string(),
        ClusterPreference {
            min_replicas: 0,
            max_replicas: None,
            weight: 1,
        },
    );
    prefs.insert(
        names[0].clone(),
        ClusterPreference {
            min_replicas: 2,
            max_replicas: Some(40),
            weight: 3,
        },
    );
    DistributeRequest {
        object: "default/web".into(),
        total_replicas: 10 * clusters as u32,
        clusters: names.clone(),
        preferences: Some(Preferences {
            rebalance: false,
            clusters: prefs,
        }),
        current: names.iter().step_by(3).map(|n| (n.clone(), 5)).collect(),
        capacity: names.iter().step_by(4).map(|n| (n.clone(), 7)).collect(),
        settings: String::new(),
    }
}

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
