//! The distribute request of the distribute benchmarks (`host/benches/distribute.rs`
//! and the tests crate's `distribute_floor`), so they measure the same call.

use std::collections::BTreeMap;

use fedwasm_sdk::{ClusterPreference, DistributeRequest, Preferences};

/// A realistic request: weights, a minimum, a maximum, some capacity limits and
/// replicas already running.
pub fn request(clusters: usize) -> DistributeRequest {
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
