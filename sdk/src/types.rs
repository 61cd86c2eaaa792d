//! The plain Rust types a plugin works on. They mirror `wit/placement.wit`; maps
//! replace the WIT's lists of pairs so plugin code can look things up by name.

use std::collections::BTreeMap;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Which decision a plugin makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Hook {
    /// Filter and score member clusters for an object.
    Select,
    /// Split an object's replicas over selected clusters.
    Distribute,
    /// Order ingress backends for one client location.
    Rank,
    /// Change one member's copy of an object.
    Customize,
}

impl Hook {
    /// Every hook, in contract order.
    pub const ALL: [Hook; 4] = [Hook::Select, Hook::Distribute, Hook::Rank, Hook::Customize];

    /// The hook's name in the WIT contract and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Select => "select",
            Hook::Distribute => "distribute",
            Hook::Rank => "rank",
            Hook::Customize => "customize",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hook::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| {
                format!("unknown hook `{s}` (expected select, distribute, rank or customize)")
            })
    }
}

/// A member cluster as the select hook sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase", default))]
pub struct ClusterInfo {
    /// The cluster's name in the federation.
    pub name: String,
    /// Cloud region, empty when unknown.
    pub region: String,
    /// Zone, empty when unknown.
    pub zone: String,
    /// The cluster's labels.
    pub labels: BTreeMap<String, String>,
    /// Whether the last health probe succeeded.
    pub ready: bool,
}

/// The object being placed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase", default))]
pub struct ObjectRef {
    /// API kind, for example `ReplicaSet`.
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The object's labels.
    pub labels: BTreeMap<String, String>,
    /// The object's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Input of the select hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct SelectRequest {
    /// The object being placed.
    pub object: ObjectRef,
    /// Every cluster joined to the federation.
    pub clusters: Vec<ClusterInfo>,
    /// The placement policy's settings for this hook (JSON text), empty when none.
    #[cfg_attr(feature = "serde", serde(default))]
    pub settings: String,
}

/// One chosen cluster with its score (higher is preferred).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Selection {
    /// A candidate's name.
    pub cluster: String,
    /// Higher is preferred.
    pub score: u32,
}

/// One entry of `federation.kubernetes.io/replica-set-preferences`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "camelCase", deny_unknown_fields)
)]
pub struct ClusterPreference {
    /// Replicas this cluster gets before any are spread by weight.
    #[cfg_attr(feature = "serde", serde(default))]
    pub min_replicas: u32,
    /// Most replicas this cluster may run; `None` means unbounded.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_replicas: Option<u32>,
    /// Relative share of the replicas left after the minimums.
    #[cfg_attr(feature = "serde", serde(default))]
    pub weight: u32,
}

/// The `federation.kubernetes.io/replica-set-preferences` annotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "camelCase", deny_unknown_fields)
)]
pub struct Preferences {
    /// Whether running replicas may move to follow the weights.
    #[cfg_attr(feature = "serde", serde(default))]
    pub rebalance: bool,
    /// Per cluster name, or `*` for every cluster not named. In a plugin, only
    /// candidates and `*` appear: the host does not send entries for clusters it
    /// did not select.
    #[cfg_attr(feature = "serde", serde(default))]
    pub clusters: BTreeMap<String, ClusterPreference>,
}

impl Preferences {
    /// The preference that applies to `cluster`: its own entry, else `*`.
    pub fn for_cluster(&self, cluster: &str) -> Option<&ClusterPreference> {
        self.clusters
            .get(cluster)
            .or_else(|| self.clusters.get("*"))
    }
}

/// Input of the distribute hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct DistributeRequest {
    /// `namespace/name`: a stable key for deterministic tie-breaks.
    #[cfg_attr(feature = "serde", serde(default))]
    pub object: String,
    /// Replicas to place.
    pub total_replicas: u32,
    /// The selected clusters.
    pub clusters: Vec<String>,
    /// Preferences; `None` means spread evenly.
    #[cfg_attr(feature = "serde", serde(default))]
    pub preferences: Option<Preferences>,
    /// Replicas running now per cluster.
    #[cfg_attr(feature = "serde", serde(default))]
    pub current: BTreeMap<String, u32>,
    /// Replicas each cluster can still take; absent means unbounded.
    #[cfg_attr(feature = "serde", serde(default))]
    pub capacity: BTreeMap<String, u32>,
    /// The placement policy's settings for this hook (JSON text), empty when none.
    #[cfg_attr(feature = "serde", serde(default))]
    pub settings: String,
}

