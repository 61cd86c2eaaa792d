//! What a DNS question is answered with: pure functions of the zones served, one
//! routing-table snapshot ([`Index`]) and where the client is. No I/O, no clock.
//!
//! Names, relative to their zone (labels compared case-insensitively):
//!
//! | name | zone | records |
//! | --- | --- | --- |
//! | `dns-version` | `clusterset.local` | TXT, the MCS DNS schema version |
//! | `<svc>.<ns>.svc` | `clusterset.local` | A/AAAA (or CNAME) of the closest healthy shard |
//! | `_<port>._<proto>.<svc>.<ns>.svc` | `clusterset.local` | SRV per named port |
//! | `<svc>.<ns>.<federation>.svc` | `--dns-zone` | the closest healthy shard |
//! | `<svc>.<ns>.<federation>.svc.<region>` | `--dns-zone` | that region's, else CNAME to the name above |
//! | `<svc>.<ns>.<federation>.svc.<zone>.<region>` | `--dns-zone` | that zone's, else CNAME to its region's name |
//!
//! plus SRV names under the `--dns-zone` names as under `clusterset.local`. Every
//! proper suffix of such a name exists without data (an empty non-terminal:
//! NOERROR with no answer, so a resolver minimising query names walks down to the
//! service); any other name inside a zone is NXDOMAIN; a name outside every zone is
//! REFUSED (this server is authoritative only and never recurses).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use fedwasm_sdk::Location;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::routing::{Backend, Route, RouteKind, ServicePort, Table};

/// The Multi-Cluster Services zone (KEP-1645): fixed by the specification.
pub const CLUSTERSET_ZONE: &str = "clusterset.local.";

/// The MCS DNS schema version `dns-version.clusterset.local` answers with (the
/// KEP-1645 DNS specification: "This document describes version 1.0.0 of the
/// schema").
pub const SCHEMA_VERSION: &str = "1.0.0";

/// SRV priority and weight of every SRV record (one target per port, so any).
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 100;

/// The `--dns-zone` zone: the original Federation's names.
#[derive(Clone, Debug)]
struct FederationZone {
    domain: Name,
    /// The federation's name, one lower-case label.
    name: String,
}

/// The zones served and the TTL of every answer.
#[derive(Clone, Debug)]
pub struct Zones {
    clusterset: Name,
    federation: Option<FederationZone>,
    ttl: u32,
}

impl Zones {
    /// `clusterset.local`, and with `domain` the Federation names of federation
    /// `federation` under it; every record lives `ttl`.
    pub fn new(domain: Option<&str>, federation: &str, ttl: Duration) -> Result<Self, String> {
        let clusterset = Name::from_ascii(CLUSTERSET_ZONE).map_err(|e| e.to_string())?;
        let federation = match domain {
            None => None,
            Some(domain) => {
                let trimmed = domain.trim().trim_end_matches('.');
                let mut name = Name::from_ascii(trimmed)
                    .map_err(|e| format!("--dns-zone `{domain}`: {e}"))?
                    .to_lowercase();
                name.set_fqdn(true);
                if name.is_root() || trimmed.is_empty() {
                    return Err(format!("--dns-zone `{domain}`: the root is not a zone"));
                }
                let label = federation.trim().to_ascii_lowercase();
                let valid = !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-');
                if !valid {
                    return Err(format!(
                        "--federation-name `{federation}`: not a DNS label (a-z, 0-9, `-`, at most 63)"
                    ));
                }
                Some(FederationZone {
                    domain: name,
                    name: label,
                })
            }
        };
        Ok(Self {
            clusterset,
            federation,
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        })
    }

