//! The Wasm plugin runtime: one engine, compiled plugins, bounded calls, validated
//! outputs, and a registry that hot-swaps plugins from a directory.
//!
//! Entry point: [`Registry`]. It owns the [`Runtime`] (engine, limits, artifact
//! cache, metrics) and an immutable map of loaded plugins swapped atomically.

mod bindings;
mod cache;
mod error;
mod plugin;
mod registry;
mod older;
mod v0_1;
mod v0_2;
mod validate;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use error::{LoadError, LoadStage, PluginError};
pub use plugin::{Plugin, PluginSource};
pub use registry::{built_in_bytes, default_plugin, PluginListing, Registry, RegistryEvent};
pub use validate::preference_warnings;
pub use watch::{DirWatcher, DEFAULT_DEBOUNCE};

use crate::metrics::Metrics;

/// Limits every plugin call runs under.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall-clock budget of one call, enforced with epoch interruption.
    pub deadline: Duration,
    /// Largest linear memory an instance may grow to.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(10),
            memory_bytes: 16 << 20,
        }
    }
}

/// How the runtime is set up.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    /// Per-call limits.
    pub limits: Limits,
    /// Where precompiled artifacts are kept; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

/// How often the engine's epoch advances. The deadline is counted in these ticks,
/// so it is also the deadline's granularity.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Instances kept warm per plugin generation. A warm instance saves the ~3.5 µs of a
/// fresh instantiation per call; more than a few per core buys nothing.
const WARM_INSTANCES: usize = 8;

/// The engine and everything shared by all plugins.
pub struct Runtime {
    engine: wasmtime::Engine,
    config: RuntimeConfig,
    metrics: Arc<Metrics>,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// Builds the engine: pooling allocator, epoch interruption, no component-model
    /// concurrency (it costs 50–100× on synchronous calls).
    pub fn new(config: RuntimeConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, LoadError> {
        let mut pooling = wasmtime::PoolingAllocationConfig::default();
        pooling
            .total_component_instances(512)
            .total_core_instances(512)
            .total_memories(512)
            .total_tables(512)
            .max_memory_size(config.limits.memory_bytes.max(1 << 16));
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        let engine = wasmtime::Engine::new(&wasm).map_err(|e| LoadError {
            plugin: "<engine>".into(),
            stage: LoadStage::Compile,
            message: format!("{e:#}"),
        })?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone());
        Ok(Arc::new(Self {
            engine,
            config,
            metrics,
            ticker_stop,
        }))
    }

    /// The metrics every call and reload reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The limits calls run under.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    fn deadline_ticks(&self) -> u64 {
        let ticks = self.config.limits.deadline.as_micros() / EPOCH_TICK.as_micros().max(1);
        // +1: the current tick is already partly over when the call starts.
        (ticks as u64).max(1) + 1
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so a call past its deadline traps.
/// A plain thread, not a tokio task: it must keep ticking when the async runtime is
/// busy or absent (the CLI has none).
fn spawn_epoch_ticker(engine: wasmtime::Engine, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("fedwasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the epoch thread: plugin deadlines will not fire");
    }
}
