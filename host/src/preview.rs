//! Preview: what a candidate plugin would change if it replaced a serving one,
//! for every federated object, with the inputs the running host uses (members as
//! their Cluster objects show them, preferences, the replicas fedwasm last
//! applied). Nothing is written: the decision is made by the controller's own
//! [`Decider`] over a placer that serves the candidate under the replaced name.
//!
//! "Before" is where each object is now, from the placement fedwasm recorded on
//! it (`fedwasm.io/placement`, members where it was applied); "after" is the
//! candidate's decision. For kinds without replicas both map each cluster holding
//! the object to 1.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::federation::kinds::Kind;
use crate::federation::{key, shaped, Decider, Placement, PolicySet, PLACEMENT_ANNOTATION};
use crate::fleet::Member;
use crate::placer::Placer;

/// Decisions made at once at most (each may call plugins and read a Namespace).
const CONCURRENCY: usize = 8;

/// The answer of `fedwasm preview --json` and `POST /preview`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Preview {
    /// Objects whose placement would change.
    pub changes: Vec<Change>,
    /// Objects the candidate would refuse or fail on (their members would be left
    /// as they are).
    pub errors: Vec<ObjectError>,
    /// How many objects were evaluated.
    pub evaluated: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub object: String,
    pub kind: String,
    pub before: BTreeMap<String, u32>,
    pub after: BTreeMap<String, u32>,
    /// Per member: the fields (JSON pointers) of its copy the candidate would
    /// change through the governing policy's customize hook; or why it could not
    /// shape the copy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copies: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectError {
    pub object: String,
    pub kind: String,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing {kind} in the federation plane: {source}")]
    List {
        kind: String,
        #[source]
        source: kube::Error,
    },
}

/// Evaluates every federated object of `kinds` with `placer`.
pub async fn preview(
    federation: &Client,
    placer: &Placer,
    members: &[Member],
    kinds: &[Kind],
) -> Result<Preview, Error> {
    let mut preview = Preview::default();
    let policies = PolicySet::list(federation)
        .await
        .map_err(|source| Error::List {
            kind: "placement policies".into(),
            source,
        })?;
    for kind in kinds {
        let api: Api<DynamicObject> = Api::all_with(federation.clone(), &kind.resource);
        let objects = api
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::List {
                kind: kind.resource.kind.clone(),
                source,
            })?;
        let decider = Decider {
            placer,
            federation,
            kind,
            namespaces: None,
            policies: Some(&policies),
        };
        let live = objects
            .items
            .into_iter()
            .filter(|o| !kind.skip(o) && o.metadata.deletion_timestamp.is_none());
        let mut decisions = futures::stream::iter(live)
            .map(|obj| async move {
                let mut warnings = Vec::new();
                let after = decider.decide(&obj, members, &mut warnings).await;
                (obj, after)
            })
            .buffered(CONCURRENCY);
        while let Some((obj, after)) = decisions.next().await {
            preview.evaluated += 1;
            let object = key(&obj);
            let kind = kind.resource.kind.clone();
            match after {
                Err(e) => preview.errors.push(ObjectError {
                    object,
                    kind,
                    error: e.to_string(),
                }),
                Ok(placement) => {
                    let before = applied(&obj, decider.kind.replicas);
                    let after = placement.per_cluster();
                    let copies =
                        copy_changes(placer, decider.kind, &obj, members, &placement).await;
                    if before != after || !copies.is_empty() {
                        preview.changes.push(Change {
                            object,
                            kind,
                            before,
                            after,
                            copies,
                        });
                    }
                }
            }
        }
    }
    Ok(preview)
}

/// Per member the candidate places the object in: what its copy would look like
/// differently, shaped by the governing policy (overrides and the customize hook)
/// with the serving plugins and with the candidate.
async fn copy_changes(
    candidate: &Placer,
    kind: &Kind,
    obj: &DynamicObject,
    members: &[Member],
    placement: &Placement,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(policy) = placement.policy.as_ref() else {
        return out;
    };
    if policy.body().customize.is_none() {
        // Declarative overrides do not depend on plugins.
        return out;
    }
    let serving = candidate.serving();
    for member in members
        .iter()
        .filter(|m| placement.selected.contains(&m.name()))
    {
        let cluster = member.name();
        let replicas = placement
            .replicas
            .as_ref()
            .map(|p| p.get(&cluster).copied().unwrap_or(0));
        let info = member.cluster.to_info();
        let now = shaped(&serving, kind, obj, info.clone(), replicas, Some(policy)).await;
        let then = shaped(candidate, kind, obj, info, replicas, Some(policy)).await;
        let changed = match (now, then) {
            (Ok(now), Ok(then)) => differing(&now, &then, String::new()),
            (Err(_), Ok(_)) => {
                vec!["(the serving plugins cannot shape it; the candidate can)".into()]
            }
            (_, Err(e)) => vec![format!("(the candidate cannot shape it: {e})")],
        };
        if !changed.is_empty() {
            out.insert(cluster, changed);
        }
    }
    out
}

