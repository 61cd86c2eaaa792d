//! Back into the federation object: the per-member outcome (events and the
//! `fedwasm.io/placement` annotation) and the members' status, in the shapes real
//! clients read (`kubectl rollout status`, `kubectl wait`, Helm `--wait`, Argo CD).

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::{json, Map, Value};

use super::apply::{MemberOutcome, Outcome};
use super::controller::Context;
use super::kinds::StatusShape;
use super::mirror::Cached;
use super::place::annotation;
use super::{events, Error, ADOPT_ANNOTATION, FIELD_MANAGER, PLACEMENT_ANNOTATION};

/// The entry of the placement annotation naming the placement policy that governs
/// the object.
pub const POLICY_KEY: &str = "@policy";

/// Records the outcome in each member and writes the aggregated status.
pub(crate) async fn write(
    ctx: &Context,
    obj: &DynamicObject,
    api: &Api<DynamicObject>,
    outcomes: &[MemberOutcome],
    policy: Option<&str>,
) -> Result<(), Error> {
    let name = obj.name_any();
    let mut placement = BTreeMap::new();
    if let Some(policy) = policy {
        // No cluster is named so: names are DNS labels.
        placement.insert(POLICY_KEY.to_string(), json!(policy));
    }
    for MemberOutcome {
        cluster, outcome, ..
    } in outcomes
    {
        let Some(outcome) = outcome else { continue };
        let entry = match outcome {
            Outcome::Applied(applied) => {
                let mut entry = json!({"state": "Applied"});
                if ctx.kind.status == StatusShape::LoadBalancer {
                    entry["addresses"] = json!(lb_addresses(applied));
                }
                if ctx.kind.replicas {
                    entry["replicas"] = count(applied, "/spec/replicas").into();
                    entry["readyReplicas"] = count(applied, "/status/readyReplicas").into();
                    entry["availableReplicas"] = count(applied, "/status/availableReplicas").into();
                }
                entry
            }
            Outcome::Unreachable(e) => {
                events::publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    "MemberUnreachable",
                    format!("cluster {cluster}: {e}; will retry"),
                )
                .await;
                json!({"state": "Unreachable"})
            }
            Outcome::Conflict => {
                events::publish(ctx, obj, EventType::Warning, "Conflict", format!(
                    "cluster {cluster} already has {} {name} not created by fedwasm; left untouched (set {ADOPT_ANNOTATION}: \"true\" to take it over)",
                    ctx.kind.resource.kind)).await;
                json!({"state": "Conflict"})
            }
            Outcome::OverrideFailed(e) => {
                events::publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    "OverrideFailed",
                    format!("cluster {cluster}: {e}; its copy left as it was"),
                )
                .await;
                json!({"state": "OverrideFailed"})
            }
            Outcome::Rejected(e) => {
                events::publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    "MemberRejected",
                    format!("cluster {cluster} rejected the object: {e}"),
                )
                .await;
                json!({"state": "Rejected"})
            }
        };
        placement.insert(cluster.clone(), entry);
    }
    write_placement(ctx, obj, api, json!(placement)).await?;
    write_status(ctx, obj, api, outcomes).await
}

