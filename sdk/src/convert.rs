//! Conversions between the WIT bindings and the plain types, and the dispatch used by
//! `export_plugin!`.

use std::collections::BTreeMap;

use crate::__private::wit;
use crate::flat::{UNBOUNDED, WILDCARD};
use crate::*;

fn to_map(pairs: Vec<wit::KeyValue>) -> BTreeMap<String, String> {
    pairs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

pub fn info<P: Plugin>() -> wit::PluginInfo {
    wit::PluginInfo {
        hooks: P::HOOKS
            .iter()
            .map(|h| match h {
                Hook::Select => wit::Hook::Select,
                Hook::Distribute => wit::Hook::Distribute,
                Hook::Rank => wit::Hook::Rank,
                Hook::Customize => wit::Hook::Customize,
            })
            .collect(),
    }
}

fn cluster_info(c: wit::ClusterInfo) -> ClusterInfo {
    ClusterInfo {
        name: c.name,
        region: c.region,
        zone: c.zone,
        labels: to_map(c.labels),
        ready: c.ready,
    }
}

pub fn select<P: Plugin>(request: wit::SelectRequest) -> Result<Vec<wit::Selection>, String> {
    let o = request.object;
    let request = SelectRequest {
        object: ObjectRef {
            kind: o.kind,
            namespace: o.namespace,
            name: o.name,
            labels: to_map(o.labels),
            annotations: to_map(o.annotations),
        },
        clusters: request.clusters.into_iter().map(cluster_info).collect(),
        settings: request.settings,
    };
    Ok(P::select(request)?
        .into_iter()
        .map(|s| wit::Selection {
            cluster: s.cluster,
            score: s.score,
        })
        .collect())
}

/// The candidates' names as the request brought them (one string), sorted by
/// name, so that the plugin's maps (sorted too) are aligned with the request's
/// order by one merge.
struct Aligner {
    joined: String,
    /// (start, end, index in the request), sorted by name.
    spans: Vec<(usize, usize, usize)>,
}

impl Aligner {
    /// Splits the request's `names` at the ends `numbers` gives (the first of
    /// every three): the candidates' names in the request's order, and the
    /// aligner keeping `names`. Ends that do not cut `names` into names (past its
    /// end, decreasing, inside a character, or short of the end) are the host's
    /// error, reported as such.
    fn split(names: String, numbers: &[u32]) -> Result<(Vec<String>, Self), String> {
        let count = numbers.len() / 3;
        let mut clusters = Vec::with_capacity(count);
        let mut spans = Vec::with_capacity(count);
        let mut start = 0;
        for (i, entry) in numbers.chunks_exact(3).enumerate() {
            let end = entry[0] as usize;
            let Some(name) = names.get(start..end) else {
                return Err(format!(
                    "malformed request: candidate {i} would be bytes {start}..{end} of {} in `names`",
                    names.len()
                ));
            };
            clusters.push(name.to_string());
            spans.push((start, end, i));
            start = end;
        }
        if start != names.len() {
            return Err(format!(
                "malformed request: `names` has {} bytes, the candidates end at {start}",
                names.len()
            ));
        }
        // Candidates usually come in name order already: then no sort.
        if !clusters.is_sorted() {
            spans.sort_unstable_by(|a, b| names[a.0..a.1].cmp(&names[b.0..b.1]));
        }
        Ok((
            clusters,
            Self {
                joined: names,
                spans,
            },
        ))
    }

    /// The map as one value per candidate, in the request's order; a name that is
    /// not a candidate is an error naming it and `what` the map is.
    fn align(&self, map: &BTreeMap<String, u32>, what: &str) -> Result<Vec<u32>, String> {
        let mut out = vec![0; self.spans.len()];
        let mut spans = self.spans.iter().peekable();
        for (name, &replicas) in map {
            loop {
                match spans.peek() {
                    Some(&&(start, end, i)) if self.joined[start..end] == **name => {
                        out[i] = replicas;
                        spans.next();
                        break;
                    }
                    Some(&&(start, end, _)) if self.joined[start..end] < **name => {
                        spans.next();
                    }
                    _ => return Err(format!("{what} `{name}`, which is not a candidate")),
                }
            }
        }
        Ok(out)
    }
}

/// The annotation's entries by name: `*` and each named candidate's own.
fn preferences(p: wit::Preferences, clusters: &[String]) -> Result<Preferences, String> {
    if !p.entries.len().is_multiple_of(4) {
        return Err(format!(
            "malformed request: {} numbers for the preferences, not four each",
            p.entries.len()
        ));
    }
    let mut entries = Vec::with_capacity(p.entries.len() / 4);
    for entry in p.entries.chunks_exact(4) {
        let &[whom, min_replicas, max_replicas, weight] = entry else {
            unreachable!("chunks of four");
        };
        let name = if whom == WILDCARD {
            "*"
        } else {
            clusters.get(whom as usize).ok_or_else(|| {
                format!(
                    "malformed request: a preference for candidate {whom} of {}",
                    clusters.len()
                )
            })?
        };
        let preference = ClusterPreference {
            min_replicas,
            max_replicas: (max_replicas != UNBOUNDED).then_some(max_replicas),
            weight,
        };
        entries.push((name.to_string(), preference));
    }
    Ok(Preferences {
        rebalance: p.rebalance,
        clusters: entries.into_iter().collect(),
    })
}

pub fn distribute<P: Plugin>(
    request: wit::DistributeRequest,
) -> Result<wit::DistributeResponse, String> {
    let wit::DistributeRequest {
        object,
        total_replicas,
        names,
        candidates: numbers,
        preferences: wanted,
        settings,
    } = request;
    if !numbers.len().is_multiple_of(3) {
        return Err(format!(
            "malformed request: {} numbers for the candidates, not three each",
            numbers.len()
        ));
    }
    let (clusters, aligner) = Aligner::split(names, &numbers)?;
    let preferences = wanted.map(|p| preferences(p, &clusters)).transpose()?;
    let counts = || clusters.iter().zip(numbers.chunks_exact(3));
    let current = counts()
        .filter(|(_, n)| n[1] > 0)
        .map(|(c, n)| (c.clone(), n[1]))
        .collect();
    let capacity = counts()
        .filter(|(_, n)| n[2] != UNBOUNDED)
        .map(|(c, n)| (c.clone(), n[2]))
        .collect();
    let response = P::distribute(DistributeRequest {
        object,
        total_replicas,
        clusters,
        preferences,
        current,
        capacity,
        settings,
    })?;
    let plan = aligner.align(&response.plan, "planned replicas for")?;
    let overflow = if response.overflow.is_empty() {
        Vec::new()
    } else {
        aligner.align(&response.overflow, "reported overflow for")?
    };
    Ok(wit::DistributeResponse { plan, overflow })
}

fn coordinates(p: wit::Coordinates) -> Coordinates {
    Coordinates {
        latitude: p.latitude,
        longitude: p.longitude,
    }
}

pub fn rank<P: Plugin>(request: wit::RankRequest) -> Result<Vec<u32>, String> {
    let request = RankRequest {
        client: Location {
            region: request.client.region,
            zone: request.client.zone,
            position: request.client.position.map(coordinates),
        },
        backends: request
            .backends
            .into_iter()
            .map(|b| Backend {
                cluster: b.cluster,
                region: b.region,
                zone: b.zone,
                position: b.position.map(coordinates),
                healthy: b.healthy,
                available: b.available,
            })
            .collect(),
        settings: request.settings,
    };
    P::rank(request)
}

pub fn customize<P: Plugin>(request: wit::CustomizeRequest) -> Result<String, String> {
    P::customize(CustomizeRequest {
        object: request.object,
        cluster: cluster_info(request.cluster),
        settings: request.settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers of candidates whose names end at `ends`, nothing running, no
    /// capacity bound.
    fn numbers(ends: &[u32]) -> Vec<u32> {
        ends.iter().flat_map(|&end| [end, 0, UNBOUNDED]).collect()
    }

    /// The aligner for `list`, as a request brings the names.
    fn aligner(list: &[&str]) -> Aligner {
        let mut ends = Vec::new();
        let mut end = 0;
        for name in list {
            end += name.len() as u32;
            ends.push(end);
        }
        let (clusters, aligner) = Aligner::split(list.concat(), &numbers(&ends)).unwrap();
        assert_eq!(clusters, list);
        aligner
    }

    fn map(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn maps_come_back_in_the_request_order() {
        let aligner = aligner(&["zeta", "alpha", "mid", "alphabet"]);
        let plan = map(&[("alpha", 1), ("alphabet", 2), ("zeta", 4)]);
        assert_eq!(aligner.align(&plan, "planned").unwrap(), vec![4, 1, 0, 2]);
        assert_eq!(
            aligner.align(&BTreeMap::new(), "planned").unwrap(),
            vec![0; 4]
        );
    }

    #[test]
    fn a_name_that_is_no_candidate_is_named() {
        let aligner = aligner(&["b", "d"]);
        for stray in ["a", "c", "e"] {
            let e = aligner
                .align(&map(&[("b", 1), (stray, 1)]), "planned replicas for")
                .unwrap_err();
            assert_eq!(
                e,
                format!("planned replicas for `{stray}`, which is not a candidate")
            );
        }
    }

    #[test]
    fn names_cut_wrong_are_the_hosts_error() {
        let cases: [(&str, &[u32], &str); 4] = [
            ("abc", &[1, 5], "candidate 1 would be bytes 1..5 of 3"),
            ("abc", &[2, 1], "candidate 1 would be bytes 2..1 of 3"),
            (
                "abc",
                &[1, 2],
                "`names` has 3 bytes, the candidates end at 2",
            ),
            ("é", &[1], "candidate 0 would be bytes 0..1 of 2"),
        ];
        for (names, ends, want) in cases {
            let Err(e) = Aligner::split(names.into(), &numbers(ends)) else {
                panic!("{names:?} cut at {ends:?} was taken");
            };
            assert!(
                e.starts_with("malformed request: ") && e.contains(want),
                "{e}"
            );
        }
        let (clusters, _) = Aligner::split(String::new(), &[]).unwrap();
        assert!(clusters.is_empty());
    }

    #[test]
    fn preferences_are_named_again() {
        let clusters = ["a", "b", "c"].map(String::from);
        let p = preferences(
            wit::Preferences {
                rebalance: true,
                entries: vec![2, 1, 4, 3, WILDCARD, 0, UNBOUNDED, 7, 0, 2, 3, 2],
            },
            &clusters,
        )
        .unwrap();
        assert!(p.rebalance);
        let got: Vec<_> = p
            .clusters
            .iter()
            .map(|(k, v)| (k.as_str(), v.min_replicas, v.max_replicas, v.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("*", 0, None, 7),
                ("a", 2, Some(3), 2),
                ("c", 1, Some(4), 3)
            ]
        );
        for entries in [vec![3, 0, 0, 1], vec![0, 0, 1]] {
            let e = preferences(
                wit::Preferences {
                    rebalance: false,
                    entries,
                },
                &clusters,
            )
            .unwrap_err();
            assert!(e.starts_with("malformed request: "), "{e}");
        }
    }

    /// Answers what reached it: each candidate gets its running replicas plus its
    /// capacity (when bounded) plus its own preference's weight, and overflows one
    /// where a preference names it.
    struct Echo;

    impl Plugin for Echo {
        const HOOKS: &'static [Hook] = &[Hook::Distribute];

        fn distribute(r: DistributeRequest) -> Result<DistributeResponse, String> {
            let p = r.preferences.unwrap_or_default();
            let mut out = DistributeResponse::default();
            for c in &r.clusters {
                let weight = p.clusters.get(c).map_or(0, |p| p.weight);
                let planned = r.current.get(c).copied().unwrap_or(0)
                    + r.capacity.get(c).copied().unwrap_or(0)
                    + weight;
                out.plan.insert(c.clone(), planned);
                if weight > 0 {
                    out.overflow.insert(c.clone(), 1);
                }
            }
            Ok(out)
        }
    }

    fn flat(numbers: Vec<u32>, preferences: Option<wit::Preferences>) -> wit::DistributeRequest {
        wit::DistributeRequest {
            object: "ns/web".into(),
            total_replicas: 9,
            names: "zetaalphamid".into(),
            candidates: numbers,
            preferences,
            settings: String::new(),
        }
    }

    #[test]
    fn a_flat_request_reaches_the_plugin_by_name_and_the_answer_comes_back_aligned() {
        // zeta: 2 running, unbounded; alpha: none running, room for 5; mid: 1, 0.
        let numbers = vec![4, 2, UNBOUNDED, 9, 0, 5, 12, 1, 0];
        // mid's own preference: weight 10.
        let preferences = wit::Preferences {
            rebalance: false,
            entries: vec![2, 0, UNBOUNDED, 10],
        };
        let out = distribute::<Echo>(flat(numbers.clone(), Some(preferences))).unwrap();
        assert_eq!(out.plan, vec![2, 5, 11]);
        assert_eq!(out.overflow, vec![0, 0, 1]);
        let out = distribute::<Echo>(flat(numbers.clone(), None)).unwrap();
        assert_eq!(out.plan, vec![2, 5, 1]);
        assert!(out.overflow.is_empty());
        for bad in [&numbers[..8], &numbers[..6]] {
            let e = distribute::<Echo>(flat(bad.to_vec(), None)).unwrap_err();
            assert!(e.starts_with("malformed request: "), "{e}");
        }
    }
}
