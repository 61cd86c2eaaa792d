//! A distribute request taken apart once per call, in the shape every contract
//! version is built from: one value per candidate, in the request's order. The
//! candidates' order is checked once, and each map is read once (in one pass when
//! the candidates come in name order).

use fedwasm_sdk::{ClusterPreference, DistributeRequest, Names};

/// The request's per-candidate values, borrowed from the request.
pub(crate) struct DistributeParts<'a> {
    pub request: &'a DistributeRequest,
    /// The candidates' names.
    pub clusters: Vec<&'a str>,
    /// Whether the names are strictly increasing: maps by name are then built in
    /// one pass, and no name is listed twice.
    pub increasing: bool,
    /// Replicas running in each candidate (zero when the request names none).
    pub current: Vec<u32>,
    /// Replicas each candidate can still take; none means unbounded.
    pub capacity: Vec<Option<u32>>,
    pub preferences: Option<AlignedPreferences<'a>>,
    /// Each candidate's `maxReplicas`: its own entry's, else `*`'s; empty when
    /// the request has no preferences.
    pub maxima: Vec<Option<u32>>,
}

/// The `replica-set-preferences` of a request, by candidate.
pub(crate) struct AlignedPreferences<'a> {
    pub rebalance: bool,
    /// The `*` entry.
    pub wildcard: Option<&'a ClusterPreference>,
    /// Each candidate's own entry.
    pub own: Vec<Option<&'a ClusterPreference>>,
}

impl<'a> DistributeParts<'a> {
    pub fn new(request: &'a DistributeRequest) -> Self {
        let names = Names::new(&request.clusters);
        let preferences = request.preferences.as_ref().map(|p| AlignedPreferences {
            rebalance: p.rebalance,
            wildcard: p.clusters.get("*"),
            own: names.values(&p.clusters),
        });
        let maxima = preferences
            .as_ref()
            .map(|p| {
                p.own
                    .iter()
                    .map(|own| own.or(p.wildcard).and_then(|c| c.max_replicas))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            request,
            clusters: request.clusters.iter().map(String::as_str).collect(),
            increasing: names.increasing(),
            current: names
                .values(&request.current)
                .into_iter()
                .map(|n| n.copied().unwrap_or(0))
                .collect(),
            capacity: names
                .values(&request.capacity)
                .into_iter()
                .map(Option::<&u32>::copied)
                .collect(),
            preferences,
            maxima,
        }
    }
}
