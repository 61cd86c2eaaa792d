//! fedwasm against a real federation: one etcd and four real kube-apiservers (the
//! federation plane and three members), with the host built by the same `App` as
//! `fedwasm run`, in-process. No kubelet runs in the members, so where a scenario
//! needs member status (ready replicas, rollouts, load-balancer addresses) it writes
//! the member's `status` itself, acting as that member's workload controller, and
//! says so.
//!
//! One federation serves every scenario (starting four apiservers costs seconds and
//! ~1.3 GB), each in its own namespace. Independent scenarios run concurrently, then
//! those that disturb the whole federation (a frozen or stopped member, a plugin
//! swap) one after the other; every scenario runs even when another fails, and the
//! test lists all failures. `FEDWASM_SCENARIO=name` runs only the scenarios whose
//! name contains `name`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedwasm_host::app::{kube_client, App, AppConfig};
use fedwasm_host::dns::DnsConfig;
use fedwasm_host::fleet::cluster::Cluster;
use fedwasm_host::fleet::{join, FleetConfig};
use fedwasm_host::routing::{Router, RouterConfig};
use fedwasm_testenv::{FederationSpec, LocalFederation};
use fedwasm_tests::plugins;
use futures::StreamExt;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

const MEMBERS: [(&str, &str, &str, &str); 3] = [
    ("m1", "europe-west1", "europe-west1-b", "prod"),
    ("m2", "us-central1", "us-central1-a", "prod"),
    ("m3", "asia-east1", "asia-east1-a", "dev"),
];

/// What every scenario gets.
#[derive(Clone)]
struct Env {
    fed: Client,
    members: BTreeMap<String, Client>,
    local: LocalFederation,
    kubeconfig: PathBuf,
    plugin_dir: PathBuf,
    metrics: Arc<fedwasm_host::metrics::Metrics>,
    router: Arc<Router>,
    /// The global ingress.
    ingress: SocketAddr,
    /// The DNS front door (UDP and TCP; `--dns-zone example.com`).
    dns: SocketAddr,
    /// The admin API (`/preview`, `/shadow`, ...).
    admin: SocketAddr,
    /// Each member's workload behind its ingress (no kubelet runs: these small
    /// HTTP servers play the pods), by cluster.
    backends: Arc<BTreeMap<String, Workload>>,
    /// Everything the host logged (debug and up), as the `fedwasm run` log.
    log: HostLog,
}

/// The log of the host, captured for the scenarios that check what it says.
#[derive(Clone, Default)]
struct HostLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl HostLog {
    /// Installs the capture as the process's tracing subscriber.
    fn install(&self) {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,fedwasm_host=debug,hickory_server=warn",
            ))
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .init();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for HostLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A member's stand-in workload: answers `served from <zone>` on every path, after
/// 1 s on `/slow`; can be stopped and started again on the same port.
struct Workload {
    zone: &'static str,
    port: u16,
    /// The running server: its stop signal and its task.
    running: std::sync::Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
}

impl Workload {
    async fn start(zone: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let w = Self {
            zone,
            port,
            running: Default::default(),
        };
        w.serve(listener);
        w
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let zone = self.zone;
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(move || async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    format!("served from {zone}")
                }),
            )
            .fallback(move || async move {
                format!("Welcome to the global site! You are being served from {zone}")
            });
        // Every connection is served in a task of this JoinSet, owned by the accept
        // task: stopping the workload closes its open keep-alive connections too, as
        // a stopped process would, not only its listener; `stop` returns once they
        // and the listener are gone.
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
            drop(listener);
            connections.shutdown().await;
        });
        *self.running.lock().unwrap() = Some((stop, task));
    }

    /// Stops serving: returns once the listener and every connection are closed.
    async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((stop, task)) = running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    async fn restart(&self) {
        self.stop().await;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// Client networks of the ingress scenarios: a client on 127.1.x.x is in Asia,
/// 127.2.x.x in the US, 127.3.x.x in Europe.
const LOCALITY: &str = r#"{"clients": [
    {"cidr": "127.1.0.0/16", "region": "asia-east1", "zone": "asia-east1-a"},
    {"cidr": "127.2.0.0/16", "region": "us-central1", "zone": "us-central1-a"},
    {"cidr": "127.3.0.0/16", "region": "europe-west1", "zone": "europe-west1-b"}]}"#;

type Scenario = fn(Env) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|env| Box::pin($name(env))) as Scenario)),*]
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn federation_scenarios() {
    let local = tokio::task::spawn_blocking(|| {
        LocalFederation::start(FederationSpec {
            members: MEMBERS.iter().map(|m| m.0.to_string()).collect(),
            dir: std::env::var_os("FEDWASM_E2E_DIR").map(Into::into),
            assets: None,
            rbac: false,
        })
    })
    .await
    .unwrap()
    .expect("a local federation of real apiservers starts");
    let work = tempfile::tempdir().unwrap();
    let (env, host) = start(&local, work.path()).await;
    let filter = std::env::var("FEDWASM_SCENARIO").unwrap_or_default();
    let mut failures = Vec::new();
    // Independent scenarios, at once.
    let concurrent = scenarios![
        every_kind_is_propagated,
        preferences_move_replicas_and_status_is_summed,
        no_preferences_is_an_even_spread,
        kubectl_rollout_status_and_wait_work,
        deselecting_a_namespace_keeps_others_objects,
        removed_fields_leave_the_members,
        bad_input_gives_events_and_retries,
        others_objects_are_never_taken_over,
        deleting_removes_from_every_member,
        the_global_ingress_sends_clients_to_the_closest_cluster,
        dns_answers_with_the_closest_healthy_shard,
        placement_policies_govern_many_objects_and_override_copies,
        a_hot_swapped_customize_plugin_changes_copies,
    ];
    let mut running = Vec::new();
    for (name, scenario) in concurrent {
        if name.contains(filter.as_str()) {
            running.push((name, tokio::spawn(scenario(env.clone()))));
        }
    }
    for (name, task) in running {
        if let Err(e) = task.await {
            failures.push(format!("{name}: {}", panic_message(e)));
        }
    }
    // Scenarios that disturb every object, one at a time.
    let disruptive = scenarios![
        // First: it counts every write to the members, so nothing else may run.
        nothing_is_written_where_nothing_changed,
        a_frozen_member_holds_up_no_other,
        a_member_away_converges_when_back,
        a_flapping_member_loses_nothing,
        the_federation_plane_restarting_loses_nothing,
        plugins_swapped_every_100ms_lose_nothing,
        a_hot_swapped_plugin_moves_replicas,
        previews_and_shadows_tell_what_a_swap_would_move,
        // Last: its members never become Ready and every object is placed on them.
        credentials_never_leave_their_secrets,
    ];
    for (name, scenario) in disruptive {
        if name.contains(filter.as_str()) {
            if let Err(e) = tokio::spawn(scenario(env.clone())).await {
                failures.push(format!("{name}: {}", panic_message(e)));
            }
        }
    }
    host.abort();
    if !failures.is_empty() {
        // What the host said about its members and what went wrong, for a failure
        // seen only on another machine.
        let log = env.log.text();
        let notable: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("member phase changed")
                    || l.contains("member joined")
                    || l.contains(" WARN ")
                    || l.contains(" ERROR ")
            })
            .collect();
        eprintln!("host log, member phases, warnings and errors (last 300 lines):");
        for line in &notable[notable.len().saturating_sub(300)..] {
            eprintln!("{line}");
        }
    }
    assert!(
        failures.is_empty(),
        "failed scenarios:\n{}",
        failures.join("\n")
    );
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

async fn start(local: &LocalFederation, work: &Path) -> (Env, tokio::task::JoinHandle<()>) {
    let log = HostLog::default();
    log.install();
    let plugin_dir = work.join("plugins");
    std::fs::create_dir(&plugin_dir).unwrap();
    let kubeconfig = local.kubeconfig_path();
    let fed = kube_client(Some(&kubeconfig), "federation").await.unwrap();
    let mut backends = BTreeMap::new();
    for (name, _, zone, _) in MEMBERS {
        backends.insert(name.to_string(), Workload::start(zone).await);
    }
    for (name, region, zone, env) in MEMBERS {
        let request = join::JoinRequest {
            name: name.into(),
            region: Some(region.into()),
            zone: Some(zone.into()),
            labels: BTreeMap::from([("env".into(), env.into())]),
            ingress_endpoint: Some(format!("http://127.0.0.1:{}", backends[name].port)),
            ..Default::default()
        };
        join::join_context(&fed, &kubeconfig, &request)
            .await
            .expect("join");
    }
    let mut members = BTreeMap::new();
    for (name, ..) in MEMBERS {
        members.insert(
            name.to_string(),
            kube_client(Some(&kubeconfig), name).await.unwrap(),
        );
    }
    let locality = work.join("locality.json");
    std::fs::write(&locality, LOCALITY).unwrap();
    let app = App::build(AppConfig {
        plugins: Some(plugin_dir.clone()),
        debounce: Duration::from_millis(50),
        fleet: FleetConfig {
            probe_interval: Duration::from_millis(500),
            offline_grace: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            ..Default::default()
        },
        locality: Some(locality),
        routing: RouterConfig {
            per_replica_concurrency: 2,
            probe_interval: Duration::from_millis(300),
            ..Default::default()
        },
        dns: DnsConfig {
            zone: Some("example.com".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("the host builds");
    let metrics = app.metrics.clone();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let running = app.start_federation(fed.clone(), None, stop);
    let router = running.router.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = listener.local_addr().unwrap();
    app.start_ingress(listener, router.clone(), std::future::pending())
        .expect("the ingress starts");
    let (udp, tcp) = fedwasm_host::dns::bind("127.0.0.1:0").await.unwrap();
    let dns = udp.local_addr().unwrap();
    app.start_dns(udp, tcp, router.clone(), std::future::pending())
        .expect("DNS starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let routes = fedwasm_host::admin::router(
        fedwasm_host::admin::AdminState {
            registry: app.registry.clone(),
            metrics: app.metrics.clone(),
            health: app.health.clone(),
            router: Some(router.clone()),
            placer: app.placer.clone(),
            federation: Some(running.view.clone()),
        },
        &Default::default(),
    );
    tokio::spawn(async move { axum::serve(listener, routes).await });
    let host = tokio::spawn(async move {
        let _app = app;
        let stopped = running.stopped.await;
        panic!("the federation controller stopped: {stopped}");
    });
    let clusters: Api<Cluster> = Api::all(fed.clone());
    eventually("every member Ready", || async {
        let list = clusters.list(&ListParams::default()).await.ok()?;
        (list.items.len() == 3 && list.items.iter().all(|c| c.is_ready())).then_some(())
    })
    .await;
    let env = Env {
        fed,
        members,
        local: local.clone(),
        kubeconfig,
        plugin_dir,
        metrics,
        router,
        ingress,
        dns,
        admin,
        backends: Arc::new(backends),
        log,
    };
    (env, host)
}

// ---------------------------------------------------------------------------------
// Helpers.

/// Polls `check` until it returns `Some`, for at most 60 s.
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(Duration::from_secs(60), what, check).await
}

/// Polls `check` until it returns `Some`, for at most `limit`.
async fn within<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply("e2e-test").force()
}

/// Server-side applies `manifest` (any kind) in the federation plane.
async fn apply(env: &Env, manifest: Value) {
    let ar = resource(&manifest);
    let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<DynamicObject> = match manifest["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(env.fed.clone(), ns, &ar),
        None => Api::all_with(env.fed.clone(), &ar),
    };
    api.patch(&name, &apply_params(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", ar.kind));
}

fn resource(manifest: &Value) -> ApiResource {
    let (api_version, kind) = (
        manifest["apiVersion"].as_str().unwrap(),
        manifest["kind"].as_str().unwrap(),
    );
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Ingress" => "ingresses".to_string(),
        k if k.ends_with("Policy") => format!("{}ies", k.trim_end_matches('y').to_lowercase()),
        k => format!("{}s", k.to_lowercase()),
    };
    ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(group, version, kind),
        &plural,
    )
}

async fn namespace(env: &Env, ns: &str) {
    apply(
        env,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
}

fn rs_manifest(ns: &str, name: &str, replicas: i32, annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}})
}

