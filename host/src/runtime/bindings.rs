//! Host bindings generated from the WIT contract, one module per supported version.
//!
//! `v0_4` is generated from the SDK's `wit/` (the single source of truth shared with
//! plugin authors); `v0_3`, `v0_2` and `v0_1` from the frozen copies in
//! `host/wit/`, so plugins built for earlier contracts keep loading. The host
//! speaks `v0_4` everywhere; [`super::v0_3`], [`super::v0_2`] and [`super::v0_1`]
//! translate for older plugins.
//!
//! Borrowing: a request is lowered straight from the host's own strings and maps
//! (through slices of references) instead of from a deep copy made for each call.
//! In the older contracts `cluster-replicas` is both an argument and a result, so it
//! comes in two flavours: `ClusterReplicasParam<'a>` (borrowed) and
//! `ClusterReplicasResult`.

/// A module of bindings for the contract in `$path`.
macro_rules! contract {
    ($(#[$doc:meta])* $module:ident, $path:literal) => {
        $(#[$doc])*
        pub mod $module {
            wasmtime::component::bindgen!({
                path: $path,
                world: "plugin",
                ownership: Borrowing {
                    duplicate_if_necessary: true
                },
            });

            pub use fedwasm::placement::types as wit;
        }
    };
}

contract!(
    /// `fedwasm:placement@0.4.0`, the version the SDK builds.
    v0_4,
    "../sdk/wit"
);
contract!(
    /// `fedwasm:placement@0.3.0`, frozen.
    v0_3,
    "wit/0.3.0"
);
contract!(
    /// `fedwasm:placement@0.2.0`, frozen.
    v0_2,
    "wit/0.2.0"
);
contract!(
    /// `fedwasm:placement@0.1.0`, frozen.
    v0_1,
    "wit/0.1.0"
);

pub use v0_4::wit;

/// The contract versions the host loads, newest first.
pub const VERSIONS: [&str; 4] = ["0.4.0", "0.3.0", "0.2.0", "0.1.0"];
