//! Translation for plugins built for an older contract. `0.1.0` and `0.2.0` share
//! the shapes `0.3.0` changed (distribute names every cluster in every list and
//! answers by name; rank has no positions), so one macro writes each version's
//! small module; `0.2.0` adds settings, which `0.1.0` drops.

/// Writes `info`, `select`, `distribute` and `rank` for the bindings module
/// `$version`, passing the request's `settings` on when the contract has them;
/// `hooks` lists the contract's hooks.
macro_rules! translate {
    ($version:ident $(, $settings:ident)?; hooks: $($hook:ident),+) => {
        use fedwasm_sdk::Hook;
        use wasmtime::Store;

        use super::bindings::$version::{wit as old, Plugin};
        use super::bindings::wit;
        use super::validate::Distribution;

        type Answer<T> = wasmtime::Result<Result<T, String>>;

        fn pairs<'a>(list: &[wit::KeyValue<'a>]) -> Vec<old::KeyValue<'a>> {
            list.iter()
                .map(|p| old::KeyValue {
                    key: p.key,
                    value: p.value,
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
                    $(old::Hook::$hook => Hook::$hook,)+
                })
                .collect())
        }

        fn named(list: Vec<old::ClusterReplicasResult>) -> Vec<(String, u32)> {
            list.into_iter().map(|c| (c.cluster, c.replicas)).collect()
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
                $($settings: r.$settings,)?
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

        /// The aligned lists become lists by name again: running counts above
        /// zero, known capacities, the `*` preference and each candidate's own.
        pub(super) fn distribute<T: 'static>(
            plugin: &Plugin,
            store: &mut Store<T>,
            r: wit::DistributeRequest<'_>,
        ) -> wasmtime::Result<Result<Distribution, String>> {
            let preferences: Option<(bool, Vec<_>)> = r.preferences.as_ref().map(|p| {
                let entry = |cluster, c: &wit::ClusterPreference| old::ClusterPreference {
                    cluster,
                    min_replicas: c.min_replicas,
                    max_replicas: c.max_replicas,
                    weight: c.weight,
                };
                let clusters = p
                    .wildcard
                    .as_ref()
                    .map(|c| entry("*", c))
                    .into_iter()
                    .chain(
                        r.clusters
                            .iter()
                            .zip(p.clusters)
                            .filter_map(|(&cluster, c)| c.as_ref().map(|c| entry(cluster, c))),
                    )
                    .collect();
                (p.rebalance, clusters)
            });
            let current: Vec<_> = r
                .clusters
                .iter()
                .zip(r.current)
                .filter(|(_, &replicas)| replicas > 0)
                .map(|(&cluster, &replicas)| old::ClusterReplicasParam { cluster, replicas })
                .collect();
            let capacity: Vec<_> = r
                .clusters
                .iter()
                .zip(r.capacity)
                .filter_map(|(&cluster, &replicas)| {
                    replicas.map(|replicas| old::ClusterReplicasParam { cluster, replicas })
                })
                .collect();
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
                $($settings: r.$settings,)?
            };
            let answer = plugin
                .fedwasm_placement_hooks()
                .call_distribute(store, request)?;
            Ok(answer.map(|out| Distribution::Named {
                plan: named(out.plan),
                overflow: named(out.overflow),
            }))
        }

        /// Positions are dropped: older contracts have none.
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
                $($settings: r.$settings,)?
            };
            plugin.fedwasm_placement_hooks().call_rank(store, request)
        }
    };
}

pub(super) use translate;
