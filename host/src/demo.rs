//! `fedwasm demo`: the 2016 Kubernetes Federation walk-through, replayed and
//! narrated on a local nine-cluster federation of real kube-apiservers, each step
//! printed with its outcome and checked.
//!
//! No kubelet runs in the local clusters: the clearly named workload simulator plays
//! the members' controllers and their pods (one small HTTP backend per cluster on
//! loopback). Clients in different places are loopback source addresses the
//! locality table places in Asia (127.1.x.x), the US (127.2.x.x) and Europe
//! (127.3.x.x).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use fedwasm_host::app::{kube_client, App, AppConfig, FederationTarget};
use fedwasm_host::dns::DnsConfig;
use fedwasm_host::fleet::cluster::Cluster;
use fedwasm_pluginbuild::{build_component, PluginCrate};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::cli::{DemoArgs, Layout};
use crate::dev;
use crate::simulator::Simulator;

/// The walk-through's global site (examples/global-nginx), carried by the binary.
const GLOBAL_NGINX: &str = include_str!("../../examples/global-nginx/global-nginx.yaml");
/// The tutorial plugin, built from source when the demo swaps it in.
const AGGREGATE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/plugins/aggregate");

const ASIA: &str = "127.1.0.1";
const US: &str = "127.2.0.1";
const EUROPE: &str = "127.3.0.1";
const LOCALITY: &str = r#"{"clients": [
  {"cidr": "127.1.0.0/16", "region": "asia-east1", "zone": "asia-east1-a"},
  {"cidr": "127.2.0.0/16", "region": "us-central1", "zone": "us-central1-b"},
  {"cidr": "127.3.0.0/16", "region": "europe-west1", "zone": "europe-west1-c"}]}
"#;

/// Checks made so far; the demo fails if any did not hold.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn step(&self, title: &str) {
        note!("\n[demo] {title}");
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        note!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failed.push(what);
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    if args.dir.join("state.json").exists() {
        // A demo left behind by a killed terminal would hold the directory.
        if let Ok(old) = fedwasm_testenv::LocalFederation::attach(&args.dir) {
            note!(
                "[demo] stopping the local federation left in {}",
                args.dir.display()
            );
            let _ = old.down();
        }
    }
    let specs = dev::layout(Some(Layout::Seed), 0);
    let fed = dev::start_local(&args.dir, &specs)?;
    let kubeconfig = fed.kubeconfig_path();
    let plugins = args.dir.join("plugins");
    std::fs::create_dir_all(&plugins).context("creating the plugin directory")?;
    let locality = args.dir.join("locality.json");
    std::fs::write(&locality, LOCALITY).context("writing the locality table")?;
    let app = App::build(AppConfig {
        runtime: args.runtime.config(),
        plugins: Some(plugins.clone()),
        admin: args.admin.clone(),
        ingress: Some(args.ingress.clone()),
        dns: DnsConfig {
            addr: Some(args.dns.clone()),
            ..Default::default()
        },
        locality: Some(locality),
        federation: Some(FederationTarget::Kubeconfig {
            kubeconfig: kubeconfig.clone(),
            context: "federation".into(),
        }),
        ..Default::default()
    })?;
    let result = crate::serve::block_on(walk(app, &args, &kubeconfig, &plugins, started))?;
    note!("\n[demo] stopping the local federation");
    fed.down().context("stopping the local federation")?;
    result
}

