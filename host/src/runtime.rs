//! The Wasm plugin runtime: one engine, compiled plugins, bounded calls, validated
//! outputs, and a registry that hot-swaps plugins from a directory.
//!
//! Entry point: [`Registry`]. It owns the [`Runtime`] (engine, limits, artifact
//! cache, metrics) and an immutable map of loaded plugins swapped atomically.

mod bindings;
mod cache;
mod error;
mod older;
mod parts;
mod plugin;
mod registry;
mod v0_1;
mod v0_2;
mod v0_3;
mod validate;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    ticker: Arc<Ticker>,
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
        let ticker = Ticker::spawn(engine.clone());
        Ok(Arc::new(Self {
            engine,
            config,
            metrics,
            ticker,
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
        self.ticker.stop.store(true, Ordering::Relaxed);
        self.ticker.wake();
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while a plugin call runs, so a
/// call past its deadline traps. A plain thread, not a tokio task: it must keep
/// ticking when the async runtime is busy or absent (the CLI has none). With no
/// call in flight it sleeps: an idle host does not wake a thousand times a second.
struct Ticker {
    /// Calls in flight.
    active: AtomicUsize,
    stop: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

/// Keeps the ticker ticking while it lives: one per call in flight.
pub(crate) struct Ticking<'a>(&'a Ticker);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticker {
    fn spawn(engine: wasmtime::Engine) -> Arc<Self> {
        let ticker = Arc::new(Self {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let own = ticker.clone();
        let spawned = std::thread::Builder::new()
            .name("fedwasm-epoch".into())
            .spawn(move || {
                while !own.stop.load(Ordering::Relaxed) {
                    if own.active.load(Ordering::Acquire) == 0 {
                        // Woken by the next call; the timeout only bounds a missed
                        // wake-up.
                        std::thread::park_timeout(Duration::from_secs(1));
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = ticker.thread.set(handle.thread().clone());
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the epoch thread: plugin deadlines will not fire")
            }
        }
        ticker
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Marks a call in flight; the first one wakes the thread.
    fn ticking(&self) -> Ticking<'_> {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.wake();
        }
        Ticking(self)
    }
}

impl Runtime {
    /// Keeps the epoch advancing (and so deadlines firing) until dropped.
    pub(crate) fn ticking(&self) -> Ticking<'_> {
        self.ticker.ticking()
    }
}
