//! Building the routing table from the federation plane (federated Ingresses,
//! Services and their workloads, through reflectors), the member view and backend
//! health; ranking each route for every location, with a cache so a rebuild calls
//! the rank hook only for states it has not seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use fedwasm_sdk::RankRequest;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::Value;

use super::{
    Backend, Health, Locality, Route, RouteKey, RouteKind, Router, RouterConfig, Rule, ServicePort,
};
use crate::federation::{hook_choice, PolicySet, PLACEMENT_ANNOTATION};
use crate::fleet::{Fleet, Snapshot};
use crate::placer::Placer;
use crate::policy::{ClusterPlacementPolicy, PlacementPolicy};
use crate::recorder::Recorder;
use fedwasm_sdk::Hook;
use kube::core::ApiResource;

/// The federated objects routes are made of.
#[derive(Clone)]
pub(crate) struct Sources {
    pub ingresses: Store<Ingress>,
    pub services: Store<Service>,
    pub deployments: Store<Deployment>,
    pub replica_sets: Store<ReplicaSet>,
    /// The placement policies, whose `rank` section may choose the plugin.
    pub cluster_policies: Store<ClusterPlacementPolicy>,
    pub policies: Store<PlacementPolicy>,
}

/// Rankings already computed: (plugin, plugin generation, request) → order.
type RankCache = Mutex<HashMap<(String, u64, RankRequest), Vec<usize>>>;

/// Bounds the rank cache: past it, it starts afresh.
const RANK_CACHE_ENTRIES: usize = 50_000;

impl Router {
    /// Starts reflecting the federation plane, probing backends and rebuilding the
    /// table whenever something it depends on changes.
    pub fn start(
        federation: Client,
        fleet: Arc<Fleet>,
        placer: Placer,
        locality: Locality,
        config: RouterConfig,
    ) -> Arc<Router> {
        let router = Arc::new(Router {
            table: ArcSwap::default(),
            locality: ArcSwap::from_pointee(locality),
            health: Arc::new(Health::default()),
            rebuild: tokio::sync::Notify::new(),
        });
        let sources = Sources {
            ingresses: reflect(&router, Api::all(federation.clone())),
            services: reflect(&router, Api::all(federation.clone())),
            deployments: reflect(&router, Api::all(federation.clone())),
            replica_sets: reflect(&router, Api::all(federation.clone())),
            cluster_policies: reflect(&router, Api::all(federation.clone())),
            policies: reflect(&router, Api::all(federation.clone())),
        };
        let recorder = Recorder::new(
            federation.clone(),
            "fedwasm",
            std::env::var("HOSTNAME").ok(),
        );
        tokio::spawn(rebuild_loop(
            router.clone(),
            sources,
            fleet,
            placer,
            config.clone(),
            recorder,
        ));
        tokio::spawn(super::health::probe_loop(router.clone(), config));
        router
    }
}

/// A reflector of `api` whose every event asks for a rebuild.
fn reflect<K>(router: &Arc<Router>, api: Api<K>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    // Field ownership entries are dropped: nothing here reads them.
    let objects =
        watcher(api, watcher::Config::default()).modify(|o| o.managed_fields_mut().clear());
    let stream = reflector::reflector(writer, objects)
        .default_backoff()
        .touched_objects();
    let weak = Arc::downgrade(router);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let Some(router) = weak.upgrade() else { break };
            if let Err(e) = event {
                tracing::debug!(error = %e, "routing: watching the federation plane");
            }
            router.rebuild.notify_one();
        }
    });
    reader
}

