//! `fedwasm join` / `fedwasm unjoin`: a member's credentials go into a Secret in the
//! federation plane, and a Cluster object names it.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::cluster::{Cluster, ClusterSpec, SYSTEM_NAMESPACE};
use super::kubeconfig::{self, KubeconfigPolicy};
use super::{Error, FIELD_MANAGER};

/// What `fedwasm join` is told about a member.
#[derive(Clone, Debug, Default)]
pub struct JoinRequest {
    pub name: String,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: Option<u32>,
    /// The member's ingress, when its Ingresses publish no load-balancer address.
    pub ingress_endpoint: Option<String>,
    /// Whether the stored kubeconfig may run commands, read the host's files or
    /// skip TLS verification (`--allow-unsafe-kubeconfig`); by default it may not.
    pub kubeconfig_policy: KubeconfigPolicy,
}

/// Creates `fedwasm-system` in the federation plane if it is missing.
pub async fn ensure_system_namespace(federation: &Client) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(federation.clone());
    let body =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    super::retry_transient(|| api.patch(SYSTEM_NAMESPACE, &params, &patch))
        .await
        .map_err(|e| Error::kube("creating the fedwasm-system namespace", e))?;
    Ok(())
}

/// A kubeconfig holding only `context` and what it uses, with every file it refers
/// to inlined: it must work from a Secret, on another machine.
pub fn standalone_kubeconfig(path: &Path, context: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    // Parsed as a plain document (its errors never quote it): paths are inlined
    // below, and what is left is checked when the member joins.
    let config = kubeconfig::parse_value(&text)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    let find = |list: &str, name: &str| -> Option<Value> {
        config[list]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
    };
    let ctx = find("contexts", context)
        .ok_or_else(|| Error::Config(format!("{} has no context `{context}`", path.display())))?;
    let cluster_name = ctx["context"]["cluster"].as_str().unwrap_or_default();
    let user_name = ctx["context"]["user"].as_str().unwrap_or_default();
    let mut cluster = find("clusters", cluster_name).ok_or_else(|| {
        Error::Config(format!(
            "context `{context}` names a missing cluster `{cluster_name}`"
        ))
    })?;
    let mut user =
        find("users", user_name).unwrap_or_else(|| json!({"name": user_name, "user": {}}));
    let base = path.parent().unwrap_or(Path::new("."));
    inline_file(&mut cluster["cluster"], "certificate-authority", base)?;
    inline_file(&mut user["user"], "client-certificate", base)?;
    inline_file(&mut user["user"], "client-key", base)?;
    if let Some(file) = user["user"]
        .get("tokenFile")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        let token = std::fs::read_to_string(base.join(&file))
            .map_err(|e| Error::Config(format!("reading token file {file}: {e}")))?;
        user["user"]["token"] = token.trim().into();
        user["user"].as_object_mut().map(|u| u.remove("tokenFile"));
    }
    let out = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [ctx],
        "current-context": context,
    });
    Ok(out.to_string())
}

/// Replaces `field: path` with `field-data: base64(contents)`.
fn inline_file(section: &mut Value, field: &str, base: &Path) -> Result<(), Error> {
    let Some(file) = section
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Ok(());
    };
    let bytes = std::fs::read(base.join(&file))
        .map_err(|e| Error::Config(format!("reading {field} {file}: {e}")))?;
    if let Some(obj) = section.as_object_mut() {
        obj.remove(field);
        obj.insert(
            format!("{field}-data"),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        );
    }
    Ok(())
}

/// Joins the member whose context is named `request.name` in the kubeconfig file
/// at `path` (a local federation's, with every cluster in it).
pub async fn join_context(
    federation: &Client,
    path: &Path,
    request: &JoinRequest,
) -> Result<(), Error> {
    let standalone = standalone_kubeconfig(path, &request.name)?;
    join(federation, request, &standalone).await
}

/// Stores the member's credentials and creates (or updates) its Cluster.
pub async fn join(
    federation: &Client,
    request: &JoinRequest,
    kubeconfig: &str,
) -> Result<(), Error> {
    ensure_system_namespace(federation).await?;
    super::cluster::install_crds(federation).await?;
    // Fail now, not in the probe loop, if the credentials are unusable or would
    // make the host run a command or read its own files.
    kubeconfig::parse_member(kubeconfig, request.kubeconfig_policy).map_err(|source| {
        Error::Kubeconfig {
            cluster: request.name.clone(),
            source,
        }
    })?;
    let secrets: Api<Secret> = Api::namespaced(federation.clone(), SYSTEM_NAMESPACE);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": request.name, "namespace": SYSTEM_NAMESPACE,
                     "labels": {"fedwasm.io/cluster": request.name}},
        "type": "Opaque",
        "stringData": {"kubeconfig": kubeconfig},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&secret);
    super::retry_transient(|| secrets.patch(&request.name, &params, &patch))
        .await
        .map_err(|e| Error::kube("storing the member's credentials", e))?;
    let clusters: Api<Cluster> = Api::all(federation.clone());
    let spec = ClusterSpec {
        secret_ref: request.name.clone(),
        region: request.region.clone(),
        zone: request.zone.clone(),
        capacity: request.capacity,
        ingress_endpoint: request.ingress_endpoint.clone(),
    };
    let cluster = json!({
        "apiVersion": "fedwasm.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": request.name, "labels": request.labels},
        "spec": spec,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&cluster);
    super::retry_transient(|| clusters.patch(&request.name, &params, &patch))
        .await
        .map_err(|e| Error::kube("creating the Cluster", e))?;
    Ok(())
}

/// Removes the Cluster and its credentials. Objects fedwasm placed in the member
/// stay there (labelled `fedwasm.io/managed-by=fedwasm`) but are no longer managed.
pub async fn unjoin(federation: &Client, name: &str) -> Result<(), Error> {
    let clusters: Api<Cluster> = Api::all(federation.clone());
    match clusters.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(Error::Config(format!("no cluster named {name} is joined")))
        }
        Err(e) => return Err(Error::kube("deleting the Cluster", e)),
    }
    let secrets: Api<Secret> = Api::namespaced(federation.clone(), SYSTEM_NAMESPACE);
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube("deleting the member's credentials", e)),
    }
}
