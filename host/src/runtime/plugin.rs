//! One loaded plugin generation: its compiled component, a few warm instances, and
//! the bounded, validated calls.

use crate::metrics::CallHandles;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fedwasm_sdk::flat::{UNBOUNDED, WILDCARD};
use fedwasm_sdk::{
    CustomizeRequest, DistributeRequest, DistributeResponse, Hook, RankRequest, SelectRequest,
    Selection,
};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{ResourceLimiter, Store};

use super::bindings::{v0_1, v0_2, v0_3, v0_4, wit, VERSIONS};
use super::error::{LoadError, LoadStage, PluginError};
use super::parts::DistributeParts;
use super::validate::Distribution;
use super::{cache, validate, Runtime, WARM_INSTANCES};
use crate::text::{bounded, MAX_MESSAGE};

/// Where a plugin generation came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginSource {
    /// Compiled into the `fedwasm` binary.
    BuiltIn,
    /// A file in the plugin directory (or given on the command line).
    File(std::path::PathBuf),
}

/// Per-store state: only the memory cap. Plugins import nothing, so there is no
/// host API state to keep.
struct HostState {
    limiter: MemoryCap,
}

/// Caps linear memory and remembers that it did, so a failed call can be reported
/// as a memory limit rather than as an anonymous trap.
struct MemoryCap {
    limit: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            // Trap rather than return -1 from memory.grow: a Rust guest would abort
            // anyway, and a trap ends the call at once.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A live instance with its store. Thrown away after any trap: its state may be
/// corrupt.
struct Warm {
    store: Store<HostState>,
    bindings: Bindings,
}

/// A component's exports, by the contract version it was built for.
enum Pre {
    V0_4(v0_4::PluginPre<HostState>),
    V0_3(v0_3::PluginPre<HostState>),
    V0_2(v0_2::PluginPre<HostState>),
    V0_1(v0_1::PluginPre<HostState>),
}

/// An instance's exports, by contract version. Calls take the current contract's
/// types; an older plugin's are translated in [`super::v0_3`], [`super::v0_2`] and
/// [`super::v0_1`].
enum Bindings {
    V0_4(v0_4::Plugin),
    V0_3(v0_3::Plugin),
    V0_2(v0_2::Plugin),
    V0_1(v0_1::Plugin),
}

type Answer<T> = wasmtime::Result<Result<T, String>>;

impl Bindings {
    fn info(&self, store: &mut Store<HostState>) -> wasmtime::Result<Vec<Hook>> {
        let current = match self {
            Bindings::V0_4(p) => p.fedwasm_placement_hooks().call_info(store)?,
            Bindings::V0_3(p) => return super::v0_3::info(p, store),
            Bindings::V0_2(p) => return super::v0_2::info(p, store),
            Bindings::V0_1(p) => return super::v0_1::info(p, store),
        };
        Ok(current
            .hooks
            .into_iter()
            .map(|h| match h {
                wit::Hook::Select => Hook::Select,
                wit::Hook::Distribute => Hook::Distribute,
                wit::Hook::Rank => Hook::Rank,
                wit::Hook::Customize => Hook::Customize,
            })
            .collect())
    }

    fn select(
        &self,
        store: &mut Store<HostState>,
        r: wit::SelectRequest<'_>,
    ) -> Answer<Vec<wit::Selection>> {
        match self {
            Bindings::V0_4(p) => p.fedwasm_placement_hooks().call_select(store, r),
            Bindings::V0_3(p) => super::v0_3::select(p, store, r),
            Bindings::V0_2(p) => super::v0_2::select(p, store, r),
            Bindings::V0_1(p) => super::v0_1::select(p, store, r),
        }
    }

    fn distribute(
        &self,
        store: &mut Store<HostState>,
        parts: &DistributeParts<'_>,
    ) -> Answer<Distribution> {
        match self {
            Bindings::V0_4(p) => flat_distribute(p, store, parts),
            Bindings::V0_3(p) => super::v0_3::distribute(p, store, parts),
            Bindings::V0_2(p) => super::v0_2::distribute(p, store, parts),
            Bindings::V0_1(p) => super::v0_1::distribute(p, store, parts),
        }
    }

