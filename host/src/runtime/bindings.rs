//! Host bindings generated from the WIT contract, the single source of truth shared
//! with the SDK.
//!
//! Borrowing: a request is lowered straight from the host's own strings and maps
//! (through slices of references) instead of from a deep copy made for each call.
//! `cluster-replicas` is both an argument and a result, so it comes in two
//! flavours: `ClusterReplicasParam<'a>` (borrowed) and `ClusterReplicasResult`.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "plugin",
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});

pub use exports::fedwasm::placement::hooks::Guest;
pub use fedwasm::placement::types as wit;
