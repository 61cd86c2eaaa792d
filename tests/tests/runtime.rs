//! The plugin runtime against real components built from source: the KubeFed
//! reference cases through Wasm, hot swap under concurrent calls, and every kind of
//! bad plugin.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedwasm_host::metrics::Metrics;
use fedwasm_host::plan::PlanRequest;
use fedwasm_host::runtime::{
    built_in_bytes, DirWatcher, Limits, LoadStage, PluginError, PluginSource, Registry, Runtime,
    RuntimeConfig,
};
use fedwasm_sdk::{ClusterPreference, DistributeRequest, Preferences};
use fedwasm_tests::plugins;
use serde_json::{json, Value};

/// The deadline of the sandbox tests: short, so an endless loop ends quickly.
const DEADLINE: Duration = Duration::from_millis(100);
/// The deadline of the tests of correct plugins: long, so a loaded CI machine that
/// deschedules a thread cannot turn a correct call into a timeout.
const RELAXED: Duration = Duration::from_secs(5);

fn registry() -> Arc<Registry> {
    registry_with(RELAXED)
}

fn sandboxed() -> Arc<Registry> {
    registry_with(DEADLINE)
}

fn registry_with(deadline: Duration) -> Arc<Registry> {
    let config = RuntimeConfig {
        limits: Limits {
            deadline,
            memory_bytes: 16 << 20,
        },
        cache_dir: None,
    };
    let runtime = Runtime::new(config, Arc::new(Metrics::new())).expect("runtime");
    Registry::new(runtime).expect("built-in plugins load")
}

fn request(total: u32, clusters: &[&str], object: &str) -> DistributeRequest {
    DistributeRequest::new(object, total, clusters.iter().copied())
}

fn plan(
    registry: &Registry,
    name: &str,
    req: &DistributeRequest,
) -> Result<BTreeMap<String, u32>, PluginError> {
    registry.get(name)?.distribute(req).map(|r| r.plan)
}

/// Waits (bounded) until `f` holds, polling; panics with `what` otherwise.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}

#[test]
fn kubefed_reference_cases_hold_through_wasm() {
    let registry = registry();
    let cases: Vec<Value> = serde_json::from_str(include_str!(
        "../../plugins/weighted-spread/tests/kubefed_cases.json"
    ))
    .expect("cases parse");
    assert!(
        cases.len() >= 10,
        "the reference set is too small: {}",
        cases.len()
    );
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let (req, _) = PlanRequest::parse(&case["request"].to_string()).expect(name);
        let got = req
            .evaluate(&registry, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = json!({"plan": got["plan"], "overflow": got["overflow"]});
        match (case.get("expected"), case.get("acceptable")) {
            (Some(expected), _) => assert_eq!(&got, expected, "case {name}"),
            (None, Some(Value::Array(options))) => {
                assert!(
                    options.contains(&got),
                    "case {name}: {got} not among {options:?}"
                )
            }
            _ => panic!("case {name} has neither expected nor acceptable"),
        }
    }
}

#[test]
fn no_preferences_spread_within_one_through_wasm() {
    let registry = registry();
    for (total, n, want) in [
        (10u32, 3usize, vec![3u32, 3, 4]),
        (7, 3, vec![2, 2, 3]),
        (1, 3, vec![0, 0, 1]),
        (0, 3, vec![0, 0, 0]),
        (100, 7, vec![14, 14, 14, 14, 14, 15, 15]),
        (5, 5, vec![1, 1, 1, 1, 1]),
    ] {
        let clusters: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let names: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let got = plan(
            &registry,
            "weighted-spread",
            &request(total, &names, "ns/web"),
        )
        .unwrap_or_else(|e| panic!("{total}/{n}: {e}"));
        assert_eq!(got.len(), n, "{total}/{n}: {got:?}");
        let mut counts: Vec<u32> = got.into_values().collect();
        counts.sort();
        assert_eq!(counts, want, "{total}/{n}");
    }
}

