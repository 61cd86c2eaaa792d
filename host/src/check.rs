//! `fedwasm plugin check`: a plugin put through the inputs ordinary traffic rarely
//! sends (no candidates, a hundred, a total of zero or of `u32::MAX`, preferences
//! for `*` or for clusters that do not exist, no capacity) before it meets them in
//! production.
//!
//! Loading is left to the caller, with [`Plugin::load`]: the checks hot reload runs
//! (compile, import check, type check, smoke test). Each case here is then called
//! through the same [`Plugin`] methods the host calls, so an answer is validated
//! exactly as the host would validate it.

use std::collections::BTreeMap;

use fedwasm_sdk::{
    Backend, ClusterInfo, ClusterPreference, CustomizeRequest, DistributeRequest, Hook, Location,
    ObjectRef, Preferences, RankRequest, SelectRequest,
};
use serde::Serialize;
use serde_json::json;

use crate::plan::PlanRequest;
use crate::runtime::{Plugin, PluginError};

/// One generated input.
#[derive(Clone, Debug)]
pub struct Case {
    /// What is unusual about it; unique within its hook.
    pub name: &'static str,
    pub request: PlanRequest,
}

impl Case {
    fn new(name: &'static str, request: PlanRequest) -> Self {
        Self { name, request }
    }

    /// The hook the case calls.
    pub fn hook(&self) -> Hook {
        self.request.hook()
    }
}

/// The cases for every hook in `hooks`, in contract order.
pub fn cases(hooks: &[Hook]) -> Vec<Case> {
    let mut out = Vec::new();
    for hook in Hook::ALL.into_iter().filter(|h| hooks.contains(h)) {
        out.extend(match hook {
            Hook::Select => select_cases(),
            Hook::Distribute => distribute_cases(),
            Hook::Rank => rank_cases(),
            Hook::Customize => customize_cases(),
        });
    }
    out
}

/// `n` cluster names, `check-000` and on.
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("check-{i:03}")).collect()
}

/// Regions the generated clusters and backends are spread over.
const REGIONS: [&str; 3] = ["europe-west1", "us-central1", "asia-east1"];

fn cluster(i: usize, name: String) -> ClusterInfo {
    let region = REGIONS[i % REGIONS.len()];
    ClusterInfo {
        name,
        region: region.into(),
        zone: format!("{region}-{}", ["a", "b", "c"][i / REGIONS.len() % 3]),
        labels: BTreeMap::from([("env".into(), ["prod", "staging"][i % 2].into())]),
        ready: true,
    }
}

fn clusters(n: usize) -> Vec<ClusterInfo> {
    names(n)
        .into_iter()
        .enumerate()
        .map(|(i, name)| cluster(i, name))
        .collect()
}

fn object() -> ObjectRef {
    ObjectRef {
        kind: "ReplicaSet".into(),
        namespace: "fedwasm-check".into(),
        name: "web".into(),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        annotations: BTreeMap::new(),
    }
}

fn select(name: &'static str, object: ObjectRef, clusters: Vec<ClusterInfo>) -> Case {
    Case::new(
        name,
        PlanRequest::Select(SelectRequest {
            object,
            clusters,
            settings: String::new(),
        }),
    )
}

fn select_cases() -> Vec<Case> {
    let many: BTreeMap<String, String> = (0..100)
        .map(|i| (format!("example.com/key-{i}"), "x".repeat(i)))
        .collect();
    let mut annotated = object();
    annotated.labels = many.clone();
    annotated.annotations = many;
    // The annotations fedwasm's own selector reads, naming nothing that exists.
    for key in [
        "fedwasm.io/regions",
        "fedwasm.io/zones",
        "fedwasm.io/clusters",
    ] {
        annotated
            .annotations
            .insert(key.into(), "no-such-place".into());
    }
    annotated.annotations.insert(
        "fedwasm.io/cluster-selector".into(),
        "env in (nowhere),!tier".into(),
    );
    let bare = ObjectRef {
        kind: "ConfigMap".into(),
        name: "bare".into(),
        ..Default::default()
    };
    let unready: Vec<ClusterInfo> = clusters(3)
        .into_iter()
        .map(|c| ClusterInfo { ready: false, ..c })
        .collect();
    let unlocated: Vec<ClusterInfo> = names(3)
        .into_iter()
        .map(|name| ClusterInfo {
            name,
            ready: true,
            ..Default::default()
        })
        .collect();
    vec![
        select("no clusters", object(), Vec::new()),
        select("one cluster", object(), clusters(1)),
        select("100 clusters", object(), clusters(100)),
        select("no cluster ready", object(), unready),
        select(
            "clusters with no region, zone or labels",
            object(),
            unlocated,
        ),
        select(
            "cluster-scoped object with no labels or annotations",
            bare,
            clusters(3),
        ),
        select(
            "object with 100 labels and annotations",
            annotated,
            clusters(3),
        ),
    ]
}

