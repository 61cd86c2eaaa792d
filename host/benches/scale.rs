//! Scale: many members, thousands of federated objects of mixed kinds (ConfigMaps,
//! Secrets, headless Services, Deployments with preferences), against real
//! apiservers, with `fedwasm run` as its own process so its memory and CPU are its
//! own.
//!
//! Figures, each beside its baseline from the same run:
//! - convergence: the time until every member has every object, fedwasm against the
//!   bench client writing the same objects straight into every member;
//! - the host's peak RSS and CPU while converging, and its CPU, RSS and member
//!   writes per second in the steady state afterwards;
//! - drift: how long until a copy deleted or edited by hand in a member is set right;
//! - a swap to a distribute plugin that moves one replica of every Deployment (the
//!   same algorithm, ties broken the other way): how long until every object is
//!   placed again, and how many member writes it took;
//! - a reload of the distribute plugin with the same decisions: how long until every
//!   object was placed again, and how many member writes it made (none should be).
//!
//! `cargo bench -p fedwasm-host --bench scale` (needs the test apiservers:
//! `scripts/install-testenv.sh`). Environment: `FEDWASM_SCALE_MEMBERS` (default 30),
//! `FEDWASM_SCALE_OBJECTS` (default 5000), `FEDWASM_SCALE_LOG` (keep the host's log
//! there), `FEDWASM_SCALE_WRAP` (run the host under a command, such as
//! `heaptrack -o FILE`; the CPU and RSS figures are then the wrapper's). About
//! 330 MB of memory per member.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedwasm_host::fleet::cluster::Cluster;
use fedwasm_host::fleet::join;
use fedwasm_testenv::{FederationSpec, LocalFederation, FEDERATION};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use serde_json::{json, Value};

const IN_FLIGHT: usize = 32;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Object `i` of the mix: 2 in 5 ConfigMaps, then a Secret, a headless Service
/// (no cluster IP to allocate) and a Deployment spread by preferences: one replica
/// per member (`minReplicas`) and the extra one where the tie-break puts it.
fn object(ns: &str, i: usize, members: usize) -> Value {
    let meta = |name: String| json!({"name": name, "namespace": ns});
    match i % 5 {
        0 | 1 => {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(format!("cm-{i}")),
                "data": {"index": i.to_string()}})
        }
        2 => json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(format!("secret-{i}")),
                "type": "Opaque", "stringData": {"index": i.to_string()}}),
        3 => json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(format!("svc-{i}")),
                "spec": {"clusterIP": "None", "selector": {"app": format!("a{i}")},
                         "ports": [{"port": 80, "protocol": "TCP"}]}}),
        _ => {
            let mut m = meta(format!("deploy-{i}"));
            m["annotations"] = json!({
                "federation.kubernetes.io/replica-set-preferences":
                    r#"{"rebalance": true, "clusters": {"*": {"minReplicas": 1, "weight": 1}}}"#});
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": m,
                "spec": {"replicas": members + 1,
                    "selector": {"matchLabels": {"app": format!("a{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("a{i}")}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
        }
    }
}

fn resource(manifest: &Value) -> ApiResource {
    let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: manifest["apiVersion"].as_str().unwrap().into(),
        kind: manifest["kind"].as_str().unwrap().into(),
    })
    .unwrap();
    ApiResource::from_gvk(&gvk)
}

async fn apply(client: &Client, manifest: &Value) {
    let ns = manifest["metadata"]["namespace"].as_str().unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(manifest));
    api.patch(
        name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(manifest),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {ns}/{name}: {e}"));
}

async fn namespace(client: &Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
        )
        .await
        .unwrap();
}

/// fedwasm's copies in `ns` of `client`, of every kind of the mix.
/// For each Deployment `deploy-{5k+4}`, the member that runs its extra replica
/// (the one with two), as the members' copies say.
async fn moved_extra_replicas(members: &[Client], deployments: usize) -> Vec<Option<usize>> {
    let mut extra = vec![None; deployments];
    for (m, client) in members.iter().enumerate() {
        let api: Api<Deployment> = Api::namespaced(client.clone(), "scale");
        let list = api
            .list(&Default::default())
            .await
            .expect("listing Deployments");
        for d in list.items {
            let index = d
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix("deploy-"))
                .and_then(|i| i.parse::<usize>().ok())
                .map(|i| i / 5);
            let two = d.spec.and_then(|s| s.replicas) == Some(2);
            if let (Some(i), true) = (index, two) {
                if let Some(slot) = extra.get_mut(i) {
                    *slot = Some(m);
                }
            }
        }
    }
    extra
}

