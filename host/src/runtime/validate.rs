//! Checks on plugin outputs. A plugin is untrusted code: an answer that breaks the
//! contract is a plugin error, handled like a trap, never used.

use std::collections::HashSet;

use fedwasm_sdk::{DistributeRequest, DistributeResponse, SelectRequest, Selection};

use super::parts::DistributeParts;

/// Only candidates, each at most once.
pub fn selection(request: &SelectRequest, out: &[Selection]) -> Result<(), String> {
    let candidates: HashSet<&str> = request.clusters.iter().map(|c| c.name.as_str()).collect();
    let mut seen = HashSet::with_capacity(out.len());
    for s in out {
        if !candidates.contains(s.cluster.as_str()) {
            return Err(format!(
                "selected `{}`, which is not a candidate",
                s.cluster
            ));
        }
        if !seen.insert(s.cluster.as_str()) {
            return Err(format!("selected `{}` twice", s.cluster));
        }
    }
    Ok(())
}

/// The distinct candidates of a request in name order. A name is found by binary
/// search, or at once when answers come in name order (the SDK's maps give them so),
/// and its position is its slot: no hashing, no copy of a name.
struct Candidates<'a> {
    sorted: Vec<&'a str>,
}

impl<'a> Candidates<'a> {
    fn new(names: &'a [String]) -> Self {
        let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self { sorted }
    }

    fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The slot of `name`, trying `hint` first.
    fn find(&self, name: &str, hint: usize) -> Option<usize> {
        if self.sorted.get(hint) == Some(&name) {
            return Some(hint);
        }
        self.sorted.binary_search(&name).ok()
    }
}

/// A distribute answer in the shape of the plugin's contract.
#[derive(Debug)]
pub enum Distribution {
    /// `0.3.0` on: one count per candidate, in the request's order; `overflow` is
    /// empty when nothing overflowed.
    Aligned { plan: Vec<u32>, overflow: Vec<u32> },
    /// Before `0.3.0`: counts by cluster name; candidates left out get zero.
    Named {
        plan: Vec<(String, u32)>,
        overflow: Vec<(String, u32)>,
    },
}

/// No count above the total or the cluster's maximum; the sum at most the total;
/// by name, only candidates and each once, aligned, one entry per candidate.
/// Returns the plan with every candidate present and the overflows above zero.
pub(crate) fn distribution(
    parts: &DistributeParts<'_>,
    out: Distribution,
) -> Result<DistributeResponse, String> {
    match out {
        Distribution::Aligned { plan, overflow } => aligned(parts, plan, overflow),
        Distribution::Named { plan, overflow } => named(parts.request, plan, overflow),
    }
}

/// The preferences, when one of them caps something: only then does an entry need
/// a look-up.
fn capped(request: &DistributeRequest) -> Option<&fedwasm_sdk::Preferences> {
    request
        .preferences
        .as_ref()
        .filter(|p| p.clusters.values().any(|c| c.max_replicas.is_some()))
}

fn within(
    request: &DistributeRequest,
    capped: Option<&fedwasm_sdk::Preferences>,
    cluster: &str,
    replicas: u32,
) -> Result<(), String> {
    let max = capped
        .and_then(|p| p.for_cluster(cluster))
        .and_then(|p| p.max_replicas);
    within_max(request, max, cluster, replicas)
}

fn within_max(
    request: &DistributeRequest,
    max: Option<u32>,
    cluster: &str,
    replicas: u32,
) -> Result<(), String> {
    let total = request.total_replicas;
    if replicas > total {
        return Err(format!(
            "planned {replicas} replicas for `{cluster}`, more than the total of {total}"
        ));
    }
    match max {
        Some(max) if replicas > max => Err(format!(
            "planned {replicas} replicas for `{cluster}`, above its maxReplicas of {max}"
        )),
        _ => Ok(()),
    }
}

fn at_most_total(request: &DistributeRequest, sum: u64) -> Result<(), String> {
    let total = request.total_replicas;
    if sum > u64::from(total) {
        return Err(format!(
            "planned {sum} replicas in all, more than the total of {total}"
        ));
    }
    Ok(())
}

fn overflow_within(request: &DistributeRequest, cluster: &str, n: u32) -> Result<(), String> {
    let total = request.total_replicas;
    if n > total {
        return Err(format!(
            "reported an overflow of {n} for `{cluster}`, more than the total of {total}"
        ));
    }
    Ok(())
}

