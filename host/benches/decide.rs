//! Decision throughput, plugins only: one placement is what the controller asks for
//! a Deployment, the select hook (`label-selector`, with a selector annotation) over
//! every cluster, then the distribute hook (`weighted-spread`, with preferences) over
//! the clusters chosen. Synthetic inputs at 100 and 1,000 clusters; the same two
//! algorithms called natively are the baseline. Criterion reports placements/s
//! (`thrpt`).
//!
//! `cargo bench -p fedwasm-host --bench decide`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fedwasm_host::metrics::Metrics;
use fedwasm_host::runtime::{Registry, Runtime, RuntimeConfig};
use fedwasm_sdk::{
    ClusterInfo, ClusterPreference, DistributeRequest, ObjectRef, Preferences, SelectRequest,
};

const REGIONS: [&str; 5] = [
    "europe-west1",
    "us-central1",
    "asia-east1",
    "us-east1",
    "europe-north1",
];

/// `clusters` members over five regions, two in three labelled `tier=prod`, one in
/// fifty not ready; the object asks for the production clusters of three regions.
fn select_request(clusters: usize) -> SelectRequest {
    let clusters = (0..clusters)
        .map(|i| {
            let region = REGIONS[i % REGIONS.len()];
            let tier = if i % 3 == 2 { "dev" } else { "prod" };
            ClusterInfo {
                name: format!("cluster-{i:04}"),
                region: region.into(),
                zone: format!("{region}-{}", ["a", "b", "c"][i % 3]),
                labels: BTreeMap::from([("tier".to_string(), tier.to_string())]),
                ready: i % 50 != 49,
            }
        })
        .collect();
    SelectRequest {
        object: ObjectRef {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            annotations: BTreeMap::from([
                (
                    "fedwasm.io/cluster-selector".to_string(),
                    "tier=prod".to_string(),
                ),
                (
                    "fedwasm.io/regions".to_string(),
                    "europe-west1,us-central1,asia-east1".to_string(),
                ),
            ]),
        },
        clusters,
        settings: String::new(),
    }
}

fn distribute_request(selected: Vec<String>) -> DistributeRequest {
    let prefs = BTreeMap::from([(
        "*".to_string(),
        ClusterPreference {
            min_replicas: 1,
            max_replicas: None,
            weight: 1,
        },
    )]);
    DistributeRequest {
        object: "shop/web".into(),
        total_replicas: 3 * selected.len() as u32,
        current: selected.iter().step_by(2).map(|n| (n.clone(), 3)).collect(),
        capacity: BTreeMap::new(),
        clusters: selected,
        preferences: Some(Preferences {
            rebalance: false,
            clusters: prefs,
        }),
        settings: String::new(),
    }
}

fn bench(c: &mut Criterion) {
    let runtime =
        Runtime::new(RuntimeConfig::default(), Arc::new(Metrics::new())).expect("runtime");
    let registry = Registry::new(runtime).expect("built-ins");
    let select = registry.get("label-selector").expect("built-in");
    let distribute = registry.get("weighted-spread").expect("built-in");
    let mut group = c.benchmark_group("placement");
    group.throughput(Throughput::Elements(1));
    for clusters in [100usize, 1000] {
        let req = select_request(clusters);
        let native = |req: &SelectRequest| {
            let chosen = label_selector::select(req).expect("native select");
            let names = chosen.into_iter().map(|s| s.cluster).collect();
            weighted_spread::plan(&distribute_request(names))
        };
        let wasm = |req: &SelectRequest| {
            let chosen = select.select(req).expect("wasm select");
            let names = chosen.into_iter().map(|s| s.cluster).collect();
            distribute
                .distribute(&distribute_request(names))
                .expect("wasm distribute")
        };
        // Same decisions both ways, or the comparison means nothing.
        let (n, w) = (native(&req), wasm(&req));
        assert_eq!(n.plan, w.plan);
        assert!(!n.plan.is_empty() && n.plan.len() < clusters);
        group.bench_with_input(BenchmarkId::new("native", clusters), &req, |b, req| {
            b.iter(|| native(black_box(req)))
        });
        group.bench_with_input(BenchmarkId::new("wasm", clusters), &req, |b, req| {
            b.iter(|| wasm(black_box(req)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