fn distribute(name: &'static str, request: DistributeRequest) -> Case {
    Case::new(name, PlanRequest::Distribute(request))
}

fn spread(total: u32, clusters: usize) -> DistributeRequest {
    DistributeRequest::new("fedwasm-check/web", total, names(clusters))
}

fn preferring(
    total: u32,
    clusters: usize,
    rebalance: bool,
    prefs: &[(&str, u32, Option<u32>, u32)],
) -> DistributeRequest {
    DistributeRequest {
        preferences: Some(Preferences {
            rebalance,
            clusters: prefs
                .iter()
                .map(|&(name, min, max, weight)| {
                    (
                        name.to_string(),
                        ClusterPreference {
                            min_replicas: min,
                            max_replicas: max,
                            weight,
                        },
                    )
                })
                .collect(),
        }),
        ..spread(total, clusters)
    }
}

fn distribute_cases() -> Vec<Case> {
    let every = |n: usize, count: u32| -> BTreeMap<String, u32> {
        names(n).into_iter().map(|c| (c, count)).collect()
    };
    vec![
        distribute("no clusters", spread(10, 0)),
        distribute("one cluster", spread(10, 1)),
        distribute("100 clusters", spread(1000, 100)),
        distribute("fewer replicas than clusters", spread(3, 100)),
        distribute("total 0", spread(0, 3)),
        distribute("total u32::MAX", spread(u32::MAX, 3)),
        distribute("total u32::MAX over 100 clusters", spread(u32::MAX, 100)),
        distribute(
            "preferences for *",
            preferring(10, 3, true, &[("*", 1, Some(5), 2)]),
        ),
        distribute(
            "preferences naming no candidate (a typo)",
            preferring(
                10,
                3,
                true,
                &[("check-0001", 2, Some(4), 3), ("chekc-001", 10, None, 9)],
            ),
        ),
        distribute(
            "maxReplicas 0 for *",
            preferring(10, 3, true, &[("*", 0, Some(0), 1)]),
        ),
        distribute(
            "maxReplicas below minReplicas",
            preferring(10, 3, true, &[("*", 4, Some(2), 1)]),
        ),
        distribute(
            "every weight 0",
            preferring(10, 3, true, &[("*", 0, None, 0)]),
        ),
        distribute(
            "minReplicas above the total",
            preferring(10, 3, false, &[("*", 100, None, 1)]),
        ),
        distribute(
            "huge minReplicas, maxReplicas and weights",
            preferring(
                u32::MAX,
                3,
                true,
                &[("*", u32::MAX, Some(u32::MAX), u32::MAX)],
            ),
        ),
        distribute(
            "capacity 0 everywhere",
            DistributeRequest {
                capacity: every(3, 0),
                ..spread(10, 3)
            },
        ),
        distribute(
            "running replicas above the total, rebalance off",
            DistributeRequest {
                current: every(3, 50),
                ..preferring(10, 3, false, &[("*", 0, None, 1)])
            },
        ),
        distribute(
            "running replicas and capacity in clusters that are not candidates",
            DistributeRequest {
                current: BTreeMap::from([("gone-1".into(), 7)]),
                capacity: BTreeMap::from([("gone-2".into(), 0)]),
                ..spread(10, 3)
            },
        ),
    ]
}

fn rank(name: &'static str, client: Location, backends: Vec<Backend>) -> Case {
    Case::new(
        name,
        PlanRequest::Rank(RankRequest {
            client,
            backends,
            settings: String::new(),
        }),
    )
}

fn backends(n: usize) -> Vec<Backend> {
    clusters(n)
        .into_iter()
        .map(|c| Backend {
            position: fedwasm_sdk::regions::position(&c.region),
            cluster: c.name,
            region: c.region,
            zone: c.zone,
            healthy: true,
            available: Some(10),
        })
        .collect()
}

