//! What fedwasm holds in each member, kept by watches instead of asked for: one
//! cache per member and kind, of fedwasm's own copies only (by label).
//!
//! The controller reads these caches instead of GETting every member on every
//! reconcile, and every change to a copy (a member controller's status, a hand edit,
//! a deletion) reconciles its federation object: status is aggregated from these
//! events and drift is repaired from them. A member whose watch breaks relists on
//! its own; until its cache is whole again, reconciles ask that member directly
//! (under its deadline), so it delays no one else.
//!
//! Copies are kept small: the metadata fedwasm decides on, `spec.replicas` and
//! `status` (what the aggregation reads); the rest of each object is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::{Map, Value};

use super::kinds::Kind;
use super::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TEMPLATE_HASH_ANNOTATION};
use crate::fleet::{MemberClient, Snapshot};

/// What the cache of one member shows of one object.
pub(crate) enum Seen {
    /// The cache is not whole (starting, or relisting after a broken watch): ask the
    /// member.
    Unknown,
    /// fedwasm has no copy there (a copy someone else made may still exist), as of
    /// the member's `resourceVersion` `seen_up_to`: a copy written later may not
    /// have reached the cache yet.
    Absent {
        seen_up_to: u64,
    },
    Present(Arc<DynamicObject>),
}

/// The caches of one kind, in every member that has a client.
pub(crate) struct Mirrors {
    kind: Kind,
    caches: Mutex<HashMap<String, Cache>>,
    trigger: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
    /// Per (cluster, object): what fedwasm last wrote there.
    written: Arc<WrittenMap>,
    pending: Arc<PendingMap>,
}

type WrittenMap = Mutex<HashMap<(String, String), Written>>;

/// Per (cluster, object): the template of a write fedwasm has sent and not yet
/// had answered. Its watch event may come before the answer.
type PendingMap = Mutex<HashMap<(String, String), String>>;

struct Cache {
    client: MemberClient,
    store: Store<DynamicObject>,
    whole: Arc<AtomicBool>,
    /// The highest `resourceVersion` of any event the cache has taken in.
    seen_up_to: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mirrors {
    /// The caches of `kind`, and the stream of federation objects to reconcile
    /// because their copy changed in a member.
    pub fn new(
        kind: Kind,
    ) -> (
        Arc<Self>,
        impl futures::Stream<Item = ObjectRef<DynamicObject>> + Send + 'static,
    ) {
        let (trigger, changed) = mpsc::unbounded();
        let mirrors = Arc::new(Self {
            kind,
            caches: Default::default(),
            trigger,
            written: Default::default(),
            pending: Default::default(),
        });
        (mirrors, changed)
    }

    /// Keeps one cache per member with a client, following the member view until
    /// it closes. A member that leaves, or whose client is replaced (new
    /// credentials), gets its cache dropped or started again.
    pub async fn follow(self: Arc<Self>, mut members: tokio::sync::watch::Receiver<Snapshot>) {
        loop {
            let snapshot = members.borrow_and_update().clone();
            self.sync(&snapshot);
            if members.changed().await.is_err() {
                return;
            }
        }
    }

    fn sync(&self, snapshot: &Snapshot) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|cluster, cache| {
            snapshot
                .get(cluster)
                .and_then(|m| m.client.as_ref())
                .is_some_and(|c| c.same(&cache.client))
        });
        for member in snapshot.members.iter() {
            let Some(client) = &member.client else {
                continue;
            };
            let cluster = member.name();
            if caches.contains_key(&cluster) {
                continue;
            }
            let cache = self.start(client.clone());
            caches.insert(cluster, cache);
        }
    }

    fn start(&self, client: MemberClient) -> Cache {
        let writer = reflector::store::Writer::new(self.kind.resource.clone());
        let store = writer.as_reader();
        let whole = Arc::new(AtomicBool::new(false));
        let seen_up_to = Arc::new(AtomicU64::new(0));
        let follow = Follow {
            kind: self.kind.clone(),
            cluster: client.cluster().to_string(),
            store: store.clone(),
            whole: whole.clone(),
            seen_up_to: seen_up_to.clone(),
            written: self.written.clone(),
            pending: self.pending.clone(),
            trigger: self.trigger.clone(),
        };
        let task = tokio::spawn(watch(follow, client.clone(), writer));
        Cache {
            client,
            store,
            whole,
            seen_up_to,
            task,
        }
    }

    /// What `cluster`'s cache shows of the copy of `obj`.
    pub fn seen(&self, cluster: &str, obj: &DynamicObject) -> Seen {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cache) = caches.get(cluster) else {
            return Seen::Unknown;
        };
        if !cache.whole.load(Ordering::Acquire) {
            return Seen::Unknown;
        }
        match cache.store.get(&self.object_ref(obj)) {
            Some(copy) => Seen::Present(copy),
            None => Seen::Absent {
                seen_up_to: cache.seen_up_to.load(Ordering::Acquire),
            },
        }
    }

    /// What fedwasm last wrote to `obj` in `cluster`.
    pub fn written(&self, cluster: &str, obj: &DynamicObject) -> Option<Written> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(cluster.to_string(), record_key(obj)))
            .cloned()
    }

    pub fn remember(&self, cluster: &str, obj: &DynamicObject, written: Written) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((cluster.to_string(), record_key(obj)), written);
    }

    /// Marks a write of template `hash` to `obj` in `cluster` as sent, until the
    /// returned guard is dropped.
    pub fn sending(&self, cluster: &str, obj: &DynamicObject, hash: &str) -> Sending<'_> {
        let record = (cluster.to_string(), record_key(obj));
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.clone(), hash.to_string());
        Sending {
            pending: &self.pending,
            record,
        }
    }

    /// Forgets what fedwasm wrote to `obj` in `cluster`, or in every cluster.
    pub fn forget(&self, cluster: Option<&str>, obj: &DynamicObject) {
        let k = record_key(obj);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(c, o), _| !(*o == k && cluster.is_none_or(|x| x == c)));
    }

    /// Whether every member with a client has a whole cache.
    pub fn all_whole(&self, snapshot: &Snapshot) -> bool {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        snapshot
            .members
            .iter()
            .filter(|m| m.client.is_some())
            .all(|m| {
                caches
                    .get(&m.name())
                    .is_some_and(|c| c.whole.load(Ordering::Acquire))
            })
    }

    fn object_ref(&self, obj: &DynamicObject) -> ObjectRef<DynamicObject> {
        let r = ObjectRef::new_with(&obj.name_any(), self.kind.resource.clone());
        match &obj.metadata.namespace {
            Some(ns) if self.kind.namespaced => r.within(ns),
            _ => r,
        }
    }
}

