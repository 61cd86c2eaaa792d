//! A distribute request taken apart once per call, in the shape every contract
//! version is built from: one value per candidate, in the request's order, each
//! map read once (in one pass when the candidates come in name order).

use fedwasm_sdk::{values_for, ClusterPreference, DistributeRequest};

/// The request's per-candidate values, borrowed from the request.
pub(super) struct DistributeParts<'a> {
    pub request: &'a DistributeRequest,
    /// The candidates' names.
    pub clusters: Vec<&'a str>,
    /// Replicas running in each candidate (zero when the request names none).
    pub current: Vec<u32>,
    /// Replicas each candidate can still take; none means unbounded.
    pub capacity: Vec<Option<u32>>,
    pub preferences: Option<AlignedPreferences<'a>>,
}

/// The `replica-set-preferences` of a request, by candidate.
pub(super) struct AlignedPreferences<'a> {
    pub rebalance: bool,
    /// The `*` entry.
    pub wildcard: Option<&'a ClusterPreference>,
    /// Each candidate's own entry.
    pub own: Vec<Option<&'a ClusterPreference>>,
}

impl<'a> DistributeParts<'a> {
    pub fn new(request: &'a DistributeRequest) -> Self {
        let clusters = &request.clusters;
        Self {
            request,
            clusters: clusters.iter().map(String::as_str).collect(),
            current: values_for(clusters, &request.current)
                .into_iter()
                .map(|n| n.copied().unwrap_or(0))
                .collect(),
            capacity: values_for(clusters, &request.capacity)
                .into_iter()
                .map(Option::<&u32>::copied)
                .collect(),
            preferences: request.preferences.as_ref().map(|p| AlignedPreferences {
                rebalance: p.rebalance,
                wildcard: p.clusters.get("*"),
                own: values_for(clusters, &p.clusters),
            }),
        }
    }
}
