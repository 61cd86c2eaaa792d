//! The propagation controller: one per kind, over the federation plane's objects.
//!
//! Entry point: [`run`]. The files read in the order data flows: `controller`
//! (reconcile, error policy, backoff) → `place` (select and distribute plugins) →
//! `apply` (each member on its own, under its deadline) → `aggregate` (status and the
//! placement annotation back on the federation object) → `events`. What differs
//! between kinds is the table in `kinds`.

mod aggregate;
mod apply;
mod controller;
pub(crate) mod events;
pub mod kinds;
mod mirror;
pub mod namespace;
mod place;
mod policies;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::Client;

use crate::fleet::{Fleet, MemberError};
pub use crate::fleet::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::metrics::Metrics;
use crate::placer::Placer;
use crate::runtime::PluginError;
pub(crate) use controller::key;
pub use controller::{guard_panics, Context};
pub(crate) use place::{hook_choice, shaped, Decider, Placement};
pub(crate) use policies::PolicySet;

/// Finalizer on federation objects, so deletions reach the members.
pub const FINALIZER: &str = "fedwasm.io/propagation";
/// On a federation object: take over member objects of the same name not created by
/// fedwasm (`"true"`). Off by default: fedwasm never overwrites what it does not own.
pub const ADOPT_ANNOTATION: &str = "fedwasm.io/adopt";
/// On a federation object: the select plugin to use instead of the default.
pub const SELECT_PLUGIN_ANNOTATION: &str = "fedwasm.io/select-plugin";
/// On a federation object: the distribute plugin to use instead of the default.
pub const DISTRIBUTE_PLUGIN_ANNOTATION: &str = "fedwasm.io/distribute-plugin";
/// The replica preferences, as in the original Kubernetes Federation.
pub const PREFERENCES_ANNOTATION: &str = "federation.kubernetes.io/replica-set-preferences";
/// Written by fedwasm on its member copies: a hash of the copy it applied, so a
/// copy that is already what the federation wants is not written again.
pub const TEMPLATE_HASH_ANNOTATION: &str = "fedwasm.io/template-hash";
/// Written by fedwasm on federation objects: the per-cluster outcome.
pub const PLACEMENT_ANNOTATION: &str = "fedwasm.io/placement";

/// Why a reconcile failed. Every failure goes through one path: an event on the
/// object, `fedwasm_propagations_total{result=<kind>}`, and a retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Federation {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Member(#[from] MemberError),
    /// Some members could not be reached; the others were served.
    #[error("{} member(s) not reached: {}", .0.len(), .0.join("; "))]
    MembersUnreachable(Vec<String>),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{PREFERENCES_ANNOTATION} is not valid: {0}")]
    InvalidPreferences(String),
    /// The placement policy that governs the object has problems: it places
    /// nothing until they are fixed.
    #[error("placement policy {policy} is not valid: {}", .problems.join("; "))]
    InvalidPolicy {
        policy: String,
        problems: Vec<String>,
    },

    #[error("the reconcile panicked: {0}")]
    Panic(String),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::Error),
    #[error("the {0} controller stopped")]
    ControllerStopped(String),
    /// This host no longer leads: it must stop writing at once (it exits).
    #[error(transparent)]
    LeadershipLost(#[from] crate::leader::Error),
}

impl Error {
    pub(crate) fn federation(context: &str, source: kube::Error) -> Self {
        Error::Federation {
            context: context.to_string(),
            source,
        }
    }

    /// A short label for metrics (`fedwasm_propagations_total{result}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Federation { .. } => "federation_error",
            Error::Member(e) if e.is_unreachable() => "member_unreachable",
            Error::Member(_) => "member_rejected",
            Error::MembersUnreachable(_) => "member_unreachable",
            Error::Plugin(_) => "plugin_error",
            Error::InvalidPreferences(_) => "invalid_preferences",
            Error::InvalidPolicy { .. } => "invalid_policy",
            Error::Panic(_) => "panic",
            Error::Fleet(_) => "config_error",
            Error::ControllerStopped(_) => "controller_stopped",
            Error::LeadershipLost(_) => "leadership_lost",
        }
    }
}

/// How the federation controller runs.
#[derive(Clone, Debug, Default)]
pub struct FederationConfig {
    /// Kinds beyond the built-in ones, through the dynamic API.
    pub extra_kinds: Vec<kinds::Kind>,
}

/// Installs fedwasm's CRDs (retrying until the federation plane answers), then runs
/// one propagation controller per kind. Returns only when a controller stopped (it
/// should not): the caller should treat that as fatal, so a supervisor restarts it.
pub async fn run(
    federation: Client,
    placer: Placer,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    config: FederationConfig,
) -> Error {
    loop {
        let setup = async {
            crate::fleet::cluster::install_crds(&federation).await?;
            crate::fleet::join::ensure_system_namespace(&federation).await
        };
        match setup.await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "preparing the federation plane; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    let mut kinds = kinds::built_in();
    kinds.extend(config.extra_kinds);
    // One watch of the plane's Namespaces: a store every decision reads, and a
    // change stream per namespaced kind, each change seen after the store has it.
    let (namespaces, writer) = kube::runtime::reflector::store_shared(1024);
    let changes: Vec<_> = kinds
        .iter()
        .map(|k| k.namespaced.then(|| writer.subscribe()).flatten())
        .collect();
    let (policies, _policy_watches) = policies::Policies::start(&federation);
    let _policy_status = AbortOnDrop(tokio::spawn(
        policies.clone().write_status(federation.clone()),
    ));
    let shared = controller::Shared::new(
        federation.clone(),
        placer,
        fleet,
        metrics,
        namespaces,
        policies,
    );
    let watch = kube::runtime::watcher::watcher(
        kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(federation),
        kube::runtime::watcher::Config::default(),
    )
    .default_backoff()
    .reflect_shared(writer)
    .for_each(|_| async {});
    let _namespaces = AbortOnDrop(tokio::spawn(watch));
    let controllers = kinds.into_iter().zip(changes).map(|(kind, changes)| {
        let name = kind.resource.kind.clone();
        let task = tokio::spawn(controller::run(shared.clone(), kind, changes));
        async move {
            let _ = task.await;
            name
        }
    });
    let (stopped, _, _) = futures::future::select_all(controllers.map(Box::pin)).await;
    Error::ControllerStopped(stopped)
}

/// Stops a task when dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