fn deployment_manifest(ns: &str, name: &str, replicas: i32, annotations: Value) -> Value {
    let mut d = rs_manifest(ns, name, replicas, annotations);
    d["kind"] = "Deployment".into();
    d
}

async fn member_replicas(env: &Env, ns: &str, name: &str) -> BTreeMap<String, Option<i32>> {
    let mut out = BTreeMap::new();
    for (cluster, c) in &env.members {
        let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), ns);
        let got = rs.get_opt(name).await.ok().flatten();
        out.insert(cluster.clone(), got.and_then(|r| r.spec?.replicas));
    }
    out
}

async fn deployment_replicas(env: &Env, ns: &str, name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for c in env.members.values() {
        let d: Api<Deployment> = Api::namespaced(c.clone(), ns);
        if let Some(r) = d
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.spec?.replicas)
        {
            out.push(r);
        }
    }
    out
}

/// Waits until m1, m2, m3 have `want` replicas of ReplicaSet `name` (`None`: none).
async fn replicas_become(env: &Env, ns: &str, name: &str, want: [Option<i32>; 3], what: &str) {
    let want = expect(&[("m1", want[0]), ("m2", want[1]), ("m3", want[2])]);
    eventually(what, || async {
        (member_replicas(env, ns, name).await == want).then_some(())
    })
    .await;
}

fn expect(pairs: &[(&str, Option<i32>)]) -> BTreeMap<String, Option<i32>> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Events with `reason` about objects in `ns` (or about the Namespace `ns`).
async fn events(env: &Env, ns: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::all(env.fed.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.namespace.as_deref() == Some(ns)
                    || (r.kind.as_deref() == Some("Namespace") && r.name.as_deref() == Some(ns))
            })
        })
        .collect()
}

async fn config_map(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

fn cm_manifest(ns: &str, name: &str, annotations: Value, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations}, "data": data})
}

async fn kubectl(env: &Env, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .arg("--context")
        .arg("federation")
        .args(args)
        .output()
        .await
        .expect("kubectl runs (installed by scripts/install-testenv.sh)")
}

// ---------------------------------------------------------------------------------
// Independent scenarios.

async fn every_kind_is_propagated(env: Env) {
    let ns = "e2e-kinds";
    namespace(&env, ns).await;
    let manifests = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns}, "stringData": {"password": "v1"}}),
        cm_manifest(ns, "settings", json!({}), json!({"mode": "fast"})),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
               "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        rs_manifest(ns, "web", 3, json!({})),
        deployment_manifest(ns, "api", 3, json!({})),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": ns},
               "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
    ];
    for m in &manifests {
        apply(&env, m.clone()).await;
    }
    let ns_resource = resource(&json!({"apiVersion": "v1", "kind": "Namespace"}));
    for (cluster, c) in &env.members {
        let namespaces: Api<DynamicObject> = Api::all_with(c.clone(), &ns_resource);
        let got = eventually(&format!("Namespace {ns} in {cluster}"), || async {
            namespaces.get_opt(ns).await.ok().flatten()
        })
        .await;
        assert_eq!(got.labels()["fedwasm.io/managed-by"], "fedwasm");
        for m in &manifests {
            let ar = resource(m);
            let name = m["metadata"]["name"].as_str().unwrap();
            let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), ns, &ar);
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
    // Events live in the federation plane only, also those about cluster-scoped
    // objects (the Namespace).
    eventually("a Propagated event about the Namespace", || async {
        events(&env, ns, "Propagated")
            .await
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Namespace"))
            .then_some(())
    })
    .await;
    for (cluster, c) in &env.members {
        let api: Api<Event> = Api::all(c.clone());
        let ours = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("fedwasm"))
            .count();
        assert_eq!(ours, 0, "fedwasm wrote events into {cluster}");
    }
}