    fn rank(&self, store: &mut Store<HostState>, r: wit::RankRequest<'_>) -> Answer<Vec<u32>> {
        match self {
            Bindings::V0_4(p) => p.fedwasm_placement_hooks().call_rank(store, r),
            Bindings::V0_3(p) => super::v0_3::rank(p, store, r),
            Bindings::V0_2(p) => super::v0_2::rank(p, store, r),
            Bindings::V0_1(p) => super::v0_1::rank(p, store, r),
        }
    }

    fn customize(
        &self,
        store: &mut Store<HostState>,
        r: wit::CustomizeRequest<'_>,
    ) -> Answer<String> {
        match self {
            Bindings::V0_4(p) => p.fedwasm_placement_hooks().call_customize(store, r),
            Bindings::V0_3(p) => super::v0_3::customize(p, store, r),
            Bindings::V0_2(p) => super::v0_2::customize(p, store, r),
            // Never declared by a 0.1.0 plugin, so `require` stops the call first.
            Bindings::V0_1(_) => Ok(Err("fedwasm:placement@0.1.0 has no customize hook".into())),
        }
    }
}

/// Smoke tests a plugin gets when it runs past its deadline: one stalled call on a
/// loaded machine is not a plugin that loops.
const SMOKE_TRIES: usize = 3;

/// One generation of a plugin: immutable once loaded, shared by `Arc`, so a call in
/// flight keeps its generation alive across a hot swap.
pub struct Plugin {
    name: String,
    sha256: String,
    generation: u64,
    source: PluginSource,
    hooks: Vec<Hook>,
    runtime: Arc<Runtime>,
    /// The contract version it was built for, such as `0.2.0`.
    version: &'static str,
    pre: Pre,
    warm: Mutex<Vec<Warm>>,
    metrics: CallHandles,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("sha256", &self.sha256)
            .field("hooks", &self.hooks)
            .finish()
    }
}