/// What one member's watch task shares with the controller.
struct Follow {
    kind: Kind,
    cluster: String,
    store: Store<DynamicObject>,
    whole: Arc<AtomicBool>,
    seen_up_to: Arc<AtomicU64>,
    written: Arc<WrittenMap>,
    pending: Arc<PendingMap>,
    trigger: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
}

impl Follow {
    /// Whether a copy's event needs its federation object reconciled: not when it
    /// is only the echo of fedwasm's own write (the same copy, version and template
    /// fedwasm wrote, with the replicas and status it had then or had before).
    fn needs_reconcile(&self, copy: &DynamicObject) -> bool {
        let record = (self.cluster.clone(), record_key(copy));
        let written = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record)
            .cloned();
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record)
            .cloned();
        let before = self
            .store
            .get(&ObjectRef::from_obj_with(copy, self.kind.resource.clone()));
        !(echo(copy, before.as_deref(), written.as_ref())
            || echo_of_pending(copy, before.as_deref(), pending.as_deref()))
    }
}

/// A write fedwasm is sending: until it is answered, its watch event is known as
/// fedwasm's own. Dropping this (answered or failed) ends that.
pub(crate) struct Sending<'a> {
    pending: &'a PendingMap,
    record: (String, String),
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.record);
    }
}

