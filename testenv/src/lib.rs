//! Local federations of real `etcd` + `kube-apiserver` processes.
//!
//! One etcd serves every cluster (each apiserver has its own `--etcd-prefix`); the
//! federation plane is the cluster named [`FEDERATION`], the members carry the names
//! given in [`FederationSpec`]. Ports are picked free, state lives in one directory,
//! and every process started is stopped by pid when the [`LocalFederation`] is
//! dropped (also while a test unwinds from a panic) unless it was
//! [detached](LocalFederation::detach) for `fedwasm dev up --detach`, in which case
//! [`LocalFederation::attach`] finds it again from the directory's `state.json`.
//!
//! The calls here block (process start-up, readiness polling): from async code run
//! them in `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The name of the federation plane's cluster (and its kubeconfig context).
pub const FEDERATION: &str = "federation";
/// The cache key of the kube-apiserver `scripts/install-testenv.sh` builds: Debian's
/// version plus the revision of our build recipe.
pub const KUBE_VERSION: &str = "1.20.5+really1.20.2-r1";
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong while starting or driving a local federation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no etcd/kube-apiserver found ({0}); run `bash scripts/install-testenv.sh` or set \
         KUBEBUILDER_ASSETS to a folder holding both"
    )]
    MissingBinaries(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} did not become ready in {1:?}; see its log at {2}")]
    NotReady(String, Duration, PathBuf),
    #[error("{0} exited during start-up ({1}); see its log at {2}")]
    Exited(String, String, PathBuf),
    #[error("no cluster named `{0}` in this federation")]
    UnknownCluster(String),
    #[error("cluster names must be DNS labels other than `{FEDERATION}`: `{0}`")]
    BadName(String),
    #[error("`{0}` holds no local federation (no readable state.json): {1}")]
    NoState(PathBuf, String),
    #[error("{0}")]
    Command(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where the `etcd` and `kube-apiserver` binaries are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assets {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
}

impl Assets {
    /// `$KUBEBUILDER_ASSETS`, then the cache of `scripts/install-testenv.sh`
    /// (`$FEDWASM_CACHE` or `~/.cache/fedwasm`), then `$PATH`.
    pub fn locate() -> Result<Self, Error> {
        let mut tried = Vec::new();
        let mut dirs = Vec::new();
        if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
            dirs.push(PathBuf::from(dir));
        }
        let cache = std::env::var_os("FEDWASM_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fedwasm")));
        if let Some(cache) = cache {
            dirs.push(cache.join("testenv").join(KUBE_VERSION));
        }
        for dir in dirs {
            let assets = Assets {
                etcd: dir.join("etcd"),
                kube_apiserver: dir.join("kube-apiserver"),
            };
            if assets.etcd.is_file() && assets.kube_apiserver.is_file() {
                return Ok(assets);
            }
            tried.push(dir.display().to_string());
        }
        let on_path = |name: &str| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        };
        if let (Some(etcd), Some(kube_apiserver)) = (on_path("etcd"), on_path("kube-apiserver")) {
            return Ok(Assets {
                etcd,
                kube_apiserver,
            });
        }
        tried.push("$PATH".into());
        Err(Error::MissingBinaries(format!(
            "looked in {}",
            tried.join(", ")
        )))
    }
}

/// The installer `fedwasm dev up` runs when no binaries are found: the same script as
/// `scripts/install-testenv.sh`, embedded so the binary works outside the repository.
pub const INSTALL_SCRIPT: &str = include_str!("../../scripts/install-testenv.sh");

