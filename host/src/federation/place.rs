//! Where an object goes: the select hook picks members, the distribute hook splits
//! the replicas of replica kinds. Nothing here talks to a member: a member that hangs
//! cannot hold up a decision.

use std::collections::BTreeMap;
use std::sync::Arc;

use fedwasm_sdk::{
    ClusterInfo, CustomizeRequest, DistributeRequest, Hook, ObjectRef, Preferences, SelectRequest,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef as StoreRef, Store};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::controller::{key, Context};
use super::kinds::{member_body, namespace_propagated, with_template_hash, Kind};
use super::policies::{choice, Applied, PolicySet};
use super::{events, Error, DISTRIBUTE_PLUGIN_ANNOTATION, PLACEMENT_ANNOTATION};
use super::{PREFERENCES_ANNOTATION, SELECT_PLUGIN_ANNOTATION};
use crate::fleet::{Member, Snapshot};
use crate::overrides::{apply_overrides, Override};
use crate::placer::Placer;
use crate::runtime::{default_plugin, preference_warnings};

/// The decision for one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Placement {
    /// Members that get the object, highest score first.
    pub selected: Vec<String>,
    /// Replica kinds: replicas per selected member (absent = 0).
    pub replicas: Option<BTreeMap<String, u32>>,
    /// The placement policy that governs the object, if one does: its overrides
    /// and customize hook shape each member's copy.
    pub policy: Option<Applied>,
}

impl Placement {
    /// Per member holding the object, its replicas (1 for kinds without replicas):
    /// the shape previews and shadow differences are told in.
    pub fn per_cluster(&self) -> BTreeMap<String, u32> {
        self.selected
            .iter()
            .map(|c| {
                let n = match &self.replicas {
                    Some(plan) => plan.get(c).copied().unwrap_or(0),
                    None => 1,
                };
                (c.clone(), n)
            })
            .collect()
    }
}

/// Something the object's owner should know about its decision (an event).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Warning {
    pub reason: &'static str,
    pub note: String,
}

/// What a decision needs besides the object and the members: the plugins, the
/// federation plane (to read the object's Namespace) and the kind. Nothing here
/// writes, so a preview and a shadow decide exactly as the controller does.
#[derive(Clone, Copy)]
pub(crate) struct Decider<'a> {
    pub placer: &'a Placer,
    pub federation: &'a Client,
    pub kind: &'a Kind,
    /// The federation plane's Namespaces, kept by a watch; without it (or before it
    /// has a Namespace), the Namespace is read from the plane.
    pub namespaces: Option<&'a Store<Namespace>>,
    /// The placement policies; none: the objects' annotations alone decide.
    pub policies: Option<&'a PolicySet>,
}

pub(crate) fn annotation<'a>(obj: &'a DynamicObject, name: &str) -> Option<&'a str> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// Decides the object's placement, publishes what its owner should know as
/// events, and asks the shadow plugins (if any) in the background.
pub(crate) async fn place(
    ctx: &Arc<Context>,
    obj: &DynamicObject,
    snapshot: &Snapshot,
) -> Result<Placement, Error> {
    let policies = ctx.shared.policies.set();
    let decider = Decider {
        placer: &ctx.shared.placer,
        federation: &ctx.shared.federation,
        kind: &ctx.kind,
        namespaces: Some(&ctx.shared.namespaces),
        policies: Some(&policies),
    };
    let mut warnings = Vec::new();
    let applied = decider.policy(obj);
    ctx.shared
        .policies
        .record(&ctx.kind, key(obj), applied.as_ref());
    let decided = decider
        .decide_governed(obj, &snapshot.members, &mut warnings, applied.clone())
        .await;
    for Warning { reason, note } in warnings {
        events::publish(ctx, obj, EventType::Warning, reason, note).await;
    }
    if let (Err(e @ (Error::InvalidPolicy { .. } | Error::Plugin(_))), Some(policy)) =
        (&decided, &applied)
    {
        // The policy's author should know too: its settings or its spec are
        // the likely cause.
        let note = format!(
            "{} {}: {e}; its members left as they were",
            ctx.kind.resource.kind,
            key(obj)
        );
        events::publish_about(
            &ctx.shared,
            policy.object_reference(),
            EventType::Warning,
            "PlacementFailed",
            note,
        )
        .await;
    }
    let placement = decided?;
    crate::shadow::compare_in_background(ctx, obj, snapshot, &placement);
    Ok(placement)
}

