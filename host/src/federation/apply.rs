//! Writing to the members: each member on its own, every request under that
//! member's deadline, so one that hangs delays nobody else; and only what changed.
//!
//! What a member holds is read from its cache ([`super::mirror`]); a copy that is
//! already what the federation wants is not written. A member whose cache is not
//! whole is asked directly.
//!
//! Ownership rules: a member object fedwasm did not create is never modified or
//! deleted (unless the federation object asks for adoption); a new one is created
//! with POST, so one created by someone else meanwhile is never taken over. The
//! POST's field ownership (an `Update` entry) is turned into fedwasm's `Apply` entry
//! before the copy's first server-side apply, so a field later dropped in the
//! federation is dropped in the member too.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::ResourceExt;
use serde_json::{json, Value};

use super::controller::{forget, Context};
use super::kinds::hash_of;
use super::mirror::{self, Cached, Seen, Written};
use super::namespace;
use super::place::{annotation, shaped, Placement};
use super::{events, Error, ADOPT_ANNOTATION, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::fleet::{Member, MemberClient, MemberError, Snapshot};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

/// The outcome in one member.
#[derive(Debug)]
pub(crate) enum Outcome {
    Applied(Arc<Cached>),
    Unreachable(String),
    Conflict,
    Rejected(String),
    /// The policy's overrides or customize plugin could not shape this member's
    /// copy: nothing was written, the member keeps what it had.
    OverrideFailed(String),
}

/// One member's outcome; `None` when the object is (now) not there.
pub(crate) struct MemberOutcome {
    pub cluster: String,
    pub outcome: Option<Outcome>,
    /// fedwasm's write is not in the member's cache yet: look again soon, in case
    /// the copy was deleted while the cache could not see it.
    pub awaiting_cache: bool,
}

pub(crate) fn owned(obj: &DynamicObject) -> bool {
    obj.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

pub(crate) fn member_api(
    client: &MemberClient,
    ctx: &Context,
    obj: &DynamicObject,
) -> Api<DynamicObject> {
    match &obj.metadata.namespace {
        Some(ns) if ctx.kind.namespaced => {
            Api::namespaced_with(client.client().clone(), ns, &ctx.kind.resource)
        }
        _ => Api::all_with(client.client().clone(), &ctx.kind.resource),
    }
}

/// Applies the placement in every member at once; each finishes on its own.
pub(crate) async fn apply_all(
    ctx: &Context,
    obj: &DynamicObject,
    snapshot: &Snapshot,
    placement: &Placement,
) -> Vec<MemberOutcome> {
    let adopt = annotation(obj, ADOPT_ANNOTATION) == Some("true");
    let work = snapshot.members.iter().map(|member| async move {
        let cluster = member.name();
        let (outcome, awaiting_cache) = if placement.selected.contains(&cluster) {
            let replicas = placement
                .replicas
                .as_ref()
                .map(|p| p.get(&cluster).copied().unwrap_or(0));
            let cluster = member.cluster.to_info();
            let policy = placement.policy.as_ref();
            let shaped = shaped(
                &ctx.shared.placer,
                &ctx.kind,
                obj,
                cluster,
                replicas,
                policy,
            );
            let (outcome, awaiting) = match shaped.await {
                Ok(body) => apply_member(ctx, obj, member, body, adopt).await,
                Err(reason) => (Outcome::OverrideFailed(reason), false),
            };
            (Some(outcome), awaiting)
        } else {
            (remove_member(ctx, obj, member).await, false)
        };
        MemberOutcome {
            cluster,
            outcome,
            awaiting_cache,
        }
    });
    futures::future::join_all(work).await
}

fn failed(e: MemberError) -> Outcome {
    if e.is_unreachable() {
        Outcome::Unreachable(e.to_string())
    } else {
        Outcome::Rejected(e.to_string())
    }
}

/// The member's copy of `obj` as its cache shows it, or as the member answers when
/// its cache is not whole.
async fn look(
    ctx: &Context,
    client: &MemberClient,
    obj: &DynamicObject,
) -> Result<Seen, MemberError> {
    match ctx.mirrors.seen(client.cluster(), obj) {
        Seen::Unknown => {
            let api = member_api(client, ctx, obj);
            Ok(match client.call(api.get_opt(&obj.name_any())).await? {
                Some(found) => Seen::Present(Arc::new(Cached::of(&found))),
                None => Seen::Absent {
                    seen_up_to: u64::MAX,
                },
            })
        }
        seen => Ok(seen),
    }
}

async fn apply_member(
    ctx: &Context,
    obj: &DynamicObject,
    member: &Member,
    body: Value,
    adopt: bool,
) -> (Outcome, bool) {
    let Some(client) = &member.client else {
        return (
            Outcome::Unreachable("no connection to the member yet".into()),
            false,
        );
    };
    let seen = match look(ctx, client, obj).await {
        Ok(seen) => seen,
        Err(e) => return (failed(e), false),
    };
    let hash = hash_of(&body);
    let cluster = client.cluster();
    let written = ctx.mirrors.written(cluster, obj);
    // What is there decides: nothing to write, or which write.
    let apply_over = match seen {
        Seen::Present(found) if !found.owned && !adopt => return (Outcome::Conflict, false),
        Seen::Present(found) if found.owned && mirror::current(&found, hash, written.as_ref()) => {
            if written.is_none() {
                ctx.mirrors
                    .remember(cluster, obj, Written::of(found.clone(), hash));
            }
            return (Outcome::Applied(found), false);
        }
        Seen::Present(found) => Some(found),
        Seen::Absent { seen_up_to } => {
            match written.filter(|w| mirror::not_seen_yet(seen_up_to, hash, Some(w))) {
                // fedwasm's own write, not in the cache yet: its watch event follows.
                Some(w) => return (Outcome::Applied(w.copy), true),
                None => None,
            }
        }
        Seen::Unknown => None,
    };
    let api = member_api(client, ctx, obj);
    let name = obj.name_any();
    let _sending = ctx.mirrors.sending(cluster, obj, hash);
    let applied = match apply_over {
        Some(found) => apply_owned(ctx, client, &api, &name, &body, &found).await,
        None => create(ctx, client, &api, &name, &body, obj, adopt).await,
    };
    let outcome = match applied {
        Ok(applied) => {
            let copy = Arc::new(Cached::of(&applied));
            drop(applied);
            ctx.mirrors
                .remember(cluster, obj, Written::of(copy.clone(), hash));
            Outcome::Applied(copy)
        }
        // Created by someone else between our look and our create: theirs stays.
        Err(e) if e.code() == Some(409) => Outcome::Conflict,
        Err(e) => failed(e),
    };
    (outcome, false)
}

/// Server-side apply of fedwasm's copy, forced (fedwasm owns its copies). A copy
/// created by POST first has its field ownership turned into fedwasm's apply entry.
async fn apply_owned(
    ctx: &Context,
    client: &MemberClient,
    api: &Api<DynamicObject>,
    name: &str,
    body: &Value,
    found: &Cached,
) -> Result<DynamicObject, MemberError> {
    if found.created_by_post {
        take_over_create(ctx, client, api, name).await?;
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    ctx.wrote(client, "apply");
    client
        .call(api.patch(name, &params, &Patch::Apply(body)))
        .await
}

/// POST, so an object made by someone else meanwhile is a 409, never taken over.
/// A 409 on a copy that is fedwasm's after all (the cache had not seen it yet), or
/// that the object asks to adopt, is applied instead.
async fn create(
    ctx: &Context,
    client: &MemberClient,
    api: &Api<DynamicObject>,
    name: &str,
    body: &Value,
    obj: &DynamicObject,
    adopt: bool,
) -> Result<DynamicObject, MemberError> {
    ctx.wrote(client, "create");
    let created = match post(client, api, body).await {
        Err(e) if e.code() == Some(404) && ctx.kind.namespaced => {
            // The namespace is missing in the member: create it (labelled as ours),
            // then the object.
            if let Some(ns) = &obj.metadata.namespace {
                ctx.wrote(client, "create");
                namespace::ensure(client, ns).await?;
            }
            ctx.wrote(client, "create");
            post(client, api, body).await
        }
        other => other,
    };
    match created {
        Err(e) if e.code() == Some(409) => {
            let found = client.call(api.get(name)).await?;
            if owned(&found) || adopt {
                apply_owned(ctx, client, api, name, body, &Cached::of(&found)).await
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

/// Creates `body` in a member as fedwasm (POST: a 409 if it exists already).
pub(crate) async fn post<K>(
    client: &MemberClient,
    api: &Api<K>,
    body: &Value,
) -> Result<K, MemberError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(body.clone()).map_err(|e| MemberError::Api {
        cluster: client.cluster().to_string(),
        source: kube::Error::SerdeError(e),
    })?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    client.call(api.create(&params, &object)).await
}

pub(super) fn is_create_entry(m: &ManagedFieldsEntry) -> bool {
    m.manager.as_deref() == Some(FIELD_MANAGER)
        && m.operation.as_deref() == Some("Update")
        && m.subresource.is_none()
}

/// Turns the field ownership of fedwasm's POST (an `Update` entry) into its
/// server-side apply entry, the fields unchanged: the next apply then drops the
/// fields the federation dropped, where an `Update` entry would have kept them.
/// Guarded by the resourceVersion; retried when the copy changed meanwhile.
async fn take_over_create(
    ctx: &Context,
    client: &MemberClient,
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<(), MemberError> {
    let mut current = client.call(api.get(name)).await?;
    for _ in 0..3 {
        let Some(entries) = as_apply_entry(current.metadata.managed_fields.as_deref()) else {
            return Ok(());
        };
        let patch = json!({"metadata": {
            "managedFields": entries,
            "resourceVersion": current.metadata.resource_version,
        }});
        let params = PatchParams {
            field_manager: Some(format!("{FIELD_MANAGER}-handover")),
            ..Default::default()
        };
        ctx.wrote(client, "handover");
        match client
            .call(api.patch(name, &params, &Patch::Merge(&patch)))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(409) => {
                current = client.call(api.get(name)).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `entries` with fedwasm's create (`Update`) entry merged into its `Apply` entry;
/// `None` when there is no create entry.
fn as_apply_entry(entries: Option<&[ManagedFieldsEntry]>) -> Option<Vec<ManagedFieldsEntry>> {
    let entries = entries?;
    if !entries.iter().any(is_create_entry) {
        return None;
    }
    let ours = |m: &ManagedFieldsEntry| {
        is_create_entry(m)
            || (m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply"))
    };
    let mut fields = Value::Object(Default::default());
    let mut merged: Option<ManagedFieldsEntry> = None;
    for m in entries.iter().filter(|m| ours(m)) {
        if let Some(FieldsV1(f)) = &m.fields_v1 {
            union(&mut fields, f);
        }
        merged.get_or_insert_with(|| m.clone());
    }
    let mut apply = merged?;
    apply.operation = Some("Apply".into());
    apply.fields_type = Some("FieldsV1".into());
    apply.fields_v1 = Some(FieldsV1(fields));
    let mut out: Vec<ManagedFieldsEntry> = entries.iter().filter(|m| !ours(m)).cloned().collect();
    out.push(apply);
    Some(out)
}

/// Field sets in the `FieldsV1` form are trees of objects: their union is the
/// merge of the trees.
fn union(into: &mut Value, from: &Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        for (k, v) in from {
            union(
                into.entry(k.clone())
                    .or_insert_with(|| Value::Object(Default::default())),
                v,
            );
        }
    }
}

/// Removes the object from a member that is no longer selected, if fedwasm made it.
async fn remove_member(ctx: &Context, obj: &DynamicObject, member: &Member) -> Option<Outcome> {
    let Some(client) = &member.client else {
        // Cannot tell whether a copy is there: only a member never connected to
        // since the start has no client, and it may well hold one.
        return Some(Outcome::Unreachable(
            "no connection to the member yet".into(),
        ));
    };
    match delete_owned(ctx, obj, client).await {
        Ok(Removal::Nothing) => None,
        Ok(Removal::Deleted) => {
            events::publish(
                ctx,
                obj,
                EventType::Normal,
                "Removed",
                format!("removed from cluster {}: no longer selected", member.name()),
            )
            .await;
            None
        }
        Ok(Removal::Kept(foreign)) => {
            events::namespace_kept(ctx, obj, &member.name(), &foreign).await;
            None
        }
        Err(e) => Some(failed(e)),
    }
}

/// What became of fedwasm's copy in one member.
pub(crate) enum Removal {
    /// There was none (or not fedwasm's).
    Nothing,
    Deleted,
    /// A namespace that holds others' objects (named here) stays; fedwasm's own
    /// objects in it were removed.
    Kept(Vec<String>),
}

/// Deletes fedwasm's copy in one member; a namespace only when nothing in it is
/// anyone else's.
async fn delete_owned(
    ctx: &Context,
    obj: &DynamicObject,
    client: &MemberClient,
) -> Result<Removal, MemberError> {
    let Seen::Present(found) = look(ctx, client, obj).await? else {
        return Ok(Removal::Nothing);
    };
    if !found.owned || found.deleting {
        return Ok(Removal::Nothing);
    }
    let name = obj.name_any();
    if ctx.kind.holds_objects {
        let foreign = namespace::empty_of_ours(client, &name).await?;
        if !foreign.is_empty() {
            return Ok(Removal::Kept(foreign));
        }
    }
    // Only the copy fedwasm saw: one made again by someone else meanwhile stays.
    let params = DeleteParams {
        preconditions: found.uid.as_ref().map(|uid| kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    ctx.wrote(client, "delete");
    let api = member_api(client, ctx, obj);
    match client.call(api.delete(&name, &params)).await {
        Ok(_) => {
            ctx.mirrors.forget(Some(client.cluster()), obj);
            Ok(Removal::Deleted)
        }
        Err(e) if matches!(e.code(), Some(404 | 409)) => Ok(Removal::Nothing),
        Err(e) => Err(e),
    }
}

/// Deletes the object from every member that has fedwasm's copy. Fails (and keeps
/// the finalizer) while a joined member cannot be reached or has no connection yet:
/// only a member that is no longer joined is skipped.
pub(crate) async fn cleanup(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    forget(ctx, obj);
    let snapshot = ctx.shared.fleet.snapshot();
    let results = futures::future::join_all(snapshot.members.iter().map(|m| async move {
        let Some(client) = &m.client else {
            return Err(format!("{}: no connection to the member yet", m.name()));
        };
        match delete_owned(ctx, obj, client).await {
            Ok(Removal::Kept(foreign)) => {
                events::namespace_kept(ctx, obj, &m.name(), &foreign).await;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }))
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !failed.is_empty() {
        return Err(Error::MembersUnreachable(failed));
    }
    events::publish(
        ctx,
        obj,
        EventType::Normal,
        "Deleted",
        "deleted from every member".into(),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn the_create_entry_becomes_the_apply_entry_with_the_same_fields() {
        let entries = vec![
            entry(
                FIELD_MANAGER,
                "Update",
                json!({"f:data": {"f:a": {}, "f:b": {}}}),
            ),
            entry("kubectl-edit", "Update", json!({"f:data": {"f:c": {}}})),
        ];
        let out = as_apply_entry(Some(&entries)).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].manager.as_deref(), Some("kubectl-edit"));
        assert_eq!(out[1].operation.as_deref(), Some("Apply"));
        assert_eq!(
            out[1].fields_v1.as_ref().unwrap().0,
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
    }

    #[test]
    fn a_create_and_an_apply_entry_merge_into_one() {
        let entries = vec![
            entry(
                FIELD_MANAGER,
                "Apply",
                json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {}}}),
            ),
            entry(FIELD_MANAGER, "Update", json!({"f:data": {"f:b": {}}})),
        ];
        let out = as_apply_entry(Some(&entries)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].fields_v1.as_ref().unwrap().0,
            json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {}}})
        );
        assert!(as_apply_entry(Some(&out)).is_none(), "nothing left to turn");
    }
}
