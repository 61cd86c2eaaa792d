//! Plugins built for `fedwasm:placement@0.3.0`: a distribute request carries the
//! candidates as a list of strings and each value as an optional per candidate
//! (`0.4.0` sends one string and lists of numbers); the answer is as today. The
//! other hooks are as today.

use super::parts::DistributeParts;
use super::validate::Distribution;

super::older::translate!(v0_3, settings; hooks: Select, Distribute, Rank, Customize);
super::older::customize!();
super::older::rank!(settings; position);

fn preference(c: &fedwasm_sdk::ClusterPreference) -> old::ClusterPreference {
    old::ClusterPreference {
        min_replicas: c.min_replicas,
        max_replicas: c.max_replicas,
        weight: c.weight,
    }
}

pub(super) fn distribute<T: 'static>(
    plugin: &Plugin,
    store: &mut Store<T>,
    parts: &DistributeParts<'_>,
) -> Answer<Distribution> {
    let r = parts.request;
    let own: Option<Vec<_>> = parts
        .preferences
        .as_ref()
        .map(|p| p.own.iter().map(|c| c.map(preference)).collect());
    let request = old::DistributeRequest {
        object: &r.object,
        total_replicas: r.total_replicas,
        clusters: &parts.clusters,
        preferences: parts
            .preferences
            .as_ref()
            .zip(own.as_deref())
            .map(|(p, clusters)| old::Preferences {
                rebalance: p.rebalance,
                wildcard: p.wildcard.map(preference),
                clusters,
            }),
        current: &parts.current,
        capacity: &parts.capacity,
        settings: &r.settings,
    };
    let answer = plugin
        .fedwasm_placement_hooks()
        .call_distribute(store, request)?;
    Ok(answer.map(|out| Distribution::Aligned {
        plan: out.plan,
        overflow: out.overflow,
    }))
}

fn coordinates(p: wit::Coordinates) -> old::Coordinates {
    old::Coordinates {
        latitude: p.latitude,
        longitude: p.longitude,
    }
}