/// What `kubectl apply` keeps of the last configuration it applied: for a Secret,
/// its data. Plugins never see it.
pub(crate) const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The annotations a plugin sees: all but [`LAST_APPLIED_ANNOTATION`].
pub(crate) fn plugin_annotations(obj: &(impl ResourceExt + ?Sized)) -> BTreeMap<String, String> {
    obj.annotations()
        .iter()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Decider<'_> {
    /// Selects members and, for replica kinds, splits the replicas. Warnings are
    /// pushed as they arise, also when the decision then fails.
    pub async fn decide(
        &self,
        obj: &DynamicObject,
        members: &[Member],
        warnings: &mut Vec<Warning>,
    ) -> Result<Placement, Error> {
        let applied = self.policy(obj);
        self.decide_governed(obj, members, warnings, applied).await
    }

    /// The placement policy that governs `obj`, if any.
    pub fn policy(&self, obj: &DynamicObject) -> Option<Applied> {
        self.policies.and_then(|p| p.resolve(self.kind, obj))
    }

    /// [`Decider::decide`] under the policy `applied` (already resolved).
    pub async fn decide_governed(
        &self,
        obj: &DynamicObject,
        members: &[Member],
        warnings: &mut Vec<Warning>,
        applied: Option<Applied>,
    ) -> Result<Placement, Error> {
        if let Some(policy) = &applied {
            usable(policy)?;
            if !policy.ties.is_empty() {
                warnings.push(Warning {
                    reason: "PolicyConflict",
                    note: format!(
                        "{} governs it, chosen by name over {} (same scope and priority)",
                        policy.reference,
                        policy.ties.join(", ")
                    ),
                });
            }
        }
        let mut selected = self
            .select(&self.kind.resource.kind, obj, members, applied.as_ref())
            .await?;
        if let Some(allowed) = self.namespace_selection(obj, members).await? {
            selected.retain(|c| allowed.contains(c));
        }
        let replicas = if self.kind.replicas {
            Some(
                self.distribute(obj, &selected, members, warnings, applied.as_ref())
                    .await?,
            )
        } else {
            None
        };
        Ok(Placement {
            selected,
            replicas,
            policy: applied,
        })
    }

    /// The plugins a decision for `obj` asks, by name (the hooks' defaults
    /// included): those a shadow or a preview may stand in for.
    pub async fn plugins_asked(&self, obj: &DynamicObject) -> Vec<String> {
        let applied = self.policy(obj);
        let mut names = vec![hook_choice(Hook::Select, obj, applied.as_ref()).0];
        if let Ok(Some(namespace)) = self.federated_namespace(obj).await {
            let governing = self.namespace_policy(&namespace);
            names.push(hook_choice(Hook::Select, &namespace, governing.as_ref()).0);
        }
        if self.kind.replicas {
            names.push(hook_choice(Hook::Distribute, obj, applied.as_ref()).0);
        }
        names.sort();
        names.dedup();
        names
    }

    /// The placement policy that governs a federated Namespace, if any.
    fn namespace_policy(&self, namespace: &Namespace) -> Option<Applied> {
        let resource = ApiResource::erase::<Namespace>(&());
        self.policies
            .and_then(|p| p.resolve_as(&resource, false, namespace))
    }

    async fn select(
        &self,
        kind: &str,
        obj: &(impl ResourceExt + ?Sized),
        members: &[Member],
        applied: Option<&Applied>,
    ) -> Result<Vec<String>, Error> {
        let (plugin, settings) = hook_choice(Hook::Select, obj, applied);
        let request = SelectRequest {
            object: ObjectRef {
                kind: kind.to_string(),
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
                labels: obj.labels().clone().into_iter().collect(),
                annotations: plugin_annotations(obj),
            },
            clusters: members.iter().map(|m| m.cluster.to_info()).collect(),
            settings,
        };
        let chosen = self.placer.select(Some(plugin), request).await?;
        Ok(chosen.into_iter().map(|s| s.cluster).collect())
    }

    /// The object's federated Namespace, if it has one.
    async fn federated_namespace(&self, obj: &DynamicObject) -> Result<Option<Namespace>, Error> {
        let Some(ns) = obj
            .metadata
            .namespace
            .as_deref()
            .filter(|_| self.kind.namespaced)
        else {
            return Ok(None);
        };
        if !namespace_propagated(ns) {
            return Ok(None);
        }
        if let Some(cached) = self
            .namespaces
            .and_then(|store| store.get(&StoreRef::new(ns)))
        {
            return Ok(Some(cached.as_ref().clone()));
        }
        let api: Api<Namespace> = Api::all(self.federation.clone());
        api.get_opt(ns)
            .await
            .map_err(|e| Error::federation("reading the object's Namespace", e))
    }

    /// Where the object's federated Namespace goes, if it has one: its objects go
    /// nowhere else, so deselecting a namespace from a member takes fedwasm's
    /// objects in it away too (and never re-creates the namespace there).
    async fn namespace_selection(
        &self,
        obj: &DynamicObject,
        members: &[Member],
    ) -> Result<Option<Vec<String>>, Error> {
        let Some(namespace) = self.federated_namespace(obj).await? else {
            return Ok(None);
        };
        if namespace.metadata.deletion_timestamp.is_some() {
            return Ok(Some(Vec::new()));
        }
        let governing = self.namespace_policy(&namespace);
        if let Some(policy) = &governing {
            usable(policy)?;
        }
        self.select("Namespace", &namespace, members, governing.as_ref())
            .await
            .map(Some)
    }

    /// The replicas of each selected member, from the distribute hook.
    async fn distribute(
        &self,
        obj: &DynamicObject,
        selected: &[String],
        members: &[Member],
        warnings: &mut Vec<Warning>,
        applied: Option<&Applied>,
    ) -> Result<BTreeMap<String, u32>, Error> {
        let total = obj
            .data
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .min(u64::from(u32::MAX)) as u32;
        // The object's own preferences win over its policy's.
        let preferences = match annotation(obj, PREFERENCES_ANNOTATION) {
            Some(text) => Some(parse_preferences(text)?),
            None => applied.and_then(|p| p.preferences.clone()),
        };
        let (plugin, settings) = hook_choice(Hook::Distribute, obj, applied);
        // Replicas go to the selected members that are Ready; one that is away
        // keeps the object (it converges when back) but its replicas run elsewhere
        // meanwhile, as with the original federation. With no member ready, spread
        // as selected.
        let ready: Vec<String> = selected
            .iter()
            .filter(|name| {
                members
                    .iter()
                    .any(|m| &m.name() == *name && m.cluster.is_ready())
            })
            .cloned()
            .collect();
        let candidates = if ready.is_empty() {
            selected.to_vec()
        } else {
            ready
        };
        let mut request = DistributeRequest {
            object: key(obj),
            total_replicas: total,
            clusters: selected.to_vec(),
            preferences,
            current: current_replicas(obj, &candidates),
            capacity: members
                .iter()
                .filter(|m| candidates.contains(&m.name()))
                .filter_map(|m| Some((m.name(), m.cluster.capacity()?)))
                .collect(),
            settings,
        };
        // Warn about names that match no selected cluster, not about members away.
        for note in preference_warnings(&request) {
            warnings.push(Warning {
                reason: "UnknownCluster",
                note,
            });
        }
        request.clusters = candidates;
        let out = self.placer.distribute(Some(plugin), request).await?;
        if !out.overflow.is_empty() {
            warnings.push(Warning {
                reason: "Overflow",
                note: format!("replicas beyond the clusters' capacity: {:?}", out.overflow),
            });
        }
        Ok(out.plan)
    }
}