/// Follows fedwasm's copies of one kind in one member: fills the store, marks it
/// whole after each complete list, and asks for a reconcile of every object whose
/// copy changed other than by fedwasm's own write (after a relist, also of every
/// object the old list had: a copy deleted while the watch was down shows only as
/// its absence).
async fn watch(
    follow: Follow,
    client: MemberClient,
    mut writer: reflector::store::Writer<DynamicObject>,
) {
    let kind = &follow.kind;
    let api: Api<DynamicObject> = Api::all_with(client.client().clone(), &kind.resource);
    let config = watcher::Config::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
        .timeout(crate::fleet::client::WATCH_SECS);
    let cluster = &follow.cluster;
    let mut before_relist: Vec<ObjectRef<DynamicObject>> = Vec::new();
    let events = watcher::watcher(api, config)
        .backoff(member_backoff())
        .modify(slim);
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let changed = match &event {
            Ok(Event::Apply(copy) | Event::InitApply(copy)) => {
                if let Some(rv) = resource_version(copy) {
                    follow.seen_up_to.fetch_max(rv, Ordering::AcqRel);
                }
                if follow.needs_reconcile(copy) {
                    vec![ObjectRef::from_obj_with(copy, kind.resource.clone())]
                } else {
                    Vec::new()
                }
            }
            Ok(Event::Delete(copy)) => {
                if let Some(rv) = resource_version(copy) {
                    follow.seen_up_to.fetch_max(rv, Ordering::AcqRel);
                }
                vec![ObjectRef::from_obj_with(copy, kind.resource.clone())]
            }
            Ok(Event::Init) => {
                before_relist = follow
                    .store
                    .state()
                    .iter()
                    .map(|copy| ObjectRef::from_obj_with(copy.as_ref(), kind.resource.clone()))
                    .collect();
                Vec::new()
            }
            Ok(Event::InitDone) => std::mem::take(&mut before_relist),
            Err(e) => {
                // The watcher relists after its backoff; until then, ask the member.
                follow.whole.store(false, Ordering::Release);
                tracing::debug!(%cluster, kind = %kind.resource.kind, error = %e, "member watch broke; relisting");
                Vec::new()
            }
        };
        if let Ok(event) = &event {
            writer.apply_watcher_event(event);
            if matches!(event, Event::InitDone) {
                follow.whole.store(true, Ordering::Release);
                tracing::debug!(%cluster, kind = %kind.resource.kind, copies = follow.store.len(), "member cache whole");
            }
        }
        for r in changed {
            if follow.trigger.unbounded_send(r).is_err() {
                return;
            }
        }
    }
}

/// How a broken member watch retries: from 0.5 s, doubling up to 5 s, back to the
/// start after 30 s of watching. kube's default (up to 30 s, reset after 120 s)
/// left a member that came back after a few blips unwatched for half a minute,
/// with a copy deleted by hand there meanwhile unnoticed. A member that is away
/// refuses or times out these attempts on its own connections; no one else waits.
fn member_backoff() -> kube::runtime::utils::ResetTimerBackoff<MemberBackoff> {
    kube::runtime::utils::ResetTimerBackoff::new(
        MemberBackoff(MemberBackoff::FIRST),
        std::time::Duration::from_secs(30),
    )
}

/// The delays of [`member_backoff`].
struct MemberBackoff(std::time::Duration);

impl MemberBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(500);
    const MOST: std::time::Duration = std::time::Duration::from_secs(5);
}

impl Iterator for MemberBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let now = self.0;
        self.0 = (now * 2).min(Self::MOST);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for MemberBackoff {
    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// The key of fedwasm's records: the cluster and the object's `namespace/name`.
fn record_key(obj: &DynamicObject) -> String {
    super::controller::key(obj)
}

/// Whether `copy` is only the echo of fedwasm's own write: the copy fedwasm wrote
/// (uid), at the version it wrote, with the template it wrote, and with the
/// replicas and status of that write or of the copy cached before.
pub(crate) fn echo(
    copy: &DynamicObject,
    before: Option<&DynamicObject>,
    written: Option<&Written>,
) -> bool {
    let Some(w) = written else {
        return false;
    };
    let same_copy = w.uid().is_some() && w.uid() == copy.metadata.uid.as_ref();
    let same_version = version(copy).is_some() && version(copy) == version(&w.copy);
    let same_template = carries(copy, &w.hash);
    let nothing_moved = copy.data == w.copy.data || before.is_some_and(|b| b.data == copy.data);
    same_copy && same_version && same_template && nothing_moved
}

/// Whether `copy` is the echo of a write fedwasm has sent and not had answered:
/// it carries that write's template, and no status moved (a copy just created has
/// none; an updated one has the status cached before).
pub(crate) fn echo_of_pending(
    copy: &DynamicObject,
    before: Option<&DynamicObject>,
    pending: Option<&str>,
) -> bool {
    let Some(hash) = pending else {
        return false;
    };
    let status = copy.data.get("status");
    let unmoved = match before {
        Some(b) => b.data.get("status") == status,
        None => status.is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty())),
    };
    carries(copy, hash) && unmoved
}

