//! The async face of the plugin registry: select, distribute and rank without
//! blocking the async workers. A plugin call may run up to its deadline, so each
//! runs on the blocking pool; the controller (and later the ingress and the admin
//! API) share one `Placer`.
//!
//! A placer may serve another plugin under a name ([`Placer::substituting`]): that
//! is how a preview evaluates a candidate in place of the plugin it would replace,
//! and how a shadow plugin is asked what it would have decided.

use std::collections::BTreeMap;
use std::sync::Arc;

use fedwasm_sdk::{
    CustomizeRequest, DistributeRequest, DistributeResponse, Hook, RankRequest, SelectRequest,
    Selection,
};
use tokio::sync::watch;

use crate::runtime::{default_plugin, Plugin, PluginError, Registry};
use crate::shadow::{Shadows, SHADOW_SUFFIX};

/// Places objects with the registry's serving plugins.
#[derive(Clone)]
pub struct Placer {
    registry: Arc<Registry>,
    /// Served instead of the registry's plugin of the same name.
    substitutes: Arc<BTreeMap<String, Arc<Plugin>>>,
    shadows: Arc<Shadows>,
}

impl Placer {
    pub fn new(registry: Arc<Registry>) -> Self {
        let shadows = Arc::new(Shadows::new(registry.runtime().metrics().clone()));
        Self {
            registry,
            substitutes: Arc::default(),
            shadows,
        }
    }

    /// This placer, but serving each given plugin wherever its key is the plugin
    /// asked for (by annotation or as a hook's default).
    pub fn substituting(&self, substitutes: BTreeMap<String, Arc<Plugin>>) -> Self {
        Self {
            registry: self.registry.clone(),
            substitutes: Arc::new(substitutes),
            shadows: self.shadows.clone(),
        }
    }

    /// This placer serving the registry's own plugins, with no substitutes.
    pub fn serving(&self) -> Self {
        self.substituting(BTreeMap::new())
    }

    /// What the shadow plugins said, shared by every clone of this placer.
    pub fn shadows(&self) -> &Arc<Shadows> {
        &self.shadows
    }

    /// The plugin that serves `hook` for `name` (the hook's default when `None`).
    /// Shadow plugins decide nothing: asking for one by name is an error.
    pub fn resolve(&self, hook: Hook, name: Option<&str>) -> Result<Arc<Plugin>, PluginError> {
        let name = name.unwrap_or(default_plugin(hook));
        if let Some(plugin) = self.substitutes.get(name) {
            return if plugin.implements(hook) {
                Ok(plugin.clone())
            } else {
                Err(PluginError::Unsupported {
                    plugin: plugin.name().to_string(),
                    hook,
                })
            };
        }
        if let Some(shadowed) = name.strip_suffix(SHADOW_SUFFIX) {
            return Err(PluginError::BadRequest(format!(
                "`{name}` is a shadow plugin: it only shadows `{shadowed}` and decides nothing (rename its file to `{shadowed}.wasm` to make it decide)"
            )));
        }
        self.registry.for_hook(hook, Some(name))
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
            .call(Hook::Select, plugin, move |p| p.select(&request))
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
        self.call(Hook::Distribute, plugin, move |p| p.distribute(&request))
            .await
    }

    /// The order in which backends should serve a client (indices into the input).
    pub async fn rank(
        &self,
        plugin: Option<String>,
        request: RankRequest,
    ) -> Result<Vec<u32>, PluginError> {
        self.call(Hook::Rank, plugin, move |p| p.rank(&request))
            .await
    }

    /// The patch the customize hook of `plugin` gives one member's copy.
    pub async fn customize(
        &self,
        plugin: Option<String>,
        request: CustomizeRequest,
    ) -> Result<Vec<serde_json::Value>, PluginError> {
        self.call(Hook::Customize, plugin, move |p| p.customize(&request))
            .await
    }

    /// Resolves the plugin now (a swap after this point does not change the call)
    /// and runs `call` on the blocking pool.
    async fn call<T, F>(
        &self,
        hook: Hook,
        plugin: Option<String>,
        call: F,
    ) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
    {
        let plugin = self.resolve(hook, plugin.as_deref())?;
        tokio::task::spawn_blocking(move || call(&plugin))
            .await
            .map_err(|e| PluginError::Internal(format!("plugin task failed: {e}")))?
    }
}
