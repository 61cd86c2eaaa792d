//! Local federations of real `etcd` + `kube-apiserver` processes.
//!
//! One etcd serves every cluster (each apiserver has its own `--etcd-prefix`); the
//! federation plane is the cluster named [`FEDERATION`], the members carry the names
//! given in [`FederationSpec`]. Ports are picked free and state lives in one
//! directory: its `state.json` records every process's pid as soon as it starts,
//! whichever process started it (`fedwasm dev start` runs apart from `fedwasm dev
//! up`), changed only under a lock on `state.lock` and replaced atomically.
//! Stopping the federation ([`LocalFederation::down`], or dropping the handle that
//! [started](LocalFederation::start) it, also while a test unwinds from a panic)
//! stops every process `state.json` records at that moment, apiservers before etcd,
//! SIGTERM then SIGKILL. A handle from [`LocalFederation::attach`] (or one
//! [detached](LocalFederation::detach) for `fedwasm dev up --detach`) leaves them
//! running when dropped.
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
/// More time for each apiserver started at once: on a small machine, thirty of
/// them starting together share its cores (the scale bench starts 31).
const READY_PER_APISERVER: Duration = Duration::from_secs(5);
/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a process to be gone after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// The record of a federation's ports and pids, in its directory.
const STATE_FILE: &str = "state.json";
/// Locked while [`STATE_FILE`] is read, changed and rewritten.
const LOCK_FILE: &str = "state.lock";

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
    #[error("{0} exited during start-up ({1}); see its log at {2}; it ends with:\n{3}")]
    Exited(String, String, PathBuf, String),
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
    /// Authorize requests with RBAC instead of allowing every request, so a
    /// service account gets exactly what its roles grant (the kubeconfig's token
    /// stays in `system:masters`).
    pub rbac: bool,
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
    /// `--authorization-mode=RBAC` rather than `AlwaysAllow`.
    #[serde(default)]
    rbac: bool,
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

/// Picks ports for the servers of one federation: free now, distinct, and below the
/// kernel's ephemeral range when there is room there. A port from `bind(0)` lies in
/// that range, where the outgoing connections of servers already starting (each
/// apiserver opens several to etcd) take their local ports: one of them could take
/// a port picked for a server that has not bound it yet.
struct PortPicker {
    taken: std::collections::BTreeSet<u16>,
    /// Where to draw from: `[low, high)`, empty when the ephemeral range leaves no room.
    low: u16,
    high: u16,
    seed: u64,
}

impl PortPicker {
    const FLOOR: u16 = 10_000;

    fn new() -> Result<Self, Error> {
        let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768);
        let mut seed = [0u8; 8];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(io("read /dev/urandom"))?;
        Ok(PortPicker {
            taken: Default::default(),
            low: Self::FLOOR,
            high: ephemeral_low.max(Self::FLOOR),
            seed: u64::from_le_bytes(seed) | 1,
        })
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: enough to spread federations started side by side.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    fn pick(&mut self) -> Result<u16, Error> {
        let span = u64::from(self.high - self.low);
        for _ in 0..if span > 0 { 200 } else { 0 } {
            let port = self.low + (self.next_random() % span) as u16;
            if !self.taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                self.taken.insert(port);
                return Ok(port);
            }
        }
        loop {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(io("pick a free port"))?;
            let port = listener
                .local_addr()
                .map_err(io("pick a free port"))?
                .port();
            if self.taken.insert(port) {
                return Ok(port);
            }
        }
    }
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

/// Whether `pid` exists and is not a zombie (a zombie is dead already). The
/// leader of a multi-threaded process (Go's) shows `Z` while its other threads
/// still exit, holding its sockets: dead only once it is the last one.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie || fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| tasks.count() > 1)
}

/// Whether `pid` is alive and is `binary` started with the argument `marker` (the
/// apiserver's `--cert-dir`, etcd's `--data-dir`: both name this federation's
/// directory). Guards against pid reuse, also by another federation's processes.
fn runs(pid: u32, binary: &Path, marker: &str) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let Some(name) = binary.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    let mut args = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    args.next().is_some_and(|first| first.ends_with(&name)) && args.any(|a| a == marker)
}

/// The argument that tells `name`'s apiserver in `dir` from any other.
fn apiserver_marker(dir: &Path, name: &str) -> String {
    format!("--cert-dir={}", dir.join("certs").join(name).display())
}

/// The argument that tells the etcd of `dir` from any other.
fn etcd_marker(dir: &Path) -> String {
    format!("--data-dir={}", dir.join("etcd").display())
}