#[test]
fn built_ins_serve_every_hook() {
    let registry = registry();
    for (body, key) in [
        (
            json!({"hook": "select", "object": {"kind": "ReplicaSet", "namespace": "ns", "name": "x",
                "annotations": {"fedwasm.io/regions": "europe-west1"}},
                "clusters": [{"name": "eu", "region": "europe-west1", "ready": true},
                             {"name": "us", "region": "us-central1", "ready": true}]}),
            "selected",
        ),
        (
            json!({"hook": "rank", "client": {"region": "europe-west1", "zone": "europe-west1-b"},
                "backends": [{"cluster": "us", "region": "us-central1", "healthy": true},
                             {"cluster": "eu", "region": "europe-west1", "zone": "europe-west1-b", "healthy": true}]}),
            "order",
        ),
    ] {
        let (req, _) = PlanRequest::parse(&body.to_string()).unwrap();
        let out = req.evaluate(&registry, None).unwrap();
        match key {
            "selected" => assert_eq!(out["selected"], json!([{"cluster": "eu", "score": 100}])),
            _ => assert_eq!(out["order"], json!(["eu", "us"])),
        }
    }
}

/// Plugins built for the frozen `0.1.0`, `0.2.0` and `0.3.0` contracts load and
/// serve every hook they declare, through the translation from the current
/// contract: the distribute values are named again for `0.1.0` and `0.2.0` (and
/// the answer by name aligned) and sent as a list of names with optional values
/// for `0.3.0`, rank positions are dropped before `0.3.0`, settings reach `0.2.0`
/// and `0.3.0` plugins and are dropped for `0.1.0` (which has none), and only
/// `0.1.0` has no customize.
#[test]
fn plugins_built_for_older_contracts_keep_loading() {
    let registry = registry();
    assert_eq!(
        registry.get("weighted-spread").unwrap().contract_version(),
        fedwasm_sdk::WIT_VERSION
    );
    for (bytes, version) in [
        (plugins::LEGACY_V0_1, "0.1.0"),
        (plugins::LEGACY_V0_2, "0.2.0"),
        (plugins::LEGACY_V0_3, "0.3.0"),
    ] {
        let name = format!("legacy-{version}");
        let plugin = registry
            .load(&name, bytes, PluginSource::BuiltIn)
            .unwrap_or_else(|e| panic!("a {version} plugin loads: {e}"));
        assert_eq!(plugin.contract_version(), version);
        let settings = "{\"ignored\": true}";
        let select = json!({"hook": "select", "settings": settings,
            "object": {"kind": "ConfigMap", "namespace": "ns", "name": "x", "labels": {"a": "b"}},
            "clusters": [{"name": "m-a", "ready": true, "labels": {"env": "prod"}},
                         {"name": "m-b", "ready": true}, {"name": "m-c", "ready": false}]});
        let (req, _) = PlanRequest::parse(&select.to_string()).unwrap();
        let out = req.evaluate(&registry, Some(&name)).unwrap();
        let score = if version == "0.1.0" {
            1
        } else {
            settings.len()
        };
        assert_eq!(
            out["selected"],
            json!([{"cluster": "m-a", "score": score}, {"cluster": "m-c", "score": score}]),
            "{version}"
        );
        // It keeps what runs (named in `current`, so the aligned counts were
        // named again) and puts the rest on the last candidate by name.
        let mut distribute = request(7, &["m-a", "m-c", "m-b"], "ns/web");
        distribute.current = BTreeMap::from([("m-a".to_string(), 3), ("m-b".to_string(), 2)]);
        distribute.capacity = BTreeMap::from([("m-b".to_string(), 100)]);
        distribute.settings = "{}".into();
        let out = plan(&registry, &name, &distribute).unwrap();
        assert_eq!(
            out,
            BTreeMap::from([("m-a".into(), 3), ("m-b".into(), 2), ("m-c".into(), 2)]),
            "{version}"
        );
        if version == "0.3.0" {
            // The last candidate's cap: its own entry, else `*` (both aligned
            // with the candidates on the way).
            let cap = |max| ClusterPreference {
                min_replicas: 0,
                max_replicas: Some(max),
                weight: 1,
            };
            distribute.total_replicas = 9;
            for (own, want) in [(None, 3), (Some(1), 1)] {
                let mut clusters = BTreeMap::from([("*".to_string(), cap(3))]);
                if let Some(max) = own {
                    clusters.insert("m-c".into(), cap(max));
                }
                distribute.preferences = Some(Preferences {
                    rebalance: false,
                    clusters,
                });
                let out = plan(&registry, &name, &distribute).unwrap();
                assert_eq!(
                    out,
                    BTreeMap::from([("m-a".into(), 3), ("m-b".into(), 2), ("m-c".into(), want)]),
                    "{own:?}"
                );
            }
        }
        let rank = json!({"hook": "rank", "client": {"region": "r", "position": {"latitude": 1.0, "longitude": 2.0}},
            "backends": [{"cluster": "one", "healthy": true}, {"cluster": "two", "healthy": true}]});
        let (req, _) = PlanRequest::parse(&rank.to_string()).unwrap();
        let out = req.evaluate(&registry, Some(&name)).unwrap();
        assert_eq!(out["order"], json!(["two", "one"]), "{version}");
        let customize = json!({"hook": "customize",
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
            "cluster": {"name": "m-a"}});
        let (req, _) = PlanRequest::parse(&customize.to_string()).unwrap();
        if version == "0.1.0" {
            let e = req.evaluate(&registry, Some(&name)).unwrap_err();
            assert!(matches!(e, PluginError::Unsupported { .. }), "{e}");
        } else {
            let out = req.evaluate(&registry, Some(&name)).unwrap();
            assert_eq!(
                out["object"]["metadata"]["annotations"]["legacy.example/cluster"], "m-a",
                "{out}"
            );
        }
    }
}

