//! The `fedwasm` command as a user runs it: plan, plugin new/build/bench, and run
//! with the admin API and hot reload.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn fedwasm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedwasm"))
}

/// The call deadline of tests about what a correct plugin answers, not about
/// deadlines: a loaded 2-core CI machine can pause a process for more than the
/// default 10 ms in the middle of a call.
const CONTRACT_DEADLINE_MS: &str = "5000";

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("fedwasm runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// A shared target dir for the plugin crates the tests build, so dependencies
/// (wit-bindgen) are compiled once per run rather than once per crate.
fn plugin_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugin-crates")
}

/// `fedwasm plugin build DIR` with `CARGO_TARGET_DIR=target`; returns the path it
/// prints last.
fn build_plugin(dir: &Path, target: &Path) -> PathBuf {
    build_plugin_in(Path::new("."), dir, Some(target))
}

/// `fedwasm plugin build DIR` run in `cwd` (so `dir` may be relative to it), with
/// `CARGO_TARGET_DIR` set to `target` or unset; returns the path it prints last,
/// checked to be a component.
fn build_plugin_in(cwd: &Path, dir: &Path, target: Option<&Path>) -> PathBuf {
    let mut cmd = fedwasm();
    cmd.current_dir(cwd).args(["plugin", "build"]).arg(dir);
    match target {
        Some(target) => cmd.env("CARGO_TARGET_DIR", target),
        None => cmd
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR"),
    };
    let out = run_ok(&mut cmd);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let wasm = PathBuf::from(stdout.lines().last().expect("a path").trim());
    let bytes = std::fs::read(cwd.join(&wasm))
        .unwrap_or_else(|e| panic!("{} (printed by {cmd:?}): {e}", wasm.display()));
    // The preamble: magic, then version and layer; layer 1 is a component.
    assert!(
        bytes.starts_with(b"\0asm") && bytes.get(6..8) == Some(&[1, 0]),
        "{} is not a component",
        wasm.display()
    );
    wasm
}

/// `fedwasm plugin new DIR --hook HOOK` run in `cwd`.
fn new_plugin_in(cwd: &Path, dir: &str, hook: &str) {
    run_ok(
        fedwasm()
            .current_dir(cwd)
            .args(["plugin", "new", dir, "--hook", hook]),
    );
}

#[test]
fn plan_distribute_follows_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_json(
        dir.path(),
        "req.json",
        &json!({"hook": "distribute", "object": "ns/name", "totalReplicas": 50,
                "clusters": ["A", "B", "C"], "current": {"A": 10}, "capacity": {"C": 10}}),
    );
    let out = stdout_json(&run_ok(
        fedwasm()
            .arg("plan")
            .arg(&file)
            .arg("--no-cache")
            .args(["--deadline-ms", CONTRACT_DEADLINE_MS]),
    ));
    assert_eq!(out["plan"], json!({"A": 20, "B": 20, "C": 10}), "{out}");
    // C's even share is 16 or 17 depending on the deterministic tie-break.
    let overflow = out["overflow"]["C"].as_u64().unwrap();
    assert!(overflow == 6 || overflow == 7, "{out}");
    assert_eq!(
        out.as_object().unwrap().len(),
        2,
        "only plan and overflow: {out}"
    );

    // Preferences: minimums first, then weights, maxima respected.
    let file = write_json(
        dir.path(),
        "prefs.json",
        &json!({"hook": "distribute", "object": "ns/name", "totalReplicas": 10,
                "clusters": ["A", "B"],
                "preferences": {"rebalance": true, "clusters": {
                    "A": {"minReplicas": 0, "maxReplicas": 3, "weight": 1},
                    "B": {"minReplicas": 0, "weight": 1}}}}),
    );
    let out = stdout_json(&run_ok(
        fedwasm()
            .arg("plan")
            .arg(&file)
            .arg("--no-cache")
            .args(["--deadline-ms", CONTRACT_DEADLINE_MS]),
    ));
    assert_eq!(out, json!({"plan": {"A": 3, "B": 7}, "overflow": {}}));
}

