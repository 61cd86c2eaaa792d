//! The workload simulator of `fedwasm dev` and `fedwasm demo`
//! (`run --simulate-workloads`).
//!
//! Local dev clusters are bare kube-apiservers: no kubelet, scheduler or
//! controller-manager runs, so a ReplicaSet never gets ready replicas, a
//! LoadBalancer Service never gets an address and nothing answers HTTP. This
//! simulator plays those parts for objects fedwasm placed: it writes the members'
//! `status` the way their controllers would, and it plays each member's ingress
//! with one small HTTP server on loopback that answers as the walk-through's nginx
//! pods did ("Welcome to the global site! You are being served from <zone>"),
//! pointing the member's Cluster `spec.ingressEndpoint` at it. The federation
//! controller and the global ingress do not know it exists; never enable it against
//! real clusters.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use fedwasm_host::fleet::cluster::Cluster;
use fedwasm_host::fleet::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use serde_json::json;

/// One member's stand-in pods behind its ingress.
struct Backend {
    zone: String,
    port: u16,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Backend {
    async fn start(zone: String) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let backend = Self {
            zone,
            port: listener.local_addr()?.port(),
            task: Mutex::new(None),
        };
        backend.serve(listener);
        Ok(backend)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let page = format!(
            "Welcome to the global site! You are being served from {}\n",
            self.zone
        );
        let app = axum::Router::new().fallback(move || {
            let page = page.clone();
            async move { page }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    async fn restart(&self) -> anyhow::Result<()> {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(error = %e, "simulator: port still held");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("rebinding a simulated backend"),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

/// The running simulator; dropping it stops the backends and the status writer.
pub struct Simulator {
    backends: BTreeMap<String, Backend>,
    status: tokio::task::JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.status.abort();
        for b in self.backends.values() {
            b.stop();
        }
    }
}

impl Simulator {
    /// Connects to every member context of `kubeconfig`, starts a backend for each
    /// joined member and points its Cluster at it, and writes member status every 2 s.
    pub async fn start(kubeconfig: &Path, federation_context: &str) -> anyhow::Result<Self> {
        tracing::warn!("workload simulator on: member status and backends are simulated, not real");
        let federation =
            fedwasm_host::app::kube_client(Some(kubeconfig), federation_context).await?;
        let members = connect(kubeconfig, federation_context).await?;
        let clusters: Api<Cluster> = Api::all(federation);
        let mut backends = BTreeMap::new();
        for cluster in clusters.list(&ListParams::default()).await?.items {
            let name = cluster.name_any();
            let zone = cluster.spec.zone.clone().unwrap_or_else(|| name.clone());
            let backend = Backend::start(zone).await?;
            let endpoint = format!("http://127.0.0.1:{}", backend.port);
            clusters
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"ingressEndpoint": endpoint}})),
                )
                .await
                .with_context(|| format!("pointing cluster {name} at its simulated ingress"))?;
            backends.insert(name, backend);
        }
        let status = tokio::spawn(async move {
            loop {
                for (index, (name, client)) in members.iter().enumerate() {
                    if let Err(e) = tick(client, index).await {
                        tracing::debug!(member = %name, error = %e, "simulator: member unavailable");
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        Ok(Self { backends, status })
    }

    /// Stops the backends of the members whose zone starts with `prefix` (an
    /// outage); returns their names.
    pub fn stop_backends(&self, prefix: &str) -> Vec<String> {
        self.matching(prefix)
            .map(|(name, b)| {
                b.stop();
                name.clone()
            })
            .collect()
    }

    /// Starts them again, on the same ports.
    pub async fn restart_backends(&self, prefix: &str) -> anyhow::Result<()> {
        for (_, b) in self.matching(prefix) {
            b.restart().await?;
        }
        Ok(())
    }

    fn matching<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Backend)> {
        self.backends
            .iter()
            .filter(move |(_, b)| b.zone.starts_with(prefix))
    }
}

/// For `run --simulate-workloads`: keeps a simulator running until the task is
/// dropped, retrying while the federation is not reachable yet.
pub async fn run(kubeconfig: std::path::PathBuf, federation_context: String) {
    loop {
        match Simulator::start(&kubeconfig, &federation_context).await {
            Ok(simulator) => {
                std::future::pending::<()>().await;
                drop(simulator);
            }
            Err(e) => {
                tracing::warn!(error = %e, "simulator: starting; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn connect(kubeconfig: &Path, federation: &str) -> anyhow::Result<Vec<(String, Client)>> {
    let file = Kubeconfig::read_from(kubeconfig)?;
    let mut out = Vec::new();
    for context in file.contexts.iter().map(|c| c.name.clone()) {
        if context == federation {
            continue;
        }
        let client = fedwasm_host::app::kube_client(Some(kubeconfig), &context).await?;
        out.push((context, client));
    }
    Ok(out)
}

/// Patches the status of every object of kind `K` fedwasm placed in a member, where
/// `status` says it needs one (`None`: leave it).
async fn write_status<K>(
    client: &Client,
    owned: &ListParams,
    status: impl Fn(&K) -> Option<serde_json::Value>,
) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let all: Api<K> = Api::all(client.clone());
    for object in all.list(owned).await? {
        let Some(status) = status(&object) else {
            continue;
        };
        let meta = object.meta();
        let api: Api<K> = Api::namespaced(
            client.clone(),
            meta.namespace.as_deref().unwrap_or_default(),
        );
        api.patch_status(
            meta.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await?;
    }
    Ok(())
}

async fn tick(client: &Client, index: usize) -> anyhow::Result<()> {
    let owned = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let params = PatchParams::default();
    write_status(client, &owned, |rs: &ReplicaSet| {
        let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = rs.metadata.generation.unwrap_or(0);
        let status = rs.status.as_ref();
        let done = status.is_some_and(|s| {
            s.replicas == want
                && s.ready_replicas == Some(want)
                && s.observed_generation == Some(generation)
        });
        (!done).then(|| {
            json!({"status": {"replicas": want, "readyReplicas": want, "availableReplicas": want,
                "fullyLabeledReplicas": want, "observedGeneration": generation}})
        })
    })
    .await?;
    // As the Deployment controller reports a finished rollout: every replica
    // updated and available, the generation observed, both conditions.
    write_status(client, &owned, |d: &Deployment| {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(0);
        let status = d.status.as_ref();
        let done = status.is_some_and(|s| {
            s.ready_replicas == Some(want)
                && s.updated_replicas == Some(want)
                && s.observed_generation == Some(generation)
        });
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        (!done).then(|| {
            json!({"status": {"replicas": want, "readyReplicas": want, "availableReplicas": want,
                "updatedReplicas": want, "observedGeneration": generation, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": now, "lastTransitionTime": now}]}})
        })
    })
    .await?;
    let services: Api<Service> = Api::all(client.clone());
    for svc in services.list(&owned).await? {
        let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        let has_address = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        if is_lb && !has_address {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            // TEST-NET-2 addresses: clearly not real.
            let ip = format!("198.51.100.{}", index + 1);
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
            api.patch_status(
                svc.metadata.name.as_deref().unwrap_or_default(),
                &params,
                &Patch::Merge(status),
            )
            .await?;
        }
    }
    Ok(())
}