/// Stops `pid`: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`], and waits until it is
/// gone. With `child` (we started it and have not reaped it, so the pid cannot have
/// been reused) it is signalled and reaped directly; otherwise only while it still
/// [`runs`] `binary` with `marker`.
fn terminate(pid: u32, binary: &Path, marker: &str, child: Option<Child>) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Some(mut child) = child {
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our unreaped child; no memory is touched.
            unsafe { libc::kill(raw, libc::SIGTERM) };
            let until = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() >= until {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.wait();
        return;
    }
    if !runs(pid, binary, marker) {
        return;
    }
    // SAFETY: as above; the pid was checked to still run our binary for this directory.
    unsafe { libc::kill(raw, libc::SIGTERM) };
    let until = Instant::now() + STOP_TIMEOUT;
    let mut killed = false;
    // Not `runs`: an exiting process has an empty cmdline before it is gone.
    while alive(pid) {
        if !killed && Instant::now() >= until {
            killed = true;
            // Checked again: only a process that still is ours gets SIGKILL (an
            // exiting one, with its cmdline gone, needs none).
            if runs(pid, binary, marker) {
                // SAFETY: as above.
                unsafe { libc::kill(raw, libc::SIGKILL) };
            }
        }
        if killed && Instant::now() >= until + KILL_TIMEOUT {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An exclusive lock on a federation directory's `state.json` (an `flock` on
/// `state.lock` beside it), held by whoever reads, changes and rewrites the state,
/// so the processes sharing the directory (`dev up`, `dev stop`, `dev start`,
/// `dev down`) never lose each other's records. Released when dropped.
impl State {
    /// The cluster named `name`.
    fn cluster(&self, name: &str) -> Result<&ClusterEndpoint, Error> {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::UnknownCluster(name.into()))
    }

    fn cluster_mut(&mut self, name: &str) -> Result<&mut ClusterEndpoint, Error> {
        self.clusters
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::UnknownCluster(name.into()))
    }
}

struct StateLock {
    _file: File,
}

fn lock_state(dir: &Path) -> Result<StateLock, Error> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io(format!("open {}", dir.join(LOCK_FILE).display())))?;
    file.lock()
        .map_err(io(format!("lock {}", dir.join(LOCK_FILE).display())))?;
    Ok(StateLock { _file: file })
}

fn read_state(dir: &Path) -> Result<State, Error> {
    let text = fs::read_to_string(dir.join(STATE_FILE))
        .map_err(|e| Error::NoState(dir.to_path_buf(), e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| Error::NoState(dir.to_path_buf(), e.to_string()))
}

/// Replaces `state.json` atomically (a reader sees the old or the new file, never
/// half of one); `_lock` shows the caller holds the lock.
fn write_state(dir: &Path, state: &State, _lock: &StateLock) -> Result<(), Error> {
    let text =
        serde_json::to_string_pretty(state).map_err(|e| Error::Command(format!("state: {e}")))?;
    let tmp = dir.join(format!("{STATE_FILE}.{}.tmp", std::process::id()));
    fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, dir.join(STATE_FILE)).map_err(io(format!("write {STATE_FILE}")))
}

