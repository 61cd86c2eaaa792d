//! Writing to the members: each member on its own, every request under that
//! member's deadline, so one that hangs delays nobody else.
//!
//! Ownership rules: a member object fedwasm did not create is never modified or
//! deleted (unless the federation object asks for adoption); a new one is created
//! with POST, so one created by someone else meanwhile is never taken over, and then
//! its fields are handed to fedwasm's server-side apply entry, so a field later
//! dropped in the federation is dropped in the member too.

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::ResourceExt;
use serde_json::{json, Value};

use super::controller::{forget, Context};
use super::kinds::member_object;
use super::namespace;
use super::place::{annotation, Placement};
use super::{events, Error, ADOPT_ANNOTATION, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::fleet::{Member, MemberClient, MemberError, Snapshot};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

/// The outcome in one member.
#[derive(Debug)]
pub(crate) enum Outcome {
    Applied(Box<DynamicObject>),
    Unreachable(String),
    Conflict,
    Rejected(String),
}

/// One member's outcome; `None` when the object is (now) not there.
pub(crate) struct MemberOutcome {
    pub cluster: String,
    pub outcome: Option<Outcome>,
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
        let outcome = if placement.selected.contains(&cluster) {
            let replicas = placement
                .replicas
                .as_ref()
                .map(|p| p.get(&cluster).copied().unwrap_or(0));
            Some(apply_member(ctx, obj, member, replicas, adopt).await)
        } else {
            remove_member(ctx, obj, member).await
        };
        MemberOutcome { cluster, outcome }
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

async fn apply_member(
    ctx: &Context,
    obj: &DynamicObject,
    member: &Member,
    replicas: Option<u32>,
    adopt: bool,
) -> Outcome {
    let Some(client) = &member.client else {
        return Outcome::Unreachable("no connection to the member yet".into());
    };
    let api = member_api(client, ctx, obj);
    let name = obj.name_any();
    let existing = match client.call(api.get_opt(&name)).await {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    if existing
        .as_ref()
        .is_some_and(|found| !owned(found) && !adopt)
    {
        return Outcome::Conflict;
    }
    let body = member_object(&ctx.kind, obj, replicas);
    let applied = match existing {
        Some(found) => apply_owned(client, &api, &name, &body, &found).await,
        None => create(client, &api, &name, &body, obj, ctx).await,
    };
    match applied {
        Ok(applied) => Outcome::Applied(Box::new(applied)),
        // Created by someone else between our look and our create: theirs stays.
        Err(e) if e.code() == Some(409) => Outcome::Conflict,
        Err(e) => failed(e),
    }
}

/// Server-side apply of fedwasm's copy. A copy still carrying the field ownership of
/// a create (an older fedwasm, or a create interrupted before the hand-over) is
/// handed over after the apply.
async fn apply_owned(
    client: &MemberClient,
    api: &Api<DynamicObject>,
    name: &str,
    body: &Value,
    found: &DynamicObject,
) -> Result<DynamicObject, MemberError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = client
        .call(api.patch(name, &params, &Patch::Apply(body)))
        .await?;
    if has_update_entry(found) || has_update_entry(&applied) {
        return hand_over(client, api, name, applied).await;
    }
    Ok(applied)
}

/// POST, so an object made by someone else meanwhile is a 409, never taken over;
/// then the same body by server-side apply, and the create's ownership dropped.
async fn create(
    client: &MemberClient,
    api: &Api<DynamicObject>,
    name: &str,
    body: &Value,
    obj: &DynamicObject,
    ctx: &Context,
) -> Result<DynamicObject, MemberError> {
    let created = match post(client, api, body).await {
        Err(e) if e.code() == Some(404) && ctx.kind.namespaced => {
            // The namespace is missing in the member: create it (labelled as ours),
            // then the object.
            if let Some(ns) = &obj.metadata.namespace {
                namespace::ensure(client, ns).await?;
            }
            post(client, api, body).await?
        }
        other => other?,
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let applied = client
        .call(api.patch(name, &apply, &Patch::Apply(body)))
        .await?;
    drop(created);
    hand_over(client, api, name, applied).await
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

fn has_update_entry(obj: &DynamicObject) -> bool {
    obj.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Update")
    })
}

/// Drops fedwasm's `Update` field ownership (from the POST that created the copy),
/// keeping its `Apply` entry: fields the federation object drops later are then
/// removed by the next apply instead of lingering, owned by the create. Guarded by
/// the resourceVersion; retried when the member changed the object meanwhile.
async fn hand_over(
    client: &MemberClient,
    api: &Api<DynamicObject>,
    name: &str,
    mut current: DynamicObject,
) -> Result<DynamicObject, MemberError> {
    for _ in 0..3 {
        if !has_update_entry(&current) {
            return Ok(current);
        }
        let keep: Vec<_> = current
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| {
                !(m.manager.as_deref() == Some(FIELD_MANAGER)
                    && m.operation.as_deref() == Some("Update"))
            })
            .cloned()
            .collect();
        let patch = json!({"metadata": {
            "managedFields": keep,
            "resourceVersion": current.metadata.resource_version,
        }});
        let params = PatchParams {
            field_manager: Some(format!("{FIELD_MANAGER}-handover")),
            ..Default::default()
        };
        match client
            .call(api.patch(name, &params, &Patch::Merge(&patch)))
            .await
        {
            Ok(done) => return Ok(done),
            Err(e) if e.code() == Some(409) => {
                current = client.call(api.get(name)).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(current)
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
    let api = member_api(client, ctx, obj);
    let name = obj.name_any();
    let Some(found) = client.call(api.get_opt(&name)).await? else {
        return Ok(Removal::Nothing);
    };
    if !owned(&found) || found.metadata.deletion_timestamp.is_some() {
        return Ok(Removal::Nothing);
    }
    if ctx.kind.holds_objects {
        let foreign = namespace::empty_of_ours(client, &name).await?;
        if !foreign.is_empty() {
            return Ok(Removal::Kept(foreign));
        }
    }
    match client
        .call(api.delete(&name, &DeleteParams::default()))
        .await
    {
        Ok(_) => Ok(Removal::Deleted),
        Err(e) if e.code() == Some(404) => Ok(Removal::Nothing),
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