async fn preferences_move_replicas_and_status_is_summed(env: Env) {
    let ns = "e2e-prefs";
    namespace(&env, ns).await;
    let prefs = |m1_weight: u32| {
        json!({"federation.kubernetes.io/replica-set-preferences":
            format!(r#"{{"rebalance": true, "clusters": {{"m1": {{"weight": {m1_weight}}}, "*": {{"weight": 1}}}}}}"#)})
    };
    apply(&env, rs_manifest(ns, "web", 8, prefs(2))).await;
    replicas_become(
        &env,
        ns,
        "web",
        [Some(4), Some(2), Some(2)],
        "web split 4/2/2",
    )
    .await;
    apply(&env, rs_manifest(ns, "web", 8, prefs(0))).await;
    replicas_become(
        &env,
        ns,
        "web",
        [Some(0), Some(4), Some(4)],
        "web split 0/4/4",
    )
    .await;
    eventually("a PlacementChanged event", || async {
        (!events(&env, ns, "PlacementChanged").await.is_empty()).then_some(())
    })
    .await;
    // Acting as each member's ReplicaSet controller (no kubelet runs).
    for (ready, c) in [0, 3, 4].into_iter().zip(env.members.values()) {
        let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), ns);
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
        .unwrap();
    }
    let fed_rs: Api<ReplicaSet> = Api::namespaced(env.fed.clone(), ns);
    let status = eventually("summed status", || async {
        let s = fed_rs.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(7)).then_some(s)
    })
    .await;
    assert_eq!((status.replicas, status.available_replicas), (8, Some(7)));
    let placement: Value = serde_json::from_str(
        &fed_rs.get("web").await.unwrap().annotations()["fedwasm.io/placement"],
    )
    .unwrap();
    assert_eq!(placement["m2"]["readyReplicas"], 3, "{placement}");
    // Services: acting as each member's cloud load-balancer controller.
    apply(&env, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": ns},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}))
    .await;
    for (i, cluster) in env.members.keys().enumerate() {
        set_lb_address(&env, ns, "lb", cluster, &format!("192.0.2.{}", i + 1)).await;
    }
    let fed_svc: Api<Service> = Api::namespaced(env.fed.clone(), ns);
    eventually(
        "every member's LB address on the federation Service",
        || async {
            let ingress = fed_svc
                .get("lb")
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
}

async fn no_preferences_is_an_even_spread(env: Env) {
    let ns = "e2e-even";
    namespace(&env, ns).await;
    for (name, total, want) in [("ten", 10, [3, 3, 4]), ("seven", 7, [2, 2, 3])] {
        apply(&env, deployment_manifest(ns, name, total, json!({}))).await;
        eventually(&format!("{total} replicas spread {want:?}"), || async {
            let mut got = deployment_replicas(&env, ns, name).await;
            got.sort();
            (got == want).then_some(())
        })
        .await;
    }
}

async fn kubectl_rollout_status_and_wait_work(env: Env) {
    let ns = "e2e-rollout";
    namespace(&env, ns).await;
    apply(&env, deployment_manifest(ns, "web", 6, json!({}))).await;
    eventually("web in every member", || async {
        (deployment_replicas(&env, ns, "web").await.len() == 3).then_some(())
    })
    .await;
    // Nothing rolled out yet: a short wait fails (the check can fail).
    let early = kubectl(
        &env,
        &[
            "-n",
            ns,
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=3s",
        ],
    )
    .await;
    assert!(
        !early.status.success(),
        "kubectl wait succeeded before any member was available"
    );
    // Acting as each member's Deployment controller: the rollout is complete.
    for c in env.members.values() {
        let d: Api<Deployment> = Api::namespaced(c.clone(), ns);
        let copy = d.get("web").await.unwrap();
        let (n, generation) = (
            copy.spec.unwrap().replicas.unwrap_or(0),
            copy.metadata.generation.unwrap_or(0),
        );
        d.patch_status("web", &PatchParams::default(), &Patch::Merge(json!({"status": {
            "observedGeneration": generation, "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "done"}]}})))
            .await
            .unwrap();
    }
    let rollout = kubectl(
        &env,
        &[
            "-n",
            ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(
        rollout.status.success(),
        "kubectl rollout status: {}{}",
        String::from_utf8_lossy(&rollout.stdout),
        String::from_utf8_lossy(&rollout.stderr)
    );
    let wait = kubectl(
        &env,
        &[
            "-n",
            ns,
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(
        wait.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&wait.stderr)
    );
    // A new spec is not "observed" until every member has observed its copy.
    apply(
        &env,
        deployment_manifest(ns, "web", 6, json!({"team": "a"})),
    )
    .await;
    let fed: Api<Deployment> = Api::namespaced(env.fed.clone(), ns);
    let d = fed.get("web").await.unwrap();
    let generation = d.metadata.generation.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let observed = fed
        .get("web")
        .await
        .unwrap()
        .status
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    assert!(
        observed < generation,
        "observed {observed} of generation {generation} before the members did"
    );
}

async fn deselecting_a_namespace_keeps_others_objects(env: Env) {
    let (shared, solo) = ("e2e-shared", "e2e-solo");
    for ns in [shared, solo] {
        namespace(&env, ns).await;
        apply(&env, cm_manifest(ns, "ours", json!({}), json!({"a": "1"}))).await;
    }
    let m3 = env.members["m3"].clone();
    for ns in [shared, solo] {
        eventually("ours in m3", || async { config_map(&m3, ns, "ours").await }).await;
    }
    // Another team's object in m3's copy of the shared namespace.
    Api::<ConfigMap>::namespaced(m3.clone(), shared)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": {"name": "other-team"}, "data": {"owner": "them"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    for ns in [shared, solo] {
        apply(
            &env,
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "annotations": {"fedwasm.io/clusters": "m1,m2"}}}),
        )
        .await;
    }
    let namespaces: Api<Namespace> = Api::all(m3.clone());
    // The namespace with nothing of anyone else's goes.
    eventually("e2e-solo removed from m3", || async {
        let gone = namespaces
            .get_opt(solo)
            .await
            .ok()?
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
        gone.then_some(())
    })
    .await;
    // fedwasm's object leaves the shared one; the namespace and their object stay.
    eventually("ours removed from m3's e2e-shared", || async {
        config_map(&m3, shared, "ours")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eventually("a NamespaceKept event", || async {
        (!events(&env, shared, "NamespaceKept").await.is_empty()).then_some(())
    })
    .await;
    let kept = namespaces.get(shared).await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "m3's {shared} is being deleted"
    );
    assert_eq!(
        config_map(&m3, shared, "other-team")
            .await
            .unwrap()
            .data
            .unwrap()["owner"],
        "them"
    );
    assert!(config_map(&env.members["m1"], shared, "ours")
        .await
        .is_some());
}

async fn removed_fields_leave_the_members(env: Env) {
    let ns = "e2e-fields";
    namespace(&env, ns).await;
    let mut full = cm_manifest(
        ns,
        "settings",
        json!({"note": "x"}),
        json!({"a": "1", "b": "2"}),
    );
    full["metadata"]["labels"] = json!({"tier": "web"});
    apply(&env, full).await;
    for (cluster, c) in &env.members {
        eventually(&format!("a and b in {cluster}"), || async {
            (config_map(c, ns, "settings").await?.data?.len() == 2).then_some(())
        })
        .await;
    }
    apply(
        &env,
        cm_manifest(ns, "settings", json!({}), json!({"a": "1"})),
    )
    .await;
    for (cluster, c) in &env.members {
        let cm = eventually(
            &format!("b, the label and the annotation gone from {cluster}"),
            || async {
                let cm = config_map(c, ns, "settings").await?;
                (cm.data.as_ref()?.len() == 1).then_some(cm)
            },
        )
        .await;
        eventually(
            &format!("the label and the annotation gone from {cluster}"),
            || async {
                let cm = config_map(c, ns, "settings").await?;
                (!cm.labels().contains_key("tier") && !cm.annotations().contains_key("note"))
                    .then_some(())
            },
        )
        .await;
        assert_eq!(cm.labels()["fedwasm.io/managed-by"], "fedwasm");
    }
}

/// Writes to the members so far, and which, for the messages.
fn member_writes(env: &Env) -> (u64, String) {
    let text = env.metrics.render();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fedwasm_member_writes_total"))
        .collect();
    (env.metrics.member_writes(), lines.join("\n"))
}

/// Nothing changes, nothing is written: the host reads its member caches, not the
/// members, and writes a copy only when it differs from what the federation wants.
/// A copy deleted or edited by hand is repaired from the member's watch; a change
/// of one Deployment's replicas writes only the member whose share moved; a plugin
/// reloaded with the same decisions writes nothing.
async fn nothing_is_written_where_nothing_changed(env: Env) {
    let ns = "e2e-steady";
    namespace(&env, ns).await;
    for i in 0..8 {
        apply(
            &env,
            cm_manifest(
                ns,
                &format!("cm-{i}"),
                json!({}),
                json!({"i": i.to_string()}),
            ),
        )
        .await;
    }
    apply(&env, deployment_manifest(ns, "web", 6, json!({}))).await;
    for (cluster, c) in &env.members {
        eventually(&format!("every ConfigMap in {cluster}"), || async {
            let list = Api::<ConfigMap>::namespaced(c.clone(), ns)
                .list(&ListParams::default().labels("fedwasm.io/managed-by=fedwasm"))
                .await
                .ok()?;
            (list.items.len() == 8).then_some(())
        })
        .await;
    }
    eventually("web 2/2/2", || async {
        (deployment_replicas(&env, ns, "web").await == [2, 2, 2]).then_some(())
    })
    .await;

    // Quiet: more than two of the old 5 s resyncs, not one write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, _) = member_writes(&env);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (after, which) = member_writes(&env);
    assert_eq!(before, after, "writes while nothing changed:\n{which}");

    // Drift: a copy deleted by hand comes back, one edited by hand is set right.
    let m2: Api<ConfigMap> = Api::namespaced(env.members["m2"].clone(), ns);
    m2.delete("cm-1", &DeleteParams::default()).await.unwrap();
    within(Duration::from_secs(10), "cm-1 restored in m2", || async {
        config_map(&env.members["m2"], ns, "cm-1").await.map(|_| ())
    })
    .await;
    let m1: Api<ConfigMap> = Api::namespaced(env.members["m1"].clone(), ns);
    m1.patch(
        "cm-2",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"i": "edited by hand"}})),
    )
    .await
    .unwrap();
    within(Duration::from_secs(10), "cm-2 set right in m1", || async {
        let cm = config_map(&env.members["m1"], ns, "cm-2").await?;
        (cm.data?.get("i")? == "2").then_some(())
    })
    .await;
    let m3: Api<Deployment> = Api::namespaced(env.members["m3"].clone(), ns);
    m3.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    within(
        Duration::from_secs(10),
        "web's replicas set right in m3",
        || async { (deployment_replicas(&env, ns, "web").await == [2, 2, 2]).then_some(()) },
    )
    .await;

    // One more replica: only the member that gets it is written.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, _) = member_writes(&env);
    apply(&env, deployment_manifest(ns, "web", 7, json!({}))).await;
    eventually("web 7 in all", || async {
        let r = deployment_replicas(&env, ns, "web").await;
        (r.iter().sum::<i32>() == 7).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, which) = member_writes(&env);
    // The member whose share moved: the hand-over of its create and one apply.
    assert!(
        after - before <= 2,
        "{} writes for one replica more:\n{which}",
        after - before
    );

    // The same decisions from a reloaded plugin: every object is placed again,
    // nothing is written.
    let (before, _) = member_writes(&env);
    drop_plugin(
        &env,
        "weighted-spread.wasm",
        fedwasm_host::runtime::built_in_bytes("weighted-spread").unwrap(),
    );
    let listing = eventually("the reloaded weighted-spread loaded or refused", || async {
        let (_, plugins) = admin_json(&env, "GET", "/plugins", Value::Null).await;
        plugins.as_array()?.iter().find_map(|p| {
            (p["name"] == "weighted-spread"
                && (p["built_in"] == false || !p["last_error"].is_null()))
            .then(|| p.clone())
        })
    })
    .await;
    assert!(listing["last_error"].is_null(), "{listing}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (after, which) = member_writes(&env);
    std::fs::remove_file(env.plugin_dir.join("weighted-spread.wasm")).unwrap();
    assert_eq!(
        before, after,
        "writes after a reload that moved nothing:\n{which}"
    );
}

async fn bad_input_gives_events_and_retries(env: Env) {
    let ns = "e2e-bad";
    namespace(&env, ns).await;
    apply(&env, rs_manifest(ns, "web", 6, json!({}))).await;
    replicas_become(&env, ns, "web", [Some(2), Some(2), Some(2)], "web 2/2/2").await;
    apply(
        &env,
        rs_manifest(
            ns,
            "web",
            20,
            json!({
        "federation.kubernetes.io/replica-set-preferences": "{not json"}),
        ),
    )
    .await;
    eventually("an InvalidPreferences event", || async {
        (!events(&env, ns, "InvalidPreferences").await.is_empty()).then_some(())
    })
    .await;
    apply(
        &env,
        rs_manifest(
            ns,
            "web",
            20,
            json!({"fedwasm.io/distribute-plugin": "nope"}),
        ),
    )
    .await;
    let named = || async {
        events(&env, ns, "PluginError")
            .await
            .into_iter()
            .filter(|e| e.note.as_deref().unwrap_or_default().contains("nope"))
            .map(|e| e.series.map_or(1, |s| s.count))
            .sum::<i32>()
    };
    eventually("a PluginError event naming the plugin", || async {
        (named().await > 0).then_some(())
    })
    .await;
    // A failing plugin is retried with backoff, not left waiting for a change.
    eventually("the failing placement retried", || async {
        let text = env.metrics.render();
        let retries = text
            .lines()
            .find(|l| {
                l.starts_with("fedwasm_propagations_total")
                    && l.contains("ReplicaSet")
                    && l.contains("plugin_error")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        (retries >= 2.0).then_some(())
    })
    .await;
    assert_eq!(
        member_replicas(&env, ns, "web").await,
        expect(&[("m1", Some(2)), ("m2", Some(2)), ("m3", Some(2))]),
        "members left as they were"
    );
}

/// Per member holding Deployment `name`: its replicas and first container image.
async fn deployment_copies(env: &Env, ns: &str, name: &str) -> BTreeMap<String, (i32, String)> {
    let mut out = BTreeMap::new();
    for (cluster, c) in &env.members {
        let d: Api<Deployment> = Api::namespaced(c.clone(), ns);
        if let Some(spec) = d.get_opt(name).await.ok().flatten().and_then(|d| d.spec) {
            let image = spec
                .template
                .spec
                .and_then(|p| p.containers.into_iter().next())
                .and_then(|c| c.image)
                .unwrap_or_default();
            out.insert(cluster.clone(), (spec.replicas.unwrap_or(1), image));
        }
    }
    out
}

async fn copies_become(env: &Env, ns: &str, name: &str, want: &[(&str, i32, &str)], what: &str) {
    let want: BTreeMap<String, (i32, String)> = want
        .iter()
        .map(|(c, n, image)| (c.to_string(), (*n, image.to_string())))
        .collect();
    let mut last = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        last = deployment_copies(env, ns, name).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("not within 60 s: {what}: want {want:?}, have {last:?}");
}

/// The `@policy` entry of the federation Deployment's placement annotation.
async fn governing_policy(env: &Env, ns: &str, name: &str) -> Option<String> {
    let api: Api<Deployment> = Api::namespaced(env.fed.clone(), ns);
    let d = api.get_opt(name).await.ok().flatten()?;
    let placement: Value =
        serde_json::from_str(d.annotations().get("fedwasm.io/placement")?).ok()?;
    placement["@policy"].as_str().map(str::to_string)
}

/// Events with `reason` about the placement policy `name`.
async fn policy_events(env: &Env, name: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::all(env.fed.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind
                    .as_deref()
                    .is_some_and(|k| k.ends_with("PlacementPolicy"))
                    && r.name.as_deref() == Some(name)
            })
        })
        .collect()
}

fn web_policy(select_settings: Value, override_path: &str) -> Value {
    json!({"apiVersion": "fedwasm.io/v1alpha1", "kind": "ClusterPlacementPolicy",
        "metadata": {"name": "e2e-web"},
        "spec": {
            "resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment",
                "labelSelector": {"matchLabels": {"e2e-policy": "web"}}}],
            "priority": 10,
            "select": {"plugin": "label-selector", "settings": select_settings},
            "distribute": {"plugin": "weighted-spread",
                "preferences": {"rebalance": true, "clusters": {"*": {"weight": 1}}}},
            "overrides": [{"clusters": {"regions": ["asia-east1"]},
                "patch": [{"op": "replace", "path": override_path,
                    "value": "mirror.asia.example/nginx:1.25"}]}]}})
}

fn labelled(mut manifest: Value, label: &str) -> Value {
    manifest["metadata"]["labels"] = json!({"e2e-policy": label});
    manifest
}

/// One cluster policy places every Deployment labelled `e2e-policy: web` by its
/// plugins and settings, and gives the Asian copies another image; an object's own
/// annotation wins over the policy's settings; a namespaced policy wins over the
/// cluster one; a policy change re-places what it governs, without a restart; an
/// invalid patch and invalid settings leave the members as they were, with events.
async fn placement_policies_govern_many_objects_and_override_copies(env: Env) {
    let ns = "e2e-policy";
    namespace(&env, ns).await;
    let image = "nginx:1.25";
    let mirror = "mirror.asia.example/nginx:1.25";
    let containers0 = "/spec/template/spec/containers/0/image";
    apply(
        &env,
        web_policy(
            json!({"regions": ["europe-west1", "asia-east1"]}),
            containers0,
        ),
    )
    .await;
    apply(
        &env,
        labelled(deployment_manifest(ns, "web", 6, json!({})), "web"),
    )
    .await;
    copies_become(
        &env,
        ns,
        "web",
        &[("m1", 3, image), ("m3", 3, mirror)],
        "web in Europe and Asia, the Asian copy on the mirror",
    )
    .await;
    // The annotation is written after the members: wait for it too.
    eventually(
        "web's placement annotation names ClusterPlacementPolicy/e2e-web",
        || async {
            (governing_policy(&env, ns, "web").await.as_deref()
                == Some("ClusterPlacementPolicy/e2e-web"))
            .then_some(())
        },
    )
    .await;
    // The object's own annotation wins over the policy's setting of the same key.
    let pinned = json!({"fedwasm.io/regions": "us-central1"});
    apply(
        &env,
        labelled(deployment_manifest(ns, "pinned", 4, pinned), "web"),
    )
    .await;
    copies_become(
        &env,
        ns,
        "pinned",
        &[("m2", 4, image)],
        "pinned to us-central1",
    )
    .await;
    // A namespaced policy wins over the cluster one, whatever the priorities.
    apply(
        &env,
        json!({"apiVersion": "fedwasm.io/v1alpha1", "kind": "PlacementPolicy",
            "metadata": {"name": "local", "namespace": ns},
            "spec": {"resourceSelectors": [{"kind": "Deployment", "name": "mine"}],
                "priority": -5,
                "select": {"settings": {"clusters": ["m2", "m3"]}}}}),
    )
    .await;
    apply(
        &env,
        labelled(deployment_manifest(ns, "mine", 4, json!({})), "web"),
    )
    .await;
    copies_become(
        &env,
        ns,
        "mine",
        &[("m2", 2, image), ("m3", 2, image)],
        "mine placed by the namespaced policy (no override there)",
    )
    .await;
    // The annotation is written after the members: wait for it too.
    eventually(
        "mine's placement annotation names PlacementPolicy/e2e-policy/local",
        || async {
            (governing_policy(&env, ns, "mine").await.as_deref()
                == Some("PlacementPolicy/e2e-policy/local"))
            .then_some(())
        },
    )
    .await;
    // `kubectl get` shows how many objects each policy governs.
    eventually("the policy's status counts web and pinned", || async {
        let out = kubectl(&env, &["get", "clusterplacementpolicies", "e2e-web"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let row = text.lines().nth(1)?.split_whitespace().collect::<Vec<_>>();
        (text.contains("GOVERNED") && row.get(2) == Some(&"2")).then_some(())
    })
    .await;
    // A policy change re-places what it governs, without a restart.
    apply(
        &env,
        web_policy(json!({"regions": ["asia-east1"]}), containers0),
    )
    .await;
    copies_become(&env, ns, "web", &[("m3", 6, mirror)], "web all in Asia").await;
    copies_become(&env, ns, "pinned", &[("m2", 4, image)], "pinned stays").await;
    // A patch that does not apply: the Asian copy stays as it was, with an event.
    let missing = "/spec/template/spec/containers/7/image";
    apply(
        &env,
        web_policy(json!({"regions": ["europe-west1", "asia-east1"]}), missing),
    )
    .await;
    eventually("an OverrideFailed event", || async {
        let failed = events(&env, ns, "OverrideFailed").await;
        failed
            .iter()
            .any(|e| {
                let note = e.note.as_deref().unwrap_or_default();
                note.contains("m3") && note.contains("overrides[0]")
            })
            .then_some(())
    })
    .await;
    copies_become(
        &env,
        ns,
        "web",
        &[("m1", 3, image), ("m3", 6, mirror)],
        "Europe gets its share; the Asian copy is left as it was",
    )
    .await;
    // Settings the plugin refuses: nothing moves; the object and the policy say why.
    apply(
        &env,
        web_policy(
            json!({"regions": ["europe-west1"], "region": "typo"}),
            containers0,
        ),
    )
    .await;
    eventually("a PlacementFailed event on the policy", || async {
        policy_events(&env, "e2e-web", "PlacementFailed")
            .await
            .iter()
            .any(|e| {
                e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("unknown key `region`")
            })
            .then_some(())
    })
    .await;
    eventually("a PluginError event on the object", || async {
        (!events(&env, ns, "PluginError").await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        deployment_copies(&env, ns, "web").await,
        BTreeMap::from([
            ("m1".to_string(), (3, image.to_string())),
            ("m3".to_string(), (6, mirror.to_string()))
        ]),
        "members left as they were"
    );
    // Fixed: placed again.
    apply(
        &env,
        web_policy(json!({"regions": ["europe-west1"]}), containers0),
    )
    .await;
    copies_become(&env, ns, "web", &[("m1", 6, image)], "web all in Europe").await;
    // A twin of the same scope and priority: the name decides, the object gets a
    // PolicyConflict event and the winner's status names the twin.
    let mut twin = web_policy(json!({"regions": ["us-central1"]}), containers0);
    twin["metadata"]["name"] = "e2e-web-twin".into();
    apply(&env, twin).await;
    eventually("a PolicyConflict event naming the twin", || async {
        events(&env, ns, "PolicyConflict")
            .await
            .iter()
            .any(|e| {
                e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("e2e-web-twin")
            })
            .then_some(())
    })
    .await;
    eventually("the winner's status lists the tie", || async {
        let out = kubectl(
            &env,
            &[
                "get",
                "cpp",
                "e2e-web",
                "-o",
                "jsonpath={.status.conflicts}",
            ],
        )
        .await;
        String::from_utf8_lossy(&out.stdout)
            .contains("e2e-web-twin")
            .then_some(())
    })
    .await;
    assert_eq!(
        deployment_copies(&env, ns, "web").await,
        BTreeMap::from([("m1".to_string(), (6, image.to_string()))]),
        "the winner still places web"
    );
    kubectl(&env, &["delete", "cpp", "e2e-web-twin"]).await;
}

/// The `region-mirror` example plugin, named by a policy before it exists: no copy
/// is made (an event says why); dropped into the plugin directory, it is loaded
/// without a restart and every member's copy gets its region's mirror.
async fn a_hot_swapped_customize_plugin_changes_copies(env: Env) {
    let ns = "e2e-mirror";
    namespace(&env, ns).await;
    apply(
        &env,
        json!({"apiVersion": "fedwasm.io/v1alpha1", "kind": "PlacementPolicy",
            "metadata": {"name": "mirrors", "namespace": ns},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}],
                "customize": {"plugin": "region-mirror", "settings": {"mirrors": {
                    "europe-west1": "mirror.eu.example", "asia-east1": "mirror.asia.example"}}}}}),
    )
    .await;
    apply(&env, deployment_manifest(ns, "shop", 3, json!({}))).await;
    eventually(
        "an OverrideFailed event naming the missing plugin",
        || async {
            events(&env, ns, "OverrideFailed")
                .await
                .iter()
                .any(|e| {
                    e.note
                        .as_deref()
                        .unwrap_or_default()
                        .contains("region-mirror")
                })
                .then_some(())
        },
    )
    .await;
    assert!(deployment_copies(&env, ns, "shop").await.is_empty());
    drop_plugin(&env, "region-mirror.wasm", plugins::REGION_MIRROR);
    copies_become(
        &env,
        ns,
        "shop",
        &[
            ("m1", 1, "mirror.eu.example/nginx:1.25"),
            ("m2", 1, "nginx:1.25"),
            ("m3", 1, "mirror.asia.example/nginx:1.25"),
        ],
        "each copy on its region's mirror",
    )
    .await;
    // A policy's rank section chooses the plugin that orders a Service's
    // backends for the global ingress and DNS.
    drop_plugin(&env, "reverse-rank.wasm", plugins::CHAOS);
    apply(
        &env,
        json!({"apiVersion": "fedwasm.io/v1alpha1", "kind": "PlacementPolicy",
            "metadata": {"name": "ranking", "namespace": ns},
            "spec": {"resourceSelectors": [{"kind": "Service"}],
                "rank": {"plugin": "reverse-rank"}}}),
    )
    .await;
    apply(
        &env,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop", "namespace": ns},
            "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
    )
    .await;
    eventually(
        "the Service's route ranked by the policy's plugin",
        || async {
            // Ranked by it: named, loaded and answering (no error on the route).
            let table = env.router.table();
            let route = table.service_route(ns, "shop")?;
            (route.plugin == "reverse-rank" && route.error.is_none()).then_some(())
        },
    )
    .await;
    // A preview of another customize plugin in place of region-mirror lists, per
    // member, what it would change in each copy; nothing is written.
    let (status, preview) = admin_json(
        &env,
        "POST",
        "/preview",
        json!({"plugin": "reverse-rank", "as": "region-mirror"}),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    let shop = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"] == json!(format!("{ns}/shop")))
        .unwrap_or_else(|| panic!("{preview}"))
        .clone();
    let label = "/metadata/labels/chaos.example~1cluster";
    let image = "/spec/template/spec/containers/0/image";
    assert_eq!(shop["copies"]["m1"], json!([label, image]), "{shop}");
    assert_eq!(shop["copies"]["m2"], json!([label]), "{shop}");
    assert_eq!(shop["copies"]["m3"], json!([label, image]), "{shop}");
    assert_eq!(shop["before"], shop["after"], "no replica moves: {shop}");
    copies_become(
        &env,
        ns,
        "shop",
        &[
            ("m1", 1, "mirror.eu.example/nginx:1.25"),
            ("m2", 1, "nginx:1.25"),
            ("m3", 1, "mirror.asia.example/nginx:1.25"),
        ],
        "nothing written by the preview",
    )
    .await;
}

async fn others_objects_are_never_taken_over(env: Env) {
    let ns = "e2e-theirs";
    namespace(&env, ns).await;
    let m2 = env.members["m2"].clone();
    let m2_ns: Api<Namespace> = Api::all(m2.clone());
    eventually("the namespace in m2", || async {
        m2_ns.get_opt(ns).await.ok()?
    })
    .await;
    Api::<ConfigMap>::namespaced(m2.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": {"name": "theirs"}, "data": {"owner": "member"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    apply(
        &env,
        cm_manifest(ns, "theirs", json!({}), json!({"owner": "federation"})),
    )
    .await;
    eventually("a Conflict event", || async {
        (!events(&env, ns, "Conflict").await.is_empty()).then_some(())
    })
    .await;
    eventually("theirs placed in m1", || async {
        config_map(&env.members["m1"], ns, "theirs").await
    })
    .await;
    let untouched = config_map(&m2, ns, "theirs").await.unwrap();
    assert_eq!(untouched.data.as_ref().unwrap()["owner"], "member");
    assert!(untouched.labels().get("fedwasm.io/managed-by").is_none());
    // Deleting the federation object leaves their object alone too.
    Api::<ConfigMap>::namespaced(env.fed.clone(), ns)
        .delete("theirs", &DeleteParams::default())
        .await
        .unwrap();
    eventually("theirs gone from m1", || async {
        config_map(&env.members["m1"], ns, "theirs")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(config_map(&m2, ns, "theirs").await.is_some());
}

async fn deleting_removes_from_every_member(env: Env) {
    let ns = "e2e-delete";
    namespace(&env, ns).await;
    apply(
        &env,
        cm_manifest(
            ns,
            "settings",
            json!({"fedwasm.io/cluster-selector": "env=prod"}),
            json!({"a": "1"}),
        ),
    )
    .await;
    apply(&env, rs_manifest(ns, "web", 4, json!({}))).await;
    eventually("web in every member", || async {
        member_replicas(&env, ns, "web")
            .await
            .values()
            .all(Option::is_some)
            .then_some(())
    })
    .await;
    eventually("settings in m1 and m2 only (env=prod)", || async {
        (config_map(&env.members["m1"], ns, "settings")
            .await
            .is_some()
            && config_map(&env.members["m2"], ns, "settings")
                .await
                .is_some()
            && config_map(&env.members["m3"], ns, "settings")
                .await
                .is_none())
        .then_some(())
    })
    .await;
    let fed_rs: Api<ReplicaSet> = Api::namespaced(env.fed.clone(), ns);
    fed_rs
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web gone everywhere", || async {
        member_replicas(&env, ns, "web")
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
}

// ---------------------------------------------------------------------------------
// Scenarios that disturb the whole federation.

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Thaws the apiserver even when the scenario fails half-way.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

async fn a_frozen_member_holds_up_no_other(env: Env) {
    let ns = "e2e-frozen";
    namespace(&env, ns).await;
    eventually("the namespace in m3", || async {
        Api::<Namespace>::all(env.members["m3"].clone())
            .get_opt(ns)
            .await
            .ok()?
    })
    .await;
    let pid = env.local.endpoint("m3").unwrap().pid.expect("m3 runs");
    // Accepts connections (the kernel completes the handshake), never answers.
    signal(pid, "STOP");
    let thaw = Thaw(pid);
    apply(&env, cm_manifest(ns, "fresh", json!({}), json!({"a": "1"}))).await;
    for m in ["m1", "m2"] {
        within(
            Duration::from_secs(6),
            &format!("fresh in {m} while m3 is frozen"),
            || async { config_map(&env.members[m], ns, "fresh").await },
        )
        .await;
    }
    drop(thaw);
    eventually("fresh in m3 once it thaws", || async {
        config_map(&env.members["m3"], ns, "fresh").await
    })
    .await;
}

async fn a_member_away_converges_when_back(env: Env) {
    let ns = "e2e-away";
    namespace(&env, ns).await;
    apply(
        &env,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
        "stringData": {"password": "v1"}}),
    )
    .await;
    apply(&env, rs_manifest(ns, "web", 6, json!({}))).await;
    replicas_become(&env, ns, "web", [Some(2), Some(2), Some(2)], "web 2/2/2").await;
    let local = env.local.clone();
    tokio::task::spawn_blocking(move || local.stop_member("m3"))
        .await
        .unwrap()
        .expect("stop m3");
    let clusters: Api<Cluster> = Api::all(env.fed.clone());
    eventually("m3 Offline", || async {
        (clusters.get("m3").await.ok()?.status?.phase.as_deref() == Some("Offline")).then_some(())
    })
    .await;
    apply(
        &env,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
        "stringData": {"password": "v2"}}),
    )
    .await;
    let password = |c: Client| async move {
        let data = Api::<Secret>::namespaced(c, ns)
            .get_opt("creds")
            .await
            .ok()??
            .data?;
        String::from_utf8(data.get("password")?.0.clone()).ok()
    };
    for m in ["m1", "m2"] {
        eventually(&format!("v2 in {m} while m3 is away"), || async {
            (password(env.members[m].clone()).await.as_deref() == Some("v2")).then_some(())
        })
        .await;
    }
    // Replicas run where members are: m3's share moves to m1 and m2 meanwhile.
    eventually("web 3/3 while m3 is away", || async {
        let r = member_replicas(&env, ns, "web").await;
        (r["m1"] == Some(3) && r["m2"] == Some(3)).then_some(())
    })
    .await;
    let local = env.local.clone();
    tokio::task::spawn_blocking(move || local.start_member("m3"))
        .await
        .unwrap()
        .expect("restart m3");
    eventually("v2 in m3 after it returned", || async {
        (password(env.members["m3"].clone()).await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    replicas_become(
        &env,
        ns,
        "web",
        [Some(2), Some(2), Some(2)],
        "web even 2/2/2 again",
    )
    .await;
}

/// Stops and starts a cluster's apiserver (its data stays in etcd).
async fn restart_cluster(env: &Env, name: &'static str, down: Duration) {
    let local = env.local.clone();
    tokio::task::spawn_blocking(move || local.stop_member(name))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("stop {name}: {e}"));
    tokio::time::sleep(down).await;
    let local = env.local.clone();
    tokio::task::spawn_blocking(move || local.start_member(name))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
}

/// Every member has ConfigMaps `{prefix}-0..n` with data `v`, as fedwasm's.
async fn all_config_maps(env: &Env, ns: &str, prefix: &str, n: usize, v: &str) {
    for (cluster, c) in &env.members {
        eventually(
            &format!("{n} {prefix} ConfigMaps at {v} in {cluster}"),
            || async {
                let list = Api::<ConfigMap>::namespaced(c.clone(), ns)
                    .list(&ListParams::default().labels("fedwasm.io/managed-by=fedwasm"))
                    .await
                    .ok()?;
                let good = list
                    .items
                    .iter()
                    .filter(|cm| cm.name_any().starts_with(prefix))
                    .filter(|cm| {
                        cm.data
                            .as_ref()
                            .and_then(|d| d.get("v"))
                            .map(String::as_str)
                            == Some(v)
                    })
                    .count();
                (good == n).then_some(())
            },
        )
        .await;
    }
}

async fn create_config_maps(env: &Env, ns: &str, prefix: &str, n: usize, v: &str) {
    futures::stream::iter(0..n)
        .for_each_concurrent(8, |i| async move {
            apply(
                env,
                cm_manifest(ns, &format!("{prefix}-{i}"), json!({}), json!({"v": v})),
            )
            .await;
        })
        .await;
}

/// A member going away and coming back three times while objects are created and
/// changed: its watches break and relist each time, and in the end it holds every
/// object at its last content, as the others do.
async fn a_flapping_member_loses_nothing(env: Env) {
    let ns = "e2e-flapping";
    namespace(&env, ns).await;
    let flapping = {
        let env = env.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                restart_cluster(&env, "m2", Duration::from_millis(1500)).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        })
    };
    create_config_maps(&env, ns, "flap", 30, "1").await;
    create_config_maps(&env, ns, "flap", 30, "2").await;
    flapping.await.unwrap();
    all_config_maps(&env, ns, "flap", 30, "2").await;
    // Its cache is whole again: a copy deleted by hand there comes back.
    Api::<ConfigMap>::namespaced(env.members["m2"].clone(), ns)
        .delete("flap-7", &DeleteParams::default())
        .await
        .unwrap();
    eventually("flap-7 back in m2", || async {
        config_map(&env.members["m2"], ns, "flap-7").await
    })
    .await;
}

/// The federation plane's apiserver going away and coming back: the host's watches
/// of it resume, what was created before is kept, and what is created or changed
/// after propagates.
async fn the_federation_plane_restarting_loses_nothing(env: Env) {
    let ns = "e2e-plane-restart";
    namespace(&env, ns).await;
    create_config_maps(&env, ns, "before", 10, "1").await;
    all_config_maps(&env, ns, "before", 10, "1").await;
    restart_cluster(&env, fedwasm_testenv::FEDERATION, Duration::from_secs(3)).await;
    // The host's own clients reconnect; ours may need a moment too.
    eventually("the plane answers again", || async {
        Api::<Namespace>::all(env.fed.clone())
            .get_opt(ns)
            .await
            .ok()?
    })
    .await;
    create_config_maps(&env, ns, "after", 10, "1").await;
    create_config_maps(&env, ns, "before", 10, "2").await;
    all_config_maps(&env, ns, "after", 10, "1").await;
    all_config_maps(&env, ns, "before", 10, "2").await;
}

/// The distribute plugin swapped every 100 ms, between one that puts every replica
/// in the first cluster and the built-in, while ReplicaSets are created: the host
/// never stops, and once the built-in stays, every ReplicaSet is spread evenly.
async fn plugins_swapped_every_100ms_lose_nothing(env: Env) {
    let ns = "e2e-swap-storm";
    namespace(&env, ns).await;
    let storm = {
        let env = env.clone();
        tokio::spawn(async move {
            let builtin = fedwasm_host::runtime::built_in_bytes("weighted-spread").unwrap();
            for i in 0..50 {
                let bytes = if i % 2 == 0 { plugins::CHAOS } else { builtin };
                drop_plugin(&env, "weighted-spread.wasm", bytes);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::fs::remove_file(env.plugin_dir.join("weighted-spread.wasm")).unwrap();
        })
    };
    futures::stream::iter(0..12)
        .for_each_concurrent(4, |i| {
            let env = &env;
            async move { apply(env, rs_manifest(ns, &format!("rs-{i}"), 6, json!({}))).await }
        })
        .await;
    storm.await.unwrap();
    for i in 0..12 {
        replicas_become(
            &env,
            ns,
            &format!("rs-{i}"),
            [Some(2), Some(2), Some(2)],
            &format!("rs-{i} 2/2/2 after the storm"),
        )
        .await;
    }
    let (status, _) = admin_json(&env, "GET", "/healthz", Value::Null).await;
    assert_eq!(status, 200, "the host is healthy after the storm");
}

async fn a_hot_swapped_plugin_moves_replicas(env: Env) {
    let ns = "e2e-swap";
    namespace(&env, ns).await;
    apply(&env, rs_manifest(ns, "web", 6, json!({}))).await;
    replicas_become(&env, ns, "web", [Some(2), Some(2), Some(2)], "web 2/2/2").await;
    // The chaos plugin puts every replica in the first selected cluster.
    let tmp = env.plugin_dir.join("weighted-spread.tmp");
    std::fs::write(&tmp, plugins::CHAOS).unwrap();
    std::fs::rename(&tmp, env.plugin_dir.join("weighted-spread.wasm")).unwrap();
    replicas_become(
        &env,
        ns,
        "web",
        [Some(6), Some(0), Some(0)],
        "web 6/0/0 after the swap",
    )
    .await;
    std::fs::remove_file(env.plugin_dir.join("weighted-spread.wasm")).unwrap();
    replicas_become(
        &env,
        ns,
        "web",
        [Some(2), Some(2), Some(2)],
        "web 2/2/2 with the built-in back",
    )
    .await;
}

/// Per member holding Deployment `name`, its replicas.
async fn deployment_placement(env: &Env, ns: &str, name: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for (cluster, c) in &env.members {
        let d: Api<Deployment> = Api::namespaced(c.clone(), ns);
        if let Some(d) = d.get_opt(name).await.ok().flatten() {
            let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(1);
            out.insert(cluster.clone(), replicas as u32);
        }
    }
    out
}

/// What fedwasm recorded as applied on the federation Deployment `name`.
async fn recorded_placement(env: &Env, ns: &str, name: &str) -> BTreeMap<String, u32> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.fed.clone(),
        ns,
        &resource(&deployment_manifest(ns, name, 1, json!({}))),
    );
    match api.get_opt(name).await.ok().flatten() {
        Some(obj) => fedwasm_host::preview::applied(&obj, true),
        None => BTreeMap::new(),
    }
}

async fn admin_json(env: &Env, method: &str, path: &str, body: Value) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{path}", env.admin);
    let request = match method {
        "POST" => client.post(url).body(body.to_string()),
        _ => client.get(url),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The recent shadow differences about objects in `ns`.
async fn shadow_differences(env: &Env, ns: &str) -> Vec<Value> {
    let (_, body) = admin_json(env, "GET", "/shadow", Value::Null).await;
    body["recent"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| {
            d["object"]
                .as_str()
                .is_some_and(|o| o.starts_with(&format!("{ns}/")))
        })
        .collect()
}

/// Puts `bytes` in the plugin directory as `file`, atomically (as `cp` + `mv`).
fn drop_plugin(env: &Env, file: &str, bytes: &[u8]) {
    let tmp = env.plugin_dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, env.plugin_dir.join(file)).unwrap();
}

/// The swap a platform team makes with the facts in hand: a broken shadow changes
/// nothing; the tutorial plugin as a shadow records what it would change and
/// changes nothing; the preview lists the moves; renaming the shadow makes it
/// decide, and the members end exactly as the preview said.
async fn previews_and_shadows_tell_what_a_swap_would_move(env: Env) {
    let ns = "e2e-preview";
    namespace(&env, ns).await;
    let deployments = [("web", 6), ("api", 4), ("trap", 3)];
    for (name, replicas) in deployments {
        apply(&env, deployment_manifest(ns, name, replicas, json!({}))).await;
    }
    let mut settled = BTreeMap::new();
    for (name, replicas) in deployments {
        let placed = eventually(&format!("{name} spread and recorded"), || async {
            let members = deployment_placement(&env, ns, name).await;
            let recorded = recorded_placement(&env, ns, name).await;
            let (min, max) = (members.values().min()?, members.values().max()?);
            let even = members.len() == 3
                && members.values().sum::<u32>() == replicas as u32
                && max - min <= 1;
            (even && members == recorded).then_some(members)
        })
        .await;
        settled.insert(name, placed);
    }

    // 1. A broken shadow: the chaos plugin traps on objects named `trap` and puts
    //    every replica in the first cluster otherwise. Placement is untouched.
    drop_plugin(&env, "weighted-spread.shadow.wasm", plugins::CHAOS);
    let seen = eventually("the chaos shadow's error and difference", || async {
        let recent = shadow_differences(&env, ns).await;
        let error = recent
            .iter()
            .find(|d| d["object"] == format!("{ns}/trap"))?;
        let differs = recent.iter().find(|d| d["object"] == format!("{ns}/web"))?;
        (error["error"].as_str()?.contains("trap") && differs["shadow"].is_object())
            .then(|| differs.clone())
    })
    .await;
    assert_eq!(seen["plugins"], json!(["weighted-spread"]), "{seen}");
    assert_eq!(seen["active"], json!(settled["web"]), "{seen}");
    let shadow_total: u64 = seen["shadow"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(shadow_total, 6, "{seen}");
    let metrics = env.metrics.render();
    for result in ["differs", "error"] {
        assert!(
            metrics.contains(&format!(
                "fedwasm_shadow_decisions_total{{plugin=\"weighted-spread\",result=\"{result}\"}}"
            )),
            "no shadow {result} counted:\n{metrics}"
        );
    }
    eventually("one ShadowDiffers event for web", || async {
        let events = events(&env, ns, "ShadowDiffers").await;
        let web: Vec<&Event> = events
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
            .collect();
        (web.len() == 1).then_some(())
    })
    .await;
    // A shadow decides nothing, also when an object names it.
    apply(
        &env,
        deployment_manifest(
            ns,
            "names-the-shadow",
            2,
            json!({"fedwasm.io/distribute-plugin": "weighted-spread.shadow"}),
        ),
    )
    .await;
    eventually("a PluginError event: a shadow decides nothing", || async {
        let events = events(&env, ns, "PluginError").await;
        events
            .iter()
            .any(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("is a shadow plugin"))
            })
            .then_some(())
    })
    .await;
    assert!(deployment_placement(&env, ns, "names-the-shadow")
        .await
        .is_empty());
    for (name, _) in deployments {
        assert_eq!(
            deployment_placement(&env, ns, name).await,
            settled[name],
            "the broken shadow changed {name}"
        );
    }

    // 2. The tutorial plugin as the shadow: it records, it changes nothing.
    drop_plugin(&env, "weighted-spread.shadow.wasm", plugins::AGGREGATE);
    eventually("the aggregate shadow's differences", || async {
        let recent = shadow_differences(&env, ns).await;
        let trap = recent
            .iter()
            .find(|d| d["object"] == format!("{ns}/trap"))?;
        trap["shadow"].is_object().then_some(())
    })
    .await;
    for (name, _) in deployments {
        assert_eq!(
            deployment_placement(&env, ns, name).await,
            settled[name],
            "the shadow changed {name}"
        );
    }

    // 3. The preview lists the moves; nothing is written.
    let (status, preview) = admin_json(
        &env,
        "POST",
        "/preview",
        json!({"plugin": "weighted-spread.shadow"}),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    let ours: BTreeMap<String, Value> = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["object"].as_str().unwrap().starts_with(&format!("{ns}/")))
        .map(|c| (c["object"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    assert_eq!(
        ours.len(),
        3,
        "every Deployment moves under aggregate: {preview}"
    );
    for (name, _) in deployments {
        let change = &ours[&format!("{ns}/{name}")];
        assert_eq!(change["kind"], "Deployment");
        assert_eq!(change["before"], json!(settled[name]), "{change}");
        assert_eq!(
            deployment_placement(&env, ns, name).await,
            settled[name],
            "the preview changed {name}"
        );
    }
    let (status, body) = admin_json(&env, "POST", "/preview", json!({"plugin": "nope"})).await;
    assert_eq!(status, 404, "{body}");

    // 4. Promote the shadow by renaming it: the members end as the preview said.
    std::fs::rename(
        env.plugin_dir.join("weighted-spread.shadow.wasm"),
        env.plugin_dir.join("weighted-spread.wasm"),
    )
    .unwrap();
    for (name, _) in deployments {
        let want: BTreeMap<String, u32> =
            serde_json::from_value(ours[&format!("{ns}/{name}")]["after"].clone()).unwrap();
        eventually(
            &format!("{name} placed as previewed ({want:?})"),
            || async { (deployment_placement(&env, ns, name).await == want).then_some(()) },
        )
        .await;
    }
    let (_, shadows) = admin_json(&env, "GET", "/shadow", Value::Null).await;
    assert_eq!(shadows["shadows"], json!([]), "{shadows}");
    std::fs::remove_file(env.plugin_dir.join("weighted-spread.wasm")).unwrap();
    eventually("the built-in spreads web again", || async {
        (deployment_placement(&env, ns, "web").await == settled["web"]).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------
// The global ingress. No kubelet runs: the test plays each member's Deployment
// controller (writing ready replicas) and its pods (a small HTTP server per
// member, reached at the Cluster's `spec.ingressEndpoint`).

/// One GET through the global ingress from a client at `source`: (status, the
/// cluster that served, body).
async fn get_from(env: &Env, source: &str, path: &str) -> (u16, String, String) {
    let client = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{}{path}", env.ingress))
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {source}: {e}"));
    let status = response.status().as_u16();
    let cluster = response
        .headers()
        .get("x-fedwasm-cluster")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, cluster, response.text().await.unwrap_or_default())
}

/// GETs from `source` until `cluster` serves; every answer must be a 200.
async fn served_by(env: &Env, source: &str, cluster: &str, what: &str) {
    eventually(what, || async {
        let (status, served, body) = get_from(env, source, "/").await;
        assert_eq!(status, 200, "a failed GET from {source} ({what}): {body}");
        (served == cluster).then_some(())
    })
    .await;
}

/// Acting as `cluster`'s cloud load-balancer controller: once the member has
/// Service `name`, gives it `ip`.
async fn set_lb_address(env: &Env, ns: &str, name: &str, cluster: &str, ip: &str) {
    let svc: Api<Service> = Api::namespaced(env.members[cluster].clone(), ns);
    eventually(&format!("Service {name} in {cluster}"), || async {
        svc.get_opt(name).await.ok()?
    })
    .await;
    svc.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})),
    )
    .await
    .unwrap();
}

async fn set_ready(env: &Env, ns: &str, cluster: &str, ready: i32) {
    let d: Api<Deployment> = Api::namespaced(env.members[cluster].clone(), ns);
    d.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
        "replicas": 2, "readyReplicas": ready, "availableReplicas": ready}})),
    )
    .await
    .unwrap();
}

