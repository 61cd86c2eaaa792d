//! One controller per kind: `reconcile` places an object in the members (or removes
//! it from them when it is deleted), `error_policy` retries failures with backoff.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

use super::kinds::Kind;
use super::mirror::Mirrors;
use super::policies::Policies;
use super::{aggregate, apply, events, place, AbortOnDrop, Error, FINALIZER};
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::placer::Placer;
use crate::recorder::Recorder;

/// What every controller shares: one recorder (it de-duplicates events), the
/// member view, the placer, the metrics.
#[derive(Clone)]
pub(crate) struct Shared {
    pub federation: Client,
    pub placer: Placer,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub recorder: Arc<Recorder>,
    /// The federation plane's Namespaces, kept by one watch for every controller.
    pub namespaces: Store<Namespace>,
    /// The placement policies, and which governs what.
    pub policies: Arc<Policies>,
}

impl Shared {
    pub fn new(
        federation: Client,
        placer: Placer,
        fleet: Arc<Fleet>,
        metrics: Arc<Metrics>,
        namespaces: Store<Namespace>,
        policies: Arc<Policies>,
    ) -> Self {
        let recorder = Arc::new(Recorder::new(
            federation.clone(),
            "fedwasm",
            std::env::var("HOSTNAME").ok(),
        ));
        Self {
            federation,
            placer,
            fleet,
            metrics,
            recorder,
            namespaces,
            policies,
        }
    }
}

/// One controller's context.
pub struct Context {
    pub(crate) shared: Shared,
    pub(crate) kind: Kind,
    /// Consecutive failed reconciles per object of this kind, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// fedwasm's copies in each member, kept by watches, and what it wrote there.
    pub(crate) mirrors: Arc<Mirrors>,
}

/// Watches one kind in the federation plane and reconciles each object; every
/// object is re-placed when the members change or a plugin is swapped, and the
/// objects of a namespace when its federated Namespace changes.
pub(crate) async fn run(
    shared: Shared,
    kind: Kind,
    namespace_changes: Option<ReflectHandle<Namespace>>,
) {
    let api: Api<DynamicObject> = Api::all_with(shared.federation.clone(), &kind.resource);
    let triggers = futures::stream::select(
        epochs(shared.fleet.subscribe()),
        changes(shared.placer.subscribe()),
    );
    let name = kind.resource.kind.clone();
    let namespaced = kind.namespaced;
    let (mirrors, copies_changed) = Mirrors::new(kind.clone());
    let following = tokio::spawn(mirrors.clone().follow(shared.fleet.subscribe()));
    let _following = AbortOnDrop(following);
    let ctx = Arc::new(Context {
        shared,
        kind: kind.clone(),
        failures: Default::default(),
        mirrors,
    });
    // The first decisions must already see the policies.
    ctx.shared.policies.ready().await;
    tracing::info!(kind = %name, "propagation controller started");
    // The store keeps every federation object of the kind: without their field
    // ownership entries (a tree of every field, per manager), which no decision
    // reads.
    let writer = reflector::store::Writer::new(kind.resource.clone());
    let reader = writer.as_reader();
    let objects = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(|o| o.managed_fields_mut().clear()),
    )
    .applied_objects();
    let mut controller = Controller::for_stream_with(objects, reader, kind.resource.clone())
        .reconcile_all_on(triggers)
        // A copy changed in a member (status, a hand edit, a deletion): its
        // federation object is reconciled.
        .reconcile_on(copies_changed)
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILES_AT_ONCE));
    // A policy changed: the objects it governed and those it now governs.
    let policy_changes = ctx
        .shared
        .policies
        .changes_for(kind.clone(), controller.store());
    controller = controller.reconcile_on(policy_changes);
    if let (true, Some(changes)) = (namespaced, namespace_changes) {
        // A namespaced object goes where its federated Namespace goes. The change
        // comes from the shared Namespace store, once that store has it: the
        // decision reads the Namespace from there.
        let store = controller.store();
        let resource = kind.resource.clone();
        controller = controller.watches_shared_stream(changes, move |ns| {
            let ns = ns.name_any();
            store
                .state()
                .into_iter()
                .filter(|o| o.metadata.namespace.as_deref() == Some(ns.as_str()))
                .map(|o| ObjectRef::from_obj_with(o.as_ref(), resource.clone()))
                .collect::<Vec<_>>()
        });
    }
    controller
        .run(
            |obj, ctx| guard_panics(reconcile(obj, ctx)),
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
    tracing::error!(kind = %name, "propagation controller stopped");
}

/// Turns a panic inside `reconcile` into an error of that one object, so a bug hit
/// by one object cannot stop the controller for every other.
pub async fn guard_panics<F>(reconcile: F) -> Result<Action, Error>
where
    F: Future<Output = Result<Action, Error>>,
{
    match AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(%message, "a reconcile panicked");
            Err(Error::Panic(message))
        }
    }
}

/// A stream that yields each time the watched value changes.
fn changes(rx: tokio::sync::watch::Receiver<u64>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// A stream that yields each time the member view's epoch moves.
fn epochs(
    rx: tokio::sync::watch::Receiver<crate::fleet::Snapshot>,
) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold((rx, 0u64), |(mut rx, seen)| async move {
        loop {
            rx.changed().await.ok()?;
            let epoch = rx.borrow_and_update().epoch;
            if epoch != seen {
                return Some(((), (rx, epoch)));
            }
        }
    })
}

pub(crate) fn key(obj: &DynamicObject) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.name_any()
    )
}

