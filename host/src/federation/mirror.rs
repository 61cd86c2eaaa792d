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
//! Copies are kept small ([`Cached`]): the identity and versions fedwasm decides
//! on, its template hash, `spec.replicas` and `status` (what the aggregation
//! reads); the rest of each object is dropped as its event arrives. At 30 members
//! that is 30 copies of every federation object, so a copy costs a few hundred
//! bytes, not a `DynamicObject`'s few kilobytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::Value;

use super::kinds::Kind;
use super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, TEMPLATE_HASH_ANNOTATION};
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
    Present(Arc<Cached>),
}

/// A member's copy as fedwasm keeps it: what its decisions and the status
/// aggregation read, nothing else.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cached {
    pub uid: Option<Compact>,
    pub resource_version: Option<u64>,
    pub generation: Option<i64>,
    /// fedwasm's template hash annotation.
    pub template: Option<Compact>,
    /// Carries fedwasm's label: fedwasm made it (or adopted it).
    pub owned: bool,
    /// Being deleted.
    pub deleting: bool,
    /// Still has the field ownership of fedwasm's POST (an `Update` entry), to be
    /// turned into its apply entry before the next apply.
    pub created_by_post: bool,
    /// `spec.replicas`, as the aggregation reads it.
    pub replicas: Option<Value>,
    /// `status`, as the aggregation reads it (none for ConfigMaps and the like, and
    /// none when it holds only empty values).
    pub status: Option<Value>,
}

/// Whether a status holds anything the aggregation could read. Every member gives a
/// Service without a load balancer `{"loadBalancer": {}}`: kept, that was a JSON
/// map of roughly 600 bytes (estimated, not measured) per Service copy, 30,000 of
/// them at 30 members x 5,000 objects. Every read goes below `/status`, where an
/// empty object and no status read the same.
fn says_something(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(map) => map.values().any(says_something),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

/// A short string stored without an allocation when it can be: up to 22 bytes
/// inline (fedwasm's template hashes are 16), a canonical UUID (what every
/// apiserver makes a `uid`) as its 16 bytes, anything else on the heap. Each form
/// is chosen by the text alone, so two are equal exactly when their texts are. At
/// 30 members x 5,000 objects a member cache holds 150,000 copies, each with a uid,
/// a template hash and the hash fedwasm wrote: this keeps them in the records.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Compact {
    Inline { len: u8, bytes: [u8; INLINE] },
    Uuid([u8; 16]),
    Heap(Box<str>),
}

const INLINE: usize = 22;

/// Positions of the dashes in a UUID's text.
const DASHES: [usize; 4] = [8, 13, 18, 23];

impl Compact {
    pub fn new(text: &str) -> Self {
        if text.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            return Compact::Inline {
                len: text.len() as u8,
                bytes,
            };
        }
        match uuid(text) {
            Some(packed) => Compact::Uuid(packed),
            None => Compact::Heap(text.into()),
        }
    }

    /// Whether this is `text`.
    pub fn is(&self, text: &str) -> bool {
        match self {
            Compact::Inline { len, bytes } => &bytes[..usize::from(*len)] == text.as_bytes(),
            Compact::Uuid(packed) => uuid(text).as_ref() == Some(packed),
            Compact::Heap(s) => &**s == text,
        }
    }
}

/// The 16 bytes of a UUID in its canonical text (lowercase hex, dashes at 8, 13,
/// 18 and 23), which formats back to the same text; `None` for any other text.
fn uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || DASHES.iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut digits = b.iter().enumerate().filter(|(i, _)| !DASHES.contains(i));
    let mut out = [0u8; 16];
    for byte in &mut out {
        let mut next = || {
            let (_, &c) = digits.next()?;
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        };
        *byte = (next()? << 4) | next()?;
    }
    Some(out)
}

impl std::fmt::Display for Compact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compact::Inline { len, bytes } => {
                f.write_str(std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default())
            }
            Compact::Uuid(packed) => {
                for (i, byte) in packed.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Compact::Heap(s) => f.write_str(s),
        }
    }
}

