//! Placement policies: which plugins place a federated object, with what settings,
//! and what each member's copy looks like.
//!
//! Two custom resources share one body ([`PolicyBody`]): `ClusterPlacementPolicy`
//! (cluster-scoped, set by the federation's operators) and `PlacementPolicy`
//! (namespaced, set by the namespace's owners). For each object exactly one policy
//! governs; [`choose`] decides which. Everything here except [`install_crds`] is
//! pure, so the rules are unit-tested without an apiserver.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors of installing or checking placement policies.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// An API call failed.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A CRD was applied but the apiserver did not start serving it in time.
    #[error("the {crd} CRD was installed but is not served after 10 s")]
    NotServed { crd: String },
    /// A policy whose spec fails [`PolicyBody::validate`].
    #[error("placement policy {policy} is invalid: {}", problems.join("; "))]
    Invalid {
        /// The policy, as [`policy_ref`] names it.
        policy: String,
        /// One message per problem, each naming its field.
        problems: Vec<String>,
    },
}

/// A cluster-wide placement policy: applies to objects in every namespace, unless a
/// namespaced `PlacementPolicy` selects the object too.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "fedwasm.io",
    version = "v1alpha1",
    kind = "ClusterPlacementPolicy",
    status = "PolicyStatus",
    shortname = "cpp",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Governed","type":"integer","jsonPath":".status.governed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct ClusterPlacementPolicySpec {
    /// The policy itself, shared with `PlacementPolicy`.
    #[serde(flatten)]
    pub body: PolicyBody,
}

/// A placement policy for objects in its own namespace; it beats every
/// `ClusterPlacementPolicy` that selects the same object, whatever their priorities.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "fedwasm.io",
    version = "v1alpha1",
    kind = "PlacementPolicy",
    namespaced,
    status = "PolicyStatus",
    shortname = "pp",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Governed","type":"integer","jsonPath":".status.governed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct PlacementPolicySpec {
    /// The policy itself, shared with `ClusterPlacementPolicy`.
    #[serde(flatten)]
    pub body: PolicyBody,
}

impl From<PolicyBody> for ClusterPlacementPolicySpec {
    fn from(body: PolicyBody) -> Self {
        ClusterPlacementPolicySpec { body }
    }
}

impl From<PolicyBody> for PlacementPolicySpec {
    fn from(body: PolicyBody) -> Self {
        PlacementPolicySpec { body }
    }
}

/// What both policy kinds say: which objects they govern and how those are placed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBody {
    /// Objects this policy governs: any selector matching selects the object. An
    /// empty list selects nothing, so a half-written policy never captures everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_selectors: Vec<ResourceSelector>,
    /// Among matching policies of the same scope, the highest priority wins.
    #[serde(default)]
    pub priority: i32,
    /// The select hook: which members are candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<PluginRef>,
    /// The distribute hook: how many replicas each candidate runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribute: Option<DistributeRef>,
    /// The rank hook: the order the global ingress prefers members in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<PluginRef>,
    /// The customize hook: per-member changes computed by a plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customize: Option<PluginRef>,
    /// Fixed per-member changes, applied in order before the customize hook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// A hook's plugin and the settings the policy gives it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    /// The plugin's name; absent means the host's built-in default for the hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Any JSON value; handed to the plugin as JSON text, never interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub settings: Option<Value>,
}

/// The distribute hook's plugin, its settings and the replica preferences.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DistributeRef {
    /// The plugin's name; absent means the host's built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Replica-set preferences (`rebalance`, per-cluster `weight`/`minReplicas`/...),
    /// in the shape of the `federation.kubernetes.io/replica-set-preferences` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_object")]
    pub preferences: Option<Value>,
    /// Any JSON value; handed to the plugin as JSON text, never interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub settings: Option<Value>,
}

/// Which objects a policy governs. Every field given must match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSelector {
    /// Exact `group/version` (`apps/v1`, or `v1` for the core group); absent or
    /// empty matches every version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Exact kind, e.g. `Deployment`. Required.
    pub kind: String,
    /// Exact namespace; absent or empty matches every namespace. Cluster-scoped
    /// objects never match a selector that names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Exact object name; absent or empty matches every name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels the object must carry; absent matches any labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
///
/// Our own type rather than k8s-openapi's, whose `JsonSchema` impl needs the
/// crate's `schemars` feature; [`From`] converts theirs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`. A string rather than an enum so a
    /// typo is reported by `validate` instead of rejecting the whole policy.
    pub operator: String,
    /// Values for `In`/`NotIn` (at least one); empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Fixed changes to the copies on some members.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    /// Which members' copies are patched; absent selects every member.
    #[serde(default)]
    pub clusters: ClusterSelection,
    /// RFC 6902 JSON Patch operations, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "json_patch_ops")]
    pub patch: Vec<Value>,
}

/// Which members an override applies to. An empty or absent field places no
/// constraint; every field given must match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSelection {
    /// Member (`Cluster`) names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Member regions (`Cluster.spec.region`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Member zones (`Cluster.spec.zone`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Labels of the `Cluster` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// What the host last decided about a policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Objects this policy currently governs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governed: Option<u32>,
    /// Names of policies of the same scope and priority it ties with on some object;
    /// the tie is broken by name, which is rarely what the authors meant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Vec<String>>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Any JSON value, kept as written: without `x-kubernetes-preserve-unknown-fields`