/// The member's load-balancer addresses for its copy (IPs or host names): where
/// the global ingress and the DNS responder send clients.
fn lb_addresses(obj: &Cached) -> Vec<String> {
    obj.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i.get("ip")
                .or_else(|| i.get("hostname"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

fn count(obj: &Cached, pointer: &str) -> u64 {
    obj.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

async fn write_placement(
    ctx: &Context,
    obj: &DynamicObject,
    api: &Api<DynamicObject>,
    placement: Value,
) -> Result<(), Error> {
    let previous = annotation(obj, PLACEMENT_ANNOTATION)
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .unwrap_or(Value::Null);
    if previous == placement {
        return Ok(());
    }
    // Events for where the object is (state and replicas), not for status moves.
    let shape = |v: &Value| -> BTreeMap<String, (Value, Value)> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| e.is_object())
                    .map(|(k, e)| (k.clone(), (e["state"].clone(), e["replicas"].clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (shape(&previous), shape(&placement));
    if before != after {
        let summary: Vec<String> = after
            .iter()
            .map(|(cluster, (state, replicas))| match replicas {
                Value::Null => format!("{cluster}: {}", state.as_str().unwrap_or("?")),
                n => format!(
                    "{cluster}: {} ({n} replicas)",
                    state.as_str().unwrap_or("?")
                ),
            })
            .collect();
        let reason = if before.is_empty() {
            "Propagated"
        } else {
            "PlacementChanged"
        };
        events::publish(ctx, obj, EventType::Normal, reason, summary.join(", ")).await;
    }
    let patch = json!({"metadata": {"annotations": {PLACEMENT_ANNOTATION: placement.to_string()}}});
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::federation("writing the placement annotation", e))?;
    Ok(())
}

async fn write_status(
    ctx: &Context,
    obj: &DynamicObject,
    api: &Api<DynamicObject>,
    outcomes: &[MemberOutcome],
) -> Result<(), Error> {
    let applied: Vec<(&str, &Cached)> = outcomes
        .iter()
        .filter_map(|o| match &o.outcome {
            Some(Outcome::Applied(a)) => Some((o.cluster.as_str(), a.as_ref())),
            _ => None,
        })
        .collect();
    let current = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let status = match ctx.kind.status {
        StatusShape::None => return Ok(()),
        StatusShape::Replicas { sums, conditions } => replica_status(
            sums,
            conditions,
            obj.metadata.generation,
            &current,
            &applied,
            &Timestamp::now().to_string(),
        ),
        StatusShape::LoadBalancer => load_balancer_status(&applied),
    };
    let unchanged = status
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| current.get(k) == Some(v)));
    if unchanged {
        return Ok(());
    }
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map_err(|e| Error::federation("writing the aggregated status", e))?;
    Ok(())
}

/// Every member's load-balancer addresses, sorted, without duplicates.
fn load_balancer_status(applied: &[(&str, &Cached)]) -> Value {
    let mut ingress: Vec<Value> = applied
        .iter()
        .filter_map(|(_, a)| {
            a.pointer("/status/loadBalancer/ingress")?
                .as_array()
                .cloned()
        })
        .flatten()
        .collect();
    ingress.sort_by_key(|v| v.to_string());
    ingress.dedup();
    json!({"loadBalancer": {"ingress": ingress}})
}

/// The status of a replica kind from its members' copies (`applied`: the copies in
/// the selected members that could be reached):
/// - the `sums` fields summed (saturating: a member may report anything);
/// - `observedGeneration`: the federation object's generation once every copy has
///   observed the spec fedwasm applied to it, else the last value below it;
/// - with `conditions`: `Available` when every copy is available, `Progressing`
///   from the copies' (false when one is, else the laggard's reason).
pub fn replica_status(
    sums: &[&str],
    conditions: bool,
    generation: Option<i64>,
    current: &Value,
    applied: &[(&str, &Cached)],
    now: &str,
) -> Value {
    let mut status = Map::new();
    for field in sums {
        let total = applied
            .iter()
            .filter_map(|(_, a)| a.pointer(&format!("/status/{field}"))?.as_u64())
            .fold(0u64, u64::saturating_add)
            .min(i32::MAX as u64);
        status.insert((*field).to_string(), total.into());
    }
    let observed_all = applied.iter().all(|(_, a)| {
        let observed = a
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64);
        observed.is_some() && observed >= a.generation
    });
    if let Some(generation) = generation {
        let previous = current
            .get("observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let observed = if observed_all {
            generation
        } else {
            previous.min(generation - 1).max(0)
        };
        status.insert("observedGeneration".into(), observed.into());
    }
    if conditions {
        let previous = current.get("conditions").and_then(Value::as_array);
        let list = vec![
            condition(previous, available(applied), now),
            condition(previous, progressing(applied), now),
        ];
        status.insert("conditions".into(), Value::Array(list));
    }
    Value::Object(status)
}

/// (type, status, reason, message) of one derived condition.
type Derived = (&'static str, &'static str, String, String);

fn member_condition<'a>(copy: &'a Cached, type_: &str) -> Option<&'a Value> {
    copy.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn text(c: Option<&Value>, field: &str) -> String {
    c.and_then(|c| c[field].as_str())
        .unwrap_or_default()
        .to_string()
}

fn available(applied: &[(&str, &Cached)]) -> Derived {
    if applied.is_empty() {
        return (
            "Available",
            "False",
            "NoMembers".into(),
            "no member has the object".into(),
        );
    }
    let laggard = applied.iter().find_map(|(cluster, copy)| {
        let c = member_condition(copy, "Available");
        (c.map(|c| c["status"] != "True").unwrap_or(true)).then_some((cluster, c))
    });
    match laggard {
        None => (
            "Available",
            "True",
            "MinimumReplicasAvailable".into(),
            "every member has minimum availability".into(),
        ),
        Some((cluster, c)) => {
            let reason = Some(text(c, "reason"))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "MinimumReplicasUnavailable".into());
            let message = Some(text(c, "message"))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "not available yet".into());
            (
                "Available",
                "False",
                reason,
                format!("cluster {cluster}: {message}"),
            )
        }
    }
}

