//! Builds a plugin crate for `wasm32-unknown-unknown` and encodes the core module as
//! a component.
//!
//! One piece of code serves the host's build script (the built-in plugins), the test
//! suite's build script (the misbehaving test plugins) and `fedwasm plugin build`, so
//! a plugin is built the same way everywhere.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every plugin is built for: it has no WASI, so a plugin imports nothing.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Why a plugin could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`rustup target add {WASM_TARGET}` failed; install the target by hand")]
    Target,
    #[error("cargo build of {crate_dir} failed (exit status {status})")]
    Cargo { crate_dir: String, status: String },
    #[error("no {artifact} after building {crate_dir}: is the crate's lib crate-type cdylib?")]
    MissingArtifact { crate_dir: String, artifact: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("encoding {path} as a component: {message}")]
    Encode { path: String, message: String },
}

/// One plugin crate to build.
#[derive(Clone, Debug)]
pub struct PluginCrate {
    /// Directory holding the crate's `Cargo.toml`.
    pub dir: PathBuf,
    /// The package name (its library file is `<name with _>.wasm`).
    pub package: String,
    /// Cargo features to enable.
    pub features: Vec<String>,
}

/// Makes sure rustup has the wasm target; a no-op when it is there already.
pub fn ensure_wasm_target() -> Result<(), BuildError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = &installed {
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == WASM_TARGET)
        {
            return Ok(());
        }
    }
    // No rustup at all: let cargo report a missing target itself.
    if installed.is_err() {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|source| BuildError::Spawn {
            program: "rustup".into(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Target)
    }
}

/// Builds `krate` in release mode for the wasm target into `target_dir`, encodes it
/// as a component and returns the component's bytes.
///
/// `cargo` is the cargo binary to run. Variables a parent cargo sets for build
/// scripts (flags, wrappers, jobserver, target) are removed, because they describe
/// the parent's build, not this one.
pub fn build_component(
    cargo: &Path,
    krate: &PluginCrate,
    target_dir: &Path,
) -> Result<Vec<u8>, BuildError> {
    ensure_wasm_target()?;
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&krate.dir)
        .args(["build", "--release", "--target", WASM_TARGET, "-p"])
        .arg(&krate.package)
        .arg("--target-dir")
        .arg(target_dir);
    if !krate.features.is_empty() {
        cmd.arg("--features").arg(krate.features.join(","));
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|source| BuildError::Spawn {
        program: cargo.display().to_string(),
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Cargo {
            crate_dir: krate.dir.display().to_string(),
            status: status.to_string(),
        });
    }
    let artifact = target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{}.wasm", krate.package.replace('-', "_")));
    if !artifact.exists() {
        return Err(BuildError::MissingArtifact {
            crate_dir: krate.dir.display().to_string(),
            artifact: artifact.display().to_string(),
        });
    }
    let core = std::fs::read(&artifact).map_err(|source| BuildError::Io {
        path: artifact.display().to_string(),
        source,
    })?;
    encode_component(&core).map_err(|message| BuildError::Encode {
        path: artifact.display().to_string(),
        message,
    })
}

/// Encodes a core module built with the SDK (it carries its WIT in a custom section)
/// as a component.
pub fn encode_component(core: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("{e:#}"))
}
