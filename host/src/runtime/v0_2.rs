//! Plugins built for `fedwasm:placement@0.2.0`: distribute requests name every
//! cluster in every list and answers come back by name; rank requests lose the
//! positions `0.3.0` added. Settings and `customize` are as today.

super::older::translate!(v0_2, settings; hooks: Select, Distribute, Rank, Customize);

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
