//! The health prober: watches Cluster objects, runs one probe task per member and is
//! the only writer of Cluster status. A member is marked Offline only after a grace
//! period, so a slow probe does not move replicas.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::client::{client_from_secret, MemberClient};
use super::cluster::{Cluster, ClusterStatus, Phase, SYSTEM_NAMESPACE};
use super::{Fleet, FleetConfig, Member};
use crate::metrics::Metrics;

/// What the prober keeps per member.
struct Entry {
    cluster: Cluster,
    client: Option<MemberClient>,
    /// resourceVersion of the Secret the client was built from.
    secret_version: String,
    /// When the Secret was last read, and under which name.
    secret_read: Option<(Instant, String)>,
    /// When the capacity was last measured.
    capacity_measured: Option<Instant>,
    last_ok: Option<Instant>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    fleet: Arc<Fleet>,
    federation: Client,
    config: FleetConfig,
    metrics: Arc<Metrics>,
    members: Mutex<BTreeMap<String, Entry>>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the members as they are now.
    fn publish(&self, placement_changed: bool) {
        let members = self.lock();
        self.metrics.set_members(
            members
                .values()
                .filter_map(|e| e.cluster.status.as_ref()?.phase.as_deref()),
        );
        let view = members
            .values()
            .map(|e| Member {
                cluster: e.cluster.clone(),
                client: e.client.clone(),
            })
            .collect();
        drop(members);
        self.fleet.publish(view, placement_changed);
    }
}

/// Watches Cluster objects until the task is dropped; each member's probe task lives
/// as long as its Cluster.
pub(super) async fn run(
    fleet: Arc<Fleet>,
    federation: Client,
    config: FleetConfig,
    metrics: Arc<Metrics>,
) {
    let state = Arc::new(State {
        fleet,
        federation: federation.clone(),
        config,
        metrics,
        members: Mutex::new(BTreeMap::new()),
    });
    let api: Api<Cluster> = Api::all(federation);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut listing: Option<Vec<String>> = None;
    let _guard = AbortOnDrop(state.clone());
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(Vec::new()),
            Ok(watcher::Event::InitApply(c)) => {
                if let Some(seen) = listing.as_mut() {
                    seen.push(c.name_any());
                }
                upsert(&state, c);
            }
            Ok(watcher::Event::InitDone) => {
                let seen = listing.take().unwrap_or_default();
                let gone: Vec<String> = state
                    .lock()
                    .keys()
                    .filter(|n| !seen.contains(n))
                    .cloned()
                    .collect();
                for name in gone {
                    remove(&state, &name);
                }
                // Published even with no member, so subscribers know the list is read.
                state.publish(true);
            }
            Ok(watcher::Event::Apply(c)) => upsert(&state, c),
            Ok(watcher::Event::Delete(c)) => remove(&state, &c.name_any()),
            Err(e) => {
                tracing::warn!(error = %e, "watching Cluster objects; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Stops every probe task when the prober stops.
struct AbortOnDrop(Arc<State>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for entry in self.0.lock().values() {
            entry.task.abort();
        }
    }
}

/// What placement reads of a Cluster's spec and labels.
fn placement_inputs(c: &Cluster) -> impl PartialEq {
    (
        c.spec.region.clone(),
        c.spec.zone.clone(),
        c.spec.capacity,
        c.labels().clone(),
    )
}

fn upsert(state: &Arc<State>, mut cluster: Cluster) {
    let name = cluster.name_any();
    let changed = {
        let mut members = state.lock();
        match members.get_mut(&name) {
            Some(entry) => {
                let placement = placement_inputs(&entry.cluster) != placement_inputs(&cluster);
                // Anything else of the spec (the ingress endpoint) is news for the
                // member view too, though not for placement. The status is the
                // prober's own echo.
                let spec = entry.cluster.spec != cluster.spec;
                // The prober owns the status: keep what it knows, not the watch's echo.
                cluster.status = entry.cluster.status.clone();
                entry.cluster = cluster;
                (placement || spec).then_some(placement)
            }
            None => {
                tracing::info!(cluster = %name, "member joined");
                let task = tokio::spawn(probe_loop(state.clone(), name.clone()));
                members.insert(
                    name,
                    Entry {
                        cluster,
                        client: None,
                        secret_version: String::new(),
                        secret_read: None,
                        capacity_measured: None,
                        last_ok: None,
                        task,
                    },
                );
                Some(true)
            }
        }
    };
    if let Some(placement_changed) = changed {
        state.publish(placement_changed);
    }
}

fn remove(state: &Arc<State>, name: &str) {
    // The guard must be gone before `publish` locks again: in an `if let` scrutinee
    // it would live to the end of the block (edition 2021) and deadlock the prober.
    let removed = state.lock().remove(name);
    if let Some(entry) = removed {
        tracing::info!(cluster = %name, "member left");
        entry.task.abort();
        drop(entry);
        state.publish(true);
    }
}

/// Probes one member every interval, on its own.
async fn probe_loop(state: Arc<State>, name: String) {
    loop {
        probe_once(&state, &name).await;
        tokio::time::sleep(state.config.probe_interval).await;
    }
}

async fn probe_once(state: &Arc<State>, name: &str) {
    let Some(cluster) = state.lock().get(name).map(|e| e.cluster.clone()) else {
        return;
    };
    let (phase, message, capacity) = probe(state, &cluster).await;
    let status = cluster.status.clone().unwrap_or_default();
    let mut next = ClusterStatus {
        phase: Some(phase.as_str().to_string()),
        message,
        capacity,
        last_ready_time: status.last_ready_time.clone(),
    };
    if phase == Phase::Ready {
        next.last_ready_time = Some(Timestamp::now().to_string());
    }
    let phase_changed = status.phase != next.phase;
    if phase_changed {
        tracing::info!(cluster = %name, phase = phase.as_str(), "member phase changed");
    }
    // lastReadyTime moves on every probe; write it only with other changes or every
    // ~30 s, to keep the federation plane quiet.
    let stale = status
        .last_ready_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| Timestamp::now().duration_since(t).as_secs() >= 30)
        .unwrap_or(true);
    // Placement reads the phase and the capacity; a new error text for a member
    // already away is news for `kubectl get clusters`, not a reason to place every
    // object again.
    let placement_changed = phase_changed || status.capacity != next.capacity;
    let differs = placement_changed || status.message != next.message;
    if !(differs || (phase == Phase::Ready && stale)) {
        return;
    }
    if !state.config.status_writes.is_open() {
        // A standby: its own view only; the leader writes the status.
        if let Some(entry) = state.lock().get_mut(name) {
            entry.cluster.status = Some(next);
        }
        if differs {
            state.publish(placement_changed);
        }
        return;
    }
    let api: Api<Cluster> = Api::all(state.federation.clone());
    let patch = Patch::Merge(json!({"status": next}));
    let params = PatchParams::default();
    let write = api.patch_status(name, &params, &patch);
    match tokio::time::timeout(state.config.request_timeout, write).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(cluster = %name, error = %e, "writing cluster status"),
        Err(_) => tracing::warn!(cluster = %name, "writing cluster status: no answer in time"),
    }
    if let Some(entry) = state.lock().get_mut(name) {
        entry.cluster.status = Some(next);
    }
    // Only news goes out: a refreshed lastReadyTime alone would have every
    // subscriber (the routing table, the member caches) look at the view again,
    // once a second at 30 members.
    if differs {
        state.publish(placement_changed);
    }
}

