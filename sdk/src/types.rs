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
