//! Builds every part from one configuration, once: metrics, the Wasm runtime and
//! plugin registry (with the plugin directory watched), the member view, the
//! propagation controllers and the admin API. Used by `fedwasm run`, `dev` and the
//! tests, so a part is never wired twice in two ways.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::Client;

use crate::admin::{self, AdminState, Health};
use crate::federation::{self, kinds::Kind, FederationConfig};
use crate::fleet::{Fleet, FleetConfig};
use crate::metrics::Metrics;
use crate::placer::Placer;
use crate::runtime::{DirWatcher, Registry, Runtime, RuntimeConfig};

/// Everything `fedwasm run` is told.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub runtime: RuntimeConfig,
    /// Plugin directory to load and watch.
    pub plugins: Option<PathBuf>,
    pub debounce: Duration,
    /// Address of the admin API.
    pub admin: String,
    /// The federation plane; without it only the runtime and admin API run.
    pub federation: Option<FederationTarget>,
    pub fleet: FleetConfig,
    pub extra_kinds: Vec<Kind>,
}

/// Where the federation plane is: a context in a kubeconfig.
#[derive(Clone, Debug)]
pub struct FederationTarget {
    pub kubeconfig: PathBuf,
    pub context: String,
}

/// A client for `context` in `kubeconfig` (default: the usual kubeconfig search).
pub async fn kube_client(kubeconfig: Option<&Path>, context: &str) -> Result<Client> {
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .with_context(|| format!("loading context `{context}`"))?;
    Client::try_from(config).context("building the Kubernetes client")
}

/// The parts that exist before the async runtime runs.
pub struct App {
    pub config: AppConfig,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub health: Health,
    _watcher: Option<DirWatcher>,
}

impl App {
    /// Starts the Wasm runtime, loads the built-in plugins and the plugin directory.
    pub fn build(config: AppConfig) -> Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::new(config.runtime.clone(), metrics.clone())
            .context("starting the Wasm runtime")?;
        let registry = Registry::new(runtime).context("loading the built-in plugins")?;
        let watcher = match &config.plugins {
            Some(dir) => Some(
                DirWatcher::start(registry.clone(), dir, config.debounce)
                    .with_context(|| format!("watching the plugin directory {}", dir.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            config,
            metrics,
            registry,
            health: Health::healthy(),
            _watcher: watcher,
        })
    }

    /// Starts the member view and the controllers against `federation`. The returned
    /// future ends only when a controller stopped, with why.
    pub fn start_federation(
        &self,
        federation: Client,
    ) -> impl std::future::Future<Output = federation::Error> {
        let (fleet, prober) = Fleet::start(
            federation.clone(),
            self.config.fleet.clone(),
            self.metrics.clone(),
        );
        let placer = Placer::new(self.registry.clone());
        let config = FederationConfig {
            extra_kinds: self.config.extra_kinds.clone(),
        };
        let metrics = self.metrics.clone();
        async move {
            let stopped = federation::run(federation, placer, fleet, metrics, config).await;
            prober.abort();
            stopped
        }
    }

    /// Runs until Ctrl-C or SIGTERM (`Ok`), or until a controller stops (`Err`: the
    /// process should exit non-zero so its supervisor restarts it).
    pub async fn serve(self) -> Result<()> {
        let (dead_tx, mut dead_rx) = tokio::sync::mpsc::channel::<String>(1);
        if let Some(target) = &self.config.federation {
            let client = kube_client(Some(&target.kubeconfig), &target.context).await?;
            let controllers = self.start_federation(client);
            let health = self.health.clone();
            tokio::spawn(async move {
                let why = controllers.await;
                tracing::error!(error = %why, "the federation controller stopped; exiting");
                health.fail();
                let _ = dead_tx.send(why.to_string()).await;
            });
        }
        let listener = tokio::net::TcpListener::bind(&self.config.admin)
            .await
            .with_context(|| format!("binding the admin API to {}", self.config.admin))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "admin API listening");
        {
            // Never a panic on a closed stdout: the address is also in the log.
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "admin API: http://{addr}").and_then(|()| out.flush());
        }
        let app = admin::router(AdminState {
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        });
        let died = Arc::new(std::sync::Mutex::new(None));
        let shutdown = {
            let died = died.clone();
            async move {
                tokio::select! {
                    _ = shutdown_signal() => tracing::info!("shutting down"),
                    why = dead_rx.recv() => {
                        *died.lock().unwrap_or_else(|p| p.into_inner()) = why;
                    }
                }
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving the admin API")?;
        let why = died.lock().unwrap_or_else(|p| p.into_inner()).take();
        match why {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