/// Probes one member: (phase, message, measured capacity).
async fn probe(state: &Arc<State>, cluster: &Cluster) -> (Phase, Option<String>, Option<u32>) {
    let name = cluster.name_any();
    let client = match connect(state, cluster).await {
        Ok(c) => c,
        Err(e) => return (Phase::Pending, Some(e.to_string()), None),
    };
    let timeout = state.config.probe_timeout;
    let failure = match client
        .call_within(timeout, client.client().apiserver_version())
        .await
    {
        Ok(_) => None,
        Err(e) if matches!(e.code(), Some(401 | 403)) => {
            return (Phase::Unauthorized, Some(e.to_string()), None);
        }
        Err(e) => Some(e.to_string()),
    };
    let now = Instant::now();
    let within_grace = {
        let mut members = state.lock();
        let Some(entry) = members.get_mut(&name) else {
            return (Phase::Pending, None, None);
        };
        if failure.is_none() {
            entry.last_ok = Some(now);
        }
        // A probe that failed while the member kept answering the controllers'
        // requests is the member's load, not its absence.
        entry
            .last_ok
            .max(client.last_answer())
            .is_some_and(|t| now.duration_since(t) < state.config.offline_grace)
    };
    let is_ready = cluster.is_ready();
    let known = cluster.status.as_ref().and_then(|s| s.capacity);
    match failure {
        // A node list that did not come back in time says nothing new about the
        // capacity: keep what was measured (a member under load would otherwise
        // flip between a capacity and none, and every object be placed again).
        None if is_ready && !due(state, &name, |e| &mut e.capacity_measured) => {
            (Phase::Ready, None, known)
        }
        None => {
            let measured = measure_capacity(&client, timeout).await;
            if measured.is_some() {
                if let Some(entry) = state.lock().get_mut(&name) {
                    entry.capacity_measured = Some(Instant::now());
                }
            }
            (Phase::Ready, None, measured.unwrap_or(known))
        }
        // A short blip: keep Ready (and the replicas where they are).
        Some(_) if within_grace && is_ready => (Phase::Ready, None, known),
        Some(message) => (Phase::Offline, Some(message), None),
    }
}

