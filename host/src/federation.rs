//! Federation: the cluster registry, member health, and the propagation controller.
//!
//! Entry point: [`run`]. Data flows one way: watch the federation plane → place
//! (select and distribute plugins) → server-side apply into members → aggregate
//! their status back into the federation object.

pub mod cluster;
pub mod join;
pub mod kinds;
pub mod members;
pub mod propagate;

use std::sync::Arc;

use kube::Client;

use crate::runtime::{PluginError, Registry};

/// Field manager of everything fedwasm writes.
pub const FIELD_MANAGER: &str = "fedwasm";
/// Label on every object fedwasm created in a member; objects without it are never
/// touched (unless the federation object asks for adoption).
pub const MANAGED_BY_LABEL: &str = "fedwasm.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "fedwasm";
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
/// Written by fedwasm on federation objects: the per-cluster outcome.
pub const PLACEMENT_ANNOTATION: &str = "fedwasm.io/placement";

/// Errors of the federation parts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    pub(crate) fn kube(context: &str, source: kube::Error) -> Self {
        Error::Kube {
            context: context.to_string(),
            source,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Config(_) => "config",
            Error::Plugin(_) => "plugin",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Runs `call` again (up to 5 times, 200 ms apart) while it fails at the transport
/// level: an apiserver may drop pooled connections, e.g. right after a CRD is
/// installed. API answers (404, 409, 422, ...) are returned at once.
pub(crate) async fn retry_transient<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e @ (kube::Error::Service(_) | kube::Error::HyperError(_))) if attempt < 4 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transient API error; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// How the federation controller runs.
#[derive(Clone, Debug, Default)]
pub struct FederationConfig {
    pub health: members::HealthConfig,
    /// Kinds beyond the built-in ones, through the dynamic API.
    pub extra_kinds: Vec<kinds::Kind>,
}

/// Installs the Cluster CRD, then runs health probes and one propagation controller
/// per kind until the future is dropped.
pub async fn run(
    federation: Client,
    registry: Arc<Registry>,
    config: FederationConfig,
) -> Result<(), Error> {
    cluster::install_crd(&federation).await?;
    join::ensure_system_namespace(&federation).await?;
    let metrics = registry.runtime().metrics().clone();
    let members = members::Members::new(federation.clone(), config.health.clone(), metrics);
    // A first round before the controllers start, so they see the members.
    if let Err(e) = members.probe_all().await {
        tracing::warn!(error = %e, "first probe of the members");
    }
    let probes = tokio::spawn(members.clone().run_probes());
    let mut kinds = kinds::built_in();
    kinds.extend(config.extra_kinds);
    let shared = propagate::Shared::new(federation, registry, members);
    let controllers = kinds
        .into_iter()
        .map(|kind| propagate::run_controller(shared.clone(), kind));
    futures::future::join_all(controllers).await;
    probes.abort();
    Ok(())
}
