//! Propagation against real apiservers: time from create in the federation plane to
//! present in every member (p50, p99) and objects per second, at 3 and 9 members.
//!
//! Two runs each: a burst (throughput; latencies include queueing behind the other
//! objects) and a paced run at a steady rate (per-object latency).
//!
//! Baseline, run side by side on the same clusters: the bench client itself
//! server-side-applies each object straight into every member (no federation, no
//! watch, no plugin) — the least work any propagation can do. The ratio says what
//! fedwasm's watch → place → apply path costs on top.
//!
//! `cargo bench -p fedwasm-tests --bench propagation` (needs the test apiservers:
//! `scripts/install-testenv.sh`). Environment: `FEDWASM_BENCH_OBJECTS` (default
//! 1000), `FEDWASM_BENCH_MEMBERS` (default `3,9`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedwasm_host::app::{App, AppConfig};
use fedwasm_host::fleet::cluster::Cluster;
use fedwasm_host::fleet::{join, FleetConfig};
use fedwasm_testenv::{FederationSpec, LocalFederation, FEDERATION};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

const CONCURRENCY: usize = 32;
/// Creates per second of the paced run: below what both paths sustain, so its
/// latencies are per object, not queueing.
const PACED_RATE: u32 = 25;

type Seen = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

async fn client(kubeconfig: &std::path::Path, context: &str) -> Client {
    fedwasm_host::app::kube_client(Some(kubeconfig), context)
        .await
        .expect("a client from the kubeconfig")
}

fn config_map(ns: &str, name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns}, "data": {"payload": name}})
}

/// Records when each object first appears in each member.
fn watch_members(
    members: &[Client],
    ns: &str,
    prefix: &str,
    seen: Seen,
) -> Vec<tokio::task::JoinHandle<()>> {
    members
        .iter()
        .map(|c| {
            let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
            let seen = seen.clone();
            let prefix = format!("{prefix}-");
            tokio::spawn(async move {
                let mut first = std::collections::HashSet::new();
                let mut stream = watcher(api, watcher::Config::default()).boxed();
                while let Ok(Some(event)) = stream.try_next().await {
                    let objs = match event {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                        _ => vec![],
                    };
                    for o in objs {
                        let name = o.metadata.name.unwrap_or_default();
                        if name.starts_with(&prefix) && first.insert(name.clone()) {
                            seen.lock()
                                .unwrap()
                                .entry(name)
                                .or_default()
                                .push(Instant::now());
                        }
                    }
                }
            })
        })
        .collect()
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn figures(mut latencies: Vec<Duration>, wall: Duration) -> Figures {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
    }
}

