//! Plugins built for `fedwasm:placement@0.2.0`: distribute requests name every
//! cluster in every list and answers come back by name; rank requests lose the
//! positions `0.3.0` added. Settings and `customize` are as today.

use fedwasm_sdk::Hook;

super::older::translate!(v0_2, settings);

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
            old::Hook::Customize => Hook::Customize,
        })
        .collect())
}

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