/// Places one federation object in the members, or removes it from them when it is
/// being deleted. Failures are reported here (event, metric) and retried by
/// [`error_policy`].
#[tracing::instrument(skip_all, fields(kind = %ctx.kind.resource.kind, object = %key(&obj)))]
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.kind.skip(&obj) {
        return Ok(Action::await_change());
    }
    let api = ctx.federation_api(&obj);
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Finalizer::Apply(obj) => apply_object(&obj, &ctx, &api).await,
            Finalizer::Cleanup(obj) => apply::cleanup(&obj, &ctx).await,
        }
    })
    .await;
    // The finalizer is added with a patch that tests the list it read; a store a
    // step behind fedwasm's own previous add fails that test (422). Not a failure
    // of the object: look again once the store has caught up, quietly the first
    // few times (a 422 that persists is reported as a failure).
    if let Err(kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status))) = &result {
        let wait = ctx.backoff(&obj, true);
        if status.code == 422 && wait <= STORE_CATCH_UP {
            tracing::debug!(object = %key(&obj), "finalizer list moved under us; looking again");
            return Ok(Action::requeue(wait));
        }
    }
    let result = result.map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        kube::runtime::finalizer::Error::AddFinalizer(e)
        | kube::runtime::finalizer::Error::RemoveFinalizer(e) => {
            Error::federation("updating the finalizer", e)
        }
        other => Error::federation(
            "the finalizer",
            kube::Error::Service(other.to_string().into()),
        ),
    });
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    ctx.shared
        .metrics
        .observe_propagation(&ctx.kind.resource.kind, label);
    if let Err(e) = &result {
        events::report(&ctx, &obj, e).await;
    }
    result
}

/// Retries with exponential backoff per object (1 s … 60 s): a member that is away
/// is retried, never hammered.
pub fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = %ctx.kind.resource.kind, object = %key(&obj), error = %error, "reconcile failed");
    Action::requeue(ctx.backoff(&obj, true))
}

/// The longest wait between retries of one object.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after `failures` consecutive failures: 1 s, 2 s, 4 s … capped at
/// [`MAX_BACKOFF`].
pub fn backoff_after(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// Objects of one kind reconciled at once: each writes to every member, whose
/// requests are bounded (32 in flight per member); more would only queue there.
const RECONCILES_AT_ONCE: u16 = 64;

/// The longest quiet wait for a store a step behind fedwasm's own finalizer add
/// (the backoff's first three steps: 1 s, 2 s, 4 s).
const STORE_CATCH_UP: Duration = Duration::from_secs(4);

/// When to look again at an object whose write a member's cache has not shown yet.
const AWAITING_CACHE: Duration = Duration::from_secs(5);

impl Context {
    pub(crate) fn federation_api(&self, obj: &DynamicObject) -> Api<DynamicObject> {
        match &obj.metadata.namespace {
            Some(ns) if self.kind.namespaced => {
                Api::namespaced_with(self.shared.federation.clone(), ns, &self.kind.resource)
            }
            _ => Api::all_with(self.shared.federation.clone(), &self.kind.resource),
        }
    }

    /// Counts a failure (or clears the count) and returns the wait before a retry.
    fn backoff(&self, obj: &DynamicObject, failed: bool) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(obj);
        if !failed {
            failures.remove(&k);
            return Duration::ZERO;
        }
        let n = failures.entry(k).or_insert(0);
        *n = n.saturating_add(1);
        backoff_after(*n)
    }

    fn forget(&self, obj: &DynamicObject) {
        self.mirrors.forget(None, obj);
        self.shared.policies.record(&self.kind, key(obj), None);
    }

    /// Counts a write request to a member.
    pub(crate) fn wrote(&self, client: &crate::fleet::MemberClient, verb: &str) {
        self.shared
            .metrics
            .observe_member_write(client.cluster(), verb);
    }
}

/// Place → apply in each member → aggregate. Nothing is written where nothing
/// changed: a member copy that already is what the placement wants, a status or an
/// annotation that already says it.
async fn apply_object(
    obj: &DynamicObject,
    ctx: &Arc<Context>,
    api: &Api<DynamicObject>,
) -> Result<Action, Error> {
    let snapshot = ctx.shared.fleet.snapshot();
    let placement = place::place(ctx, obj, &snapshot).await?;
    let outcomes = apply::apply_all(ctx, obj, &snapshot, &placement).await;
    let policy = placement.policy.as_ref().map(|p| p.reference.as_str());
    aggregate::write(ctx, obj, api, &outcomes, policy).await?;
    let unreachable: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.outcome {
            Some(apply::Outcome::Unreachable(e)) => Some(format!("{}: {e}", o.cluster)),
            _ => None,
        })
        .collect();
    if !unreachable.is_empty() {
        return Err(Error::MembersUnreachable(unreachable));
    }
    ctx.backoff(obj, false);
    // Changes in the members come as watch events; a member whose cache is not
    // whole yet is looked at again after the kind's resync, one whose cache has not
    // taken in fedwasm's write yet sooner.
    if outcomes.iter().any(|o| o.awaiting_cache) {
        Ok(Action::requeue(AWAITING_CACHE))
    } else if ctx.mirrors.all_whole(&snapshot) {
        Ok(Action::await_change())
    } else {
        Ok(Action::requeue(ctx.kind.resync))
    }
}

pub(crate) fn forget(ctx: &Context, obj: &DynamicObject) {
    ctx.forget(obj);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_after(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn a_panicking_reconcile_is_an_error_of_that_object() {
        let result = guard_panics(async {
            if std::hint::black_box(true) {
                panic!("boom in reconcile");
            }
            Ok(Action::await_change())
        })
        .await;
        match result {
            Err(Error::Panic(message)) => assert!(message.contains("boom"), "{message}"),
            other => panic!("expected a Panic error, got {other:?}"),
        }
        assert_eq!(Error::Panic(String::new()).kind(), "panic");
    }
}