async fn walk(
    app: App,
    args: &DemoArgs,
    kubeconfig: &Path,
    plugins: &Path,
    started: Instant,
) -> Result<()> {
    let serving = app.start().await?;
    let ingress = serving.ingress.context("the ingress did not start")?;
    let admin = serving.admin;
    let dns = serving.dns.context("the DNS front door did not start")?;
    let fed = kube_client(Some(kubeconfig), "federation").await?;
    let simulator = Simulator::start(kubeconfig, "federation").await?;
    let mut c = Checks::default();
    let steps_started = Instant::now();

    c.step("1. Nine clusters in three regions joined the federation");
    let clusters: Api<Cluster> = Api::all(fed.clone());
    let ready = wait(Duration::from_secs(60), || async {
        let list = clusters.list(&ListParams::default()).await.ok()?;
        (list.items.iter().filter(|c| c.is_ready()).count() == 9).then_some(list.items)
    })
    .await;
    c.check(
        ready.is_some(),
        "kubectl --context federation get clusters: 9 clusters Ready",
    );
    for cl in ready.iter().flatten() {
        note!(
            "       {:<20} {:<14} {}",
            cl.name_any(),
            cl.spec.region.as_deref().unwrap_or(""),
            cl.spec.zone.as_deref().unwrap_or("")
        );
    }

    c.step("2. The global site, created once in the federation (examples/global-nginx)");
    for (kind, name) in apply_manifests(&fed, GLOBAL_NGINX).await? {
        note!("       {kind}/{name} created");
    }
    let everywhere = wait(Duration::from_secs(60), || async {
        placed_everywhere(kubeconfig, &fed)
            .await
            .ok()
            .filter(|n| *n == 9)
    })
    .await;
    c.check(
        everywhere.is_some(),
        "the ConfigMap, ReplicaSet, Service and Ingress are in all 9 members (the ConfigMap too, which 2016 could not federate)",
    );
    let table = wait(Duration::from_secs(60), || async {
        replicas(&fed)
            .await
            .filter(|t| t.values().sum::<u64>() == 9 && t.len() == 9)
    })
    .await;
    c.check(
        table.is_some(),
        "the 9 replicas are spread evenly: one per cluster",
    );
    print_replicas(table.as_ref());

    c.step("3. One entry point: each client is sent to the closest cluster");
    for (client, region) in [
        (ASIA, "asia-east1"),
        (US, "us-central1"),
        (EUROPE, "europe-west1"),
    ] {
        let answer = wait(Duration::from_secs(60), || async {
            let a = get(client, ingress).await.ok()?;
            (a.0 == 200 && a.2.contains(region)).then_some(a)
        })
        .await;
        match &answer {
            Some((_, cluster, body)) => note!(
                "       curl --interface {client} http://{ingress}/  ->  {} [{cluster}]",
                body.trim()
            ),
            None => note!(
                "       curl --interface {client} http://{ingress}/  ->  no answer from {region}"
            ),
        }
        c.check(
            answer.is_some(),
            format!("the client at {client} is served from {region}"),
        );
    }

    let name = "nginx.default.svc.clusterset.local";
    let answer = wait(Duration::from_secs(60), || async {
        let ips = resolve(ASIA, dns, name).await.ok()?;
        let cluster = cluster_of(&fed, ips.first()?).await?;
        cluster
            .starts_with("gce-asia-east1")
            .then_some((ips, cluster))
    })
    .await;
    if let Some((ips, cluster)) = &answer {
        note!(
            "       dig -b {ASIA} @{} -p {} {name}  ->  {ips:?} [{cluster}]",
            dns.ip(),
            dns.port()
        );
    }
    c.check(
        answer.is_some(),
        "DNS gives the Asian client its closest shard too",
    );

    c.step("4. An outage: the Asian clusters' backends stop answering");
    let stopped = simulator.stop_backends("asia-east1");
    note!("       stopped the backends of {}", stopped.join(", "));
    let mut failures = 0;
    let mut served = BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        match get(ASIA, ingress).await {
            Ok((200, cluster, _)) => *served.entry(cluster).or_default() += 1,
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    note!("       30 requests from Asia during the outage: served by {served:?}");
    c.check(
        failures == 0,
        format!("no failed request from Asia during the outage ({failures} failed)"),
    );
    c.check(
        !served.keys().any(|k| k.starts_with("gce-asia-east1")),
        "the Asian client moved to the next closest region",
    );
    simulator.restart_backends("asia-east1").await?;
    let back = wait(Duration::from_secs(60), || async {
        let a = get(ASIA, ingress).await.ok()?;
        (a.0 == 200 && a.1.starts_with("gce-asia-east1")).then_some(a.1)
    })
    .await;
    c.check(
        back.is_some(),
        "the backends are back: the Asian client is served from Asia again",
    );

    c.step("5. Replica preferences, as in the walk-through: us-central1-a weighs 4, the others 1");
    let prefs = r#"{"rebalance": true, "clusters": {"gce-us-central1-a": {"weight": 4}, "*": {"weight": 1}}}"#;
    let rs: Api<ReplicaSet> = Api::namespaced(fed.clone(), "default");
    rs.patch(
        "nginx",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            "federation.kubernetes.io/replica-set-preferences": prefs}}})),
    )
    .await
    .context("annotating the ReplicaSet")?;
    note!("       kubectl annotate rs nginx federation.kubernetes.io/replica-set-preferences='{prefs}'");
    let weighted = wait(Duration::from_secs(60), || async {
        replicas(&fed)
            .await
            .filter(|t| t.get("gce-us-central1-a") == Some(&3) && t.values().sum::<u64>() == 9)
    })
    .await;
    c.check(
        weighted.is_some(),
        "gce-us-central1-a runs 3 of the 9 replicas",
    );
    print_replicas(weighted.as_ref());

    c.step(
        "6. A new placement policy, hot-swapped: the aggregate plugin (examples/plugins/aggregate)",
    );
    note!("       building it for wasm32-unknown-unknown ...");
    let component = build_aggregate(&args.dir).await?;
    let file = plugins.join("weighted-spread.wasm");
    let tmp = plugins.join("weighted-spread.wasm.tmp");
    std::fs::write(&tmp, &component).context("writing the plugin")?;
    std::fs::rename(&tmp, &file).context("swapping the plugin in")?;
    note!("       cp aggregate.wasm {}  (no restart)", file.display());
    let aggregated = wait(Duration::from_secs(60), || async {
        replicas(&fed)
            .await
            .filter(|t| t.values().filter(|n| **n > 0).count() < 6 && t.values().sum::<u64>() == 9)
    })
    .await;
    c.check(
        aggregated.is_some(),
        "the replicas moved into as few clusters as possible",
    );
    print_replicas(aggregated.as_ref());
    let asia = wait(Duration::from_secs(60), || async {
        let a = get(ASIA, ingress).await.ok()?;
        let holds = aggregated.as_ref()?.get(&a.1).copied().unwrap_or(0) > 0;
        (a.0 == 200 && holds).then_some(a)
    })
    .await;
    if let Some((_, cluster, body)) = &asia {
        note!("       the Asian client now: {} [{cluster}]", body.trim());
    }
    c.check(
        asia.is_some(),
        "the routes follow: clients go to the clusters that now run the site",
    );

    note!(
        "\n[demo] {} checks failed; the steps took {:.1}s ({:.1}s in all)",
        c.failed.len(),
        steps_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if args.exit {
        drop(simulator);
        serving.stop().await?;
        if !c.failed.is_empty() {
            bail!(
                "{} demo check(s) failed: {}",
                c.failed.len(),
                c.failed.join("; ")
            );
        }
        return Ok(());
    }
    let k = format!("kubectl --kubeconfig {}", kubeconfig.display());
    note!(
        "\n[demo] Explore (Ctrl-C stops everything):
  {k} --context federation get clusters
  {k} --context federation get rs,svc,ingress,configmap
  {k} --context gce-asia-east1-a get rs nginx
  curl --interface {ASIA} http://{ingress}/     # a client in Asia
  curl --interface {US} http://{ingress}/     # a client in the US
  dig -b {ASIA} @{dns_ip} -p {dns_port} nginx.default.svc.clusterset.local
  curl http://{admin}/routes                # the rankings in effect
  rm {}   # back to the built-in weighted-spread",
        file.display(),
        dns_ip = dns.ip(),
        dns_port = dns.port(),
    );
    let result = serving.wait().await;
    drop(simulator);
    result
}

