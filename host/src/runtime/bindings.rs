//! Host bindings generated from the WIT contract, the single source of truth shared
//! with the SDK.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "plugin",
});

pub use exports::fedwasm::placement::hooks::Guest;
pub use fedwasm::placement::types as wit;
