//! Translation for plugins built for an older contract. Every older version has
//! today's `info` and `select` (with or without settings), so one macro writes
//! them for each version's small module; the parts that differ are macros of their
//! own, each used by the versions that share it:
//! - [`named_distribute!`]: `0.1.0` and `0.2.0` name every cluster in every list of
//!   a distribute request and answer by name;
//! - [`rank!`]: with or without settings and positions;
//! - [`customize!`]: `0.2.0` and `0.3.0` have today's `customize`.
//!
//! `0.3.0` writes its distribute (aligned lists, a string per name) by hand, in
//! [`super::v0_3`].

/// Writes `info` and `select` for the bindings module `$version`, passing the
/// request's `settings` on when the contract has them; `hooks` lists the
/// contract's hooks.
macro_rules! translate {
    ($version:ident $(, $settings:ident)?; hooks: $($hook:ident),+) => {
        use fedwasm_sdk::Hook;
        use wasmtime::Store;

        use super::bindings::$version::{wit as old, Plugin};
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
    };
}

pub(super) use translate;

/// Writes `distribute` for a contract that names every cluster in every list: the
/// values by candidate become lists by name again (running counts above zero,
/// known capacities, the `*` preference and each candidate's own) and the answer
/// comes back by name. `settings` when the contract has them.
macro_rules! named_distribute {
    ($($settings:ident)?) => {
        use super::parts::DistributeParts;
        use super::validate::Distribution;

        fn named(list: Vec<old::ClusterReplicasResult>) -> Vec<(String, u32)> {
            list.into_iter().map(|c| (c.cluster, c.replicas)).collect()
        }

        pub(super) fn distribute<T: 'static>(
            plugin: &Plugin,
            store: &mut Store<T>,
            parts: &DistributeParts<'_>,
        ) -> Answer<Distribution> {
            let r = parts.request;
            let preferences: Option<(bool, Vec<_>)> = parts.preferences.as_ref().map(|p| {
                let entry = |cluster, c: &fedwasm_sdk::ClusterPreference| old::ClusterPreference {
                    cluster,
                    min_replicas: c.min_replicas,
                    max_replicas: c.max_replicas,
                    weight: c.weight,
                };
                let clusters = p
                    .wildcard
                    .map(|c| entry("*", c))
                    .into_iter()
                    .chain(
                        parts
                            .clusters
                            .iter()
                            .zip(&p.own)
                            .filter_map(|(&cluster, c)| c.map(|c| entry(cluster, c))),
                    )
                    .collect();
                (p.rebalance, clusters)
            });
            let current: Vec<_> = parts
                .clusters
                .iter()
                .zip(&parts.current)
                .filter(|(_, &replicas)| replicas > 0)
                .map(|(&cluster, &replicas)| old::ClusterReplicasParam { cluster, replicas })
                .collect();
            let capacity: Vec<_> = parts
                .clusters
                .iter()
                .zip(&parts.capacity)
                .filter_map(|(&cluster, &replicas)| {
                    replicas.map(|replicas| old::ClusterReplicasParam { cluster, replicas })
                })
                .collect();
            let request = old::DistributeRequest {
                object: &r.object,
                total_replicas: r.total_replicas,
                clusters: &parts.clusters,
                preferences: preferences
                    .as_ref()
                    .map(|(rebalance, clusters)| old::Preferences {
                        rebalance: *rebalance,
                        clusters,
                    }),
                current: &current,
                capacity: &capacity,
                $($settings: &r.$settings,)?
            };
            let answer = plugin
                .fedwasm_placement_hooks()
                .call_distribute(store, request)?;
            Ok(answer.map(|out| Distribution::Named {
                plan: named(out.plan),
                overflow: named(out.overflow),
            }))
        }
    };
}

pub(super) use named_distribute;

/// Writes `rank`: `settings` when the contract has them; `position` when it has
/// positions (the module then has a `coordinates` conversion), which are dropped
/// otherwise.
macro_rules! rank {
    ($($settings:ident)? $(; $position:ident)?) => {
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
                    $($position: b.$position.map(coordinates),)?
                    healthy: b.healthy,
                    available: b.available,
                })
                .collect();
            let request = old::RankRequest {
                client: old::Location {
                    region: r.client.region,
                    zone: r.client.zone,
                    $($position: r.client.$position.map(coordinates),)?
                },
                backends: &backends,
                $($settings: r.$settings,)?
            };
            plugin.fedwasm_placement_hooks().call_rank(store, request)
        }
    };
}

pub(super) use rank;

/// Writes today's `customize` for a contract that has it.
macro_rules! customize {
    () => {
        pub(super) fn customize<T: 'static>(
            plugin: &Plugin,
            store: &mut Store<T>,
            r: wit::CustomizeRequest<'_>,
        ) -> Answer<String> {
            let labels = pairs(r.cluster.labels);
            let request = old::CustomizeRequest {
                object: r.object,
                cluster: old::ClusterInfo {
                    name: r.cluster.name,
                    region: r.cluster.region,
                    zone: r.cluster.zone,
                    labels: &labels,
                    ready: r.cluster.ready,
                },
                settings: r.settings,
            };
            plugin
                .fedwasm_placement_hooks()
                .call_customize(store, request)
        }
    };
}

pub(super) use customize;
