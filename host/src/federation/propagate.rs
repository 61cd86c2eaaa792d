//! The propagation controller: one per kind, each a `reconcile` / `error_policy`
//! pair over the federation plane's objects.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedwasm_sdk::{DistributeRequest, Hook, ObjectRef, Preferences, SelectRequest};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Value};

use super::kinds::{member_object, Kind};
use super::members::{Member, Members};
use super::*;
use crate::runtime::{preference_warnings, Registry};

/// What every controller shares: one recorder (it de-duplicates events), the
/// members, the plugins.
#[derive(Clone)]
pub struct Shared {
    federation: Client,
    registry: Arc<Registry>,
    members: Arc<Members>,
    recorder: Recorder,
    /// Consecutive failed reconciles per object, for backoff.
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Per object: the fingerprint of its last complete propagation and when.
    applied: Arc<Mutex<HashMap<String, (u64, Instant)>>>,
}

impl Shared {
    pub fn new(federation: Client, registry: Arc<Registry>, members: Arc<Members>) -> Self {
        let recorder = Recorder::new(
            federation.clone(),
            Reporter {
                controller: "fedwasm".into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        );
        Self {
            federation,
            registry,
            members,
            recorder,
            failures: Default::default(),
            applied: Default::default(),
        }
    }
}

/// One controller's context.
pub struct Context {
    shared: Shared,
    kind: Kind,
}

/// Watches one kind in the federation plane and reconciles each object; every
/// object is re-placed when members change phase or a plugin is swapped.
pub async fn run_controller(shared: Shared, kind: Kind) {
    let api: Api<DynamicObject> = Api::all_with(shared.federation.clone(), &kind.resource);
    let triggers = futures::stream::select(
        changes(shared.members.subscribe()),
        changes(shared.registry.subscribe()),
    );
    let name = kind.resource.kind.clone();
    let ctx = Arc::new(Context {
        shared,
        kind: kind.clone(),
    });
    tracing::info!(kind = %name, "propagation controller started");
    Controller::new_with(api, watcher::Config::default(), kind.resource.clone())
        .reconcile_all_on(triggers)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// A stream that yields each time the watched value changes.
fn changes(rx: tokio::sync::watch::Receiver<u64>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

fn key(obj: &DynamicObject) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.name_any()
    )
}

/// Places one federation object in the members, or removes it from them when it is
/// being deleted.
#[tracing::instrument(skip_all, fields(kind = %ctx.kind.resource.kind, object = %key(&obj)))]
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.kind.skip(&obj) {
        return Ok(Action::await_change());
    }
    let api: Api<DynamicObject> = match &obj.metadata.namespace {
        Some(ns) if ctx.kind.namespaced => {
            Api::namespaced_with(ctx.shared.federation.clone(), ns, &ctx.kind.resource)
        }
        _ => Api::all_with(ctx.shared.federation.clone(), &ctx.kind.resource),
    };
    let action = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&obj, &ctx, &api).await,
            Finalizer::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()));
    ctx.shared
        .registry
        .runtime()
        .metrics()
        .observe_propagation(&ctx.kind.resource.kind, action.is_ok());
    action
}

/// Retries with exponential backoff per object (1 s … 60 s): a member that is away
/// is retried, never hammered.
pub fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = %ctx.kind.resource.kind, object = %key(&obj), error = %error, "reconcile failed");
    Action::requeue(backoff(&ctx.shared, &obj, true))
}

fn backoff(shared: &Shared, obj: &DynamicObject, failed: bool) -> Duration {
    let mut failures = shared.failures.lock().unwrap_or_else(|p| p.into_inner());
    let k = key(obj);
    if !failed {
        failures.remove(&k);
        return Duration::ZERO;
    }
    let n = failures.entry(k).or_insert(0);
    *n = (*n + 1).min(6);
    Duration::from_secs(1 << (*n - 1)).min(Duration::from_secs(60))
}

async fn publish(ctx: &Context, obj: &DynamicObject, type_: EventType, reason: &str, note: String) {
    let reference = obj.object_ref(&ctx.kind.resource);
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Propagate".into(),
        secondary: None,
    };
    let result = if reference.namespace.is_some() {
        ctx.shared.recorder.publish(&event, &reference).await
    } else {
        publish_cluster_scoped(ctx, &event, reference).await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, reason, "cannot record an event");
    }
}

