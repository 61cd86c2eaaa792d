//! Placement policies at run time: both kinds kept by watches, the policy that
//! governs each object, re-placement of exactly the objects whose governing policy
//! changed, and each policy's status (how many objects it governs, its ties).
//!
//! The rules (which policy wins, what a selector matches) are in
//! [`crate::policy`]; this module only applies them to the live objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedwasm_sdk::{Hook, Preferences};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::kinds::Kind;
use super::{AbortOnDrop, FIELD_MANAGER};
use crate::policy::{
    choose, Candidate, ClusterPlacementPolicy, PlacementPolicy, PolicyBody, PolicyStatus, Scope,
};
use crate::runtime::default_plugin;

/// The policy that governs one object, as a decision uses it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Applied {
    /// `ClusterPlacementPolicy/<name>` or `PlacementPolicy/<namespace>/<name>`.
    pub reference: String,
    /// The policy itself (shared with the store, not copied).
    pub policy: Governor,
    /// Other policies of the same scope and priority it beat only by name.
    pub ties: Vec<String>,
    /// What is wrong with the policy; a policy with problems places nothing.
    pub problems: Vec<String>,
    /// `spec.distribute.preferences`, parsed (when valid).
    pub preferences: Option<Preferences>,
}

/// The plugin and settings for one hook of an object a policy governs. The
/// object's own annotation wins: when it names another plugin than the policy's
/// (or than the hook's default, where the policy names none), the policy's
/// settings, meant for that plugin, are not passed on.
pub(crate) fn choice(
    hook: Hook,
    annotation: Option<&str>,
    policy_plugin: Option<&str>,
    settings: String,
) -> (String, String) {
    let policy_plugin = policy_plugin.unwrap_or(default_plugin(hook));
    match annotation {
        Some(chosen) if chosen != policy_plugin => (chosen.to_string(), String::new()),
        _ => (policy_plugin.to_string(), settings),
    }
}

/// The policy object that governs, of either kind.
#[derive(Clone, Debug)]
pub(crate) enum Governor {
    Cluster(Arc<ClusterPlacementPolicy>),
    Namespaced(Arc<PlacementPolicy>),
}

/// The same policy at the same version.
impl PartialEq for Governor {
    fn eq(&self, other: &Self) -> bool {
        let id = |g: &Governor| match g {
            Governor::Cluster(p) => (Scope::Cluster, p.meta().uid.clone(), g.version()),
            Governor::Namespaced(p) => (Scope::Namespaced, p.meta().uid.clone(), g.version()),
        };
        id(self) == id(other)
    }
}

impl Governor {
    fn version(&self) -> String {
        match self {
            Governor::Cluster(p) => p.resource_version(),
            Governor::Namespaced(p) => p.resource_version(),
        }
        .unwrap_or_default()
    }

    fn validate(&self) -> Vec<String> {
        match self {
            Governor::Cluster(p) => p.validate(),
            Governor::Namespaced(p) => p.validate(),
        }
    }
}

impl Applied {
    /// The governing policy's spec.
    pub fn body(&self) -> &PolicyBody {
        match &self.policy {
            Governor::Cluster(p) => &p.spec.body,
            Governor::Namespaced(p) => &p.spec.body,
        }
    }

    /// The policy's `resourceVersion`: a change of spec is a new one.
    pub fn version(&self) -> String {
        self.policy.version()
    }

    /// The policy as an event's subject.
    pub fn object_reference(&self) -> ObjectReference {
        match &self.policy {
            Governor::Cluster(p) => p.object_ref(&()),
            Governor::Namespaced(p) => p.object_ref(&()),
        }
    }
}

/// Every placement policy at one moment: what a decision resolves against.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicySet {
    pub cluster: Vec<Arc<ClusterPlacementPolicy>>,
    pub namespaced: Vec<Arc<PlacementPolicy>>,
}

impl PolicySet {
    /// Lists both kinds from the federation plane (a preview, which keeps no
    /// watch). A plane without the CRDs has no policies.
    pub async fn list(federation: &Client) -> Result<Self, kube::Error> {
        Ok(Self {
            cluster: list_all(federation).await?,
            namespaced: list_all(federation).await?,
        })
    }

    /// The policy that governs an object of `kind`, if any.
    pub fn resolve(&self, kind: &Kind, obj: &(impl ResourceExt + ?Sized)) -> Option<Applied> {
        self.resolve_as(&kind.resource, kind.namespaced, obj)
    }