/// The JSON pointers at which `a` and `b` differ (at most 20), the template hash
/// left out: it only says that something else differs.
fn differing(a: &Value, b: &Value, at: String) -> Vec<String> {
    const MOST: usize = 20;
    let mut out = Vec::new();
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                if k == crate::federation::TEMPLATE_HASH_ANNOTATION {
                    continue;
                }
                let path = format!("{at}/{}", escape(k));
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => out.extend(differing(p, q, path)),
                    _ => out.push(path),
                }
                if out.len() >= MOST {
                    break;
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                out.extend(differing(p, q, format!("{at}/{i}")));
                if out.len() >= MOST {
                    break;
                }
            }
        }
        _ if a != b => out.push(if at.is_empty() { "/".into() } else { at }),
        _ => {}
    }
    out.truncate(MOST);
    out
}

/// Where the object is now: the members fedwasm applied it to, with the replicas
/// it gave each (1 for kinds without replicas).
pub fn applied(obj: &DynamicObject, replicas: bool) -> BTreeMap<String, u32> {
    let Some(Value::Object(placement)) = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PLACEMENT_ANNOTATION))
        .and_then(|a| serde_json::from_str(a).ok())
    else {
        return BTreeMap::new();
    };
    placement
        .iter()
        .filter(|(_, e)| e.get("state").and_then(Value::as_str) == Some("Applied"))
        .map(|(cluster, e)| {
            let n = if replicas {
                e.get("replicas").and_then(Value::as_u64).unwrap_or(0)
            } else {
                1
            };
            (cluster.clone(), n.min(u64::from(u32::MAX)) as u32)
        })
        .collect()
}

impl Preview {
    /// Per cluster, the replicas and objects it would gain (negative: lose).
    pub fn moved(&self, replica_kinds: &[String]) -> BTreeMap<String, (i64, i64)> {
        let mut moved: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for change in &self.changes {
            let clusters = change.before.keys().chain(change.after.keys());
            for cluster in clusters.collect::<std::collections::BTreeSet<_>>() {
                let before = change.before.get(cluster);
                let after = change.after.get(cluster);
                let entry = moved.entry(cluster.clone()).or_default();
                if replica_kinds.contains(&change.kind) {
                    entry.0 += i64::from(after.copied().unwrap_or(0))
                        - i64::from(before.copied().unwrap_or(0));
                }
                entry.1 += i64::from(after.is_some()) - i64::from(before.is_some());
            }
        }
        moved.retain(|_, (r, o)| *r != 0 || *o != 0);
        moved
    }

