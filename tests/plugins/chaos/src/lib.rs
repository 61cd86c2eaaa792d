//! A distribute, rank and customize plugin that misbehaves when asked to, to test the host's
//! sandbox.
//!
//! Without features it misbehaves only for objects named `*/loop`, `*/hog`,
//! `*/trap`, `*/invalid` or `*/refuse`; for `*/nothing` it plans nothing (the
//! cheapest valid answer: the sandbox's floor in `benches/distribute_floor.rs`);
//! otherwise it puts every replica in the first candidate, an answer no built-in
//! gives, so tests can tell which generation answered; it ranks backends in the reverse of their order, for the same reason.
//! With an `always-*` feature it misbehaves on every request.

use fedwasm_sdk::{
    export_plugin, CustomizeRequest, DistributeRequest, DistributeResponse, Hook, Plugin,
    RankRequest,
};

pub struct Chaos;

fn behaviour(object: &str) -> &str {
    if cfg!(feature = "always-loop") {
        return "loop";
    }
    if cfg!(feature = "always-hog") {
        return "hog";
    }
    if cfg!(feature = "always-trap") {
        return "trap";
    }
    if cfg!(feature = "always-invalid") {
        return "invalid";
    }
    object.rsplit('/').next().unwrap_or_default()
}

impl Plugin for Chaos {
    const HOOKS: &'static [Hook] = &[Hook::Distribute, Hook::Rank, Hook::Customize];

    /// Labels each copy with its member's name (fedwasm labels every copy, so
    /// `/metadata/labels` exists): an answer no other plugin gives.
    fn customize(request: CustomizeRequest) -> Result<String, String> {
        match behaviour("") {
            "" => Ok(format!(
                r#"[{{"op": "add", "path": "/metadata/labels/chaos.example~1cluster", "value": "{}"}}]"#,
                request.cluster.name.escape_default()
            )),
            _ => Self::distribute(DistributeRequest::new("ns/x", 1, ["a"])).map(|_| "[]".into()),
        }
    }

    fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
        let n = request.backends.len() as u32;
        let reversed = (0..n).rev().collect();
        match behaviour("") {
            "" => Ok(reversed),
            // The same misbehaviour as distribute's, through one code path.
            _ => Self::distribute(DistributeRequest::new("ns/x", 1, ["a"])).map(|_| reversed),
        }
    }

    fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
        let mut out = DistributeResponse::default();
        let first = request.clusters.first().cloned().unwrap_or_default();
        match behaviour(&request.object) {
            "loop" => loop {
                std::hint::black_box(&out);
            },
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Reserve without touching: memory grows at once, so the cap,
                    // not the deadline, is what stops this.
                    hoard.push(Vec::<u8>::with_capacity(1 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("chaos: asked to trap"),
            "invalid" => {
                out.plan
                    .insert(first, request.total_replicas.saturating_add(1));
            }
            "refuse" => return Err("chaos: asked to refuse".into()),
            "nothing" => {}
            _ => {
                out.plan.insert(first, request.total_replicas);
            }
        }
        Ok(out)
    }
}

export_plugin!(Chaos);
