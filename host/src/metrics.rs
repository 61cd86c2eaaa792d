//! Prometheus metrics of the plugin runtime and the federation controller.

use std::time::Duration;

use fedwasm_sdk::Hook;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// One plugin's per-hook call counters and latency histograms, in `Hook::ALL` order.
pub(crate) struct CallHandles([(IntCounter, Histogram); Hook::ALL.len()]);

impl CallHandles {
    pub(crate) fn observe(&self, hook: Hook, took: Duration) {
        let index = Hook::ALL.iter().position(|h| *h == hook).unwrap_or(0);
        let (calls, latency) = &self.0[index];
        calls.inc();
        latency.observe(took.as_secs_f64());
    }
}

/// Counters and histograms, registered in their own Prometheus registry so tests and
/// several runtimes in one process never collide.
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    reloads: IntCounterVec,
    members: IntGaugeVec,
    propagations: IntCounterVec,
    shadow: IntCounterVec,
    member_writes: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new("fedwasm_plugin_calls_total", "Plugin hook calls."),
            &["plugin", "hook"],
        )
        .expect("static metric definition");
        let errors = IntCounterVec::new(
            Opts::new(
                "fedwasm_plugin_errors_total",
                "Plugin hook calls that failed, by kind (timeout, memory, trap, invalid_output, refused, ...).",
            ),
            &["plugin", "hook", "kind"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "fedwasm_plugin_call_duration_seconds",
                "Time of one plugin hook call, validation included.",
            )
            // Calls take microseconds; the top buckets catch deadline hits.
            .buckets(vec![
                1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 1e-2, 5e-2,
            ]),
            &["plugin", "hook"],
        )
        .expect("static metric definition");
        let reloads = IntCounterVec::new(
            Opts::new(
                "fedwasm_plugin_reloads_total",
                "Plugin loads by result (ok, or the stage that rejected it).",
            ),
            &["plugin", "result"],
        )
        .expect("static metric definition");
        let members = IntGaugeVec::new(
            Opts::new(
                "fedwasm_members",
                "Member clusters by phase (Ready, Offline, ...).",
            ),
            &["phase"],
        )
        .expect("static metric definition");
        let propagations = IntCounterVec::new(
            Opts::new(
                "fedwasm_propagations_total",
                "Reconciles of federation objects, by kind and result (ok, or the error kind: member_unreachable, member_rejected, plugin_error, invalid_preferences, federation_error, panic, ...).",
            ),
            &["kind", "result"],
        )
        .expect("static metric definition");
        let shadow = IntCounterVec::new(
            Opts::new(
                "fedwasm_shadow_decisions_total",
                "Placements also asked of a shadow plugin (NAME.shadow.wasm), by the plugin it shadows and result (same, differs, error).",
            ),
            &["plugin", "result"],
        )
        .expect("static metric definition");
        let member_writes = IntCounterVec::new(
            Opts::new(
                "fedwasm_member_writes_total",
                "Requests that write to a member cluster, by cluster and verb (create, apply, handover, delete). Flat in the steady state.",
            ),
            &["cluster", "verb"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(members.clone()))
            .expect("unique metric names");
        for c in [
            &calls,
            &errors,
            &reloads,
            &propagations,
            &shadow,
            &member_writes,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric names");
        }
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric names");
        Self {
            registry,
            calls,
            errors,
            latency,
            reloads,
            members,
            propagations,
            shadow,
            member_writes,
        }
    }

    /// Sets the member count of every phase seen (phases not given drop to 0).
    pub(crate) fn set_members<'a>(&self, phases: impl IntoIterator<Item = &'a str>) {
        self.members.reset();
        for phase in phases {
            self.members.with_label_values(&[phase]).inc();
        }
    }

    pub(crate) fn observe_propagation(&self, kind: &str, result: &str) {
        self.propagations.with_label_values(&[kind, result]).inc();
    }

    pub(crate) fn observe_member_write(&self, cluster: &str, verb: &str) {
        self.member_writes.with_label_values(&[cluster, verb]).inc();
    }

    /// Writes to members so far, over every cluster and verb.
    pub fn member_writes(&self) -> u64 {
        self.member_writes
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    pub(crate) fn observe_shadow(&self, plugin: &str, result: &str) {
        self.shadow.with_label_values(&[plugin, result]).inc();
    }

    /// The registry, for adding more metrics (the controller's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The call counter and latency histogram of each hook of `plugin`, resolved
    /// once so a call pays no label lookup.
    pub(crate) fn call_handles(&self, plugin: &str) -> CallHandles {
        CallHandles(Hook::ALL.map(|hook| {
            (
                self.calls.with_label_values(&[plugin, hook.as_str()]),
                self.latency.with_label_values(&[plugin, hook.as_str()]),
            )
        }))
    }

    pub(crate) fn observe_error(&self, plugin: &str, hook: Hook, kind: &str) {
        self.errors
            .with_label_values(&[plugin, hook.as_str(), kind])
            .inc();
    }

    pub(crate) fn observe_reload(&self, plugin: &str, result: Result<(), &str>) {
        let label = match result {
            Ok(()) => "ok",
            Err(stage) => stage,
        };
        self.reloads.with_label_values(&[plugin, label]).inc();
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