impl DistributeRequest {
    /// `total` replicas of `object` over `clusters`, with no preferences, nothing
    /// running and no capacity bound: an even spread.
    pub fn new<C: Into<String>>(
        object: impl Into<String>,
        total: u32,
        clusters: impl IntoIterator<Item = C>,
    ) -> Self {
        Self {
            object: object.into(),
            total_replicas: total,
            clusters: clusters.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// One candidate of a [`DistributeRequest`] with everything that applies to it,
/// from [`DistributeRequest::candidates`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Its position in `request.clusters`.
    pub index: usize,
    /// The cluster's name.
    pub name: &'a str,
    /// Its own preference, else the `*` entry; `None` when the request has
    /// preferences and neither applies (no replicas for it), or has none at all.
    pub preference: Option<&'a ClusterPreference>,
    /// Replicas running there now, `None` when the request names none.
    pub current: Option<u32>,
    /// Replicas it can still take, `None` when unbounded.
    pub capacity: Option<u32>,
}

/// Reads a map by name for names asked in turn: alongside them in one pass, one
/// comparison a step, when they come in strictly increasing order; by look-up
/// otherwise.
struct Reader<'a, V> {
    map: &'a BTreeMap<String, V>,
    /// The entries not passed yet, when reading in order.
    ahead: Option<std::iter::Peekable<std::collections::btree_map::Iter<'a, String, V>>>,
}

impl<'a, V> Reader<'a, V> {
    /// `in_order`: the names will be asked for in strictly increasing order, each once.
    fn new(map: &'a BTreeMap<String, V>, in_order: bool) -> Self {
        Self {
            map,
            ahead: in_order.then(|| map.iter().peekable()),
        }
    }

    fn get(&mut self, name: &str) -> Option<&'a V> {
        let Some(entries) = &mut self.ahead else {
            return self.map.get(name);
        };
        while let Some(&(key, value)) = entries.peek() {
            match key.as_str().cmp(name) {
                std::cmp::Ordering::Less => {
                    entries.next();
                }
                std::cmp::Ordering::Equal => {
                    // Names come strictly increasing: no later one is this key,
                    // so it is passed now rather than compared again.
                    entries.next();
                    return Some(value);
                }
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// Whether `names` are in strictly increasing order.
fn increasing(names: &[String]) -> bool {
    names.windows(2).all(|w| w[0] < w[1])
}

/// Names to read several maps by, in the names' order: their order is checked
/// once, then each map is read in one pass beside the names when they are
/// strictly increasing (as candidates usually are), by a look-up per name
/// otherwise. [`values_for`] reads one map.
#[derive(Clone, Copy, Debug)]
pub struct Names<'a> {
    names: &'a [String],
    increasing: bool,
}

impl<'a> Names<'a> {
    pub fn new(names: &'a [String]) -> Self {
        Self {
            names,
            increasing: increasing(names),
        }
    }

    /// Whether the names are strictly increasing: a map built from them in their
    /// order is built in one pass, and no name is listed twice.
    pub fn increasing(&self) -> bool {
        self.increasing
    }

    /// The values of `map` for each name, in the names' order.
    pub fn values<'m, V>(&self, map: &'m BTreeMap<String, V>) -> Vec<Option<&'m V>> {
        let mut reader = Reader::new(map, self.increasing);
        self.names.iter().map(|name| reader.get(name)).collect()
    }
}

/// The values of `map` for each of `names`, in their order. When the names are in
/// strictly increasing order (as candidates usually are) this is one pass over the
/// map, comparing each name once, instead of a look-up per name.
pub fn values_for<'a, V>(names: &[String], map: &'a BTreeMap<String, V>) -> Vec<Option<&'a V>> {
    Names::new(names).values(map)
}

impl DistributeRequest {
    /// Each candidate, in the order of `clusters`, with its preference, running
    /// replicas and capacity; as with [`values_for`], one pass over each map when
    /// the candidates come in name order (as the host usually sends them).
    pub fn candidates(&self) -> Vec<Candidate<'_>> {
        let in_order = increasing(&self.clusters);
        let wildcard = self.preferences.as_ref().and_then(|p| p.clusters.get("*"));
        let mut own = self
            .preferences
            .as_ref()
            .map(|p| Reader::new(&p.clusters, in_order));
        let mut current = Reader::new(&self.current, in_order);
        let mut capacity = Reader::new(&self.capacity, in_order);
        self.clusters
            .iter()
            .enumerate()
            .map(|(index, name)| Candidate {
                index,
                name,
                preference: own.as_mut().and_then(|r| r.get(name)).or(wildcard),
                current: current.get(name).copied(),
                capacity: capacity.get(name).copied(),
            })
            .collect()
    }
}

/// Output of the distribute hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct DistributeResponse {
    /// Replicas per cluster; clusters left out get zero.
    pub plan: BTreeMap<String, u32>,
    /// Replicas planned for a cluster beyond its capacity.
    #[cfg_attr(feature = "serde", serde(default))]
    pub overflow: BTreeMap<String, u32>,
}

/// A point on the globe, in degrees. Compared and hashed by its bits, so it can
/// key a cache.
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Coordinates {
    /// Degrees north, -90 to 90.
    pub latitude: f64,
    /// Degrees east, -180 to 180.
    pub longitude: f64,
}

impl PartialEq for Coordinates {
    fn eq(&self, other: &Self) -> bool {
        self.latitude.to_bits() == other.latitude.to_bits()
            && self.longitude.to_bits() == other.longitude.to_bits()
    }
}