#[test]
fn hot_swap_under_concurrent_calls_loses_no_call() {
    let registry = registry();
    let dir = tempfile::tempdir().unwrap();
    let _watch =
        DirWatcher::start(registry.clone(), dir.path(), Duration::from_millis(50)).unwrap();
    let req = request(9, &["a", "b", "c"], "ns/web");
    let old = plan(&registry, "weighted-spread", &req).unwrap();
    let new = BTreeMap::from([("a".to_string(), 9), ("b".into(), 0), ("c".into(), 0)]);
    assert_ne!(old, new);

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, saw_new) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (registry, req, old, new) =
                (registry.clone(), req.clone(), old.clone(), new.clone());
            let (stop, calls, saw_new) = (stop.clone(), calls.clone(), saw_new.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let got = plan(&registry, "weighted-spread", &req)
                        .expect("no call fails during a swap");
                    assert!(
                        got == old || got == new,
                        "an answer from neither generation: {got:?}"
                    );
                    calls.fetch_add(1, Ordering::Relaxed);
                    if got == new {
                        saw_new.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // A file named like a built-in overrides it; written by rename as editors do.
    let tmp = dir.path().join("weighted-spread.wasm.tmp");
    std::fs::write(&tmp, plugins::CHAOS).unwrap();
    std::fs::rename(&tmp, dir.path().join("weighted-spread.wasm")).unwrap();
    eventually("the new generation answers", || {
        saw_new.load(Ordering::Relaxed) > 100
    });
    let listed = registry
        .list()
        .into_iter()
        .find(|p| p.name == "weighted-spread")
        .unwrap();
    assert!(!listed.built_in);

    // Removing the file falls back to the built-in.
    std::fs::remove_file(dir.path().join("weighted-spread.wasm")).unwrap();
    eventually("the built-in serves again", || {
        registry
            .get("weighted-spread")
            .map(|p| p.source() == &PluginSource::BuiltIn)
            .unwrap_or(false)
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .expect("a worker panicked: a call failed or saw a mixed answer");
    }
    assert!(calls.load(Ordering::Relaxed) > 200);
    assert_eq!(plan(&registry, "weighted-spread", &req).unwrap(), old);
}

/// A component exporting the wrong things.
const WRONG_EXPORTS: &str = r#"(component
  (core module $m (func (export "f") (result i32) i32.const 1))
  (core instance $i (instantiate $m))
  (func (export "hello") (result u32) (canon lift (core func $i "f"))))"#;

/// A component that imports an interface: plugins may import nothing.
const IMPORTS_SOMETHING: &str = r#"(component
  (import "wasi:cli/environment@0.2.0" (instance)))"#;

