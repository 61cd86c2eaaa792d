//! fedwasm: a Kubernetes federation engine whose placement policies are WebAssembly
//! plugins.
//!
//! Data flows one way: watch → place (plugins) → apply → aggregate. This crate holds
//! the parts; `main.rs` wires them behind the `fedwasm` command.

pub mod admin;
pub mod app;
pub mod bench;
pub mod check;
pub mod dns;
pub mod federation;
pub mod fleet;
pub mod http;
pub mod ingress;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod overrides;
pub mod placer;
pub mod plan;
pub mod policy;
pub mod preview;
pub mod recorder;
pub mod routing;
pub mod runtime;
pub mod scaffold;
pub mod shadow;
pub mod text;

/// Where fedwasm caches what it can make again (compiled plugins, the SDK it
/// embeds): `$XDG_CACHE_HOME/fedwasm`, else `~/.cache/fedwasm`. Never a shared
/// directory such as `/tmp` (a cached artifact is native code, a cached SDK is
/// built): `None` when neither variable holds an absolute path.
pub fn cache_home() -> Option<std::path::PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".cache")))
        .map(|base| base.join("fedwasm"))
}