impl Eq for Coordinates {}

impl std::hash::Hash for Coordinates {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.latitude.to_bits().hash(state);
        self.longitude.to_bits().hash(state);
    }
}

/// Where a client is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Location {
    /// Region, for example `europe-west1`.
    pub region: String,
    /// Zone, for example `europe-west1-b`.
    pub zone: String,
    /// Where the region is (the host's region table); `None` when unknown.
    pub position: Option<Coordinates>,
}

/// One cluster able to serve an ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Backend {
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's region.
    pub region: String,
    /// The cluster's zone.
    pub zone: String,
    /// Where the cluster's region is (the host's region table); `None` when
    /// unknown.
    pub position: Option<Coordinates>,
    /// Whether the cluster and its backend are healthy.
    pub healthy: bool,
    /// What the backend can still take; `None` is unknown (usable), `Some(0)` full.
    pub available: Option<u32>,
}

/// Input of the rank hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct RankRequest {
    /// The client's location.
    pub client: Location,
    /// The candidate backends.
    pub backends: Vec<Backend>,
    /// The placement policy's settings for this hook (JSON text), empty when none.
    #[cfg_attr(feature = "serde", serde(default))]
    pub settings: String,
}

/// Input of the customize hook: one member's copy of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct CustomizeRequest {
    /// The copy as JSON text: `apiVersion`, `kind`, `metadata`, `spec`, …
    pub object: String,
    /// The member cluster that gets the copy.
    pub cluster: ClusterInfo,
    /// The placement policy's settings for this hook (JSON text), empty when none.
    #[cfg_attr(feature = "serde", serde(default))]
    pub settings: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(clusters: &[&str]) -> DistributeRequest {
        let pref = |min, weight| ClusterPreference {
            min_replicas: min,
            max_replicas: None,
            weight,
        };
        DistributeRequest {
            object: "ns/web".into(),
            total_replicas: 9,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            preferences: Some(Preferences {
                rebalance: false,
                clusters: BTreeMap::from([
                    ("*".into(), pref(0, 1)),
                    ("b".into(), pref(2, 3)),
                    ("gone".into(), pref(1, 1)),
                ]),
            }),
            current: BTreeMap::from([("a".into(), 4), ("c".into(), 1), ("zz".into(), 7)]),
            capacity: BTreeMap::from([("b".into(), 5), ("d".into(), 0)]),
            settings: String::new(),
        }
    }

    /// What `candidates` must give: a look-up per map.
    fn looked_up(r: &DistributeRequest) -> Vec<Candidate<'_>> {
        r.clusters
            .iter()
            .enumerate()
            .map(|(index, name)| Candidate {
                index,
                name,
                preference: r.preferences.as_ref().and_then(|p| p.for_cluster(name)),
                current: r.current.get(name).copied(),
                capacity: r.capacity.get(name).copied(),
            })
            .collect()
    }

    #[test]
    fn values_for_names_in_any_order_match_a_look_up_each() {
        let map: BTreeMap<String, u32> = BTreeMap::from([
            ("*".into(), 0),
            ("b".into(), 2),
            ("d".into(), 4),
            ("f".into(), 6),
        ]);
        for names in [
            &["a", "b", "c", "d", "e", "f", "g"][..],
            &["b", "d"],
            &["g", "f", "b"],
            &["b", "b", "d"],
            &["zz"],
            &[],
        ] {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let want: Vec<Option<&u32>> = names.iter().map(|n| map.get(n)).collect();
            assert_eq!(values_for(&names, &map), want, "{names:?}");
            let strictly = names.windows(2).all(|w| w[0] < w[1]);
            assert_eq!(Names::new(&names).increasing(), strictly, "{names:?}");
            assert_eq!(
                values_for(&names, &BTreeMap::<String, u32>::new()),
                vec![None; names.len()]
            );
        }
    }

    #[test]
    fn candidates_in_any_order_match_a_look_up_each() {
        for clusters in [
            &["a", "b", "c", "d", "e"][..],
            &["e", "d", "c", "b", "a"],
            &["b", "a", "d"],
            &["a", "a", "b"],
            &["b"],
            &[],
        ] {
            let r = request(clusters);
            assert_eq!(r.candidates(), looked_up(&r), "{clusters:?}");
            let mut none = r.clone();
            none.preferences = None;
            assert_eq!(none.candidates(), looked_up(&none), "{clusters:?}");
            let mut no_wildcard = r.clone();
            no_wildcard
                .preferences
                .as_mut()
                .unwrap()
                .clusters
                .remove("*");
            assert_eq!(
                no_wildcard.candidates(),
                looked_up(&no_wildcard),
                "{clusters:?}"
            );
        }
        let r = request(&["a", "b", "e"]);
        let got = r.candidates();
        assert_eq!(got[1].preference.unwrap().weight, 3);
        assert_eq!(got[2].preference.unwrap().weight, 1);
        assert_eq!(
            (got[0].current, got[1].capacity, got[2].current),
            (Some(4), Some(5), None)
        );
    }
}
