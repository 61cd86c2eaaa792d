//! Connections to member clusters and their health.
//!
//! Credentials live in Secrets in the federation plane (`fedwasm-system/<name>`, key
//! `kubeconfig`), so any host replica can reach every member and nothing is read from
//! the host's disk. A probe loop keeps each Cluster's status current; a member is
//! marked Offline only after a grace period, so a slow probe does not move replicas.

use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::cluster::{Cluster, Phase, SYSTEM_NAMESPACE};
use super::Error;

/// How members are probed.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Time between probes.
    pub interval: Duration,
    /// Time a member may fail probes before it is marked Offline.
    pub grace: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            grace: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// One member: its Cluster object and a client built from its Secret.
#[derive(Clone)]
pub struct Member {
    pub cluster: Cluster,
    pub client: Option<Client>,
}

struct Conn {
    client: Client,
    /// resourceVersion of the Secret the client was built from.
    secret_version: String,
    last_ok: Option<Instant>,
}

/// Every joined member, kept current by [`Members::run_probes`].
pub struct Members {
    federation: Client,
    health: HealthConfig,
    metrics: Arc<Metrics>,
    clusters: RwLock<Vec<Cluster>>,
    conns: RwLock<HashMap<String, Conn>>,
    /// Bumped when a member joins, leaves or changes phase: placements are redone.
    changed: watch::Sender<u64>,
}

impl Members {
    pub fn new(federation: Client, health: HealthConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            federation,
            health,
            metrics,
            clusters: RwLock::new(Vec::new()),
            conns: RwLock::new(HashMap::new()),
            changed: watch::channel(0).0,
        })
    }

    /// Changes whenever the set of members or their phases change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Every joined member, sorted by name.
    pub fn snapshot(&self) -> Vec<Member> {
        let clusters = self.clusters.read().unwrap_or_else(|p| p.into_inner());
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        clusters
            .iter()
            .map(|c| Member {
                cluster: c.clone(),
                client: conns.get(&c.name_any()).map(|conn| conn.client.clone()),
            })
            .collect()
    }

    /// Probes every member once, then every `interval`, until the task is dropped.
    pub async fn run_probes(self: Arc<Self>) {
        loop {
            if let Err(e) = self.probe_all().await {
                tracing::warn!(error = %e, "probing member clusters");
            }
            tokio::time::sleep(self.health.interval).await;
        }
    }

    /// One round: refresh the Cluster list, (re)connect, probe, write statuses.
    pub async fn probe_all(&self) -> Result<(), Error> {
        let api: Api<Cluster> = Api::all(self.federation.clone());
        let mut clusters = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("listing clusters", e))?
            .items;
        clusters.sort_by_key(|c| c.name_any());
        let mut changed = false;
        {
            let old = self.clusters.read().unwrap_or_else(|p| p.into_inner());
            let names = |v: &[Cluster]| v.iter().map(|c| c.name_any()).collect::<Vec<_>>();
            if names(&old) != names(&clusters) {
                changed = true;
            }
        }
        let probes = clusters.iter().map(|c| self.probe(c));
        let results = futures::future::join_all(probes).await;
        for (cluster, (phase, message, capacity)) in clusters.iter_mut().zip(results) {
            let name = cluster.name_any();
            let status = cluster.status.get_or_insert_with(Default::default);
            let mut next = status.clone();
            next.phase = Some(phase.as_str().to_string());
            next.message = message;
            next.capacity = capacity;
            if phase == Phase::Ready {
                next.last_ready_time = Some(now_rfc3339());
            }
            let phase_changed = status.phase != next.phase;
            if phase_changed {
                changed = true;
                tracing::info!(cluster = %name, phase = phase.as_str(), "member phase changed");
            }
            // lastReadyTime moves on every probe; write it only with other changes
            // or every ~30 s, to keep the federation plane quiet.
            let stale = status
                .last_ready_time
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| Timestamp::now().duration_since(t).as_secs() >= 30)
                .unwrap_or(true);
            let differs = status.phase != next.phase
                || status.message != next.message
                || status.capacity != next.capacity;
            if differs || (phase == Phase::Ready && stale) {
                let patch = json!({"status": next});
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(cluster = %name, error = %e, "writing cluster status");
                }
                *status = next;
            }
        }
        {
            let names: Vec<String> = clusters.iter().map(|c| c.name_any()).collect();
            let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
            conns.retain(|name, _| names.contains(name));
            self.metrics.set_members(
                clusters
                    .iter()
                    .filter_map(|c| c.status.as_ref()?.phase.as_deref()),
            );
            *self.clusters.write().unwrap_or_else(|p| p.into_inner()) = clusters;
        }
        if changed {
            self.changed.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// Probes one member: (phase, message, measured capacity).
    async fn probe(&self, cluster: &Cluster) -> (Phase, Option<String>, Option<u32>) {
        let name = cluster.name_any();
        let client = match self.connect(cluster).await {
            Ok(c) => c,
            Err(e) => return (Phase::Pending, Some(e.to_string()), None),
        };
        let probe = tokio::time::timeout(self.health.timeout, client.apiserver_version()).await;
        let failure = match probe {
            Ok(Ok(_)) => None,
            Ok(Err(kube::Error::Api(s))) if s.code == 401 || s.code == 403 => {
                return (Phase::Unauthorized, Some(s.message.clone()), None);
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within {} ms",
                self.health.timeout.as_millis()
            )),
        };
        let now = Instant::now();
        let within_grace = {
            let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
            let Some(conn) = conns.get_mut(&name) else {
                return (Phase::Pending, None, None);
            };
            if failure.is_none() {
                conn.last_ok = Some(now);
            }
            conn.last_ok
                .map(|t| now.duration_since(t) < self.health.grace)
                .unwrap_or(false)
        };
        match failure {
            None => (Phase::Ready, None, measure_capacity(&client).await),
            // A short blip: keep Ready (and the replicas where they are).
            Some(_) if within_grace && cluster.is_ready() => (
                Phase::Ready,
                None,
                cluster.status.as_ref().and_then(|s| s.capacity),
            ),
            Some(message) => (Phase::Offline, Some(message), None),
        }
    }

    /// The member's client, rebuilt when its Secret changed.
    async fn connect(&self, cluster: &Cluster) -> Result<Client, Error> {
        let name = cluster.name_any();
        let secrets: Api<Secret> = Api::namespaced(self.federation.clone(), SYSTEM_NAMESPACE);
        let secret = secrets
            .get(&cluster.spec.secret_ref)
            .await
            .map_err(|e| Error::kube(&format!("reading the credentials of {name}"), e))?;
        let version = secret.resource_version().unwrap_or_default();
        if let Some(conn) = self
            .conns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            if conn.secret_version == version {
                return Ok(conn.client.clone());
            }
        }
        let client = client_from_secret(&secret, &name).await?;
        self.conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name,
                Conn {
                    client: client.clone(),
                    secret_version: version,
                    last_ok: None,
                },
            );
        Ok(client)
    }
}

