//! The resource kinds fedwasm propagates, and how each is turned into the object a
//! member receives.

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Map, Value};

/// One propagated kind.
#[derive(Clone, Debug)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
    /// Has `spec.replicas` split by the distribute hook.
    pub replicas: bool,
}

impl Kind {
    fn of<K: kube::Resource<DynamicType = ()>>(namespaced: bool, replicas: bool) -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            namespaced,
            replicas,
        }
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
        Ok(Self {
            resource: ApiResource::from_gvk_with_plural(&gvk, plural),
            namespaced,
            replicas: false,
        })
    }

    /// Whether this object is the federation's own machinery or a system object that
    /// every cluster has anyway, and so must not be propagated.
    pub fn skip(&self, obj: &DynamicObject) -> bool {
        let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        if SYSTEM_NAMESPACES.contains(&ns) {
            return true;
        }
        match self.resource.kind.as_str() {
            "Namespace" => SYSTEM_NAMESPACES.contains(&name) || name == "default",
            "Service" => ns == "default" && name == "kubernetes",
            "ConfigMap" => name == "kube-root-ca.crt",
            "Secret" => obj
                .data
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t == "kubernetes.io/service-account-token"),
            _ => false,
        }
    }
}

/// Namespaces never propagated: the members have their own, and `fedwasm-system`
/// holds member credentials.
pub const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    super::cluster::SYSTEM_NAMESPACE,
];

/// The built-in kinds, namespaces first so members get them before their contents.
pub fn built_in() -> Vec<Kind> {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, networking::v1 as net};
    vec![
        Kind::of::<core::Namespace>(false, false),
        Kind::of::<core::Secret>(true, false),
        Kind::of::<core::ConfigMap>(true, false),
        Kind::of::<core::Service>(true, false),
        Kind::of::<apps::ReplicaSet>(true, true),
        Kind::of::<apps::Deployment>(true, true),
        Kind::of::<net::Ingress>(true, false),
    ]
}

/// Annotations that describe the federation object itself and mean nothing in a
/// member.
const DROPPED_ANNOTATIONS: [&str; 3] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    super::PLACEMENT_ANNOTATION,
];

/// The object to server-side apply in a member: the federation object without its
/// server-set metadata and status, labelled as ours, with the member's replicas.
pub fn member_object(kind: &Kind, obj: &DynamicObject, replicas: Option<u32>) -> Value {
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
    match kind.resource.kind.as_str() {
        // Allocated by the federation's apiserver; each member allocates its own.
        "Service" => {
            if let Some(Value::Object(spec)) = body.get_mut("spec") {
                for f in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
                    spec.remove(f);
                }
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.remove("nodePort");
                    }
                }
            }
        }
        // Set by the apiserver; a member rejects a foreign value.
        "Namespace" => {
            body.remove("spec");
        }
        _ => {}
    }
    if let (true, Some(n)) = (kind.replicas, replicas) {
        if let Some(Value::Object(spec)) = body.get_mut("spec") {
            spec.insert("replicas".into(), n.into());
        }
    }
    Value::Object(body)
}
