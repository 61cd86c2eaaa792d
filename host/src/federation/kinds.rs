//! The resource kinds fedwasm propagates, and how each is turned into the object a
//! member receives.

use std::time::Duration;

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Map, Value};

/// What the federation object's status shows of its members' copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusShape {
    /// Nothing: fedwasm leaves the status alone.
    None,
    /// Replica counts summed over members (these `status` fields), the generation
    /// every member observed, and, with `conditions`, the Deployment conditions
    /// derived from the members' (`Available`, `Progressing`).
    Replicas {
        sums: &'static [&'static str],
        conditions: bool,
    },
    /// Every member's load-balancer addresses (`status.loadBalancer.ingress`).
    LoadBalancer,
}

/// One propagated kind. Everything that differs between kinds is data here.
#[derive(Clone, Debug)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
    /// Has `spec.replicas` split by the distribute hook.
    pub replicas: bool,
    /// What status is aggregated back.
    pub status: StatusShape,
    /// Fields each member sets for itself (a foreign value is rejected), removed
    /// from what is sent; `*` steps into every element of an array.
    pub member_owned: &'static [&'static str],
    /// Members' status moves without telling the federation: how often to look.
    pub resync: Duration,
    /// Objects of this kind every cluster has anyway (`(namespace, name)`; `*` any),
    /// never propagated.
    pub system_objects: &'static [(&'static str, &'static str)],
    /// A Secret `type` never propagated (service-account tokens: each cluster mints
    /// its own).
    pub system_type: Option<&'static str>,
    /// Holds other objects (a Namespace): removed from a member only when nothing
    /// in it is anyone else's.
    pub holds_objects: bool,
}

impl Kind {
    fn of<K: kube::Resource<DynamicType = ()>>(namespaced: bool) -> Self {
        Self::plain(ApiResource::erase::<K>(&()), namespaced)
    }

    /// A kind with nothing special: no replicas, no status, nothing member-owned.
    fn plain(resource: ApiResource, namespaced: bool) -> Self {
        Self {
            resource,
            namespaced,
            replicas: false,
            status: StatusShape::None,
            member_owned: &[],
            resync: Duration::from_secs(300),
            system_objects: &[],
            system_type: None,
            holds_objects: false,
        }
    }

    fn with_replicas(mut self, sums: &'static [&'static str], conditions: bool) -> Self {
        self.replicas = true;
        self.status = StatusShape::Replicas { sums, conditions };
        self.resync = Duration::from_secs(5);
        self
    }

    /// A kind named on the command line as `group/version/Kind/plural` (core group:
    /// `/v1/Kind/plural`), namespaced unless `cluster` is given.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split('/').collect();
        let (group, version, kind, plural, scope) = match parts.as_slice() {
            [g, v, k, p] => (*g, *v, *k, *p, "namespaced"),
            [g, v, k, p, s] => (*g, *v, *k, *p, *s),
            _ => {
                return Err(format!(
                    "`{spec}`: expected group/version/Kind/plural[/cluster]"
                ))
            }
        };
        if version.is_empty() || kind.is_empty() || plural.is_empty() {
            return Err(format!("`{spec}`: version, Kind and plural are required"));
        }
        let namespaced = match scope {
            "namespaced" => true,
            "cluster" => false,
            other => {
                return Err(format!(
                    "`{spec}`: scope `{other}` is neither namespaced nor cluster"
                ))
            }
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        Ok(Self::plain(
            ApiResource::from_gvk_with_plural(&gvk, plural),
            namespaced,
        ))
    }

    /// Whether this object is the federation's own machinery or a system object that
    /// every cluster has anyway, and so must not be propagated.
    pub fn skip(&self, obj: &DynamicObject) -> bool {
        let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        if SYSTEM_NAMESPACES.contains(&ns) {
            return true;
        }
        let listed = self
            .system_objects
            .iter()
            .any(|(n, o)| (*n == "*" || *n == ns) && (*o == "*" || *o == name));
        let typed = self
            .system_type
            .is_some_and(|t| obj.data.get("type").and_then(Value::as_str) == Some(t));
        listed || typed || (self.holds_objects && !namespace_propagated(name))
    }
}

