//! Whose data is in a member namespace. fedwasm removes a namespace from a member
//! only when nothing in it belongs to anyone else: deleting a namespace deletes
//! everything inside, and other teams keep their objects in namespaces that
//! fedwasm also uses.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use kube::discovery::{verbs, Discovery, Scope};
use kube::ResourceExt;
use serde_json::json;

use super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::fleet::{MemberClient, MemberError};

/// Creates `ns` in a member, labelled as fedwasm's, unless it exists.
pub(crate) async fn ensure(client: &MemberClient, ns: &str) -> Result<(), MemberError> {
    let api: Api<Namespace> = Api::all(client.client().clone());
    let body = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}});
    match super::apply::post(client, &api, &body).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The objects in member namespace `ns` that are someone else's (as `Kind/name`),
/// listed over every namespaced kind the member serves. Empty: the namespace holds
/// only fedwasm's objects and what Kubernetes makes by itself, so it may go.
pub(crate) async fn empty_of_ours(
    client: &MemberClient,
    ns: &str,
) -> Result<Vec<String>, MemberError> {
    let discovery = client
        .call(Discovery::new(client.client().clone()).run())
        .await?;
    let mut objects = Vec::new();
    let mut seen = BTreeSet::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.client().clone(), ns, &resource);
            let list = match client.call(api.list(&ListParams::default())).await {
                Ok(l) => l,
                // Some aggregated or special resources refuse a plain list.
                Err(e) if matches!(e.code(), Some(403..=405)) => continue,
                Err(e) => return Err(e),
            };
            for mut o in list.items {
                // The same object may be served by two groups (Ingress, Event).
                if seen.insert(o.uid().unwrap_or_default()) {
                    o.types.get_or_insert_with(|| kube::core::TypeMeta {
                        api_version: resource.api_version.clone(),
                        kind: resource.kind.clone(),
                    });
                    objects.push(o);
                }
            }
        }
    }
    Ok(foreign(&objects))
}

/// The objects that belong to someone else, as `Kind/name`: not labelled as
/// fedwasm's, not derived from another object (an owner reference points to who
/// owns it, counted in its own right), and not what Kubernetes creates in every
/// namespace (events, the `default` ServiceAccount and its token, the root CA
/// ConfigMap, a Service's Endpoints).
pub fn foreign(objects: &[DynamicObject]) -> Vec<String> {
    let kind = |o: &DynamicObject| o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
    let services: BTreeSet<String> = objects
        .iter()
        .filter(|o| kind(o) == "Service")
        .map(|o| o.name_any())
        .collect();
    let mut out: Vec<String> = objects
        .iter()
        .filter(|o| o.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE))
        .filter(|o| o.owner_references().is_empty())
        .filter(|o| {
            let name = o.name_any();
            match kind(o).as_str() {
                "Event" => false,
                "ServiceAccount" => name != "default",
                "ConfigMap" => name != "kube-root-ca.crt",
                "Secret" => {
                    o.data.get("type").and_then(|t| t.as_str())
                        != Some("kubernetes.io/service-account-token")
                }
                "Endpoints" | "EndpointSlice" => !services.contains(&name),
                _ => true,
            }
        })
        .map(|o| format!("{}/{}", kind(o), o.name_any()))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn obj(kind: &str, name: &str, extra: Value) -> DynamicObject {
        let mut v = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "shop"}});
        if let (Some(base), Some(more)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in more {
                if k == "metadata" {
                    for (mk, mv) in x.as_object().unwrap() {
                        base["metadata"][mk] = mv.clone();
                    }
                } else {
                    base.insert(k.clone(), x.clone());
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_others_top_level_objects_count() {
        let ours = json!({"metadata": {"labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}});
        let objects = vec![
            obj("ConfigMap", "settings", ours.clone()),
            obj("Service", "web", ours.clone()),
            obj("Endpoints", "web", json!({})),
            obj("ConfigMap", "kube-root-ca.crt", json!({})),
            obj("ServiceAccount", "default", json!({})),
            obj(
                "Secret",
                "default-token-x",
                json!({"type": "kubernetes.io/service-account-token"}),
            ),
            obj("Event", "web.123", json!({})),
            obj(
                "ReplicaSet",
                "web-5d8",
                json!({"metadata": {"ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1"}]}}),
            ),
        ];
        assert!(foreign(&objects).is_empty(), "{:?}", foreign(&objects));
    }

    #[test]
    fn another_teams_objects_keep_the_namespace() {
        let objects = vec![
            obj("ConfigMap", "theirs", json!({})),
            obj("Secret", "their-creds", json!({"type": "Opaque"})),
            obj("ServiceAccount", "robot", json!({})),
            obj("Endpoints", "external-db", json!({})),
            obj(
                "ConfigMap",
                "mine",
                json!({"metadata": {"labels": {MANAGED_BY_LABEL: "someone-else"}}}),
            ),
        ];
        assert_eq!(
            foreign(&objects),
            [
                "ConfigMap/mine",
                "ConfigMap/theirs",
                "Endpoints/external-db",
                "Secret/their-creds",
                "ServiceAccount/robot"
            ]
        );
    }
}