/// A client from the `kubeconfig` key of a member's Secret, with short timeouts: a
/// member that is away must fail fast, not hold up the others.
pub async fn client_from_secret(secret: &Secret, cluster: &str) -> Result<Client, Error> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .ok_or_else(|| {
            Error::Config(format!(
                "the Secret of cluster {cluster} has no `kubeconfig` key"
            ))
        })?;
    let text = std::str::from_utf8(&bytes.0)
        .map_err(|_| Error::Config(format!("the kubeconfig of cluster {cluster} is not UTF-8")))?;
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|e| Error::Config(format!("the kubeconfig of cluster {cluster}: {e}")))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(format!("the kubeconfig of cluster {cluster}: {e}")))?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(15));
    Client::try_from(config).map_err(|e| Error::kube(&format!("connecting to {cluster}"), e))
}

/// Pods the member's nodes can run (sum of allocatable `pods`), if it has nodes.
async fn measure_capacity(client: &Client) -> Option<u32> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.ok()?;
    let total: u64 = list
        .items
        .iter()
        .filter_map(|n| n.status.as_ref()?.allocatable.as_ref()?.get("pods"))
        .filter_map(|q| q.0.parse::<u64>().ok())
        .sum();
    (total > 0).then(|| total.min(u64::from(u32::MAX)) as u32)
}

fn now_rfc3339() -> String {
    Timestamp::now().to_string()
}