async fn rebuild_loop(
    router: Arc<Router>,
    sources: Sources,
    fleet: Arc<Fleet>,
    placer: Placer,
    config: RouterConfig,
    recorder: Recorder,
) {
    let cache: RankCache = Mutex::default();
    let mut reported: HashSet<(String, String)> = HashSet::new();
    let mut members = fleet.subscribe();
    let mut plugins = placer.subscribe();
    let mut health = router.health.subscribe();
    loop {
        // Coalesce bursts of changes (a watch relist, many objects at once).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let snapshot = fleet.snapshot();
        let locality = router.locality.load_full();
        let generation = *plugins.borrow_and_update();
        let bases = routes_from(&sources, &snapshot, &router.health, &config);
        let live: HashSet<String> = bases
            .iter()
            .flat_map(|r| r.backends.iter().filter_map(|b| b.endpoint.clone()))
            .collect();
        router.health.retain(&live);
        let mut routes = Vec::with_capacity(bases.len());
        for base in bases {
            routes.push(rank(base, &locality, &placer, generation, &cache).await);
        }
        router
            .table
            .store(Arc::new(super::Table { routes, locality }));
        report_problems(&sources, &recorder, &mut reported).await;
        tokio::select! {
            _ = router.rebuild.notified() => {}
            r = members.changed() => if r.is_err() { return },
            r = plugins.changed() => if r.is_err() { return },
            r = health.changed() => if r.is_err() { return },
        }
    }
}

