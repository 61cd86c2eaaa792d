//! The set of loaded plugins, swapped as a whole: readers take a snapshot without
//! locking, writers build a new map and store it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use fedwasm_sdk::Hook;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::error::{LoadError, LoadStage, PluginError};
use super::plugin::{digest, Plugin, PluginSource};
use super::Runtime;

mod built_in {
    include!(concat!(env!("OUT_DIR"), "/built_ins.rs"));
}

/// The component bytes of the built-in plugin `name`.
pub fn built_in_bytes(name: &str) -> Option<&'static [u8]> {
    built_in::BUILT_INS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// The built-in plugin used for `hook` when no name is given. The customize hook
/// has none (a copy is changed only where a policy names a plugin): for it this is
/// the empty name, which no plugin has; [`Registry::for_hook`] says so.
pub fn default_plugin(hook: Hook) -> &'static str {
    match hook {
        Hook::Select => "label-selector",
        Hook::Distribute => "weighted-spread",
        Hook::Rank => "nearest-healthy",
        Hook::Customize => "",
    }
}

/// What `GET /plugins` shows for one name.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PluginListing {
    pub name: String,
    pub hooks: Vec<Hook>,
    /// sha256 of the serving generation (or of the rejected file if none serves).
    pub sha256: String,
    /// The serving generation; `None` when the name only has a rejected file.
    pub generation: Option<u64>,
    pub built_in: bool,
    /// Why the latest file of this name was rejected, if it was.
    pub last_error: Option<String>,
}

/// Something that happened to the registry, for events and re-placement.
#[derive(Clone, Debug)]
pub enum RegistryEvent {
    /// A new generation serves under `name`.
    Loaded { name: String, generation: u64 },
    /// A file was rejected; the previous generation (if any) keeps serving.
    Rejected(LoadError),
    /// The file was removed; `fallback` is the built-in generation now serving.
    Unloaded { name: String, fallback: Option<u64> },
}

/// The latest file seen for a name in the plugin directory.
struct FileState {
    sha256: String,
    last_error: Option<String>,
}

/// Loaded plugins by name.
pub struct Registry {
    runtime: Arc<Runtime>,
    plugins: ArcSwap<BTreeMap<String, Arc<Plugin>>>,
    built_ins: BTreeMap<String, Arc<Plugin>>,
    files: Mutex<BTreeMap<String, FileState>>,
    next_generation: AtomicU64,
    /// Serialises writers; readers never take it.
    write: Mutex<()>,
    version: watch::Sender<u64>,
    events: broadcast::Sender<RegistryEvent>,
}

impl Registry {
    /// Loads the built-in plugins. Failing here means the binary itself is broken.
    pub fn new(runtime: Arc<Runtime>) -> Result<Arc<Self>, LoadError> {
        let next_generation = AtomicU64::new(1);
        let mut built_ins = BTreeMap::new();
        for (name, bytes) in built_in::BUILT_INS {
            let generation = next_generation.fetch_add(1, Ordering::SeqCst);
            let plugin = Plugin::load(&runtime, name, bytes, PluginSource::BuiltIn, generation)?;
            built_ins.insert(name.to_string(), Arc::new(plugin));
        }
        Ok(Arc::new(Self {
            runtime,
            plugins: ArcSwap::from_pointee(built_ins.clone()),
            built_ins,
            files: Mutex::new(BTreeMap::new()),
            next_generation,
            write: Mutex::new(()),
            version: watch::channel(0).0,
            events: broadcast::channel(256).0,
        }))
    }

