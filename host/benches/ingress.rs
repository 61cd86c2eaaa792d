//! The global ingress as a reverse proxy, side by side with nginx and with no proxy
//! at all, in one run: requests/s and p99 latency from `wrk`.
//!
//! One process holds a small backend (hyper 1, a 13-byte body, keep-alive) and the
//! fedwasm ingress (`ingress::serve` over a fixed table: one Ingress route, one
//! healthy backend with room for any load) with `WORKERS` worker threads.
//! It writes a configuration for nginx as a plain reverse proxy to the same backend
//! (`worker_processes WORKERS`, an upstream with `keepalive 64`, HTTP/1.1 upstream
//! connections reused as fedwasm reuses them, the same `X-Forwarded-*` headers) and
//! runs it in the foreground. Then, for each round, `wrk --latency` against the
//! backend directly, nginx and fedwasm, in a rotating order; the table shows every
//! round and the median of each. Twice: saturated (each connection sends its next
//! request as soon as it has an answer: requests/s; p99 there is mostly time queued
//! for a CPU), then paced (each connection waits `PACE_MS` between requests, far
//! below what any of them can serve: p99 is then what the proxy adds to a request).
//! It also shows the CPU time each proxy spends per request, from `/proc`.
//!
//! `cargo bench -p fedwasm-host --bench ingress` (or `scripts/bench-ingress.sh`,
//! which installs wrk and nginx first). Settings, from the environment:
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `FEDWASM_BENCH_WORKERS` | cores | the ingress's worker threads = nginx's `worker_processes` |
//! | `FEDWASM_BENCH_BACKEND_THREADS` | `WORKERS` | the backend's tokio worker threads |
//! | `FEDWASM_BENCH_CONNECTIONS` | 64 | wrk `-c` |
//! | `FEDWASM_BENCH_WRK_THREADS` | 2 | wrk `-t` |
//! | `FEDWASM_BENCH_DURATION` | 10 | seconds per wrk run |
//! | `FEDWASM_BENCH_ROUNDS` | 3 | rounds of (direct, nginx, fedwasm) |
//! | `FEDWASM_BENCH_PACE_MS` | 10 | wait between two requests of a connection in the paced runs (0: no paced runs) |
//! | `FEDWASM_BENCH_NGINX` | `nginx` | the nginx binary |
//!
//! Without `--bench` (`cargo test --benches`) it is a smoke run of one short round,
//! skipped when wrk or nginx is missing.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedwasm_host::ingress::{self, IngressConfig, IngressMetrics};
use fedwasm_host::routing::{Backend, Route, Router, Table};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

mod common;
use common::env_or;

/// What the backend answers: 13 bytes.
const BODY: &[u8] = b"Hello, world!";
/// Thread names (at most 15 bytes, as `/proc` shows them), to tell CPU time apart.
const INGRESS_THREAD: &str = "fedwasm-ingress";
const BACKEND_THREAD: &str = "backend";

struct Settings {
    workers: usize,
    backend_threads: usize,
    connections: usize,
    wrk_threads: usize,
    duration: u64,
    rounds: usize,
    /// Between two requests of one connection in the paced runs; 0: none.
    pace_ms: u64,
    nginx: String,
}