async fn count(client: &Client, ns: &str) -> usize {
    let lp = ListParams::default().labels("fedwasm.io/managed-by=fedwasm");
    let kinds = [
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<Deployment>(&()),
    ];
    let mut n = 0;
    for kind in &kinds {
        n += Api::<DynamicObject>::namespaced_with(client.clone(), ns, kind)
            .list_metadata(&lp)
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
    }
    n
}

/// `fedwasm run` as its own process.
struct Host {
    child: Child,
    admin: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn start(kubeconfig: &Path, plugins: &Path, log: &Path) -> Host {
        // FEDWASM_SCALE_WRAP: a command the host runs under, e.g. `heaptrack -o FILE`
        // for a heap profile of the whole run.
        let wrap = std::env::var("FEDWASM_SCALE_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(env!("CARGO_BIN_EXE_fedwasm"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_fedwasm")),
        };
        let mut child = command
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--plugins")
            .arg(plugins)
            .args(["--admin", "127.0.0.1:0", "--no-cache"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("fedwasm run starts");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let admin = loop {
            let line = lines.next().expect("an admin address").unwrap();
            if let Some(url) = line.strip_prefix("admin API: ") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Host { child, admin }
    }

    /// CPU seconds used so far (user + system).
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // After the command name: state is field 0, utime 11, stime 12.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// (RSS now, peak RSS) in MB.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn metric(&self, name: &str) -> f64 {
        self.series(name).await.values().sum()
    }

    /// Member writes so far, by verb.
    async fn writes_by_verb(&self) -> BTreeMap<String, f64> {
        let mut by_verb = BTreeMap::new();
        for (series, n) in self.series("fedwasm_member_writes_total").await {
            let verb = series
                .split("verb=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("?")
                .to_string();
            *by_verb.entry(verb).or_default() += n;
        }
        by_verb
    }

    /// Every series of metric `name`, by its labels.
    async fn series(&self, name: &str) -> BTreeMap<String, f64> {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse::<f64>().ok()?))
            })
            .collect()
    }
}