#[test]
fn plan_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{not json", "not JSON"),
        (
            r#"{"hook": "distribute", "clusters": ["A"]}"#,
            "totalReplicas",
        ),
        (r#"{"hook": "teleport"}"#, "teleport"),
        (
            r#"{"hook": "distribute", "totalReplicas": 1, "clusters": ["A"], "preferences": {"clusters": {"A": {"weight": -1}}}}"#,
            "weight",
        ),
    ];
    for (body, needle) in cases {
        let file = dir.path().join("bad.json");
        std::fs::write(&file, body).unwrap();
        let out = fedwasm()
            .arg("plan")
            .arg(&file)
            .arg("--no-cache")
            .args(["--deadline-ms", CONTRACT_DEADLINE_MS])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{body} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{body}: {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(needle),
            "{body}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    let missing = fedwasm()
        .args(["plan", "/nonexistent/req.json"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/req.json"));
}

/// Runs `cmd` with `stream` (stdout or stderr) a pipe whose reading end is closed
/// at once, so whatever it writes there fails with EPIPE; returns the exit status
/// and whatever went to the other stream.
fn run_with_closed(cmd: &mut Command, stream: &str) -> (ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fedwasm runs");
    match stream {
        "stdout" => drop(child.stdout.take()),
        _ => drop(child.stderr.take()),
    }
    let out = child.wait_with_output().unwrap();
    let other = if stream == "stdout" {
        out.stderr
    } else {
        out.stdout
    };
    (out.status, String::from_utf8_lossy(&other).into_owned())
}

#[test]
fn plan_to_a_closed_stdout_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_json(
        dir.path(),
        "req.json",
        &json!({"hook": "distribute", "object": "ns/name", "totalReplicas": 10,
                "clusters": ["A", "B", "C"]}),
    );
    // `fedwasm plan F | head -c0`: the reader is gone before the plan is printed.
    let (status, stderr) = run_with_closed(
        fedwasm()
            .arg("plan")
            .arg(&file)
            .arg("--no-cache")
            .args(["--deadline-ms", CONTRACT_DEADLINE_MS]),
        "stdout",
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(status.code(), Some(101), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "", "nothing to say when the reader left");
}

#[test]
fn errors_to_a_closed_stderr_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let (status, stdout) = run_with_closed(fedwasm().arg("plan").arg(&missing), "stderr");
    // Still the exit status of an error, not the 101 of a panic.
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(stdout, "");
}

/// The built-in weighted-spread component as a file, for `plugin bench`.
fn weighted_spread_file(dir: &Path) -> PathBuf {
    let path = dir.join("weighted-spread.wasm");
    let bytes = fedwasm_host::runtime::built_in_bytes("weighted-spread").expect("embedded");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bench_to_a_closed_stdout_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weighted_spread_file(dir.path());
    let file = write_json(
        dir.path(),
        "req.json",
        &json!({"hook": "distribute", "object": "ns/name", "totalReplicas": 10,
                "clusters": ["A", "B", "C"]}),
    );
    for json in [false, true] {
        let mut cmd = fedwasm();
        cmd.args(["plugin", "bench"])
            .arg(&wasm)
            .arg("--input")
            .arg(&file)
            .args([
                "--calls",
                "100",
                "--no-cache",
                "--deadline-ms",
                CONTRACT_DEADLINE_MS,
            ]);
        if json {
            cmd.arg("--json");
        }
        let (status, stderr) = run_with_closed(&mut cmd, "stdout");
        assert!(!stderr.contains("panicked"), "json {json}: {stderr}");
        assert!(status.success(), "json {json}: {status}: {stderr}");
        assert_eq!(stderr, "", "json {json}");
    }
}

#[test]
fn bench_rejects_calls_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weighted_spread_file(dir.path());
    let file = write_json(
        dir.path(),
        "req.json",
        &json!({"hook": "distribute", "totalReplicas": 1, "clusters": ["A"]}),
    );
    for calls in ["18446744073709551615", "10000001", "0"] {
        let out = fedwasm()
            .args(["plugin", "bench"])
            .arg(&wasm)
            .arg("--input")
            .arg(&file)
            .args([
                "--calls",
                calls,
                "--no-cache",
                "--deadline-ms",
                CONTRACT_DEADLINE_MS,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--calls {calls}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "--calls {calls}: {stderr}");
        assert!(!stderr.contains("panicked"), "--calls {calls}: {stderr}");
        assert!(out.stdout.is_empty(), "--calls {calls}");
        // One error line (clap adds a hint to try --help) naming the flag and range.
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "--calls {calls}: {stderr}");
        assert!(
            errors[0].contains("--calls") && errors[0].contains("1..=10000000"),
            "--calls {calls}: {stderr}"
        );
    }
}

#[test]
fn plugin_new_build_plan_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let target = plugin_target_dir();
    let mut built = Vec::new();
    for hook in ["select", "distribute", "rank"] {
        let crate_dir = dir.path().join(format!("my-{hook}"));
        run_ok(
            fedwasm()
                .args(["plugin", "new"])
                .arg(&crate_dir)
                .args(["--hook", hook]),
        );
        // The scaffold refuses to overwrite.
        let again = fedwasm()
            .args(["plugin", "new"])
            .arg(&crate_dir)
            .args(["--hook", hook])
            .output()
            .unwrap();
        assert!(!again.status.success());
        let wasm = build_plugin(&crate_dir, &target);
        assert!(wasm.exists(), "{}", wasm.display());
        built.push((hook, wasm));
    }
    let requests = [
        json!({"hook": "select", "object": {"name": "x"}, "clusters": [
            {"name": "a", "ready": true}, {"name": "b", "ready": false}]}),
        json!({"hook": "distribute", "totalReplicas": 5, "clusters": ["a", "b"]}),
        json!({"hook": "rank", "client": {}, "backends": [
            {"cluster": "a", "healthy": false}, {"cluster": "b", "healthy": true}]}),
    ];
    let expected = [
        json!({"selected": [{"cluster": "a", "score": 100}]}),
        json!({"plan": {"a": 3, "b": 2}, "overflow": {}}),
        json!({"order": ["b", "a"], "indices": [1, 0]}),
    ];
    for (((hook, wasm), req), want) in built.iter().zip(&requests).zip(&expected) {
        let file = write_json(dir.path(), &format!("{hook}.json"), req);
        let out = run_ok(
            fedwasm()
                .arg("plan")
                .arg(&file)
                .arg("--plugin")
                .arg(wasm)
                .arg("--no-cache")
                .args(["--deadline-ms", CONTRACT_DEADLINE_MS]),
        );
        assert_eq!(&stdout_json(&out), want, "{hook}");
    }
    let (_, distribute) = &built[1];
    let file = dir.path().join("distribute.json");
    let out = run_ok(
        fedwasm()
            .args(["plugin", "bench"])
            .arg(distribute)
            .arg("--input")
            .arg(&file)
            .args([
                "--json",
                "--calls",
                "2000",
                "--no-cache",
                "--deadline-ms",
                CONTRACT_DEADLINE_MS,
            ]),
    );
    let report = stdout_json(&out);
    assert_eq!(report["calls"], 2000);
    for key in ["median_ns", "p99_ns", "instantiate_ns"] {
        assert!(report[key].as_u64().unwrap() > 0, "{key}: {report}");
    }
    assert!(report["p99_ns"].as_u64() >= report["median_ns"].as_u64());
}

#[test]
fn the_tutorial_plugin_builds_and_places_replicas_in_as_few_clusters_as_possible() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins/aggregate");
    let wasm = build_plugin(&example, &plugin_target_dir());
    let dir = tempfile::tempdir().unwrap();
    let file = write_json(
        dir.path(),
        "req.json",
        &json!({"hook": "distribute", "object": "ns/web", "totalReplicas": 12,
                "clusters": ["a", "b", "c"],
                "preferences": {"clusters": {"a": {"weight": 1, "maxReplicas": 5}, "b": {"weight": 3}, "c": {"weight": 2}}},
                "capacity": {"b": 8}}),
    );
    let out = stdout_json(&run_ok(
        fedwasm()
            .arg("plan")
            .arg(&file)
            .arg("--plugin")
            .arg(&wasm)
            .arg("--no-cache")
            .args(["--deadline-ms", CONTRACT_DEADLINE_MS]),
    ));
    // b first (heaviest) up to its capacity of 8, then c takes the remaining 4.
    assert_eq!(out["plan"], json!({"a": 0, "b": 8, "c": 4}), "{out}");
}