/// The member's copy as the governing policy shapes it for this member: the
/// overrides whose cluster selection takes the member, in order, then the patch of
/// the policy's customize plugin; then its template hash. All or nothing: the
/// reason when any of it fails, and then nothing is written.
pub(crate) async fn shaped(
    placer: &Placer,
    kind: &Kind,
    obj: &DynamicObject,
    cluster: ClusterInfo,
    replicas: Option<u32>,
    policy: Option<&Applied>,
) -> Result<Value, String> {
    let body = member_body(kind, obj, replicas);
    let Some(policy) = policy else {
        return Ok(with_template_hash(body));
    };
    let patches: Vec<Override<'_>> = policy
        .body()
        .overrides
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.clusters.matches(
                &cluster.name,
                &cluster.region,
                &cluster.zone,
                &cluster.labels,
            )
        })
        .map(|(i, o)| Override {
            source: format!("{} overrides[{i}]", policy.reference),
            ops: &o.patch,
        })
        .collect();
    let mut body = if patches.is_empty() {
        body
    } else {
        apply_overrides(&body, &patches).map_err(|e| e.to_string())?
    };
    if policy.body().customize.is_some() {
        let (plugin, settings) = hook_choice(Hook::Customize, obj, Some(policy));
        let request = CustomizeRequest {
            object: body.to_string(),
            cluster,
            settings,
        };
        let patch = placer
            .customize(Some(plugin.clone()), request)
            .await
            .map_err(|e| format!("{} spec.customize: {e}", policy.reference))?;
        body = apply_overrides(
            &body,
            &[Override {
                source: format!("plugin {plugin}"),
                ops: &patch,
            }],
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(with_template_hash(body))
}

/// A policy with problems places nothing: the members stay as they were.
fn usable(policy: &Applied) -> Result<(), Error> {
    if policy.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidPolicy {
            policy: policy.reference.clone(),
            problems: policy.problems.clone(),
        })
    }
}