/// Events about cluster-scoped objects (Namespaces, extra cluster kinds) go to
/// `kube-system`: the only namespace every Kubernetes version accepts for them
/// (1.20 refuses `default`, where the generic recorder puts them).
async fn publish_cluster_scoped(
    ctx: &Context,
    event: &Event,
    regarding: k8s_openapi::api::core::v1::ObjectReference,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let now = k8s_openapi::jiff::Timestamp::now();
    let body = K8sEvent {
        metadata: kube::api::ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or("fedwasm"),
                now.as_nanosecond()
            )),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some("fedwasm".into()),
        reporting_instance: Some(std::env::var("HOSTNAME").unwrap_or_else(|_| "fedwasm".into())),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..Default::default()
    };
    let api: Api<K8sEvent> = Api::namespaced(ctx.shared.federation.clone(), "kube-system");
    api.create(&PostParams::default(), &body).await.map(drop)
}

fn member_api(client: Client, kind: &Kind, obj: &DynamicObject) -> Api<DynamicObject> {
    match &obj.metadata.namespace {
        Some(ns) if kind.namespaced => Api::namespaced_with(client, ns, &kind.resource),
        _ => Api::all_with(client, &kind.resource),
    }
}

fn owned(obj: &DynamicObject) -> bool {
    obj.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

fn annotation<'a>(obj: &'a DynamicObject, name: &str) -> Option<&'a str> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// The outcome in one member.
#[derive(Debug)]
enum Outcome {
    Applied(Box<DynamicObject>),
    Unreachable(String),
    Conflict,
    Rejected(String),
}

/// What a member has now: `Ok(None)` when it has no such object.
async fn get_existing(
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<Option<DynamicObject>, kube::Error> {
    api.get_opt(name).await
}

fn is_unreachable(e: &kube::Error) -> bool {
    !matches!(e, kube::Error::Api(_))
}

/// Creates the object's namespace in a member when it is missing, so objects can be
/// applied before (or without) their federated Namespace.
async fn ensure_namespace(client: &Client, ns: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(ns).await?.is_some() {
        return Ok(());
    }
    let body = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}});
    api.patch(
        ns,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
}