async fn the_global_ingress_sends_clients_to_the_closest_cluster(env: Env) {
    let ns = "e2e-global";
    namespace(&env, ns).await;
    apply(&env, deployment_manifest(ns, "web", 6, json!({}))).await;
    apply(
        &env,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
    )
    .await;
    apply(&env, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}))
    .await;
    eventually("web in every member", || async {
        (deployment_replicas(&env, ns, "web").await == [2, 2, 2]).then_some(())
    })
    .await;
    for (cluster, ..) in MEMBERS {
        set_ready(&env, ns, cluster, 2).await;
    }
    // Each client is served by the cluster in its own region (once the routes are
    // there: 503 until the members report ready replicas).
    eventually("the Asian client served from asia-east1", || async {
        (get_from(&env, "127.1.0.1", "/").await.1 == "m3").then_some(())
    })
    .await;
    served_by(
        &env,
        "127.2.0.1",
        "m2",
        "the US client served from us-central1",
    )
    .await;
    served_by(
        &env,
        "127.3.0.1",
        "m1",
        "the European client served from europe-west1",
    )
    .await;
    let (_, _, body) = get_from(&env, "127.1.0.1", "/").await;
    assert_eq!(
        body,
        "Welcome to the global site! You are being served from asia-east1-a"
    );
    // No Wasm per request: the rankings are in the table, per location.
    let routes = env.router.describe();
    let route = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["namespace"] == ns && r["kind"] == "Ingress")
        .expect("a route for the Ingress");
    assert_eq!(
        route["rankings"]["asia-east1/asia-east1-a"][0], "m3",
        "{route}"
    );

    // The Asian backend goes away: not one GET fails, the next closest serves.
    env.backends["m3"].stop().await;
    for _ in 0..20 {
        let (status, served, body) = get_from(&env, "127.1.0.1", "/").await;
        assert_eq!(
            status, 200,
            "a GET failed while m3's backend was down: {body}"
        );
        assert_ne!(served, "m3");
    }
    env.backends["m3"].restart().await;
    served_by(
        &env,
        "127.1.0.1",
        "m3",
        "the Asian client back on m3 once it answers",
    )
    .await;

    // m3's replicas become unready (as its Deployment controller would report).
    set_ready(&env, ns, "m3", 0).await;
    eventually(
        "the Asian client moved off m3 with no ready replicas",
        || async {
            let (status, served, body) = get_from(&env, "127.1.0.1", "/").await;
            assert_eq!(status, 200, "{body}");
            (served != "m3").then_some(())
        },
    )
    .await;
    set_ready(&env, ns, "m3", 2).await;
    served_by(
        &env,
        "127.1.0.1",
        "m3",
        "the Asian client back on m3 once ready",
    )
    .await;

    // At capacity (1 ready replica × 2 requests each), m2 spills to the next.
    set_ready(&env, ns, "m2", 1).await;
    eventually("m2's capacity down to 2", || async {
        let table = env.router.table();
        let route = table.ingress_route("shop.example.com", "/")?;
        let m2 = route.backends.iter().find(|b| b.cluster == "m2")?;
        (m2.capacity == 2).then_some(())
    })
    .await;
    let answers =
        futures::future::join_all((0..4).map(|_| get_from(&env, "127.2.0.1", "/slow"))).await;
    let mut served: Vec<&str> = answers
        .iter()
        .map(|(s, c, _)| {
            assert_eq!(*s, 200);
            c.as_str()
        })
        .collect();
    served.sort();
    assert_eq!(
        served.iter().filter(|c| **c == "m2").count(),
        2,
        "{served:?}"
    );
    set_ready(&env, ns, "m2", 2).await;

    // A hot-swapped rank plugin changes the routes, without a restart: the chaos
    // plugin ranks the members in reverse (m3, m2, m1) for everyone.
    served_by(
        &env,
        "127.2.0.1",
        "m2",
        "the US client on m2 before the swap",
    )
    .await;
    let tmp = env.plugin_dir.join("nearest-healthy.tmp");
    std::fs::write(&tmp, plugins::CHAOS).unwrap();
    std::fs::rename(&tmp, env.plugin_dir.join("nearest-healthy.wasm")).unwrap();
    served_by(
        &env,
        "127.2.0.1",
        "m3",
        "the US client on m3 after the swap",
    )
    .await;
    std::fs::remove_file(env.plugin_dir.join("nearest-healthy.wasm")).unwrap();
    served_by(
        &env,
        "127.2.0.1",
        "m2",
        "the US client back on m2 with the built-in",
    )
    .await;

    // Bad Ingress specs give an event and break nothing else.
    apply(&env, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "ghost", "namespace": ns},
        "spec": {"rules": [{"host": "ghost.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "ghost", "port": {"number": 80}}}},
            {"path": "/bucket", "pathType": "Prefix", "backend": {"resource": {"apiGroup": "example.com", "kind": "Bucket", "name": "b"}}}]}}]}}))
    .await;
    eventually("RouteProblem events about the ghost Ingress", || async {
        let notes: Vec<String> = events(&env, ns, "RouteProblem")
            .await
            .into_iter()
            .filter_map(|e| e.note)
            .collect();
        (notes
            .iter()
            .any(|n| n.contains("Service ghost does not exist"))
            && notes.iter().any(|n| n.contains("resource backend")))
        .then_some(())
    })
    .await;
    let (status, served, _) = get_from(&env, "127.2.0.1", "/").await;
    assert_eq!(
        (status, served.as_str()),
        (200, "m2"),
        "the good route still serves"
    );
}

