//! Write fedwasm placement plugins in plain Rust.
//!
//! A plugin is a type implementing [`Plugin`], registered with [`export_plugin!`].
//! It implements only the hooks it lists in [`Plugin::HOOKS`]; the others keep their
//! default, which answers "unsupported". The logic works on the plain types of this
//! crate, so the same crate unit-tests natively with `cargo test` and builds for
//! `wasm32-unknown-unknown` as a component that imports nothing.
//!
//! ```ignore
//! use fedwasm_sdk::{export_plugin, DistributeRequest, DistributeResponse, Hook, Plugin};
//!
//! struct Everything;
//! impl Plugin for Everything {
//!     const HOOKS: &'static [Hook] = &[Hook::Distribute];
//!     fn distribute(req: DistributeRequest) -> Result<DistributeResponse, String> {
//!         let mut out = DistributeResponse::default();
//!         if let Some(first) = req.clusters.first() {
//!             out.plan.insert(first.clone(), req.total_replicas);
//!         }
//!         Ok(out)
//!     }
//! }
//! export_plugin!(Everything);
//! ```

mod convert;
#[cfg(any(target_arch = "wasm32", test))]
mod mem;
#[cfg(any(target_arch = "wasm32", test))]
mod pool;
pub mod regions;
mod types;

pub use types::*;

/// The version of the WIT package this SDK implements.
pub const WIT_VERSION: &str = "0.4.0";

/// Numbers with a meaning of their own in the contract's flat distribute request,
/// one definition for the SDK that reads them and the host that writes them.
/// Plugin code never sees them: the SDK gives it `Option`s and `*`.
pub mod flat {
    /// A candidate's capacity, or a preference's `maxReplicas`, of "unbounded".
    pub const UNBOUNDED: u32 = u32::MAX;
    /// Whom the `*` preference is for (in place of a candidate's position).
    pub const WILDCARD: u32 = u32::MAX;
}

/// The nine clusters of the original Kubernetes Federation walk-through, as
/// `(name, region, zone)`: `fedwasm dev up --layout seed` starts them, and plugin
/// tests place against them.
pub const WALKTHROUGH_CLUSTERS: [(&str, &str, &str); 9] = [
    ("gce-asia-east1-a", "asia-east1", "asia-east1-a"),
    ("gce-asia-east1-b", "asia-east1", "asia-east1-b"),
    ("gce-asia-east1-c", "asia-east1", "asia-east1-c"),
    ("gce-europe-west1-b", "europe-west1", "europe-west1-b"),
    ("gce-europe-west1-c", "europe-west1", "europe-west1-c"),
    ("gce-europe-west1-d", "europe-west1", "europe-west1-d"),
    ("gce-us-central1-a", "us-central1", "us-central1-a"),
    ("gce-us-central1-b", "us-central1", "us-central1-b"),
    ("gce-us-central1-c", "us-central1", "us-central1-c"),
];

/// A placement plugin. Implement the hooks named in [`Plugin::HOOKS`].
pub trait Plugin {
    /// The hooks this plugin implements. The host never calls the others.
    const HOOKS: &'static [Hook];

    /// Choose the clusters that get an object, with a score each.
    fn select(request: SelectRequest) -> Result<Vec<Selection>, String> {
        let _ = request;
        Err(unsupported(Hook::Select))
    }

    /// Split an object's replicas over the selected clusters.
    fn distribute(request: DistributeRequest) -> Result<DistributeResponse, String> {
        let _ = request;
        Err(unsupported(Hook::Distribute))
    }

    /// Order ingress backends for a client, best first, as indices into
    /// `request.backends` (a permutation).
    fn rank(request: RankRequest) -> Result<Vec<u32>, String> {
        let _ = request;
        Err(unsupported(Hook::Rank))
    }

    /// Changes to one member's copy, as the JSON text of an RFC 6902 patch (an
    /// array of operations; `[]` changes nothing).
    fn customize(request: CustomizeRequest) -> Result<String, String> {
        let _ = request;
        Err(unsupported(Hook::Customize))
    }
}

fn unsupported(hook: Hook) -> String {
    format!("this plugin does not implement the {} hook", hook.as_str())
}

/// Registers a [`Plugin`] as the component's exports.
///
/// Expands to nothing on native targets, so the plugin crate's unit tests run with a
/// plain `cargo test`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct FedwasmGuest;
            impl $crate::__private::Guest for FedwasmGuest {
                fn info() -> $crate::__private::wit::PluginInfo {
                    $crate::__private::info::<$plugin>()
                }
                fn select(
                    request: $crate::__private::wit::SelectRequest,
                ) -> ::core::result::Result<
                    $crate::__private::Vec<$crate::__private::wit::Selection>,
                    $crate::__private::String,
                > {
                    $crate::__private::select::<$plugin>(request)
                }
                fn distribute(
                    request: $crate::__private::wit::DistributeRequest,
                ) -> ::core::result::Result<
                    $crate::__private::wit::DistributeResponse,
                    $crate::__private::String,
                > {
                    $crate::__private::distribute::<$plugin>(request)
                }
                fn rank(
                    request: $crate::__private::wit::RankRequest,
                ) -> ::core::result::Result<$crate::__private::Vec<u32>, $crate::__private::String>
                {
                    $crate::__private::rank::<$plugin>(request)
                }
                fn customize(
                    request: $crate::__private::wit::CustomizeRequest,
                ) -> ::core::result::Result<$crate::__private::String, $crate::__private::String>
                {
                    $crate::__private::customize::<$plugin>(request)
                }
            }
    $crate::__private::export!(FedwasmGuest with_types_in $crate::__private::bindings);
        };
    };
}

/// Glue used by [`export_plugin!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::convert::{customize, distribute, info, rank, select};
    pub use std::string::String;
    pub use std::vec::Vec;

    pub mod bindings {
        wit_bindgen::generate!({
            path: "wit",
            world: "plugin",
            pub_export_macro: true,
            default_bindings_module: "fedwasm_sdk::__private::bindings",
        });
    }
    pub use bindings::export;
    pub use bindings::exports::fedwasm::placement::hooks::Guest;
    pub mod wit {
        pub use super::bindings::fedwasm::placement::types::*;
    }
}
