//! Shared helpers of fedwasm's end-to-end tests.

/// Test plugins built from `tests/plugins/` by the build script.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/test_plugins.rs"));
}
