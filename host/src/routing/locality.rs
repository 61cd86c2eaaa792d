//! Where a client is: the locality table (`--locality FILE`, JSON or YAML) maps
//! client networks to a region and zone. The source address decides; a
//! `X-Forwarded-For` header is believed only when the connection comes from a
//! trusted proxy (then the right-most address that is not itself a trusted proxy is
//! the client), as a reverse proxy chain appends to it.
//!
//! The table also says where regions are (`regions: {name: {lat, lon}}`), over the
//! SDK's built-in table of GCE, AWS and Azure regions: the rank hook gets the
//! position of the client's region and of every backend's, so "closest" is a
//! distance for on-premises regions too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use fedwasm_sdk::{Coordinates, Location};
use serde::Deserialize;

/// Why a locality table is not usable.
#[derive(Debug, thiserror::Error)]
pub enum LocalityError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

/// A network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

/// An IPv4 address in an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or a network (a.b.c.d/n)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One client network and where it is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientNetwork {
    pub cidr: Cidr,
    pub region: String,
    #[serde(default)]
    pub zone: String,
}

/// The locality table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Locality {
    #[serde(default)]
    pub clients: Vec<ClientNetwork>,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Where regions are, over the built-in table.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionPosition>,
}

/// Where a region is, in degrees.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPosition {
    pub lat: f64,
    pub lon: f64,
}