    /// The runtime plugins run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The serving generation of `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Plugin>, PluginError> {
        self.plugins
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(name.to_string()))
    }

    /// Every serving generation by name, as one consistent snapshot.
    pub fn serving(&self) -> Arc<BTreeMap<String, Arc<Plugin>>> {
        self.plugins.load_full()
    }

    /// The plugin named `name`, or the default for `hook`.
    pub fn for_hook(&self, hook: Hook, name: Option<&str>) -> Result<Arc<Plugin>, PluginError> {
        let name = name.unwrap_or(default_plugin(hook));
        if name.is_empty() {
            return Err(PluginError::BadRequest(format!(
                "the {hook} hook has no default plugin: name one"
            )));
        }
        let plugin = self.get(name)?;
        if plugin.implements(hook) {
            Ok(plugin)
        } else {
            Err(PluginError::Unsupported {
                plugin: plugin.name().to_string(),
                hook,
            })
        }
    }

    /// Changes whenever the set of serving generations changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every load, rejection and unload, for events.
    pub fn events(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    /// Compiles, checks and swaps in `bytes` as `name`. Blocking: call it off the
    /// async runtime. On failure the serving generation (if any) is untouched.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        source: PluginSource,
    ) -> Result<Arc<Plugin>, LoadError> {
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let loaded = Plugin::load(&self.runtime, name, bytes, source, generation);
        let metrics = self.runtime.metrics();
        let plugin = match loaded {
            Ok(p) => Arc::new(p),
            Err(e) => {
                metrics.observe_reload(name, Err(e.stage.as_str()));
                tracing::warn!(plugin = name, stage = e.stage.as_str(), error = %e.message, "plugin rejected; the previous generation keeps serving");
                let _ = self.events.send(RegistryEvent::Rejected(e.clone()));
                return Err(e);
            }
        };
        metrics.observe_reload(name, Ok(()));
        {
            let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = BTreeMap::clone(&self.plugins.load());
            next.insert(name.to_string(), plugin.clone());
            self.plugins.store(Arc::new(next));
        }
        tracing::info!(plugin = name, generation, hooks = ?plugin.hooks(), sha256 = plugin.sha256(), took_ms = started.elapsed().as_millis() as u64, "plugin loaded");
        self.version.send_modify(|v| *v += 1);
        let _ = self.events.send(RegistryEvent::Loaded {
            name: name.to_string(),
            generation,
        });
        Ok(plugin)
    }

    /// Stops serving the file plugin `name`; its built-in, if any, serves again.
    pub fn unload(&self, name: &str) {
        let fallback = self.built_ins.get(name).cloned();
        {
            let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = BTreeMap::clone(&self.plugins.load());
            match &fallback {
                Some(b) => next.insert(name.to_string(), b.clone()),
                None => next.remove(name),
            };
            self.plugins.store(Arc::new(next));
        }
        tracing::info!(
            plugin = name,
            fallback = fallback.as_ref().map(|b| b.generation()),
            "plugin unloaded"
        );
        self.version.send_modify(|v| *v += 1);
        let _ = self.events.send(RegistryEvent::Unloaded {
            name: name.to_string(),
            fallback: fallback.map(|b| b.generation()),
        });
    }

    /// Brings the registry in line with `dir`: loads new or changed `NAME.wasm`
    /// files, unloads removed ones. A file whose bytes were already seen (loaded or
    /// rejected) is not tried again. Returns the rejections.
    pub fn sync_dir(&self, dir: &Path) -> Vec<LoadError> {
        let mut present = BTreeMap::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().and_then(|e| e.to_str()) != Some("wasm") || !path.is_file()
                    {
                        continue;
                    }
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        present.insert(stem.to_string(), path);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the plugin directory");
                return Vec::new();
            }
        }
        let mut rejected = Vec::new();
        for (name, path) in &present {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                // Removed between listing and reading: the next event handles it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let err = LoadError {
                        plugin: name.clone(),
                        stage: LoadStage::Read,
                        message: format!("reading {}: {e}", path.display()),
                    };
                    self.remember(name, String::new(), Some(err.to_string()));
                    rejected.push(err);
                    continue;
                }
            };
            let sha256 = digest(&bytes);
            let seen = self
                .files
                .lock()
                .map(|f| f.get(name).map(|s| s.sha256 == sha256).unwrap_or(false))
                .unwrap_or(false);
            if seen {
                continue;
            }
            match self.load(name, &bytes, PluginSource::File(path.clone())) {
                Ok(_) => self.remember(name, sha256, None),
                Err(e) => {
                    self.remember(name, sha256, Some(e.to_string()));
                    rejected.push(e);
                }
            }
        }
        let gone: Vec<String> = self
            .files
            .lock()
            .map(|f| {
                f.keys()
                    .filter(|n| !present.contains_key(*n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for name in gone {
            if let Ok(mut f) = self.files.lock() {
                f.remove(&name);
            }
            let serving_file = self
                .get(&name)
                .map(|p| p.source() != &PluginSource::BuiltIn)
                .unwrap_or(false);
            if serving_file {
                self.unload(&name);
            }
        }
        rejected
    }

    fn remember(&self, name: &str, sha256: String, last_error: Option<String>) {
        if let Ok(mut f) = self.files.lock() {
            f.insert(name.to_string(), FileState { sha256, last_error });
        }
    }

    /// Every name with its serving generation and latest error.
    pub fn list(&self) -> Vec<PluginListing> {
        let plugins = self.plugins.load();
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, PluginListing> = plugins
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    PluginListing {
                        name: name.clone(),
                        hooks: p.hooks().to_vec(),
                        sha256: p.sha256().to_string(),
                        generation: Some(p.generation()),
                        built_in: p.source() == &PluginSource::BuiltIn,
                        last_error: None,
                    },
                )
            })
            .collect();
        for (name, state) in files.iter() {
            let Some(error) = &state.last_error else {
                continue;
            };
            out.entry(name.clone())
                .or_insert_with(|| PluginListing {
                    name: name.clone(),
                    hooks: Vec::new(),
                    sha256: state.sha256.clone(),
                    generation: None,
                    built_in: false,
                    last_error: None,
                })
                .last_error = Some(error.clone());
        }
        out.into_values().collect()
    }
}