    /// The TTL of every record, in seconds.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The SOA of `zone`: in the authority section of negative answers, its
    /// minimum (the negative-caching TTL) being the TTL of every answer.
    fn soa(&self, zone: &Name) -> Record {
        let host = |label: &str| {
            Name::from_ascii(label)
                .and_then(|l| l.append_domain(zone))
                .unwrap_or_else(|_| zone.clone())
        };
        let ttl = self.ttl;
        let clamp = |s: u32| i32::try_from(s).unwrap_or(i32::MAX);
        Record::from_rdata(
            zone.clone(),
            ttl,
            RData::SOA(SOA::new(
                host("ns.dns"),
                host("hostmaster"),
                1,
                clamp(7200),
                clamp(1800),
                clamp(86400),
                ttl,
            )),
        )
    }
}

/// One routing-table snapshot, indexed for DNS: Service routes by namespace and
/// name, and the regions and zones their shards are in (all lower case).
#[derive(Debug, Default)]
pub struct Index {
    table: Arc<Table>,
    /// Namespace → Service name → route.
    services: HashMap<String, HashMap<String, usize>>,
    /// Region → its zones.
    regions: HashMap<String, HashSet<String>>,
}

impl Index {
    pub fn new(table: Arc<Table>) -> Self {
        let mut index = Self::default();
        for (i, route) in table.routes.iter().enumerate() {
            if route.key.kind != RouteKind::Service {
                continue;
            }
            index
                .services
                .entry(route.key.namespace.to_ascii_lowercase())
                .or_default()
                .entry(route.key.name.to_ascii_lowercase())
                .or_insert(i);
            for b in route.backends.iter().filter(|b| !b.region.is_empty()) {
                let zones = index
                    .regions
                    .entry(b.region.to_ascii_lowercase())
                    .or_default();
                if !b.zone.is_empty() {
                    zones.insert(b.zone.to_ascii_lowercase());
                }
            }
        }
        index.table = table;
        index
    }

    /// The snapshot this index was made from.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    fn service(&self, namespace: &str, name: &str) -> Option<&Route> {
        let i = self.services.get(namespace)?.get(name)?;
        self.table.routes.get(*i)
    }
}

/// A response, before it is encoded.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    pub code: ResponseCode,
    /// Inside a zone served: an authoritative answer.
    pub authoritative: bool,
    pub answers: Vec<Record>,
    /// The zone's SOA, on NXDOMAIN and on an empty answer.
    pub authorities: Vec<Record>,
    /// For SRV: the target's addresses.
    pub additionals: Vec<Record>,
    /// The answer depends on where the client is (the scope of an EDNS Client
    /// Subnet answer).
    pub located: bool,
}

impl Answer {
    fn refused() -> Self {
        Self {
            code: ResponseCode::Refused,
            ..Self::default()
        }
    }
}

/// Which shards a name asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// The closest healthy one, anywhere.
    Global,
    /// The closest healthy one in the region.
    Region(String),
    /// The closest healthy one in the zone (of the region).
    Zone(String, String),
}

impl Scope {
    fn holds(&self, b: &Backend) -> bool {
        match self {
            Scope::Global => true,
            Scope::Region(r) => b.region.eq_ignore_ascii_case(r),
            Scope::Zone(z, r) => b.zone.eq_ignore_ascii_case(z) && b.region.eq_ignore_ascii_case(r),
        }
    }

    /// The labels it adds to a name (left to right).
    fn labels(&self) -> Vec<&str> {
        match self {
            Scope::Global => vec![],
            Scope::Region(r) => vec![r],
            Scope::Zone(z, r) => vec![z, r],
        }
    }

    /// One level up: a zone's region, a region's global name.
    fn parent(&self) -> Option<Scope> {
        match self {
            Scope::Global => None,
            Scope::Region(_) => Some(Scope::Global),
            Scope::Zone(_, r) => Some(Scope::Region(r.clone())),
        }
    }
}

/// What a name inside a zone is.
#[derive(Debug)]
enum Node<'t> {
    /// Nothing: NXDOMAIN.
    Nothing,
    /// A name with no records of its own but names below it.
    Empty,
    /// The zone's apex (SOA).
    Apex,
    /// `dns-version.clusterset.local`.
    Version,
    /// A federated Service's name.
    Service(&'t Route),
    /// One of its named ports' SRV name.
    Srv(&'t Route, &'t ServicePort),
}