/// The A records of `name` for a client at `source`, over UDP.
async fn resolve(source: &str, dns: std::net::SocketAddr, name: &str) -> Result<Vec<IpAddr>> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let socket = tokio::net::UdpSocket::bind((source, 0)).await?;
    socket.send_to(&query.to_vec()?, dns).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await??;
    let answer = Message::from_vec(&buf[..n])?;
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect())
}

/// The member whose copy of the nginx Service has load-balancer address `ip`.
async fn cluster_of(fed: &Client, ip: &IpAddr) -> Option<String> {
    let svc: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(fed.clone(), "default");
    let nginx = svc.get("nginx").await.ok()?;
    let placement: BTreeMap<String, Value> =
        serde_json::from_str(nginx.annotations().get("fedwasm.io/placement")?).ok()?;
    placement.into_iter().find_map(|(cluster, e)| {
        let addresses = e["addresses"].as_array()?;
        addresses
            .iter()
            .any(|a| a.as_str() == Some(ip.to_string().as_str()))
            .then_some(cluster)
    })
}

/// Polls `check` every 250 ms until it answers, for at most `limit`.
async fn wait<T, F, Fut>(limit: Duration, check: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One GET through the ingress from a client at `source`: (status, cluster, body).
async fn get(source: &str, ingress: std::net::SocketAddr) -> Result<(u16, String, String)> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(source.parse::<IpAddr>()?));
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
    let request =
        hyper::Request::get(format!("http://{ingress}/")).body(http_body_util::Empty::new())?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await??;
    let status = response.status().as_u16();
    let cluster = response
        .headers()
        .get(fedwasm_host::ingress::CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, cluster, String::from_utf8_lossy(&body).into_owned()))
}