/// Whether a federated Namespace of this name is propagated (and so decides where
/// the objects in it go): not the system namespaces, not `default`.
pub fn namespace_propagated(name: &str) -> bool {
    !SYSTEM_NAMESPACES.contains(&name) && name != "default"
}

/// Namespaces never propagated: the members have their own, and `fedwasm-system`
/// holds member credentials.
pub const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    crate::fleet::cluster::SYSTEM_NAMESPACE,
];

/// The built-in kinds, namespaces first so members get them before their contents.
pub fn built_in() -> Vec<Kind> {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, networking::v1 as net};
    vec![
        Kind {
            // Set by each apiserver (`spec.finalizers`); a member rejects a foreign value.
            member_owned: &["spec"],
            holds_objects: true,
            ..Kind::of::<core::Namespace>(false)
        },
        Kind {
            system_type: Some("kubernetes.io/service-account-token"),
            ..Kind::of::<core::Secret>(true)
        },
        Kind {
            system_objects: &[("*", "kube-root-ca.crt")],
            ..Kind::of::<core::ConfigMap>(true)
        },
        Kind {
            // Allocated by the federation's apiserver; each member allocates its own.
            member_owned: &[
                "spec/clusterIP",
                "spec/clusterIPs",
                "spec/healthCheckNodePort",
                "spec/ports/*/nodePort",
            ],
            status: StatusShape::LoadBalancer,
            resync: Duration::from_secs(5),
            system_objects: &[("default", "kubernetes")],
            ..Kind::of::<core::Service>(true)
        },
        Kind::of::<apps::ReplicaSet>(true).with_replicas(
            &[
                "replicas",
                "fullyLabeledReplicas",
                "readyReplicas",
                "availableReplicas",
            ],
            false,
        ),
        Kind::of::<apps::Deployment>(true).with_replicas(
            &[
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
            ],
            true,
        ),
        Kind {
            status: StatusShape::LoadBalancer,
            resync: Duration::from_secs(5),
            ..Kind::of::<net::Ingress>(true)
        },
    ]
}

/// Annotations that describe the federation object itself and mean nothing in a
/// member.
const DROPPED_ANNOTATIONS: [&str; 3] = [
    super::place::LAST_APPLIED_ANNOTATION,
    "deployment.kubernetes.io/revision",
    super::PLACEMENT_ANNOTATION,
];

/// The object to server-side apply in a member: the federation object without its
/// server-set metadata and status, labelled as ours, with the member's replicas.
pub fn member_object(kind: &Kind, obj: &DynamicObject, replicas: Option<u32>) -> Value {
    with_template_hash(member_body(kind, obj, replicas))
}