/// The plugin (by name) and settings for one hook of `obj`: its annotation, else
/// its policy's choice, else the hook's default.
pub(crate) fn hook_choice(
    hook: Hook,
    obj: &(impl ResourceExt + ?Sized),
    applied: Option<&Applied>,
) -> (String, String) {
    let key = match hook {
        Hook::Select => Some(SELECT_PLUGIN_ANNOTATION),
        Hook::Distribute => Some(DISTRIBUTE_PLUGIN_ANNOTATION),
        Hook::Rank => Some(crate::routing::RANK_PLUGIN_ANNOTATION),
        // Only a policy names a customize plugin (with the settings it needs).
        Hook::Customize => None,
    };
    let annotation = key
        .and_then(|k| obj.annotations().get(k))
        .map(String::as_str);
    let chosen = applied.and_then(|p| p.body().hook(hook));
    match chosen {
        Some((plugin, settings)) => choice(hook, annotation, plugin, settings),
        None => (
            annotation.unwrap_or(default_plugin(hook)).to_string(),
            String::new(),
        ),
    }
}

/// Parses the preferences annotation, with the reason when it is not valid.
pub fn parse_preferences(text: &str) -> Result<Preferences, Error> {
    serde_json::from_str::<Preferences>(text).map_err(|e| Error::InvalidPreferences(e.to_string()))
}