/// A runtime of `threads` workers.
fn runtime(threads: usize, name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The backend: answers every request with [`BODY`], keep-alive.
fn start_backend(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("text/plain"),
                        );
                        Ok::<_, Infallible>(response)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The fedwasm ingress in front of `backend`: one route taking every host and path.
fn start_fedwasm(
    rt: &tokio::runtime::Runtime,
    backend: SocketAddr,
    workers: usize,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let route = Route::everything(
        "bench",
        "web",
        vec![Backend {
            endpoint: Some(format!("http://{backend}")),
            capacity: u32::MAX,
            ..Backend::serving("backend", "", "")
        }],
    );
    let router = Router::fixed(Table {
        routes: vec![route],
        locality: Default::default(),
    });
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(IngressMetrics::new(&registry).expect("ingress metrics"));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the ingress");
    let addr = listener.local_addr().expect("ingress address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(ingress::serve(
        listener,
        router,
        metrics,
        IngressConfig {
            workers,
            ..IngressConfig::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// nginx in the foreground; stopped (the whole process group) when dropped,
/// panics included.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // Already gone (and reaped): its pid may be another's now.
        }
        let pid = self.child.id() as libc::pid_t;
        // SIGTERM: a fast shutdown of master and workers; then make sure.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // The master exits once its workers have.
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still there: kill the group, nginx's own (`process_group(0)`), never ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A port free now (nginx binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn nginx_config(dir: &Path, workers: usize, listen: SocketAddr, backend: SocketAddr) -> String {
    let d = dir.display();
    // As root, nginx would switch its workers to `nobody`; stay root instead.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    format!(
        r#"{user}daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # Never close a client connection for its number of requests (fedwasm does not).
    keepalive_requests 1000000;
    upstream backend {{
        server {backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What fedwasm sends too.
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"#
    )
}

fn start_nginx(binary: &str, workers: usize, backend: SocketAddr) -> Nginx {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir.path(), workers, addr, backend)).expect("nginx.conf");
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let mut nginx = Nginx { child, addr, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(nginx.dir.path().join("error.log"));
            panic!("nginx exited ({status}): {}", log.unwrap_or_default());
        }
        if TcpStream::connect(addr).is_ok() {
            return nginx;
        }
        assert!(Instant::now() < deadline, "nginx never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on a fresh connection: the status line and headers, and the body.
fn get(addr: SocketAddr) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench.example\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    (head, raw[split + 4..].to_vec())
}

/// Every target answers the backend's body; fedwasm says which cluster served.
fn check(name: &str, addr: SocketAddr, header: Option<&str>) {
    let (head, body) = get(addr);
    assert!(head.starts_with("http/1.1 200"), "{name}: {head}");
    assert!(
        body == BODY,
        "{name} answered {:?}",
        String::from_utf8_lossy(&body)
    );
    if let Some(h) = header {
        assert!(head.contains(h), "{name}: no `{h}` in {head}");
    }
}

/// CPU time (user + system) of the threads of process `pid` whose name is `name`
/// (all of them when `None`), from `/proc`.
fn cpu_of(pid: u32, name: Option<&str>) -> Duration {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: utime and stime are fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if name.is_some_and(|n| !stat[open + 1..close].starts_with(n)) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        total += field(11).unwrap_or(0) + field(12).unwrap_or(0);
    }
    Duration::from_secs_f64(total as f64 / ticks)
}

/// nginx's processes: the master and its workers.
fn nginx_cpu(master: u32) -> Duration {
    let mut total = cpu_of(master, None);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|c| stat[c + 1..].split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(master) {
            total += cpu_of(pid, None);
        }
    }
    total
}

/// CPU time of the children waited for so far (each wrk run, once it exits).
fn children_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Where the CPU went during one run.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    fedwasm: Duration,
    nginx: Duration,
    backend: Duration,
    wrk: Duration,
}

impl Cpu {
    fn now(nginx_master: u32) -> Self {
        let me = std::process::id();
        Self {
            fedwasm: cpu_of(me, Some(INGRESS_THREAD)),
            nginx: nginx_cpu(nginx_master),
            backend: cpu_of(me, Some(BACKEND_THREAD)),
            wrk: children_cpu(),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            fedwasm: self.fedwasm.saturating_sub(before.fedwasm),
            nginx: self.nginx.saturating_sub(before.nginx),
            backend: self.backend.saturating_sub(before.backend),
            wrk: self.wrk.saturating_sub(before.wrk),
        }
    }
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug)]
struct Figures {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU per request, in µs: of the proxy under test (none when direct), of the
    /// backend, of wrk.
    proxy_us: f64,
    backend_us: f64,
    wrk_us: f64,
}

/// `2.34ms`, `870.00us`, `1.02s`, `1.50m` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        "h" => n * 3600e3,
        _ => return None,
    })
}

/// Reads wrk's report; a run with errors or non-2xx answers is not a measurement.
fn parse_wrk(name: &str, out: &str) -> (Figures, u64) {
    let mut rps = None;
    let mut requests = None;
    let mut p50 = None;
    let mut p99 = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => rps = n.parse().ok(),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["50%", t] => p50 = duration_ms(t),
            ["99%", t] => p99 = duration_ms(t),
            ["Non-2xx", ..] | ["Socket", "errors:", ..] => {
                panic!("wrk against {name} saw failures: {}\n{out}", line.trim())
            }
            _ => {}
        }
    }
    match (rps, p50, p99, requests) {
        (Some(requests_per_sec), Some(p50_ms), Some(p99_ms), Some(requests)) => (
            Figures {
                requests_per_sec,
                p50_ms,
                p99_ms,
                proxy_us: 0.0,
                backend_us: 0.0,
                wrk_us: 0.0,
            },
            requests,
        ),
        _ => panic!("could not read wrk's report for {name}:\n{out}"),
    }
}