/// An aligned answer, checked against each candidate's maximum by position.
fn aligned(
    parts: &DistributeParts<'_>,
    plan: Vec<u32>,
    overflow: Vec<u32>,
) -> Result<DistributeResponse, String> {
    let request = parts.request;
    let n = request.clusters.len();
    if plan.len() != n {
        return Err(format!(
            "answered {} plan entries for {n} candidates",
            plan.len()
        ));
    }
    if !overflow.is_empty() && overflow.len() != n {
        return Err(format!(
            "answered {} overflow entries for {n} candidates (one per candidate, or none)",
            overflow.len()
        ));
    }
    let max = |i: usize| parts.maxima.get(i).copied().flatten();
    let mut sum: u64 = 0;
    for (i, (cluster, &replicas)) in request.clusters.iter().zip(&plan).enumerate() {
        within_max(request, max(i), cluster, replicas)?;
        sum += u64::from(replicas);
    }
    at_most_total(request, sum)?;
    for (cluster, &n) in request.clusters.iter().zip(&overflow) {
        overflow_within(request, cluster, n)?;
    }
    let mut out = DistributeResponse::default();
    let entries = request.clusters.iter().zip(plan);
    if parts.increasing {
        // Names in order, each once: the maps are built in one pass.
        out.plan = entries.map(|(c, n)| (c.clone(), n)).collect();
    } else {
        for (i, (cluster, replicas)) in entries.enumerate() {
            // A name the host listed twice is one cluster: its entries add up, and
            // their sum is checked too.
            let slot = out.plan.entry(cluster.clone()).or_insert(0);
            let summed = slot.saturating_add(replicas);
            if summed != replicas {
                within_max(request, max(i), cluster, summed)?;
            }
            *slot = summed;
        }
    }
    out.overflow = request
        .clusters
        .iter()
        .zip(overflow)
        .filter(|&(_, n)| n > 0)
        .map(|(c, n)| (c.clone(), n))
        .collect();
    Ok(out)
}

fn named(
    request: &DistributeRequest,
    plan: Vec<(String, u32)>,
    overflow: Vec<(String, u32)>,
) -> Result<DistributeResponse, String> {
    let candidates = Candidates::new(&request.clusters);
    let capped = capped(request);
    // Per slot: the plugin's entry (its name string is reused as the map key).
    let mut planned: Vec<Option<(String, u32)>> = Vec::new();
    planned.resize_with(candidates.len(), || None);
    let mut sum: u64 = 0;
    let mut hint = 0;
    for (cluster, replicas) in plan {
        let Some(slot) = candidates.find(&cluster, hint) else {
            return Err(format!(
                "planned replicas for `{cluster}`, which is not a candidate"
            ));
        };
        hint = slot + 1;
        if planned[slot].is_some() {
            return Err(format!("planned `{cluster}` twice"));
        }
        within(request, capped, &cluster, replicas)?;
        sum += u64::from(replicas);
        planned[slot] = Some((cluster, replicas));
    }
    at_most_total(request, sum)?;
    let mut reported = vec![false; candidates.len()];
    let mut overflows = Vec::with_capacity(overflow.len());
    hint = 0;
    for (cluster, n) in overflow {
        let Some(slot) = candidates.find(&cluster, hint) else {
            return Err(format!(
                "reported overflow for `{cluster}`, which is not a candidate"
            ));
        };
        hint = slot + 1;
        overflow_within(request, &cluster, n)?;
        if std::mem::replace(&mut reported[slot], true) {
            return Err(format!("reported overflow for `{cluster}` twice"));
        }
        if n > 0 {
            overflows.push((cluster, n));
        }
    }
    // Both in name order already, so collecting is a bulk build, not a sort.
    let plan = candidates
        .sorted
        .iter()
        .zip(planned)
        .map(|(name, entry)| entry.unwrap_or_else(|| (name.to_string(), 0)))
        .collect();
    Ok(DistributeResponse {
        plan,
        overflow: overflows.into_iter().collect(),
    })
}

/// A permutation of `0..len`.
pub fn ranking(len: usize, order: &[u32]) -> Result<(), String> {
    if order.len() != len {
        return Err(format!(
            "ranked {} backends, expected all {len}",
            order.len()
        ));
    }
    let mut seen = vec![false; len];
    for &i in order {
        let slot = seen
            .get_mut(i as usize)
            .ok_or_else(|| format!("ranked index {i}, but there are only {len} backends"))?;
        if *slot {
            return Err(format!("ranked backend {i} twice"));
        }
        *slot = true;
    }
    Ok(())
}

