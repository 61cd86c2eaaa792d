//! A plugin as it was built for an older contract, straight on wit-bindgen (the SDK
//! builds the current one): `fedwasm:placement@0.1.0` by default, `0.2.0` with the
//! `v0_2` feature. It selects the clusters whose name does not end in `-b`, keeps
//! the replicas each cluster runs now (as named in `current`) and puts the rest in
//! the last candidate by name, and ranks backends in reverse: answers no built-in
//! gives, so a test can tell it answered and what reached it. The `0.2.0` build
//! also scores selections by the length of its settings and answers customize with
//! a patch naming the member.

#[cfg(target_arch = "wasm32")]
mod bindings {
    #[cfg(not(feature = "v0_2"))]
    wit_bindgen::generate!({
        path: "../../../host/wit/0.1.0",
        world: "plugin",
    });
    #[cfg(feature = "v0_2")]
    wit_bindgen::generate!({
        path: "../../../host/wit/0.2.0",
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
                    #[cfg(feature = "v0_2")]
                    Hook::Customize,
                ],
            }
        }

        fn select(request: SelectRequest) -> Result<Vec<Selection>, String> {
            #[cfg(feature = "v0_2")]
            let score = request.settings.len() as u32;
            #[cfg(not(feature = "v0_2"))]
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

        fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
            Ok((0..request.backends.len() as u32).rev().collect())
        }

        #[cfg(feature = "v0_2")]
        fn customize(request: CustomizeRequest) -> Result<String, String> {
            Ok(format!(
                r#"[{{"op": "add", "path": "/metadata/annotations", "value": {{"legacy.example/cluster": "{}"}}}}]"#,
                request.cluster.name
            ))
        }
    }

    export!(Legacy);
}