impl Locality {
    /// Reads and validates a table: JSON when the file starts with `{`, else YAML.
    /// The error names the file, the line or field, and what is wrong.
    pub fn load(path: &Path) -> Result<Self, LocalityError> {
        let text = std::fs::read_to_string(path).map_err(|source| LocalityError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| LocalityError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a table (JSON or YAML).
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: Self = if text.trim_start().starts_with('{') {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let inner = e.inner();
                format!(
                    "line {}, column {}, at `{}`: {inner}",
                    inner.line(),
                    inner.column(),
                    e.path()
                )
            })?
        } else {
            serde_saphyr::from_str(text).map_err(|e| e.to_string())?
        };
        for (i, c) in table.clients.iter().enumerate() {
            if c.region.trim().is_empty() {
                return Err(format!("clients[{i}] ({:?}): `region` is empty", c.cidr));
            }
        }
        for (name, p) in &table.regions {
            if !(-90.0..=90.0).contains(&p.lat) {
                return Err(format!(
                    "regions.{name}.lat: {} is not a latitude (-90 to 90)",
                    p.lat
                ));
            }
            if !(-180.0..=180.0).contains(&p.lon) {
                return Err(format!(
                    "regions.{name}.lon: {} is not a longitude (-180 to 180)",
                    p.lon
                ));
            }
        }
        Ok(table)
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusted(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut last = peer;
        for hop in header.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // A malformed entry: trust nothing left of it.
                return last;
            };
            let ip = canonical(ip);
            if !self.trusted(ip) {
                return ip;
            }
            last = ip;
        }
        last
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// Where `ip` is: the most specific network that holds it; unknown (empty
    /// region and zone) when none does.
    pub fn locate(&self, ip: IpAddr) -> Location {
        self.clients
            .iter()
            .filter(|c| c.cidr.contains(ip))
            .max_by_key(|c| c.cidr.prefix())
            .map(|c| self.location(c))
            .unwrap_or_default()
    }

    fn location(&self, c: &ClientNetwork) -> Location {
        Location {
            region: c.region.clone(),
            zone: c.zone.clone(),
            position: self.position(&c.region, &c.zone),
        }
    }

    /// Where a region is (named, or implied by a zone such as `europe-west1-b`):
    /// this table's `regions` first, then the built-in one.
    pub fn position(&self, region: &str, zone: &str) -> Option<Coordinates> {
        let region = fedwasm_sdk::regions::region_of(region, zone);
        match self.regions.get(region) {
            Some(p) => Some(Coordinates {
                latitude: p.lat,
                longitude: p.lon,
            }),
            None => fedwasm_sdk::regions::position(region),
        }
    }

    /// Every location the table names, and the unknown one: the places rankings
    /// are computed for ahead of any request.
    pub fn locations(&self) -> Vec<Location> {
        let mut out: Vec<Location> = self.clients.iter().map(|c| self.location(c)).collect();
        out.push(Location::default());
        out.sort_by(|a, b| (&a.region, &a.zone).cmp(&(&b.region, &b.zone)));
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const TABLE: &str = r#"{"clients": [
        {"cidr": "127.1.0.0/16", "region": "asia-east1", "zone": "asia-east1-a"},
        {"cidr": "127.1.2.0/24", "region": "asia-east1", "zone": "asia-east1-b"},
        {"cidr": "127.2.0.0/16", "region": "us-central1"},
        {"cidr": "2001:db8::/32", "region": "europe-west1"}],
      "trustedProxies": ["10.0.0.0/8"]}"#;

    #[test]
    fn the_most_specific_network_wins() {
        let t = Locality::parse(TABLE).unwrap();
        assert_eq!(t.locate(ip("127.1.9.9")).zone, "asia-east1-a");
        assert_eq!(t.locate(ip("127.1.2.3")).zone, "asia-east1-b");
        assert_eq!(t.locate(ip("127.2.0.1")).region, "us-central1");
        assert_eq!(t.locate(ip("::ffff:127.2.0.1")).region, "us-central1");
        assert_eq!(t.locate(ip("2001:db8::1")).region, "europe-west1");
        assert_eq!(t.locate(ip("192.0.2.1")), Location::default());
        assert_eq!(t.locations().len(), 5, "{:?}", t.locations());
    }

    #[test]
    fn regions_are_placed_by_the_table_then_the_built_in_one() {
        let t = Locality::parse(
            r#"{"clients": [{"cidr": "127.3.0.0/16", "region": "berlin-dc"},
                            {"cidr": "127.2.0.0/16", "region": "us-central1"}],
                "regions": {"berlin-dc": {"lat": 52.52, "lon": 13.4},
                            "us-central1": {"lat": 1.0, "lon": 2.0}}}"#,
        )
        .unwrap();
        let berlin = t.locate(ip("127.3.0.1")).position.unwrap();
        assert_eq!((berlin.latitude, berlin.longitude), (52.52, 13.4));
        // The file wins over the built-in table; zones imply their region.
        let moved = t.locate(ip("127.2.0.1")).position.unwrap();
        assert_eq!((moved.latitude, moved.longitude), (1.0, 2.0));
        assert_eq!(
            t.position("", "asia-east1-b"),
            fedwasm_sdk::regions::position("asia-east1")
        );
        assert_eq!(t.position("basement", ""), None);
        assert!(t
            .locations()
            .iter()
            .all(|l| l.region.is_empty() || l.position.is_some()));
        let e = Locality::parse(r#"{"regions": {"x": {"lat": 91, "lon": 0}}}"#).unwrap_err();
        assert!(e.contains("regions.x.lat"), "{e}");
        let e =
            Locality::parse(r#"{"regions": {"x": {"lat": 0, "lon": 0, "alt": 1}}}"#).unwrap_err();
        assert!(
            e.contains("regions.x") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let t = Locality::parse(TABLE).unwrap();
        let xff = Some("127.2.0.9, 10.1.1.1");
        // A client cannot claim to be elsewhere.
        assert_eq!(t.client_address(ip("127.1.0.5"), xff), ip("127.1.0.5"));
        // Through two trusted proxies: the right-most untrusted hop.
        assert_eq!(t.client_address(ip("10.0.0.1"), xff), ip("127.2.0.9"));
        assert_eq!(
            t.client_address(ip("10.0.0.1"), Some("junk, 10.2.2.2")),
            ip("10.2.2.2")
        );
        assert_eq!(t.client_address(ip("10.0.0.1"), None), ip("10.0.0.1"));
    }

    #[test]
    fn yaml_works_and_mistakes_are_named() {
        let t = Locality::parse("clients:\n- cidr: 127.1.0.0/16\n  region: asia-east1\n").unwrap();
        assert_eq!(t.locate(ip("127.1.0.1")).region, "asia-east1");
        let e = Locality::parse(r#"{"clients": [{"cidr": "127.1.0.0/40", "region": "x"}]}"#)
            .unwrap_err();
        assert!(e.contains("clients[0].cidr") && e.contains("prefix"), "{e}");
        let e = Locality::parse(r#"{"clients": [], "trusted": []}"#).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = Locality::parse("clients:\n- cidr: nonsense\n  region: x\n").unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
        let e =
            Locality::parse(r#"{"clients": [{"cidr": "127.0.0.1", "region": " "}]}"#).unwrap_err();
        assert!(e.contains("region"), "{e}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn cidr_like() -> impl Strategy<Value = String> {
            prop_oneof![
                (any::<[u8; 4]>(), 0u8..=40)
                    .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
                (any::<u128>(), 0u16..=140)
                    .prop_map(|(a, p)| format!("{}/{p}", std::net::Ipv6Addr::from(a))),
                any::<[u8; 4]>().prop_map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
                ".{0,20}",
            ]
        }

        fn table_like() -> impl Strategy<Value = String> {
            let client = (cidr_like(), ".{0,10}", prop::option::of(".{0,10}")).prop_map(
                |(cidr, region, zone)| match zone {
                    Some(z) => serde_json::json!({"cidr": cidr, "region": region, "zone": z}),
                    None => serde_json::json!({"cidr": cidr, "region": region}),
                },
            );
            (
                prop::collection::vec(client, 0..5),
                prop::collection::vec(cidr_like(), 0..3),
                any::<bool>(),
            )
                .prop_map(|(clients, proxies, yaml)| {
                    let v = serde_json::json!({"clients": clients, "trustedProxies": proxies});
                    if yaml {
                        // JSON is YAML too, once it does not start with `{`.
                        format!("# a table\n{v}")
                    } else {
                        v.to_string()
                    }
                })
        }

        proptest! {
            #[test]
            fn any_text_is_a_table_or_a_clear_error(text in ".{0,200}") {
                if let Err(e) = Locality::parse(&text) {
                    prop_assert!(!e.is_empty());
                }
            }

            #[test]
            fn table_shaped_input_is_a_table_or_a_clear_error(
                text in table_like(),
                peer in any::<u128>(),
                forwarded in prop::option::of(".{0,40}"),
            ) {
                match Locality::parse(&text) {
                    Ok(table) => {
                        // A table that parsed answers every question.
                        let peer = IpAddr::from(std::net::Ipv6Addr::from(peer));
                        let client = table.client_address(peer, forwarded.as_deref());
                        let _ = table.locate(client);
                        prop_assert!(table.locations().contains(&Location::default()));
                        for c in &table.clients {
                            prop_assert!(!c.region.trim().is_empty());
                        }
                    }
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }
        }
    }
}
