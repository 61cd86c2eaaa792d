//! The async face of the plugin registry: select, distribute and rank without
//! blocking the async workers. A plugin call may run up to its deadline, so each
//! runs on the blocking pool; the controller (and later the ingress and the admin
//! API) share one `Placer`.

use std::sync::Arc;

use fedwasm_sdk::{
    DistributeRequest, DistributeResponse, Hook, RankRequest, SelectRequest, Selection,
};
use tokio::sync::watch;

use crate::runtime::{PluginError, Registry};

/// Places objects with the registry's serving plugins.
#[derive(Clone)]
pub struct Placer {
    registry: Arc<Registry>,
}

impl Placer {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Changes whenever a plugin generation is swapped in or out.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.registry.subscribe()
    }

    /// Which clusters get the object, highest score first (ties by name).
    pub async fn select(
        &self,
        plugin: Option<String>,
        request: SelectRequest,
    ) -> Result<Vec<Selection>, PluginError> {
        let mut chosen = self
            .blocking(move |r| {
                r.for_hook(Hook::Select, plugin.as_deref())?
                    .select(&request)
            })
            .await?;
        chosen.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| a.cluster.cmp(&b.cluster))
        });
        Ok(chosen)
    }

    /// How many replicas each candidate gets.
    pub async fn distribute(
        &self,
        plugin: Option<String>,
        request: DistributeRequest,
    ) -> Result<DistributeResponse, PluginError> {
        self.blocking(move |r| {
            r.for_hook(Hook::Distribute, plugin.as_deref())?
                .distribute(&request)
        })
        .await
    }

    /// The order in which backends should serve a client (indices into the input).
    pub async fn rank(
        &self,
        plugin: Option<String>,
        request: RankRequest,
    ) -> Result<Vec<u32>, PluginError> {
        self.blocking(move |r| r.for_hook(Hook::Rank, plugin.as_deref())?.rank(&request))
            .await
    }

    async fn blocking<T, F>(&self, call: F) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> Result<T, PluginError> + Send + 'static,
    {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || call(&registry))
            .await
            .map_err(|e| PluginError::Internal(format!("plugin task failed: {e}")))?
    }
}
