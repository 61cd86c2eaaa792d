//! A plugin that passes its smoke test and serves ordinary requests well, but
//! breaks on edge cases, as hand-written plugins do; `fedwasm plugin check` must
//! find exactly these:
//!
//! - distribute: with a total of 0 it plans one replica anyway (an invalid answer);
//!   with 100 or more candidates it panics (a trap);
//! - rank: when no backend is healthy it never returns (a deadline overrun);
//! - select: correct on every input.

use fedwasm_sdk::{
    export_plugin, DistributeRequest, DistributeResponse, Hook, Plugin, RankRequest, SelectRequest,
    Selection,
};

pub struct Fragile;

impl Plugin for Fragile {
    const HOOKS: &'static [Hook] = &[Hook::Select, Hook::Distribute, Hook::Rank];

    fn select(request: SelectRequest) -> Result<Vec<Selection>, String> {
        Ok(request
            .clusters
            .into_iter()
            .map(|c| Selection {
                cluster: c.name,
                score: 100,
            })
            .collect())
    }

    fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
        let n = request.clusters.len() as u32;
        assert!(n < 100, "fragile: too many clusters");
        let mut out = DistributeResponse::default();
        let Some(first) = request.clusters.first() else {
            return Ok(out);
        };
        if request.total_replicas == 0 {
            out.plan.insert(first.clone(), 1);
            return Ok(out);
        }
        for (i, cluster) in request.clusters.iter().enumerate() {
            let extra = u32::from((i as u32) < request.total_replicas % n);
            let max = request
                .preferences
                .as_ref()
                .and_then(|p| p.for_cluster(cluster))
                .and_then(|p| p.max_replicas)
                .unwrap_or(u32::MAX);
            out.plan.insert(
                cluster.clone(),
                (request.total_replicas / n + extra).min(max),
            );
        }
        Ok(out)
    }

    fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
        // Looks for a healthy backend to put first, and never gives up.
        let mut i = 0;
        while !request.backends.is_empty() && !request.backends[i].healthy {
            i = (i + 1) % request.backends.len();
            std::hint::black_box(i);
        }
        let mut order: Vec<u32> = (0..request.backends.len() as u32).collect();
        order.sort_by_key(|&b| !request.backends[b as usize].healthy);
        Ok(order)
    }
}

export_plugin!(Fragile);