/// Server-side applies every document of `yaml` in the federation plane; returns
/// (kind, name) of each.
async fn apply_manifests(fed: &Client, yaml: &str) -> Result<Vec<(String, String)>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("parsing the manifests")?;
    let mut out = Vec::new();
    for doc in docs.into_iter().filter(|d| d.is_object()) {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let plural = match kind.as_str() {
            "Ingress" => "ingresses".to_string(),
            k => format!("{}s", k.to_lowercase()),
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &kind),
            &plural,
        );
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let api: Api<DynamicObject> = Api::namespaced_with(fed.clone(), ns, &resource);
        api.patch(
            &name,
            &PatchParams::apply("fedwasm-demo").force(),
            &Patch::Apply(&doc),
        )
        .await
        .with_context(|| format!("applying {kind} {name}"))?;
        out.push((kind.to_lowercase(), name));
    }
    Ok(out)
}

/// How many members have all four objects of the global site.
async fn placed_everywhere(kubeconfig: &Path, fed: &Client) -> Result<usize> {
    let clusters: Api<Cluster> = Api::all(fed.clone());
    let mut n = 0;
    for cluster in clusters.list(&ListParams::default()).await?.items {
        let member = kube_client(Some(kubeconfig), &cluster.name_any()).await?;
        let mut all = true;
        for (version, kind, plural) in [
            ("v1", "ConfigMap", "configmaps"),
            ("apps/v1", "ReplicaSet", "replicasets"),
            ("v1", "Service", "services"),
            ("networking.k8s.io/v1", "Ingress", "ingresses"),
        ] {
            let (group, v) = version.rsplit_once('/').unwrap_or(("", version));
            let resource =
                ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, v, kind), plural);
            let api: Api<DynamicObject> =
                Api::namespaced_with(member.clone(), "default", &resource);
            let name = if kind == "ConfigMap" {
                "zone-fetch"
            } else {
                "nginx"
            };
            all &= api.get_opt(name).await?.is_some();
        }
        n += usize::from(all);
    }
    Ok(n)
}

/// Replicas of the global site per cluster, from fedwasm's placement record.
async fn replicas(fed: &Client) -> Option<BTreeMap<String, u64>> {
    let rs: Api<ReplicaSet> = Api::namespaced(fed.clone(), "default");
    let nginx = rs.get("nginx").await.ok()?;
    let placement: BTreeMap<String, Value> =
        serde_json::from_str(nginx.annotations().get("fedwasm.io/placement")?).ok()?;
    Some(
        placement
            .into_iter()
            .map(|(c, e)| (c, e["replicas"].as_u64().unwrap_or(0)))
            .collect(),
    )
}

fn print_replicas(table: Option<&BTreeMap<String, u64>>) {
    for (cluster, n) in table.into_iter().flatten() {
        note!(
            "       {cluster:<20} {}",
            "#".repeat(*n as usize).to_string() + &format!(" {n}")
        );
    }
}

/// Builds the tutorial plugin into a component (cargo and the wasm target needed).
async fn build_aggregate(dir: &Path) -> Result<Vec<u8>> {
    let target = dir.join("plugin-build");
    tokio::task::spawn_blocking(move || {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let krate = PluginCrate {
            dir: Path::new(AGGREGATE_DIR).to_path_buf(),
            package: "aggregate".into(),
            features: Vec::new(),
        };
        build_component(Path::new(&cargo), &krate, &target)
            .context("building examples/plugins/aggregate")
    })
    .await?
}