/// One event for the problems of an Ingress (what `/routes` also shows), when they
/// change. One event with every problem: events about one object with the same
/// reason are folded into a series, which keeps only the first note.
async fn report_problems(
    sources: &Sources,
    recorder: &Recorder,
    reported: &mut HashSet<(String, String)>,
) {
    let mut now = HashSet::new();
    let index = Index::new(sources);
    for ingress in sources.ingresses.state() {
        let problems = ingress_problems(&index, &ingress);
        if problems.is_empty() {
            continue;
        }
        let note = format!("global ingress: {}", problems.join("; "));
        let key = (ingress.uid().unwrap_or_default(), note.clone());
        now.insert(key.clone());
        if reported.contains(&key) {
            continue;
        }
        let event = Event {
            type_: EventType::Warning,
            reason: "RouteProblem".into(),
            note: Some(note),
            action: "Route".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &ingress.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }
    // A problem fixed and made again is reported again.
    *reported = now;
}

/// The rank plugin and settings for a federated Ingress or Service.
fn rank_choice<K>(policies: &PolicySet, obj: &K) -> (String, String)
where
    K: Resource<DynamicType = ()> + ResourceExt,
{
    let governing = policies.resolve_as(&ApiResource::erase::<K>(&()), true, obj);
    hook_choice(Hook::Rank, obj, governing.as_ref())
}

/// A route before ranking.
pub(crate) struct Base {
    pub key: RouteKey,
    /// What in the federated object cannot be served.
    pub problems: Vec<String>,
    pub rules: Vec<Rule>,
    pub ports: Vec<ServicePort>,
    pub backends: Vec<Backend>,
    pub plugin: String,
    /// The governing placement policy's rank settings (JSON), or empty.
    pub settings: String,
}

/// Per member: what fedwasm's placement annotation says of one object there.
fn placement(obj: &impl ResourceExt) -> BTreeMap<String, Value> {
    obj.annotations()
        .get(PLACEMENT_ANNOTATION)
        .and_then(|a| serde_json::from_str::<BTreeMap<String, Value>>(a).ok())
        .unwrap_or_default()
}

fn applied(entry: &Value) -> bool {
    entry.get("state").and_then(Value::as_str) == Some("Applied")
}

fn addresses(entry: &Value) -> Vec<String> {
    entry
        .get("addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| Some(v.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A workload's pod template labels and its ready replicas per member.
type Workload = (BTreeMap<String, String>, BTreeMap<String, u32>);

/// What a rebuild reads of the federated Services and workloads, gathered once:
/// each workload's placement annotation is parsed once per rebuild, not once per
/// Service that might select it.
pub(crate) struct Index {
    /// Each Service's selector, by `(namespace, name)`; `None`: no selector.
    services: HashMap<(String, String), Option<BTreeMap<String, String>>>,
    /// Per namespace: each workload's pod template labels and ready replicas per
    /// member.
    workloads: HashMap<String, Vec<Workload>>,
}

impl Index {
    pub(crate) fn new(sources: &Sources) -> Self {
        let services = sources
            .services
            .state()
            .iter()
            .map(|s| {
                let selector = s.spec.as_ref().and_then(|spec| spec.selector.clone());
                ((s.namespace().unwrap_or_default(), s.name_any()), selector)
            })
            .collect();
        let mut workloads: HashMap<String, Vec<_>> = HashMap::new();
        let mut add = |ns: Option<String>,
                       labels: Option<&BTreeMap<String, String>>,
                       obj: &dyn Fn() -> BTreeMap<String, Value>| {
            let (Some(ns), Some(labels)) = (ns, labels) else {
                return;
            };
            let ready = obj()
                .into_iter()
                .map(|(cluster, entry)| {
                    let n = entry
                        .get("readyReplicas")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    (cluster, n.min(u64::from(u32::MAX)) as u32)
                })
                .collect();
            workloads
                .entry(ns)
                .or_default()
                .push((labels.clone(), ready));
        };
        for d in sources.deployments.state() {
            let labels = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref()?.labels.as_ref());
            add(d.namespace(), labels, &|| placement(d.as_ref()));
        }
        for rs in sources.replica_sets.state() {
            // ReplicaSets a federated Deployment made are counted through it.
            if !rs.owner_references().is_empty() {
                continue;
            }
            let labels = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref()?.metadata.as_ref()?.labels.as_ref());
            add(rs.namespace(), labels, &|| placement(rs.as_ref()));
        }
        Self {
            services,
            workloads,
        }
    }

    /// Whether the federation has Service `name` in `ns`.
    fn has_service(&self, ns: &str, name: &str) -> bool {
        self.services
            .contains_key(&(ns.to_string(), name.to_string()))
    }

    /// Ready replicas per member of the workloads Service `name` in `ns` selects;
    /// `None` when it selects nothing (no Service, or no selector).
    fn ready_behind(&self, ns: &str, name: &str) -> Option<BTreeMap<String, u32>> {
        let selector = self
            .services
            .get(&(ns.to_string(), name.to_string()))?
            .as_ref()
            .filter(|s| !s.is_empty())?;
        let mut ready: BTreeMap<String, u32> = BTreeMap::new();
        for (labels, per_member) in self.workloads.get(ns).into_iter().flatten() {
            if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            for (cluster, n) in per_member {
                let sum = ready.entry(cluster.clone()).or_default();
                *sum = sum.saturating_add(*n);
            }
        }
        Some(ready)
    }
}

/// The rules of an Ingress, per backend Service.
fn ingress_rules(ingress: &Ingress) -> BTreeMap<String, Vec<Rule>> {
    let mut out: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    let Some(spec) = ingress.spec.as_ref() else {
        return out;
    };
    if let Some(svc) = spec
        .default_backend
        .as_ref()
        .and_then(|b| b.service.as_ref())
    {
        out.entry(svc.name.clone()).or_default().push(Rule {
            host: None,
            path: None,
            exact: false,
        });
    }
    for rule in spec.rules.iter().flatten() {
        let host = rule.host.clone().filter(|h| !h.is_empty());
        for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
            let Some(svc) = path.backend.service.as_ref() else {
                continue;
            };
            out.entry(svc.name.clone()).or_default().push(Rule {
                host: host.clone(),
                path: Some(path.path.clone().unwrap_or_else(|| "/".into())),
                exact: path.path_type == "Exact",
            });
        }
    }
    out
}