impl std::fmt::Debug for Compact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Cached {
    pub fn of(obj: &DynamicObject) -> Self {
        let meta = &obj.metadata;
        Self {
            uid: meta.uid.as_deref().map(Compact::new),
            resource_version: resource_version(obj),
            generation: meta.generation,
            template: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION))
                .map(|h| Compact::new(h)),
            owned: super::apply::owned(obj),
            deleting: meta.deletion_timestamp.is_some(),
            created_by_post: meta
                .managed_fields
                .iter()
                .flatten()
                .any(super::apply::is_create_entry),
            replicas: obj.data.pointer("/spec/replicas").cloned(),
            status: obj
                .data
                .get("status")
                .filter(|s| says_something(s))
                .cloned(),
        }
    }

    /// The version that changes when someone changes what fedwasm wrote: the
    /// `generation` where the kind has one (a status update does not move it),
    /// else the `resourceVersion`.
    pub fn version(&self) -> Option<u64> {
        match self.generation {
            Some(g) if g > 0 => u64::try_from(g).ok(),
            _ => self.resource_version,
        }
    }

    /// Whether the copy carries the template `hash` (fedwasm's annotation).
    fn carries(&self, hash: &str) -> bool {
        self.template.as_ref().is_some_and(|t| t.is(hash))
    }

    /// The value at a JSON pointer into the copy, of those kept: `/spec/replicas`
    /// and anything under `/status`.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        if pointer == "/spec/replicas" {
            return self.replicas.as_ref();
        }
        let rest = pointer.strip_prefix("/status")?;
        let status = self.status.as_ref()?;
        match rest {
            "" => Some(status),
            rest if rest.starts_with('/') => status.pointer(rest),
            _ => None,
        }
    }

    /// Whether the replicas and status are those of `other`.
    fn same_state(&self, other: &Cached) -> bool {
        self.replicas == other.replicas && self.status == other.status
    }
}

/// The caches of one kind, in every member that has a client.
pub(crate) struct Mirrors {
    kind: Kind,
    caches: Mutex<HashMap<String, Cache>>,
    trigger: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
    /// Per cluster, per object: what fedwasm last wrote there.
    written: Arc<WrittenMap>,
    pending: Arc<PendingMap>,
}

/// Per cluster, then per object key (`namespace/name`).
type WrittenMap = Mutex<HashMap<String, HashMap<String, Written>>>;

/// Per (cluster, object): the template of a write fedwasm has sent and not yet
/// had answered. Its watch event may come before the answer.
type PendingMap = Mutex<HashMap<(String, String), String>>;

/// fedwasm's copies in one member, by object key (`namespace/name`).
type Shelf = Mutex<HashMap<String, Arc<Cached>>>;

struct Cache {
    client: MemberClient,
    copies: Arc<Shelf>,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut caches = lock(&self.caches);
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
        let copies: Arc<Shelf> = Default::default();
        let whole = Arc::new(AtomicBool::new(false));
        let seen_up_to = Arc::new(AtomicU64::new(0));
        let follow = Follow {
            kind: self.kind.clone(),
            cluster: client.cluster().to_string(),
            copies: copies.clone(),
            whole: whole.clone(),
            seen_up_to: seen_up_to.clone(),
            written: self.written.clone(),
            pending: self.pending.clone(),
            trigger: self.trigger.clone(),
        };
        let task = tokio::spawn(watch(follow, client.clone()));
        Cache {
            client,
            copies,
            whole,
            seen_up_to,
            task,
        }
    }

    /// What `cluster`'s cache shows of the copy of `obj`.
    pub fn seen(&self, cluster: &str, obj: &DynamicObject) -> Seen {
        let caches = lock(&self.caches);
        let Some(cache) = caches.get(cluster) else {
            return Seen::Unknown;
        };
        if !cache.whole.load(Ordering::Acquire) {
            return Seen::Unknown;
        }
        let copy = lock(&cache.copies).get(&record_key(obj)).cloned();
        match copy {
            Some(copy) => Seen::Present(copy),
            None => Seen::Absent {
                seen_up_to: cache.seen_up_to.load(Ordering::Acquire),
            },
        }
    }

    /// What fedwasm last wrote to `obj` in `cluster`.
    pub fn written(&self, cluster: &str, obj: &DynamicObject) -> Option<Written> {
        lock(&self.written)
            .get(cluster)?
            .get(&record_key(obj))
            .cloned()
    }

    pub fn remember(&self, cluster: &str, obj: &DynamicObject, written: Written) {
        lock(&self.written)
            .entry(cluster.to_string())
            .or_default()
            .insert(record_key(obj), written);
    }

    /// Marks a write of template `hash` to `obj` in `cluster` as sent, until the
    /// returned guard is dropped.
    pub fn sending(&self, cluster: &str, obj: &DynamicObject, hash: &str) -> Sending<'_> {
        let record = (cluster.to_string(), record_key(obj));
        lock(&self.pending).insert(record.clone(), hash.to_string());
        Sending {
            pending: &self.pending,
            record,
        }
    }

    /// Forgets what fedwasm wrote to `obj` in `cluster`, or in every cluster.
    pub fn forget(&self, cluster: Option<&str>, obj: &DynamicObject) {
        let k = record_key(obj);
        let mut written = lock(&self.written);
        for (c, records) in written.iter_mut() {
            if cluster.is_none_or(|x| x == c) {
                records.remove(&k);
            }
        }
        written.retain(|_, records| !records.is_empty());
    }

    /// Whether every member with a client has a whole cache.
    pub fn all_whole(&self, snapshot: &Snapshot) -> bool {
        let caches = lock(&self.caches);
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
}