/// The member copy's body before its template hash: where per-cluster overrides
/// are applied, so the hash covers them.
pub(crate) fn member_body(kind: &Kind, obj: &DynamicObject, replicas: Option<u32>) -> Value {
    let mut body: Map<String, Value> = match &obj.data {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    body.remove("status");
    body.remove("metadata");
    let mut metadata = Map::new();
    metadata.insert(
        "name".into(),
        obj.metadata.name.clone().unwrap_or_default().into(),
    );
    if kind.namespaced {
        if let Some(ns) = &obj.metadata.namespace {
            metadata.insert("namespace".into(), ns.clone().into());
        }
    }
    let mut labels = obj.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        super::MANAGED_BY_LABEL.into(),
        super::MANAGED_BY_VALUE.into(),
    );
    metadata.insert(
        "labels".into(),
        serde_json::to_value(labels).unwrap_or_default(),
    );
    let mut annotations = obj.metadata.annotations.clone().unwrap_or_default();
    for a in DROPPED_ANNOTATIONS {
        annotations.remove(a);
    }
    if !annotations.is_empty() {
        metadata.insert(
            "annotations".into(),
            serde_json::to_value(annotations).unwrap_or_default(),
        );
    }
    body.insert(
        "apiVersion".into(),
        kind.resource.api_version.clone().into(),
    );
    body.insert("kind".into(), kind.resource.kind.clone().into());
    body.insert("metadata".into(), Value::Object(metadata));
    let chosen: Vec<bool> = kind
        .member_owned
        .iter()
        .map(|path| chosen_by_user(&body, path))
        .collect();
    for (path, chosen) in kind.member_owned.iter().zip(chosen) {
        if !chosen {
            let steps: Vec<&str> = path.split('/').collect();
            remove_path(&mut body, &steps);
        }
    }
    if let (true, Some(n)) = (kind.replicas, replicas) {
        if let Some(Value::Object(spec)) = body.get_mut("spec") {
            spec.insert("replicas".into(), n.into());
        }
    }
    Value::Object(body)
}

/// Whether a field each member would otherwise allocate holds the user's choice,
/// which every member keeps: a headless Service's `clusterIP: None` (and its
/// `clusterIPs: [None]`). Dropped, a member allocates an address from its range
/// instead, and refuses the Service once the range is full.
fn chosen_by_user(body: &Map<String, Value>, path: &str) -> bool {
    match path {
        "spec/clusterIP" | "spec/clusterIPs" => {
            body.get("spec")
                .and_then(|s| s.get("clusterIP"))
                .and_then(Value::as_str)
                == Some("None")
        }
        _ => false,
    }
}

/// `body` with its template hash annotation: a hash of everything else in it.
pub(crate) fn with_template_hash(body: Value) -> Value {
    let Value::Object(mut body) = body else {
        return body;
    };
    let hash = template_hash(&body);
    if let Some(Value::Object(metadata)) = body.get_mut("metadata") {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(annotations) = annotations {
            annotations.insert(super::TEMPLATE_HASH_ANNOTATION.into(), hash.into());
        }
    }
    Value::Object(body)
}

/// A short hash of a member copy's body (before the hash annotation is added).
fn template_hash(body: &Map<String, Value>) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(serde_json::to_vec(body).unwrap_or_default());
    hex::encode(&digest[..8])
}