// ---------------------------------------------------------------------------------
// DNS. The test plays each member's Deployment controller (ready replicas) and its
// cloud load-balancer controller (the member Service's `status.loadBalancer`).

/// One DNS query over UDP from a client at `source` (a loopback address the
/// locality table places), with an EDNS Client Subnet option when `subnet` is
/// given.
async fn dns_query(
    env: &Env,
    source: &str,
    name: &str,
    qtype: RecordType,
    subnet: Option<(&str, u8)>,
) -> Message {
    let mut query = Message::query();
    query.metadata.id = 4242;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some((ip, prefix)) = subnet {
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                ip.parse().unwrap(),
                prefix,
                0,
            )));
        query.set_edns(edns);
    }
    let socket = tokio::net::UdpSocket::bind((source, 0)).await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), env.dns)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no DNS answer to {name} {qtype} from {source}"))
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, 4242);
    assert!(
        !answer.metadata.recursion_available,
        "an authoritative-only server offers no recursion"
    );
    answer
}

/// The same over TCP (two-byte length, then the message).
async fn dns_query_tcp(env: &Env, name: &str, qtype: RecordType) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let bytes = query.to_vec().unwrap();
    let mut stream = tokio::net::TcpStream::connect(env.dns).await.unwrap();
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.unwrap();
    let n = stream.read_u16().await.unwrap();
    let mut body = vec![0u8; usize::from(n)];
    stream.read_exact(&mut body).await.unwrap();
    Message::from_vec(&body).unwrap()
}

