//! Conversions between the WIT bindings and the plain types, and the dispatch used by
//! `export_plugin!`.

use std::collections::BTreeMap;

use crate::__private::wit;
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

/// The candidates' names, kept in one buffer while the request itself goes to the
/// plugin, sorted so that the plugin's maps (sorted too) are aligned with the
/// request's order by one merge.
struct Aligner {
    joined: String,
    /// (start, end, index in the request), sorted by name.
    spans: Vec<(usize, usize, usize)>,
}

impl Aligner {
    fn new(clusters: &[String]) -> Self {
        let mut joined = String::with_capacity(clusters.iter().map(String::len).sum());
        let mut spans = Vec::with_capacity(clusters.len());
        for (i, c) in clusters.iter().enumerate() {
            let start = joined.len();
            joined.push_str(c);
            spans.push((start, joined.len(), i));
        }
        // Candidates usually come in name order already: then no sort.
        if !clusters.is_sorted() {
            spans.sort_unstable_by(|a, b| joined[a.0..a.1].cmp(&joined[b.0..b.1]));
        }
        Self { joined, spans }
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

pub fn distribute<P: Plugin>(
    request: wit::DistributeRequest,
) -> Result<wit::DistributeResponse, String> {
    let wit::DistributeRequest {
        object,
        total_replicas,
        clusters,
        preferences,
        current,
        capacity,
        settings,
    } = request;
    let aligner = Aligner::new(&clusters);
    let preferences = preferences.map(|p| Preferences {
        rebalance: p.rebalance,
        clusters: p
            .wildcard
            .map(|c| ("*".to_string(), c))
            .into_iter()
            .chain(
                clusters
                    .iter()
                    .zip(p.clusters)
                    .filter_map(|(name, c)| Some((name.clone(), c?))),
            )
            .map(|(name, c)| {
                (
                    name,
                    ClusterPreference {
                        min_replicas: c.min_replicas,
                        max_replicas: c.max_replicas,
                        weight: c.weight,
                    },
                )
            })
            .collect(),
    });
    let current = clusters
        .iter()
        .zip(current)
        .filter(|&(_, n)| n > 0)
        .map(|(c, n)| (c.clone(), n))
        .collect();
    let capacity = clusters
        .iter()
        .zip(capacity)
        .filter_map(|(c, n)| Some((c.clone(), n?)))
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

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn map(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn maps_come_back_in_the_request_order() {
        let aligner = Aligner::new(&names(&["zeta", "alpha", "mid", "alphabet"]));
        let plan = map(&[("alpha", 1), ("alphabet", 2), ("zeta", 4)]);
        assert_eq!(aligner.align(&plan, "planned").unwrap(), vec![4, 1, 0, 2]);
        assert_eq!(
            aligner.align(&BTreeMap::new(), "planned").unwrap(),
            vec![0; 4]
        );
    }

    #[test]
    fn a_name_that_is_no_candidate_is_named() {
        let aligner = Aligner::new(&names(&["b", "d"]));
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
}
