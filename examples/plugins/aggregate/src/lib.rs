//! aggregate: a distribute plugin that puts replicas in as few clusters as possible.
//!
//! Clusters are filled one after the other, heaviest weight first (ties by name),
//! each up to the smaller of its `maxReplicas` and its capacity. Clusters with weight
//! zero get nothing. `minReplicas` is not used: packing is the point.
//!
//! Useful when every extra cluster costs (a licence, a warm cache, a control plane
//! fee) and spreading buys nothing.

use fedwasm_sdk::{export_plugin, DistributeRequest, DistributeResponse, Hook, Plugin};

pub struct Aggregate;

impl Plugin for Aggregate {
    const HOOKS: &'static [Hook] = &[Hook::Distribute];

    fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
        Ok(pack(&request))
    }
}

export_plugin!(Aggregate);

/// The packing itself: plain Rust on plain types, tested natively below.
pub fn pack(request: &DistributeRequest) -> DistributeResponse {
    // (weight, room) per cluster; without preferences every cluster weighs 1.
    let mut order: Vec<(&String, u32, u32)> = request
        .clusters
        .iter()
        .map(|name| {
            let pref = request
                .preferences
                .as_ref()
                .and_then(|p| p.for_cluster(name));
            let weight = match (&request.preferences, pref) {
                (None, _) => 1,
                (Some(_), Some(p)) => p.weight,
                (Some(_), None) => 0,
            };
            let max = pref.and_then(|p| p.max_replicas).unwrap_or(u32::MAX);
            let capacity = request.capacity.get(name).copied().unwrap_or(u32::MAX);
            (name, weight, max.min(capacity))
        })
        .collect();
    // Heaviest first, then by name, so the answer is the same for the same input.
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));

    let mut out = DistributeResponse::default();
    let mut left = request.total_replicas;
    for (name, weight, room) in order {
        let take = if weight == 0 { 0 } else { left.min(room) };
        out.plan.insert(name.clone(), take);
        left -= take;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedwasm_sdk::{ClusterPreference, Preferences};
    use std::collections::BTreeMap;

    fn request(total: u32, clusters: &[&str]) -> DistributeRequest {
        DistributeRequest::new("ns/web", total, clusters.iter().copied())
    }

    fn weight(w: u32, max: Option<u32>) -> ClusterPreference {
        ClusterPreference {
            min_replicas: 0,
            max_replicas: max,
            weight: w,
        }
    }

    #[test]
    fn without_preferences_everything_goes_to_the_first_name() {
        let out = pack(&request(7, &["b", "a"]));
        assert_eq!(out.plan, BTreeMap::from([("a".into(), 7), ("b".into(), 0)]));
    }

    #[test]
    fn heaviest_first_up_to_max_and_capacity() {
        let mut req = request(12, &["a", "b", "c"]);
        req.preferences = Some(Preferences {
            rebalance: false,
            clusters: BTreeMap::from([
                ("a".into(), weight(1, Some(5))),
                ("b".into(), weight(3, None)),
                ("c".into(), weight(2, None)),
            ]),
        });
        req.capacity.insert("b".into(), 8);
        let out = pack(&req);
        assert_eq!(
            out.plan,
            BTreeMap::from([("a".into(), 0), ("b".into(), 8), ("c".into(), 4)])
        );
    }

    #[test]
    fn zero_weight_gets_nothing_and_leftovers_stay_unplaced() {
        let mut req = request(10, &["a", "b"]);
        req.preferences = Some(Preferences {
            rebalance: false,
            clusters: BTreeMap::from([
                ("a".into(), weight(1, Some(4))),
                ("b".into(), weight(0, None)),
            ]),
        });
        let out = pack(&req);
        assert_eq!(out.plan, BTreeMap::from([("a".into(), 4), ("b".into(), 0)]));
    }
}