/// the apiserver would prune every key the schema does not declare.
fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// A JSON object with any keys, kept as written.
fn any_json_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// A list of JSON Patch operations, each kept as written (their `value`s are
/// arbitrary); their shape is checked by [`PolicyBody::validate`].
fn json_patch_ops(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Installs (or updates) both policy CRDs with server-side apply under
/// `field_manager` and waits until the API serves them.
pub async fn install_crds(client: &Client, field_manager: &str) -> Result<(), PolicyError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(field_manager).force();
    for crd in [ClusterPlacementPolicy::crd(), PlacementPolicy::crd()] {
        let name = crd.name_any();
        let patch = Patch::Apply(&crd);
        crate::fleet::retry_transient(|| crds.patch(&name, &params, &patch))
            .await
            .map_err(|source| PolicyError::Kube {
                context: format!("installing the {name} CRD"),
                source,
            })?;
    }
    wait_served(
        &Api::<ClusterPlacementPolicy>::all(client.clone()),
        "ClusterPlacementPolicy",
    )
    .await?;
    wait_served(
        &Api::<PlacementPolicy>::all(client.clone()),
        "PlacementPolicy",
    )
    .await
}

/// Polls until listing `api` succeeds, for at most 10 s.
async fn wait_served<K>(api: &Api<K>, crd: &str) -> Result<(), PolicyError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    for _ in 0..100 {
        if api.list(&Default::default()).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(PolicyError::NotServed {
        crd: crd.to_string(),
    })
}

/// The JSON Patch operations RFC 6902 defines.
const PATCH_OPS: [&str; 6] = ["add", "remove", "replace", "move", "copy", "test"];

impl PolicyBody {
    /// Whether any resource selector matches the object. Namespace scoping of a
    /// `PlacementPolicy` is [`PlacementPolicy::selects`]'s job.
    pub fn selects(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.resource_selectors
            .iter()
            .any(|s| s.matches(api_version, kind, namespace, name, labels))
    }

    /// Every problem with the spec, each naming its field (`spec.overrides[1].patch[0]: ...`).
    /// Empty means valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, selector) in self.resource_selectors.iter().enumerate() {
            selector.check(&format!("spec.resourceSelectors[{i}]"), &mut problems);
        }
        for (i, o) in self.overrides.iter().enumerate() {
            let at = format!("spec.overrides[{i}]");
            if let Some(selector) = &o.clusters.label_selector {
                selector.check(&format!("{at}.clusters.labelSelector"), &mut problems);
            }
            for (j, op) in o.patch.iter().enumerate() {
                check_patch_op(op, &format!("{at}.patch[{j}]"), &mut problems);
            }
        }
        problems
    }
}

impl PluginRef {
    /// The settings as the hooks receive them: JSON text, or empty when there are none.
    pub fn settings_json(&self) -> String {
        settings_text(self.settings.as_ref())
    }
}

impl DistributeRef {
    /// The settings as the hooks receive them: JSON text, or empty when there are none.
    pub fn settings_json(&self) -> String {
        settings_text(self.settings.as_ref())
    }
}

impl PolicyBody {
    /// The section for `hook`, if the policy has one: the plugin it names (if
    /// any) and its settings as JSON text.
    pub fn hook(&self, hook: fedwasm_sdk::Hook) -> Option<(Option<&str>, String)> {
        use fedwasm_sdk::Hook;
        fn plugin(r: &PluginRef) -> (Option<&str>, String) {
            (r.plugin.as_deref(), r.settings_json())
        }
        match hook {
            Hook::Select => self.select.as_ref().map(plugin),
            Hook::Rank => self.rank.as_ref().map(plugin),
            Hook::Customize => self.customize.as_ref().map(plugin),
            Hook::Distribute => self
                .distribute
                .as_ref()
                .map(|r| (r.plugin.as_deref(), r.settings_json())),
        }
    }
}

fn settings_text(settings: Option<&Value>) -> String {
    match settings {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    }
}

/// Appends what is wrong with one JSON Patch operation.
fn check_patch_op(op: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(fields) = op.as_object() else {
        problems.push(format!(
            "{at}: must be an object like {{\"op\": \"replace\", \"path\": \"/...\", \"value\": ...}}"
        ));
        return;
    };
    let name = match fields.get("op") {
        None => {
            problems.push(format!("{at}: missing \"op\""));
            return;
        }
        Some(Value::String(name)) if PATCH_OPS.contains(&name.as_str()) => name.as_str(),
        Some(Value::String(name)) => {
            problems.push(format!(
                "{at}: op \"{name}\" is not an RFC 6902 operation (add, remove, replace, move, copy, test)"
            ));
            return;
        }
        Some(other) => {
            problems.push(format!("{at}: op {other} is not a string"));
            return;
        }
    };
    check_pointer(fields.get("path"), "path", at, problems);
    if matches!(name, "add" | "replace" | "test") && !fields.contains_key("value") {
        problems.push(format!("{at}: op \"{name}\" needs a \"value\""));
    }
    if matches!(name, "move" | "copy") {
        check_pointer(fields.get("from"), "from", at, problems);
    }
}