/// Creates `objects` ConfigMaps with `create` and waits until every member has each.
/// `rate`: `None` = a burst, 32 creates in flight; `Some(n)` = n creates a second.
async fn measure<F, Fut>(
    members: &[Client],
    ns: &str,
    prefix: &str,
    objects: usize,
    rate: Option<u32>,
    create: F,
) -> Figures
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let seen: Seen = Arc::default();
    let watchers = watch_members(members, ns, prefix, seen.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let creates = (0..objects).map(|i| {
        let name = format!("{prefix}-{i:05}");
        let created = created.clone();
        let fut = create(name.clone());
        async move {
            created.lock().unwrap().insert(name, Instant::now());
            fut.await;
        }
    });
    match rate {
        None => {
            futures::stream::iter(creates)
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<()>>()
                .await;
        }
        Some(per_second) => {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            let mut tasks = Vec::new();
            for fut in creates {
                tick.tick().await;
                tasks.push(tokio::spawn(fut));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            seen.len() == objects && seen.values().all(|v| v.len() == members.len())
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "propagation did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = start.elapsed();
    for w in watchers {
        w.abort();
    }
    let created = created.lock().unwrap();
    let seen = seen.lock().unwrap();
    let latencies = created
        .iter()
        .map(|(name, at)| {
            seen[name]
                .iter()
                .max()
                .unwrap()
                .saturating_duration_since(*at)
        })
        .collect();
    figures(latencies, wall)
}

async fn bench(members_n: usize, objects: usize) {
    let names: Vec<String> = if members_n == 9 {
        ["asia-east1", "europe-west1", "us-central1"]
            .iter()
            .flat_map(|r| ["a", "b", "c"].map(|z| format!("gce-{r}-{z}")))
            .collect()
    } else {
        (1..=members_n).map(|i| format!("m{i}")).collect()
    };
    eprintln!("[bench] starting a federation plane and {members_n} members");
    let spec = FederationSpec {
        members: names.clone(),
        ..Default::default()
    };
    let local = tokio::task::spawn_blocking(move || LocalFederation::start(spec))
        .await
        .unwrap()
        .expect("local federation");
    let kubeconfig = local.kubeconfig_path();
    let fed = client(&kubeconfig, FEDERATION).await;
    let mut members = Vec::new();
    for name in &names {
        let request = join::JoinRequest {
            name: name.clone(),
            ..Default::default()
        };
        join::join_context(&fed, &kubeconfig, &request)
            .await
            .expect("join");
        members.push(client(&kubeconfig, name).await);
    }
    let plugin_dir = tempfile::tempdir().unwrap();
    let app = App::build(AppConfig {
        fleet: FleetConfig {
            probe_interval: Duration::from_secs(1),
            ..Default::default()
        },
        plugins: Some(plugin_dir.path().to_path_buf()),
        debounce: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    let registry = app.registry.clone();
    let metrics = app.metrics.clone();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let controllers = app.start_federation(fed.clone(), None, stop);
    let host = tokio::spawn(async move {
        let _app = app;
        controllers.stopped.await
    });
    let clusters: Api<Cluster> = Api::all(fed.clone());
    loop {
        let list = clusters.list(&ListParams::default()).await.unwrap();
        if list.items.len() == members_n && list.items.iter().all(|c| c.is_ready()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ns = "bench";
    let apply = PatchParams::apply("bench").force();
    for c in std::iter::once(&fed) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
        api.patch(
            ns,
            &apply,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
        )
        .await
        .unwrap();
    }
    // The namespace reaches every member before the objects are timed.
    for m in &members {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(m.clone());
        while api.get_opt(ns).await.ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let fed_api: Api<ConfigMap> = Api::namespaced(fed.clone(), ns);
    // One object created in the federation plane, for fedwasm to propagate.
    let create = |name: String| {
        let api = fed_api.clone();
        let apply = apply.clone();
        async move {
            api.patch(&name, &apply, &Patch::Apply(config_map(ns, &name)))
                .await
                .expect("create in the federation");
        }
    };
    for (mode, rate) in [("burst", None), ("paced", Some(PACED_RATE))] {
        eprintln!("[bench] {mode}: {objects} objects applied straight into {members_n} members");
        let baseline = measure(
            &members,
            ns,
            &format!("direct-{mode}"),
            objects,
            rate,
            |name| {
                let members = members.clone();
                let apply = apply.clone();
                async move {
                    for m in members {
                        let api: Api<ConfigMap> = Api::namespaced(m, ns);
                        api.patch(&name, &apply, &Patch::Apply(config_map(ns, &name)))
                            .await
                            .expect("direct apply");
                    }
                }
            },
        )
        .await;
        eprintln!("[bench] {mode}: {objects} objects created in the federation plane");
        let writes = metrics.member_writes();
        let fedwasm = measure(&members, ns, &format!("fed-{mode}"), objects, rate, &create).await;
        eprintln!(
            "[bench] {mode}: {} member writes for {objects} objects x {members_n} members; reconciles: {}",
            metrics.member_writes() - writes,
            propagation_results(&metrics)
        );
        let how = match rate {
            None => format!("burst, {CONCURRENCY} creates in flight"),
            Some(r) => format!("paced, {r} creates/s"),
        };
        println!(
            "members={members_n} objects={objects} ({how})\n  fedwasm : p50 {:>8.1} ms  p99 {:>8.1} ms  {:>7.1} objects/s\n  direct  : p50 {:>8.1} ms  p99 {:>8.1} ms  {:>7.1} objects/s\n  ratio   : throughput fedwasm/direct {:.2}, p99 fedwasm/direct {:.2}",
            fedwasm.p50.as_secs_f64() * 1e3,
            fedwasm.p99.as_secs_f64() * 1e3,
            fedwasm.per_second,
            baseline.p50.as_secs_f64() * 1e3,
            baseline.p99.as_secs_f64() * 1e3,
            baseline.per_second,
            fedwasm.per_second / baseline.per_second,
            fedwasm.p99.as_secs_f64() / baseline.p99.as_secs_f64(),
        );
    }
    // Shadow mode's cost: bursts without and with a shadow of the select plugin
    // (a copy of `label-selector`, so every placement is also made by the shadow
    // and agrees), side by side.
    eprintln!("[bench] shadow: a burst of {objects} objects, no shadow");
    let plain = measure(&members, ns, "plain", objects, None, &create).await;
    let shadow = plugin_dir.path().join("label-selector.shadow.wasm");
    std::fs::write(
        &shadow,
        fedwasm_host::runtime::built_in_bytes("label-selector").unwrap(),
    )
    .unwrap();
    while !registry.serving().contains_key("label-selector.shadow") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The swap re-places every object once; let that settle first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!("[bench] shadow: a burst of {objects} objects, label-selector.shadow loaded");
    let before = shadow_counts(&metrics);
    let shadowed = measure(&members, ns, "shadowed", objects, None, &create).await;
    let after = shadow_counts(&metrics);
    println!(
        "members={members_n} objects={objects} (burst, shadow mode)\n  no shadow   : {:>7.1} objects/s  p99 {:>8.1} ms\n  with shadow : {:>7.1} objects/s  p99 {:>8.1} ms\n  ratio       : throughput shadow/plain {:.2}; shadow decisions during the run: same {}, differs {}, error (incl. over budget) {}",
        plain.per_second,
        plain.p99.as_secs_f64() * 1e3,
        shadowed.per_second,
        shadowed.p99.as_secs_f64() * 1e3,
        shadowed.per_second / plain.per_second,
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
    );
    host.abort();
    drop(local);
}

/// `fedwasm_shadow_decisions_total{plugin="label-selector"}` by result: same,
/// differs, error.
/// `fedwasm_propagations_total` by result, summed over kinds.
fn propagation_results(metrics: &fedwasm_host::metrics::Metrics) -> String {
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    for line in metrics.render().lines() {
        let Some(rest) = line.strip_prefix("fedwasm_propagations_total{") else {
            continue;
        };
        let result = rest
            .split("result=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *by.entry(result.to_string()).or_default() += n;
    }
    by.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shadow_counts(metrics: &fedwasm_host::metrics::Metrics) -> [u64; 3] {
    let text = metrics.render();
    ["same", "differs", "error"].map(|result| {
        let series = format!(
            "fedwasm_shadow_decisions_total{{plugin=\"label-selector\",result=\"{result}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test
    // with few objects.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let objects: usize = std::env::var("FEDWASM_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 10 } else { 1000 });
    let members: Vec<usize> = std::env::var("FEDWASM_BENCH_MEMBERS")
        .unwrap_or_else(|_| if smoke { "3".into() } else { "3,9".into() })
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in members {
        rt.block_on(bench(n, objects));
    }
}