    /// The policy that governs an object of the resource `resource`, if any.
    pub fn resolve_as(
        &self,
        resource: &ApiResource,
        namespaced: bool,
        obj: &(impl ResourceExt + ?Sized),
    ) -> Option<Applied> {
        let namespace = obj.namespace().filter(|_| namespaced);
        let labels = obj.labels().clone().into_iter().collect::<BTreeMap<_, _>>();
        let name = obj.name_any();
        let (api_version, kind_name) = (&resource.api_version, &resource.kind);
        let (cluster, namespaced) = (&self.cluster, &self.namespaced);
        let mut candidates: Vec<Candidate<'_>> = cluster
            .iter()
            .filter(|p| p.selects(api_version, kind_name, namespace.as_deref(), &name, &labels))
            .map(|p| Candidate::cluster(p))
            .collect();
        candidates.extend(
            namespaced
                .iter()
                .filter(|p| p.selects(api_version, kind_name, namespace.as_deref(), &name, &labels))
                .map(|p| Candidate::namespaced(p)),
        );
        let choice = choose(candidates)?;
        let winner = choice.winner;
        let policy = match winner.scope {
            Scope::Cluster => cluster
                .iter()
                .find(|p| p.name_any() == winner.name)
                .cloned()
                .map(Governor::Cluster),
            Scope::Namespaced => namespaced
                .iter()
                .find(|p| {
                    p.name_any() == winner.name && p.namespace().as_deref() == winner.namespace
                })
                .cloned()
                .map(Governor::Namespaced),
        }?;
        let mut problems = policy.validate();
        if winner
            .body
            .customize
            .as_ref()
            .is_some_and(|c| c.plugin.as_deref().unwrap_or_default().is_empty())
        {
            problems.push(
                "spec.customize.plugin: required (the customize hook has no default plugin)".into(),
            );
        }
        let preferences = winner
            .body
            .distribute
            .as_ref()
            .and_then(|d| d.preferences.clone())
            .and_then(|p| match serde_json::from_value::<Preferences>(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(format!("spec.distribute.preferences: {e}"));
                    None
                }
            });
        Some(Applied {
            reference: winner.policy_ref(),
            policy,
            ties: choice.ties.iter().map(|t| t.to_string()).collect(),
            problems,
            preferences,
        })
    }
}