/// Answers `qtype` `qname` for a client at `client`.
pub fn answer(
    zones: &Zones,
    index: &Index,
    qname: &Name,
    qtype: RecordType,
    client: &Location,
) -> Answer {
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Answer::refused();
    }
    let lower = qname.to_lowercase();
    // The most specific zone holding the name.
    let mut zone: Option<(&Name, Option<&FederationZone>)> = None;
    if zones.clusterset.zone_of(&lower) {
        zone = Some((&zones.clusterset, None));
    }
    if let Some(fed) = &zones.federation {
        if fed.domain.zone_of(&lower)
            && zone.is_none_or(|(z, _)| fed.domain.num_labels() > z.num_labels())
        {
            zone = Some((&fed.domain, Some(fed)));
        }
    }
    let Some((apex, federation)) = zone else {
        return Answer::refused();
    };
    let labels: Option<Vec<&str>> = lower.iter().map(|l| std::str::from_utf8(l).ok()).collect();
    let relative = labels.as_deref().map(|l| {
        let n = l.len().saturating_sub(usize::from(apex.num_labels()));
        &l[..n]
    });
    let (node, scope) = match relative {
        None => (Node::Nothing, Scope::Global),
        Some(rel) => match federation {
            None => (clusterset_node(index, rel), Scope::Global),
            Some(fed) => federation_node(index, fed, rel),
        },
    };
    let mut out = Answer {
        code: ResponseCode::NoError,
        authoritative: true,
        ..Answer::default()
    };
    let ttl = zones.ttl;
    let any = qtype == RecordType::ANY;
    match node {
        Node::Nothing => out.code = ResponseCode::NXDomain,
        Node::Empty => {}
        Node::Apex => {
            if qtype == RecordType::SOA || any {
                out.answers.push(zones.soa(apex));
            }
        }
        Node::Version => {
            if qtype == RecordType::TXT || any {
                out.answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                ));
            }
        }
        Node::Service(route) => {
            if matches!(
                qtype,
                RecordType::A | RecordType::AAAA | RecordType::CNAME | RecordType::ANY
            ) {
                out.located = true;
                let target = Target {
                    route,
                    apex,
                    federation,
                    client,
                    ttl,
                };
                target.resolve(qname, &scope, qtype, &mut out.answers);
            }
        }
        Node::Srv(route, port) => {
            if qtype == RecordType::SRV || any {
                // The target: the same name without `_<port>._<proto>`.
                let host = qname.trim_to(usize::from(qname.num_labels().saturating_sub(2)));
                out.answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(SRV_PRIORITY, SRV_WEIGHT, port.port, host.clone())),
                ));
                out.located = true;
                let target = Target {
                    route,
                    apex,
                    federation,
                    client,
                    ttl,
                };
                let mut addresses = Vec::new();
                target.resolve(&host, &scope, RecordType::ANY, &mut addresses);
                out.additionals.extend(
                    addresses
                        .into_iter()
                        .filter(|r| r.name == host && !matches!(r.data, RData::CNAME(_))),
                );
            }
        }
    }
    if out.answers.is_empty() {
        out.authorities.push(zones.soa(apex));
    }
    out
}

/// A name in `clusterset.local`, relative to it.
fn clusterset_node<'t>(index: &'t Index, rel: &[&str]) -> Node<'t> {
    match rel {
        [] => Node::Apex,
        ["dns-version"] => Node::Version,
        _ => service_node(index, rel, &["svc"]),
    }
}