fn rank_cases() -> Vec<Case> {
    let client = || Location {
        region: "europe-west1".into(),
        zone: "europe-west1-b".into(),
        position: fedwasm_sdk::regions::position("europe-west1"),
    };
    let with = |f: fn(Backend) -> Backend| backends(3).into_iter().map(f).collect();
    let mixed: Vec<Backend> = backends(100)
        .into_iter()
        .enumerate()
        .map(|(i, b)| Backend {
            healthy: i % 3 != 0,
            available: [None, Some(0), Some(5)][i % 3],
            ..b
        })
        .collect();
    vec![
        rank("no backends", client(), Vec::new()),
        rank("one backend", client(), backends(1)),
        rank("100 backends", client(), mixed),
        rank(
            "every backend unhealthy",
            client(),
            with(|b| Backend {
                healthy: false,
                ..b
            }),
        ),
        rank(
            "every backend full",
            client(),
            with(|b| Backend {
                available: Some(0),
                ..b
            }),
        ),
        rank(
            "capacity unknown everywhere",
            client(),
            with(|b| Backend {
                available: None,
                ..b
            }),
        ),
        rank(
            "capacity u32::MAX",
            client(),
            with(|b| Backend {
                available: Some(u32::MAX),
                ..b
            }),
        ),
        rank("client location unknown", Location::default(), backends(3)),
        rank(
            "client in a region no backend is in",
            Location {
                region: "mars-north1".into(),
                zone: "mars-north1-a".into(),
                position: None,
            },
            backends(3),
        ),
        rank(
            "on-premises regions placed by the locality file",
            Location {
                region: "berlin-dc".into(),
                zone: String::new(),
                position: Some(fedwasm_sdk::Coordinates {
                    latitude: 52.52,
                    longitude: 13.4,
                }),
            },
            with(|b| Backend {
                region: format!("{}-dc", b.cluster),
                position: Some(fedwasm_sdk::Coordinates {
                    latitude: -90.0,
                    longitude: 180.0,
                }),
                ..b
            }),
        ),
        rank(
            "backends with no region or zone",
            client(),
            with(|b| Backend {
                region: String::new(),
                zone: String::new(),
                position: None,
                ..b
            }),
        ),
    ]
}

fn customize(name: &'static str, object: serde_json::Value, cluster: ClusterInfo) -> Case {
    Case::new(
        name,
        PlanRequest::Customize(CustomizeRequest {
            object: object.to_string(),
            cluster,
            settings: String::new(),
        }),
    )
}

fn customize_cases() -> Vec<Case> {
    let labels = json!({"fedwasm.io/managed-by": "fedwasm"});
    let deployment = |containers: serde_json::Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "fedwasm-check", "labels": labels},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers}}}})
    };
    let nginx = json!([{"name": "web", "image": "nginx:1.27"}]);
    let many: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("registry.example/app-{i}@sha256:{}", "0".repeat(64))}))
        .collect();
    let bare = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bare", "namespace": "fedwasm-check", "labels": labels}});
    let unlocated = ClusterInfo {
        name: "check-000".into(),
        ready: true,
        ..Default::default()
    };
    vec![
        customize(
            "a Deployment",
            deployment(nginx.clone()),
            cluster(0, "check-000".into()),
        ),
        customize(
            "no containers",
            deployment(json!([])),
            cluster(1, "check-001".into()),
        ),
        customize(
            "100 containers",
            deployment(json!(many)),
            cluster(2, "check-002".into()),
        ),
        customize(
            "a ConfigMap with no data",
            bare,
            cluster(0, "check-000".into()),
        ),
        customize(
            "cluster with no region or zone",
            deployment(nginx),
            unlocated,
        ),
    ]
}

/// One case that went wrong.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub hook: Hook,
    pub case: &'static str,
    /// [`PluginError::kind`]: `invalid_output`, `trap`, `timeout`, `memory`, ...
    pub kind: &'static str,
    pub message: String,
}

/// What [`run`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub plugin: String,
    pub sha256: String,
    pub hooks: Vec<Hook>,
    /// Cases called.
    pub cases: usize,
    /// Invalid answers, traps, deadline overruns, memory overruns.
    pub findings: Vec<Finding>,
    /// Cases the plugin declined with an error of its own: the host reports such a
    /// call as failed, so they are listed, but a plugin may have its reasons.
    pub refusals: Vec<Finding>,
}

