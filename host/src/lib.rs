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
pub mod metrics;
pub mod placer;
pub mod plan;
pub mod preview;
pub mod routing;
pub mod runtime;
pub mod scaffold;
pub mod shadow;

/// Where fedwasm caches what it can make again (compiled plugins, the SDK it
/// embeds): `$XDG_CACHE_HOME/fedwasm`, else `~/.cache/fedwasm`.
pub fn cache_home() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("fedwasm")
}