/// What in an Ingress the global ingress cannot serve (for an event and
/// `/routes`): a path to a resource backend, nothing to route at all, or a Service
/// the federation does not have.
fn ingress_problems(index: &Index, ingress: &Ingress) -> Vec<String> {
    let mut out = Vec::new();
    let ns = ingress.namespace().unwrap_or_default();
    let spec = ingress.spec.as_ref();
    let paths = spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()));
    for path in paths {
        if path.backend.service.is_none() {
            out.push(format!(
                "path {} sends to a resource backend, which the global ingress cannot serve",
                path.path.as_deref().unwrap_or("/")
            ));
        }
    }
    let rules = ingress_rules(ingress);
    if rules.is_empty() && out.is_empty() {
        out.push("no rule and no default backend: nothing to route".into());
    }
    for service in rules.keys() {
        if !index.has_service(&ns, service) {
            out.push(format!(
                "Service {service} does not exist in the federation"
            ));
        }
    }
    out
}

/// Every route, with each member's backend state.
pub(crate) fn routes_from(
    sources: &Sources,
    snapshot: &Snapshot,
    health: &Health,
    config: &RouterConfig,
) -> Vec<Base> {
    let mut out = Vec::new();
    let index = Index::new(sources);
    // The object's annotation, else its placement policy's rank section, else
    // the default; with the policy's settings where its plugin is the one used.
    let policies = PolicySet {
        cluster: sources.cluster_policies.state(),
        namespaced: sources.policies.state(),
    };

    for ingress in sources.ingresses.state() {
        let ns = ingress.namespace().unwrap_or_default();
        let placed = placement(ingress.as_ref());
        let problems = ingress_problems(&index, &ingress);
        let (plugin, settings) = rank_choice(&policies, ingress.as_ref());
        for (service, rules) in ingress_rules(&ingress) {
            let ready = index.ready_behind(&ns, &service);
            let backends = placed
                .iter()
                .filter(|(_, e)| applied(e))
                .map(|(cluster, entry)| {
                    let member = snapshot.get(cluster);
                    let endpoint = addresses(entry)
                        .first()
                        .map(|a| format!("http://{a}"))
                        .or_else(|| member?.cluster.spec.ingress_endpoint.clone())
                        .map(|e| e.trim_end_matches('/').to_string());
                    let ready_n = ready
                        .as_ref()
                        .and_then(|r| r.get(cluster).copied())
                        .unwrap_or(0);
                    let ineligible = if !member.is_some_and(|m| m.cluster.is_ready()) {
                        Some("the member is not Ready".to_string())
                    } else if ready.is_none() {
                        Some(format!("Service {service} selects no workload"))
                    } else if ready_n == 0 {
                        Some(format!("no ready replicas behind Service {service}"))
                    } else if endpoint.is_none() {
                        Some("no load-balancer address and no spec.ingressEndpoint".to_string())
                    } else {
                        None
                    };
                    let eligible = ineligible.is_none();
                    let reason = ineligible.or_else(|| health.verdict(endpoint.as_deref()?));
                    backend(
                        cluster,
                        member,
                        eligible,
                        endpoint,
                        addresses(entry),
                        ready_n,
                        reason,
                        config,
                    )
                })
                .collect();
            out.push(Base {
                problems: problems.clone(),
                key: RouteKey {
                    kind: RouteKind::Ingress,
                    namespace: ns.clone(),
                    name: ingress.name_any(),
                    service,
                },
                rules,
                ports: Vec::new(),
                backends,
                plugin: plugin.clone(),
                settings: settings.clone(),
            });
        }
    }
    for service in sources.services.state() {
        let ns = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let placed = placement(service.as_ref());
        let (plugin, settings) = rank_choice(&policies, service.as_ref());
        if placed.is_empty() {
            continue;
        }
        let ready = index.ready_behind(&ns, &name);
        let backends = placed
            .iter()
            .filter(|(_, e)| applied(e))
            .map(|(cluster, entry)| {
                let member = snapshot.get(cluster);
                let ready_n = ready
                    .as_ref()
                    .and_then(|r| r.get(cluster).copied())
                    .unwrap_or(0);
                let addrs = addresses(entry);
                let reason = if !member.is_some_and(|m| m.cluster.is_ready()) {
                    Some("the member is not Ready".to_string())
                } else if ready_n == 0 {
                    Some("no ready replicas behind it".to_string())
                } else if addrs.is_empty() {
                    Some("no load-balancer address".to_string())
                } else {
                    None
                };
                backend(
                    cluster,
                    member,
                    reason.is_none(),
                    None,
                    addrs,
                    ready_n,
                    reason,
                    config,
                )
            })
            .collect();
        out.push(Base {
            problems: Vec::new(),
            key: RouteKey {
                kind: RouteKind::Service,
                namespace: ns,
                name: name.clone(),
                service: name,
            },
            rules: Vec::new(),
            ports: service_ports(&service),
            backends,
            plugin,
            settings,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The ports of a Service, as its spec lists them (protocol `TCP` when unset).
fn service_ports(service: &Service) -> Vec<ServicePort> {
    service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).ok()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn backend(
    cluster: &str,
    member: Option<&crate::fleet::Member>,
    eligible: bool,
    endpoint: Option<String>,
    addresses: Vec<String>,
    ready_replicas: u32,
    reason: Option<String>,
    config: &RouterConfig,
) -> Backend {
    let spec = member.map(|m| &m.cluster.spec);
    Backend {
        cluster: cluster.to_string(),
        region: spec.and_then(|s| s.region.clone()).unwrap_or_default(),
        zone: spec.and_then(|s| s.zone.clone()).unwrap_or_default(),
        endpoint,
        addresses,
        ready_replicas,
        capacity: ready_replicas.saturating_mul(config.per_replica_concurrency),
        healthy: reason.is_none(),
        eligible,
        reason,
    }
}

/// Ranks `base` for every location, from the cache where the same request was
/// ranked before by the same plugin generation.
async fn rank(
    base: Base,
    locality: &Locality,
    placer: &Placer,
    generation: u64,
    cache: &RankCache,
) -> Route {
    let mut rankings = Vec::new();
    let mut error = None;
    for location in locality.locations() {
        let request = RankRequest {
            client: location.clone(),
            backends: base
                .backends
                .iter()
                .map(|b| fedwasm_sdk::Backend {
                    cluster: b.cluster.clone(),
                    region: b.region.clone(),
                    zone: b.zone.clone(),
                    position: locality.position(&b.region, &b.zone),
                    healthy: b.healthy,
                    available: Some(b.capacity),
                })
                .collect(),
            settings: base.settings.clone(),
        };
        let key = (base.plugin.clone(), generation, request);
        let cached = cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let order = match cached {
            Some(order) => order,
            None => match placer.rank(Some(base.plugin.clone()), key.2.clone()).await {
                Ok(order) => {
                    let order: Vec<usize> = order.into_iter().map(|i| i as usize).collect();
                    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() >= RANK_CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(key, order.clone());
                    order
                }
                Err(e) => {
                    // Healthy ones first, by name: usable, if not closest.
                    error = Some(e.to_string());
                    let mut order: Vec<usize> = (0..base.backends.len()).collect();
                    order.sort_by_key(|i| !base.backends[*i].healthy);
                    order
                }
            },
        };
        rankings.push((location, order));
    }
    if let Some(e) = &error {
        tracing::warn!(route = ?base.key, error = %e, "ranking failed; healthy backends by name");
    }
    Route {
        key: base.key,
        rules: base.rules,
        ports: base.ports,
        backends: base.backends,
        rankings,
        plugin: base.plugin,
        error,
        problems: base.problems,
    }
}

/// Distinct endpoints of every Ingress route.
pub(crate) fn endpoints(table: &super::Table) -> Vec<String> {
    let mut out: Vec<String> = table
        .routes
        .iter()
        .flat_map(|r| r.backends.iter().filter_map(|b| b.endpoint.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}