fn progressing(applied: &[(&str, &Cached)]) -> Derived {
    let stuck = applied.iter().find_map(|(cluster, copy)| {
        let c = member_condition(copy, "Progressing")?;
        (c["status"] == "False").then_some((cluster, c))
    });
    if let Some((cluster, c)) = stuck {
        let message = format!("cluster {cluster}: {}", text(Some(c), "message"));
        return ("Progressing", "False", text(Some(c), "reason"), message);
    }
    let laggard = applied.iter().find_map(|(cluster, copy)| {
        let c = member_condition(copy, "Progressing");
        (text(c, "reason") != "NewReplicaSetAvailable").then_some((cluster, c))
    });
    match laggard {
        None => (
            "Progressing",
            "True",
            "NewReplicaSetAvailable".into(),
            "every member has rolled out".into(),
        ),
        Some((cluster, None)) => (
            "Progressing",
            "True",
            "WaitingForMember".into(),
            format!("cluster {cluster} has not reported progress yet"),
        ),
        Some((cluster, c)) => (
            "Progressing",
            "True",
            text(c, "reason"),
            format!("cluster {cluster}: {}", text(c, "message")),
        ),
    }
}

/// The condition, keeping its previous times when status and reason did not move.
fn condition(
    previous: Option<&Vec<Value>>,
    (type_, status, reason, message): Derived,
    now: &str,
) -> Value {
    let before = previous.and_then(|l| l.iter().find(|c| c["type"] == type_));
    let same = before.is_some_and(|b| b["status"] == status && b["reason"] == reason.as_str());
    let transition = before
        .filter(|b| b["status"] == status)
        .and_then(|b| b["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let update = before
        .filter(|_| same)
        .and_then(|b| b["lastUpdateTime"].as_str())
        .unwrap_or(now);
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": update, "lastTransitionTime": transition})
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMS: &[&str] = &[
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ];

    fn copy(generation: i64, status: Value) -> Cached {
        Cached::of(
            &serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "generation": generation},
            "spec": {"replicas": 2}, "status": status}))
            .unwrap(),
        )
    }

    fn done(n: u64, generation: i64) -> Cached {
        copy(
            generation,
            json!({"observedGeneration": generation, "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}),
        )
    }

    fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap()
    }

    #[test]
    fn rolled_out_everywhere_is_available_and_observed() {
        let (a, b) = (done(3, 2), done(2, 5));
        let s = replica_status(
            SUMS,
            true,
            Some(4),
            &Value::Null,
            &[("m1", &a), ("m2", &b)],
            "t0",
        );
        assert_eq!(s["replicas"], 5);
        assert_eq!(s["updatedReplicas"], 5);
        assert_eq!(s["observedGeneration"], 4);
        assert_eq!(cond(&s, "Available")["status"], "True");
        assert_eq!(cond(&s, "Progressing")["reason"], "NewReplicaSetAvailable");
    }

    #[test]
    fn a_member_that_has_not_observed_holds_the_generation_back() {
        let a = done(3, 2);
        let b = copy(
            6,
            json!({"observedGeneration": 5, "replicas": 2, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "0 of 2"},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "rolling"}]}),
        );
        let current = json!({"observedGeneration": 3});
        let s = replica_status(
            SUMS,
            true,
            Some(4),
            &current,
            &[("m1", &a), ("m2", &b)],
            "t0",
        );
        assert_eq!(s["observedGeneration"], 3);
        let available = cond(&s, "Available");
        assert_eq!(available["status"], "False");
        assert_eq!(available["message"], "cluster m2: 0 of 2");
        let progressing = cond(&s, "Progressing");
        assert_eq!(
            (
                progressing["status"].as_str(),
                progressing["reason"].as_str()
            ),
            (Some("True"), Some("ReplicaSetUpdated"))
        );
        // Never at or above the generation while a member lags.
        let s = replica_status(
            SUMS,
            true,
            Some(4),
            &json!({"observedGeneration": 9}),
            &[("m2", &b)],
            "t0",
        );
        assert_eq!(s["observedGeneration"], 3);
    }

    #[test]
    fn a_stuck_member_fails_the_rollout() {
        let b = copy(
            1,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}),
        );
        let s = replica_status(SUMS, true, Some(1), &Value::Null, &[("m3", &b)], "t0");
        let p = cond(&s, "Progressing");
        assert_eq!(
            (p["status"].as_str(), p["reason"].as_str()),
            (Some("False"), Some("ProgressDeadlineExceeded"))
        );
        assert_eq!(p["message"], "cluster m3: too slow");
    }

    #[test]
    fn sums_saturate_and_times_stay_while_nothing_moves() {
        let huge = copy(1, json!({"observedGeneration": 1, "replicas": u64::MAX}));
        let s = replica_status(
            SUMS,
            false,
            Some(1),
            &Value::Null,
            &[("a", &huge), ("b", &huge)],
            "t0",
        );
        assert_eq!(s["replicas"], i32::MAX);
        assert!(s.get("conditions").is_none());
        let a = done(1, 1);
        let first = replica_status(SUMS, true, Some(1), &Value::Null, &[("m1", &a)], "t0");
        let again = replica_status(SUMS, true, Some(1), &first, &[("m1", &a)], "t1");
        assert_eq!(
            first, again,
            "unchanged conditions keep their times, so nothing is written"
        );
    }
}
