//! Plugins built for `fedwasm:placement@0.1.0`: requests are translated from the
//! current contract (their settings dropped: `0.1.0` has none) and answers back.
//! `0.1.0` has no `customize` hook, so such a plugin never declares it.

use fedwasm_sdk::Hook;

super::older::translate!(v0_1);

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
        })
        .collect())
}
