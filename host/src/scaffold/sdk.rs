//! The SDK crate embedded in the binary, so `fedwasm plugin new` needs no checkout
//! of the repository: its files are written once per version and content to a cache
//! directory, and new plugin crates depend on it by path.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ScaffoldError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));
}

pub use embedded::{SDK_FILES, SDK_VERSION};

/// `<version>-<hash>`: the hash covers every path and byte of the embedded SDK, so
/// two binaries with different SDK sources never share a directory, and one binary
/// always finds the directory it wrote before.
pub fn key() -> String {
    let mut hash = Sha256::new();
    for (path, bytes) in SDK_FILES {
        // Lengths first, so no two file lists hash the same by shifting bytes
        // between a path and a content.
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    let digest = hex::encode(hash.finalize());
    format!("{SDK_VERSION}-{}", &digest[..16])
}

/// `$XDG_CACHE_HOME/fedwasm/sdk`, else `~/.cache/fedwasm/sdk`; `None` with neither
/// set (never a shared `/tmp` path: what is cached there gets built).
pub fn default_cache_dir() -> Option<PathBuf> {
    crate::cache_home().map(|c| c.join("sdk"))
}

/// Writes the embedded SDK to `cache/<key>` unless it is there already, and returns
/// that directory.
///
/// Written atomically: the files go to a private temporary directory next to it,
/// which is then renamed into place, so a concurrent `plugin new` (or one killed
/// half-way) never leaves or sees a partial SDK. The directories are created 0700.
pub fn install(cache: &Path) -> Result<PathBuf, ScaffoldError> {
    let target = cache.join(key());
    if target.join("Cargo.toml").is_file() {
        tracing::debug!(sdk = %target.display(), "the embedded SDK is already written");
        return Ok(target);
    }
    create_private_dir_all(cache)?;
    let staging = tempdir_in(cache)?;
    let written = write_files(&staging).and_then(|()| {
        std::fs::rename(&staging, &target).map_err(|error| ScaffoldError::Io {
            path: target.clone(),
            error,
        })
    });
    match written {
        Ok(()) => {
            tracing::info!(sdk = %target.display(), "wrote the embedded SDK");
            Ok(target)
        }
        // Another `plugin new` renamed its own copy into place first: the same bytes.
        Err(_) if target.join("Cargo.toml").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(target)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn write_files(dir: &Path) -> Result<(), ScaffoldError> {
    for (relative, bytes) in SDK_FILES {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            create_private_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).map_err(|error| ScaffoldError::Io { path, error })?;
    }
    Ok(())
}

fn create_private_dir_all(dir: &Path) -> Result<(), ScaffoldError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| ScaffoldError::Io {
            path: dir.to_path_buf(),
            error,
        })
}

/// A new, empty, 0700 directory in `parent` whose name no other process uses.
fn tempdir_in(parent: &Path) -> Result<PathBuf, ScaffoldError> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut attempt = 0u32;
    loop {
        let dir = parent.join(format!(".partial-{}-{nanos}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(error) => return Err(ScaffoldError::Io { path: dir, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_embedded_sdk_is_a_standalone_crate() {
        let paths: Vec<&str> = SDK_FILES.iter().map(|(p, _)| *p).collect();
        for needed in ["Cargo.toml", "src/lib.rs", "wit/placement.wit"] {
            assert!(paths.contains(&needed), "{needed} missing from {paths:?}");
        }
        let manifest = std::str::from_utf8(SDK_FILES[0].1).unwrap();
        assert_eq!(SDK_FILES[0].0, "Cargo.toml");
        assert!(
            !manifest
                .lines()
                .any(|l| !l.starts_with('#') && l.contains("workspace")),
            "nothing inherited: {manifest}"
        );
        assert!(manifest.contains("name = \"fedwasm-sdk\""), "{manifest}");
        assert!(manifest.contains("wit-bindgen"), "{manifest}");
        assert!(manifest.contains("version = \"=0."), "pinned: {manifest}");
    }

    #[test]
    fn install_writes_once_atomically_and_privately() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache/fedwasm/sdk");
        let dir = install(&cache).unwrap();
        assert_eq!(dir, cache.join(key()));
        assert!(key().starts_with(&format!("{SDK_VERSION}-")));
        for (relative, bytes) in SDK_FILES {
            assert_eq!(&std::fs::read(dir.join(relative)).unwrap(), bytes);
        }
        for d in [&cache, &dir] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // Installed again: the same directory, no staging directory left behind.
        assert_eq!(install(&cache).unwrap(), dir);
        let entries: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, [std::ffi::OsString::from(key())]);
    }

    #[test]
    fn concurrent_installs_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().to_path_buf();
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| install(&cache))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        assert!(dirs.iter().all(|d| *d == cache.join(key())));
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
        assert!(cache.join(key()).join("src/lib.rs").is_file());
    }
}