/// What one member's watch task shares with the controller.
struct Follow {
    kind: Kind,
    cluster: String,
    copies: Arc<Shelf>,
    whole: Arc<AtomicBool>,
    seen_up_to: Arc<AtomicU64>,
    written: Arc<WrittenMap>,
    pending: Arc<PendingMap>,
    trigger: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
}

impl Follow {
    /// Takes in a copy's event: the copy to cache, and whether its federation
    /// object needs a reconcile. Not when the event is only the echo of fedwasm's
    /// own write (the same copy, version and template fedwasm wrote, with the
    /// replicas and status it had then or had before). A copy just as fedwasm's
    /// write left it shares that record's allocation.
    fn take_in(&self, key: &str, copy: Cached) -> (Arc<Cached>, bool) {
        let written = lock(&self.written)
            .get(&self.cluster)
            .and_then(|records| records.get(key))
            .cloned();
        let pending = lock(&self.pending)
            .get(&(self.cluster.clone(), key.to_string()))
            .cloned();
        let before = lock(&self.copies).get(key).cloned();
        let quiet = echo(&copy, before.as_deref(), written.as_ref())
            || echo_of_pending(&copy, before.as_deref(), pending.as_deref());
        let copy = match written {
            Some(w) if *w.copy == copy => w.copy,
            _ => Arc::new(copy),
        };
        (copy, !quiet)
    }

    /// The federation object whose copy has `key`.
    fn object_ref(&self, key: &str) -> ObjectRef<DynamicObject> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let r = ObjectRef::new_with(name, self.kind.resource.clone());
        if namespace.is_empty() {
            r
        } else {
            r.within(namespace)
        }
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
        lock(self.pending).remove(&self.record);
    }
}