/// The template hash written on a member copy's body by [`member_object`].
pub(crate) fn hash_of(body: &Value) -> &str {
    body.pointer("/metadata/annotations")
        .and_then(|a| a.get(super::TEMPLATE_HASH_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Removes the field at `steps` (`*` = every element of an array).
fn remove_path(object: &mut Map<String, Value>, steps: &[&str]) {
    match steps {
        [] => {}
        [last] => {
            object.remove(*last);
        }
        [first, rest @ ..] => match (object.get_mut(*first), rest) {
            (Some(Value::Array(items)), ["*", rest @ ..]) => {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    remove_path(item, rest);
                }
            }
            (Some(Value::Object(inner)), _) => remove_path(inner, rest),
            _ => {}
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(name: &str) -> Kind {
        built_in()
            .into_iter()
            .find(|k| k.resource.kind == name)
            .unwrap()
    }

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_service_loses_what_each_member_allocates() {
        let svc = object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                         "annotations": {"fedwasm.io/placement": "{}", "team": "a"}},
            "spec": {"clusterIP": "10.0.0.9", "clusterIPs": ["10.0.0.9"], "type": "LoadBalancer",
                     "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}]},
            "status": {"loadBalancer": {}}}));
        let mut body = member_object(&kind("Service"), &svc, None);
        let hash = body["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(crate::federation::TEMPLATE_HASH_ANNOTATION);
        assert!(hash.is_some(), "{body}");
        assert_eq!(
            body,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop",
                             "labels": {"fedwasm.io/managed-by": "fedwasm"},
                             "annotations": {"team": "a"}},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}})
        );
    }

    #[test]
    fn a_headless_service_stays_headless() {
        let svc = object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "namespace": "shop", "uid": "u", "resourceVersion": "7"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"},
                     "ports": [{"port": 5432}]}}));
        let body = member_object(&kind("Service"), &svc, None);
        assert_eq!(body["spec"]["clusterIP"], "None");
        assert_eq!(body["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn the_template_hash_follows_the_body() {
        let rs = |image: &str| {
            object(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "1"},
                "spec": {"replicas": 9, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}))
        };
        let k = kind("ReplicaSet");
        let a = member_object(&k, &rs("nginx:1"), Some(4));
        assert_eq!(
            hash_of(&a),
            hash_of(&member_object(&k, &rs("nginx:1"), Some(4)))
        );
        assert_eq!(hash_of(&a).len(), 16);
        assert_ne!(
            hash_of(&a),
            hash_of(&member_object(&k, &rs("nginx:2"), Some(4)))
        );
        assert_ne!(
            hash_of(&a),
            hash_of(&member_object(&k, &rs("nginx:1"), Some(3)))
        );
        // What the server sets on the federation object is not in the copy's hash.
        let mut moved = rs("nginx:1");
        moved.metadata.resource_version = Some("99".into());
        assert_eq!(hash_of(&a), hash_of(&member_object(&k, &moved, Some(4))));
    }

    #[test]
    fn replicas_are_the_plans_and_namespaces_lose_their_spec() {
        let rs = object(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 9}}));
        let body = member_object(&kind("ReplicaSet"), &rs, Some(4));
        assert_eq!(body["spec"]["replicas"], 4);
        let ns = object(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop"}, "spec": {"finalizers": ["kubernetes"]}}));
        let body = member_object(&kind("Namespace"), &ns, None);
        assert!(body.get("spec").is_none(), "{body}");
        assert!(body["metadata"].get("namespace").is_none());
    }

    #[test]
    fn what_every_cluster_has_is_not_propagated() {
        let skip = |k: &str, v: Value| kind(k).skip(&object(v));
        assert!(skip(
            "Namespace",
            json!({"metadata": {"name": "kube-system"}})
        ));
        assert!(skip("Namespace", json!({"metadata": {"name": "default"}})));
        assert!(!skip("Namespace", json!({"metadata": {"name": "shop"}})));
        assert!(skip(
            "Service",
            json!({"metadata": {"name": "kubernetes", "namespace": "default"}})
        ));
        assert!(!skip(
            "Service",
            json!({"metadata": {"name": "kubernetes", "namespace": "shop"}})
        ));
        assert!(skip(
            "ConfigMap",
            json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "shop"}})
        ));
        assert!(skip(
            "Secret",
            json!({"metadata": {"name": "t", "namespace": "shop"},
            "type": "kubernetes.io/service-account-token"})
        ));
        assert!(!skip(
            "Secret",
            json!({"metadata": {"name": "t", "namespace": "shop"}, "type": "Opaque"})
        ));
        assert!(skip(
            "Deployment",
            json!({"metadata": {"name": "web", "namespace": "fedwasm-system"}})
        ));
    }

    #[test]
    fn kinds_named_on_the_command_line() {
        let k = Kind::parse("example.com/v1/Widget/widgets").unwrap();
        assert!(k.namespaced && !k.replicas);
        assert_eq!(k.resource.api_version, "example.com/v1");
        let k = Kind::parse("/v1/PersistentVolume/persistentvolumes/cluster").unwrap();
        assert!(!k.namespaced);
        assert_eq!(k.resource.api_version, "v1");
        assert!(Kind::parse("v1/Widget").is_err());
        assert!(Kind::parse("g/v1/Widget/widgets/galaxy").is_err());
    }
}