/// Drops what no decision reads: fedwasm's copies are kept as their identity and
/// versions, fedwasm's labels and annotations, which field-ownership entries
/// fedwasm has (not their fields), `spec.replicas` and `status`.
fn slim(copy: &mut DynamicObject) {
    let meta = &mut copy.metadata;
    meta.managed_fields = meta.managed_fields.take().map(|entries| {
        entries
            .into_iter()
            .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
            .map(|mut m| {
                m.fields_v1 = None;
                m
            })
            .collect()
    });
    if let Some(labels) = &mut meta.labels {
        labels.retain(|k, _| k == MANAGED_BY_LABEL);
    }
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k == TEMPLATE_HASH_ANNOTATION);
    }
    meta.owner_references = None;
    meta.finalizers = None;
    let mut kept = Map::new();
    if let Some(replicas) = copy.data.pointer("/spec/replicas") {
        kept.insert(
            "spec".into(),
            serde_json::json!({ "replicas": replicas.clone() }),
        );
    }
    if let Some(status) = copy.data.get("status") {
        kept.insert("status".into(), status.clone());
    }
    copy.data = Value::Object(kept);
}

/// Whether `copy` carries the template `hash` (fedwasm's annotation).
fn carries(copy: &DynamicObject, hash: &str) -> bool {
    copy.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION))
        .is_some_and(|h| h == hash)
}

/// A copy's `resourceVersion` as the number etcd makes it; `None` when not one.
pub(crate) fn resource_version(copy: &DynamicObject) -> Option<u64> {
    copy.metadata.resource_version.as_deref()?.parse().ok()
}

/// The version of a copy that changes when someone changes what fedwasm wrote:
/// its `generation` where the kind has one (a status update does not move it),
/// else its `resourceVersion`.
pub(crate) fn version(copy: &DynamicObject) -> Option<u64> {
    match copy.metadata.generation {
        Some(g) if g > 0 => u64::try_from(g).ok(),
        _ => resource_version(copy),
    }
}

/// What fedwasm last wrote to one copy: the template (its hash), and the copy as
/// the member answered the write (slimmed), with when.
#[derive(Clone, Debug)]
pub(crate) struct Written {
    pub hash: String,
    pub copy: Arc<DynamicObject>,
    pub at: std::time::Instant,
}

impl Written {
    pub fn of(copy: &DynamicObject, hash: &str) -> Self {
        let mut copy = copy.clone();
        slim(&mut copy);
        Self {
            hash: hash.to_string(),
            copy: Arc::new(copy),
            at: std::time::Instant::now(),
        }
    }

    fn uid(&self) -> Option<&String> {
        self.copy.metadata.uid.as_ref()
    }
}

/// How long a copy fedwasm wrote may be missing from a member's cache before it is
/// taken as deleted, when the cache's progress cannot tell (after a relist).
pub(crate) const CACHE_LAG: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a cache that shows no copy has simply not taken in fedwasm's write yet:
/// a write at a `resourceVersion` beyond what the cache has seen, and recent.
pub(crate) fn not_seen_yet(seen_up_to: u64, hash: &str, written: Option<&Written>) -> bool {
    written.is_some_and(|w| {
        w.hash == hash
            && resource_version(&w.copy).is_some_and(|rv| rv > seen_up_to)
            && w.at.elapsed() < CACHE_LAG
    })
}