#[test]
fn bad_plugins_are_rejected_and_the_last_good_generation_keeps_serving() {
    let registry = sandboxed();
    let dir = tempfile::tempdir().unwrap();
    let _watch =
        DirWatcher::start(registry.clone(), dir.path(), Duration::from_millis(50)).unwrap();
    let path = dir.path().join("custom.wasm");
    std::fs::write(&path, plugins::CHAOS).unwrap();
    eventually("custom loads", || registry.get("custom").is_ok());
    let good = registry.get("custom").unwrap().generation();
    let req = request(4, &["x", "y"], "ns/ok");
    let expected = BTreeMap::from([("x".to_string(), 4), ("y".into(), 0)]);

    let wrong_exports = wat::parse_str(WRONG_EXPORTS).unwrap();
    let imports = wat::parse_str(IMPORTS_SOMETHING).unwrap();
    let cases: [(&str, &[u8], LoadStage, &str); 8] = [
        (
            "garbage bytes",
            b"\x00asm garbage that is not wasm",
            LoadStage::Compile,
            "not a valid component",
        ),
        ("empty file", b"", LoadStage::Read, "empty"),
        (
            "wrong exports",
            &wrong_exports,
            LoadStage::TypeCheck,
            "exports do not match",
        ),
        ("imports", &imports, LoadStage::TypeCheck, "import nothing"),
        (
            "endless loop",
            plugins::CHAOS_ALWAYS_LOOP,
            LoadStage::SmokeTest,
            "deadline",
        ),
        (
            "memory hog",
            plugins::CHAOS_ALWAYS_HOG,
            LoadStage::SmokeTest,
            "memory",
        ),
        (
            "trap",
            plugins::CHAOS_ALWAYS_TRAP,
            LoadStage::SmokeTest,
            "trapped",
        ),
        (
            "invalid output",
            plugins::CHAOS_ALWAYS_INVALID,
            LoadStage::SmokeTest,
            "invalid output",
        ),
    ];
    for (what, bytes, stage, message) in cases {
        let started = Instant::now();
        let err = registry
            .load("custom", bytes, PluginSource::File(path.clone()))
            .expect_err(what);
        assert_eq!(err.stage, stage, "{what}: {err}");
        assert!(err.to_string().contains(message), "{what}: {err}");
        assert!(
            err.to_string().contains("`custom`"),
            "{what}: the error names the plugin: {err}"
        );
        if what == "endless loop" {
            // Stopped by the deadline, not left spinning.
            assert!(
                started.elapsed() < DEADLINE * 50,
                "{what} took {:?}",
                started.elapsed()
            );
        }
        let serving = registry.get("custom").unwrap();
        assert_eq!(
            serving.generation(),
            good,
            "{what} replaced the good generation"
        );
        assert_eq!(serving.distribute(&req).unwrap().plan, expected, "{what}");
    }

    // The same through the watched directory: rejected with last_error shown.
    std::fs::write(&path, plugins::CHAOS_ALWAYS_TRAP).unwrap();
    eventually("the rejection is listed", || {
        registry.list().iter().any(|p| {
            p.name == "custom"
                && p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("trapped"))
        })
    });
    let listed = registry
        .list()
        .into_iter()
        .find(|p| p.name == "custom")
        .unwrap();
    assert_eq!(listed.generation, Some(good));
    assert_eq!(plan(&registry, "custom", &req).unwrap(), expected);
    let metrics = registry.runtime().metrics().render();
    assert!(
        metrics.contains(r#"fedwasm_plugin_reloads_total{plugin="custom",result="smoke_test"}"#),
        "{metrics}"
    );
}