/// A name in the `--dns-zone` zone, relative to it, and the shards it asks for.
fn federation_node<'t>(index: &'t Index, fed: &FederationZone, rel: &[&str]) -> (Node<'t>, Scope) {
    if rel.is_empty() {
        return (Node::Apex, Scope::Global);
    }
    let n = rel.len();
    // The most specific scope first: `<zone>.<region>`, `<region>`, none.
    let mut scopes = Vec::with_capacity(3);
    if n >= 2 {
        let (z, r) = (rel[n - 2], rel[n - 1]);
        if index.regions.get(r).is_some_and(|zones| zones.contains(z)) {
            scopes.push((2, Scope::Zone(z.to_string(), r.to_string())));
        }
    }
    if index.regions.contains_key(rel[n - 1]) {
        scopes.push((1, Scope::Region(rel[n - 1].to_string())));
    }
    scopes.push((0, Scope::Global));
    for (k, scope) in scopes {
        let before = &rel[..n - k];
        if before.is_empty() {
            // `<region>` or `<zone>.<region>` alone: names exist below it.
            return (Node::Empty, scope);
        }
        let node = service_node(index, before, &["svc", fed.name.as_str()]);
        if !matches!(node, Node::Nothing) {
            return (node, scope);
        }
    }
    (Node::Nothing, Scope::Global)
}

/// `[_<port>, _<proto>,] <svc>, <ns>, <fixed...>` read right to left: `fixed` are
/// the labels right after the namespace, right to left (`svc`, and the federation's
/// name in the `--dns-zone` zone).
fn service_node<'t>(index: &'t Index, labels: &[&str], fixed: &[&str]) -> Node<'t> {
    let mut from_right = labels.iter().rev();
    for f in fixed {
        match from_right.next() {
            Some(l) if l == f => {}
            Some(_) => return Node::Nothing,
            None => return Node::Empty,
        }
    }
    let Some(ns) = from_right.next() else {
        return Node::Empty;
    };
    if !index.services.contains_key(*ns) {
        return Node::Nothing;
    }
    let Some(name) = from_right.next() else {
        return Node::Empty;
    };
    let Some(route) = index.service(ns, name) else {
        return Node::Nothing;
    };
    let Some(proto) = from_right.next() else {
        return Node::Service(route);
    };
    let Some(proto) = proto.strip_prefix('_') else {
        return Node::Nothing;
    };
    let named = |p: &&ServicePort| !p.name.is_empty() && p.protocol.eq_ignore_ascii_case(proto);
    if !route.ports.iter().any(|p| named(&p)) {
        return Node::Nothing;
    }
    let Some(port) = from_right.next() else {
        return Node::Empty;
    };
    let Some(port) = port.strip_prefix('_') else {
        return Node::Nothing;
    };
    match (
        from_right.next(),
        route
            .ports
            .iter()
            .find(|p| named(p) && p.name.eq_ignore_ascii_case(port)),
    ) {
        (None, Some(p)) => Node::Srv(route, p),
        _ => Node::Nothing,
    }
}

/// A Service's name being resolved for one client.
struct Target<'a> {
    route: &'a Route,
    apex: &'a Name,
    federation: Option<&'a FederationZone>,
    client: &'a Location,
    ttl: u32,
}

impl Target<'_> {
    /// Appends the records answering `qtype` for `owner` at `scope`: the closest
    /// healthy shard's addresses; in the `--dns-zone` zone, when the region or zone
    /// has none, a CNAME one level up, followed.
    fn resolve(&self, owner: &Name, scope: &Scope, qtype: RecordType, out: &mut Vec<Record>) {
        let best = self
            .route
            .ranked(self.client)
            .find(|b| b.healthy && !b.addresses.is_empty() && scope.holds(b));
        if let Some(backend) = best {
            address_records(owner, backend, qtype, self.ttl, out);
            return;
        }
        let (Some(fed), Some(parent)) = (self.federation, scope.parent()) else {
            return;
        };
        let Some(up) = self.name(fed, &parent) else {
            return;
        };
        out.push(Record::from_rdata(
            owner.clone(),
            self.ttl,
            RData::CNAME(CNAME(up.clone())),
        ));
        if qtype != RecordType::CNAME {
            self.resolve(&up, &parent, qtype, out);
        }
    }

    /// `<svc>.<ns>.<federation>.svc[.<scope>].<domain>`.
    fn name(&self, fed: &FederationZone, scope: &Scope) -> Option<Name> {
        let key = &self.route.key;
        let mut labels = vec![
            key.name.to_ascii_lowercase(),
            key.namespace.to_ascii_lowercase(),
            fed.name.clone(),
            "svc".to_string(),
        ];
        labels.extend(scope.labels().into_iter().map(str::to_string));
        Name::from_labels(labels.iter().map(|l| l.as_bytes()))
            .ok()?
            .append_domain(self.apex)
            .ok()
    }
}

