//! Precompiled artifacts on disk, keyed by the component's sha256 and the engine's
//! compatibility hash: a restart or a reload of known bytes deserializes in ~0.25 ms
//! instead of compiling for 10–16 ms.
//!
//! Loading an artifact runs native code that wasmtime does not check, so whoever can
//! write into the cache directory can run code as the host. The directory is
//! therefore private: created `0700`, and used only while it belongs to the current
//! user and nobody else can write to it (nor to the artifact); otherwise the cache
//! is ignored with a warning and plugins are compiled afresh.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// Why a cache directory or artifact is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} belongs to uid {owner}, not to this user (uid {me})")]
    NotOurs { path: String, owner: u32, me: u32 },
    #[error("{path} can be written by others (mode {mode:o})")]
    Writable { path: String, mode: u32 },
    #[error("{path} is not a directory")]
    NotADirectory { path: String },
}

fn artifact_path(engine: &Engine, dir: &Path, sha256: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
}

fn current_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `meta` (of `path`) belongs to this user and only this user can write it.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), CacheError> {
    let me = current_uid();
    if meta.uid() != me {
        return Err(CacheError::NotOurs {
            path: path.display().to_string(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(CacheError::Writable {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// Creates `dir` (and missing parents) `0700` if missing, then checks it is a
/// directory of this user that nobody else can write.
pub fn private_dir(dir: &Path) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(CacheError::NotADirectory {
            path: dir.display().to_string(),
        });
    }
    check_private(dir, &meta)
}

/// Deserializes a cached artifact, or compiles and stores one. A cache that cannot
/// be read or written, or that is not private, only costs time: compilation still
/// happens.
pub fn load_or_compile(
    engine: &Engine,
    dir: &Path,
    bytes: &[u8],
    sha256: &str,
) -> wasmtime::Result<Component> {
    if let Err(e) = private_dir(dir) {
        tracing::warn!(error = %e, "the plugin cache is not private; compiling without it");
        return Component::new(engine, bytes);
    }
    let path = artifact_path(engine, dir, sha256);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => match check_private(&path, &meta) {
            Ok(()) if meta.is_file() => {
                // SAFETY: the file is this user's, in a directory only this user can
                // write, written by `Component::serialize` of this engine
                // configuration (the compatibility hash is in its name); wasmtime
                // also checks the header before use.
                match unsafe { Component::deserialize_file(engine, &path) } {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring a bad cached artifact")
                    }
                }
            }
            Ok(()) => {
                tracing::warn!(path = %path.display(), "ignoring a cached artifact that is not a file")
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a cached artifact"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring a cached artifact"),
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(&component, &path) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot cache a compiled plugin");
    }
    Ok(component)
}

fn store(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Write then rename: a reader never sees half an artifact.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    /// A tiny component to compile.
    fn component_bytes() -> Vec<u8> {
        wat::parse_str("(component)").unwrap()
    }

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b/artifacts");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.path().join("a")), 0o700);
    }

    #[test]
    fn a_directory_others_can_write_is_refused_and_not_used() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("artifacts");
        private_dir(&dir).unwrap();
        for shared in [0o777, 0o770, 0o1777, 0o722] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(shared)).unwrap();
            let e = private_dir(&dir).unwrap_err();
            assert!(matches!(e, CacheError::Writable { .. }), "{shared:o}: {e}");
        }
        // Nothing is read from it nor written to it.
        let engine = engine();
        let bytes = component_bytes();
        load_or_compile(&engine, &dir, &bytes, "abc").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_of_someone_else_is_refused() {
        // Only root can make a directory someone else's; skip the chown otherwise,
        // but check the comparison on a directory that is surely not ours: `/`.
        if current_uid() != 0 {
            let e = check_private(Path::new("/"), &std::fs::metadata("/").unwrap());
            assert!(matches!(e, Err(CacheError::NotOurs { .. })), "{e:?}");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("artifacts");
        private_dir(&dir).unwrap();
        let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: chown(2) on a directory this test created.
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
        let e = private_dir(&dir).unwrap_err();
        assert!(matches!(e, CacheError::NotOurs { owner: 65534, .. }), "{e}");
    }

    #[test]
    fn artifacts_are_private_and_reused_and_a_writable_one_is_not_loaded() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("artifacts");
        let engine = engine();
        let bytes = component_bytes();
        load_or_compile(&engine, &dir, &bytes, "abc").unwrap();
        let artifact = artifact_path(&engine, &dir, "abc");
        assert_eq!(mode(&artifact), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let written = std::fs::metadata(&artifact).unwrap().modified().unwrap();
        load_or_compile(&engine, &dir, &bytes, "abc").unwrap();
        assert_eq!(
            std::fs::metadata(&artifact).unwrap().modified().unwrap(),
            written,
            "the artifact was reused, not rewritten"
        );
        // An artifact others could have written is compiled afresh (and replaced).
        std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
        load_or_compile(&engine, &dir, &bytes, "abc").unwrap();
        assert_eq!(mode(&artifact), 0o600, "replaced by a private one");
    }
}
