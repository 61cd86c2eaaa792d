//! fedwasm against a real federation: one etcd and four real kube-apiservers (the
//! federation plane and three members), with the host's controller running
//! in-process. No kubelet runs in the members, so where a test needs member status
//! (ready replicas, load-balancer addresses) it writes the member's `status` itself,
//! acting as that member's workload controller, and says so.
//!
//! One federation serves every scenario (each in its own objects) because starting
//! four apiservers costs seconds and ~1.3 GB; the scenarios run in order.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedwasm_host::federation::cluster::Cluster;
use fedwasm_host::federation::{self, join, members::HealthConfig, FederationConfig};
use fedwasm_host::metrics::Metrics;
use fedwasm_host::runtime::{DirWatcher, Registry, Runtime, RuntimeConfig};
use fedwasm_testenv::{FederationSpec, LocalFederation};
use fedwasm_tests::plugins;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, Config, ResourceExt};
use serde_json::{json, Value};

const MEMBERS: [(&str, &str, &str, &str); 3] = [
    ("m1", "europe-west1", "europe-west1-b", "prod"),
    ("m2", "us-central1", "us-central1-a", "prod"),
    ("m3", "asia-east1", "asia-east1-a", "dev"),
];
const NS: &str = "e2e";

async fn client(kubeconfig: &Path, context: &str) -> Client {
    let file = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let options = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(file, &options)
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// Polls `check` until it returns `Some`, for at most 60 s.
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply("e2e-test").force()
}

struct Env {
    fed: Client,
    members: BTreeMap<String, Client>,
    plugin_dir: tempfile::TempDir,
    _watch: DirWatcher,
    host: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.host.abort();
    }
}

async fn start(local: &LocalFederation) -> Env {
    let kubeconfig = local.kubeconfig_path();
    let fed = client(&kubeconfig, "federation").await;
    for (name, region, zone, env) in MEMBERS {
        let standalone = join::standalone_kubeconfig(&kubeconfig, name).expect("member kubeconfig");
        let request = join::JoinRequest {
            name: name.into(),
            region: Some(region.into()),
            zone: Some(zone.into()),
            labels: BTreeMap::from([("env".into(), env.into())]),
            capacity: None,
        };
        join::join(&fed, &request, &standalone).await.expect("join");
    }
    let mut members = BTreeMap::new();
    for (name, ..) in MEMBERS {
        members.insert(name.to_string(), client(&kubeconfig, name).await);
    }
    let runtime = Runtime::new(RuntimeConfig::default(), Arc::new(Metrics::new())).unwrap();
    let registry = Registry::new(runtime).unwrap();
    let plugin_dir = tempfile::tempdir().unwrap();
    let watch = DirWatcher::start(
        registry.clone(),
        plugin_dir.path(),
        Duration::from_millis(50),
    )
    .unwrap();
    let config = FederationConfig {
        health: HealthConfig {
            interval: Duration::from_millis(500),
            grace: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        },
        extra_kinds: Vec::new(),
    };
    let host_client = fed.clone();
    let host = tokio::spawn(async move {
        federation::run(host_client, registry, config)
            .await
            .expect("federation controller");
    });
    let clusters: Api<Cluster> = Api::all(fed.clone());
    eventually("every member Ready", || async {
        let list = clusters.list(&ListParams::default()).await.ok()?;
        (list.items.len() == 3 && list.items.iter().all(|c| c.is_ready())).then_some(())
    })
    .await;
    Env {
        fed,
        members,
        plugin_dir,
        _watch: watch,
        host,
    }
}

fn dynamic(client: &Client, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, ar)
}

async fn member_replicas(env: &Env, name: &str) -> BTreeMap<String, Option<i32>> {
    let mut out = BTreeMap::new();
    for (cluster, c) in &env.members {
        let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), NS);
        let got = rs.get_opt(name).await.ok().flatten();
        out.insert(cluster.clone(), got.and_then(|r| r.spec?.replicas));
    }
    out
}

fn expect(pairs: &[(&str, Option<i32>)]) -> BTreeMap<String, Option<i32>> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