fn wrk(
    settings: &Settings,
    target: &Target,
    nginx_master: u32,
    script: Option<&Path>,
    seconds: u64,
) -> Figures {
    let (name, addr) = (target.name, target.addr);
    let before = Cpu::now(nginx_master);
    let mut command = Command::new("wrk");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let out = command
        .arg(format!("-t{}", settings.wrk_threads))
        .arg(format!("-c{}", settings.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(format!("http://{addr}/"))
        .output()
        .expect("running wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk against {name} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cpu = Cpu::now(nginx_master).since(before);
    let (mut figures, requests) = parse_wrk(name, &text);
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / requests.max(1) as f64;
    figures.proxy_us = match target.kind {
        Kind::Direct => 0.0,
        Kind::Nginx => per_request(cpu.nginx),
        Kind::Fedwasm => per_request(cpu.fedwasm),
    };
    figures.backend_us = per_request(cpu.backend);
    figures.wrk_us = per_request(cpu.wrk);
    figures
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Direct,
    Nginx,
    Fedwasm,
}

struct Target {
    name: &'static str,
    kind: Kind,
    addr: SocketAddr,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The 1-minute load average, as `/proc/loadavg` has it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn found(binary: &str) -> bool {
    Command::new(binary)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` makes this a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = env_or("FEDWASM_BENCH_WORKERS", cores).max(1);
    let settings = Settings {
        workers,
        backend_threads: env_or("FEDWASM_BENCH_BACKEND_THREADS", workers).max(1),
        connections: env_or("FEDWASM_BENCH_CONNECTIONS", 64),
        wrk_threads: env_or("FEDWASM_BENCH_WRK_THREADS", 2),
        duration: env_or("FEDWASM_BENCH_DURATION", if smoke { 1 } else { 10 }),
        rounds: env_or("FEDWASM_BENCH_ROUNDS", if smoke { 1 } else { 3 }).max(1),
        pace_ms: env_or("FEDWASM_BENCH_PACE_MS", 10),
        nginx: env_or("FEDWASM_BENCH_NGINX", "nginx".to_string()),
    };
    for tool in ["wrk", settings.nginx.as_str()] {
        if !found(tool) {
            assert!(
                smoke,
                "`{tool}` is not installed: run scripts/bench-ingress.sh, which installs it"
            );
            println!("ingress bench: skipped, `{tool}` is not installed");
            return;
        }
    }

    let backend_rt = runtime(settings.backend_threads, BACKEND_THREAD);
    // It only accepts; the ingress's own worker threads serve.
    let ingress_rt = runtime(1, INGRESS_THREAD);
    let backend = start_backend(&backend_rt);
    let (fedwasm, stop_fedwasm) = start_fedwasm(&ingress_rt, backend, settings.workers);
    let nginx = start_nginx(&settings.nginx, settings.workers, backend);

    let nginx_master = nginx.child.id();
    let targets = [
        Target {
            name: "direct",
            kind: Kind::Direct,
            addr: backend,
        },
        Target {
            name: "nginx",
            kind: Kind::Nginx,
            addr: nginx.addr,
        },
        Target {
            name: "fedwasm",
            kind: Kind::Fedwasm,
            addr: fedwasm,
        },
    ];
    check("direct", backend, None);
    check("nginx", nginx.addr, None);
    check("fedwasm", fedwasm, Some("x-fedwasm-cluster: backend"));

    println!(
        "ingress bench: {} core(s); fedwasm {} worker thread(s), nginx {} worker process(es), \
         backend {} thread(s); wrk -t{} -c{} -d{}s --latency, {} round(s)",
        cores,
        settings.workers,
        settings.workers,
        settings.backend_threads,
        settings.wrk_threads,
        settings.connections,
        settings.duration,
        settings.rounds
    );
    println!(
        "note: wrk, the proxy under test and the backend all run on these {cores} core(s) and \
         share the CPU, so a proxy's figures include the CPU it takes from the backend and wrk \
         (and anything else running: load average now {})",
        loadavg()
    );
    // Warm up: connections made, pools filled, caches hot.
    let warm_up = if smoke { 1 } else { 2 };
    for target in &targets {
        wrk(&settings, target, nginx_master, None, warm_up);
    }

    println!("\nsaturated: every connection sends its next request as soon as it has an answer");
    let saturated = rounds(&settings, &targets, nginx_master, None);
    // The same connections, each waiting between requests: far below what any of
    // the three can serve, so p99 is what a request costs, not time in a queue.
    let paced = (settings.pace_ms > 0).then(|| {
        let script = tempfile::Builder::new()
            .suffix(".lua")
            .tempfile()
            .expect("wrk script");
        std::fs::write(
            script.path(),
            format!("function delay()\n  return {}\nend\n", settings.pace_ms),
        )
        .expect("write the wrk script");
        println!(
            "\npaced: each connection waits {} ms between requests (at most {} req/s in all)",
            settings.pace_ms,
            settings.connections as u64 * 1000 / settings.pace_ms
        );
        rounds(&settings, &targets, nginx_master, Some(script.path()))
    });
    let _ = stop_fedwasm.send(());
    drop(nginx);
    println!("load average at the end: {}", loadavg());

    let [direct, nginx, fedwasm] = saturated;
    summary(
        &format!(
            "saturated, {} connections, median of {} round(s)",
            settings.connections, settings.rounds
        ),
        &saturated,
    );
    if let Some(paced) = &paced {
        summary(
            &format!(
                "paced, {} connections {} ms apart, median of {} round(s)",
                settings.connections, settings.pace_ms, settings.rounds
            ),
            paced,
        );
    }
    let ratio = fedwasm.requests_per_sec / nginx.requests_per_sec;
    println!(
        "\nreq/s fedwasm/nginx (saturated): {ratio:.2} (goal >= 1.00: {})",
        if ratio >= 1.0 { "met" } else { "NOT met" }
    );
    let added = |figures: &[Figures; 3], what: &str| {
        let [direct, nginx, fedwasm] = figures;
        let fedwasm_added = fedwasm.p99_ms - direct.p99_ms;
        println!(
            "p99 added over direct ({what}): fedwasm {fedwasm_added:+.3} ms, nginx {:+.3} ms \
             (goal: fedwasm < 1 ms: {})",
            nginx.p99_ms - direct.p99_ms,
            if fedwasm_added < 1.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    };
    added(&saturated, "saturated; mostly time queued for a CPU");
    if let Some(paced) = &paced {
        added(paced, "paced");
    }
    println!(
        "req/s through a proxy / direct (saturated): fedwasm {:.2}, nginx {:.2}",
        fedwasm.requests_per_sec / direct.requests_per_sec,
        nginx.requests_per_sec / direct.requests_per_sec
    );
    println!(
        "proxy CPU per request (saturated): fedwasm {:.1} µs, nginx {:.1} µs ({:.2}x); \
         less sensitive to other load on the machine than req/s and p99",
        fedwasm.proxy_us,
        nginx.proxy_us,
        fedwasm.proxy_us / nginx.proxy_us
    );
}

/// `settings.rounds` rounds of one wrk run per target, in a rotating order; the
/// median of each target's runs.
fn rounds(
    settings: &Settings,
    targets: &[Target; 3],
    nginx_master: u32,
    script: Option<&Path>,
) -> [Figures; 3] {
    let mut results: [Vec<Figures>; 3] = Default::default();
    for round in 0..settings.rounds {
        // Rotate the order so no target always runs first or last.
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let f = wrk(
                settings,
                &targets[i],
                nginx_master,
                script,
                settings.duration,
            );
            println!(
                "  round {} {:<8} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  \
                 CPU/request: proxy {:>5.1} µs, backend {:>4.1} µs, wrk {:>4.1} µs",
                round + 1,
                targets[i].name,
                f.requests_per_sec,
                f.p50_ms,
                f.p99_ms,
                f.proxy_us,
                f.backend_us,
                f.wrk_us
            );
            results[i].push(f);
        }
    }
    results.map(|runs| {
        let m = |field: fn(&Figures) -> f64| median(runs.iter().map(field).collect());
        Figures {
            requests_per_sec: m(|f| f.requests_per_sec),
            p50_ms: m(|f| f.p50_ms),
            p99_ms: m(|f| f.p99_ms),
            proxy_us: m(|f| f.proxy_us),
            backend_us: m(|f| f.backend_us),
            wrk_us: m(|f| f.wrk_us),
        }
    })
}

fn summary(title: &str, figures: &[Figures; 3]) {
    let direct = figures[0];
    println!("\n{title}:");
    println!("| target | req/s | p50 | p99 | p99 added | proxy CPU/request |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, f) in ["direct", "nginx", "fedwasm"].into_iter().zip(figures) {
        println!(
            "| {name} | {:.0} | {:.3} ms | {:.3} ms | {:+.3} ms | {:.1} µs |",
            f.requests_per_sec,
            f.p50_ms,
            f.p99_ms,
            f.p99_ms - direct.p99_ms,
            f.proxy_us
        );
    }
}
