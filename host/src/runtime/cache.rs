//! Precompiled artifacts on disk, keyed by the component's sha256 and the engine's
//! compatibility hash: a restart or a reload of known bytes deserializes in ~0.25 ms
//! instead of compiling for 10–16 ms.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

fn artifact_path(engine: &Engine, dir: &Path, sha256: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
}

/// Deserializes a cached artifact, or compiles and stores one. A cache that cannot
/// be read or written only costs time: compilation still happens.
pub fn load_or_compile(
    engine: &Engine,
    dir: &Path,
    bytes: &[u8],
    sha256: &str,
) -> wasmtime::Result<Component> {
    let path = artifact_path(engine, dir, sha256);
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of this engine
        // configuration (the compatibility hash is in its name) into a directory
        // only fedwasm writes; wasmtime also checks the header before use.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a bad cached artifact")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot cache a compiled plugin");
    }
    Ok(component)
}

fn store(component: &Component, dir: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Write then rename: a reader never sees half an artifact.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