/// The sha256 of a plugin's bytes, hex encoded.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Plugin {
    /// Compiles, type-checks and smoke-tests `bytes`. Blocking and CPU-heavy
    /// (milliseconds): call it off the async runtime.
    pub fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        bytes: &[u8],
        source: PluginSource,
        generation: u64,
    ) -> Result<Self, LoadError> {
        let fail = |stage: LoadStage, message: String| LoadError {
            plugin: name.to_string(),
            stage,
            message,
        };
        if bytes.is_empty() {
            return Err(fail(LoadStage::Read, "the file is empty".into()));
        }
        let sha256 = digest(bytes);
        let component = compile(runtime, bytes, &sha256)
            .map_err(|e| fail(LoadStage::Compile, format!("not a valid component: {e:#}")))?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&runtime.engine)
            .map(|(name, _)| name.to_string())
            // The contract's type-only interface is "imported" by every guest; it
            // carries no functions, so it gives the plugin no capability.
            .filter(|name| {
                !VERSIONS
                    .iter()
                    .any(|v| *name == format!("fedwasm:placement/types@{v}"))
            })
            .collect();
        if !imports.is_empty() {
            return Err(fail(
                LoadStage::TypeCheck,
                format!(
                    "plugins may import nothing, this one imports {}",
                    imports.join(", ")
                ),
            ));
        }
        let version = contract_version(runtime, &component).ok_or_else(|| {
            fail(
                LoadStage::TypeCheck,
                format!(
                    "exports do not match fedwasm:placement: no hooks interface of a supported version ({})",
                    VERSIONS.join(", ")
                ),
            )
        })?;
        let linker = Linker::<HostState>::new(&runtime.engine);
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            fail(
                LoadStage::TypeCheck,
                format!("plugins may import nothing: {e:#}"),
            )
        })?;
        let mismatch = |e: wasmtime::Error| {
            fail(
                LoadStage::TypeCheck,
                format!("exports do not match fedwasm:placement@{version}: {e:#}"),
            )
        };
        let pre = match version {
            "0.1.0" => Pre::V0_1(v0_1::PluginPre::new(instance_pre).map_err(mismatch)?),
            "0.2.0" => Pre::V0_2(v0_2::PluginPre::new(instance_pre).map_err(mismatch)?),
            "0.3.0" => Pre::V0_3(v0_3::PluginPre::new(instance_pre).map_err(mismatch)?),
            _ => Pre::V0_4(v0_4::PluginPre::new(instance_pre).map_err(mismatch)?),
        };
        let mut plugin = Plugin {
            name: name.to_string(),
            sha256,
            generation,
            source,
            hooks: Vec::new(),
            runtime: runtime.clone(),
            version,
            pre,
            warm: Mutex::new(Vec::new()),
            metrics: runtime.metrics().call_handles(name),
        };
        plugin.hooks = plugin
            .info()
            .map_err(|e| fail(LoadStage::SmokeTest, e.to_string()))?;
        if plugin.hooks.is_empty() {
            return Err(fail(
                LoadStage::SmokeTest,
                "its info() declares no hooks".into(),
            ));
        }
        // A machine under load may stall one call past a deadline of a few
        // milliseconds; a plugin that loops runs past it every time.
        let mut tried = plugin.smoke_test();
        for _ in 1..SMOKE_TRIES {
            if !matches!(tried, Err(PluginError::Timeout { .. })) {
                break;
            }
            tried = plugin.smoke_test();
        }
        tried.map_err(|e| fail(LoadStage::SmokeTest, e.to_string()))?;
        Ok(plugin)
    }

    /// The plugin's name (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Hex sha256 of the component bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Increases with every successful load in this process.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The contract version the plugin was built for, such as `0.2.0`.
    pub fn contract_version(&self) -> &'static str {
        self.version
    }
    /// Built in or from a file.
    pub fn source(&self) -> &PluginSource {
        &self.source
    }
    /// The hooks the plugin declared.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }
    /// Whether it implements `hook`.
    pub fn implements(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// Trial calls with small, valid requests: a plugin that traps, loops, hogs
    /// memory or answers nonsense on ordinary input never gets to serve.
    fn smoke_test(&self) -> Result<(), PluginError> {
        let clusters = ["smoke-a", "smoke-b", "smoke-c"];
        for hook in self.hooks.clone() {
            match hook {
                Hook::Select => {
                    self.select(&SelectRequest {
                        object: fedwasm_sdk::ObjectRef {
                            kind: "ReplicaSet".into(),
                            namespace: "fedwasm-smoke".into(),
                            name: "test".into(),
                            ..Default::default()
                        },
                        clusters: clusters
                            .iter()
                            .map(|c| fedwasm_sdk::ClusterInfo {
                                name: c.to_string(),
                                region: "smoke".into(),
                                zone: format!("{c}-z"),
                                ready: true,
                                ..Default::default()
                            })
                            .collect(),
                        settings: String::new(),
                    })?;
                }
                Hook::Distribute => {
                    self.distribute(&DistributeRequest {
                        object: "fedwasm-smoke/test".into(),
                        total_replicas: 10,
                        clusters: clusters.iter().map(|c| c.to_string()).collect(),
                        ..Default::default()
                    })?;
                }
                Hook::Rank => {
                    self.rank(&RankRequest {
                        client: fedwasm_sdk::Location {
                            region: "smoke".into(),
                            zone: "smoke-a-z".into(),
                            position: Some(fedwasm_sdk::Coordinates {
                                latitude: 0.0,
                                longitude: 0.0,
                            }),
                        },
                        backends: clusters
                            .iter()
                            .map(|c| fedwasm_sdk::Backend {
                                cluster: c.to_string(),
                                region: "smoke".into(),
                                zone: format!("{c}-z"),
                                position: None,
                                healthy: true,
                                available: Some(10),
                            })
                            .collect(),
                        settings: String::new(),
                    })?;
                }
                Hook::Customize => {
                    // A customize plugin may need settings the smoke test cannot
                    // know: declining is an answer; trapping, looping or a malformed
                    // patch is not.
                    let answer = self.customize(&CustomizeRequest {
                        object: serde_json::json!({
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": "test", "namespace": "fedwasm-smoke"},
                            "data": {"key": "value"},
                        })
                        .to_string(),
                        cluster: fedwasm_sdk::ClusterInfo {
                            name: clusters[0].to_string(),
                            region: "smoke".into(),
                            zone: format!("{}-z", clusters[0]),
                            ready: true,
                            ..Default::default()
                        },
                        settings: String::new(),
                    });
                    match answer {
                        Ok(_) | Err(PluginError::Refused { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    fn info(&self) -> Result<Vec<Hook>, PluginError> {
        // Not a hook; reported under `select` only if it fails, which is rare.
        let mut hooks = self.call(Hook::Select, |b, s| b.info(s).map(Ok))?;
        hooks.sort();
        hooks.dedup();
        Ok(hooks)
    }

    /// Calls the select hook and validates its answer.
    pub fn select(&self, request: &SelectRequest) -> Result<Vec<Selection>, PluginError> {
        self.require(Hook::Select)?;
        let parts = SelectParts::new(request);
        let clusters = parts.clusters(request);
        let input = wit::SelectRequest {
            object: parts.object(request),
            clusters: &clusters,
            settings: &request.settings,
        };
        let started = Instant::now();
        let result = self
            .call(Hook::Select, move |b, s| b.select(s, input))
            .and_then(|out| {
                let out: Vec<Selection> = out
                    .into_iter()
                    .map(|s| Selection {
                        cluster: s.cluster,
                        score: s.score,
                    })
                    .collect();
                validate::selection(request, &out).map_err(|r| self.invalid(Hook::Select, r))?;
                Ok(out)
            });
        self.observe(Hook::Select, started, &result);
        result
    }

    /// Calls the distribute hook and validates its answer; every candidate appears
    /// in the returned plan.
    pub fn distribute(
        &self,
        request: &DistributeRequest,
    ) -> Result<DistributeResponse, PluginError> {
        self.require(Hook::Distribute)?;
        let parts = DistributeParts::new(request);
        let started = Instant::now();
        let result = self
            .call(Hook::Distribute, |b, s| b.distribute(s, &parts))
            .and_then(|out| {
                validate::distribution(&parts, out).map_err(|r| self.invalid(Hook::Distribute, r))
            });
        self.observe(Hook::Distribute, started, &result);
        result
    }

    /// Calls the rank hook and validates that the answer is a permutation.
    pub fn rank(&self, request: &RankRequest) -> Result<Vec<u32>, PluginError> {
        self.require(Hook::Rank)?;
        let backends = to_wit_backends(request);
        let input = wit::RankRequest {
            client: wit::Location {
                region: &request.client.region,
                zone: &request.client.zone,
                position: request.client.position.map(coordinates),
            },
            backends: &backends,
            settings: &request.settings,
        };
        let started = Instant::now();
        let result = self
            .call(Hook::Rank, move |b, s| b.rank(s, input))
            .and_then(|order| {
                validate::ranking(request.backends.len(), &order)
                    .map_err(|r| self.invalid(Hook::Rank, r))?;
                Ok(order)
            });
        self.observe(Hook::Rank, started, &result);
        result
    }

    /// Calls the customize hook and checks that the answer is a JSON patch (an
    /// array of well-formed operations, bounded in size); whether it applies, and
    /// what it may change, is checked where it is applied
    /// ([`crate::overrides::apply_overrides`]).
    pub fn customize(
        &self,
        request: &CustomizeRequest,
    ) -> Result<Vec<serde_json::Value>, PluginError> {
        self.require(Hook::Customize)?;
        let labels = kv(&request.cluster.labels);
        let input = wit::CustomizeRequest {
            object: &request.object,
            cluster: wit::ClusterInfo {
                name: &request.cluster.name,
                region: &request.cluster.region,
                zone: &request.cluster.zone,
                labels: &labels,
                ready: request.cluster.ready,
            },
            settings: &request.settings,
        };
        let started = Instant::now();
        let result = self
            .call(Hook::Customize, move |b, s| b.customize(s, input))
            .and_then(|patch| {
                crate::overrides::parse_patch(&patch, &format!("plugin {}", self.name))
                    .map_err(|e| self.invalid(Hook::Customize, e.to_string()))
            });
        self.observe(Hook::Customize, started, &result);
        result
    }

    /// Time to make a fresh store and instance, as a hot swap or a trap costs.
    pub fn measure_instantiate(&self) -> Result<std::time::Duration, PluginError> {
        let started = Instant::now();
        let warm = self.instantiate()?;
        let took = started.elapsed();
        drop(warm);
        Ok(took)
    }

    fn require(&self, hook: Hook) -> Result<(), PluginError> {
        if self.implements(hook) {
            Ok(())
        } else {
            Err(PluginError::Unsupported {
                plugin: self.name.clone(),
                hook,
            })
        }
    }

    fn invalid(&self, hook: Hook, reason: String) -> PluginError {
        PluginError::InvalidOutput {
            plugin: self.name.clone(),
            hook,
            reason: bounded(reason, MAX_MESSAGE),
        }
    }

    fn observe<T>(&self, hook: Hook, started: Instant, result: &Result<T, PluginError>) {
        self.metrics.observe(hook, started.elapsed());
        if let Err(e) = result {
            self.runtime
                .metrics()
                .observe_error(&self.name, hook, e.kind());
        }
    }

    fn instantiate(&self) -> Result<Warm, PluginError> {
        // A start function runs under the deadline too.
        let _ticking = self.runtime.ticking();
        let mut store = Store::new(
            &self.runtime.engine,
            HostState {
                limiter: MemoryCap {
                    limit: self.runtime.limits().memory_bytes,
                    hit: false,
                },
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(self.runtime.deadline_ticks());
        let bindings = match &self.pre {
            Pre::V0_4(pre) => pre.instantiate(&mut store).map(Bindings::V0_4),
            Pre::V0_3(pre) => pre.instantiate(&mut store).map(Bindings::V0_3),
            Pre::V0_2(pre) => pre.instantiate(&mut store).map(Bindings::V0_2),
            Pre::V0_1(pre) => pre.instantiate(&mut store).map(Bindings::V0_1),
        }
        .map_err(|e| PluginError::Instantiate {
            plugin: self.name.clone(),
            message: format!("{e:#}"),
        })?;
        Ok(Warm { store, bindings })
    }

    /// Runs one export on a warm instance under the deadline. An instance that
    /// trapped is dropped; one that answered (even with an error) is kept.
    fn call<T>(
        &self,
        hook: Hook,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> Answer<T>,
    ) -> Result<T, PluginError> {
        let _ticking = self.runtime.ticking();
        let popped = self.warm.lock().map(|mut w| w.pop()).unwrap_or(None);
        let mut warm = match popped {
            Some(w) => w,
            None => self.instantiate()?,
        };
        warm.store.set_epoch_deadline(self.runtime.deadline_ticks());
        let outcome = f(&warm.bindings, &mut warm.store);
        match outcome {
            Ok(answer) => {
                if let Ok(mut pool) = self.warm.lock() {
                    if pool.len() < WARM_INSTANCES {
                        pool.push(warm);
                    }
                }
                // The plugin chose the message: bound it before it reaches an
                // event, a log line or an admin answer.
                answer.map_err(|message| PluginError::Refused {
                    plugin: self.name.clone(),
                    hook,
                    message: bounded(message, MAX_MESSAGE),
                })
            }
            Err(e) => Err(self.classify(hook, e, warm.store.data().limiter.hit)),
        }
    }

    fn classify(&self, hook: Hook, error: wasmtime::Error, memory_hit: bool) -> PluginError {
        let plugin = self.name.clone();
        if memory_hit {
            return PluginError::MemoryLimit {
                plugin,
                hook,
                limit: self.runtime.limits().memory_bytes,
            };
        }
        if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
            return PluginError::Timeout {
                plugin,
                hook,
                deadline: self.runtime.limits().deadline,
            };
        }
        PluginError::Trap {
            plugin,
            hook,
            // The first line: wasm backtraces are long and belong in debug logs.
            message: bounded(format!("{error}"), MAX_MESSAGE),
        }
    }
}

/// The newest supported contract version whose `hooks` interface the component
/// exports.
fn contract_version(runtime: &Runtime, component: &Component) -> Option<&'static str> {
    let exports: Vec<String> = component
        .component_type()
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    VERSIONS
        .into_iter()
        .find(|v| exports.contains(&format!("fedwasm:placement/hooks@{v}")))
}

/// Compiles through the artifact cache when there is one.
fn compile(runtime: &Runtime, bytes: &[u8], sha256: &str) -> wasmtime::Result<Component> {
    match &runtime.config.cache_dir {
        Some(dir) => cache::load_or_compile(&runtime.engine, dir, bytes, sha256),
        None => Component::new(&runtime.engine, bytes),
    }
}

fn kv(map: &std::collections::BTreeMap<String, String>) -> Vec<wit::KeyValue<'_>> {
    map.iter()
        .map(|(k, v)| wit::KeyValue { key: k, value: v })
        .collect()
}

/// The parts of a select request the WIT record borrows: label lists must live
/// somewhere while the request that points at them is lowered.
struct SelectParts<'a> {
    labels: Vec<wit::KeyValue<'a>>,
    annotations: Vec<wit::KeyValue<'a>>,
    cluster_labels: Vec<Vec<wit::KeyValue<'a>>>,
}

impl<'a> SelectParts<'a> {
    fn new(r: &'a SelectRequest) -> Self {
        Self {
            labels: kv(&r.object.labels),
            annotations: kv(&r.object.annotations),
            cluster_labels: r.clusters.iter().map(|c| kv(&c.labels)).collect(),
        }
    }

    fn clusters(&'a self, r: &'a SelectRequest) -> Vec<wit::ClusterInfo<'a>> {
        r.clusters
            .iter()
            .zip(&self.cluster_labels)
            .map(|(c, labels)| wit::ClusterInfo {
                name: &c.name,
                region: &c.region,
                zone: &c.zone,
                labels,
                ready: c.ready,
            })
            .collect()
    }

    fn object(&'a self, r: &'a SelectRequest) -> wit::ObjectRef<'a> {
        wit::ObjectRef {
            kind: &r.object.kind,
            namespace: &r.object.namespace,
            name: &r.object.name,
            labels: &self.labels,
            annotations: &self.annotations,
        }
    }
}

/// Calls a `0.4.0` plugin's distribute: the names in one string, the numbers in
/// one list, the preferences in another, so the request is a few copies whatever
/// the candidates and its arguments are passed in registers.
fn flat_distribute(
    plugin: &v0_4::Plugin,
    store: &mut Store<HostState>,
    parts: &DistributeParts<'_>,
) -> Answer<Distribution> {
    let r = parts.request;
    let mut names = String::with_capacity(parts.clusters.iter().map(|c| c.len()).sum());
    let mut numbers = Vec::with_capacity(3 * parts.clusters.len());
    let candidates = parts
        .clusters
        .iter()
        .zip(&parts.current)
        .zip(&parts.capacity);
    for ((cluster, &current), capacity) in candidates {
        names.push_str(cluster);
        let Ok(end) = u32::try_from(names.len()) else {
            wasmtime::bail!("the candidates' names exceed 4 GiB");
        };
        numbers.extend([end, current, capacity.unwrap_or(UNBOUNDED)]);
    }
    // Four numbers per entry: whom it is for (`*` first), min, max, weight.
    let mut preferences = None;
    if let Some(p) = &parts.preferences {
        let mut entries = Vec::with_capacity(4 * (p.own.iter().flatten().count() + 1));
        let mut push = |whom: u32, c: &fedwasm_sdk::ClusterPreference| {
            let max = c.max_replicas.unwrap_or(UNBOUNDED);
            entries.extend([whom, c.min_replicas, max, c.weight]);
        };
        if let Some(c) = p.wildcard {
            push(WILDCARD, c);
        }
        for (i, c) in p.own.iter().enumerate() {
            let Some(c) = c else { continue };
            // Below `WILDCARD`, which means `*`.
            let Some(i) = u32::try_from(i).ok().filter(|&i| i < WILDCARD) else {
                wasmtime::bail!("more than 4 billion candidates");
            };
            push(i, c);
        }
        preferences = Some((p.rebalance, entries));
    }
    let request = wit::DistributeRequest {
        object: &r.object,
        total_replicas: r.total_replicas,
        names: &names,
        candidates: &numbers,
        preferences: preferences
            .as_ref()
            .map(|(rebalance, entries)| wit::Preferences {
                rebalance: *rebalance,
                entries,
            }),
        settings: &r.settings,
    };
    Ok(plugin
        .fedwasm_placement_hooks()
        .call_distribute(store, request)?
        .map(|out| Distribution::Aligned {
            plan: out.plan,
            overflow: out.overflow,
        }))
}

fn to_wit_backends(r: &RankRequest) -> Vec<wit::Backend<'_>> {
    r.backends
        .iter()
        .map(|b| wit::Backend {
            cluster: &b.cluster,
            region: &b.region,
            zone: &b.zone,
            position: b.position.map(coordinates),
            healthy: b.healthy,
            available: b.available,
        })
        .collect()
}

fn coordinates(p: fedwasm_sdk::Coordinates) -> wit::Coordinates {
    wit::Coordinates {
        latitude: p.latitude,
        longitude: p.longitude,
    }
}