/// How often a Ready member's credentials are read again and its capacity
/// measured again; its liveness is probed every interval. Credentials that stop
/// working show at once (the probe gets 401 or 403); a member not Ready has both
/// read on every probe.
const RECHECK: Duration = Duration::from_secs(30);

/// Whether the check whose last time `at` picks out of the member's entry is due.
fn due(state: &State, name: &str, at: impl FnOnce(&mut Entry) -> &mut Option<Instant>) -> bool {
    let mut members = state.lock();
    let Some(entry) = members.get_mut(name) else {
        return true;
    };
    at(entry).is_none_or(|t| t.elapsed() >= RECHECK)
}

/// The member's client, rebuilt when its Secret changed.
async fn connect(state: &Arc<State>, cluster: &Cluster) -> Result<MemberClient, super::Error> {
    let name = cluster.name_any();
    let is_ready = cluster.is_ready();
    if is_ready {
        let members = state.lock();
        let recent = members.get(&name).and_then(|e| {
            let (at, secret) = e.secret_read.as_ref()?;
            (at.elapsed() < RECHECK && *secret == cluster.spec.secret_ref)
                .then(|| e.client.clone())
                .flatten()
        });
        if let Some(client) = recent {
            return Ok(client);
        }
    }
    let secrets: Api<Secret> = Api::namespaced(state.federation.clone(), SYSTEM_NAMESPACE);
    let read = tokio::time::timeout(
        state.config.request_timeout,
        secrets.get(&cluster.spec.secret_ref),
    )
    .await;
    let secret = match read {
        Ok(Ok(secret)) => secret,
        Ok(Err(e)) if !matches!(e, kube::Error::Service(_) | kube::Error::HyperError(_)) => {
            return Err(super::Error::kube(
                &format!("reading the credentials of {name}"),
                e,
            ));
        }
        // The federation plane busy or away says nothing about the member or its
        // credentials: probe it with the client it has. (An answer, such as 404 or
        // 403, is news about the credentials and is not passed over.)
        unanswered => {
            if let Some(client) = state.lock().get(&name).and_then(|e| e.client.clone()) {
                return Ok(client);
            }
            return Err(match unanswered {
                Ok(Err(e)) => super::Error::kube(&format!("reading the credentials of {name}"), e),
                _ => super::Error::Config(format!(
                    "reading the credentials of {name}: the federation plane did not answer in time"
                )),
            });
        }
    };
    let version = secret.resource_version().unwrap_or_default();
    if let Some(entry) = state.lock().get_mut(&name) {
        entry.secret_read = Some((Instant::now(), cluster.spec.secret_ref.clone()));
        if let (Some(client), true) = (&entry.client, entry.secret_version == version) {
            return Ok(client.clone());
        }
    }
    let built = client_from_secret(
        &secret,
        &name,
        state.config.request_timeout,
        state.config.kubeconfig_policy,
    )
    .await;
    let raw = match built {
        Ok(raw) => raw,
        Err(e) => {
            // Credentials that are refused or unusable now: the member is not
            // reached with the ones before either.
            let dropped = state
                .lock()
                .get_mut(&name)
                .and_then(|entry| entry.client.take())
                .is_some();
            if dropped {
                state.publish(false);
            }
            return Err(e);
        }
    };
    let client = MemberClient::new(
        &name,
        raw,
        state.config.request_timeout,
        state.config.max_in_flight,
    );
    if let Some(entry) = state.lock().get_mut(&name) {
        entry.client = Some(client.clone());
        entry.secret_version = version;
    }
    // Controllers can reach the member from now on.
    state.publish(false);
    Ok(client)
}

/// Pods the member's nodes can run (sum of allocatable `pods`), if it has nodes;
/// `None` when the nodes could not be listed.
async fn measure_capacity(client: &MemberClient, timeout: Duration) -> Option<Option<u32>> {
    let nodes: Api<Node> = Api::all(client.client().clone());
    let list = client
        .call_within(timeout, nodes.list(&ListParams::default()))
        .await
        .ok()?;
    let total: u64 = list
        .items
        .iter()
        .filter_map(|n| n.status.as_ref()?.allocatable.as_ref()?.get("pods"))
        .filter_map(|q| q.0.parse::<u64>().ok())
        .fold(0u64, u64::saturating_add);
    Some((total > 0).then(|| total.min(u64::from(u32::MAX)) as u32))
}