#[test]
fn misbehaving_calls_fail_cleanly_and_the_plugin_recovers() {
    let registry = sandboxed();
    registry
        .load(
            "chaos",
            plugins::CHAOS,
            PluginSource::File("chaos.wasm".into()),
        )
        .unwrap();
    let chaos = registry.get("chaos").unwrap();
    let ok = request(3, &["a", "b"], "ns/fine");
    for (object, kind) in [
        ("ns/loop", "timeout"),
        ("ns/hog", "memory"),
        ("ns/trap", "trap"),
        ("ns/invalid", "invalid_output"),
        ("ns/refuse", "refused"),
    ] {
        let started = Instant::now();
        let err = chaos
            .distribute(&request(3, &["a", "b"], object))
            .expect_err(object);
        assert_eq!(err.kind(), kind, "{object}: {err}");
        assert!(err.to_string().contains("`chaos`"), "{err}");
        if kind == "timeout" {
            assert!(
                started.elapsed() < DEADLINE * 50,
                "the loop ran {:?}",
                started.elapsed()
            );
        }
        // The broken instance was thrown away; the next call gets a working one.
        assert_eq!(
            chaos.distribute(&ok).unwrap().plan["a"],
            3,
            "after {object}"
        );
    }
    let metrics = registry.runtime().metrics().render();
    for kind in ["timeout", "memory", "trap", "invalid_output", "refused"] {
        assert!(
            metrics.contains(&format!(
                r#"fedwasm_plugin_errors_total{{hook="distribute",kind="{kind}",plugin="chaos"}} 1"#
            )),
            "{kind} not counted: {metrics}"
        );
    }
}

#[test]
fn built_in_bytes_are_embedded() {
    for name in ["label-selector", "weighted-spread", "nearest-healthy"] {
        let bytes = built_in_bytes(name).expect(name);
        assert!(bytes.starts_with(b"\0asm"), "{name}");
    }
    assert!(built_in_bytes("nope").is_none());
}

/// A ConfigMap volume as the kubelet writes it (its atomic writer): the files in a
/// timestamped directory, `..data` a symlink to it and each visible `NAME` a symlink
/// to `..data/NAME`. An update writes a new timestamped directory, points
/// `..data_tmp` at it and renames that over `..data`, adds the visible symlinks of
/// new files, removes those of files gone, then the old directory. No file is ever
/// written in place.
struct ConfigMapVolume {
    dir: std::path::PathBuf,
    current: Option<String>,
    updates: u32,
}