async fn apply_member(
    ctx: &Context,
    obj: &DynamicObject,
    member: &Member,
    existing: Result<Option<DynamicObject>, kube::Error>,
    replicas: Option<u32>,
    adopt: bool,
) -> Outcome {
    let Some(client) = member.client.clone() else {
        return Outcome::Unreachable("no connection to the member yet".into());
    };
    let existing = match existing {
        Ok(e) => e,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    if let Some(found) = &existing {
        if !owned(found) && !adopt {
            return Outcome::Conflict;
        }
    }
    let api = member_api(client.clone(), &ctx.kind, obj);
    let body = member_object(&ctx.kind, obj, replicas);
    // A new object is created (POST), not applied: if someone else created one of
    // that name since we looked, the create fails instead of taking theirs over.
    let write = || async {
        if existing.is_none() {
            create_member(&api, &body).await
        } else {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(&obj.name_any(), &params, &Patch::Apply(&body))
                .await
        }
    };
    let mut result = write().await;
    if let (Err(kube::Error::Api(s)), Some(ns)) = (&result, &obj.metadata.namespace) {
        if s.code == 404 && ctx.kind.namespaced {
            if let Err(e) = ensure_namespace(&client, ns).await {
                return Outcome::Rejected(format!("creating namespace {ns}: {e}"));
            }
            result = write().await;
        }
    }
    match result {
        Ok(applied) => Outcome::Applied(Box::new(applied)),
        // Created by someone else between our look and our create: theirs stays.
        Err(kube::Error::Api(s)) if existing.is_none() && s.code == 409 => Outcome::Conflict,
        Err(e) if is_unreachable(&e) => Outcome::Unreachable(e.to_string()),
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

async fn create_member(
    api: &Api<DynamicObject>,
    body: &Value,
) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject =
        serde_json::from_value(body.clone()).map_err(kube::Error::SerdeError)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.create(&params, &object).await
}

/// The replicas of each selected cluster, from the distribute hook. `Err` holds the
/// event to record: the object is left as it is in every member.
async fn plan_replicas(
    ctx: &Context,
    obj: &DynamicObject,
    selected: &[String],
    members: &[Member],
    existing: &[Result<Option<DynamicObject>, kube::Error>],
) -> Result<BTreeMap<String, u32>, (&'static str, String)> {
    let total = obj
        .data
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .min(u64::from(u32::MAX)) as u32;
    let preferences = match annotation(obj, PREFERENCES_ANNOTATION) {
        None => None,
        Some(text) => Some(serde_json::from_str::<Preferences>(text).map_err(|e| {
            (
                "InvalidPreferences",
                format!("{PREFERENCES_ANNOTATION} is not valid: {e}; members left as they were"),
            )
        })?),
    };
    let mut current = BTreeMap::new();
    let mut capacity = BTreeMap::new();
    for (member, found) in members.iter().zip(existing) {
        let name = member.cluster.name_any();
        if !selected.contains(&name) {
            continue;
        }
        if let Ok(Some(o)) = found {
            if owned(o) {
                let running = o
                    .data
                    .pointer("/spec/replicas")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                current.insert(name.clone(), running.min(u64::from(u32::MAX)) as u32);
            }
        }
        if let Some(c) = member.cluster.capacity() {
            capacity.insert(name, c);
        }
    }
    // Replicas go to the selected members that are Ready; one that is away keeps
    // the object (it converges when back) but its replicas run elsewhere meanwhile,
    // as with the original federation. With no member ready, spread as selected.
    let ready: Vec<String> = members
        .iter()
        .map(|m| m.cluster.name_any())
        .zip(members.iter().map(|m| m.cluster.is_ready()))
        .filter(|(name, ready)| *ready && selected.contains(name))
        .map(|(name, _)| name)
        .collect();
    let candidates = if ready.is_empty() {
        selected.to_vec()
    } else {
        ready
    };
    current.retain(|name, _| candidates.contains(name));
    let mut request = DistributeRequest {
        object: key(obj),
        total_replicas: total,
        clusters: selected.to_vec(),
        preferences,
        current,
        capacity,
    };
    // Warn about names that match no selected cluster, not about members away.
    for warning in preference_warnings(&request) {
        publish(ctx, obj, EventType::Warning, "UnknownCluster", warning).await;
    }
    request.clusters = candidates;
    let plugin = annotation(obj, DISTRIBUTE_PLUGIN_ANNOTATION).map(str::to_string);
    let registry = ctx.shared.registry.clone();
    let answer = tokio::task::spawn_blocking(move || {
        registry
            .for_hook(Hook::Distribute, plugin.as_deref())
            .and_then(|p| p.distribute(&request))
    })
    .await
    .map_err(|e| ("PluginError", format!("distribute task failed: {e}")))?;
    match answer {
        Ok(out) => {
            if !out.overflow.is_empty() {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    "Overflow",
                    format!("replicas beyond member capacity: {:?}", out.overflow),
                )
                .await;
            }
            // Selected clusters missing from the plan get 0 where it is applied.
            Ok(out.plan)
        }
        Err(e) => Err(("PluginError", format!("{e}; members left as they were"))),
    }
}

async fn select(
    ctx: &Context,
    obj: &DynamicObject,
    members: &[Member],
) -> Result<Vec<String>, String> {
    let request = SelectRequest {
        object: ObjectRef {
            kind: ctx.kind.resource.kind.clone(),
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.name_any(),
            labels: obj.labels().clone().into_iter().collect(),
            annotations: obj.annotations().clone().into_iter().collect(),
        },
        clusters: members.iter().map(|m| m.cluster.to_info()).collect(),
    };
    let plugin = annotation(obj, SELECT_PLUGIN_ANNOTATION).map(str::to_string);
    let registry = ctx.shared.registry.clone();
    let mut chosen = tokio::task::spawn_blocking(move || {
        registry
            .for_hook(Hook::Select, plugin.as_deref())
            .and_then(|p| p.select(&request))
    })
    .await
    .map_err(|e| format!("select task failed: {e}"))?
    .map_err(|e| e.to_string())?;
    // Highest score first; the distribute hook sees clusters in this order.
    chosen.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| a.cluster.cmp(&b.cluster))
    });
    Ok(chosen.into_iter().map(|s| s.cluster).collect())
}

