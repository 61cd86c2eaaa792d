//! Plugins built for `fedwasm:placement@0.1.0`: requests are translated from the
//! current contract (their settings dropped: `0.1.0` has none) and answers back.
//! `0.1.0` has no `customize` hook, so such a plugin never declares it.

use fedwasm_sdk::Hook;
use wasmtime::Store;

use super::bindings::v0_1::{wit as old, Plugin};
use super::bindings::wit;

type Answer<T> = wasmtime::Result<Result<T, String>>;

fn pairs<'a>(list: &[wit::KeyValue<'a>]) -> Vec<old::KeyValue<'a>> {
    list.iter()
        .map(|p| old::KeyValue {
            key: p.key,
            value: p.value,
        })
        .collect()
}

fn replicas<'a>(list: &[wit::ClusterReplicasParam<'a>]) -> Vec<old::ClusterReplicasParam<'a>> {
    list.iter()
        .map(|c| old::ClusterReplicasParam {
            cluster: c.cluster,
            replicas: c.replicas,
        })
        .collect()
}

fn replicas_back(list: Vec<old::ClusterReplicasResult>) -> Vec<wit::ClusterReplicasResult> {
    list.into_iter()
        .map(|c| wit::ClusterReplicasResult {
            cluster: c.cluster,
            replicas: c.replicas,
        })
        .collect()
}

pub(super) fn info<T: 'static>(
    plugin: &Plugin,
    store: &mut Store<T>,
) -> wasmtime::Result<Vec<Hook>> {
    let info = plugin.fedwasm_placement_hooks().call_info(store)?;
    Ok(info
        .hooks
        .into_iter()
        .map(|h| match h {
            old::Hook::Select => Hook::Select,
            old::Hook::Distribute => Hook::Distribute,
            old::Hook::Rank => Hook::Rank,
        })
        .collect())
}

pub(super) fn select<T: 'static>(
    plugin: &Plugin,
    store: &mut Store<T>,
    r: wit::SelectRequest<'_>,
) -> Answer<Vec<wit::Selection>> {
    let labels = pairs(r.object.labels);
    let annotations = pairs(r.object.annotations);
    let cluster_labels: Vec<_> = r.clusters.iter().map(|c| pairs(c.labels)).collect();
    let clusters: Vec<_> = r
        .clusters
        .iter()
        .zip(&cluster_labels)
        .map(|(c, labels)| old::ClusterInfo {
            name: c.name,
            region: c.region,
            zone: c.zone,
            labels,
            ready: c.ready,
        })
        .collect();
    let request = old::SelectRequest {
        object: old::ObjectRef {
            kind: r.object.kind,
            namespace: r.object.namespace,
            name: r.object.name,
            labels: &labels,
            annotations: &annotations,
        },
        clusters: &clusters,
    };
    let answer = plugin
        .fedwasm_placement_hooks()
        .call_select(store, request)?;
    Ok(answer.map(|chosen| {
        chosen
            .into_iter()
            .map(|s| wit::Selection {
                cluster: s.cluster,
                score: s.score,
            })
            .collect()
    }))
}

pub(super) fn distribute<T: 'static>(
    plugin: &Plugin,
    store: &mut Store<T>,
    r: wit::DistributeRequest<'_>,
) -> Answer<wit::DistributeResponse> {
    let preferences: Option<(bool, Vec<_>)> = r.preferences.as_ref().map(|p| {
        let clusters = p
            .clusters
            .iter()
            .map(|c| old::ClusterPreference {
                cluster: c.cluster,
                min_replicas: c.min_replicas,
                max_replicas: c.max_replicas,
                weight: c.weight,
            })
            .collect();
        (p.rebalance, clusters)
    });
    let current = replicas(r.current);
    let capacity = replicas(r.capacity);
    let request = old::DistributeRequest {
        object: r.object,
        total_replicas: r.total_replicas,
        clusters: r.clusters,
        preferences: preferences
            .as_ref()
            .map(|(rebalance, clusters)| old::Preferences {
                rebalance: *rebalance,
                clusters,
            }),
        current: &current,
        capacity: &capacity,
    };
    let answer = plugin
        .fedwasm_placement_hooks()
        .call_distribute(store, request)?;
    Ok(answer.map(|out| wit::DistributeResponse {
        plan: replicas_back(out.plan),
        overflow: replicas_back(out.overflow),
    }))
}

pub(super) fn rank<T: 'static>(
    plugin: &Plugin,
    store: &mut Store<T>,
    r: wit::RankRequest<'_>,
) -> Answer<Vec<u32>> {
    let backends: Vec<_> = r
        .backends
        .iter()
        .map(|b| old::Backend {
            cluster: b.cluster,
            region: b.region,
            zone: b.zone,
            healthy: b.healthy,
            available: b.available,
        })
        .collect();
    let request = old::RankRequest {
        client: old::Location {
            region: r.client.region,
            zone: r.client.zone,
        },
        backends: &backends,
    };
    plugin.fedwasm_placement_hooks().call_rank(store, request)
}