/// The replicas fedwasm last gave each candidate, from the placement annotation it
/// wrote: what runs there now as far as placement is concerned, read without asking
/// a member (a member that hangs must not hold up the decision).
pub(crate) fn current_replicas(
    obj: &DynamicObject,
    candidates: &[String],
) -> BTreeMap<String, u32> {
    let Some(placement) =
        annotation(obj, PLACEMENT_ANNOTATION).and_then(|a| serde_json::from_str::<Value>(a).ok())
    else {
        return BTreeMap::new();
    };
    candidates
        .iter()
        .filter_map(|c| {
            let entry = placement.get(c)?;
            (entry.get("state")?.as_str()? == "Applied").then_some(())?;
            let n = entry.get("replicas")?.as_u64()?;
            Some((c.clone(), n.min(u64::from(u32::MAX)) as u32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(annotations: Value) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
            "spec": {"replicas": 6}}))
        .unwrap()
    }

    #[test]
    fn current_replicas_come_from_what_fedwasm_applied() {
        let placement = json!({"m1": {"state": "Applied", "replicas": 4},
            "m2": {"state": "Unreachable"}, "m3": {"state": "Applied", "replicas": 2}});
        let obj = object(json!({PLACEMENT_ANNOTATION: placement.to_string()}));
        let current = current_replicas(&obj, &["m1".into(), "m2".into()]);
        assert_eq!(current, BTreeMap::from([("m1".to_string(), 4)]));
        let garbled = object(json!({PLACEMENT_ANNOTATION: "{not json"}));
        assert!(current_replicas(&garbled, &["m1".into()]).is_empty());
    }

    #[test]
    fn plugins_never_see_the_last_applied_configuration() {
        let secret = object(json!({
            LAST_APPLIED_ANNOTATION: r#"{"data":{"password":"fedwasm-canary-token-XYZ"}}"#,
            "fedwasm.io/regions": "europe-west1"}));
        let seen = plugin_annotations(&secret);
        assert_eq!(
            seen,
            BTreeMap::from([("fedwasm.io/regions".to_string(), "europe-west1".to_string())])
        );
    }

    #[test]
    fn malformed_preferences_say_why() {
        let e = parse_preferences("{not json").unwrap_err();
        assert_eq!(e.kind(), "invalid_preferences");
        assert!(e.to_string().contains(PREFERENCES_ANNOTATION), "{e}");
        let e = parse_preferences(r#"{"clusters": {"a": {"weight": -1}}}"#).unwrap_err();
        assert!(e.to_string().contains("invalid value"), "{e}");
        let ok = parse_preferences(r#"{"rebalance": true, "clusters": {"*": {"weight": 1}}}"#);
        assert!(ok.unwrap().rebalance);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON shaped like the annotation, with wrong types, negative and huge
        /// numbers, nulls and unknown fields mixed in.
        fn preference_like() -> impl Strategy<Value = Value> {
            let number = prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                Just(Value::Null),
                ".{0,8}".prop_map(Value::from),
            ];
            let cluster = prop::collection::btree_map(
                prop_oneof![
                    Just("minReplicas"),
                    Just("maxReplicas"),
                    Just("weight"),
                    Just("x")
                ]
                .prop_map(str::to_string),
                number,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect()));
            let clusters = prop::collection::btree_map(".{0,6}", cluster, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()));
            (
                any::<Option<bool>>(),
                prop::option::of(clusters),
                any::<bool>(),
            )
                .prop_map(|(rebalance, clusters, extra)| {
                    let mut v = json!({});
                    if let Some(r) = rebalance {
                        v["rebalance"] = r.into();
                    }
                    if let Some(c) = clusters {
                        v["clusters"] = c;
                    }
                    if extra {
                        v["unknown"] = 1.into();
                    }
                    v
                })
        }

        proptest! {
            #[test]
            fn any_text_is_preferences_or_a_clear_error(text in ".{0,200}") {
                match parse_preferences(&text) {
                    Ok(_) => {}
                    Err(e) => {
                        prop_assert_eq!(e.kind(), "invalid_preferences");
                        prop_assert!(e.to_string().contains(PREFERENCES_ANNOTATION));
                    }
                }
            }

            #[test]
            fn annotation_shaped_json_is_preferences_or_a_clear_error(v in preference_like()) {
                match parse_preferences(&v.to_string()) {
                    Ok(p) => {
                        // What was accepted is what was written.
                        for (name, pref) in &p.clusters {
                            let written = &v["clusters"][name];
                            prop_assert_eq!(
                                u64::from(pref.weight),
                                written.get("weight").and_then(Value::as_u64).unwrap_or(0)
                            );
                        }
                    }
                    Err(e) => prop_assert_eq!(e.kind(), "invalid_preferences"),
                }
            }
        }
    }
}