/// Whether `copy` already is what fedwasm would write (template `hash`), so that
/// nothing needs writing.
///
/// - A copy older than fedwasm's last write to it is a cache that has not taken
///   the write in yet: current when that write was of this template.
/// - A copy at the version fedwasm wrote: current when it carries this template.
/// - A copy someone changed since (its version moved on): drift, written again.
/// - Without a record (a host that just started), the template hash decides.
pub(crate) fn current(copy: &DynamicObject, hash: &str, written: Option<&Written>) -> bool {
    let carries = carries(copy, hash);
    let Some(w) = written.filter(|w| w.uid().is_some() && w.uid() == copy.metadata.uid.as_ref())
    else {
        return carries;
    };
    match (version(copy), version(&w.copy)) {
        (Some(now), Some(then)) if now < then => w.hash == hash,
        (Some(now), Some(then)) if now == then => carries,
        (Some(_), Some(_)) => false,
        _ => carries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn copy(hash: &str, uid: &str, generation: Option<i64>, rv: &str) -> DynamicObject {
        let mut o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": uid, "resourceVersion": rv,
                "annotations": {TEMPLATE_HASH_ANNOTATION: hash, "other": "x"},
                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "app": "web"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2}
        }))
        .unwrap();
        o.metadata.generation = generation;
        o
    }

    #[test]
    fn a_copy_of_another_template_is_written() {
        let c = copy("h1", "u", Some(1), "10");
        assert!(!current(&c, "h2", None));
        assert!(current(&c, "h1", None), "no record: the hash decides");
    }

    #[test]
    fn a_copy_changed_since_fedwasm_wrote_it_is_drift() {
        let written = Written::of(&copy("h", "u", Some(2), "10"), "h");
        // A status update moves the resourceVersion, not the generation.
        assert!(current(&copy("h", "u", Some(2), "15"), "h", Some(&written)));
        // A hand edit of the spec moves the generation.
        assert!(!current(
            &copy("h", "u", Some(3), "16"),
            "h",
            Some(&written)
        ));
        // A cache that has not taken fedwasm's write in yet is not drift, even
        // when it still shows the template before.
        assert!(current(
            &copy("old", "u", Some(1), "9"),
            "h",
            Some(&written)
        ));
        assert!(!current(
            &copy("old", "u", Some(1), "9"),
            "next",
            Some(&written)
        ));
        // Deleted and made again (a new uid): the record is of another object.
        assert!(current(
            &copy("h", "u2", Some(1), "20"),
            "h",
            Some(&written)
        ));
        assert!(!current(
            &copy("x", "u2", Some(1), "20"),
            "h",
            Some(&written)
        ));
    }

    #[test]
    fn kinds_without_generation_compare_resource_versions() {
        let written = Written::of(&copy("h", "u", None, "10"), "h");
        assert!(current(&copy("h", "u", None, "10"), "h", Some(&written)));
        assert!(!current(&copy("h", "u", None, "11"), "h", Some(&written)));
    }

    #[test]
    fn a_missing_copy_is_lag_only_until_the_cache_passed_the_write() {
        let written = Written::of(&copy("h", "u", None, "10"), "h");
        assert!(not_seen_yet(9, "h", Some(&written)));
        assert!(!not_seen_yet(10, "h", Some(&written)), "seen, then deleted");
        assert!(!not_seen_yet(9, "other", Some(&written)));
        assert!(!not_seen_yet(9, "h", None));
    }

    #[test]
    fn only_the_echo_of_fedwasms_own_write_is_quiet() {
        let mut c = copy("h", "u", None, "10");
        slim(&mut c);
        let written = Written::of(&c, "h");
        assert!(echo(&c, None, Some(&written)), "the create's own event");
        assert!(!echo(&c, None, None), "no record: someone else's doing");
        assert!(
            !echo(&copy("h", "u", None, "11"), None, Some(&written)),
            "changed since"
        );
        let mut status = copy("h", "u", Some(1), "12");
        let written = Written::of(&status, "h");
        status.data["status"] = json!({"readyReplicas": 3});
        assert!(
            !echo(&status, None, Some(&written)),
            "a member's status moved"
        );
    }

    #[test]
    fn the_echo_of_a_write_in_flight_is_quiet() {
        let mut created = copy("h", "u", None, "10");
        created.data = json!({});
        assert!(echo_of_pending(&created, None, Some("h")));
        assert!(!echo_of_pending(&created, None, Some("other")));
        assert!(!echo_of_pending(&created, None, None));
        let before = copy("old", "u", Some(1), "9");
        assert!(echo_of_pending(
            &copy("h", "u", Some(2), "10"),
            Some(&before),
            Some("h")
        ));
        let mut moved = copy("h", "u", Some(2), "10");
        moved.data["status"] = json!({"readyReplicas": 1});
        assert!(!echo_of_pending(&moved, Some(&before), Some("h")));
    }

    #[test]
    fn a_broken_member_watch_retries_within_five_seconds() {
        use kube::runtime::utils::Backoff;
        let mut b = MemberBackoff(MemberBackoff::FIRST);
        let delays: Vec<u64> = (&mut b).take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(MemberBackoff::FIRST));
    }

    #[test]
    fn slim_copies_keep_what_decisions_read() {
        let mut c = copy("h", "u", Some(1), "10");
        c.metadata.managed_fields = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(FIELD_MANAGER.into()),
                operation: Some("Update".into()),
                fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                    json!({"f:spec": {}}),
                )),
                ..Default::default()
            },
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                ..Default::default()
            },
        ]);
        slim(&mut c);
        assert_eq!(
            c.data,
            json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 2}})
        );
        let entries = c.metadata.managed_fields.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].operation.as_deref(), Some("Update"));
        assert!(entries[0].fields_v1.is_none());
        assert_eq!(c.metadata.labels.unwrap().len(), 1);
        assert_eq!(c.metadata.annotations.unwrap().len(), 1);
    }
}
