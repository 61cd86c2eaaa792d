//! The routing table: for each federated Ingress (per backend Service) and each
//! federated Service, the member clusters that serve it — address, health,
//! capacity — and, for every client location the locality table names, the order
//! in which they should serve, from the `rank` hook.
//!
//! Entry point: [`Router::start`]. The table is rebuilt off the request path when
//! something it depends on changes (federation objects, the member view, backend
//! health, the plugin generation) and swapped in atomically; rankings are cached per
//! (route, location, backend state, plugin generation), so the ingress and the DNS
//! responder never call Wasm per request: they read [`Router::table`].

mod build;
pub mod health;
pub mod locality;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fedwasm_sdk::Location;
use serde::Serialize;

pub use health::Health;
pub use locality::Locality;

/// On a federated Ingress or Service: the rank plugin to use instead of the default.
pub const RANK_PLUGIN_ANNOTATION: &str = "fedwasm.io/rank-plugin";

/// What a route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RouteKind {
    /// A federated Ingress, for one of the Services it sends to.
    Ingress,
    /// A federated Service (DNS).
    Service,
}

/// Names a route: `kind` `namespace/name`, for `service`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RouteKey {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    /// The Service behind the route (for a Service route, its own name).
    pub service: String,
}

/// One member cluster able to serve a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Backend {
    pub cluster: String,
    pub region: String,
    pub zone: String,
    /// Ingress routes: the base URL requests go to (`http://host:port`).
    pub endpoint: Option<String>,
    /// The member's load-balancer addresses for the object (IPs or host names).
    pub addresses: Vec<String>,
    /// Ready replicas of the workloads behind the Service in that member.
    pub ready_replicas: u32,
    /// Concurrent requests it can take: ready replicas × per-replica concurrency.
    pub capacity: u32,
    /// The member is Ready, has ready replicas, an address, and its endpoint
    /// answers probes and is not ejected.
    pub healthy: bool,
    /// All of that but the endpoint's own health: when no backend of a route is
    /// healthy, these are tried anyway (failing open, as Envoy's panic threshold
    /// does), since probes that all fail at once more likely say the prober is
    /// starved than that every cluster died.
    pub eligible: bool,
    /// Why it is not healthy, for `/routes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Backend {
    /// A healthy backend of `cluster` with one ready replica (capacity 100) and no
    /// address yet: the base of tables built by hand (tests, benchmarks), which
    /// override what they need.
    pub fn serving(cluster: &str, region: &str, zone: &str) -> Self {
        Self {
            cluster: cluster.into(),
            region: region.into(),
            zone: zone.into(),
            endpoint: None,
            addresses: Vec::new(),
            ready_replicas: 1,
            capacity: 100,
            healthy: true,
            eligible: true,
            reason: None,
        }
    }
}

/// One Ingress rule: which requests a route takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Host to match (`*.example.com` matches one label); `None`: any host.
    pub host: Option<String>,
    /// Path to match; `None`: the default backend (any path).
    pub path: Option<String>,
    /// `Exact` or `Prefix` (`ImplementationSpecific` is read as `Prefix`).
    pub exact: bool,
}

/// One port of a federated Service (DNS answers SRV queries for the named ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// The port's name; empty when unnamed.
    pub name: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// One route and its rankings.
#[derive(Clone, Debug, Serialize)]
pub struct Route {
    pub key: RouteKey,
    pub rules: Vec<Rule>,
    /// Service routes: the Service's ports; empty for Ingress routes.
    pub ports: Vec<ServicePort>,
    pub backends: Vec<Backend>,
    /// For each location: indices into `backends`, best first.
    pub rankings: Vec<(Location, Vec<usize>)>,
    /// The rank plugin deciding the order.
    pub plugin: String,
    /// Why no ranking could be made (the plugin failed), if so: backends are then
    /// in name order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What in the federated object cannot be served (also an event on it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Route {
    /// An Ingress route `namespace/name` taking every host and path, served by
    /// `backends` in this order for every client: for measuring or testing the
    /// front doors alone (with [`Router::fixed`]).
    pub fn everything(namespace: &str, name: &str, backends: Vec<Backend>) -> Self {
        Self {
            key: RouteKey {
                kind: RouteKind::Ingress,
                namespace: namespace.into(),
                name: name.into(),
                service: name.into(),
            },
            rules: vec![Rule {
                host: None,
                path: None,
                exact: false,
            }],
            ports: Vec::new(),
            rankings: vec![(Location::default(), (0..backends.len()).collect())],
            backends,
            plugin: "nearest-healthy".into(),
            error: None,
            problems: Vec::new(),
        }
    }

    /// The backends in the order they should serve a client at `location` (the
    /// unknown location's order when the table has no ranking for it).
    pub fn ranked<'a>(&'a self, location: &Location) -> impl Iterator<Item = &'a Backend> + 'a {
        let order = self
            .rankings
            .iter()
            .find(|(l, _)| l == location)
            .or_else(|| {
                self.rankings
                    .iter()
                    .find(|(l, _)| *l == Location::default())
            })
            .map(|(_, o)| o.as_slice())
            .unwrap_or(&[]);
        order.iter().filter_map(|i| self.backends.get(*i))
    }
}