/// Finds the binaries, or installs them with [`INSTALL_SCRIPT`] (its progress goes
/// to stderr; the kube-apiserver build takes minutes the first time).
pub fn locate_or_install() -> Result<Assets, Error> {
    if let Ok(assets) = Assets::locate() {
        return Ok(assets);
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(INSTALL_SCRIPT)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(io("run the test-environment installer (bash)"))?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "the test-environment installer failed ({}); its progress above says where",
            out.status
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    let assets = Assets {
        etcd: dir.join("etcd"),
        kube_apiserver: dir.join("kube-apiserver"),
    };
    if assets.etcd.is_file() && assets.kube_apiserver.is_file() {
        Ok(assets)
    } else {
        Err(Error::MissingBinaries(format!(
            "the installer reported {}",
            dir.display()
        )))
    }
}

/// Which clusters to start.
#[derive(Clone, Debug, Default)]
pub struct FederationSpec {
    /// Member names (DNS labels), started besides the federation plane.
    pub members: Vec<String>,
    /// Where to keep state, logs and the kubeconfig; a temporary directory (removed
    /// on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// The binaries; [`Assets::locate`] when `None`.
    pub assets: Option<Assets>,
}

/// One cluster's endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterEndpoint {
    pub name: String,
    pub port: u16,
    /// The pid of its apiserver while it runs.
    pub pid: Option<u32>,
}

impl ClusterEndpoint {
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    assets: Assets,
    token: String,
    etcd_port: u16,
    etcd_peer_port: u16,
    etcd_pid: Option<u32>,
    clusters: Vec<ClusterEndpoint>,
}

struct Inner {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    state: Mutex<State>,
    children: Mutex<BTreeMap<String, Child>>,
    detached: AtomicBool,
}

/// A running local federation. Clones share it; the last one dropped stops every
/// process (unless detached).
#[derive(Clone)]
pub struct LocalFederation {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalFederation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFederation")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn valid_name(name: &str) -> bool {
    name != FEDERATION
        && !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("pick a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("pick a free port"))?
        .port())
}

fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 24];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("read /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), Error> {
    let out = cmd.output().map_err(io(what))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether `pid` exists and is not a zombie (a zombie is dead already).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Whether `pid` is alive and runs `binary` (guards against pid reuse).
fn runs(pid: u32, binary: &Path) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let name = binary.file_name().map(|n| n.to_string_lossy().into_owned());
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    name.is_some_and(|n| first.ends_with(&n))
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; reaps `child` when we own it.
fn terminate(pid: u32, binary: &Path, child: Option<Child>) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Some(mut child) = child {
        // SAFETY: kill(2) with a pid we started; no memory is touched.
        unsafe { libc::kill(raw, libc::SIGTERM) };
        let until = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= until => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    if !runs(pid, binary) {
        return;
    }
    // SAFETY: as above; the pid was checked to still run our binary.
    unsafe { libc::kill(raw, libc::SIGTERM) };
    let until = Instant::now() + STOP_TIMEOUT;
    // Not `runs`: an exiting process has an empty cmdline before it is gone.
    while alive(pid) {
        if Instant::now() >= until {
            // SAFETY: as above.
            unsafe { libc::kill(raw, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl LocalFederation {
    /// Starts etcd, the federation plane and every member, and waits until each
    /// apiserver answers `/readyz`.
    pub fn start(spec: FederationSpec) -> Result<Self, Error> {
        for name in &spec.members {
            if !valid_name(name) {
                return Err(Error::BadName(name.clone()));
            }
        }
        let assets = match spec.assets {
            Some(assets) => assets,
            None => Assets::locate()?,
        };
        let (dir, temp) = match spec.dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("fedwasm-testenv-")
                    .tempdir()
                    .map_err(io("create a temporary directory"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io(format!("resolve {}", dir.display())))?;
        if dir.join("state.json").exists() {
            return Err(Error::Command(format!(
                "{} already holds a local federation (state.json); `fedwasm dev down --dir {}` first",
                dir.display(),
                dir.display()
            )));
        }
        let token = random_token()?;
        fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )
        .map_err(io("write tokens.csv"))?;
        if !dir.join("sa.key").exists() {
            run(
                Command::new("openssl")
                    .args(["genrsa", "-out"])
                    .arg(dir.join("sa.key"))
                    .arg("2048"),
                "openssl genrsa",
            )?;
            run(
                Command::new("openssl")
                    .args(["rsa", "-in"])
                    .arg(dir.join("sa.key"))
                    .arg("-pubout")
                    .arg("-out")
                    .arg(dir.join("sa.pub")),
                "openssl rsa -pubout",
            )?;
        }
        let mut clusters = vec![ClusterEndpoint {
            name: FEDERATION.into(),
            port: free_port()?,
            pid: None,
        }];
        for name in &spec.members {
            clusters.push(ClusterEndpoint {
                name: name.clone(),
                port: free_port()?,
                pid: None,
            });
        }
        let state = State {
            assets,
            token,
            etcd_port: free_port()?,
            etcd_peer_port: free_port()?,
            etcd_pid: None,
            clusters,
        };
        let fed = LocalFederation {
            inner: Arc::new(Inner {
                dir,
                _temp: temp,
                state: Mutex::new(state),
                children: Mutex::new(BTreeMap::new()),
                detached: AtomicBool::new(false),
            }),
        };
        // From here on, a failure drops `fed`, which stops what did start.
        fed.start_etcd()?;
        let names: Vec<String> = fed.names();
        for name in &names {
            fed.spawn_apiserver(name)?;
        }
        for name in &names {
            fed.wait_ready(name)?;
        }
        fed.write_kubeconfig()?;
        fed.save()?;
        Ok(fed)
    }

    /// Finds a federation that `start` left running in `dir` (after
    /// [`detach`](Self::detach)). Dropping the handle leaves it running; call
    /// [`down`](Self::down) to stop it.
    pub fn attach(dir: &Path) -> Result<Self, Error> {
        let text = fs::read_to_string(dir.join("state.json"))
            .map_err(|e| Error::NoState(dir.to_path_buf(), e.to_string()))?;
        let state: State = serde_json::from_str(&text)
            .map_err(|e| Error::NoState(dir.to_path_buf(), e.to_string()))?;
        Ok(LocalFederation {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                _temp: None,
                state: Mutex::new(state),
                children: Mutex::new(BTreeMap::new()),
                detached: AtomicBool::new(true),
            }),
        })
    }

    /// Leaves every process running when the last handle is dropped.
    pub fn detach(&self) {
        self.inner.detached.store(true, Ordering::SeqCst);
    }

    /// Stops every process and forgets the federation (its directory keeps the logs).
    pub fn down(self) -> Result<(), Error> {
        self.stop_all();
        let _ = fs::remove_file(self.inner.dir.join("state.json"));
        self.inner.detached.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The directory holding state, logs and the kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A kubeconfig with one context per cluster (named like the cluster; the
    /// federation plane's is [`FEDERATION`], the current one), TLS verified against
    /// each apiserver's own certificate.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.inner.dir.join("kubeconfig")
    }

    /// Every cluster name, the federation plane first.
    pub fn names(&self) -> Vec<String> {
        self.state()
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// The member names.
    pub fn members(&self) -> Vec<String> {
        self.names()
            .into_iter()
            .filter(|n| n != FEDERATION)
            .collect()
    }

    /// One cluster's endpoint.
    pub fn endpoint(&self, name: &str) -> Result<ClusterEndpoint, Error> {
        self.state()
            .clusters
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| Error::UnknownCluster(name.into()))
    }

    /// Whether a cluster's apiserver process runs.
    pub fn is_running(&self, name: &str) -> Result<bool, Error> {
        let endpoint = self.endpoint(name)?;
        let binary = self.state().assets.kube_apiserver.clone();
        Ok(endpoint.pid.is_some_and(|pid| {
            self.inner
                .children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(name)
                .map_or_else(|| runs(pid, &binary), |c| matches!(c.try_wait(), Ok(None)))
        }))
    }

    /// Stops one cluster's apiserver (its objects stay in etcd), as if the cluster
    /// went away.
    pub fn stop_member(&self, name: &str) -> Result<(), Error> {
        let endpoint = self.endpoint(name)?;
        let binary = self.state().assets.kube_apiserver.clone();
        if let Some(pid) = endpoint.pid {
            let child = self.children().remove(name);
            terminate(pid, &binary, child);
        }
        self.set_pid(name, None);
        self.save()
    }

    /// Starts a stopped cluster again on the same port and certificate, and waits
    /// until it is ready.
    pub fn start_member(&self, name: &str) -> Result<(), Error> {
        if self.is_running(name)? {
            return Ok(());
        }
        self.spawn_apiserver(name)?;
        self.wait_ready(name)?;
        self.save()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn children(&self) -> MutexGuard<'_, BTreeMap<String, Child>> {
        self.inner
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn set_pid(&self, name: &str, pid: Option<u32>) {
        if let Some(c) = self.state().clusters.iter_mut().find(|c| c.name == name) {
            c.pid = pid;
        }
    }

    fn log_file(&self, name: &str) -> Result<(File, PathBuf), Error> {
        let path = self.inner.dir.join("logs").join(format!("{name}.log"));
        fs::create_dir_all(self.inner.dir.join("logs")).map_err(io("create logs/"))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        Ok((file, path))
    }

    fn spawn(&self, key: &str, mut cmd: Command) -> Result<u32, Error> {
        let (log, _) = self.log_file(key)?;
        let err = log.try_clone().map_err(io("clone a log handle"))?;
        // Own process group: Ctrl-C in a terminal running `fedwasm dev up` reaches the
        // host, which then stops these in order (or leaves them, when detached).
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().map_err(io(format!("start {key}")))?;
        let pid = child.id();
        self.children().insert(key.to_string(), child);
        Ok(pid)
    }

    fn start_etcd(&self) -> Result<(), Error> {
        let (etcd, port, peer) = {
            let s = self.state();
            (s.assets.etcd.clone(), s.etcd_port, s.etcd_peer_port)
        };
        let client = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(&etcd);
        cmd.arg("--name=fedwasm")
            .arg(format!(
                "--data-dir={}",
                self.inner.dir.join("etcd").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=fedwasm={peer_url}"))
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        let pid = self.spawn("etcd", cmd)?;
        self.state().etcd_pid = Some(pid);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Command(format!("http client: {e}")))?;
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(resp) = http.get(format!("{client}/health")).send() {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            self.check_alive("etcd")?;
            if Instant::now() >= until {
                return Err(Error::NotReady(
                    "etcd".into(),
                    READY_TIMEOUT,
                    self.log_file("etcd")?.1,
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&self, key: &str) -> Result<(), Error> {
        if let Some(child) = self.children().get_mut(key) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited(
                    key.into(),
                    status.to_string(),
                    self.inner.dir.join("logs").join(format!("{key}.log")),
                ));
            }
        }
        Ok(())
    }

    fn spawn_apiserver(&self, name: &str) -> Result<(), Error> {
        let endpoint = self.endpoint(name)?;
        let (binary, etcd_port) = {
            let s = self.state();
            (s.assets.kube_apiserver.clone(), s.etcd_port)
        };
        let dir = &self.inner.dir;
        let cert_dir = dir.join("certs").join(name);
        fs::create_dir_all(&cert_dir).map_err(io("create the cert dir"))?;
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--etcd-prefix=/cluster-{name}"))
            .arg(format!("--secure-port={}", endpoint.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=AlwaysAllow")
            .arg(format!("--service-account-issuer=https://{name}"))
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--disable-admission-plugins=ServiceAccount");
        let pid = self.spawn(name, cmd)?;
        self.set_pid(name, Some(pid));
        Ok(())
    }

    /// The CA to trust for `name`: its self-signed serving certificate bundle.
    fn ca_pem(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(
            self.inner
                .dir
                .join("certs")
                .join(name)
                .join("apiserver.crt"),
        )
        .ok()
    }

    fn wait_ready(&self, name: &str) -> Result<(), Error> {
        let endpoint = self.endpoint(name)?;
        let token = self.state().token.clone();
        let until = Instant::now() + READY_TIMEOUT;
        let mut http = None;
        loop {
            self.check_alive(name)?;
            if http.is_none() {
                if let Some(pem) = self.ca_pem(name) {
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| Error::Command(format!("{name}'s certificate: {e}")))?;
                    let mut builder = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(2))
                        .tls_built_in_root_certs(false);
                    for cert in certs {
                        builder = builder.add_root_certificate(cert);
                    }
                    http = Some(
                        builder
                            .build()
                            .map_err(|e| Error::Command(format!("http client: {e}")))?,
                    );
                }
            }
            if let Some(http) = &http {
                let ready = http
                    .get(format!("{}/readyz", endpoint.server()))
                    .bearer_auth(&token)
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() >= until {
                return Err(Error::NotReady(
                    name.into(),
                    READY_TIMEOUT,
                    self.log_file(name)?.1,
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn write_kubeconfig(&self) -> Result<(), Error> {
        let state = self.state().clone();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut clusters = Vec::new();
        let mut users = Vec::new();
        let mut contexts = Vec::new();
        for c in &state.clusters {
            let ca = self
                .ca_pem(&c.name)
                .ok_or_else(|| Error::Command(format!("{} wrote no certificate", c.name)))?;
            clusters.push(json!({"name": c.name, "cluster": {
                "server": c.server(), "certificate-authority-data": b64.encode(ca)}}));
            users.push(json!({"name": c.name, "user": {"token": state.token}}));
            contexts.push(json!({"name": c.name, "context": {"cluster": c.name, "user": c.name}}));
        }
        let config = json!({"apiVersion": "v1", "kind": "Config", "clusters": clusters,
            "users": users, "contexts": contexts, "current-context": FEDERATION});
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::Command(format!("kubeconfig: {e}")))?;
        fs::write(self.kubeconfig_path(), text).map_err(io("write the kubeconfig"))
    }

    fn save(&self) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(&*self.state())
            .map_err(|e| Error::Command(format!("state: {e}")))?;
        let tmp = self.inner.dir.join("state.json.tmp");
        fs::write(&tmp, text).map_err(io("write state.json"))?;
        fs::rename(&tmp, self.inner.dir.join("state.json")).map_err(io("write state.json"))
    }

    fn stop_all(&self) {
        let state = self.state().clone();
        for c in state.clusters.iter().rev() {
            if let Some(pid) = c.pid {
                let child = self.children().remove(&c.name);
                terminate(pid, &state.assets.kube_apiserver, child);
            }
            self.set_pid(&c.name, None);
        }
        if let Some(pid) = state.etcd_pid {
            let child = self.children().remove("etcd");
            terminate(pid, &state.assets.etcd, child);
        }
        self.state().etcd_pid = None;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.detached.load(Ordering::SeqCst) {
            return;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for c in state.clusters.iter().rev() {
            if let Some(pid) = c.pid {
                terminate(pid, &state.assets.kube_apiserver, children.remove(&c.name));
            }
        }
        if let Some(pid) = state.etcd_pid {
            terminate(pid, &state.assets.etcd, children.remove("etcd"));
        }
        let _ = fs::remove_file(self.dir.join("state.json"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_labels() {
        assert!(valid_name("m1"));
        assert!(valid_name("eu-west-1"));
        assert!(!valid_name(FEDERATION));
        assert!(!valid_name("Upper"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a_b"));
    }

    /// Starts a real federation plane and one member, stops and restarts the
    /// member, and checks every process is gone after the drop.
    #[test]
    fn starts_stops_and_cleans_up_real_apiservers() {
        let fed = LocalFederation::start(FederationSpec {
            members: vec!["m1".into()],
            ..Default::default()
        })
        .expect("a local federation starts (run scripts/install-testenv.sh first)");
        let kubeconfig = fs::read_to_string(fed.kubeconfig_path()).unwrap();
        assert!(kubeconfig.contains("certificate-authority-data"));
        assert_eq!(fed.names(), vec![FEDERATION.to_string(), "m1".into()]);
        let binary = fed.state().assets.kube_apiserver.clone();
        let pids: Vec<u32> = fed.state().clusters.iter().filter_map(|c| c.pid).collect();
        let etcd_pid = fed.state().etcd_pid.unwrap();
        assert_eq!(pids.len(), 2);

        fed.stop_member("m1").unwrap();
        assert!(!fed.is_running("m1").unwrap());
        assert!(fed.is_running(FEDERATION).unwrap());
        fed.start_member("m1").unwrap();
        assert!(fed.is_running("m1").unwrap());
        let restarted = fed.endpoint("m1").unwrap().pid.unwrap();

        let etcd = fed.state().assets.etcd.clone();
        drop(fed);
        for pid in pids.into_iter().chain([restarted]) {
            assert!(!runs(pid, &binary), "apiserver {pid} still runs");
        }
        assert!(!runs(etcd_pid, &etcd), "etcd still runs");
    }
}
