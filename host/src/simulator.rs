//! The workload simulator of `fedwasm dev` (`run --simulate-workloads`).
//!
//! Local dev clusters are bare kube-apiservers: no kubelet, scheduler or
//! controller-manager runs, so a ReplicaSet never gets ready replicas and a
//! LoadBalancer Service never gets an address. This simulator plays those parts for
//! objects fedwasm placed, writing the members' `status` the way their controllers
//! would, so the federation's status aggregation has something to show in the demo.
//! The federation controller does not know it exists; never enable it against real
//! clusters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedwasm_host::fleet::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::Client;
use serde_json::json;

/// Runs until the task is dropped; errors (a member away) are logged and retried.
pub async fn run(kubeconfig: PathBuf, federation_context: String) {
    tracing::warn!("workload simulator on: member status is simulated, not real");
    let mut members: Vec<(String, Client)> = Vec::new();
    loop {
        if members.is_empty() {
            match connect(&kubeconfig, &federation_context).await {
                Ok(m) => members = m,
                Err(e) => tracing::warn!(error = %e, "simulator: reading the kubeconfig"),
            }
        }
        for (index, (name, client)) in members.iter().enumerate() {
            if let Err(e) = tick(client, index).await {
                tracing::debug!(member = %name, error = %e, "simulator: member unavailable");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
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