/// Clusters named in the preferences that are not candidates: almost always a typo
/// or a cluster that left. They are ignored; callers log or record the warning.
pub fn preference_warnings(request: &DistributeRequest) -> Vec<String> {
    let Some(prefs) = &request.preferences else {
        return Vec::new();
    };
    prefs
        .clusters
        .keys()
        .filter(|name| name.as_str() != "*" && !request.clusters.contains(name))
        .map(|name| {
            format!(
                "replica-set-preferences names cluster `{name}`, which is not a candidate; ignored"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn req(total: u32, clusters: &[&str]) -> DistributeRequest {
        DistributeRequest::new("ns/x", total, clusters.iter().copied())
    }

    fn out(plan: &[(&str, u32)]) -> Distribution {
        Distribution::Named {
            plan: plan.iter().map(|(c, r)| (c.to_string(), *r)).collect(),
            overflow: Vec::new(),
        }
    }

    fn aligned(plan: &[u32], overflow: &[u32]) -> Distribution {
        Distribution::Aligned {
            plan: plan.to_vec(),
            overflow: overflow.to_vec(),
        }
    }

    /// `distribution` for `request`, taken apart as `Plugin::distribute` does.
    fn check(request: &DistributeRequest, out: Distribution) -> Result<DistributeResponse, String> {
        distribution(&DistributeParts::new(request), out)
    }

    #[test]
    fn distribution_fills_missing_candidates_with_zero() {
        let got = check(&req(5, &["a", "b"]), out(&[("a", 5)])).unwrap();
        assert_eq!(got.plan, BTreeMap::from([("a".into(), 5), ("b".into(), 0)]));
    }

    #[test]
    fn distribution_rejects_contract_breaks() {
        let r = req(5, &["a", "b"]);
        assert!(check(&r, out(&[("c", 1)]))
            .unwrap_err()
            .contains("not a candidate"));
        assert!(check(&r, out(&[("a", 1), ("a", 1)]))
            .unwrap_err()
            .contains("twice"));
        assert!(check(&r, out(&[("a", 6)]))
            .unwrap_err()
            .contains("more than the total"));
        assert!(check(&r, out(&[("a", 3), ("b", 3)]))
            .unwrap_err()
            .contains("in all"));
        let mut capped = r.clone();
        capped.preferences = Some(fedwasm_sdk::Preferences {
            rebalance: false,
            clusters: BTreeMap::from([(
                "*".into(),
                fedwasm_sdk::ClusterPreference {
                    min_replicas: 0,
                    max_replicas: Some(2),
                    weight: 1,
                },
            )]),
        });
        assert!(check(&capped, out(&[("a", 3)]))
            .unwrap_err()
            .contains("maxReplicas"));
        assert!(check(&capped, aligned(&[0, 3], &[]))
            .unwrap_err()
            .contains("`b`, above its maxReplicas of 2"));
        // An own entry without a maximum lifts the `*` one.
        let mut own = capped.clone();
        own.preferences.as_mut().unwrap().clusters.insert(
            "b".into(),
            fedwasm_sdk::ClusterPreference {
                min_replicas: 0,
                max_replicas: None,
                weight: 1,
            },
        );
        assert_eq!(DistributeParts::new(&own).maxima, vec![Some(2), None]);
        assert!(check(&own, aligned(&[0, 3], &[])).is_ok());
    }

    #[test]
    fn aligned_answers_are_checked_as_named_ones() {
        let r = req(5, &["b", "a"]);
        let got = check(&r, aligned(&[1, 4], &[0, 2])).unwrap();
        assert_eq!(got.plan, BTreeMap::from([("a".into(), 4), ("b".into(), 1)]));
        assert_eq!(got.overflow, BTreeMap::from([("a".into(), 2)]));
        assert!(check(&r, aligned(&[5], &[]))
            .unwrap_err()
            .contains("1 plan entries for 2 candidates"));
        assert!(check(&r, aligned(&[0, 0], &[1]))
            .unwrap_err()
            .contains("overflow entries"));
        assert!(check(&r, aligned(&[6, 0], &[]))
            .unwrap_err()
            .contains("more than the total"));
        assert!(check(&r, aligned(&[3, 3], &[]))
            .unwrap_err()
            .contains("in all"));
        assert!(check(&r, aligned(&[0, 0], &[0, 9]))
            .unwrap_err()
            .contains("overflow of 9"));
    }

    #[test]
    fn ranking_must_be_a_permutation() {
        assert!(ranking(3, &[2, 0, 1]).is_ok());
        assert!(ranking(3, &[0, 1]).is_err());
        assert!(ranking(3, &[0, 1, 1]).is_err());
        assert!(ranking(3, &[0, 1, 3]).is_err());
    }

    #[test]
    fn unknown_preference_names_are_reported() {
        let mut r = req(5, &["a"]);
        r.preferences = Some(fedwasm_sdk::Preferences {
            rebalance: false,
            clusters: BTreeMap::from([
                ("*".into(), Default::default()),
                ("a".into(), Default::default()),
                ("typo".into(), Default::default()),
            ]),
        });
        let w = preference_warnings(&r);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("`typo`"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Cluster names from a small alphabet, so outputs hit candidates often.
        fn name() -> impl Strategy<Value = String> {
            "[abcx]{1,2}"
        }

        fn entries() -> impl Strategy<Value = Vec<(String, u32)>> {
            prop::collection::vec((name(), prop_oneof![0u32..20, any::<u32>()]), 0..6)
        }

        /// A distribute answer of either shape.
        fn answer() -> impl Strategy<Value = Distribution> {
            let count = || prop_oneof![0u32..20, any::<u32>()];
            prop_oneof![
                (entries(), entries())
                    .prop_map(|(plan, overflow)| Distribution::Named { plan, overflow }),
                (
                    prop::collection::vec(count(), 0..6),
                    prop::collection::vec(count(), 0..6)
                )
                    .prop_map(|(plan, overflow)| Distribution::Aligned { plan, overflow }),
            ]
        }

        fn preferences() -> impl Strategy<Value = Option<fedwasm_sdk::Preferences>> {
            prop::option::of(
                prop::collection::btree_map(
                    prop_oneof![name(), Just("*".to_string())],
                    (0u32..10, prop::option::of(0u32..10), 0u32..5).prop_map(
                        |(min_replicas, max_replicas, weight)| fedwasm_sdk::ClusterPreference {
                            min_replicas,
                            max_replicas,
                            weight,
                        },
                    ),
                    0..4,
                )
                .prop_map(|clusters| fedwasm_sdk::Preferences {
                    rebalance: false,
                    clusters,
                }),
            )
        }

        proptest! {
            #[test]
            fn a_distribution_is_valid_or_refused_with_a_reason(
                total in prop_oneof![0u32..20, any::<u32>()],
                clusters in prop::collection::vec(name(), 0..5),
                preferences in preferences(),
                out in answer(),
            ) {
                let mut request = DistributeRequest::new("ns/x", total, clusters.iter().map(String::as_str));
                request.preferences = preferences;
                match check(&request, out) {
                    Ok(checked) => {
                        let sum: u64 = checked.plan.values().map(|&n| u64::from(n)).sum();
                        prop_assert!(sum <= u64::from(total));
                        for (cluster, n) in &checked.plan {
                            prop_assert!(request.clusters.contains(cluster));
                            let max = request.preferences.as_ref()
                                .and_then(|p| p.for_cluster(cluster))
                                .and_then(|p| p.max_replicas);
                            prop_assert!(max.is_none_or(|m| *n <= m));
                        }
                        for c in &request.clusters {
                            prop_assert!(checked.plan.contains_key(c));
                        }
                        for cluster in checked.overflow.keys() {
                            prop_assert!(request.clusters.contains(cluster));
                        }
                    }
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }

            #[test]
            fn a_selection_is_valid_or_refused_with_a_reason(
                candidates in prop::collection::vec(name(), 0..5),
                chosen in prop::collection::vec((name(), any::<u32>()), 0..6),
            ) {
                let request = SelectRequest {
                    object: Default::default(),
                    clusters: candidates
                        .iter()
                        .map(|n| fedwasm_sdk::ClusterInfo { name: n.clone(), ..Default::default() })
                        .collect(),
                    settings: String::new(),
                };
                let out: Vec<Selection> = chosen
                    .into_iter()
                    .map(|(cluster, score)| Selection { cluster, score })
                    .collect();
                match selection(&request, &out) {
                    Ok(()) => {
                        let mut seen = HashSet::new();
                        for s in &out {
                            prop_assert!(candidates.contains(&s.cluster));
                            prop_assert!(seen.insert(&s.cluster));
                        }
                    }
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }

            #[test]
            fn a_ranking_is_a_permutation_or_refused_with_a_reason(
                len in 0usize..8,
                order in prop::collection::vec(prop_oneof![0u32..8, any::<u32>()], 0..9),
            ) {
                match ranking(len, &order) {
                    Ok(()) => {
                        let mut sorted = order.clone();
                        sorted.sort_unstable();
                        prop_assert_eq!(sorted, (0..len as u32).collect::<Vec<_>>());
                    }
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }
        }
    }
}