/// The routing table at one moment; immutable, replaced as a whole.
#[derive(Debug, Default)]
pub struct Table {
    pub routes: Vec<Route>,
    pub locality: Arc<Locality>,
}

impl Table {
    /// The Ingress route a request for `host` and `path` takes: rules of an exact
    /// host before wildcard hosts before any host; within them an `Exact` path, then
    /// the longest matching prefix; an Ingress's default backend last.
    pub fn ingress_route(&self, host: &str, path: &str) -> Option<&Route> {
        let host = host
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut best: Option<((u8, u8, usize), &Route)> = None;
        for route in self
            .routes
            .iter()
            .filter(|r| r.key.kind == RouteKind::Ingress)
        {
            for rule in &route.rules {
                let Some(score) = rule_score(rule, &host, path) else {
                    continue;
                };
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, route));
                }
            }
        }
        best.map(|(_, r)| r)
    }

    /// The route of federated Service `namespace/name`.
    pub fn service_route(&self, namespace: &str, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.key.kind == RouteKind::Service && r.key.namespace == namespace && r.key.name == name
        })
    }
}

/// How well `rule` matches (higher is better), or `None`.
fn rule_score(rule: &Rule, host: &str, path: &str) -> Option<(u8, u8, usize)> {
    let host_score = match rule.host.as_deref() {
        None => 1,
        Some(h) if h.eq_ignore_ascii_case(host) => 3,
        Some(h) => {
            let suffix = h.strip_prefix("*.")?;
            let (first, rest) = host.split_once('.')?;
            (!first.is_empty() && rest.eq_ignore_ascii_case(suffix)).then_some(2)?
        }
    };
    let (path_score, len) = match rule.path.as_deref() {
        None => (0, 0),
        Some(p) if rule.exact => ((path == p).then_some(2)?, p.len()),
        Some(p) => {
            let p = p.trim_end_matches('/');
            let matches = path == p
                || p.is_empty()
                || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'));
            (matches.then_some(1)?, p.len() + 1)
        }
    };
    Some((host_score, path_score, len))
}

/// How routes are built.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Concurrent requests one ready replica takes (capacity = ready × this).
    pub per_replica_concurrency: u32,
    /// Time between active probes of every endpoint.
    pub probe_interval: Duration,
    /// Deadline of one probe.
    pub probe_timeout: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            per_replica_concurrency: 100,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

/// Keeps the routing table current.
pub struct Router {
    table: ArcSwap<Table>,
    locality: ArcSwap<Locality>,
    health: Arc<Health>,
    rebuild: tokio::sync::Notify,
}

impl Router {
    /// A router that serves `table` as it is, rebuilt by nobody: for measuring or
    /// testing the front doors alone.
    pub fn fixed(table: Table) -> Arc<Router> {
        let locality = table.locality.clone();
        Arc::new(Router {
            table: ArcSwap::from_pointee(table),
            locality: ArcSwap::new(locality),
            health: Arc::new(Health::default()),
            rebuild: tokio::sync::Notify::new(),
        })
    }

    /// The table now: cheap, lock-free; hold it for one request.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Passive and active health of backend endpoints.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Replaces the locality table (the routes are re-ranked for it).
    pub fn set_locality(&self, locality: Locality) {
        self.locality.store(Arc::new(locality));
        self.rebuild.notify_one();
    }

    /// Asks for a rebuild soon (a backend's health changed).
    pub fn refresh(&self) {
        self.rebuild.notify_one();
    }