impl Inner {
    /// The in-memory copy of the state: ports, names and assets never change, but
    /// its pids may be stale; [`refresh`](Self::refresh) or [`update`](Self::update)
    /// for those.
    fn cache(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn children(&self) -> MutexGuard<'_, BTreeMap<String, Child>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state as recorded in `state.json` now (other processes may have changed
    /// it), or the cache when there is no such file any more.
    fn refresh(&self) -> State {
        match read_state(&self.dir) {
            Ok(state) => {
                *self.cache() = state.clone();
                state
            }
            Err(_) => self.cache().clone(),
        }
    }

    /// Reads `state.json` under the lock, lets `f` change it (start or stop
    /// processes and record their pids) and writes it back before unlocking, also
    /// when `f` fails (a process it started is then still recorded).
    fn update<R>(&self, f: impl FnOnce(&mut State) -> Result<R, Error>) -> Result<R, Error> {
        let lock = lock_state(&self.dir)?;
        let mut state = read_state(&self.dir)?;
        let result = f(&mut state);
        write_state(&self.dir, &state, &lock)?;
        *self.cache() = state;
        result
    }

    /// Our child `key`, if it is the process `pid`.
    fn take_child(&self, key: &str, pid: u32) -> Option<Child> {
        let mut children = self.children();
        if children.get(key).is_some_and(|c| c.id() == pid) {
            children.remove(key)
        } else {
            None
        }
    }

    /// Stops every process recorded in `state.json`, whoever started it (the cache
    /// stands in only when the file is gone), and every child of ours: apiservers
    /// first (an apiserver whose etcd is gone no longer exits on SIGTERM), then
    /// etcd. Removes `state.json`.
    fn stop_all(&self) {
        let lock = lock_state(&self.dir).ok();
        let state = read_state(&self.dir).unwrap_or_else(|_| self.cache().clone());
        let dir = &self.dir;
        let apiserver = &state.assets.kube_apiserver;
        for c in state.clusters.iter().rev() {
            if let Some(pid) = c.pid {
                let child = self.take_child(&c.name, pid);
                terminate(pid, apiserver, &apiserver_marker(dir, &c.name), child);
            }
        }
        // Children no longer recorded: stopped (or replaced) by another process.
        let mut rest = std::mem::take(&mut *self.children());
        let etcd_child = rest.remove("etcd");
        for (name, child) in rest {
            terminate(
                child.id(),
                apiserver,
                &apiserver_marker(dir, &name),
                Some(child),
            );
        }
        let etcd_child = match (state.etcd_pid, etcd_child) {
            (Some(pid), Some(child)) if child.id() != pid => {
                terminate(pid, &state.assets.etcd, &etcd_marker(dir), None);
                Some(child)
            }
            (Some(pid), child) => {
                terminate(pid, &state.assets.etcd, &etcd_marker(dir), child);
                None
            }
            (None, child) => child,
        };
        if let Some(child) = etcd_child {
            terminate(
                child.id(),
                &state.assets.etcd,
                &etcd_marker(dir),
                Some(child),
            );
        }
        {
            let mut cache = self.cache();
            cache.etcd_pid = None;
            for c in &mut cache.clusters {
                c.pid = None;
            }
        }
        let _ = fs::remove_file(dir.join(STATE_FILE));
        drop(lock);
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
        let lock = lock_state(&dir)?;
        if dir.join(STATE_FILE).exists() {
            return Err(Error::Command(format!(
                "{} already holds a local federation ({STATE_FILE}); `fedwasm dev down --dir {}` first",
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
        let mut ports = PortPicker::new()?;
        let mut clusters = vec![ClusterEndpoint {
            name: FEDERATION.into(),
            port: ports.pick()?,
            pid: None,
        }];
        for name in &spec.members {
            clusters.push(ClusterEndpoint {
                name: name.clone(),
                port: ports.pick()?,
                pid: None,
            });
        }
        let state = State {
            assets,
            token,
            etcd_port: ports.pick()?,
            etcd_peer_port: ports.pick()?,
            etcd_pid: None,
            clusters,
            rbac: spec.rbac,
        };
        // Recorded before anything starts, and every pid as soon as it exists: a
        // start-up that is killed half-way leaves what `fedwasm dev down` needs.
        write_state(&dir, &state, &lock)?;
        drop(lock);
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
            fed.inner.update(|state| {
                let pid = fed.spawn_apiserver(state, name)?;
                set_pid(state, name, Some(pid));
                Ok(())
            })?;
        }
        for name in &names {
            fed.wait_ready_or_move(name, &mut ports)?;
        }
        fed.write_kubeconfig()?;
        Ok(fed)
    }

    /// Finds a federation that `start` (in this or another process) runs in `dir`.
    /// Dropping the handle leaves it running; call [`down`](Self::down) to stop it.
    pub fn attach(dir: &Path) -> Result<Self, Error> {
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::NoState(dir.to_path_buf(), e.to_string()))?;
        let state = read_state(&dir)?;
        Ok(LocalFederation {
            inner: Arc::new(Inner {
                dir,
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

    /// Stops every process recorded for the directory, whoever started it, and
    /// forgets the federation (its directory keeps the logs).
    pub fn down(self) -> Result<(), Error> {
        self.inner.stop_all();
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

    /// One cluster's endpoint, its pid as `state.json` records it now.
    pub fn endpoint(&self, name: &str) -> Result<ClusterEndpoint, Error> {
        self.inner.refresh().cluster(name).cloned()
    }

    /// Whether a cluster's apiserver process runs (whoever started it).
    pub fn is_running(&self, name: &str) -> Result<bool, Error> {
        let state = self.inner.refresh();
        Ok(self.recorded_running(&state, name)?.is_some())
    }

    /// The pid `state` records for `name`'s apiserver, if that process runs.
    fn recorded_running(&self, state: &State, name: &str) -> Result<Option<u32>, Error> {
        let endpoint = state.cluster(name)?;
        let Some(pid) = endpoint.pid else {
            return Ok(None);
        };
        let running = match self.inner.children().get_mut(name) {
            Some(child) if child.id() == pid => matches!(child.try_wait(), Ok(None)),
            _ => runs(
                pid,
                &state.assets.kube_apiserver,
                &apiserver_marker(&self.inner.dir, name),
            ),
        };
        Ok(running.then_some(pid))
    }

    /// Stops one cluster's apiserver (its objects stay in etcd), as if the cluster
    /// went away.
    pub fn stop_member(&self, name: &str) -> Result<(), Error> {
        self.inner.update(|state| {
            let endpoint = state.cluster_mut(name)?;
            if let Some(pid) = endpoint.pid.take() {
                let child = self.inner.take_child(name, pid);
                let marker = apiserver_marker(&self.inner.dir, name);
                terminate(pid, &state.assets.kube_apiserver, &marker, child);
            }
            Ok(())
        })
    }

    /// Starts a stopped cluster again on the same port and certificate, and waits
    /// until it is ready.
    pub fn start_member(&self, name: &str) -> Result<(), Error> {
        self.inner.update(|state| {
            let running = self.recorded_running(state, name)?;
            // A child of ours that is not the recorded process was stopped by
            // another one: reap it (`wait_ready` would take it for this start's).
            let stale = self.children().remove(name);
            if let Some(child) = stale {
                if Some(child.id()) == running {
                    self.children().insert(name.to_string(), child);
                } else {
                    let marker = apiserver_marker(&self.inner.dir, name);
                    terminate(
                        child.id(),
                        &state.assets.kube_apiserver,
                        &marker,
                        Some(child),
                    );
                }
            }
            if running.is_none() {
                let pid = self.spawn_apiserver(state, name)?;
                set_pid(state, name, Some(pid));
            }
            Ok(())
        })?;
        self.wait_ready(name)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.cache()
    }

    fn children(&self) -> MutexGuard<'_, BTreeMap<String, Child>> {
        self.inner.children()
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
        if let Some(mut old) = self.children().insert(key.to_string(), child) {
            // Stopped by another process; reap it.
            let _ = old.try_wait();
        }
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
            .arg(etcd_marker(&self.inner.dir))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=fedwasm={peer_url}"))
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        self.inner.update(|state| {
            state.etcd_pid = Some(self.spawn("etcd", cmd)?);
            Ok(())
        })?;
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
                let log = self.inner.dir.join("logs").join(format!("{key}.log"));
                let tail = log_tail(&log, 8);
                return Err(Error::Exited(key.into(), status.to_string(), log, tail));
            }
        }
        Ok(())
    }

    /// Starts `name`'s apiserver and returns its pid, for the caller to record in
    /// `state` (under the lock).
    fn spawn_apiserver(&self, state: &State, name: &str) -> Result<u32, Error> {
        let endpoint = state.cluster(name)?;
        let dir = &self.inner.dir;
        let cert_dir = dir.join("certs").join(name);
        fs::create_dir_all(&cert_dir).map_err(io("create the cert dir"))?;
        let mut cmd = Command::new(&state.assets.kube_apiserver);
        cmd.arg(format!(
            "--etcd-servers=http://127.0.0.1:{}",
            state.etcd_port
        ))
        .arg(format!("--etcd-prefix=/cluster-{name}"))
        .arg(format!("--secure-port={}", endpoint.port))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(apiserver_marker(dir, name))
        .arg(format!(
            "--token-auth-file={}",
            dir.join("tokens.csv").display()
        ))
        .arg(if state.rbac {
            "--authorization-mode=RBAC"
        } else {
            "--authorization-mode=AlwaysAllow"
        })
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
        self.spawn(name, cmd)
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

    /// Waits for `name`'s first start; when its port was taken meanwhile (by a
    /// process outside this federation), starts it again on another one.
    fn wait_ready_or_move(&self, name: &str, ports: &mut PortPicker) -> Result<(), Error> {
        let mut moves = 0;
        loop {
            match self.wait_ready(name) {
                Err(Error::Exited(key, status, log, _))
                    if moves < 3
                        && fs::read_to_string(&log).is_ok_and(|text| {
                            text.matches("address already in use").count() > moves
                        }) =>
                {
                    moves += 1;
                    let port = ports.pick()?;
                    eprintln!(
                        "[testenv] {key} exited ({status}): its port was taken; starting it again on port {port}"
                    );
                    self.inner.update(|state| {
                        let endpoint = state.cluster_mut(name)?;
                        endpoint.port = port;
                        let pid = self.spawn_apiserver(state, name)?;
                        set_pid(state, name, Some(pid));
                        Ok(())
                    })?;
                }
                other => return other,
            }
        }
    }

    fn wait_ready(&self, name: &str) -> Result<(), Error> {
        let endpoint = self.endpoint(name)?;
        let token = self.state().token.clone();
        let bound = READY_TIMEOUT + READY_PER_APISERVER * self.names().len() as u32;
        let until = Instant::now() + bound;
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
                return Err(Error::NotReady(name.into(), bound, self.log_file(name)?.1));
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
}

/// The last `lines` lines of a log, indented, for an error message.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn set_pid(state: &mut State, name: &str, pid: Option<u32>) {
    if let Ok(c) = state.cluster_mut(name) {
        c.pid = pid;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.detached.load(Ordering::SeqCst) {
            self.stop_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let mut picker = PortPicker::new().unwrap();
        let ports: Vec<u16> = (0..50).map(|_| picker.pick().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        if picker.high > picker.low {
            assert!(
                ports.iter().all(|p| (picker.low..picker.high).contains(p)),
                "{ports:?} outside [{}, {})",
                picker.low,
                picker.high
            );
        }
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

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
        let pids: Vec<u32> = fed.state().clusters.iter().filter_map(|c| c.pid).collect();
        let etcd_pid = fed.state().etcd_pid.unwrap();
        assert_eq!(pids.len(), 2);

        fed.stop_member("m1").unwrap();
        assert!(!fed.is_running("m1").unwrap());
        assert!(fed.is_running(FEDERATION).unwrap());
        fed.start_member("m1").unwrap();
        assert!(fed.is_running("m1").unwrap());
        let restarted = fed.endpoint("m1").unwrap().pid.unwrap();

        drop(fed);
        for pid in pids.into_iter().chain([restarted]) {
            assert!(!alive(pid), "apiserver {pid} still runs");
        }
        assert!(!alive(etcd_pid), "etcd still runs");
    }

    /// Kills (SIGKILL) whatever of its pids still runs when dropped, so a failing
    /// test leaves no process behind.
    struct Reaper(Vec<u32>);

    impl Drop for Reaper {
        fn drop(&mut self) {
            for pid in &self.0 {
                if alive(*pid) {
                    // SAFETY: kill(2) on a pid this test recorded from its federation.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                }
            }
        }
    }

    fn recorded_pids(dir: &Path) -> Vec<u32> {
        let state: State =
            serde_json::from_str(&fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
        state
            .clusters
            .iter()
            .filter_map(|c| c.pid)
            .chain(state.etcd_pid)
            .collect()
    }

    /// The demo's outage as `fedwasm dev stop`/`dev start` do it, from another handle
    /// (another process): dropping the handle that started the federation must stop
    /// the apiserver the other handle started, and free every port.
    #[test]
    fn stops_what_another_handle_started() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fed");
        let fed = LocalFederation::start(FederationSpec {
            members: vec!["m1".into(), "m2".into()],
            dir: Some(dir.clone()),
            ..Default::default()
        })
        .expect("a local federation starts (run scripts/install-testenv.sh first)");
        let mut reaper = Reaper(recorded_pids(&dir));
        let old = fed.endpoint("m2").unwrap().pid.unwrap();
        let mut ports: Vec<u16> = fed
            .names()
            .iter()
            .map(|n| fed.endpoint(n).unwrap().port)
            .collect();
        {
            let s = fed.state();
            ports.extend([s.etcd_port, s.etcd_peer_port]);
        }

        let other = LocalFederation::attach(&dir).unwrap();
        other.stop_member("m2").unwrap();
        assert!(!alive(old), "m2's first apiserver still runs");
        assert!(!fed.is_running("m2").unwrap());
        other.start_member("m2").unwrap();
        drop(other);
        let new = recorded_pids(&dir);
        reaper.0.extend(new.iter().copied());
        let restarted = LocalFederation::attach(&dir)
            .unwrap()
            .endpoint("m2")
            .unwrap()
            .pid
            .unwrap();
        assert_ne!(restarted, old);
        assert!(alive(restarted));
        assert!(
            fed.is_running("m2").unwrap(),
            "the first handle sees m2 back"
        );

        drop(fed);
        for pid in reaper.0.iter().copied() {
            assert!(!alive(pid), "{pid} still runs after the drop");
        }
        assert!(!dir.join("state.json").exists());
        for port in ports {
            TcpListener::bind(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("port {port} is still taken: {e}"));
        }
    }
}
