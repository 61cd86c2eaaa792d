//! A plugin as it was built for `fedwasm:placement@0.1.0`, straight on wit-bindgen
//! (the SDK now builds `0.2.0`). It selects the clusters whose name does not end in
//! `-b`, puts every replica in the last candidate by name and ranks backends in
//! reverse: answers no built-in gives, so a test can tell it answered.

#[cfg(target_arch = "wasm32")]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../host/wit/0.1.0",
        world: "plugin",
    });

    use exports::fedwasm::placement::hooks::Guest;
    use fedwasm::placement::types::*;

    struct Legacy;

    impl Guest for Legacy {
        fn info() -> PluginInfo {
            PluginInfo {
                hooks: vec![Hook::Select, Hook::Distribute, Hook::Rank],
            }
        }

        fn select(request: SelectRequest) -> Result<Vec<Selection>, String> {
            Ok(request
                .clusters
                .into_iter()
                .filter(|c| !c.name.ends_with("-b"))
                .map(|c| Selection {
                    cluster: c.name,
                    score: 1,
                })
                .collect())
        }

        fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
            let plan = request
                .clusters
                .iter()
                .max()
                .map(|last| ClusterReplicas {
                    cluster: last.clone(),
                    replicas: request.total_replicas,
                })
                .into_iter()
                .collect();
            Ok(DistributeResponse {
                plan,
                overflow: Vec::new(),
            })
        }

        fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
            Ok((0..request.backends.len() as u32).rev().collect())
        }
    }

    export!(Legacy);
}
