//! Hot reload: watch the plugin directory and sync the registry after each quiet
//! period.
//!
//! The directory is watched, not the files: editors and `cp` replace files by
//! rename, which ends a watch on the file itself. A ConfigMap volume needs nothing
//! more: the kubelet never writes `NAME.wasm` in place but renames the `..data`
//! symlink over a new timestamped directory, an event in this directory, and each
//! `NAME.wasm` is a symlink through `..data` that the sync reads through.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use super::Registry;

/// Quiet time after the last file event before the directory is synced.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// Keeps the watch alive; dropping it stops hot reload.
pub struct DirWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    dir: PathBuf,
}

impl DirWatcher {
    /// Syncs `dir` once, then on every debounced change. Loading runs on the
    /// watcher's own thread, never on the async runtime.
    pub fn start(
        registry: Arc<Registry>,
        dir: &Path,
        debounce: Duration,
    ) -> Result<Self, notify::Error> {
        std::fs::create_dir_all(dir).map_err(notify::Error::io)?;
        registry.sync_dir(dir);
        let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
        let mut debouncer = new_debouncer(debounce, None, tx)?;
        debouncer.watch(dir, RecursiveMode::NonRecursive)?;
        let sync_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("fedwasm-reload".into())
            .spawn(move || {
                // Ends when the debouncer (the sender) is dropped.
                while let Ok(result) = rx.recv() {
                    match result {
                        Ok(events) if events.is_empty() => {}
                        Ok(_) => {
                            registry.sync_dir(&sync_dir);
                        }
                        Err(errors) => {
                            for e in errors {
                                tracing::warn!(error = %e, "plugin directory watch error");
                            }
                            registry.sync_dir(&sync_dir);
                        }
                    }
                }
            })
            .map_err(notify::Error::io)?;
        Ok(Self {
            _debouncer: debouncer,
            dir: dir.to_path_buf(),
        })
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