impl Report {
    /// No findings (refusals allowed).
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Calls `plugin` with every case of the hooks it declares.
pub fn run(plugin: &Plugin) -> Report {
    let cases = cases(plugin.hooks());
    let mut report = Report {
        plugin: plugin.name().to_string(),
        sha256: plugin.sha256().to_string(),
        hooks: plugin.hooks().to_vec(),
        cases: cases.len(),
        findings: Vec::new(),
        refusals: Vec::new(),
    };
    for case in cases {
        let result = case.request.call(plugin);
        let Err(error) = result else { continue };
        tracing::debug!(hook = %case.hook(), case = case.name, %error, "check case failed");
        let finding = Finding {
            hook: case.hook(),
            case: case.name,
            kind: error.kind(),
            // One line: a trap's message can carry a backtrace.
            message: error.to_string().lines().next().unwrap_or_default().into(),
        };
        match error {
            PluginError::Refused { .. } => report.refusals.push(finding),
            _ => report.findings.push(finding),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;
    use crate::runtime::{built_in_bytes, PluginSource, Runtime, RuntimeConfig};

    #[test]
    fn only_the_declared_hooks_get_cases() {
        assert!(cases(&[]).is_empty());
        for hook in Hook::ALL {
            let only = cases(&[hook]);
            assert!(!only.is_empty(), "{hook}");
            assert!(only.iter().all(|c| c.hook() == hook), "{hook}");
        }
        let all = cases(&Hook::ALL);
        let names: HashSet<(Hook, &str)> = all.iter().map(|c| (c.hook(), c.name)).collect();
        assert_eq!(names.len(), all.len(), "case names repeat within a hook");
    }

    fn distribute_requests() -> Vec<DistributeRequest> {
        cases(&[Hook::Distribute])
            .into_iter()
            .filter_map(|c| match c.request {
                PlanRequest::Distribute(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn distribute_cases_cover_the_edges() {
        let requests = distribute_requests();
        let totals: HashSet<u32> = requests.iter().map(|r| r.total_replicas).collect();
        assert!(totals.contains(&0) && totals.contains(&u32::MAX));
        let sizes: HashSet<usize> = requests.iter().map(|r| r.clusters.len()).collect();
        for n in [0, 1, 100] {
            assert!(sizes.contains(&n), "{n} clusters");
        }
        let named = |pred: &dyn Fn(&str, &DistributeRequest) -> bool| {
            requests.iter().any(|r| {
                r.preferences
                    .iter()
                    .flat_map(|p| p.clusters.keys())
                    .any(|k| pred(k, r))
            })
        };
        assert!(named(&|k, _| k == "*"), "a `*` preference");
        assert!(
            named(&|k, r| k != "*" && !r.clusters.iter().any(|c| c == k)),
            "a preference naming no candidate"
        );
        assert!(requests
            .iter()
            .any(|r| !r.clusters.is_empty()
                && r.clusters.iter().all(|c| r.capacity.get(c) == Some(&0))));
    }

    #[test]
    fn select_and_rank_cases_cover_the_edges() {
        let all = cases(&Hook::ALL);
        let selects: Vec<&SelectRequest> = all
            .iter()
            .filter_map(|c| match &c.request {
                PlanRequest::Select(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(selects.iter().any(|r| r.object.labels.is_empty()));
        assert!(selects.iter().any(|r| r.object.labels.len() >= 100));
        assert!(selects.iter().any(|r| r.clusters.len() == 100));
        let ranks: Vec<&RankRequest> = all
            .iter()
            .filter_map(|c| match &c.request {
                PlanRequest::Rank(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(ranks.iter().any(|r| r.backends.is_empty()));
        assert!(ranks
            .iter()
            .any(|r| !r.backends.is_empty() && r.backends.iter().all(|b| !b.healthy)));
        assert!(ranks.iter().any(|r| r.backends.len() == 100));
    }

    /// The cases are requests `fedwasm plan` accepts: nothing here is a shape the
    /// host would never send.
    #[test]
    fn cases_are_requests_the_host_accepts() {
        for case in cases(&Hook::ALL) {
            let (mut json, hook) = match &case.request {
                PlanRequest::Select(r) => (serde_json::to_value(r).unwrap(), "select"),
                PlanRequest::Distribute(r) => (serde_json::to_value(r).unwrap(), "distribute"),
                PlanRequest::Rank(r) => (serde_json::to_value(r).unwrap(), "rank"),
                PlanRequest::Customize(r) => (serde_json::to_value(r).unwrap(), "customize"),
            };
            json["hook"] = hook.into();
            let (parsed, _) = PlanRequest::parse(&json.to_string())
                .unwrap_or_else(|e| panic!("{hook} / {}: {e}", case.name));
            assert_eq!(parsed.hook(), case.hook());
        }
    }

    fn runtime() -> Arc<Runtime> {
        let mut config = RuntimeConfig::default();
        // Generous: these tests are about answers, and CI machines stall.
        config.limits.deadline = Duration::from_secs(5);
        Runtime::new(config, Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn the_built_in_plugins_pass() {
        let runtime = runtime();
        for name in ["label-selector", "weighted-spread", "nearest-healthy"] {
            let bytes = built_in_bytes(name).unwrap();
            let plugin = Plugin::load(&runtime, name, bytes, PluginSource::BuiltIn, 1).unwrap();
            let report = run(&plugin);
            assert!(report.cases > 5, "{name}: {report:?}");
            assert!(report.passed(), "{name}: {:#?}", report.findings);
        }
    }
}