/// Checks that a `path` or `from` is present and a JSON pointer into the object.
fn check_pointer(pointer: Option<&Value>, key: &str, at: &str, problems: &mut Vec<String>) {
    match pointer {
        None => problems.push(format!("{at}: missing \"{key}\"")),
        Some(Value::String(p)) if p.starts_with('/') => {}
        Some(Value::String(p)) => problems.push(format!(
            "{at}: {key} \"{p}\" must start with \"/\" (a JSON pointer such as /spec/replicas)"
        )),
        Some(other) => problems.push(format!("{at}: {key} {other} is not a string")),
    }
}

impl ResourceSelector {
    /// Whether the object matches: `kind` exactly; `apiVersion`, `namespace` and
    /// `name` exactly when given (`apps` does not match `apps/v1`); the label
    /// selector when given. An invalid selector matches nothing.
    pub fn matches(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        if self.kind.is_empty() || self.kind != kind {
            return false;
        }
        if given(&self.api_version).is_some_and(|v| v != api_version) {
            return false;
        }
        if given(&self.namespace).is_some_and(|ns| Some(ns) != namespace) {
            return false;
        }
        if given(&self.name).is_some_and(|n| n != name) {
            return false;
        }
        self.label_selector
            .as_ref()
            .is_none_or(|selector| selector.matches(labels))
    }

    /// What is wrong with this selector, each message naming its field. Empty means valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.check("resourceSelector", &mut problems);
        problems
    }

    fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.kind.is_empty() {
            problems.push(format!(
                "{at}.kind: must not be empty (a selector matches one kind, e.g. Deployment)"
            ));
        }
        if let Some(selector) = &self.label_selector {
            selector.check(&format!("{at}.labelSelector"), problems);
        }
    }
}

/// The value of an optional field when it is given and not empty.
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|s| !s.is_empty())
}

impl LabelSelector {
    /// Whether `labels` satisfy every `matchLabels` entry and every expression, as
    /// Kubernetes evaluates them (`NotIn` and `DoesNotExist` hold when the key is
    /// absent). An empty selector matches everything; an invalid one nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        // The requirements are ANDed, so one invalid requirement failing is enough
        // for the whole selector to match nothing, without building messages here.
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.holds(labels))
    }

    /// What is wrong with this selector, each message naming its field. Empty means valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.check("labelSelector", &mut problems);
        problems
    }

    fn check(&self, at: &str, problems: &mut Vec<String>) {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let at = format!("{at}.matchExpressions[{i}]");
            if r.key.is_empty() {
                problems.push(format!("{at}.key: must not be empty"));
            }
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => problems.push(format!(
                    "{at}: operator {} needs at least one value",
                    r.operator
                )),
                "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                    problems.push(format!("{at}: operator {} takes no values", r.operator))
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => problems.push(format!(
                    "{at}.operator: \"{other}\" is not one of In, NotIn, Exists, DoesNotExist"
                )),
            }
        }
    }
}

impl LabelSelectorRequirement {
    /// Whether the requirement holds; never for an invalid one (see
    /// [`LabelSelector::validate`]).
    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.key.is_empty() {
            return false;
        }
        let value = labels.get(&self.key);
        let has_values = !self.values.is_empty();
        match self.operator.as_str() {
            "In" => has_values && value.is_some_and(|v| self.values.contains(v)),
            "NotIn" => has_values && value.is_none_or(|v| !self.values.contains(v)),
            "Exists" => !has_values && value.is_some(),
            "DoesNotExist" => !has_values && value.is_none(),
            _ => false,
        }
    }
}

impl From<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> for LabelSelector {
    fn from(s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Self {
        LabelSelector {
            match_labels: s.match_labels.unwrap_or_default(),
            match_expressions: s
                .match_expressions
                .unwrap_or_default()
                .into_iter()
                .map(|r| LabelSelectorRequirement {
                    key: r.key,
                    operator: r.operator,
                    values: r.values.unwrap_or_default(),
                })
                .collect(),
        }
    }
}

impl ClusterSelection {
    /// Whether the member matches every constraint given. `region` and `zone` are
    /// empty when the member declares none; such a member matches no list of regions
    /// (zones) but every selection that lists none.
    pub fn matches(
        &self,
        name: &str,
        region: &str,
        zone: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        listed(&self.names, name)
            && listed(&self.regions, region)
            && listed(&self.zones, zone)
            && self
                .label_selector
                .as_ref()
                .is_none_or(|selector| selector.matches(labels))
    }
}

/// Where a policy lives, which decides precedence before priority does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A `PlacementPolicy`, set by the namespace's owners.
    Namespaced,
    /// A `ClusterPlacementPolicy`, set by the federation's operators.
    Cluster,
}

impl Scope {
    /// The policy kind of this scope.
    pub fn kind(self) -> &'static str {
        match self {
            Scope::Namespaced => "PlacementPolicy",
            Scope::Cluster => "ClusterPlacementPolicy",
        }
    }

    /// Sort rank: namespaced policies come first.
    fn rank(self) -> u8 {
        match self {
            Scope::Namespaced => 0,
            Scope::Cluster => 1,
        }
    }
}