/// What `plugin new` prints as the next step, run as printed: a relative DIR and
/// no `CARGO_TARGET_DIR`, so the component lands in `DIR/target`.
#[test]
fn plugin_build_of_a_relative_dir_as_plugin_new_suggests() {
    let cwd = tempfile::tempdir().unwrap();
    new_plugin_in(cwd.path(), "myplug", "distribute");
    let wasm = build_plugin_in(cwd.path(), Path::new("myplug"), None);
    assert_eq!(
        wasm,
        cwd.path()
            .canonicalize()
            .unwrap()
            .join("myplug/target/fedwasm/myplug.wasm")
    );
}

/// A plugin created inside a workspace that lists it joins that workspace, and
/// builds (from the workspace root, its package version inherited) into the
/// workspace's target directory.
#[test]
fn plugin_build_of_a_workspace_member_uses_the_workspace_target_dir() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"plugins/p1\"]\nresolver = \"2\"\n\n[workspace.package]\nversion = \"0.3.0\"\n",
    )
    .unwrap();
    new_plugin_in(root.path(), "plugins/p1", "select");
    let manifest = root.path().join("plugins/p1/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(!text.contains("[workspace]"), "{text}");
    std::fs::write(
        &manifest,
        text.replace("version = \"0.1.0\"", "version.workspace = true"),
    )
    .unwrap();
    let wasm = build_plugin_in(root.path(), Path::new("plugins/p1"), None);
    assert_eq!(
        wasm,
        root.path()
            .canonicalize()
            .unwrap()
            .join("target/fedwasm/p1.wasm")
    );
    assert!(!root.path().join("plugins/p1/target").exists());
}

/// `CARGO_TARGET_DIR` decides where the component goes, given absolute or relative
/// to where `fedwasm` runs (not to the crate, where cargo runs).
#[test]
fn plugin_build_puts_the_component_under_cargo_target_dir() {
    let cwd = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    new_plugin_in(cwd.path(), "myplug", "rank");
    let want = target
        .path()
        .canonicalize()
        .unwrap()
        .join("fedwasm/myplug.wasm");
    let wasm = build_plugin_in(cwd.path(), Path::new("myplug"), Some(target.path()));
    assert_eq!(wasm, want);
    // Both temp dirs are in the same parent; the build is fresh by now.
    let relative = Path::new("..").join(target.path().file_name().unwrap());
    let wasm = build_plugin_in(cwd.path(), Path::new("myplug"), Some(&relative));
    assert_eq!(wasm, want);
    assert!(!cwd.path().join("myplug/target").exists());
}

/// `fedwasm run` in the background, killed on drop (also when a test panics).
struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_run(plugins: &Path) -> Running {
    start_run_with(plugins, &[])
}