/// Every object of one policy kind; none where the plane has no such CRD.
async fn list_all<K>(federation: &Client) -> Result<Vec<Arc<K>>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match Api::<K>::all(federation.clone())
        .list(&Default::default())
        .await
    {
        Ok(list) => Ok(list.items.into_iter().map(Arc::new).collect()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Which policy governs one object, as last decided.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Governing {
    reference: String,
    version: String,
    ties: Vec<String>,
}

/// `(kind, namespace/name)`.
type ObjectKey = (String, String);

/// Both kinds of policies and who governs what.
pub(crate) struct Policies {
    cluster: Store<ClusterPlacementPolicy>,
    namespaced: Store<PlacementPolicy>,
    governed: Mutex<HashMap<ObjectKey, Governing>>,
    /// Bumped whenever a policy changes.
    changed: watch::Receiver<u64>,
    /// Bumped whenever what a policy governs changes (for the status writer).
    governed_changed: watch::Sender<u64>,
    /// True once both kinds have been listed. (A reflector store's own
    /// `wait_until_ready` wakes only the last of several waiters: the other
    /// controllers slept until their 30 s bound.)
    listed: watch::Receiver<bool>,
}

/// When the policy stores must have listed before the first decision.
const READY_WITHIN: Duration = Duration::from_secs(30);

impl Policies {
    /// Starts the watches of both policy kinds. The returned guards stop them.
    pub fn start(federation: &Client) -> (Arc<Self>, Vec<AbortOnDrop>) {
        let (changed_tx, changed) = watch::channel(0u64);
        let changed_tx = Arc::new(changed_tx);
        let (cluster, cluster_task) = follow(
            Api::<ClusterPlacementPolicy>::all(federation.clone()),
            changed_tx.clone(),
        );
        let (namespaced, namespaced_task) =
            follow(Api::<PlacementPolicy>::all(federation.clone()), changed_tx);
        let (policies, listing) = Self::with_stores(cluster, namespaced, changed);
        (policies, vec![cluster_task, namespaced_task, listing])
    }

    /// Over stores another task fills.
    fn with_stores(
        cluster: Store<ClusterPlacementPolicy>,
        namespaced: Store<PlacementPolicy>,
        changed: watch::Receiver<u64>,
    ) -> (Arc<Self>, AbortOnDrop) {
        let (listed_tx, listed) = watch::channel(false);
        let (cluster_store, namespaced_store) = (cluster.clone(), namespaced.clone());
        let listing = AbortOnDrop(tokio::spawn(async move {
            // One waiter per store; every controller waits on the channel.
            let _ = cluster_store.wait_until_ready().await;
            let _ = namespaced_store.wait_until_ready().await;
            let _ = listed_tx.send(true);
        }));
        let policies = Arc::new(Self {
            cluster,
            namespaced,
            governed: Mutex::default(),
            changed,
            governed_changed: watch::channel(0).0,
            listed,
        });
        (policies, listing)
    }

    /// Waits (bounded) until both kinds have been listed once, so the first
    /// decisions already see the policies.
    pub async fn ready(&self) {
        let mut listed = self.listed.clone();
        if tokio::time::timeout(READY_WITHIN, listed.wait_for(|l| *l))
            .await
            .is_err()
        {
            tracing::warn!(
                "placement policies not listed after 30 s; deciding without them until they are"
            );
        }
    }

    /// The policies as they are now.
    pub fn set(&self) -> PolicySet {
        PolicySet {
            cluster: self.cluster.state(),
            namespaced: self.namespaced.state(),
        }
    }

    /// Records which policy governs an object (none: forgets it).
    pub fn record(&self, kind: &Kind, key: String, applied: Option<&Applied>) {
        let key = (kind.resource.kind.clone(), key);
        let now = applied.map(|a| Governing {
            reference: a.reference.clone(),
            version: a.version(),
            ties: a.ties.clone(),
        });
        let mut governed = self.governed.lock().unwrap_or_else(|p| p.into_inner());
        let before = match &now {
            Some(g) => governed.insert(key, g.clone()),
            None => governed.remove(&key),
        };
        if before != now {
            self.governed_changed.send_modify(|n| *n += 1);
        }
    }

    /// The objects of `kind` in `store` whose governing policy (or its spec, or the
    /// policies it ties with) is not the one their last decision used: what a
    /// policy change re-places.
    fn stale(&self, kind: &Kind, objects: &[Arc<DynamicObject>]) -> Vec<ObjectRef<DynamicObject>> {
        let governed = self
            .governed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let set = self.set();
        objects
            .iter()
            .filter(|obj| !kind.skip(obj))
            .filter(|obj| {
                let now = set.resolve(kind, obj.as_ref());
                let before =
                    governed.get(&(kind.resource.kind.clone(), super::controller::key(obj)));
                match (now, before) {
                    (None, None) => false,
                    (Some(a), Some(g)) => {
                        a.reference != g.reference || a.version() != g.version || a.ties != g.ties
                    }
                    _ => true,
                }
            })
            .map(|obj| ObjectRef::from_obj_with(obj.as_ref(), kind.resource.clone()))
            .collect()
    }

    /// A stream of the objects of `kind` to re-place after each policy change.
    pub fn changes_for(
        self: &Arc<Self>,
        kind: Kind,
        store: Store<DynamicObject>,
    ) -> impl futures::Stream<Item = ObjectRef<DynamicObject>> + Send + 'static {
        let policies = self.clone();
        let rx = self.changed.clone();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
        .flat_map(move |()| {
            // Let a burst of policy events (a `kubectl apply -f` of several) settle.
            let stale = policies.stale(&kind, &store.state());
            futures::stream::iter(stale)
        })
    }

    /// Per policy reference: how many objects it governs and the policies it tied
    /// with.
    fn tally(&self) -> BTreeMap<String, (u32, BTreeSet<String>)> {
        let governed = self.governed.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, (u32, BTreeSet<String>)> = BTreeMap::new();
        for g in governed.values() {
            let entry = out.entry(g.reference.clone()).or_default();
            entry.0 += 1;
            entry.1.extend(g.ties.iter().cloned());
        }
        out
    }

    /// Keeps every policy's status (`governed`, `conflicts`, `observedGeneration`)
    /// true, writing only policies whose status changed. Runs until dropped.
    pub async fn write_status(self: Arc<Self>, federation: Client) {
        let mut governed = self.governed_changed.subscribe();
        let mut changed = self.changed.clone();
        loop {
            let tally = self.tally();
            for policy in self.cluster.state() {
                let api = Api::<ClusterPlacementPolicy>::all(federation.clone());
                let reference = crate::policy::policy_ref(Scope::Cluster, None, &policy.name_any());
                write_one(
                    &api,
                    policy.as_ref(),
                    policy.status.as_ref(),
                    tally.get(&reference),
                )
                .await;
            }
            for policy in self.namespaced.state() {
                let ns = policy.namespace().unwrap_or_default();
                let api = Api::<PlacementPolicy>::namespaced(federation.clone(), &ns);
                let reference =
                    crate::policy::policy_ref(Scope::Namespaced, Some(&ns), &policy.name_any());
                write_one(
                    &api,
                    policy.as_ref(),
                    policy.status.as_ref(),
                    tally.get(&reference),
                )
                .await;
            }
            tokio::select! {
                r = governed.changed() => if r.is_err() { return },
                r = changed.changed() => if r.is_err() { return },
            }
            // Coalesce: a re-placement of many objects moves the counts many times.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Writes one policy's status when it differs from what it says.
async fn write_one<K>(
    api: &Api<K>,
    policy: &K,
    current: Option<&PolicyStatus>,
    tally: Option<&(u32, BTreeSet<String>)>,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let (governed, ties) = tally.cloned().unwrap_or_default();
    let want = PolicyStatus {
        governed: Some(governed),
        conflicts: (!ties.is_empty()).then(|| ties.into_iter().collect()),
        observed_generation: policy.meta().generation,
    };
    if current == Some(&want) {
        return;
    }
    let name = policy.meta().name.clone().unwrap_or_default();
    let patch = json!({"status": {
        "governed": want.governed,
        "conflicts": want.conflicts,
        "observedGeneration": want.observed_generation,
    }});
    if let Err(e) = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(policy = %name, error = %e, "cannot write the policy's status");
    }
}

/// A watch of one policy kind into a store, bumping `changed` on every event.
fn follow<K>(api: Api<K>, changed: Arc<watch::Sender<u64>>) -> (Store<K>, AbortOnDrop)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let task = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(move |event| {
            let changed = changed.clone();
            async move {
                match event {
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))
                    | Ok(watcher::Event::InitDone) => changed.send_modify(|n| *n += 1),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "placement policy watch error"),
                }
            }
        });
    (store, AbortOnDrop(tokio::spawn(task)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every controller waits for the policies before its first decision: all of
    /// them must go on once both kinds are listed, not only the last to wait.
    #[tokio::test]
    async fn every_waiter_goes_on_once_both_kinds_are_listed() {
        let (cluster, mut cluster_writer) = reflector::store();
        let (namespaced, mut namespaced_writer) = reflector::store();
        let (policies, _listing) = Policies::with_stores(cluster, namespaced, watch::channel(0).1);
        let waiters: Vec<_> = (0..7)
            .map(|_| {
                let policies = policies.clone();
                tokio::spawn(async move { policies.ready().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "nothing listed yet"
        );
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            cluster_writer.apply_watcher_event(&event);
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            namespaced_writer.apply_watcher_event(&event);
        }
        // Well within the 30 s bound a lost wake-up would wait for.
        tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(waiters))
            .await
            .expect("every waiter went on");
    }

    #[test]
    fn an_annotation_naming_another_plugin_drops_the_policys_settings() {
        let settings = || r#"{"regions": ["asia-east1"]}"#.to_string();
        let with = |plugin: &str, settings: String| (plugin.to_string(), settings);
        assert_eq!(
            choice(Hook::Select, None, Some("mine"), settings()),
            with("mine", settings())
        );
        assert_eq!(
            choice(Hook::Select, Some("mine"), Some("mine"), settings()),
            with("mine", settings())
        );
        assert_eq!(
            choice(Hook::Select, Some("other"), Some("mine"), settings()),
            with("other", String::new())
        );
        // The policy names no plugin: its settings are for the hook's default.
        assert_eq!(
            choice(Hook::Select, None, None, settings()),
            with("label-selector", settings())
        );
        assert_eq!(
            choice(Hook::Select, Some("label-selector"), None, settings()),
            with("label-selector", settings())
        );
        assert_eq!(
            choice(Hook::Select, Some("other"), None, settings()),
            with("other", String::new())
        );
    }
}