/// How events, logs and status name a policy: `ClusterPlacementPolicy/<name>` or
/// `PlacementPolicy/<namespace>/<name>` (`PlacementPolicy/<name>` if the namespace
/// is unknown).
pub fn policy_ref(scope: Scope, namespace: Option<&str>, name: &str) -> String {
    match (scope, namespace) {
        (Scope::Namespaced, Some(ns)) => format!("{}/{ns}/{name}", scope.kind()),
        _ => format!("{}/{name}", scope.kind()),
    }
}

/// A policy that selects the object being placed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate<'a> {
    /// Whether it is a `PlacementPolicy` or a `ClusterPlacementPolicy`.
    pub scope: Scope,
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`; `None` for cluster-scoped policies.
    pub namespace: Option<&'a str>,
    /// `spec.priority`.
    pub priority: i32,
    /// The spec.
    pub body: &'a PolicyBody,
}

impl<'a> Candidate<'a> {
    /// A `ClusterPlacementPolicy` as a candidate.
    pub fn cluster(policy: &'a ClusterPlacementPolicy) -> Self {
        Candidate {
            scope: Scope::Cluster,
            name: policy.metadata.name.as_deref().unwrap_or_default(),
            namespace: None,
            priority: policy.spec.body.priority,
            body: &policy.spec.body,
        }
    }

    /// A `PlacementPolicy` as a candidate.
    pub fn namespaced(policy: &'a PlacementPolicy) -> Self {
        Candidate {
            scope: Scope::Namespaced,
            name: policy.metadata.name.as_deref().unwrap_or_default(),
            namespace: policy.metadata.namespace.as_deref(),
            priority: policy.spec.body.priority,
            body: &policy.spec.body,
        }
    }

    /// The candidate as [`policy_ref`] names it.
    pub fn policy_ref(&self) -> String {
        policy_ref(self.scope, self.namespace, self.name)
    }
}

/// The policy that governs an object, and the ones it only beat by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice<'a> {
    /// The governing policy.
    pub winner: Candidate<'a>,
    /// Names (ascending) of the other candidates with the winner's scope and
    /// priority: the authors probably did not mean the tie, so the caller should
    /// raise a conflict event and record them in `status.conflicts`.
    pub ties: Vec<&'a str>,
}

/// Picks the governing policy among those selecting one object: namespaced before
/// cluster-scoped whatever the priorities, then the highest priority, then the name
/// ascending (then the namespace, only to stay deterministic). `None` when there are
/// no candidates.
///
/// The caller passes only policies that select the object, and namespaced ones only
/// from the object's own namespace (see [`PlacementPolicy::selects`]); `choose` does
/// not look at selectors.
pub fn choose<'a>(mut candidates: Vec<Candidate<'a>>) -> Option<Choice<'a>> {
    candidates.sort_by(|a, b| {
        a.scope
            .rank()
            .cmp(&b.scope.rank())
            .then(b.priority.cmp(&a.priority))
            .then(a.name.cmp(b.name))
            .then(a.namespace.cmp(&b.namespace))
    });
    let mut rest = candidates.into_iter();
    let winner = rest.next()?;
    let ties = rest
        .take_while(|c| c.scope == winner.scope && c.priority == winner.priority)
        .map(|c| c.name)
        .collect();
    Some(Choice { winner, ties })
}

impl ClusterPlacementPolicy {
    /// Whether this policy selects the object (any namespace, or none).
    pub fn selects(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.spec
            .body
            .selects(api_version, kind, namespace, name, labels)
    }

    /// Every problem with the spec; see [`PolicyBody::validate`].
    pub fn validate(&self) -> Vec<String> {
        self.spec.body.validate()
    }
}

impl PlacementPolicy {
    /// Whether this policy selects the object: only objects in the policy's own
    /// namespace, and then as its selectors say.
    pub fn selects(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        namespace.is_some()
            && namespace == self.metadata.namespace.as_deref()
            && self
                .spec
                .body
                .selects(api_version, kind, namespace, name, labels)
    }

    /// Every problem with the spec (see [`PolicyBody::validate`]), plus selectors
    /// naming another namespace, which can never match.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.spec.body.validate();
        let own = self.metadata.namespace.as_deref().unwrap_or_default();
        for (i, s) in self.spec.body.resource_selectors.iter().enumerate() {
            if let Some(ns) = given(&s.namespace).filter(|ns| *ns != own) {
                problems.push(format!(
                    "spec.resourceSelectors[{i}].namespace: \"{ns}\" is not the policy's namespace \"{own}\"; this selector never matches"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// The example from the design notes, as users write it.
    fn example() -> Value {
        json!({
            "resourceSelectors": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web",
                "labelSelector": {
                    "matchLabels": {"tier": "web"},
                    "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]
                }
            }],
            "priority": 10,
            "select": {"plugin": "label-selector", "settings": {"regions": ["europe-west1", "asia-east1"]}},
            "distribute": {
                "plugin": "weighted-spread",
                "preferences": {"rebalance": true, "clusters": {"*": {"weight": 1}}},
                "settings": {}
            },
            "rank": {"plugin": "nearest-healthy", "settings": {}},
            "customize": {"plugin": "region-mirror", "settings": {"mirrors": {"asia-east1": "mirror.asia.example"}}},
            "overrides": [{
                "clusters": {"names": [], "regions": ["asia-east1"], "zones": [], "labelSelector": {"matchLabels": {}}},
                "patch": [{"op": "replace", "path": "/spec/template/spec/containers/0/image",
                           "value": "mirror.asia.example/nginx:1.27"}]
            }]
        })
    }

    #[test]
    fn label_selector_table() {
        let web_prod = labels(&[("tier", "web"), ("env", "prod")]);
        let cases: Vec<(LabelSelector, &BTreeMap<String, String>, bool, &str)> = vec![
            (
                LabelSelector::default(),
                &web_prod,
                true,
                "empty matches all",
            ),
            (
                LabelSelector {
                    match_labels: labels(&[("tier", "web")]),
                    ..Default::default()
                },
                &web_prod,
                true,
                "matchLabels hit",
            ),
            (
                LabelSelector {
                    match_labels: labels(&[("tier", "db")]),
                    ..Default::default()
                },
                &web_prod,
                false,
                "matchLabels wrong value",
            ),
            (
                LabelSelector {
                    match_labels: labels(&[("team", "a")]),
                    ..Default::default()
                },
                &web_prod,
                false,
                "matchLabels missing key",
            ),
        ];
        let exprs: Vec<(LabelSelectorRequirement, bool, &str)> = vec![
            (expr("env", "In", &["prod", "qa"]), true, "In hit"),
            (expr("env", "In", &["qa"]), false, "In miss"),
            (expr("zone", "In", &["a"]), false, "In absent key"),
            (expr("env", "NotIn", &["qa"]), true, "NotIn hit"),
            (expr("env", "NotIn", &["prod"]), false, "NotIn miss"),
            (
                expr("zone", "NotIn", &["a"]),
                true,
                "NotIn absent key holds",
            ),
            (expr("env", "Exists", &[]), true, "Exists"),
            (expr("zone", "Exists", &[]), false, "Exists absent"),
            (expr("zone", "DoesNotExist", &[]), true, "DoesNotExist"),
            (
                expr("env", "DoesNotExist", &[]),
                false,
                "DoesNotExist present",
            ),
            (
                expr("env", "Like", &["prod"]),
                false,
                "unknown operator matches nothing",
            ),
            (
                expr("env", "NotIn", &[]),
                false,
                "NotIn without values matches nothing",
            ),
            (
                expr("env", "Exists", &["prod"]),
                false,
                "Exists with values matches nothing",
            ),
            (
                expr("zone", "DoesNotExist", &["a"]),
                false,
                "DoesNotExist with values matches nothing",
            ),
            (
                expr("", "DoesNotExist", &[]),
                false,
                "empty key matches nothing",
            ),
        ];
        for (selector, l, want, what) in cases {
            assert_eq!(selector.matches(l), want, "{what}");
        }
        for (e, want, what) in exprs {
            let selector = LabelSelector {
                match_labels: labels(&[("tier", "web")]),
                match_expressions: vec![e],
            };
            assert_eq!(selector.matches(&web_prod), want, "{what}");
        }
    }

    #[test]
    fn resource_selector_table() {
        let sel: ResourceSelector = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop",
            "labelSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}
        }))
        .unwrap();
        let web = labels(&[("tier", "web")]);
        let none = BTreeMap::new();
        let cases = [
            (
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                &web,
                true,
                "all match",
            ),
            (
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                &none,
                false,
                "labels miss",
            ),
            (
                "apps/v1beta1",
                "Deployment",
                Some("shop"),
                "web",
                &web,
                false,
                "version differs",
            ),
            (
                "apps/v1",
                "StatefulSet",
                Some("shop"),
                "web",
                &web,
                false,
                "kind differs",
            ),
            (
                "apps/v1",
                "deployment",
                Some("shop"),
                "web",
                &web,
                false,
                "kind is case-sensitive",
            ),
            (
                "apps/v1",
                "Deployment",
                Some("blog"),
                "web",
                &web,
                false,
                "other namespace",
            ),
            (
                "apps/v1",
                "Deployment",
                None,
                "web",
                &web,
                false,
                "cluster-scoped object",
            ),
        ];
        for (v, k, ns, n, l, want, what) in cases {
            assert_eq!(sel.matches(v, k, ns, n, l), want, "{what}");
        }

        let group_only = ResourceSelector {
            api_version: Some("apps".into()),
            kind: "Deployment".into(),
            ..Default::default()
        };
        assert!(!group_only.matches("apps/v1", "Deployment", Some("shop"), "web", &none));

        let kind_only = ResourceSelector {
            kind: "Deployment".into(),
            name: Some("web".into()),
            namespace: Some(String::new()),
            ..Default::default()
        };
        assert!(kind_only.matches("apps/v1", "Deployment", Some("any"), "web", &none));
        assert!(kind_only.matches("apps/v1", "Deployment", None, "web", &none));
        assert!(!kind_only.matches("apps/v1", "Deployment", Some("any"), "api", &none));

        let no_kind = ResourceSelector::default();
        assert!(!no_kind.matches("v1", "", None, "x", &none));
        assert_eq!(
            no_kind.validate(),
            vec!["resourceSelector.kind: must not be empty (a selector matches one kind, e.g. Deployment)"]
        );

        let broken = ResourceSelector {
            kind: "Deployment".into(),
            label_selector: Some(LabelSelector {
                match_expressions: vec![expr("tier", "In", &[])],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!broken.matches("apps/v1", "Deployment", Some("shop"), "web", &web));
        assert_eq!(
            broken.validate(),
            vec!["resourceSelector.labelSelector.matchExpressions[0]: operator In needs at least one value"]
        );
    }

    #[test]
    fn empty_selector_list_selects_nothing() {
        let body = PolicyBody::default();
        assert!(!body.selects("v1", "ConfigMap", Some("shop"), "x", &BTreeMap::new()));
    }

    fn namespaced(ns: &str, name: &str, body: Value) -> PlacementPolicy {
        let mut p = PlacementPolicy::new(name, serde_json::from_value(body).unwrap());
        p.metadata.namespace = Some(ns.into());
        p
    }

    #[test]
    fn namespaced_policy_scoping() {
        let none = BTreeMap::new();
        let p = namespaced(
            "shop",
            "web",
            json!({"resourceSelectors": [{"kind": "Deployment"}]}),
        );
        assert!(p.selects("apps/v1", "Deployment", Some("shop"), "web", &none));
        assert!(!p.selects("apps/v1", "Deployment", Some("blog"), "web", &none));
        assert!(!p.selects(
            "rbac.authorization.k8s.io/v1",
            "Deployment",
            None,
            "web",
            &none
        ));
        assert!(p.validate().is_empty());

        let elsewhere = namespaced(
            "shop",
            "web",
            json!({"resourceSelectors": [{"kind": "Deployment", "namespace": "blog"}]}),
        );
        assert!(!elsewhere.selects("apps/v1", "Deployment", Some("shop"), "web", &none));
        assert!(!elsewhere.selects("apps/v1", "Deployment", Some("blog"), "web", &none));
        assert_eq!(
            elsewhere.validate(),
            vec!["spec.resourceSelectors[0].namespace: \"blog\" is not the policy's namespace \"shop\"; this selector never matches"]
        );

        let cluster = ClusterPlacementPolicy::new(
            "all",
            serde_json::from_value(json!({"resourceSelectors": [{"kind": "Deployment"}]})).unwrap(),
        );
        assert!(cluster.selects("apps/v1", "Deployment", Some("blog"), "web", &none));
        assert!(cluster.selects("apps/v1", "Deployment", Some("shop"), "web", &none));
    }

    #[test]
    fn cluster_selection_table() {
        let gpu = labels(&[("gpu", "true")]);
        let none = BTreeMap::new();
        let asia: ClusterSelection = serde_json::from_value(json!({
            "regions": ["asia-east1"], "zones": [], "labelSelector": {"matchLabels": {}}
        }))
        .unwrap();
        assert!(asia.matches("tokyo", "asia-east1", "asia-east1-a", &none));
        assert!(!asia.matches("paris", "europe-west1", "europe-west1-b", &none));
        assert!(!asia.matches("unknown", "", "", &none));
        assert!(ClusterSelection::default().matches("unknown", "", "", &none));

        let named_gpu: ClusterSelection = serde_json::from_value(json!({
            "names": ["tokyo", "osaka"], "zones": ["asia-east1-a"],
            "labelSelector": {"matchLabels": {"gpu": "true"}}
        }))
        .unwrap();
        assert!(named_gpu.matches("tokyo", "asia-east1", "asia-east1-a", &gpu));
        assert!(!named_gpu.matches("tokyo", "asia-east1", "asia-east1-a", &none));
        assert!(!named_gpu.matches("tokyo", "asia-east1", "asia-east1-b", &gpu));
        assert!(!named_gpu.matches("paris", "asia-east1", "asia-east1-a", &gpu));
    }

    fn cand<'a>(scope: Scope, name: &'a str, priority: i32, body: &'a PolicyBody) -> Candidate<'a> {
        Candidate {
            scope,
            name,
            namespace: (scope == Scope::Namespaced).then_some("shop"),
            priority,
            body,
        }
    }

    #[test]
    fn precedence() {
        let b = PolicyBody::default();
        assert_eq!(choose(vec![]), None);

        // Namespaced beats cluster-scoped whatever the priorities.
        let c = choose(vec![
            cand(Scope::Cluster, "a-global", 1000, &b),
            cand(Scope::Namespaced, "z-local", -5, &b),
        ])
        .unwrap();
        assert_eq!(c.winner.name, "z-local");
        assert_eq!(c.winner.policy_ref(), "PlacementPolicy/shop/z-local");
        assert!(c.ties.is_empty());

        // Then the higher priority.
        let c = choose(vec![
            cand(Scope::Cluster, "a", 1, &b),
            cand(Scope::Cluster, "b", 7, &b),
            cand(Scope::Cluster, "c", 3, &b),
        ])
        .unwrap();
        assert_eq!(c.winner.name, "b");
        assert!(c.ties.is_empty());

        // Then the name, reporting the ties of the same scope and priority only.
        let c = choose(vec![
            cand(Scope::Cluster, "delta", 5, &b),
            cand(Scope::Cluster, "bravo", 5, &b),
            cand(Scope::Cluster, "charlie", 5, &b),
            cand(Scope::Cluster, "alpha", 4, &b),
        ])
        .unwrap();
        assert_eq!(c.winner.name, "bravo");
        assert_eq!(c.winner.policy_ref(), "ClusterPlacementPolicy/bravo");
        assert_eq!(c.ties, vec!["charlie", "delta"]);

        // A cluster-scoped policy of equal priority is no tie for a namespaced winner.
        let c = choose(vec![
            cand(Scope::Cluster, "global", 0, &b),
            cand(Scope::Namespaced, "local", 0, &b),
        ])
        .unwrap();
        assert_eq!(c.winner.name, "local");
        assert!(c.ties.is_empty());
    }

    #[test]
    fn candidates_from_objects() {
        let p = namespaced(
            "shop",
            "web",
            json!({"priority": 3, "resourceSelectors": [{"kind": "Deployment"}]}),
        );
        let g = ClusterPlacementPolicy::new("global", PolicyBody::default().into());
        let c = choose(vec![Candidate::cluster(&g), Candidate::namespaced(&p)]).unwrap();
        assert_eq!(c.winner.policy_ref(), "PlacementPolicy/shop/web");
        assert_eq!(c.winner.priority, 3);
        assert_eq!(c.winner.body.resource_selectors[0].kind, "Deployment");
        assert_eq!(
            policy_ref(Scope::Cluster, None, "x"),
            "ClusterPlacementPolicy/x"
        );
        assert_eq!(
            policy_ref(Scope::Namespaced, None, "x"),
            "PlacementPolicy/x"
        );
    }

    #[test]
    fn example_round_trips() {
        let spec: PlacementPolicySpec = serde_json::from_value(example()).unwrap();
        let body = &spec.body;
        assert_eq!(body.priority, 10);
        assert_eq!(
            body.resource_selectors[0].api_version.as_deref(),
            Some("apps/v1")
        );
        assert_eq!(
            body.select.as_ref().unwrap().plugin.as_deref(),
            Some("label-selector")
        );
        assert_eq!(
            body.select.as_ref().unwrap().settings_json(),
            r#"{"regions":["europe-west1","asia-east1"]}"#
        );
        assert_eq!(body.rank.as_ref().unwrap().settings_json(), "{}");
        assert_eq!(PluginRef::default().settings_json(), "");
        assert_eq!(body.overrides[0].clusters.regions, vec!["asia-east1"]);
        assert!(body.validate().is_empty(), "{:?}", body.validate());

        // Back to JSON: the same document, minus the empty lists and maps.
        let mut expected = example();
        let clusters = &mut expected["overrides"][0]["clusters"];
        *clusters = json!({"regions": ["asia-east1"], "labelSelector": {}});
        assert_eq!(serde_json::to_value(&spec).unwrap(), expected);

        // Both kinds read the same spec.
        let cluster: ClusterPlacementPolicySpec = serde_json::from_value(example()).unwrap();
        assert_eq!(&cluster.body, body);

        // Priority defaults to 0 and is always written, for the printer column.
        let minimal: PolicyBody = serde_json::from_value(json!({})).unwrap();
        assert_eq!(minimal.priority, 0);
        assert_eq!(
            serde_json::to_value(&minimal).unwrap(),
            json!({"priority": 0})
        );

        let status = PolicyStatus {
            governed: Some(2),
            conflicts: Some(vec!["other".into()]),
            observed_generation: Some(4),
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"governed": 2, "conflicts": ["other"], "observedGeneration": 4})
        );
    }

    #[test]
    fn validate_messages() {
        let body: PolicyBody = serde_json::from_value(json!({
            "resourceSelectors": [
                {"kind": "Deployment"},
                {"kind": "", "labelSelector": {"matchExpressions": [
                    {"key": "tier", "operator": "Like", "values": ["web"]},
                    {"key": "", "operator": "Exists"}
                ]}}
            ],
            "overrides": [
                {"patch": [{"op": "replace", "path": "/spec/replicas", "value": 1}]},
                {
                    "clusters": {"labelSelector": {"matchExpressions": [{"key": "gpu", "operator": "NotIn"}]}},
                    "patch": [
                        {"op": "upsert", "path": "/spec"},
                        {"op": "add", "value": 1},
                        {"op": "replace", "path": "spec/replicas"},
                        {"op": "test", "path": "/a"},
                        {"op": "move", "path": "/b"},
                        {"op": "copy", "path": "/b", "from": "a"},
                        {"op": "remove", "path": "/c"},
                        {"path": "/d"},
                        {"op": 3, "path": "/e"},
                        "replace"
                    ]
                }
            ]
        }))
        .unwrap();
        let o = "spec.overrides[1]";
        let expected = vec![
            "spec.resourceSelectors[1].kind: must not be empty (a selector matches one kind, e.g. Deployment)".to_string(),
            "spec.resourceSelectors[1].labelSelector.matchExpressions[0].operator: \"Like\" is not one of In, NotIn, Exists, DoesNotExist".into(),
            "spec.resourceSelectors[1].labelSelector.matchExpressions[1].key: must not be empty".into(),
            format!("{o}.clusters.labelSelector.matchExpressions[0]: operator NotIn needs at least one value"),
            format!("{o}.patch[0]: op \"upsert\" is not an RFC 6902 operation (add, remove, replace, move, copy, test)"),
            format!("{o}.patch[1]: missing \"path\""),
            format!("{o}.patch[2]: path \"spec/replicas\" must start with \"/\" (a JSON pointer such as /spec/replicas)"),
            format!("{o}.patch[2]: op \"replace\" needs a \"value\""),
            format!("{o}.patch[3]: op \"test\" needs a \"value\""),
            format!("{o}.patch[4]: missing \"from\""),
            format!("{o}.patch[5]: from \"a\" must start with \"/\" (a JSON pointer such as /spec/replicas)"),
            format!("{o}.patch[7]: missing \"op\""),
            format!("{o}.patch[8]: op 3 is not a string"),
            format!("{o}.patch[9]: must be an object like {{\"op\": \"replace\", \"path\": \"/...\", \"value\": ...}}"),
        ];
        assert_eq!(body.validate(), expected);
        assert!(body.validate()[4]
            .starts_with("spec.overrides[1].patch[0]: op \"upsert\" is not an RFC 6902 operation"));

        let err = PolicyError::Invalid {
            policy: policy_ref(Scope::Cluster, None, "x"),
            problems: body.validate()[..2].to_vec(),
        };
        assert!(err.to_string().starts_with(
            "placement policy ClusterPlacementPolicy/x is invalid: spec.resourceSelectors[1].kind"
        ));
    }

    /// Walks a schema node, collecting what makes it non-structural: a node without
    /// `type` (unless it preserves unknown fields), or `$ref`/`allOf`/`anyOf`/`oneOf`
    /// /`not` anywhere (kube's rewriter should have inlined them).
    fn structural_problems(node: &Value, at: &str, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else {
            problems.push(format!("{at}: not an object"));
            return;
        };
        for banned in [
            "$ref",
            "allOf",
            "anyOf",
            "oneOf",
            "not",
            "definitions",
            "$defs",
        ] {
            if obj.contains_key(banned) {
                problems.push(format!("{at}: has {banned}"));
            }
        }
        let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if !obj.contains_key("type") && !preserves {
            problems.push(format!("{at}: no type"));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            if obj.get("type") != Some(&json!("object")) {
                problems.push(format!("{at}: properties on a non-object"));
            }
            for (name, prop) in props {
                structural_problems(prop, &format!("{at}.{name}"), problems);
            }
        }
        if let Some(items) = obj.get("items") {
            structural_problems(items, &format!("{at}[]"), problems);
        }
        if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
            structural_problems(extra, &format!("{at}{{}}"), problems);
        }
    }

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let v = serde_json::to_value(crd).unwrap();
        v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn crds_are_structural_and_preserve_free_form_fields() {
        for (crd, scope, short) in [
            (ClusterPlacementPolicy::crd(), "Cluster", "cpp"),
            (PlacementPolicy::crd(), "Namespaced", "pp"),
        ] {
            let v = serde_json::to_value(&crd).unwrap();
            if std::env::var_os("PRINT_CRD").is_some() {
                println!("{}", serde_json::to_string_pretty(&v).unwrap());
            }
            assert_eq!(v["spec"]["group"], "fedwasm.io");
            assert_eq!(v["spec"]["scope"], scope);
            assert_eq!(v["spec"]["names"]["shortNames"], json!([short]));
            let version = &v["spec"]["versions"][0];
            assert_eq!(version["name"], "v1alpha1");
            assert_eq!(version["subresources"]["status"], json!({}));
            let columns: Vec<(&str, &str, &str)> = version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap(),
                        c["type"].as_str().unwrap(),
                        c["jsonPath"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                columns,
                vec![
                    ("Priority", "integer", ".spec.priority"),
                    ("Governed", "integer", ".status.governed"),
                    ("Age", "date", ".metadata.creationTimestamp"),
                ]
            );

            let schema = schema_of(&crd);
            let mut problems = Vec::new();
            structural_problems(&schema, "openAPIV3Schema", &mut problems);
            assert!(problems.is_empty(), "{problems:#?}");

            let spec = &schema["properties"]["spec"]["properties"];
            for field in [
                "resourceSelectors",
                "priority",
                "select",
                "distribute",
                "rank",
                "customize",
                "overrides",
            ] {
                assert!(
                    spec.get(field).is_some(),
                    "spec.{field} missing from the schema"
                );
            }
            assert_eq!(spec["priority"]["default"], json!(0));
            let preserved = json!(true);
            for hook in ["select", "distribute", "rank", "customize"] {
                let settings = &spec[hook]["properties"]["settings"];
                assert_eq!(
                    settings["x-kubernetes-preserve-unknown-fields"], preserved,
                    "{hook}"
                );
            }
            let prefs = &spec["distribute"]["properties"]["preferences"];
            assert_eq!(prefs["x-kubernetes-preserve-unknown-fields"], preserved);
            let op = &spec["overrides"]["items"]["properties"]["patch"]["items"];
            assert_eq!(op["x-kubernetes-preserve-unknown-fields"], preserved);
            let selector = &spec["resourceSelectors"]["items"];
            assert_eq!(selector["required"], json!(["kind"]));

            let status = &schema["properties"]["status"]["properties"];
            assert_eq!(status["governed"]["type"], "integer");
            assert_eq!(status["conflicts"]["type"], "array");
            assert_eq!(status["observedGeneration"]["type"], "integer");
        }
    }
}
