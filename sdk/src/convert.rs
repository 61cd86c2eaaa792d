//! Conversions between the WIT bindings and the plain types, and the dispatch used by
//! `export_plugin!`.

use std::collections::BTreeMap;

use crate::__private::wit;
use crate::*;

fn to_map(pairs: Vec<wit::KeyValue>) -> BTreeMap<String, String> {
    pairs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn replicas_to_map(pairs: Vec<wit::ClusterReplicas>) -> BTreeMap<String, u32> {
    pairs.into_iter().map(|c| (c.cluster, c.replicas)).collect()
}

fn replicas_from_map(map: BTreeMap<String, u32>) -> Vec<wit::ClusterReplicas> {
    map.into_iter()
        .map(|(cluster, replicas)| wit::ClusterReplicas { cluster, replicas })
        .collect()
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

pub fn distribute<P: Plugin>(
    request: wit::DistributeRequest,
) -> Result<wit::DistributeResponse, String> {
    let request = DistributeRequest {
        object: request.object,
        total_replicas: request.total_replicas,
        clusters: request.clusters,
        preferences: request.preferences.map(|p| Preferences {
            rebalance: p.rebalance,
            clusters: p
                .clusters
                .into_iter()
                .map(|c| {
                    (
                        c.cluster,
                        ClusterPreference {
                            min_replicas: c.min_replicas,
                            max_replicas: c.max_replicas,
                            weight: c.weight,
                        },
                    )
                })
                .collect(),
        }),
        current: replicas_to_map(request.current),
        capacity: replicas_to_map(request.capacity),
        settings: request.settings,
    };
    let response = P::distribute(request)?;
    Ok(wit::DistributeResponse {
        plan: replicas_from_map(response.plan),
        overflow: replicas_from_map(response.overflow),
    })
}

pub fn rank<P: Plugin>(request: wit::RankRequest) -> Result<Vec<u32>, String> {
    let request = RankRequest {
        client: Location {
            region: request.client.region,
            zone: request.client.zone,
        },
        backends: request
            .backends
            .into_iter()
            .map(|b| Backend {
                cluster: b.cluster,
                region: b.region,
                zone: b.zone,
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