    /// The report `fedwasm preview` prints.
    pub fn render(&self, candidate: &str, replaced: &str, replica_kinds: &[String]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "preview of {candidate} in place of `{replaced}`: {} object(s) evaluated, nothing written",
            self.evaluated
        );
        if self.changes.is_empty() {
            let _ = writeln!(out, "no change: every object would stay where it is");
        }
        for change in &self.changes {
            let _ = writeln!(out, "{} {}:", change.kind, change.object);
            let gains: Vec<&String> = change
                .after
                .keys()
                .filter(|c| !change.before.contains_key(*c))
                .collect();
            let losses: Vec<&String> = change
                .before
                .keys()
                .filter(|c| !change.after.contains_key(*c))
                .collect();
            if !gains.is_empty() {
                let _ = writeln!(out, "    gains   {}", join(&gains));
            }
            if !losses.is_empty() {
                let _ = writeln!(out, "    loses   {}", join(&losses));
            }
            if replica_kinds.contains(&change.kind) {
                let clusters: std::collections::BTreeSet<&String> =
                    change.before.keys().chain(change.after.keys()).collect();
                for cluster in clusters {
                    let before = change.before.get(cluster).copied().unwrap_or(0);
                    let after = change.after.get(cluster).copied().unwrap_or(0);
                    if before != after {
                        let _ = writeln!(out, "    {cluster:<24} {before} -> {after} replicas");
                    }
                }
            }
            for (cluster, fields) in &change.copies {
                let _ = writeln!(out, "    {cluster:<24} copy changes {}", fields.join(", "));
            }
        }
        let moved = self.moved(replica_kinds);
        if !moved.is_empty() {
            let _ = writeln!(out, "moved per cluster:");
            for (cluster, (replicas, objects)) in &moved {
                let _ = writeln!(
                    out,
                    "    {cluster:<24} {replicas:+} replicas, {objects:+} objects"
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(
                out,
                "{} object(s) the candidate would fail on (their members would stay as they are):",
                self.errors.len()
            );
            for e in &self.errors {
                let _ = writeln!(out, "    {} {}: {}", e.kind, e.object, e.error);
            }
        }
        let _ = writeln!(
            out,
            "{} object(s) would change, {} would fail",
            self.changes.len(),
            self.errors.len()
        );
        out
    }
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(placement: Value) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop",
                "annotations": {PLACEMENT_ANNOTATION: placement.to_string()}}}))
        .unwrap()
    }

    #[test]
    fn before_is_where_fedwasm_applied_it() {
        let obj = object(json!({"m1": {"state": "Applied", "replicas": 4},
            "m2": {"state": "Unreachable"}, "m3": {"state": "Applied", "replicas": 0}}));
        assert_eq!(
            applied(&obj, true),
            BTreeMap::from([("m1".into(), 4), ("m3".into(), 0)])
        );
        assert_eq!(
            applied(&obj, false),
            BTreeMap::from([("m1".into(), 1), ("m3".into(), 1)])
        );
        let garbled: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1",
            "kind": "ConfigMap", "metadata": {"name": "c",
            "annotations": {PLACEMENT_ANNOTATION: "{not json"}}}))
        .unwrap();
        assert!(applied(&garbled, false).is_empty());
    }

    #[test]
    fn copies_differ_where_a_field_does() {
        let a = serde_json::json!({"metadata": {"name": "web", "annotations": {
                crate::federation::TEMPLATE_HASH_ANNOTATION: "1", "a/b": "x"}},
            "spec": {"containers": [{"image": "nginx"}, {"image": "redis"}]}});
        let mut b = a.clone();
        b["metadata"]["annotations"][crate::federation::TEMPLATE_HASH_ANNOTATION] = "2".into();
        assert!(differing(&a, &b, String::new()).is_empty());
        b["spec"]["containers"][1]["image"] = "mirror/redis".into();
        b["metadata"]["annotations"]["a/b"] = "y".into();
        b["metadata"]["labels"] = serde_json::json!({"k": "v"});
        assert_eq!(
            differing(&a, &b, String::new()),
            [
                "/metadata/annotations/a~1b",
                "/metadata/labels",
                "/spec/containers/1/image"
            ]
        );
    }

    #[test]
    fn moves_are_totalled_per_cluster() {
        let preview = Preview {
            changes: vec![
                Change {
                    object: "shop/web".into(),
                    kind: "Deployment".into(),
                    before: BTreeMap::from([("m1".into(), 2), ("m2".into(), 2)]),
                    after: BTreeMap::from([("m1".into(), 4), ("m2".into(), 0)]),
                    copies: BTreeMap::new(),
                },
                Change {
                    object: "shop/cfg".into(),
                    kind: "ConfigMap".into(),
                    before: BTreeMap::from([("m1".into(), 1)]),
                    after: BTreeMap::from([("m2".into(), 1)]),
                    copies: BTreeMap::from([(
                        "m2".into(),
                        vec!["/spec/template/spec/containers/0/image".into()],
                    )]),
                },
            ],
            errors: vec![],
            evaluated: 3,
        };
        let replica_kinds = vec!["Deployment".to_string()];
        let moved = preview.moved(&replica_kinds);
        assert_eq!(
            moved,
            BTreeMap::from([("m1".into(), (2, -1)), ("m2".into(), (-2, 1))])
        );
        let text = preview.render("next.wasm", "weighted-spread", &replica_kinds);
        assert!(
            text.contains("m2                       2 -> 0 replicas"),
            "{text}"
        );
        assert!(text.contains("gains   m2"), "{text}");
        assert!(
            text.contains("copy changes /spec/template/spec/containers/0/image"),
            "{text}"
        );
        assert!(
            text.contains("2 object(s) would change, 0 would fail"),
            "{text}"
        );
        let none = Preview {
            evaluated: 3,
            ..Default::default()
        };
        assert!(none.render("a", "b", &[]).contains("no change"));
    }
}
