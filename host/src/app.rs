//! Builds every part from one configuration, once: metrics, the Wasm runtime and
//! plugin registry (with the plugin directory watched), the member view, the
//! propagation controllers and the admin API. Used by `fedwasm run`, `dev` and the
//! tests, so a part is never wired twice in two ways.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::Client;
use tokio::sync::watch;

use crate::admin::{self, AdminConfig, AdminState, Health};
use crate::dns::{DnsConfig, DnsHandler, DnsMetrics};
use crate::federation::{self, kinds::Kind, FederationConfig};
use crate::fleet::{Fleet, FleetConfig};
use crate::ingress::{IngressConfig, IngressMetrics};
use crate::leader::{ElectionConfig, Leadership, WriteGate};
use crate::metrics::Metrics;
use crate::placer::Placer;
use crate::routing::{Locality, Router, RouterConfig};
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
    /// Its token, timeouts and limits.
    pub admin_config: AdminConfig,
    /// The federation plane; without it only the runtime and admin API run.
    pub federation: Option<FederationTarget>,
    pub fleet: FleetConfig,
    pub extra_kinds: Vec<Kind>,
    /// Address of the global ingress; none: no ingress.
    pub ingress: Option<String>,
    pub ingress_config: IngressConfig,
    /// The locality table's file (re-read when it changes).
    pub locality: Option<PathBuf>,
    pub routing: RouterConfig,
    /// The DNS front door (none unless `dns.addr` is set).
    pub dns: DnsConfig,
    /// Leader election among the hosts of one federation plane; none: this host
    /// leads alone.
    pub election: Option<ElectionConfig>,
}

impl Default for AppConfig {
    /// No plugin directory, federation, ingress or locality table; the admin API
    /// on a free loopback port.
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            plugins: None,
            debounce: Duration::from_millis(100),
            admin: "127.0.0.1:0".into(),
            admin_config: AdminConfig::default(),
            federation: None,
            fleet: FleetConfig::default(),
            extra_kinds: Vec::new(),
            ingress: None,
            ingress_config: IngressConfig::default(),
            locality: None,
            routing: RouterConfig::default(),
            dns: DnsConfig::default(),
            election: None,
        }
    }
}

/// Where the federation plane is.
#[derive(Clone, Debug)]
pub enum FederationTarget {
    /// A context in a kubeconfig.
    Kubeconfig {
        kubeconfig: PathBuf,
        context: String,
    },
    /// The cluster this process runs in, as a pod: `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, and the service account's token and CA in
    /// [`SERVICE_ACCOUNT_DIR`].
    InCluster,
}