fn start_run_with(plugins: &Path, extra: &[&str]) -> Running {
    let mut child = fedwasm()
        .arg("run")
        .arg("--plugins")
        .arg(plugins)
        .args([
            "--admin",
            "127.0.0.1:0",
            "--debounce-ms",
            "50",
            "--no-cache",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut running = Running {
        child,
        base: String::new(),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    running.base = line
        .trim()
        .strip_prefix("admin API: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    running
}

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::get(url).unwrap()
}

#[test]
fn run_serves_the_admin_api_and_hot_reloads() {
    let plugins = tempfile::tempdir().unwrap();
    let running = start_run(plugins.path());
    let base = &running.base;
    assert_eq!(get(&format!("{base}/healthz")).text().unwrap().trim(), "ok");

    let listed: Value = get(&format!("{base}/plugins")).json().unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["label-selector", "nearest-healthy", "weighted-spread"]
    );
    for p in listed.as_array().unwrap() {
        assert_eq!(p["built_in"], true);
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        assert!(p["generation"].as_u64().is_some());
        assert!(p["last_error"].is_null());
    }

    let client = reqwest::blocking::Client::new();
    let body =
        json!({"hook": "distribute", "object": "ns/a", "totalReplicas": 4, "clusters": ["x", "y"]});
    let resp = client
        .post(format!("{base}/plan"))
        .body(body.to_string())
        .send()
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(
        resp.json::<Value>().unwrap(),
        json!({"plan": {"x": 2, "y": 2}, "overflow": {}})
    );

    let resp = client
        .post(format!("{base}/plan"))
        .body(
            json!({"hook": "distribute", "plugin": "nope", "totalReplicas": 1, "clusters": ["x"]})
                .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.json::<Value>().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("nope"));
    let resp = client
        .post(format!("{base}/plan"))
        .body("{")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Hot reload: a scaffolded plugin copied in as `evenly` starts answering.
    let src = tempfile::tempdir().unwrap();
    let crate_dir = src.path().join("evenly");
    run_ok(
        fedwasm()
            .args(["plugin", "new"])
            .arg(&crate_dir)
            .args(["--hook", "distribute"]),
    );
    let wasm = build_plugin(&crate_dir, &plugin_target_dir());
    std::fs::copy(&wasm, plugins.path().join("evenly.wasm")).unwrap();
    let body = json!({"hook": "distribute", "plugin": "evenly", "totalReplicas": 3, "clusters": ["x", "y"]});
    let until = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let resp = client
            .post(format!("{base}/plan"))
            .body(body.to_string())
            .send()
            .unwrap();
        if resp.status().is_success() {
            break resp.json::<Value>().unwrap();
        }
        assert!(Instant::now() < until, "the new plugin never answered");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer, json!({"plan": {"x": 2, "y": 1}, "overflow": {}}));

    // A broken file of the same name is rejected; the good one keeps serving.
    std::fs::write(plugins.path().join("evenly.wasm"), b"garbage").unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: Value = get(&format!("{base}/plugins")).json().unwrap();
        let evenly = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "evenly")
            .cloned()
            .unwrap();
        // The write is not atomic: the file may first be seen empty (a `read`
        // rejection); what counts is that its final content is rejected.
        if evenly["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("compile"))
        {
            assert!(evenly["generation"].is_u64(), "{evenly}");
            break;
        }
        assert!(Instant::now() < until, "the rejection never showed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let resp = client
        .post(format!("{base}/plan"))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.json::<Value>().unwrap(), answer);

    let metrics = get(&format!("{base}/metrics")).text().unwrap();
    for needle in [
        "fedwasm_plugin_calls_total",
        "fedwasm_plugin_call_duration_seconds_bucket",
        r#"fedwasm_plugin_reloads_total{plugin="evenly",result="ok"} 1"#,
        r#"fedwasm_plugin_reloads_total{plugin="evenly",result="compile"} 1"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing from {metrics}");
    }
}

/// Runs `fedwasm dev down` on drop, so a failing test leaves no apiserver behind.
struct DevDown(PathBuf);

impl Drop for DevDown {
    fn drop(&mut self) {
        let _ = fedwasm()
            .args(["dev", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", "federation"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fedwasm preview` against the federation a real host runs: the serving plugin
/// previewed as itself changes nothing; a candidate under the name an object asks
/// for (and the host lacks) places that object; bad input is listed as an error.
fn preview_against_the_running_host(
    dir: &Path,
    tmp: &Path,
    wait: &dyn Fn(&str, &dyn Fn() -> bool),
) {
    let kubeconfig = dir.join("kubeconfig");
    // What a preview shows depends on which members are Ready. On a loaded machine
    // (CI runs these tests side by side) a member's probe can fail for a few
    // seconds and the host mark it away; a preview taken then is about another
    // federation. So each preview is taken again until both members were Ready
    // before and after it.
    let both_ready = || {
        kubectl(
            &kubeconfig,
            &["get", "clusters", "-o", "jsonpath={.items[*].status.phase}"],
            None,
        ) == "Ready Ready"
    };
    let preview_of = |command: &mut Command| -> std::process::Output {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            wait("both members Ready", &both_ready);
            let out = run_ok(command);
            if both_ready() {
                return out;
            }
            assert!(
                Instant::now() < until,
                "a member kept going away during previews"
            );
        }
    };
    let deployment = |name: &str, annotations: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    };
    let manifests = [
        deployment("web", json!({})),
        deployment("packed", json!({"fedwasm.io/distribute-plugin": "packer"})),
        deployment(
            "garbled",
            json!({"federation.kubernetes.io/replica-set-preferences": "{not json"}),
        ),
    ];
    for m in &manifests {
        kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&m.to_string()));
    }
    wait("web placed 2/2", &|| {
        let placement = kubectl(
            &kubeconfig,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.metadata.annotations.fedwasm\\.io/placement}",
            ],
            None,
        );
        serde_json::from_str::<Value>(&placement).is_ok_and(|p| {
            p["m1"]["replicas"] == 2 && p["m2"]["replicas"] == 2 && p["m1"]["state"] == "Applied"
        })
    });
    let wasm = weighted_spread_file(tmp);

    let out = preview_of(
        fedwasm()
            .arg("preview")
            .arg(&wasm)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--context", "federation", "--json"]),
    );
    let preview = stdout_json(&out);
    let objects: Vec<&str> = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["object"].as_str().unwrap())
        .collect();
    assert!(!objects.contains(&"default/web"), "{preview}");
    let errors = preview["errors"].as_array().unwrap();
    let garbled = errors
        .iter()
        .find(|e| e["object"] == "default/garbled")
        .unwrap_or_else(|| panic!("{preview}"));
    assert_eq!(garbled["kind"], "Deployment");
    assert!(
        garbled["error"]
            .as_str()
            .unwrap()
            .contains("replica-set-preferences"),
        "{garbled}"
    );
    let packed = errors
        .iter()
        .find(|e| e["object"] == "default/packed")
        .unwrap_or_else(|| panic!("{preview}"));
    assert!(
        packed["error"].as_str().unwrap().contains("packer"),
        "{packed}"
    );

    let out = preview_of(
        fedwasm()
            .arg("preview")
            .arg(&wasm)
            .args(["--as", "packer", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--json"),
    );
    let preview = stdout_json(&out);
    let packed = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"] == "default/packed")
        .unwrap_or_else(|| panic!("{preview}"))
        .clone();
    assert_eq!(packed["before"], json!({}), "{packed}");
    assert_eq!(packed["after"], json!({"m1": 2, "m2": 2}), "{packed}");
    assert!(
        !preview["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["object"] == "default/web"),
        "{preview}"
    );

    kubectl(
        &kubeconfig,
        &["delete", "deployment", "packed", "garbled"],
        None,
    );
    let out = preview_of(
        fedwasm()
            .arg("preview")
            .arg(&wasm)
            .arg("--kubeconfig")
            .arg(&kubeconfig),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no change"), "{text}");
    assert!(
        text.contains("0 object(s) would change, 0 would fail"),
        "{text}"
    );
}

/// `dev up --detach` against real apiservers (the host too), then an outage of one
/// member through `dev stop`/`dev start`, seen by the host, and `dev down`.
#[test]
fn dev_up_stop_start_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fed");
    let _down = DevDown(dir.clone());
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = run_ok(
        fedwasm()
            .args([
                "dev",
                "up",
                "--members",
                "2",
                "--detach",
                "--admin",
                &admin,
                "--dir",
            ])
            .arg(&dir),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kubeconfig:"), "{stdout}");
    let kubeconfig: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("kubeconfig")).unwrap()).unwrap();
    let contexts: Vec<&str> = kubeconfig["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["federation", "m1", "m2"]);
    assert!(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"].is_string());
    assert!(kubeconfig["clusters"][0]["cluster"]
        .get("insecure-skip-tls-verify")
        .is_none());

    // The detached host serves its admin API and sees both members Ready.
    let http = reqwest::blocking::Client::new();
    let metrics = || {
        http.get(format!("http://{admin}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("2 members ready", &|| {
        metrics().contains("fedwasm_members{phase=\"Ready\"} 2")
    });

    preview_against_the_running_host(&dir, tmp.path(), &wait);

    run_ok(fedwasm().args(["dev", "stop", "m2", "--dir"]).arg(&dir));
    wait("m2 offline", &|| {
        metrics().contains("fedwasm_members{phase=\"Offline\"} 1")
    });
    run_ok(fedwasm().args(["dev", "start", "m2", "--dir"]).arg(&dir));
    wait("m2 back", &|| {
        metrics().contains("fedwasm_members{phase=\"Ready\"} 2")
    });

    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let mut pids: Vec<u64> = state["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["pid"].as_u64())
        .collect();
    pids.push(state["etcd_pid"].as_u64().unwrap());
    pids.push(
        std::fs::read_to_string(dir.join("host.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    assert_eq!(pids.len(), 5);
    run_ok(fedwasm().args(["dev", "down", "--dir"]).arg(&dir));
    wait("every process gone", &|| pids.iter().all(|p| !alive(*p)));
    assert!(!dir.join("state.json").exists());

    // The demo's way: `dev up` in the foreground, an outage through `dev stop`/`dev
    // start` (separate processes), then Ctrl-C on `dev up`, which must stop the
    // apiserver `dev start` started too.
    let dir = tmp.path().join("foreground");
    let _down = DevDown(dir.clone());
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let log = tmp.path().join("foreground.log");
    let mut up = Killed(
        fedwasm()
            .args(["dev", "up", "--members", "2", "--admin", &admin, "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let metrics = || {
        http.get(format!("http://{admin}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let until = Instant::now() + Duration::from_secs(120);
    while !metrics().contains("fedwasm_members{phase=\"Ready\"} 2") {
        assert!(
            up.0.try_wait().unwrap().is_none(),
            "dev up exited: {}",
            log_text()
        );
        assert!(Instant::now() < until, "no 2 Ready members: {}", log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let recorded = || {
        let state: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap())
                .unwrap();
        let mut pids: Vec<u64> = state["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["pid"].as_u64())
            .collect();
        pids.extend(state["etcd_pid"].as_u64());
        pids
    };
    let mut pids = recorded();
    assert_eq!(pids.len(), 4, "3 apiservers and etcd");
    run_ok(fedwasm().args(["dev", "stop", "m2", "--dir"]).arg(&dir));
    run_ok(fedwasm().args(["dev", "start", "m2", "--dir"]).arg(&dir));
    let restarted = recorded();
    assert_eq!(restarted.len(), 4, "m2 is recorded again");
    let new: Vec<u64> = restarted
        .into_iter()
        .filter(|p| !pids.contains(p))
        .collect();
    pids.extend(new);
    assert_eq!(pids.len(), 5, "m2 has a new pid");

    // SAFETY: kill(2) on the `dev up` child this test started and has not reaped.
    unsafe { libc::kill(up.0.id() as i32, libc::SIGINT) };
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = up.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < until,
            "dev up did not stop on SIGINT: {}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "dev up: {status}: {}", log_text());
    let left: Vec<u64> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still running after Ctrl-C: {left:?}");
    assert!(!dir.join("state.json").exists());
}

/// A child process killed (SIGKILL) and reaped on drop, when a test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `fedwasm run` against a federation, with its admin API address; killed when
/// dropped.
struct Host {
    child: Child,
    admin: String,
    log: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Its log goes to `log`.
    fn start(kubeconfig: &Path, log: PathBuf) -> Host {
        let mut child = fedwasm()
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--admin",
                "127.0.0.1:0",
                "--no-cache",
                "--probe-interval-secs",
                "1",
                // The election's defaults (15 s lease, 10 s renew deadline, 2 s
                // retry): shorter ones lose leases on a loaded CI machine.
                "--deadline-ms",
                "200",
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let admin = loop {
            let line = lines
                .next()
                .expect("`run` printed its admin address")
                .unwrap();
            if let Some(url) = line.strip_prefix("admin API: ") {
                break url.to_string();
            }
        };
        // Keep reading so the host never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Host { child, admin, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn leadership(&self) -> Option<Value> {
        reqwest::blocking::get(format!("{}/leader", self.admin))
            .ok()?
            .json()
            .ok()
    }

    fn leads(&self) -> bool {
        self.leadership().is_some_and(|l| l["leading"] == true)
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

fn wait_for(what: &str, limit: Duration, f: &dyn Fn() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` ConfigMaps `prefix-i` in namespace `ha` of the federation plane, at once.
fn create_config_maps(kubeconfig: &Path, prefix: &str, n: usize) {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("{prefix}-{i}"), "namespace": "ha"},
                "data": {"i": i.to_string()}})
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    kubectl(kubeconfig, &["apply", "-f", "-"], Some(&list.to_string()));
}

/// `name managed-by` of each ConfigMap `prefix-*` in namespace `ha` of `member`.
fn config_map_owners(kubeconfig: &Path, member: &str, prefix: &str) -> Vec<String> {
    let listing = kubectl(
        kubeconfig,
        &[
            "--context",
            member,
            "get",
            "configmaps",
            "-n",
            "ha",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.fedwasm\\.io/managed-by}{\"\\n\"}{end}",
        ],
        None,
    );
    listing
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

/// The `Conflict` events in the federation plane: a member object fedwasm met and
/// did not take over (none when two hosts, or one restarted, never fought).
fn conflict_events(kubeconfig: &Path) -> String {
    kubectl(
        kubeconfig,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=Conflict",
            "-o",
            "name",
        ],
        None,
    )
}

fn member_config_maps(kubeconfig: &Path, prefix: &str) -> usize {
    member_config_maps_in(kubeconfig, "m1", prefix)
}

/// ConfigMaps `prefix-*` in namespace `ha` of `member`.
fn member_config_maps_in(kubeconfig: &Path, member: &str, prefix: &str) -> usize {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--context",
            member,
            "get",
            "configmaps",
            "-n",
            "ha",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("configmap/{prefix}-")))
        .count()
}

/// Several hosts against one federation plane: one leads; a leader frozen past
/// its renew deadline is replaced and, when it wakes, stops (exits non-zero)
/// instead of writing; a leader killed with SIGKILL while it propagates 200
/// objects is replaced and the work finishes, nothing lost or duplicated; no two
/// hosts fight over an object; a leader stopped gracefully releases the lease.
#[test]
fn leader_election_fences_a_frozen_leader_and_a_standby_finishes_a_killed_leaders_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fed");
    let _down = DevDown(dir.clone());
    run_ok(
        fedwasm()
            .args([
                "dev",
                "up",
                "--members",
                "1",
                "--no-host",
                "--detach",
                "--dir",
            ])
            .arg(&dir),
    );
    let kubeconfig = dir.join("kubeconfig");
    let a = Host::start(&kubeconfig, tmp.path().join("a.log"));
    let b = Host::start(&kubeconfig, tmp.path().join("b.log"));
    wait_for("one of two hosts leads", Duration::from_secs(60), &|| {
        a.leads() != b.leads()
    });
    let (leader, mut standby) = if a.leads() { (a, b) } else { (b, a) };
    let leader_id = leader.leadership().unwrap()["identity"].clone();
    wait_for(
        "the standby sees who leads",
        Duration::from_secs(10),
        &|| {
            standby
                .leadership()
                .is_some_and(|l| l["leader"] == leader_id)
        },
    );
    kubectl(&kubeconfig, &["create", "namespace", "ha"], None);
    create_config_maps(&kubeconfig, "first", 20);
    wait_for("20 ConfigMaps in m1", Duration::from_secs(60), &|| {
        member_config_maps(&kubeconfig, "first") == 20
    });

    // Frozen past its renew deadline (as if partitioned): the standby takes over.
    signal(leader.pid(), "STOP");
    wait_for("the standby leads", Duration::from_secs(60), &|| {
        standby.leads()
    });
    create_config_maps(&kubeconfig, "second", 10);
    wait_for("10 more ConfigMaps in m1", Duration::from_secs(60), &|| {
        member_config_maps(&kubeconfig, "second") == 10
    });
    // Woken up, the old leader finds its lease gone and stops writing: it exits.
    signal(leader.pid(), "CONT");
    let mut old = leader;
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = old.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the fenced leader still runs");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "a fenced leader exits non-zero: {status}"
    );

    // SIGKILL of the leader while objects arrive: a new standby finishes the work.
    let third = Host::start(&kubeconfig, tmp.path().join("third.log"));
    wait_for("the new host stands by", Duration::from_secs(30), &|| {
        third
            .leadership()
            .is_some_and(|l| l["leading"] == false && l["leader"].is_string())
    });
    // kubectl applies the 200 one after the other: the leader is killed while it
    // propagates the first ones and more keep arriving.
    let creating = {
        let kubeconfig = kubeconfig.clone();
        std::thread::spawn(move || create_config_maps(&kubeconfig, "third", 200))
    };
    wait_for("the leader propagating", Duration::from_secs(60), &|| {
        member_config_maps(&kubeconfig, "third") >= 1
    });
    signal(standby.pid(), "KILL");
    let _ = standby.child.wait();
    let cut = member_config_maps(&kubeconfig, "third");
    creating.join().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !third.leads() {
        assert!(
            Instant::now() < until,
            "the third host does not lead; its log:\n{}",
            third.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let n = member_config_maps(&kubeconfig, "third");
        if n == 200 {
            break;
        }
        assert!(
            Instant::now() < until,
            "{n} of 200 ConfigMaps in m1 after 180 s; the new leader's log:\n{}",
            third.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{cut} of 200 ConfigMaps had reached m1 when the leader was killed");
    // Nothing duplicated or foreign: every copy is fedwasm's, none twice.
    let copies = config_map_owners(&kubeconfig, "m1", "third");
    assert_eq!(copies.len(), 200);
    assert!(copies.iter().all(|l| l.ends_with(" fedwasm")), "{copies:?}");
    let conflicts = conflict_events(&kubeconfig);
    assert_eq!(conflicts.trim(), "", "two hosts fought over an object");

    // A graceful stop releases the lease.
    signal(third.pid(), "TERM");
    let mut third = third;
    let status = third.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let holder = kubectl(
        &kubeconfig,
        &[
            "get",
            "lease",
            "-n",
            "fedwasm-system",
            "fedwasm",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert_eq!(
        holder,
        "",
        "the lease is released on SIGTERM; the host's log:\n{}",
        third.log()
    );
}

/// `kill -9` of the only host while it propagates 500 objects to two members, then
/// a restart: every object converges in both members, nothing lost, nothing
/// duplicated or foreign, no conflict.
#[test]
fn a_host_killed_while_propagating_500_objects_converges_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fed");
    let _down = DevDown(dir.clone());
    run_ok(
        fedwasm()
            .args([
                "dev",
                "up",
                "--members",
                "2",
                "--no-host",
                "--detach",
                "--dir",
            ])
            .arg(&dir),
    );
    let kubeconfig = dir.join("kubeconfig");
    let first = Host::start(&kubeconfig, tmp.path().join("first.log"));
    wait_for("the host leads", Duration::from_secs(60), &|| first.leads());
    kubectl(&kubeconfig, &["create", "namespace", "ha"], None);
    create_config_maps(&kubeconfig, "burst", 500);
    wait_for("the host propagating", Duration::from_secs(60), &|| {
        member_config_maps_in(&kubeconfig, "m1", "burst") >= 1
    });
    signal(first.pid(), "KILL");
    let mut first = first;
    let _ = first.child.wait();
    let cut = (
        member_config_maps_in(&kubeconfig, "m1", "burst"),
        member_config_maps_in(&kubeconfig, "m2", "burst"),
    );
    let second = Host::start(&kubeconfig, tmp.path().join("second.log"));
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let n = (
            member_config_maps_in(&kubeconfig, "m1", "burst"),
            member_config_maps_in(&kubeconfig, "m2", "burst"),
        );
        if n == (500, 500) {
            break;
        }
        assert!(
            Instant::now() < until,
            "{n:?} of 500 ConfigMaps in m1, m2 after 240 s; the restarted host's log:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{cut:?} of 500 ConfigMaps were in m1, m2 when the host was killed");
    for member in ["m1", "m2"] {
        let copies = config_map_owners(&kubeconfig, member, "burst");
        assert_eq!(copies.len(), 500, "{member}: {copies:?}");
        assert!(
            copies.iter().all(|l| l.ends_with(" fedwasm")),
            "{member}: a copy not made by fedwasm: {copies:?}"
        );
    }
    let conflicts = conflict_events(&kubeconfig);
    assert_eq!(
        conflicts.trim(),
        "",
        "the restarted host fought its own copies"
    );
}

/// `fedwasm` copied alone into an empty directory outside the repository and run
/// there with a fresh cache (only cargo's and rustup's homes are the real ones, for
/// the registry and the toolchain): `plugin new`, `plugin build`, `plan` and
/// `plugin check` work with the SDK the binary embeds.
#[test]
fn plugin_new_build_and_plan_with_only_the_binary_at_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path().canonicalize().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    assert!(
        !tmp.starts_with(&repo),
        "{} is in the repository",
        tmp.display()
    );
    let (bin, work, home) = (tmp.join("bin"), tmp.join("work"), tmp.join("home"));
    for dir in [&bin, &work, &home] {
        std::fs::create_dir(dir).unwrap();
    }
    let exe = bin.join("fedwasm");
    std::fs::copy(env!("CARGO_BIN_EXE_fedwasm"), &exe).unwrap();
    let real_home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
    let real = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| real_home.join(default), PathBuf::from)
    };
    let (cargo_home, rustup_home) = (real("CARGO_HOME", ".cargo"), real("RUSTUP_HOME", ".rustup"));
    let cache = home.join("cache");
    // Nothing of the test's environment (CARGO, CARGO_TARGET_DIR, ...) leaks in.
    let lone = |args: &[&str]| {
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            .current_dir(&work)
            .args(args)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", &cache)
            .env("CARGO_HOME", &cargo_home)
            .env("RUSTUP_HOME", &rustup_home);
        if let Some(toolchain) = std::env::var_os("RUSTUP_TOOLCHAIN") {
            cmd.env("RUSTUP_TOOLCHAIN", toolchain);
        }
        cmd
    };

    run_ok(&mut lone(&[
        "plugin",
        "new",
        "myplug",
        "--hook",
        "distribute",
    ]));
    let manifest = std::fs::read_to_string(work.join("myplug/Cargo.toml")).unwrap();
    let repo_text = repo.display().to_string();
    assert!(!manifest.contains(&repo_text), "{manifest}");
    let sdk_line = manifest
        .lines()
        .find(|l| l.starts_with("fedwasm-sdk"))
        .unwrap_or_else(|| panic!("no SDK dependency in {manifest}"));
    let sdk_root = cache.join("fedwasm/sdk");
    assert!(
        sdk_line.contains(&sdk_root.display().to_string()),
        "{sdk_line}"
    );
    let sdks: Vec<PathBuf> = std::fs::read_dir(&sdk_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(sdks.len(), 1, "{sdks:?}");
    let sdk_manifest = std::fs::read_to_string(sdks[0].join("Cargo.toml")).unwrap();
    // Outside any workspace: nothing inherited (comments may say so).
    assert!(
        !sdk_manifest
            .lines()
            .any(|l| !l.starts_with('#') && l.contains("workspace")),
        "{sdk_manifest}"
    );
    assert!(!sdk_manifest.contains(&repo_text), "{sdk_manifest}");

    let out = run_ok(&mut lone(&["plugin", "build", "myplug"]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let wasm = PathBuf::from(stdout.lines().last().expect("a path").trim());
    assert_eq!(wasm, work.join("myplug/target/fedwasm/myplug.wasm"));

    write_json(
        &work,
        "req.json",
        &json!({"hook": "distribute", "object": "ns/web", "totalReplicas": 5, "clusters": ["a", "b"]}),
    );
    let out = run_ok(&mut lone(&[
        "plan",
        "req.json",
        "--plugin",
        "myplug/target/fedwasm/myplug.wasm",
        "--no-cache",
        "--deadline-ms",
        CONTRACT_DEADLINE_MS,
    ]));
    assert_eq!(
        stdout_json(&out),
        json!({"plan": {"a": 3, "b": 2}, "overflow": {}})
    );
    // The scaffold's plugin survives the edge cases too.
    let out = run_ok(&mut lone(&[
        "plugin",
        "check",
        "myplug/target/fedwasm/myplug.wasm",
        "--no-cache",
        "--deadline-ms",
        CONTRACT_DEADLINE_MS,
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": 0 findings"), "{stdout}");
}

/// `fedwasm plugin check PLUGIN --json` (or without) and its exit status.
fn check(plugin: &Path, deadline_ms: &str, json: bool) -> Output {
    let mut cmd = fedwasm();
    cmd.args(["plugin", "check"])
        .arg(plugin)
        .args(["--no-cache", "--deadline-ms", deadline_ms]);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("fedwasm runs")
}

#[test]
fn plugin_check_passes_a_good_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weighted_spread_file(dir.path());
    let out = check(&wasm, CONTRACT_DEADLINE_MS, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the summary: {stdout}");
    assert!(
        lines[0].starts_with("weighted-spread: ") && lines[0].contains(" 0 findings"),
        "{stdout}"
    );
    let out = check(&wasm, CONTRACT_DEADLINE_MS, true);
    assert_eq!(out.status.code(), Some(0));
    let report = stdout_json(&out);
    assert_eq!(report["hooks"], json!(["distribute"]));
    assert!(report["cases"].as_u64().unwrap() >= 10, "{report}");
    assert_eq!(report["findings"], json!([]));
}

/// The `fragile` test plugin breaks on exactly these inputs (see its source); check
/// names each, and nothing else.
#[test]
fn plugin_check_reports_what_a_fragile_plugin_gets_wrong() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins/fragile");
    let wasm = build_plugin(&fixture, &plugin_target_dir());
    // Long enough that only the endless loop overruns it on a busy machine.
    let deadline = "2000";
    let out = check(&wasm, deadline, true);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout_json(&out);
    assert_eq!(report["hooks"], json!(["select", "distribute", "rank"]));
    let mut found: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("hook"), s("case"), s("kind"))
        })
        .collect();
    found.sort();
    let want = [
        ("distribute", "100 clusters", "trap"),
        ("distribute", "fewer replicas than clusters", "trap"),
        ("distribute", "total 0", "invalid_output"),
        ("distribute", "total u32::MAX over 100 clusters", "trap"),
        ("rank", "every backend unhealthy", "timeout"),
    ]
    .map(|(h, c, k)| (h.to_string(), c.to_string(), k.to_string()));
    assert_eq!(found, want, "{report}");
    assert_eq!(report["refusals"], json!([]));
    let total0 = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["case"] == "total 0")
        .unwrap();
    assert!(
        total0["message"]
            .as_str()
            .unwrap()
            .contains("more than the total of 0"),
        "{total0}"
    );

    // The same as text: one line per finding naming hook and case, then a summary.
    let out = check(&wasm, deadline, false);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), want.len() + 1, "{stdout}");
    for (line, (hook, case, kind)) in lines.iter().zip(&want) {
        assert!(
            line.starts_with(&format!("FAIL {hook} [{case}]: {kind}: ")),
            "{line} (in {stdout})"
        );
    }
    assert!(
        lines[want.len()].starts_with("fragile: ") && lines[want.len()].contains(" 5 findings"),
        "{stdout}"
    );
}

#[test]
fn plugin_check_of_a_file_that_does_not_load_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component").unwrap();
    for path in [garbage, dir.path().join("missing.wasm")] {
        let out = check(&path, CONTRACT_DEADLINE_MS, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(out.stdout.is_empty());
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(&path.display().to_string()) && errors[0].contains("does not load"),
            "{stderr}"
        );
    }
}

/// SIGTERM and SIGINT stop `fedwasm run` cleanly (exit 0) within a bound, even with
/// a client that sent half a request and then nothing.
#[test]
fn run_stops_within_a_bound_on_sigterm_and_sigint_with_a_request_half_sent() {
    use std::io::Write as _;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let plugins = tempfile::tempdir().unwrap();
        let mut running = start_run(plugins.path());
        let addr = running.base.trim_start_matches("http://").to_string();
        let mut half = std::net::TcpStream::connect(&addr).unwrap();
        half.write_all(b"POST /plan HTTP/1.1\r\nHost: x\r\nContent-Le")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        // SAFETY: kill(2) on the child this test started and has not reaped.
        unsafe { libc::kill(running.child.id() as i32, signal) };
        let status = loop {
            if let Some(status) = running.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still running 10 s after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "signal {signal}: {status:?}");
        drop(half);
    }
}

/// With --admin-token-file, the admin API wants the token everywhere but /healthz;
/// an empty token file is an error, not an open API.
#[test]
fn run_with_an_admin_token_file() {
    let plugins = tempfile::tempdir().unwrap();
    let token = plugins.path().join("token");
    std::fs::write(&token, "t0ken-for-the-admin\n").unwrap();
    let running = start_run_with(
        plugins.path(),
        &["--admin-token-file", token.to_str().unwrap()],
    );
    let base = &running.base;
    assert_eq!(get(&format!("{base}/healthz")).status().as_u16(), 200);
    assert_eq!(get(&format!("{base}/plugins")).status().as_u16(), 401);
    let with = reqwest::blocking::Client::new()
        .get(format!("{base}/plugins"))
        .bearer_auth("t0ken-for-the-admin")
        .send()
        .unwrap();
    assert_eq!(with.status().as_u16(), 200);
    let empty = plugins.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = fedwasm()
        .args([
            "run",
            "--admin",
            "127.0.0.1:0",
            "--no-cache",
            "--admin-token-file",
        ])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is empty"), "{stderr}");
}