async fn apply(
    obj: &DynamicObject,
    ctx: &Context,
    api: &Api<DynamicObject>,
) -> Result<Action, Error> {
    // Our own writes to the object (the placement annotation, the finalizer) come
    // back as watch events. Right after a complete propagation of the same content,
    // to the same members with the same plugins, there is nothing to do; the
    // periodic resync below still looks at the members.
    let fingerprint = fingerprint(obj, &ctx.shared);
    let uid = obj.metadata.uid.clone().unwrap_or_else(|| key(obj));
    let fresh = ctx
        .shared
        .applied
        .lock()
        .ok()
        .and_then(|m| m.get(&uid).copied())
        .is_some_and(|(f, at)| f == fingerprint && at.elapsed() < RECENT);
    if fresh {
        return Ok(resync(ctx));
    }
    let members = ctx.shared.members.snapshot();
    let selected = match select(ctx, obj, &members).await {
        Ok(s) => s,
        Err(e) => {
            publish(
                ctx,
                obj,
                EventType::Warning,
                "PluginError",
                format!("{e}; members left as they were"),
            )
            .await;
            return Ok(Action::requeue(backoff(&ctx.shared, obj, true)));
        }
    };
    let name = obj.name_any();
    let existing: Vec<_> = futures::future::join_all(members.iter().map(|m| async {
        match &m.client {
            Some(c) => get_existing(&member_api(c.clone(), &ctx.kind, obj), &name).await,
            None => Ok(None),
        }
    }))
    .await;
    let plan = if ctx.kind.replicas {
        match plan_replicas(ctx, obj, &selected, &members, &existing).await {
            Ok(plan) => Some(plan),
            Err((reason, note)) => {
                publish(ctx, obj, EventType::Warning, reason, note).await;
                // A fixed object is a new change; nothing to retry until then.
                return Ok(Action::await_change());
            }
        }
    } else {
        None
    };
    let adopt = annotation(obj, ADOPT_ANNOTATION) == Some("true");
    let work = members.iter().zip(existing).map(|(member, found)| {
        let cluster = member.cluster.name_any();
        let chosen = selected.contains(&cluster);
        let replicas = plan.as_ref().map(|p| p.get(&cluster).copied().unwrap_or(0));
        async move {
            if chosen {
                (
                    cluster,
                    Some(apply_member(ctx, obj, member, found, replicas, adopt).await),
                )
            } else {
                (cluster, remove_member(ctx, obj, member, found).await)
            }
        }
    });
    let outcomes = futures::future::join_all(work).await;
    let mut retry = false;
    let mut placement = BTreeMap::new();
    for (cluster, outcome) in &outcomes {
        let Some(outcome) = outcome else { continue };
        let state = match outcome {
            Outcome::Applied(applied) => {
                let mut entry = json!({"state": "Applied"});
                if ctx.kind.replicas {
                    for f in ["replicas", "readyReplicas", "availableReplicas"] {
                        let spec_or_status = if f == "replicas" { "spec" } else { "status" };
                        let n = applied
                            .data
                            .pointer(&format!("/{spec_or_status}/{f}"))
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        entry[f] = n.into();
                    }
                }
                entry
            }
            Outcome::Unreachable(e) => {
                retry = true;
                publish(
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
                publish(ctx, obj, EventType::Warning, "Conflict", format!(
                    "cluster {cluster} already has {} {name} not created by fedwasm; left untouched (set {ADOPT_ANNOTATION}: \"true\" to take it over)",
                    ctx.kind.resource.kind)).await;
                json!({"state": "Conflict"})
            }
            Outcome::Rejected(e) => {
                publish(
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
        placement.insert(cluster.clone(), state);
    }
    let previous = annotation(obj, PLACEMENT_ANNOTATION)
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .unwrap_or(Value::Null);
    let placement = json!(placement);
    if previous != placement {
        // Events for where the object is (state and replicas), not for status moves.
        let shape = |v: &Value| -> BTreeMap<String, (Value, Value)> {
            v.as_object()
                .map(|m| {
                    m.iter()
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
            publish(ctx, obj, EventType::Normal, reason, summary.join(", ")).await;
        }
        let patch =
            json!({"metadata": {"annotations": {PLACEMENT_ANNOTATION: placement.to_string()}}});
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| Error::kube("writing the placement annotation", e))?;
    }
    aggregate_status(ctx, obj, api, &outcomes).await?;
    if retry {
        return Ok(Action::requeue(backoff(&ctx.shared, obj, true)));
    }
    backoff(&ctx.shared, obj, false);
    if let Ok(mut applied) = ctx.shared.applied.lock() {
        applied.insert(uid, (fingerprint, Instant::now()));
    }
    Ok(resync(ctx))
}

/// How long after a complete propagation an unchanged object is not propagated
/// again (shorter than the status resync, so that still reads the members).
const RECENT: Duration = Duration::from_secs(2);

/// Members' status moves without telling the federation: look again now and then.
fn resync(ctx: &Context) -> Action {
    if ctx.kind.replicas || ctx.kind.resource.kind == "Service" {
        Action::requeue(Duration::from_secs(5))
    } else {
        Action::requeue(Duration::from_secs(300))
    }
}

/// What a propagation depends on: the object's content (without what fedwasm
/// itself writes on it), the members' phases and the plugin generations.
fn fingerprint(obj: &DynamicObject, shared: &Shared) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // Not `status`: fedwasm writes the aggregated status itself.
    if let Some(fields) = obj.data.as_object() {
        for (k, v) in fields.iter().filter(|(k, _)| k.as_str() != "status") {
            (k, v.to_string()).hash(&mut hasher);
        }
    }
    obj.metadata.labels.hash(&mut hasher);
    obj.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != PLACEMENT_ANNOTATION)
        .for_each(|kv| kv.hash(&mut hasher));
    obj.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    (*shared.members.subscribe().borrow()).hash(&mut hasher);
    (*shared.registry.subscribe().borrow()).hash(&mut hasher);
    hasher.finish()
}

/// Removes the object from a member that is no longer selected, if fedwasm made it.
async fn remove_member(
    ctx: &Context,
    obj: &DynamicObject,
    member: &Member,
    found: Result<Option<DynamicObject>, kube::Error>,
) -> Option<Outcome> {
    let client = member.client.clone()?;
    match found {
        Ok(Some(o)) if owned(&o) => {
            let cluster = member.cluster.name_any();
            match member_api(client, &ctx.kind, obj)
                .delete(&obj.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    publish(
                        ctx,
                        obj,
                        EventType::Normal,
                        "Removed",
                        format!("removed from cluster {cluster}: no longer selected"),
                    )
                    .await;
                    None
                }
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => Some(Outcome::Unreachable(e.to_string())),
            }
        }
        Ok(_) => None,
        Err(e) if is_unreachable(&e) => Some(Outcome::Unreachable(e.to_string())),
        Err(_) => None,
    }
}

/// Deletes the object from every member that has fedwasm's copy. Fails (and keeps
/// the finalizer) while a member that may hold a copy cannot be reached.
async fn cleanup(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    if let (Some(uid), Ok(mut applied)) = (&obj.metadata.uid, ctx.shared.applied.lock()) {
        applied.remove(uid);
    }
    let members = ctx.shared.members.snapshot();
    let name = obj.name_any();
    let results = futures::future::join_all(members.iter().map(|m| async {
        let Some(client) = m.client.clone() else {
            return Ok(());
        };
        let api = member_api(client, &ctx.kind, obj);
        match api.get_opt(&name).await {
            Ok(Some(o)) if owned(&o) => match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(format!("{}: {e}", m.cluster.name_any())),
            },
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{}: {e}", m.cluster.name_any())),
        }
    }))
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !failed.is_empty() {
        publish(
            ctx,
            obj,
            EventType::Warning,
            "DeleteBlocked",
            format!("cannot delete from {failed:?} yet; will retry"),
        )
        .await;
        return Err(Error::Config(format!("deleting from members: {failed:?}")));
    }
    publish(
        ctx,
        obj,
        EventType::Normal,
        "Deleted",
        "deleted from every member".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// Sums the members' replica counts (replica kinds) or lists their load-balancer
/// addresses (Services) into the federation object's status.
async fn aggregate_status(
    ctx: &Context,
    obj: &DynamicObject,
    api: &Api<DynamicObject>,
    outcomes: &[(String, Option<Outcome>)],
) -> Result<(), Error> {
    let applied = outcomes.iter().filter_map(|(_, o)| match o {
        Some(Outcome::Applied(a)) => Some(a),
        _ => None,
    });
    let status = if ctx.kind.replicas {
        let mut sums = BTreeMap::from([
            ("replicas", 0u64),
            ("readyReplicas", 0),
            ("availableReplicas", 0),
        ]);
        for a in applied {
            for (field, sum) in sums.iter_mut() {
                *sum += a
                    .data
                    .pointer(&format!("/status/{field}"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
        }
        json!(sums)
    } else if ctx.kind.resource.kind == "Service" {
        let mut ingress: Vec<Value> = applied
            .filter_map(|a| {
                a.data
                    .pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .cloned()
            })
            .flatten()
            .collect();
        ingress.sort_by_key(|v| v.to_string());
        ingress.dedup();
        json!({"loadBalancer": {"ingress": ingress}})
    } else {
        return Ok(());
    };
    let current = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let unchanged = status
        .as_object()
        .map(|m| {
            m.iter().all(|(k, v)| {
                current.get(k) == Some(v)
                    || (v.as_array().is_some_and(|a| a.is_empty())
                        && current.pointer(&format!("/{k}/ingress")).is_none())
            })
        })
        .unwrap_or(true);
    if unchanged {
        return Ok(());
    }
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map_err(|e| Error::kube("writing the aggregated status", e))?;
    Ok(())
}