async fn events(client: &Client, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

fn rs_manifest(name: &str, replicas: i32, annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn federation_end_to_end() {
    let local = tokio::task::spawn_blocking(|| {
        LocalFederation::start(FederationSpec {
            members: MEMBERS.iter().map(|m| m.0.to_string()).collect(),
            dir: std::env::var_os("FEDWASM_E2E_DIR").map(Into::into),
            assets: None,
        })
    })
    .await
    .unwrap()
    .expect("a local federation of real apiservers starts");
    let env = start(&local).await;
    let fed = env.fed.clone();

    // --- Every kind is propagated, the namespace first.
    let manifests = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS}, "stringData": {"password": "v1"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": NS}, "data": {"mode": "fast"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
               "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        rs_manifest(
            "web",
            8,
            json!({"federation.kubernetes.io/replica-set-preferences":
            r#"{"rebalance": true, "clusters": {"m1": {"weight": 2}, "*": {"weight": 1}}}"#}),
        ),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": NS},
               "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                        "template": {"metadata": {"labels": {"app": "api"}},
                                     "spec": {"containers": [{"name": "api", "image": "nginx:1.25"}]}}}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": NS},
               "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
    ];
    let discovery = kube::discovery::Discovery::new(fed.clone())
        .run()
        .await
        .unwrap();
    let mut resources = Vec::new();
    for m in &manifests {
        let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
            api_version: m["apiVersion"].as_str().unwrap().into(),
            kind: m["kind"].as_str().unwrap().into(),
        })
        .unwrap();
        let (ar, caps) = discovery.resolve_gvk(&gvk).expect("known kind");
        let name = m["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(fed.clone(), NS, &ar)
        } else {
            Api::all_with(fed.clone(), &ar)
        };
        api.patch(name, &apply_params(), &Patch::Apply(m))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        resources.push((
            ar,
            caps.scope == kube::discovery::Scope::Namespaced,
            name.to_string(),
        ));
    }
    for (ar, namespaced, name) in &resources {
        for (cluster, c) in &env.members {
            let api: Api<DynamicObject> = if *namespaced {
                dynamic(c, ar)
            } else {
                Api::all_with(c.clone(), ar)
            };
            let got = eventually(&format!("{} {name} in {cluster}", ar.kind), || async {
                api.get_opt(name).await.ok().flatten()
            })
            .await;
            assert_eq!(
                got.labels()
                    .get("fedwasm.io/managed-by")
                    .map(String::as_str),
                Some("fedwasm"),
                "{} {name} in {cluster} is labelled as fedwasm's",
                ar.kind
            );
        }
    }

    // --- The replica split follows the preferences, and their changes.
    eventually("web split 4/2/2", || async {
        (member_replicas(&env, "web").await
            == expect(&[("m1", Some(4)), ("m2", Some(2)), ("m3", Some(2))]))
        .then_some(())
    })
    .await;
    let fed_rs: Api<ReplicaSet> = Api::namespaced(fed.clone(), NS);
    fed_rs
        .patch(
            "web",
            &apply_params(),
            &Patch::Apply(rs_manifest(
                "web",
                8,
                json!({"federation.kubernetes.io/replica-set-preferences":
            r#"{"rebalance": true, "clusters": {"m1": {"weight": 0}, "*": {"weight": 1}}}"#}),
            )),
        )
        .await
        .unwrap();
    eventually("web split 0/4/4", || async {
        (member_replicas(&env, "web").await
            == expect(&[("m1", Some(0)), ("m2", Some(4)), ("m3", Some(4))]))
        .then_some(())
    })
    .await;
    eventually("a PlacementChanged event", || async {
        (!events(&fed, "PlacementChanged").await.is_empty()).then_some(())
    })
    .await;

    // --- Status: acting as each member's ReplicaSet controller (no kubelet runs),
    // the test writes member status; the federation object shows the sums.
    for (ready, (cluster, c)) in [0, 3, 4].into_iter().zip(&env.members) {
        let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), NS);
        let replicas = rs
            .get("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas
            .unwrap_or(0);
        rs.patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
            "replicas": replicas, "readyReplicas": ready, "availableReplicas": ready}})),
        )
        .await
        .unwrap_or_else(|e| panic!("status of web in {cluster}: {e}"));
    }
    let status = eventually("summed status", || async {
        let s = fed_rs.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(7)).then_some(s)
    })
    .await;
    assert_eq!((status.replicas, status.available_replicas), (8, Some(7)));
    let web = fed_rs.get("web").await.unwrap();
    let placement: Value =
        serde_json::from_str(&web.annotations()["fedwasm.io/placement"]).unwrap();
    assert_eq!(placement["m2"]["readyReplicas"], 3, "{placement}");
    // Services: acting as each member's cloud load-balancer controller.
    for (i, (_, c)) in env.members.iter().enumerate() {
        let svc: Api<Service> = Api::namespaced(c.clone(), NS);
        svc.patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
            "loadBalancer": {"ingress": [{"ip": format!("192.0.2.{}", i + 1)}]}}})),
        )
        .await
        .unwrap();
    }
    let fed_svc: Api<Service> = Api::namespaced(fed.clone(), NS);
    eventually(
        "every member's LB address on the federation Service",
        || async {
            let ingress = fed_svc
                .get("web")
                .await
                .ok()?
                .status?
                .load_balancer?
                .ingress?;
            let ips: Vec<String> = ingress.into_iter().filter_map(|i| i.ip).collect();
            (ips == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]).then_some(())
        },
    )
    .await;

    // --- Deselecting a cluster removes the object there.
    let fed_cm: Api<ConfigMap> = Api::namespaced(fed.clone(), NS);
    fed_cm
        .patch("settings", &apply_params(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": NS, "annotations": {"fedwasm.io/cluster-selector": "env=prod"}},
            "data": {"mode": "fast"}})))
        .await
        .unwrap();
    let m3_cm: Api<ConfigMap> = Api::namespaced(env.members["m3"].clone(), NS);
    eventually("settings removed from m3 (env=dev)", || async {
        m3_cm
            .get_opt("settings")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(Api::<ConfigMap>::namespaced(env.members["m1"].clone(), NS)
        .get_opt("settings")
        .await
        .unwrap()
        .is_some());

    // --- An object in a member that fedwasm did not create is left alone.
    let m2_cm: Api<ConfigMap> = Api::namespaced(env.members["m2"].clone(), NS);
    m2_cm
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "theirs"}, "data": {"owner": "member"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    fed_cm
        .patch(
            "theirs",
            &apply_params(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "theirs", "namespace": NS}, "data": {"owner": "federation"}})),
        )
        .await
        .unwrap();
    eventually("a Conflict event", || async {
        (!events(&fed, "Conflict").await.is_empty()).then_some(())
    })
    .await;
    let m1_cm: Api<ConfigMap> = Api::namespaced(env.members["m1"].clone(), NS);
    eventually("theirs placed in m1", || async {
        m1_cm.get_opt("theirs").await.ok()?
    })
    .await;
    let untouched = m2_cm.get("theirs").await.unwrap();
    assert_eq!(untouched.data.as_ref().unwrap()["owner"], "member");
    assert!(untouched.labels().get("fedwasm.io/managed-by").is_none());

    // --- Invalid input: malformed preferences and an unknown plugin give an event
    // and leave the members as they were.
    fed_rs
        .patch(
            "web",
            &apply_params(),
            &Patch::Apply(rs_manifest(
                "web",
                20,
                json!({
            "federation.kubernetes.io/replica-set-preferences": "{not json"}),
            )),
        )
        .await
        .unwrap();
    eventually("an InvalidPreferences event", || async {
        (!events(&fed, "InvalidPreferences").await.is_empty()).then_some(())
    })
    .await;
    fed_rs
        .patch(
            "web",
            &apply_params(),
            &Patch::Apply(rs_manifest(
                "web",
                20,
                json!({"fedwasm.io/distribute-plugin": "nope"}),
            )),
        )
        .await
        .unwrap();
    eventually("a PluginError event naming the plugin", || async {
        events(&fed, "PluginError")
            .await
            .iter()
            .any(|e| e.note.as_deref().unwrap_or_default().contains("nope"))
            .then_some(())
    })
    .await;
    assert_eq!(
        member_replicas(&env, "web").await,
        expect(&[("m1", Some(0)), ("m2", Some(4)), ("m3", Some(4))])
    );

    // --- Events live in the federation plane only, also those about
    // cluster-scoped objects (the Namespace).
    let propagated = events(&fed, "Propagated").await;
    assert!(
        propagated
            .iter()
            .any(|e| e.regarding.as_ref().is_some_and(
                |r| r.kind.as_deref() == Some("Namespace") && r.name.as_deref() == Some(NS)
            )),
        "a Propagated event about Namespace {NS}: {propagated:?}"
    );
    for (cluster, c) in &env.members {
        let api: Api<Event> = Api::all(c.clone());
        let ours: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("fedwasm"))
            .collect();
        assert!(
            ours.is_empty(),
            "fedwasm wrote events into {cluster}: {ours:?}"
        );
    }

    // --- A member away during a change converges when it returns; the others are
    // not held up.
    let stopped = tokio::task::spawn_blocking({
        let local = local.clone();
        move || local.stop_member("m3")
    });
    stopped.await.unwrap().expect("stop m3");
    let clusters: Api<Cluster> = Api::all(fed.clone());
    eventually("m3 Offline", || async {
        let c = clusters.get("m3").await.ok()?;
        (c.status?.phase.as_deref() == Some("Offline")).then_some(())
    })
    .await;
    let fed_secret: Api<Secret> = Api::namespaced(fed.clone(), NS);
    fed_secret
        .patch(
            "creds",
            &apply_params(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": NS}, "stringData": {"password": "v2"}})),
        )
        .await
        .unwrap();
    let password = |c: Client| async move {
        let s: Api<Secret> = Api::namespaced(c, NS);
        let data = s.get_opt("creds").await.ok()??.data?;
        String::from_utf8(data.get("password")?.0.clone()).ok()
    };
    for m in ["m1", "m2"] {
        eventually(&format!("v2 in {m} while m3 is away"), || async {
            (password(env.members[m].clone()).await.as_deref() == Some("v2")).then_some(())
        })
        .await;
    }
    // Replicas run where members are: with m3 away, a change puts them all in m1/m2.
    fed_rs
        .patch(
            "web",
            &apply_params(),
            &Patch::Apply(rs_manifest("web", 6, json!({}))),
        )
        .await
        .unwrap();
    eventually("web 3/3 while m3 is away", || async {
        (member_replicas(&env, "web").await
            == expect(&[("m1", Some(3)), ("m2", Some(3)), ("m3", None)]))
        .then_some(())
    })
    .await;
    let started = tokio::task::spawn_blocking({
        let local = local.clone();
        move || local.start_member("m3")
    });
    started.await.unwrap().expect("restart m3");
    eventually("v2 in m3 after it returned", || async {
        (password(env.members["m3"].clone()).await.as_deref() == Some("v2")).then_some(())
    })
    .await;

    // --- Back, m3 takes its share again.
    eventually("web even 2/2/2", || async {
        (member_replicas(&env, "web").await
            == expect(&[("m1", Some(2)), ("m2", Some(2)), ("m3", Some(2))]))
        .then_some(())
    })
    .await;
    // --- A hot-swapped distribute plugin moves replicas, without a restart. The
    // chaos plugin puts every replica in the first selected cluster.
    let tmp = env.plugin_dir.path().join("weighted-spread.tmp");
    std::fs::write(&tmp, plugins::CHAOS).unwrap();
    std::fs::rename(&tmp, env.plugin_dir.path().join("weighted-spread.wasm")).unwrap();
    eventually("web 6/0/0 after the swap", || async {
        (member_replicas(&env, "web").await
            == expect(&[("m1", Some(6)), ("m2", Some(0)), ("m3", Some(0))]))
        .then_some(())
    })
    .await;

    // --- Deleting in the federation deletes in every member.
    fed_rs
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web gone everywhere", || async {
        member_replicas(&env, "web")
            .await
            .values()
            .all(Option::is_none)
            .then_some(())
    })
    .await;
    eventually(
        "web gone from the federation (finalizer released)",
        || async { fed_rs.get_opt("web").await.ok()?.is_none().then_some(()) },
    )
    .await;
    drop(env);
}