/// The answer section as `TYPE data` strings.
fn records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect()
}

/// The answer to A `name` from a client in Asia.
async fn a_from_asia(env: &Env, name: &str) -> Vec<String> {
    records(&dns_query(env, "127.1.0.1", name, RecordType::A, None).await)
}

/// Queries A `name` from `source` until the answer is `want`.
async fn resolves_to(env: &Env, source: &str, name: &str, want: &[&str], what: &str) {
    eventually(what, || async {
        let m = dns_query(env, source, name, RecordType::A, None).await;
        (records(&m) == want).then_some(())
    })
    .await;
}

async fn dns_answers_with_the_closest_healthy_shard(env: Env) {
    let ns = "e2e-dns";
    namespace(&env, ns).await;
    apply(&env, deployment_manifest(ns, "web", 6, json!({}))).await;
    apply(
        &env,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
    )
    .await;
    eventually("web in every member", || async {
        (deployment_replicas(&env, ns, "web").await == [2, 2, 2]).then_some(())
    })
    .await;
    // Each member's controllers: replicas ready, a load-balancer address.
    for (i, (cluster, ..)) in MEMBERS.iter().enumerate() {
        set_ready(&env, ns, cluster, 2).await;
        set_lb_address(&env, ns, "web", cluster, &format!("192.0.2.{}", i + 1)).await;
    }
    let web = format!("web.{ns}.svc.clusterset.local.");
    // Each client gets the shard in its own region.
    resolves_to(&env, "127.1.0.1", &web, &["A 192.0.2.3"], "Asia → m3").await;
    resolves_to(&env, "127.2.0.1", &web, &["A 192.0.2.2"], "the US → m2").await;
    resolves_to(&env, "127.3.0.1", &web, &["A 192.0.2.1"], "Europe → m1").await;
    let m = dns_query(&env, "127.1.0.1", &web, RecordType::A, None).await;
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 5, "the default TTL");
    assert_eq!(m.answers[0].name.to_string(), web);
    // The same over TCP (from 127.0.0.1: nowhere the table knows).
    let m = dns_query_tcp(&env, &web, RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "{m:?}");
    // A resolver in Europe asking on behalf of a client in the US (ECS).
    let m = dns_query(
        &env,
        "127.3.0.1",
        &web,
        RecordType::A,
        Some(("127.2.0.0", 16)),
    )
    .await;
    assert_eq!(records(&m), ["A 192.0.2.2"]);

    // SRV for the named port; the target's address in the additional section.
    let srv = format!("_http._tcp.web.{ns}.svc.clusterset.local.");
    let m = dns_query(&env, "127.1.0.1", &srv, RecordType::SRV, None).await;
    assert_eq!(records(&m), [format!("SRV 0 100 80 {web}")]);
    let extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    assert_eq!(extra, [format!("{web} A 192.0.2.3")]);
    // The MCS schema version.
    let m = dns_query(
        &env,
        "127.1.0.1",
        "dns-version.clusterset.local.",
        RecordType::TXT,
        None,
    )
    .await;
    assert_eq!(records(&m), ["TXT 1.0.0"]);
    // Unknown inside the zone: NXDOMAIN with the SOA; outside: REFUSED.
    let m = dns_query(
        &env,
        "127.1.0.1",
        &format!("nope.{ns}.svc.clusterset.local."),
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let m = dns_query(&env, "127.1.0.1", "example.org.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());

    // The Federation names under --dns-zone example.com.
    let global = format!("web.{ns}.federation.svc.example.com.");
    let us = format!("web.{ns}.federation.svc.us-central1.example.com.");
    let eu_b = format!("web.{ns}.federation.svc.europe-west1-b.europe-west1.example.com.");
    let asia = format!("web.{ns}.federation.svc.asia-east1.example.com.");
    let asia_a = format!("web.{ns}.federation.svc.asia-east1-a.asia-east1.example.com.");
    assert_eq!(a_from_asia(&env, &global).await, ["A 192.0.2.3"]);
    assert_eq!(a_from_asia(&env, &us).await, ["A 192.0.2.2"]);
    assert_eq!(a_from_asia(&env, &eu_b).await, ["A 192.0.2.1"]);
    assert_eq!(a_from_asia(&env, &asia_a).await, ["A 192.0.2.3"]);

    // m3's replicas become unready: the Asian client moves to the next closest,
    // and m3's zone and region names point one level up.
    set_ready(&env, ns, "m3", 0).await;
    let moved = eventually("the Asian client moved off m3", || async {
        let m = dns_query(&env, "127.1.0.1", &web, RecordType::A, None).await;
        let got = records(&m);
        (got.len() == 1 && got[0] != "A 192.0.2.3").then_some(got)
    })
    .await;
    // The next closest is the one the rank hook puts second for Asia.
    let table = env.router.table();
    let route = table
        .service_route(ns, "web")
        .expect("a route for the Service");
    let asia_client = table.locality.locate("127.1.0.1".parse().unwrap());
    let next = route
        .ranked(&asia_client)
        .find(|b| b.healthy)
        .expect("a healthy shard");
    assert_eq!(moved, [format!("A {}", next.addresses[0])]);
    assert_eq!(
        a_from_asia(&env, &asia_a).await,
        [
            format!("CNAME {asia}"),
            format!("CNAME {global}"),
            format!("A {}", next.addresses[0])
        ]
    );
    set_ready(&env, ns, "m3", 2).await;
    resolves_to(&env, "127.1.0.1", &web, &["A 192.0.2.3"], "Asia back on m3").await;
}

// ---------------------------------------------------------------------------------
// Credentials.

const CANARY: &str = "fedwasm-canary-token-XYZ";

/// A kubeconfig for a member that does not answer, with `user` as its credentials.
fn canary_kubeconfig(user: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x"})
    .to_string()
}

/// Members whose Secrets hold the canary in every place a credential can be: a
/// token, a password, client key and certificate data, a malformed kubeconfig and
/// an `exec` argument. It appears in no Cluster status (read back from the
/// apiserver), no event, nothing the host logged and no admin API answer; a
/// federated Secret holding it (and its last-applied annotation) is propagated all
/// the same.
async fn credentials_never_leave_their_secrets(env: Env) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let pem = |kind: &str| format!("-----BEGIN {kind}-----\n{CANARY}\n-----END {kind}-----\n");
    let members = [
        ("canary-token", canary_kubeconfig(json!({"token": CANARY}))),
        (
            "canary-password",
            canary_kubeconfig(json!({"username": "admin", "password": CANARY})),
        ),
        (
            "canary-key",
            canary_kubeconfig(json!({
                "client-certificate-data": b64(&pem("CERTIFICATE")),
                "client-key-data": b64(&pem("PRIVATE KEY"))})),
        ),
        (
            "canary-key-b64",
            canary_kubeconfig(
                json!({"client-certificate-data": CANARY, "client-key-data": CANARY}),
            ),
        ),
        (
            "canary-malformed",
            format!(
                "apiVersion: v1\nusers:\n- name: u\n  user:\n    token: {CANARY}\n  : [{CANARY}\n"
            ),
        ),
        (
            "canary-exec",
            canary_kubeconfig(json!({"exec": {"command": "echo", "args": [CANARY],
                "apiVersion": "client.authentication.k8s.io/v1"}})),
        ),
    ];
    let secrets: Api<Secret> = Api::namespaced(env.fed.clone(), "fedwasm-system");
    let clusters: Api<Cluster> = Api::all(env.fed.clone());
    for (name, kubeconfig) in &members {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "fedwasm-system"},
            "stringData": {"kubeconfig": kubeconfig}});
        secrets
            .patch(name, &apply_params(), &Patch::Apply(&secret))
            .await
            .unwrap();
        let cluster = json!({"apiVersion": "fedwasm.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name}, "spec": {"secretRef": name, "region": "nowhere"}});
        clusters
            .patch(name, &apply_params(), &Patch::Apply(&cluster))
            .await
            .unwrap();
    }
    // A federated Secret holding the canary, as `kubectl apply` leaves it.
    let ns = "e2e-canary";
    namespace(&env, ns).await;
    let data = json!({"password": b64(CANARY)});
    let last_applied = json!({"apiVersion": "v1", "kind": "Secret", "data": data}).to_string();
    apply(
        &env,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": ns, "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": last_applied}},
            "data": data}),
    )
    .await;
    eventually("the federated Secret in m1", || async {
        Api::<Secret>::namespaced(env.members["m1"].clone(), ns)
            .get_opt("db")
            .await
            .ok()
            .flatten()
    })
    .await;
    // Every canary member probed, none Ready, each with a reason.
    let statuses = eventually("every canary member probed", || async {
        let mut out = BTreeMap::new();
        for (name, _) in &members {
            let c = clusters.get(name).await.ok()?;
            let status = c.status?;
            status.message.as_ref()?;
            out.insert(name.to_string(), status);
        }
        Some(out)
    })
    .await;
    for (name, status) in &statuses {
        assert_ne!(status.phase.as_deref(), Some("Ready"), "{name}");
    }
    let message = |name: &str| statuses[name].message.clone().unwrap_or_default();
    assert!(
        message("canary-malformed").contains("line"),
        "{}",
        message("canary-malformed")
    );
    assert!(
        message("canary-exec").contains("--allow-unsafe-kubeconfig"),
        "{}",
        message("canary-exec")
    );
    // Events about the objects placed on the canary members (MemberUnreachable).
    eventually("events about the canary members", || async {
        let all = Api::<Event>::all(env.fed.clone())
            .list(&ListParams::default())
            .await
            .ok()?;
        all.items
            .iter()
            .any(|e| e.note.as_deref().unwrap_or("").contains("canary-"))
            .then_some(())
    })
    .await;
    // The host's admin API.
    let admin = env.admin;
    let mut answers = String::new();
    for path in [
        "/plugins", "/routes", "/metrics", "/healthz", "/shadow", "/leader",
    ] {
        let r = reqwest::get(format!("http://{admin}{path}")).await.unwrap();
        assert!(r.status().is_success(), "{path}");
        answers.push_str(&r.text().await.unwrap());
    }
    let plan = json!({"hook": "select",
        "object": {"kind": "Secret", "namespace": ns, "name": "db", "labels": {},
            "annotations": {"note": CANARY}},
        "clusters": [{"name": "canary-token", "region": "", "zone": "", "labels": {}, "ready": false}]});
    let r = reqwest::Client::new()
        .post(format!("http://{admin}/plan"))
        .body(plan.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // Read everything back.
    let statuses = serde_json::to_string(
        &clusters
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| &c.status)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let events = serde_json::to_string(
        &Api::<Event>::all(env.fed.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    let log = env.log.text();
    assert!(log.contains("canary-malformed"), "the log is captured");
    for (place, text) in [
        ("Cluster status", &statuses),
        ("events", &events),
        ("the host's log", &log),
        ("the admin API", &answers),
    ] {
        let at = text.find(CANARY);
        assert!(
            at.is_none(),
            "the canary is in {place}: ...{}...",
            &text[at.unwrap().saturating_sub(300)..]
                [..(300 + CANARY.len()).min(text.len() - at.unwrap().saturating_sub(300))]
        );
    }
    // Leave the federation as it was.
    for (name, _) in &members {
        let _ = clusters.delete(name, &DeleteParams::default()).await;
        let _ = secrets.delete(name, &DeleteParams::default()).await;
    }
}
