//! The `Cluster` custom resource: one per member, in the federation plane, so
//! `kubectl --context federation get clusters` shows the members and their health.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Error, FIELD_MANAGER};

/// Namespace of the member credentials' Secrets in the federation plane.
pub const SYSTEM_NAMESPACE: &str = "fedwasm-system";

/// A member cluster joined to the federation.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "fedwasm.io",
    version = "v1alpha1",
    kind = "Cluster",
    status = "ClusterStatus",
    shortname = "fc",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"Zone","type":"string","jsonPath":".spec.zone"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// The Secret in `fedwasm-system` holding the member's kubeconfig (key `kubeconfig`).
    pub secret_ref: String,
    /// Cloud region, for placement and ingress ranking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zone inside the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Replicas this cluster can run, overriding what the host measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// Where the global ingress reaches this cluster's ingress (`http://host:port`)
    /// when its Ingresses publish no load-balancer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_endpoint: Option<String>,
}

/// What the host last saw of the member.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Ready, Offline, Unauthorized or Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why it is not Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the last successful probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ready_time: Option<String>,
    /// Replicas the cluster can take, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// Health of a member as the phase shown in `kubectl get clusters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Ready,
    Offline,
    Unauthorized,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Ready => "Ready",
            Phase::Offline => "Offline",
            Phase::Unauthorized => "Unauthorized",
        }
    }
}

impl Cluster {
    /// Whether the last probe found the member serving.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(Phase::Ready.as_str())
    }

    /// Labels, region and zone as the select hook sees them.
    pub fn to_info(&self) -> fedwasm_sdk::ClusterInfo {
        fedwasm_sdk::ClusterInfo {
            name: self.name_any(),
            region: self.spec.region.clone().unwrap_or_default(),
            zone: self.spec.zone.clone().unwrap_or_default(),
            labels: self
                .labels()
                .clone()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            ready: self.is_ready(),
        }
    }

    /// The capacity placement should respect: the spec override, else the measured one.
    pub fn capacity(&self) -> Option<u32> {
        self.spec
            .capacity
            .or_else(|| self.status.as_ref().and_then(|s| s.capacity))
    }
}

/// Installs (or updates) fedwasm's CRDs, the Cluster and both placement policies,
/// and waits until the API serves them.
pub async fn install_crds(client: &Client) -> Result<(), Error> {
    install_cluster_crd(client).await?;
    crate::policy::install_crds(client, FIELD_MANAGER)
        .await
        .map_err(|e| Error::Config(e.to_string()))
}

async fn install_cluster_crd(client: &Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = Cluster::crd();
    let name = crd.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&crd);
    super::retry_transient(|| crds.patch(&name, &params, &patch))
        .await
        .map_err(|e| Error::kube("installing the Cluster CRD", e))?;
    let clusters: Api<Cluster> = Api::all(client.clone());
    for _ in 0..100 {
        if clusters.list(&Default::default()).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(Error::Config(
        "the Cluster CRD was installed but is not served after 10 s".into(),
    ))
}