async fn until<F, Fut>(what: &str, limit: Duration, poll: Duration, check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(poll).await;
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let members_n = env_usize("FEDWASM_SCALE_MEMBERS", 30);
    let objects = env_usize("FEDWASM_SCALE_OBJECTS", 5000);
    let names: Vec<String> = (1..=members_n).map(|i| format!("m{i:02}")).collect();
    eprintln!("[scale] starting a federation plane and {members_n} members");
    let spec = FederationSpec {
        members: names.clone(),
        ..Default::default()
    };
    let local = tokio::task::spawn_blocking(move || LocalFederation::start(spec))
        .await
        .unwrap()
        .expect("local federation");
    let kubeconfig = local.kubeconfig_path();
    let client = |context: String| {
        let kubeconfig = kubeconfig.clone();
        async move {
            fedwasm_host::app::kube_client(Some(&kubeconfig), &context)
                .await
                .unwrap()
        }
    };
    let fed = client(FEDERATION.to_string()).await;
    let mut members = Vec::new();
    for name in &names {
        let request = join::JoinRequest {
            name: name.clone(),
            ..Default::default()
        };
        join::join_context(&fed, &kubeconfig, &request)
            .await
            .expect("join");
        members.push(client(name.clone()).await);
    }
    let manifests = |ns: &'static str| (0..objects).map(move |i| object(ns, i, members_n));

    // Baseline: the same objects straight into every member, each object into all
    // members at once, 32 objects in flight.
    eprintln!("[scale] direct: {objects} objects into {members_n} members");
    for m in &members {
        namespace(m, "direct").await;
    }
    let start = Instant::now();
    futures::stream::iter(manifests("direct"))
        .for_each_concurrent(IN_FLIGHT, |manifest| {
            let members = &members;
            async move {
                futures::future::join_all(members.iter().map(|m| apply(m, &manifest))).await;
            }
        })
        .await;
    let direct = start.elapsed();

    // fedwasm: the host as its own process.
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // The host's log: FEDWASM_SCALE_LOG keeps it (with RUST_LOG for its detail).
    let log = std::env::var_os("FEDWASM_SCALE_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| work.path().join("host.log"));
    let host = Host::start(&kubeconfig, &plugins, &log);
    let clusters: Api<Cluster> = Api::all(fed.clone());
    until(
        "every member Ready",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            clusters
                .list(&ListParams::default())
                .await
                .is_ok_and(|l| l.items.len() == members_n && l.items.iter().all(|c| c.is_ready()))
        },
    )
    .await;
    namespace(&fed, "scale").await;
    let idle_cpu = host.cpu();
    eprintln!("[scale] fedwasm: {objects} objects into the federation plane");
    let start = Instant::now();
    futures::stream::iter(manifests("scale"))
        .for_each_concurrent(IN_FLIGHT, |manifest| {
            let fed = &fed;
            async move { apply(fed, &manifest).await }
        })
        .await;
    let created = start.elapsed();
    let mut pending: Vec<usize> = (0..members_n).collect();
    let mut peak_rss: f64 = 0.0;
    while !pending.is_empty() {
        peak_rss = peak_rss.max(host.rss().0);
        let mut still = Vec::new();
        for i in pending {
            if count(&members[i], "scale").await < objects {
                still.push(i);
            }
        }
        pending = still;
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "fedwasm did not converge in an hour"
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let converged = start.elapsed();
    let converge_cpu = host.cpu() - idle_cpu;
    peak_rss = peak_rss.max(host.rss().1);

    // Steady state: let the last status writes settle, then watch for 30 s.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (writes0, cpu0) = (host.metric("fedwasm_member_writes_total").await, host.cpu());
    let window = Duration::from_secs(30);
    tokio::time::sleep(window).await;
    let (writes1, cpu1) = (host.metric("fedwasm_member_writes_total").await, host.cpu());
    let steady_rss = host.rss().0;

    // Drift, at full scale: a ConfigMap deleted and a Deployment scaled by hand.
    let cm: Api<ConfigMap> = Api::namespaced(members[0].clone(), "scale");
    cm.delete("cm-0", &DeleteParams::default()).await.unwrap();
    let deleted_back = until(
        "cm-0 restored",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async { cm.get_opt("cm-0").await.ok().flatten().is_some() },
    )
    .await;
    let deploy: Api<Deployment> = Api::namespaced(members[members_n - 1].clone(), "scale");
    let want = deploy.get("deploy-4").await.unwrap().spec.unwrap().replicas;
    deploy
        .patch(
            "deploy-4",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 77}})),
        )
        .await
        .unwrap();
    let edited_back = until(
        "deploy-4 set right",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async {
            deploy
                .get("deploy-4")
                .await
                .is_ok_and(|d| d.spec.and_then(|s| s.replicas) == want)
        },
    )
    .await;

    // A reload of the distribute plugin with the same decisions: every object is
    // placed again; nothing should be written.
    let placed0 = host.metric("fedwasm_propagations_total").await;
    let writes_before = host.metric("fedwasm_member_writes_total").await;
    std::fs::write(
        plugins.join("weighted-spread.wasm"),
        fedwasm_host::runtime::built_in_bytes("weighted-spread").unwrap(),
    )
    .unwrap();
    let replaced = until(
        "every object placed again",
        Duration::from_secs(1800),
        Duration::from_millis(200),
        || async { host.metric("fedwasm_propagations_total").await - placed0 >= objects as f64 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reload_writes = host.metric("fedwasm_member_writes_total").await - writes_before;

    // A swap to a plugin that moves one replica of every Deployment: the same
    // algorithm with ties broken the other way, so the extra replica of each
    // Deployment (members + 1 over members) lands on another cluster. Only the two
    // members whose count changed should be written, for each Deployment.
    println!("[scale] building weighted-spread with ties reversed");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("wasm-bench-plugins")))
        .unwrap_or_else(|| work.path().join("wasm"));
    let reversed = fedwasm_pluginbuild::build_component(
        std::path::Path::new(&cargo),
        &fedwasm_pluginbuild::PluginCrate {
            dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/weighted-spread"),
            package: "weighted-spread".into(),
            features: vec!["ties-reversed".into()],
        },
        &target,
    )
    .expect("building weighted-spread with ties reversed");
    let deployments = objects / 5;
    let moved_before = moved_extra_replicas(&members, deployments).await;
    let placed0 = host.metric("fedwasm_propagations_total").await;
    let writes_before = host.metric("fedwasm_member_writes_total").await;
    let verbs_before = host.writes_by_verb().await;
    std::fs::write(plugins.join("weighted-spread.wasm"), reversed).unwrap();
    let swapped = until(
        "every object placed again by the other plugin",
        Duration::from_secs(1800),
        Duration::from_millis(200),
        || async { host.metric("fedwasm_propagations_total").await - placed0 >= objects as f64 },
    )
    .await;
    let settled = until(
        "the member writes of the swap done",
        Duration::from_secs(600),
        Duration::from_secs(2),
        || async {
            let w = host.metric("fedwasm_member_writes_total").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            host.metric("fedwasm_member_writes_total").await == w
        },
    )
    .await;
    let swap_writes = host.metric("fedwasm_member_writes_total").await - writes_before;
    let mut swap_verbs = host.writes_by_verb().await;
    for (verb, n) in &verbs_before {
        *swap_verbs.entry(verb.clone()).or_default() -= n;
    }
    swap_verbs.retain(|_, n| *n > 0.0);
    let moved_after = moved_extra_replicas(&members, deployments).await;
    let moved = moved_before
        .iter()
        .zip(&moved_after)
        .filter(|(a, b)| a != b)
        .count();

    let (_, peak_after) = host.rss();
    println!(
        "members={members_n} objects={objects} (2/5 ConfigMaps, 1/5 Secrets, 1/5 headless Services, 1/5 Deployments with preferences)\n\
         convergence   : fedwasm {:>7.1} s (creates in the plane took {:.1} s)   direct {:>7.1} s   ratio direct/fedwasm {:.2}\n\
         host, converging: {:.1} CPU s ({:.0}% of a core), peak RSS {:.0} MB\n\
         steady state  : {:.2} member writes/s, CPU {:.2}% of a core, RSS {:.0} MB (peak over the run {:.0} MB)\n\
         drift         : a deleted ConfigMap back in {:.2} s, a Deployment scaled by hand set right in {:.2} s\n\
         reload, same decisions: every object placed again in {:.1} s, {} member writes\n\
         swap moving one replica of each Deployment: every object placed again in {:.1} s (member writes done {:.1} s later), \
         {} member writes ({:?}) for {} Deployments whose extra replica moved (of {})",
        converged.as_secs_f64(),
        created.as_secs_f64(),
        direct.as_secs_f64(),
        direct.as_secs_f64() / converged.as_secs_f64(),
        converge_cpu,
        100.0 * converge_cpu / converged.as_secs_f64(),
        peak_rss,
        (writes1 - writes0) / window.as_secs_f64(),
        100.0 * (cpu1 - cpu0) / window.as_secs_f64(),
        steady_rss,
        peak_after,
        deleted_back.as_secs_f64(),
        edited_back.as_secs_f64(),
        replaced.as_secs_f64(),
        reload_writes,
        swapped.as_secs_f64(),
        settled.as_secs_f64(),
        swap_writes,
        swap_verbs,
        moved,
        deployments,
    );
    drop(host);
    drop(local);
}