/// Where the kubelet mounts a pod's service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl FederationTarget {
    /// [`InCluster`](Self::InCluster) when this process runs in a pod (both
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` set, as the kubelet
    /// sets them in every container), else `None`.
    pub fn in_cluster() -> Option<Self> {
        let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        (set("KUBERNETES_SERVICE_HOST") && set("KUBERNETES_SERVICE_PORT"))
            .then_some(Self::InCluster)
    }

    /// A client for the federation plane.
    pub async fn client(&self) -> Result<Client> {
        match self {
            Self::Kubeconfig {
                kubeconfig,
                context,
            } => kube_client(Some(kubeconfig), context).await,
            Self::InCluster => {
                let config = kube::Config::incluster().with_context(|| {
                    format!(
                        "loading the in-cluster configuration (KUBERNETES_SERVICE_HOST, \
                         KUBERNETES_SERVICE_PORT and the service account in {SERVICE_ACCOUNT_DIR})"
                    )
                })?;
                tracing::info!(server = %config.cluster_url, "federation plane: the cluster this pod runs in");
                plane_client(config)
            }
        }
    }
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
    plane_client(config)
}

/// The client for the federation plane (or any one cluster the CLI talks to):
/// HTTP/1.1 with idle connections closed ([`crate::fleet::client::pooled`]).
/// Through an HTTP proxy (`proxy-url` in the kubeconfig), which that client does
/// not speak, kube's own.
fn plane_client(config: kube::Config) -> Result<Client> {
    if config.proxy_url.is_some() {
        return Client::try_from(config).context("building the Kubernetes client");
    }
    crate::fleet::client::pooled(config)
        .map_err(anyhow::Error::msg)
        .context("building the Kubernetes client")
}

/// The parts that exist before the async runtime runs.
pub struct App {
    pub config: AppConfig,
    /// The locality table as read at start.
    pub locality: Locality,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    /// Places with the registry's plugins; shared by the controllers and the admin
    /// API (previews, shadow differences).
    pub placer: Placer,
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
        // A malformed table stops the start, with the line or field at fault.
        let locality = match &config.locality {
            Some(path) => Locality::load(path).context("the locality table")?,
            None => Locality::default(),
        };
        let watcher = match &config.plugins {
            Some(dir) => Some(
                DirWatcher::start(registry.clone(), dir, config.debounce)
                    .with_context(|| format!("watching the plugin directory {}", dir.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            config,
            locality,
            metrics,
            placer: Placer::new(registry.clone()),
            registry,
            health: Health::healthy(),
            _watcher: watcher,
        })
    }

    /// Starts the member view, the controllers and the routing table against
    /// `federation` (the election, if any, on `election_client`: connections of its
    /// own). With an election, this host stands by (member view, routing
    /// table and front doors, no writes) until it leads; the election stops, and
    /// the lease is released, when `stop` turns true. `stopped` ends only when a
    /// controller stopped or the lease was lost, with why.
    pub fn start_federation(
        &self,
        federation: Client,
        election_client: Option<Client>,
        stop: watch::Receiver<bool>,
    ) -> Running {
        let (leadership_tx, leadership) = watch::channel(Leadership {
            leading: self.config.election.is_none(),
            ..Default::default()
        });
        let mut fleet_config = self.config.fleet.clone();
        let mut lost = None;
        let mut elector = None;
        if let Some(election) = self.config.election.clone() {
            fleet_config.status_writes = WriteGate::while_leading(leadership.clone());
            let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
            lost = Some(lost_rx);
            let client = election_client.unwrap_or_else(|| federation.clone());
            elector = Some(tokio::spawn(async move {
                if let Err(e) = crate::leader::run(client, election, leadership_tx, stop).await {
                    tracing::error!(error = %e, "no longer the leader; stopping every write");
                    let _ = lost_tx.send(e);
                }
            }));
        }
        let (fleet, prober) = Fleet::start(federation.clone(), fleet_config, self.metrics.clone());
        let placer = self.placer.clone();
        let router = Router::start(
            federation.clone(),
            fleet.clone(),
            placer.clone(),
            self.locality.clone(),
            self.config.routing.clone(),
        );
        if let Some(path) = self.config.locality.clone() {
            tokio::spawn(reload_locality(path, Arc::downgrade(&router)));
        }
        let config = FederationConfig {
            extra_kinds: self.config.extra_kinds.clone(),
        };
        let metrics = self.metrics.clone();
        let view = admin::FederationView {
            client: federation.clone(),
            fleet: fleet.clone(),
            kinds: federation::kinds::built_in()
                .into_iter()
                .chain(self.config.extra_kinds.iter().cloned())
                .collect(),
            leadership: leadership.clone(),
            election: self.config.election.is_some(),
        };
        let mut waiting = leadership;
        let stopped = Box::pin(async move {
            let controllers = federation::run(federation, placer, fleet, metrics, config);
            let stopped = match lost {
                None => controllers.await,
                Some(mut lost) => {
                    // A graceful stop drops the sender: that is no loss.
                    let lost_or_stop = async move {
                        match (&mut lost).await {
                            Ok(e) => federation::Error::from(e),
                            Err(_) => std::future::pending().await,
                        }
                    };
                    tokio::pin!(lost_or_stop);
                    tokio::select! {
                        e = &mut lost_or_stop => e,
                        _ = async {
                            let _ = waiting.wait_for(|l| l.leading).await;
                            tracing::info!("leading: starting the controllers");
                        } => tokio::select! {
                            e = controllers => e,
                            e = &mut lost_or_stop => e,
                        },
                    }
                }
            };
            prober.abort();
            stopped
        });
        Running {
            router,
            view,
            stopped,
            elector,
        }
    }

    /// Serves the global ingress on `listener` with `router`'s table, until
    /// `shutdown` resolves.
    pub fn start_ingress(
        &self,
        listener: tokio::net::TcpListener,
        router: Arc<Router>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let metrics = Arc::new(
            IngressMetrics::new(self.metrics.registry())
                .context("registering the ingress metrics")?,
        );
        let config = self.config.ingress_config.clone();
        Ok(tokio::spawn(crate::ingress::serve(
            listener, router, metrics, config, shutdown,
        )))
    }

    /// Answers DNS on `udp` and `tcp` from `router`'s table, until `shutdown`
    /// resolves; fails on a malformed `--dns-zone` or `--federation-name`.
    pub fn start_dns(
        &self,
        udp: tokio::net::UdpSocket,
        tcp: tokio::net::TcpListener,
        router: Arc<Router>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let zones = self.config.dns.zones().map_err(anyhow::Error::msg)?;
        let metrics =
            DnsMetrics::new(self.metrics.registry()).context("registering the DNS metrics")?;
        let handler = DnsHandler::new(zones, Arc::new(move || router.table()), Some(metrics));
        Ok(crate::dns::serve(udp, tcp, handler, shutdown))
    }

    /// Runs until Ctrl-C or SIGTERM (`Ok`), or until a controller stops (`Err`: the
    /// process should exit non-zero so its supervisor restarts it).
    pub async fn serve(self) -> Result<()> {
        self.start().await?.wait().await
    }

    /// Binds and starts every front door (admin API; with a federation, the
    /// controllers and, when asked for, the global ingress) and returns at once.
    pub async fn start(self) -> Result<Serving> {
        let (dead_tx, mut dead_rx) = tokio::sync::mpsc::channel::<String>(1);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut router = None;
        let mut view = None;
        let mut elector = None;
        let mut ingress = None;
        let mut dns = None;
        if let Some(target) = &self.config.federation {
            // kube's HTTP/1.1 client, unlike the members' (one HTTP/2 connection
            // each): one plane, a few hundred connections at most while
            // converging. An HTTP/2 client here is not yet proven at scale.
            let client = target.client().await?;
            // The election has connections of its own: a busy controller must not
            // keep the lease from being renewed.
            let election = match &self.config.election {
                Some(_) => Some(target.client().await?),
                None => None,
            };
            let running = self.start_federation(client, election, stop_rx.clone());
            router = Some(running.router.clone());
            view = Some(running.view.clone());
            elector = running.elector;
            if let Some(addr) = &self.config.ingress {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the global ingress to {addr}"))?;
                let local = listener.local_addr()?;
                tracing::info!(addr = %local, "global ingress listening");
                say(&format!("global ingress: http://{local}"));
                ingress = Some(local);
                let mut stop = stop_rx.clone();
                self.start_ingress(listener, running.router.clone(), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })?;
            }
            if let Some(addr) = &self.config.dns.addr {
                let (udp, tcp) = crate::dns::bind(addr)
                    .await
                    .with_context(|| format!("binding DNS (UDP and TCP) to {addr}"))?;
                let local = udp.local_addr()?;
                tracing::info!(addr = %local, "DNS listening (UDP and TCP)");
                say(&format!("dns: {local}"));
                dns = Some(local);
                let mut stop = stop_rx.clone();
                self.start_dns(udp, tcp, running.router.clone(), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })?;
            }
            let controllers = running.stopped;
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
        let admin = listener.local_addr()?;
        tracing::info!(addr = %admin, "admin API listening");
        if !admin.ip().is_loopback() {
            let token = self.config.admin_config.token.is_some();
            tracing::warn!(
                addr = %admin,
                token,
                "the admin API is reachable from other hosts (it shows plugins, routes and \
                 metrics and runs plans); bind it to loopback or set --admin-token-file"
            );
        }
        say(&format!("admin API: http://{admin}"));
        let admin_config = self.config.admin_config.clone();
        let routes = admin::router(
            AdminState {
                registry: self.registry.clone(),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
                router: router.clone(),
                placer: self.placer.clone(),
                federation: view,
            },
            &admin_config,
        );
        let mut stopped = stop_rx.clone();
        let task = tokio::spawn(async move {
            // The runtime, registry and plugin watcher live as long as the server.
            let _app = self;
            let died = Arc::new(std::sync::Mutex::new(None));
            let shutdown = {
                let died = died.clone();
                async move {
                    tokio::select! {
                        _ = shutdown_signal() => tracing::info!("shutting down"),
                        _ = stopped.wait_for(|s| *s) => {}
                        // `None`: no federation, so no controller to die.
                        Some(why) = dead_rx.recv() => {
                            *died.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                        }
                    }
                }
            };
            admin::serve(listener, routes, &admin_config, shutdown).await;
            let why = died.lock().unwrap_or_else(|p| p.into_inner()).take();
            match why {
                Some(why) => Err(anyhow::anyhow!(why)),
                None => Ok(()),
            }
        });
        Ok(Serving {
            admin,
            ingress,
            dns,
            router,
            stop: stop_tx,
            task,
            elector,
        })
    }
}

/// A started host.
pub struct Serving {
    pub admin: std::net::SocketAddr,
    pub ingress: Option<std::net::SocketAddr>,
    /// The DNS front door's address (UDP and TCP).
    pub dns: Option<std::net::SocketAddr>,
    pub router: Option<Arc<Router>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    elector: Option<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Until Ctrl-C or SIGTERM (`Ok`), or a controller stopped (`Err`).
    pub async fn wait(self) -> Result<()> {
        let result = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the admin API task failed: {e}")),
        };
        let _ = self.stop.send(true);
        if let Some(elector) = self.elector {
            // Releasing the lease lets a standby take over at once; bounded.
            let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
        }
        result
    }

    /// Stops every front door now.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.wait().await
    }
}

/// The host, started against a federation plane.
pub struct Running {
    /// The routing table (for the ingress, DNS and `/routes`).
    pub router: Arc<Router>,
    /// The federation as the admin API reads it (`/preview`).
    pub view: admin::FederationView,
    /// Ends only when a controller stopped or the lease was lost, with why.
    pub stopped: std::pin::Pin<Box<dyn std::future::Future<Output = federation::Error> + Send>>,
    /// The election, when there is one: ends once the lease is released (after
    /// `stop`) or lost.
    pub elector: Option<tokio::task::JoinHandle<()>>,
}

/// One line on stdout; never a panic when stdout is closed (it is in the log too).
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Re-reads the locality table when its file changes; a table that does not parse
/// is refused with the reason and the one before keeps serving.
async fn reload_locality(path: PathBuf, router: std::sync::Weak<Router>) {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&path);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Locality::load(&path) {
            Ok(table) => {
                tracing::info!(path = %path.display(), "locality table reloaded");
                router.set_locality(table);
            }
            Err(e) => {
                tracing::error!(error = %e, "locality table refused; the previous one keeps serving")
            }
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