/// Follows fedwasm's copies of one kind in one member: fills the cache, marks it
/// whole after each complete list, and asks for a reconcile of every object whose
/// copy changed other than by fedwasm's own write (after a relist, also of every
/// object the old list had: a copy deleted while the watch was down shows only as
/// its absence). A relist fills a new shelf; the old one serves until it is done.
async fn watch(follow: Follow, client: MemberClient) {
    let kind = &follow.kind;
    let api: Api<DynamicObject> = Api::all_with(client.client().clone(), &kind.resource);
    let config = watcher::Config::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
        .timeout(crate::fleet::client::WATCH_SECS);
    let cluster = &follow.cluster;
    let mut relisting: Option<HashMap<String, Arc<Cached>>> = None;
    let events = watcher::watcher(api, config).backoff(member_backoff());
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let changed: Vec<String> = match event {
            Ok(Event::Apply(obj) | Event::InitApply(obj)) => {
                let key = record_key(&obj);
                let copy = Cached::of(&obj);
                drop(obj);
                if let Some(rv) = copy.resource_version {
                    follow.seen_up_to.fetch_max(rv, Ordering::AcqRel);
                }
                let (copy, reconcile) = follow.take_in(&key, copy);
                match &mut relisting {
                    Some(shelf) => shelf.insert(key.clone(), copy),
                    None => lock(&follow.copies).insert(key.clone(), copy),
                };
                if reconcile {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            Ok(Event::Delete(obj)) => {
                let key = record_key(&obj);
                if let Some(rv) = resource_version(&obj) {
                    follow.seen_up_to.fetch_max(rv, Ordering::AcqRel);
                }
                match &mut relisting {
                    Some(shelf) => shelf.remove(&key),
                    None => lock(&follow.copies).remove(&key),
                };
                vec![key]
            }
            Ok(Event::Init) => {
                relisting = Some(HashMap::new());
                Vec::new()
            }
            Ok(Event::InitDone) => {
                let fresh = relisting.take().unwrap_or_default();
                let before = std::mem::replace(&mut *lock(&follow.copies), fresh);
                follow.whole.store(true, Ordering::Release);
                tracing::debug!(%cluster, kind = %kind.resource.kind, copies = lock(&follow.copies).len(), "member cache whole");
                before.into_keys().collect()
            }
            Err(e) => {
                // The watcher relists after its backoff; until then, ask the member.
                follow.whole.store(false, Ordering::Release);
                tracing::debug!(%cluster, kind = %kind.resource.kind, error = %e, "member watch broke; relisting");
                Vec::new()
            }
        };
        for key in changed {
            if follow
                .trigger
                .unbounded_send(follow.object_ref(&key))
                .is_err()
            {
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

/// The key of fedwasm's records and caches: the object's `namespace/name`.
fn record_key(obj: &DynamicObject) -> String {
    super::controller::key(obj)
}

/// Whether `copy` is only the echo of fedwasm's own write: the copy fedwasm wrote
/// (uid), at the version it wrote, with the template it wrote, and with the
/// replicas and status of that write or of the copy cached before.
pub(crate) fn echo(copy: &Cached, before: Option<&Cached>, written: Option<&Written>) -> bool {
    let Some(w) = written else {
        return false;
    };
    let same_copy = w.copy.uid.is_some() && w.copy.uid == copy.uid;
    let same_version = copy.version().is_some() && copy.version() == w.copy.version();
    let same_template = copy.template.as_ref() == Some(&w.hash);
    let nothing_moved = copy.same_state(&w.copy) || before.is_some_and(|b| b.same_state(copy));
    same_copy && same_version && same_template && nothing_moved
}

/// Whether `copy` is the echo of a write fedwasm has sent and not had answered:
/// it carries that write's template, and no status moved (a copy just created has
/// none; an updated one has the status cached before).
pub(crate) fn echo_of_pending(
    copy: &Cached,
    before: Option<&Cached>,
    pending: Option<&str>,
) -> bool {
    let Some(hash) = pending else {
        return false;
    };
    let status = copy.status.as_ref();
    let unmoved = match before {
        Some(b) => b.status.as_ref() == status,
        None => status.is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty())),
    };
    copy.carries(hash) && unmoved
}

/// A copy's `resourceVersion` as the number etcd makes it; `None` when not one.
pub(crate) fn resource_version(copy: &DynamicObject) -> Option<u64> {
    copy.metadata.resource_version.as_deref()?.parse().ok()
}

/// What fedwasm last wrote to one copy: the template (its hash), and the copy as
/// the member answered the write, with when.
#[derive(Clone, Debug)]
pub(crate) struct Written {
    pub hash: Compact,
    pub copy: Arc<Cached>,
    pub at: std::time::Instant,
}

impl Written {
    pub fn of(copy: Arc<Cached>, hash: &str) -> Self {
        Self {
            hash: Compact::new(hash),
            copy,
            at: std::time::Instant::now(),
        }
    }
}

/// How long a copy fedwasm wrote may be missing from a member's cache before it is
/// taken as deleted, when the cache's progress cannot tell (after a relist).
pub(crate) const CACHE_LAG: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a cache that shows no copy has simply not taken in fedwasm's write yet:
/// a write at a `resourceVersion` beyond what the cache has seen, and recent.
pub(crate) fn not_seen_yet(seen_up_to: u64, hash: &str, written: Option<&Written>) -> bool {
    written.is_some_and(|w| {
        w.hash.is(hash)
            && w.copy.resource_version.is_some_and(|rv| rv > seen_up_to)
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
pub(crate) fn current(copy: &Cached, hash: &str, written: Option<&Written>) -> bool {
    let carries = copy.carries(hash);
    let Some(w) = written.filter(|w| w.copy.uid.is_some() && w.copy.uid == copy.uid) else {
        return carries;
    };
    match (copy.version(), w.copy.version()) {
        (Some(now), Some(then)) if now < then => w.hash.is(hash),
        (Some(now), Some(then)) if now == then => carries,
        (Some(_), Some(_)) => false,
        _ => carries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::FIELD_MANAGER;
    use serde_json::json;

    fn object(hash: &str, uid: &str, generation: Option<i64>, rv: &str) -> DynamicObject {
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

    fn copy(hash: &str, uid: &str, generation: Option<i64>, rv: &str) -> Cached {
        Cached::of(&object(hash, uid, generation, rv))
    }

    #[test]
    fn a_copy_of_another_template_is_written() {
        let c = copy("h1", "u", Some(1), "10");
        assert!(!current(&c, "h2", None));
        assert!(current(&c, "h1", None), "no record: the hash decides");
    }

    #[test]
    fn a_copy_changed_since_fedwasm_wrote_it_is_drift() {
        let written = Written::of(Arc::new(copy("h", "u", Some(2), "10")), "h");
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
        let written = Written::of(Arc::new(copy("h", "u", None, "10")), "h");
        assert!(current(&copy("h", "u", None, "10"), "h", Some(&written)));
        assert!(!current(&copy("h", "u", None, "11"), "h", Some(&written)));
    }

    #[test]
    fn a_missing_copy_is_lag_only_until_the_cache_passed_the_write() {
        let written = Written::of(Arc::new(copy("h", "u", None, "10")), "h");
        assert!(not_seen_yet(9, "h", Some(&written)));
        assert!(!not_seen_yet(10, "h", Some(&written)), "seen, then deleted");
        assert!(!not_seen_yet(9, "other", Some(&written)));
        assert!(!not_seen_yet(9, "h", None));
    }

    #[test]
    fn only_the_echo_of_fedwasms_own_write_is_quiet() {
        let c = copy("h", "u", None, "10");
        let written = Written::of(Arc::new(c.clone()), "h");
        assert!(echo(&c, None, Some(&written)), "the create's own event");
        assert!(!echo(&c, None, None), "no record: someone else's doing");
        assert!(
            !echo(&copy("h", "u", None, "11"), None, Some(&written)),
            "changed since"
        );
        let mut status = copy("h", "u", Some(1), "12");
        let written = Written::of(Arc::new(status.clone()), "h");
        status.status = Some(json!({"readyReplicas": 3}));
        assert!(
            !echo(&status, None, Some(&written)),
            "a member's status moved"
        );
    }

    #[test]
    fn the_echo_of_a_write_in_flight_is_quiet() {
        let mut created = copy("h", "u", None, "10");
        created.replicas = None;
        created.status = None;
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
        moved.status = Some(json!({"readyReplicas": 1}));
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
    fn cached_copies_keep_what_decisions_read() {
        let mut o = object("h", "u", Some(1), "10");
        o.metadata.managed_fields = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(FIELD_MANAGER.into()),
                operation: Some("Update".into()),
                ..Default::default()
            },
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                ..Default::default()
            },
        ]);
        let c = Cached::of(&o);
        assert_eq!(c.replicas, Some(json!(3)));
        assert_eq!(c.status, Some(json!({"readyReplicas": 2})));
        assert_eq!(c.pointer("/status/readyReplicas"), Some(&json!(2)));
        assert_eq!(c.pointer("/spec/replicas"), Some(&json!(3)));
        assert_eq!(c.pointer("/statusx"), None);
        assert!(c.owned && c.created_by_post && !c.deleting);
        assert_eq!(
            c.template.as_ref().map(|t| t.to_string()).as_deref(),
            Some("h")
        );
        assert_eq!(
            (
                c.uid.as_ref().map(|u| u.to_string()).as_deref(),
                c.resource_version,
                c.version()
            ),
            (Some("u"), Some(10), Some(1))
        );
        o.metadata.managed_fields = None;
        o.metadata.labels = None;
        o.data = json!({"data": {"a": "b"}});
        let c = Cached::of(&o);
        assert!(!c.owned && !c.created_by_post);
        assert_eq!(
            (c.replicas, c.status),
            (None, None),
            "a ConfigMap keeps no data"
        );
        o.data = json!({"spec": {"clusterIP": "None"}, "status": {"loadBalancer": {}}});
        assert_eq!(Cached::of(&o).status, None, "an empty status is none");
        o.data = json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}}});
        assert_eq!(
            Cached::of(&o).pointer("/status/loadBalancer/ingress/0/ip"),
            Some(&json!("10.0.0.7"))
        );
    }

    #[test]
    fn compact_strings_read_back_and_compare_as_their_text() {
        let uid = "0b7e4c1a-93f2-4d5e-8a6b-1c2d3e4f5a6b";
        let texts = [
            "",
            "h",
            "3f2a9c0d1e4b5a69",
            "exactly-twenty-two-ch!",
            uid,
            // Not canonical: upper case, a dash moved, not hex.
            "0B7E4C1A-93F2-4D5E-8A6B-1C2D3E4F5A6B",
            "0b7e4c1a93f2-4d5e-8a6b-1c2d3e4f5a6b-",
            "0b7e4c1a-93f2-4d5e-8a6b-1c2d3e4f5a6g",
            "a name longer than twenty-two bytes",
        ];
        for a in texts {
            let c = Compact::new(a);
            assert_eq!(c.to_string(), a);
            for b in texts {
                assert_eq!(c.is(b), a == b, "{a:?} is {b:?}");
                assert_eq!(c == Compact::new(b), a == b, "{a:?} == {b:?}");
            }
        }
        assert!(matches!(Compact::new(uid), Compact::Uuid(_)));
        assert!(matches!(
            Compact::new("3f2a9c0d1e4b5a69"),
            Compact::Inline { .. }
        ));
        assert_eq!(std::mem::size_of::<Compact>(), 24);
    }
}