impl ConfigMapVolume {
    fn new(dir: &std::path::Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            current: None,
            updates: 0,
        }
    }

    fn publish(&mut self, files: &[(&str, &[u8])]) {
        use std::os::unix::fs::symlink;
        self.updates += 1;
        let stamp = format!(
            "..2026_11_28_10_00_{:02}.{}",
            self.updates,
            123 + self.updates
        );
        let stamped = self.dir.join(&stamp);
        std::fs::create_dir(&stamped).unwrap();
        for (name, bytes) in files {
            std::fs::write(stamped.join(name), bytes).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let visible = self.dir.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(format!("..data/{name}"), &visible).unwrap();
            }
        }
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.iter().any(|(f, _)| *f == name) {
                std::fs::remove_file(self.dir.join(&name)).unwrap();
            }
        }
        if let Some(old) = self.current.replace(stamp) {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// The plugin directory mounted from a ConfigMap, as in `deploy/`: the first load
/// through the kubelet's symlinks, an update swapped in by renaming `..data`, and a
/// key removed from the ConfigMap.
#[test]
fn a_configmap_volume_loads_hot_reloads_and_unloads() {
    let registry = registry();
    let mount = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::new(mount.path());
    let label_selector = built_in_bytes("label-selector").unwrap();
    let weighted_spread = built_in_bytes("weighted-spread").unwrap();
    volume.publish(&[
        ("weighted-spread.wasm", plugins::CHAOS),
        ("selector.wasm", label_selector),
    ]);
    let visible = mount.path().join("weighted-spread.wasm");
    assert_eq!(
        std::fs::read_link(&visible).unwrap(),
        std::path::Path::new("..data/weighted-spread.wasm")
    );
    let _watch =
        DirWatcher::start(registry.clone(), mount.path(), Duration::from_millis(50)).unwrap();
    let req = request(9, &["a", "b", "c"], "ns/web");
    let chaos_plan = BTreeMap::from([("a".to_string(), 9), ("b".into(), 0), ("c".into(), 0)]);
    let first = registry.get("weighted-spread").unwrap();
    assert_eq!(first.source(), &PluginSource::File(visible.clone()));
    assert_eq!(
        plan(&registry, "weighted-spread", &req).unwrap(),
        chaos_plan
    );
    let selector = registry.get("selector").unwrap().generation();

    // An update: weighted-spread.wasm gets other bytes, selector.wasm the same.
    volume.publish(&[
        ("weighted-spread.wasm", weighted_spread),
        ("selector.wasm", label_selector),
    ]);
    eventually("the updated file serves", || {
        registry
            .get("weighted-spread")
            .is_ok_and(|p| p.generation() != first.generation())
    });
    let second = registry.get("weighted-spread").unwrap();
    assert_ne!(second.sha256(), first.sha256());
    assert_eq!(second.source(), &PluginSource::File(visible.clone()));
    let spread = plan(&registry, "weighted-spread", &req).unwrap();
    assert_eq!(spread.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
    assert_eq!(
        registry.get("selector").unwrap().generation(),
        selector,
        "an unchanged file is not reloaded"
    );

    // The key is removed from the ConfigMap: the built-in serves again.
    volume.publish(&[("selector.wasm", label_selector)]);
    eventually("the built-in serves again", || {
        registry
            .get("weighted-spread")
            .is_ok_and(|p| p.source() == &PluginSource::BuiltIn)
    });
    assert!(!visible.exists());
    assert_eq!(registry.get("selector").unwrap().generation(), selector);
    let names: Vec<String> = std::fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "..data, one stamped dir, selector.wasm: {names:?}"
    );
}

/// `POST /plan` has its own small capacity: while a slow plan holds it, another is
/// answered 429 at once (so a flood of plans cannot take the plugin calls of the
/// controller), and the admin API answers everything else meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_beyond_the_admin_capacity_are_refused_at_once() {
    use fedwasm_host::admin::{self, AdminConfig, AdminState, Health};
    let registry = registry_with(Duration::from_secs(2));
    registry
        .load(
            "chaos",
            plugins::CHAOS,
            PluginSource::File("chaos.wasm".into()),
        )
        .unwrap();
    let config = AdminConfig {
        max_plans: 1,
        ..AdminConfig::default()
    };
    let state = AdminState {
        registry: registry.clone(),
        metrics: registry.runtime().metrics().clone(),
        health: Health::healthy(),
        router: None,
        placer: fedwasm_host::placer::Placer::new(registry.clone()),
        federation: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes = admin::router(state, &config);
    tokio::spawn(
        async move { admin::serve(listener, routes, &config, std::future::pending()).await },
    );
    let plan = |object: &str, plugin: &str| {
        json!({"hook": "distribute", "object": object, "totalReplicas": 3,
               "clusters": ["a", "b"], "plugin": plugin})
        .to_string()
    };
    let post = |body: String| {
        let url = format!("{base}/plan");
        async move {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), started.elapsed())
        }
    };
    // Runs until its 2 s deadline.
    let slow = tokio::spawn(post(plan("ns/loop", "chaos")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, took) = post(plan("ns/fine", "weighted-spread")).await;
    assert_eq!(code, 429, "a second plan while the first runs");
    assert!(took < Duration::from_millis(500), "429 took {took:?}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let (code, took) = slow.await.unwrap();
    assert_eq!(code, 422, "the looping plan ends at its deadline");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    let (code, _) = post(plan("ns/fine", "weighted-spread")).await;
    assert_eq!(code, 200, "the capacity is back");
}
