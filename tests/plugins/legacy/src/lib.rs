//! A plugin as it was built for an older contract, straight on wit-bindgen (the SDK
//! builds the current one): `fedwasm:placement@0.1.0` by default, `0.2.0` with the
//! `v0_2` feature, `0.3.0` with `v0_3`. It selects the clusters whose name does
//! not end in `-b`, keeps the replicas each cluster runs now (as `current` says)
//! and puts the rest in the last candidate by name, and ranks backends in reverse:
//! answers no built-in gives, so a test can tell it answered and what reached it.
//! The `0.2.0` and `0.3.0` builds also score selections by the length of their
//! settings and answer customize with a patch naming the member.

#[cfg(target_arch = "wasm32")]
mod bindings {
    #[cfg(not(any(feature = "v0_2", feature = "v0_3")))]
    wit_bindgen::generate!({
        path: "../../../host/wit/0.1.0",
        world: "plugin",
    });
    #[cfg(feature = "v0_2")]
    wit_bindgen::generate!({
        path: "../../../host/wit/0.2.0",
        world: "plugin",
    });
    #[cfg(feature = "v0_3")]
    wit_bindgen::generate!({
        path: "../../../host/wit/0.3.0",
        world: "plugin",
    });

    use exports::fedwasm::placement::hooks::Guest;
    use fedwasm::placement::types::*;

    struct Legacy;

    impl Guest for Legacy {
        fn info() -> PluginInfo {
            PluginInfo {
                hooks: vec![
                    Hook::Select,
                    Hook::Distribute,
                    Hook::Rank,
                    #[cfg(any(feature = "v0_2", feature = "v0_3"))]
                    Hook::Customize,
                ],
            }
        }

        fn select(request: SelectRequest) -> Result<Vec<Selection>, String> {
            #[cfg(any(feature = "v0_2", feature = "v0_3"))]
            let score = request.settings.len() as u32;
            #[cfg(not(any(feature = "v0_2", feature = "v0_3")))]
            let score = 1;
            Ok(request
                .clusters
                .into_iter()
                .filter(|c| !c.name.ends_with("-b"))
                .map(|c| Selection {
                    cluster: c.name,
                    score,
                })
                .collect())
        }

        #[cfg(not(feature = "v0_3"))]
        fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
            let Some(last) = request.clusters.iter().max() else {
                return Ok(DistributeResponse {
                    plan: Vec::new(),
                    overflow: Vec::new(),
                });
            };
            let mut left = request.total_replicas;
            let mut plan = Vec::new();
            for c in &request.current {
                if &c.cluster != last && request.clusters.contains(&c.cluster) {
                    let keep = c.replicas.min(left);
                    left -= keep;
                    plan.push(ClusterReplicas {
                        cluster: c.cluster.clone(),
                        replicas: keep,
                    });
                }
            }
            plan.push(ClusterReplicas {
                cluster: last.clone(),
                replicas: left,
            });
            Ok(DistributeResponse {
                plan,
                overflow: Vec::new(),
            })
        }

        /// `0.3.0`: the same, with `current` aligned with the candidates and the
        /// plan aligned too, and the last one capped by its preference.
        #[cfg(feature = "v0_3")]
        fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
            let last = (0..request.clusters.len()).max_by_key(|&i| &request.clusters[i]);
            let mut left = request.total_replicas;
            let mut plan = vec![0; request.clusters.len()];
            for (i, &running) in request.current.iter().enumerate() {
                if Some(i) != last {
                    let keep = running.min(left);
                    left -= keep;
                    plan[i] = keep;
                }
            }
            // Capped by the last one's own `maxReplicas`, else by `*`'s: the
            // test tells from this that both crossed the translation.
            if let Some(last) = last {
                let max = request.preferences.as_ref().and_then(|p| {
                    p.clusters
                        .get(last)
                        .and_then(Option::as_ref)
                        .or(p.wildcard.as_ref())
                        .and_then(|c| c.max_replicas)
                });
                plan[last] = max.map_or(left, |max| left.min(max));
            }
            Ok(DistributeResponse {
                plan,
                overflow: Vec::new(),
            })
        }

        fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
            Ok((0..request.backends.len() as u32).rev().collect())
        }

        #[cfg(any(feature = "v0_2", feature = "v0_3"))]
        fn customize(request: CustomizeRequest) -> Result<String, String> {
            Ok(format!(
                r#"[{{"op": "add", "path": "/metadata/annotations", "value": {{"legacy.example/cluster": "{}"}}}}]"#,
                request.cluster.name
            ))
        }
    }

    export!(Legacy);
}
