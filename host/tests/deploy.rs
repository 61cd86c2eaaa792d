//! fedwasm as `deploy/` runs it, against a real federation plane that enforces
//! RBAC: the manifests pass a server-side dry run and apply; then the binary runs
//! with the Deployment's arguments and volumes in a pod's environment
//! (`KUBERNETES_SERVICE_HOST`/`_PORT`, the service-account directory holding a
//! token of the manifests' ServiceAccount, a read-only root filesystem) and does
//! the federation's job with exactly the permissions the manifests grant.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fedwasm_testenv::{FederationSpec, LocalFederation, FEDERATION};
use serde_json::Value;

const NAMESPACE: &str = "fedwasm-system";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:fedwasm-system:fedwasm";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `kubectl --kubeconfig K --context CONTEXT ARGS`: its stdout, or its stderr as
/// the error.
fn kubectl(kubeconfig: &Path, context: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn kubectl_ok(kubeconfig: &Path, context: &str, args: &[&str]) -> String {
    kubectl(kubeconfig, context, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (bounded) until `f` holds, polling; panics with `what` and `why()`.
fn eventually(what: &str, why: &dyn Fn() -> String, f: &mut dyn FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// The host process, killed (SIGKILL) and reaped on drop, also when the test
/// panics. `unshare` and `sh` exec into it, so its pid is the host's.
struct Host {
    child: Child,
    log: PathBuf,
}

impl Host {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a private mount namespace (gone with the process, so nothing is left on the
/// real filesystem): a tmpfs over /var/run with the service-account directory
/// bound from `$1` into it, as the kubelet mounts it; the cache directory `$2`
/// bound onto itself and then the root filesystem remounted read-only, as
/// `readOnlyRootFilesystem` with an emptyDir leaves it; then the host.
const POD_SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755 fedwasm-test /var/run
mkdir -p /var/run/secrets/kubernetes.io/serviceaccount
mount --bind "$1" /var/run/secrets/kubernetes.io/serviceaccount
mount --bind "$2" "$2"
mount -o remount,bind,ro /
shift 2
exec "$@"
"#;

/// A pod's filesystem for the rendered Deployment: each volume a directory under
/// `root` (a ConfigMap's data written in it, an absent optional ConfigMap empty,
/// an emptyDir empty), and the container's arguments with every mount path
/// replaced by its directory and every `0.0.0.0:PORT` by a free loopback port.
struct Pod {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The emptyDir the host may write to (its artifact cache).
    cache: PathBuf,
}

fn pod_from(objects: &[Value], root: &Path) -> Pod {
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    };
    let deployment = find("Deployment", "fedwasm").expect("a Deployment fedwasm");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let mut mounts = Vec::new();
    let mut cache = None;
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(cm) = volume["configMap"].as_object() {
            let cm_name = cm["name"].as_str().unwrap();
            match find("ConfigMap", cm_name) {
                Some(found) => {
                    for (file, text) in found["data"].as_object().into_iter().flatten() {
                        std::fs::write(dir.join(file), text.as_str().unwrap()).unwrap();
                    }
                }
                None => assert_eq!(
                    cm.get("optional"),
                    Some(&Value::Bool(true)),
                    "ConfigMap {cm_name} is neither in deploy/ nor optional"
                ),
            }
        } else if volume.get("emptyDir").is_some() {
            assert!(mount["readOnly"] != true);
            cache = Some(dir.clone());
        } else {
            panic!("a volume this test does not know: {volume}");
        }
        mounts.push((mount["mountPath"].as_str().unwrap().to_string(), dir));
    }
    let args = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let arg = a.as_str().unwrap();
            let Some((flag, value)) = arg.split_once('=') else {
                return arg.to_string();
            };
            if value.starts_with("0.0.0.0:") {
                return format!("{flag}=127.0.0.1:0");
            }
            for (path, dir) in &mounts {
                if let Some(rest) = value.strip_prefix(path.as_str()) {
                    return format!("{flag}={}{rest}", dir.display());
                }
            }
            arg.to_string()
        })
        .collect();
    let env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Pod {
        args,
        env,
        cache: cache.expect("an emptyDir for the artifact cache"),
    }
}

/// `/metrics` of the admin API at `base`.
fn metrics(base: &str) -> String {
    reqwest::blocking::get(format!("{base}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
}

#[test]
fn deployed_with_the_manifests_it_federates_with_their_permissions() {
    let fed = LocalFederation::start(FederationSpec {
        members: vec!["m1".into()],
        rbac: true,
        ..Default::default()
    })
    .expect("a local federation starts (run scripts/install-testenv.sh first)");
    let kubeconfig = fed.kubeconfig_path();
    let deploy = deploy_dir();
    let deploy = deploy.to_str().unwrap();
    let fedctl = |args: &[&str]| kubectl(&kubeconfig, FEDERATION, args);

    // 1. A server-side dry run of every object (the namespaced ones need their
    // Namespace to exist), which creates nothing.
    kubectl_ok(&kubeconfig, FEDERATION, &["create", "namespace", NAMESPACE]);
    let dry = fedctl(&["apply", "--dry-run=server", "-k", deploy, "-o", "json"])
        .unwrap_or_else(|e| panic!("the server refuses deploy/: {e}"));
    let dry: Value = serde_json::from_str(&dry).unwrap();
    let objects = dry["items"].as_array().expect("a List").clone();
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"]))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole/\"fedwasm\"",
            "ClusterRoleBinding/\"fedwasm\"",
            "ConfigMap/\"fedwasm-locality\"",
            "Deployment/\"fedwasm\"",
            "Namespace/\"fedwasm-system\"",
            "Role/\"fedwasm-leader\"",
            "RoleBinding/\"fedwasm-leader\"",
            "Service/\"fedwasm\"",
            "Service/\"fedwasm-admin\"",
            "ServiceAccount/\"fedwasm\"",
        ]
    );
    assert_eq!(
        fedctl(&["get", "clusterrole", "fedwasm", "--ignore-not-found"]).unwrap(),
        "",
        "a dry run created the ClusterRole"
    );

    // 2. Applied for real.
    kubectl_ok(&kubeconfig, FEDERATION, &["apply", "-k", deploy]);

    // 3. The binary with the Deployment's arguments in a pod's environment: no
    // kubeconfig, only the service account's token.
    let token = kubectl_ok(
        &kubeconfig,
        FEDERATION,
        &["create", "token", "fedwasm", "-n", NAMESPACE],
    );
    let tmp = tempfile::tempdir().unwrap();
    let sa = tmp.path().join("serviceaccount");
    std::fs::create_dir(&sa).unwrap();
    std::fs::write(sa.join("token"), token.trim()).unwrap();
    std::fs::write(sa.join("namespace"), NAMESPACE).unwrap();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&kubeconfig).unwrap())
        .expect("the testenv's kubeconfig is JSON");
    let ca = config["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == FEDERATION)
        .and_then(|c| c["cluster"]["certificate-authority-data"].as_str())
        .expect("the federation's CA");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .unwrap();
    std::fs::write(sa.join("ca.crt"), ca).unwrap();
    let pod = pod_from(&objects, &tmp.path().join("pod"));
    let port = fed.endpoint(FEDERATION).unwrap().port;
    let log = tmp.path().join("host.log");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        POD_SCRIPT,
        "sh",
    ])
    .arg(&sa)
    .arg(&pod.cache)
    .arg(env!("CARGO_BIN_EXE_fedwasm"))
    .args(&pod.args)
    .env_remove("KUBECONFIG")
    .env("HOME", tmp.path().join("home"))
    .env("HOSTNAME", "fedwasm-0")
    .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    .env("KUBERNETES_SERVICE_PORT", port.to_string())
    .envs(pod.env.iter().map(|(k, v)| (k, v)))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(&log).unwrap());
    let child = cmd.spawn().expect("unshare runs");
    let pid = child.id();
    let mut host = Host { child, log };
    let stdout = host.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let admin = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = host.child.wait();
            panic!("the host exited before serving:\n{}", host.log());
        };
        if let Some(base) = line.strip_prefix("admin API: ") {
            break base.trim().to_string();
        }
    };
    // Keep reading, so the host never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let why = || format!("host log:\n{}", host.log());
    let healthz = reqwest::blocking::get(format!("{admin}/healthz")).unwrap();
    assert!(healthz.status().is_success(), "{}", why());

    // It takes the Lease (leader election is on by default), and as the leader
    // installs the Cluster CRD in the plane it runs in...
    eventually("the host to lead", &why, &mut || {
        reqwest::blocking::get(format!("{admin}/leader"))
            .and_then(|r| r.json::<Value>())
            .is_ok_and(|l| l["leading"] == true && l["election"] == true)
    });
    let holder = kubectl_ok(
        &kubeconfig,
        FEDERATION,
        &[
            "-n",
            NAMESPACE,
            "get",
            "lease",
            "fedwasm",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert!(
        holder.starts_with("fedwasm-0"),
        "the Lease is held by {holder:?}"
    );
    eventually("the host to install the Cluster CRD", &why, &mut || {
        fedctl(&["get", "crd", "clusters.fedwasm.io"]).is_ok()
    });
    // The ServiceAccount gets what the host needs, not more.
    let can = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--context",
                FEDERATION,
                "auth",
                "can-i",
                "--as",
                SERVICE_ACCOUNT,
            ])
            .args(args)
            .output()
            .expect("kubectl runs");
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            other => panic!(
                "can-i {args:?}: {other} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    for (args, allowed) in [
        (&["watch", "secrets", "-A"][..], true),
        (
            &["patch", "deployments", "--subresource=status", "-n", "shop"],
            true,
        ),
        (
            &["patch", "clusters.fedwasm.io/m1", "--subresource=status"],
            true,
        ),
        (&["create", "customresourcedefinitions"], true),
        (
            &["patch", "customresourcedefinitions/clusters.fedwasm.io"],
            true,
        ),
        (
            &["patch", "customresourcedefinitions/other.example.com"],
            false,
        ),
        (&["update", "leases/fedwasm", "-n", NAMESPACE], true),
        (&["update", "leases/other", "-n", NAMESPACE], false),
        (&["update", "leases/fedwasm", "-n", "default"], false),
        (&["delete", "deployments", "-n", "shop"], false),
        (&["create", "secrets", "-n", NAMESPACE], false),
        (&["patch", "clusters.fedwasm.io/m1"], false),
        (&["list", "pods", "-A"], false),
        (&["create", "events.events.k8s.io", "-n", "shop"], true),
        (&["create", "events", "-n", "shop"], false),
    ] {
        assert_eq!(can(args), allowed, "can-i {args:?}");
    }

    // ...probes a member joined meanwhile until it is Ready...
    let out = Command::new(env!("CARGO_BIN_EXE_fedwasm"))
        .args(["join", "m1", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--context", "m1", "--region", "europe-west1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("m1 Ready in /metrics", &why, &mut || {
        metrics(&admin).contains(r#"fedwasm_members{phase="Ready"} 1"#)
    });
    // ...and propagates: a Deployment created once in the federation appears in
    // the member, and the federation object gets its finalizer, placement and an
    // event.
    kubectl_ok(&kubeconfig, FEDERATION, &["create", "namespace", "shop"]);
    kubectl_ok(
        &kubeconfig,
        FEDERATION,
        &[
            "-n",
            "shop",
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=3",
        ],
    );
    eventually("the Deployment in m1", &why, &mut || {
        kubectl(
            &kubeconfig,
            "m1",
            &[
                "-n",
                "shop",
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        )
        .is_ok_and(|r| r == "3")
    });
    let placed = |path: &str| {
        fedctl(&["-n", "shop", "get", "deployment", "web", "-o", path]).unwrap_or_default()
    };
    eventually("the placement annotation", &why, &mut || {
        placed("jsonpath={.metadata.annotations.fedwasm\\.io/placement}").contains("m1")
    });
    assert!(placed("jsonpath={.metadata.finalizers}").contains("fedwasm.io/propagation"));
    eventually("a Propagated event", &why, &mut || {
        fedctl(&["-n", "shop", "get", "events", "-o", "json"]).is_ok_and(|events| {
            serde_json::from_str::<Value>(&events).is_ok_and(|e| {
                e["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["reason"] == "Propagated" && e["involvedObject"]["name"] == "web")
            })
        })
    });

    // It wrote precompiled plugins to the emptyDir (the root filesystem is
    // read-only), and nothing it did was refused.
    let cached = std::fs::read_dir(&pod.cache).unwrap().count();
    assert!(cached > 0, "nothing cached in the emptyDir\n{}", why());
    let log = host.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "a request was refused:\n{log}"
    );

    drop(host);
    assert!(!alive(pid), "the host still runs");
}