    /// The routes as `/routes` shows them.
    pub fn describe(&self) -> serde_json::Value {
        let table = self.table();
        let routes: Vec<serde_json::Value> = table
            .routes
            .iter()
            .map(|r| {
                let rankings: BTreeMap<String, Vec<&str>> = r
                    .rankings
                    .iter()
                    .map(|(l, order)| {
                        let at = if l.region.is_empty() && l.zone.is_empty() {
                            "*".to_string()
                        } else {
                            format!("{}/{}", l.region, l.zone)
                        };
                        let names = order
                            .iter()
                            .filter_map(|i| r.backends.get(*i))
                            .map(|b| b.cluster.as_str())
                            .collect();
                        (at, names)
                    })
                    .collect();
                serde_json::json!({
                    "kind": r.key.kind, "namespace": r.key.namespace, "name": r.key.name,
                    "service": r.key.service, "plugin": r.plugin, "rules": r.rules,
                    "problems": r.problems,
                    "ports": r.ports,
                    "backends": r.backends, "rankings": rankings, "error": r.error,
                })
            })
            .collect();
        serde_json::json!({ "routes": routes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, rules: Vec<Rule>) -> Route {
        Route {
            key: RouteKey {
                kind: RouteKind::Ingress,
                namespace: "ns".into(),
                name: name.into(),
                service: name.into(),
            },
            rules,
            ports: Vec::new(),
            backends: Vec::new(),
            rankings: Vec::new(),
            plugin: "nearest-healthy".into(),
            error: None,
            problems: Vec::new(),
        }
    }

    fn rule(host: Option<&str>, path: Option<&str>, exact: bool) -> Rule {
        Rule {
            host: host.map(Into::into),
            path: path.map(Into::into),
            exact,
        }
    }

    #[test]
    fn ingress_rules_match_as_kubernetes_defines_them() {
        let table = Table {
            routes: vec![
                route("default", vec![rule(None, None, false)]),
                route(
                    "api",
                    vec![rule(Some("shop.example.com"), Some("/api"), false)],
                ),
                route(
                    "login",
                    vec![rule(Some("shop.example.com"), Some("/api/login"), true)],
                ),
                route("wild", vec![rule(Some("*.example.com"), Some("/"), false)]),
                route("any", vec![rule(None, Some("/static"), false)]),
            ],
            locality: Default::default(),
        };
        let at =
            |host: &str, path: &str| table.ingress_route(host, path).map(|r| r.key.name.as_str());
        assert_eq!(at("shop.example.com", "/api/cart"), Some("api"));
        assert_eq!(at("shop.example.com:8080", "/api"), Some("api"));
        assert_eq!(at("SHOP.example.com", "/api/login"), Some("login"));
        assert_eq!(at("shop.example.com", "/api/login/x"), Some("api"));
        // `/api` is not a prefix of `/apix`: prefixes match whole path elements.
        assert_eq!(at("shop.example.com", "/apix"), Some("wild"));
        assert_eq!(at("blog.example.com", "/x"), Some("wild"));
        assert_eq!(at("a.b.example.com", "/x"), Some("default"));
        assert_eq!(at("other.org", "/static/app.js"), Some("any"));
        assert_eq!(at("other.org", "/"), Some("default"));
        let empty = Table::default();
        assert!(empty.ingress_route("x", "/").is_none());
    }

    #[test]
    fn rankings_fall_back_to_the_unknown_location() {
        let mut r = route("web", vec![]);
        for name in ["a", "b"] {
            r.backends.push(Backend::serving(name, "", ""));
        }
        let asia = Location {
            region: "asia-east1".into(),
            zone: String::new(),
            position: None,
        };
        r.rankings = vec![
            (asia.clone(), vec![1, 0]),
            (Location::default(), vec![0, 1]),
        ];
        let names = |l: &Location| r.ranked(l).map(|b| b.cluster.clone()).collect::<Vec<_>>();
        assert_eq!(names(&asia), ["b", "a"]);
        let mars = Location {
            region: "mars-1".into(),
            zone: String::new(),
            position: None,
        };
        assert_eq!(names(&mars), ["a", "b"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn host() -> impl Strategy<Value = Option<String>> {
            prop::option::of(prop_oneof![
                Just("shop.example.com".to_string()),
                Just("*.example.com".to_string()),
                Just("EXAMPLE.com".to_string()),
                "[a-z*.]{0,12}",
            ])
        }

        fn path() -> impl Strategy<Value = Option<String>> {
            prop::option::of(prop_oneof![
                Just("/".to_string()),
                Just("/api".to_string()),
                Just("/api/".to_string()),
                "/[a-z/]{0,8}",
                ".{0,8}",
            ])
        }

        fn rule() -> impl Strategy<Value = Rule> {
            (host(), path(), any::<bool>()).prop_map(|(host, path, exact)| Rule {
                host,
                path,
                exact,
            })
        }

        proptest! {
            /// Whatever the Ingress rules and whatever a client sends as host and
            /// path: no panic; the route chosen has a rule that matches, and no
            /// route has a rule that matches better.
            #[test]
            fn the_best_matching_rule_wins_or_nothing_matches(
                rules in prop::collection::vec(prop::collection::vec(rule(), 0..4), 0..5),
                host in prop_oneof![Just("shop.example.com:8080".to_string()), Just("a.example.com".to_string()), ".{0,20}"],
                path in prop_oneof![Just("/api/v1".to_string()), Just("/".to_string()), ".{0,20}"],
            ) {
                let table = Table {
                    routes: rules
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| route(&format!("r{i}"), r))
                        .collect(),
                    locality: Arc::new(Locality::default()),
                };
                let asked = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
                let best = |r: &Route| r.rules.iter().filter_map(|rule| rule_score(rule, &asked, &path)).max();
                match table.ingress_route(&host, &path) {
                    None => prop_assert!(table.routes.iter().all(|r| best(r).is_none())),
                    Some(chosen) => {
                        let score = best(chosen);
                        prop_assert!(score.is_some());
                        prop_assert!(table.routes.iter().all(|r| best(r) <= score));
                    }
                }
            }
        }
    }
}
