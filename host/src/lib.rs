//! fedwasm: a Kubernetes federation engine whose placement policies are WebAssembly
//! plugins.
//!
//! Data flows one way: watch → place (plugins) → apply → aggregate. This crate holds
//! the parts; `main.rs` wires them behind the `fedwasm` command.

pub mod admin;
pub mod app;
pub mod bench;
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
pub mod text;