/// A shard's addresses as records of `owner`: its IPs as A/AAAA records; a shard
/// with host names only, a CNAME to the first.
fn address_records(
    owner: &Name,
    backend: &Backend,
    qtype: RecordType,
    ttl: u32,
    out: &mut Vec<Record>,
) {
    let ips: Vec<IpAddr> = backend
        .addresses
        .iter()
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    if ips.is_empty() {
        let host = backend.addresses.iter().find_map(|a| {
            let mut n = Name::from_ascii(a.trim().trim_end_matches('.')).ok()?;
            n.set_fqdn(true);
            (!n.is_root()).then_some(n)
        });
        if let Some(host) = host {
            out.push(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::CNAME(CNAME(host)),
            ));
        }
        return;
    }
    for ip in ips {
        let data = match ip {
            IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
                RData::AAAA(AAAA(v6))
            }
            _ => continue,
        };
        out.push(Record::from_rdata(owner.clone(), ttl, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Locality, RouteKey};

    fn location(region: &str, zone: &str) -> Location {
        Location {
            region: region.into(),
            zone: zone.into(),
            position: None,
        }
    }

    fn backend(cluster: &str, region: &str, zone: &str, addresses: &[&str]) -> Backend {
        Backend {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            ready_replicas: 2,
            capacity: 200,
            ..Backend::serving(cluster, region, zone)
        }
    }

    /// `web` in `shop` on three members (eu, us, asia: 192.0.2.1/2/3), ranked for
    /// Asia (asia, us, eu), the US (us, eu, asia) and anywhere else (eu, us, asia);
    /// `api` in `shop` on one member with a host name and an IPv6 address.
    fn table() -> Table {
        let web = Route {
            key: RouteKey {
                kind: RouteKind::Service,
                namespace: "shop".into(),
                name: "web".into(),
                service: "web".into(),
            },
            rules: Vec::new(),
            ports: vec![
                ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: "TCP".into(),
                },
                ServicePort {
                    name: String::new(),
                    port: 8080,
                    protocol: "TCP".into(),
                },
                ServicePort {
                    name: "dns".into(),
                    port: 53,
                    protocol: "UDP".into(),
                },
            ],
            backends: vec![
                backend("m1", "europe-west1", "europe-west1-b", &["192.0.2.1"]),
                backend("m2", "us-central1", "us-central1-a", &["192.0.2.2"]),
                backend(
                    "m3",
                    "asia-east1",
                    "asia-east1-a",
                    &["192.0.2.3", "2001:db8::3"],
                ),
            ],
            rankings: vec![
                (location("asia-east1", "asia-east1-a"), vec![2, 1, 0]),
                (location("us-central1", "us-central1-a"), vec![1, 0, 2]),
                (Location::default(), vec![0, 1, 2]),
            ],
            plugin: "nearest-healthy".into(),
            error: None,
            problems: Vec::new(),
        };
        let mut api = web.clone();
        api.key.name = "api".into();
        api.key.service = "api".into();
        api.ports.clear();
        api.backends = vec![backend(
            "m2",
            "us-central1",
            "us-central1-a",
            &["lb.example.net"],
        )];
        api.rankings = vec![(Location::default(), vec![0])];
        let mut ingress = web.clone();
        ingress.key.kind = RouteKind::Ingress;
        ingress.key.namespace = "other".into();
        Table {
            routes: vec![web, api, ingress],
            locality: Arc::new(Locality::default()),
        }
    }

    fn zones() -> Zones {
        Zones::new(Some("example.com"), "federation", Duration::from_secs(5)).unwrap()
    }

    fn ask(index: &Index, name: &str, qtype: RecordType, at: &Location) -> Answer {
        answer(&zones(), index, &Name::from_ascii(name).unwrap(), qtype, at)
    }

    /// The answer's records as `owner TYPE data` lines.
    fn lines(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect()
    }

    fn asia() -> Location {
        location("asia-east1", "asia-east1-a")
    }

    #[test]
    fn a_service_is_its_closest_healthy_shard() {
        let index = Index::new(Arc::new(table()));
        let name = "web.shop.svc.clusterset.local.";
        let a = ask(&index, name, RecordType::A, &asia());
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.authoritative && a.located);
        assert_eq!(lines(&a.answers), [format!("{name} A 192.0.2.3")]);
        assert_eq!(a.answers[0].ttl, 5);
        let us = location("us-central1", "us-central1-a");
        let a = ask(&index, name, RecordType::A, &us);
        assert_eq!(lines(&a.answers), [format!("{name} A 192.0.2.2")]);
        // Nowhere known: the unknown location's order.
        let a = ask(&index, name, RecordType::A, &location("mars-1", ""));
        assert_eq!(lines(&a.answers), [format!("{name} A 192.0.2.1")]);
        let a = ask(&index, name, RecordType::AAAA, &asia());
        assert_eq!(lines(&a.answers), [format!("{name} AAAA 2001:db8::3")]);
        // The US shard has no IPv6 address: no data, the SOA says for how long.
        let a = ask(&index, name, RecordType::AAAA, &us);
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        // Names are case-insensitive; the owner keeps the question's case.
        let a = ask(
            &index,
            "Web.SHOP.svc.ClusterSet.local.",
            RecordType::A,
            &asia(),
        );
        assert_eq!(
            lines(&a.answers),
            ["Web.SHOP.svc.ClusterSet.local. A 192.0.2.3"]
        );
    }

    #[test]
    fn an_unhealthy_shard_gives_way_to_the_next_closest() {
        let mut t = table();
        t.routes[0].backends[2].healthy = false;
        let index = Index::new(Arc::new(t));
        let a = ask(
            &index,
            "web.shop.svc.clusterset.local.",
            RecordType::A,
            &asia(),
        );
        assert_eq!(
            lines(&a.answers),
            ["web.shop.svc.clusterset.local. A 192.0.2.2"]
        );
        // None healthy: no data.
        let mut t = table();
        for b in &mut t.routes[0].backends {
            b.healthy = false;
        }
        let index = Index::new(Arc::new(t));
        let a = ask(
            &index,
            "web.shop.svc.clusterset.local.",
            RecordType::A,
            &asia(),
        );
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.answers.is_empty() && a.authorities.len() == 1);
    }

    #[test]
    fn a_host_name_is_a_cname() {
        let index = Index::new(Arc::new(table()));
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let a = ask(&index, "api.shop.svc.clusterset.local.", qtype, &asia());
            assert_eq!(
                lines(&a.answers),
                ["api.shop.svc.clusterset.local. CNAME lb.example.net."]
            );
        }
    }

    #[test]
    fn named_ports_have_srv_records() {
        let index = Index::new(Arc::new(table()));
        let a = ask(
            &index,
            "_http._tcp.web.shop.svc.clusterset.local.",
            RecordType::SRV,
            &asia(),
        );
        assert_eq!(
            lines(&a.answers),
            ["_http._tcp.web.shop.svc.clusterset.local. SRV 0 100 80 web.shop.svc.clusterset.local."]
        );
        assert_eq!(
            lines(&a.additionals),
            [
                "web.shop.svc.clusterset.local. A 192.0.2.3",
                "web.shop.svc.clusterset.local. AAAA 2001:db8::3"
            ]
        );
        let a = ask(
            &index,
            "_dns._udp.web.shop.svc.clusterset.local.",
            RecordType::SRV,
            &asia(),
        );
        assert_eq!(a.answers.len(), 1, "{a:?}");
        // The protocol must match; unnamed ports have none.
        for name in [
            "_dns._tcp.web.shop.svc.clusterset.local.",
            "_http._udp.web.shop.svc.clusterset.local.",
            "_8080._tcp.web.shop.svc.clusterset.local.",
            "_http._tcp.api.shop.svc.clusterset.local.",
            "x._http._tcp.web.shop.svc.clusterset.local.",
        ] {
            let a = ask(&index, name, RecordType::SRV, &asia());
            assert_eq!(a.code, ResponseCode::NXDomain, "{name}");
        }
        // `_tcp.<svc>...` has names below it.
        let a = ask(
            &index,
            "_tcp.web.shop.svc.clusterset.local.",
            RecordType::SRV,
            &asia(),
        );
        assert_eq!((a.code, a.answers.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn the_schema_version_and_the_apex() {
        let index = Index::new(Arc::new(table()));
        let a = ask(
            &index,
            "dns-version.clusterset.local.",
            RecordType::TXT,
            &asia(),
        );
        assert_eq!(
            lines(&a.answers),
            ["dns-version.clusterset.local. TXT 1.0.0"]
        );
        assert!(!a.located);
        let a = ask(&index, "clusterset.local.", RecordType::SOA, &asia());
        assert_eq!(a.answers[0].record_type(), RecordType::SOA);
        assert_eq!(a.answers[0].name.to_string(), "clusterset.local.");
        let a = ask(&index, "clusterset.local.", RecordType::NS, &asia());
        assert!(a.answers.is_empty() && a.code == ResponseCode::NoError);
    }

    #[test]
    fn unknown_names_inside_are_nxdomain_and_outside_refused() {
        let index = Index::new(Arc::new(table()));
        for name in [
            "nope.shop.svc.clusterset.local.",
            "web.nope.svc.clusterset.local.",
            "m1.web.shop.svc.clusterset.local.",
            "web.shop.svcx.clusterset.local.",
            "www.clusterset.local.",
            // An Ingress route is not a Service.
            "web.other.svc.clusterset.local.",
            "nope.shop.federation.svc.example.com.",
            "web.shop.other-fed.svc.example.com.",
            "web.shop.federation.svc.mars-1.example.com.",
        ] {
            let a = ask(&index, name, RecordType::A, &asia());
            assert_eq!(a.code, ResponseCode::NXDomain, "{name}");
            assert!(a.authoritative, "{name}");
            assert_eq!(a.authorities.len(), 1, "{name}: the SOA");
            assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        }
        // Parents of names that exist are empty, not missing.
        for name in [
            "svc.clusterset.local.",
            "shop.svc.clusterset.local.",
            "svc.example.com.",
            "federation.svc.example.com.",
            "shop.federation.svc.example.com.",
            "us-central1.example.com.",
            "us-central1-a.us-central1.example.com.",
            "shop.federation.svc.us-central1.example.com.",
        ] {
            let a = ask(&index, name, RecordType::A, &asia());
            assert_eq!(
                (a.code, a.answers.len()),
                (ResponseCode::NoError, 0),
                "{name}"
            );
        }
        for name in ["example.org.", "clusterset.localx.", "local.", "."] {
            let a = ask(&index, name, RecordType::A, &asia());
            assert_eq!(a.code, ResponseCode::Refused, "{name}");
            assert!(!a.authoritative && a.authorities.is_empty(), "{name}");
        }
        // Without --dns-zone, its names are outside.
        let only = Zones::new(None, "federation", Duration::from_secs(5)).unwrap();
        let q = Name::from_ascii("web.shop.federation.svc.example.com.").unwrap();
        let a = answer(&only, &index, &q, RecordType::A, &asia());
        assert_eq!(a.code, ResponseCode::Refused);
        // No zone transfers.
        let a = ask(&index, "clusterset.local.", RecordType::AXFR, &asia());
        assert_eq!(a.code, ResponseCode::Refused);
    }

    #[test]
    fn federation_names_by_region_and_zone() {
        let mut t = table();
        // A second European shard in another zone.
        t.routes[0].backends.push(backend(
            "m4",
            "europe-west1",
            "europe-west1-c",
            &["192.0.2.4"],
        ));
        t.routes[0].rankings = vec![
            (location("asia-east1", "asia-east1-a"), vec![2, 1, 0, 3]),
            (Location::default(), vec![0, 3, 1, 2]),
        ];
        let index = Index::new(Arc::new(t));
        let a = |name: &str| lines(&ask(&index, name, RecordType::A, &asia()).answers);
        let global = "web.shop.federation.svc.example.com.";
        assert_eq!(a(global), [format!("{global} A 192.0.2.3")]);
        let us = "web.shop.federation.svc.us-central1.example.com.";
        assert_eq!(a(us), [format!("{us} A 192.0.2.2")]);
        let eu_c = "web.shop.federation.svc.europe-west1-c.europe-west1.example.com.";
        assert_eq!(a(eu_c), [format!("{eu_c} A 192.0.2.4")]);
        // The region's closest for this client (Asia ranks m1 before m4).
        let eu = "web.shop.federation.svc.europe-west1.example.com.";
        assert_eq!(a(eu), [format!("{eu} A 192.0.2.1")]);
        let srv = "_http._tcp.web.shop.federation.svc.us-central1.example.com.";
        let s = ask(&index, srv, RecordType::SRV, &asia());
        assert_eq!(lines(&s.answers), [format!("{srv} SRV 0 100 80 {us}")]);
        assert_eq!(lines(&s.additionals), [format!("{us} A 192.0.2.2")]);

        // No healthy shard in the zone: a CNAME to the region, then to the world.
        let mut t = index.table().as_ref().clone_routes();
        t.routes[0].backends[3].healthy = false;
        let index = Index::new(Arc::new(t));
        let a = |name: &str, q| lines(&ask(&index, name, q, &asia()).answers);
        assert_eq!(
            a(eu_c, RecordType::A),
            [format!("{eu_c} CNAME {eu}"), format!("{eu} A 192.0.2.1")]
        );
        assert_eq!(a(eu_c, RecordType::CNAME), [format!("{eu_c} CNAME {eu}")]);
        let mut t = index.table().as_ref().clone_routes();
        t.routes[0].backends[0].healthy = false;
        let index = Index::new(Arc::new(t));
        let a = |name: &str| lines(&ask(&index, name, RecordType::A, &asia()).answers);
        assert_eq!(
            a(eu_c),
            [
                format!("{eu_c} CNAME {eu}"),
                format!("{eu} CNAME {global}"),
                format!("{global} A 192.0.2.3"),
            ]
        );
    }

    #[test]
    fn federation_names_need_a_label_and_a_zone() {
        assert!(Zones::new(Some("."), "federation", Duration::from_secs(5)).is_err());
        assert!(Zones::new(Some("example.com"), "", Duration::from_secs(5)).is_err());
        assert!(Zones::new(Some("example.com"), "a.b", Duration::from_secs(5)).is_err());
        assert!(Zones::new(Some("bad..name"), "f", Duration::from_secs(5)).is_err());
        let z = Zones::new(Some("Example.COM."), "Fed", Duration::from_secs(30)).unwrap();
        assert_eq!(z.ttl(), 30);
        let index = Index::new(Arc::new(table()));
        let q = Name::from_ascii("web.shop.fed.svc.example.com.").unwrap();
        let a = answer(&z, &index, &q, RecordType::A, &asia());
        assert_eq!(lines(&a.answers), [format!("{q} A 192.0.2.3")]);
    }

    impl Table {
        fn clone_routes(&self) -> Table {
            Table {
                routes: self.routes.clone(),
                locality: self.locality.clone(),
            }
        }
    }
}
