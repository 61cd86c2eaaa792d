//! The global L7 ingress: one address for every client, each request sent to the
//! closest healthy cluster with capacity, as the routing table ranks them for the
//! client's location, and to the next one when that fails.
//!
//! A reverse proxy inside the host: hop-by-hop headers dropped, `Host` kept,
//! `X-Forwarded-For/-Proto/-Host` added, bodies streamed both ways. The common
//! request is proxied by hand (`fast`); a connection with a request of another
//! kind is served by hyper 1 from that request on (`handle`, with `upstream` for
//! its cluster connections). Both decide with [`Tries`]: a connection failure is
//! retried on the next cluster for any method; a failed idempotent request too.
//! Retrying needs the request body again, so bodies up to
//! [`IngressConfig::retry_body_limit`] are kept for that; a larger one streams to
//! the first cluster that accepts the connection, unretried.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::routing::{Backend, RouteKey, Router};

use crate::http::{full_body, ProxyBody};

mod clock;
mod fast;
mod upstream;
use clock::{Clock, Tracked, Watchdog};
use upstream::{Drive, SendError, Upstreams};

/// Header on every response: the cluster that served it.
pub const CLUSTER_HEADER: &str = "x-fedwasm-cluster";

/// Limits and timeouts of the ingress.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Time to read a request's headers (also bounds an idle keep-alive connection).
    pub header_timeout: Duration,
    /// Time a cluster has to answer with response headers.
    pub response_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Request bodies up to this size are kept so a failed request can be retried.
    pub retry_body_limit: usize,
    /// Threads serving client connections, each with its own event loop (0: one per
    /// core).
    pub workers: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            retry_body_limit: 64 * 1024,
            workers: 0,
        }
    }
}

/// Per-cluster metrics of the ingress.
pub struct IngressMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
}

impl IngressMetrics {
    /// Registers the ingress metrics with the app's registry.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "fedwasm_ingress_requests_total",
                "Requests served, by cluster and status code.",
            ),
            &["cluster", "code"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "fedwasm_ingress_errors_total",
                "Failed tries, by cluster and kind (connect, timeout, status_5xx, other).",
            ),
            &["cluster", "kind"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "fedwasm_ingress_request_duration_seconds",
                "Time to response headers, by cluster.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["cluster"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "fedwasm_ingress_ejections_total",
                "Backends ejected after a failure, by cluster.",
            ),
            &["cluster"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "fedwasm_ingress_retries_total",
                "Requests retried on the next cluster, by the cluster that failed.",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(Self {
            requests,
            errors,
            latency,
            ejections,
            retries,
        })
    }
}

/// Requests in flight per route and cluster, for capacity.
#[derive(Default)]
struct Load(Mutex<HashMap<RouteKey, HashMap<String, Arc<AtomicU32>>>>);

impl Load {
    fn counter(&self, route: &RouteKey, cluster: &str) -> Arc<AtomicU32> {
        let mut load = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Found without allocating on every request but a route's first.
        if let Some(counter) = load.get(route).and_then(|r| r.get(cluster)) {
            return counter.clone();
        }
        load.entry(route.clone())
            .or_default()
            .entry(cluster.to_string())
            .or_default()
            .clone()
    }
}

/// One request in flight on a cluster; released on drop.
struct InFlight(Arc<AtomicU32>);

impl InFlight {
    /// Takes a slot when fewer than `capacity` are taken.
    fn take(counter: Arc<AtomicU32>, capacity: u32) -> Option<Self> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one client connection found out once and uses on each of its requests:
/// the capacity counter and metric handles of each (route, cluster) it was sent
/// to, instead of a lookup in shared maps (and their locks) per request.
#[derive(Default)]
struct Handles {
    clusters: Vec<ClusterHandles>,
    /// Served requests by (cluster, status code).
    served: Vec<(String, StatusCode, prometheus::IntCounter)>,
}

struct ClusterHandles {
    route: RouteKey,
    cluster: String,
    load: Arc<AtomicU32>,
    latency: prometheus::Histogram,
}

/// A client connection's own state; see [`Handles`] and [`Upstreams`].
struct Connection {
    state: Arc<State>,
    clock: Arc<Clock>,
    upstreams: Upstreams,
    handles: Mutex<Handles>,
}

impl Connection {
    fn handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        // Only this connection's task takes it: never contended.
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The in-flight counter and latency histogram of `cluster` for `route`.
    fn cluster(&self, route: &RouteKey, cluster: &str) -> (Arc<AtomicU32>, prometheus::Histogram) {
        let mut handles = self.handles();
        if let Some(h) = handles
            .clusters
            .iter()
            .find(|h| h.cluster == cluster && h.route == *route)
        {
            return (h.load.clone(), h.latency.clone());
        }
        let h = ClusterHandles {
            route: route.clone(),
            cluster: cluster.to_string(),
            load: self.state.load.counter(route, cluster),
            latency: self.state.metrics.latency.with_label_values(&[cluster]),
        };
        let found = (h.load.clone(), h.latency.clone());
        if handles.clusters.len() >= MAX_HANDLES {
            handles.clusters.remove(0);
        }
        handles.clusters.push(h);
        found
    }

    /// Counts a request `cluster` answered with `status`.
    fn served(&self, cluster: &str, status: StatusCode) {
        let mut handles = self.handles();
        if let Some((_, _, counter)) = handles
            .served
            .iter()
            .find(|(c, s, _)| *s == status && c == cluster)
        {
            counter.inc();
            return;
        }
        let counter = self
            .state
            .metrics
            .requests
            .with_label_values(&[cluster, status.as_str()]);
        counter.inc();
        if handles.served.len() >= MAX_HANDLES {
            handles.served.remove(0);
        }
        handles.served.push((cluster.to_string(), status, counter));
    }
}

/// Handles one client connection keeps; the oldest goes first.
const MAX_HANDLES: usize = 16;

/// What every connection shares.
struct State {
    router: Arc<Router>,
    metrics: Arc<IngressMetrics>,
    config: IngressConfig,
    load: Load,
}

/// Serves the ingress on `listener` until `shutdown` resolves.
///
/// This task only accepts. Each client connection is handed to one of
/// [`IngressConfig::workers`] threads, in turn, and stays there: each thread runs
/// its own single-threaded event loop, as each of nginx's worker processes does, so
/// a request never wakes another thread (a multi-threaded runtime's hand-offs and
/// wake-ups cost more than the proxying itself). The workers stop, and close their
/// connections, when this future ends or is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Arc<Router>,
    metrics: Arc<IngressMetrics>,
    config: IngressConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let count = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let state = Arc::new(State {
        router,
        metrics,
        config,
        load: Load::default(),
    });
    let workers: Vec<Worker> = (0..count)
        .filter_map(|i| match Worker::spawn(i, state.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "ingress: cannot start a worker thread");
                None
            }
        })
        .collect();
    let mut next = 0;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "ingress: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        if workers.is_empty() {
            // No thread could be started: serve here rather than not at all.
            tokio::spawn(connection(state.clone(), stream, peer));
            continue;
        }
        match stream.into_std() {
            Ok(stream) => {
                workers[next % workers.len()].hand(stream, peer);
                next = next.wrapping_add(1);
            }
            Err(e) => tracing::warn!(error = %e, %peer, "ingress: cannot hand over a connection"),
        }
    }
}

/// A thread with its own event loop, serving the client connections handed to it.
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
}

impl Worker {
    fn spawn(index: usize, state: Arc<State>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (connections, mut handed) =
            tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
        std::thread::Builder::new()
            .name(format!("fedwasm-ingress-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // Ends when `serve` does (its end drops the sender); dropping the
                    // runtime then closes this worker's connections.
                    while let Some((stream, peer)) = handed.recv().await {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => {
                                tokio::spawn(connection(state.clone(), stream, peer));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, %peer, "ingress: cannot take a connection")
                            }
                        }
                    }
                });
            })?;
        Ok(Self { connections })
    }

    fn hand(&self, stream: std::net::TcpStream, peer: SocketAddr) {
        // A worker gone (it panicked) closes the connection.
        let _ = self.connections.send((stream, peer));
    }
}

/// Serves one client connection: the requests it sends, and the connections to the
/// clusters they go to, all in this one task. Its requests go by the `fast` path
/// while they are of the common kind; from the first that is not, hyper serves the
/// connection (and `upstream` keeps its connections to clusters).
async fn connection(state: Arc<State>, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    let max_head = state.config.max_header_bytes.max(8192);
    let clock = Clock::new(state.config.header_timeout);
    let upstreams = Upstreams::new();
    let own = Arc::new(Connection {
        state,
        clock: clock.clone(),
        upstreams: upstreams.clone(),
        handles: Mutex::default(),
    });
    let read = tokio::select! {
        biased;
        end = fast::serve(&own, &mut stream, peer) => match end {
            fast::End::Closed => return,
            fast::End::Hand(read) => read.freeze(),
        },
        () = Watchdog::new(clock.clone()) => {
            tracing::debug!(%peer, "ingress connection idle past the header timeout: closed");
            return;
        }
    };
    // Only the connection's own `Arc` is cloned per request: the shared state's
    // count would bounce between the workers' cores on every request.
    let service = hyper::service::service_fn(move |req| {
        let own = own.clone();
        async move {
            // Busy until the answer has been sent to its end.
            let busy = own.clock.busy();
            let response = handle(&own, req, peer).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
        }
    });
    // The header timeout is the watchdog's, not hyper's: one timer per connection
    // instead of one per request (see `clock`).
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(max_head)
        .serve_connection(TokioIo::new(Rewind::new(read, stream)), service);
    tokio::select! {
        biased;
        served = conn => if let Err(e) = served {
            tracing::debug!(error = %e, %peer, "ingress connection");
        },
        () = Drive::new(upstreams) => {}
        () = Watchdog::new(clock) => {
            tracing::debug!(%peer, "ingress connection idle past the header timeout: closed");
        }
    }
}

/// A client connection whose first bytes were read already (by the `fast` path):
/// they are read again first.
struct Rewind {
    read: Bytes,
    stream: tokio::net::TcpStream,
}

impl Rewind {
    fn new(read: Bytes, stream: tokio::net::TcpStream) -> Self {
        Self { read, stream }
    }
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A short plain-text answer of the proxy itself.
fn reply(refusal: Refusal) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(Bytes::from(format!("{}\n", refusal.message))));
    *response.status_mut() = refusal.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

// Header names made once, not parsed from a string on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const CLUSTER: HeaderName = HeaderName::from_static(CLUSTER_HEADER);

/// Whether `name` is one of [`HOP_BY_HOP`], in any case.
fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str()))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names costs less than a removal
    // (a hash) for each hop-by-hop name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The request body, kept whole when it is small enough to send again.
enum Payload {
    Replayable(Bytes),
    Stream(Option<Incoming>),
}

async fn payload(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Payload, Response<ProxyBody>> {
    if hyper::body::Body::is_end_stream(&body) {
        // No body (most GETs): nothing to read or keep.
        return Ok(Payload::Replayable(Bytes::new()));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if declared.is_some_and(|n| n > limit) || (chunked && declared.is_none()) {
        return Ok(Payload::Stream(Some(body)));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Payload::Replayable(collected.to_bytes())),
        Err(e) => Err(reply(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        ))),
    }
}

/// Why a request is answered by the proxy itself.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// One request's way to a cluster: the clusters that may serve it, best first for
/// the client's location, and what became of each try. Both HTTP paths (`fast`
/// and hyper's) go through it, so they route, spill, retry, count and eject alike.
struct Tries<'a> {
    own: &'a Connection,
    route: &'a crate::routing::Route,
    candidates: std::vec::IntoIter<&'a Backend>,
    retry_any: bool,
    last_failure: Option<(StatusCode, String)>,
    full: usize,
}

/// One try: a cluster with a slot of its capacity taken until the try is dropped.
struct Try<'a> {
    cluster: &'a str,
    endpoint: &'a str,
    latency: prometheus::Histogram,
    started: Instant,
    _slot: InFlight,
}

/// How a try ended.
enum Outcome {
    /// The cluster answered with this status.
    Answered(StatusCode),
    /// No connection could be opened: the request was not sent.
    Unsent(String),
    /// The connection failed with the request sent or partly sent.
    Failed(String),
    /// No answer before the response timeout.
    TimedOut,
}

/// What to do after a try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Give the client this answer.
    Deliver,
    /// Try the next cluster.
    Next,
    /// Try no other: answer with [`Tries::give_up`].
    Stop,
}

impl<'a> Tries<'a> {
    /// The clusters for a `method` request to `host` and `path` from `peer`
    /// (`forwarded_for`: its `X-Forwarded-For`), and the client's address as the
    /// locality table sees it; or the proxy's own answer when none may serve it.
    fn new(
        own: &'a Connection,
        table: &'a crate::routing::Table,
        method: &str,
        host: &str,
        path: &str,
        peer: SocketAddr,
        forwarded_for: Option<&str>,
    ) -> Result<(Self, std::net::IpAddr), Refusal> {
        let Some(route) = table.ingress_route(host, path) else {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "no federated Ingress rule matches this host and path",
            ));
        };
        let client = table.locality.client_address(peer.ip(), forwarded_for);
        let location = table.locality.locate(client);
        let mut candidates: Vec<&Backend> = route.ranked(&location).filter(|b| b.healthy).collect();
        if candidates.is_empty() {
            // Every endpoint fails its probes or is ejected: more likely a starved
            // prober or a passing blip than every cluster gone. Try the ones that
            // are otherwise fit (fail open) rather than refuse everyone.
            candidates = route.ranked(&location).filter(|b| b.eligible).collect();
            if !candidates.is_empty() {
                tracing::warn!(route = ?route.key, "no healthy backend; trying every eligible one (panic routing)");
            }
        }
        if candidates.is_empty() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no healthy cluster serves {}/{}",
                    route.key.namespace, route.key.name
                ),
            ));
        }
        let tries = Self {
            own,
            route,
            candidates: candidates.into_iter(),
            retry_any: idempotent(method),
            last_failure: None,
            full: 0,
        };
        Ok((tries, client))
    }

    /// The next cluster to try: one with an endpoint and room for the request.
    fn next(&mut self) -> Option<Try<'a>> {
        for backend in self.candidates.by_ref() {
            let Some(endpoint) = backend.endpoint.as_deref() else {
                continue;
            };
            let (load, latency) = self.own.cluster(&self.route.key, &backend.cluster);
            let Some(slot) = InFlight::take(load, backend.capacity) else {
                // Full: spill to the next cluster in the ranking.
                self.full += 1;
                continue;
            };
            return Some(Try {
                cluster: &backend.cluster,
                endpoint,
                latency,
                started: Instant::now(),
                _slot: slot,
            });
        }
        None
    }

    /// Counts how `attempt` ended, reports it to the health checks, and says what
    /// next. `replayable`: the request could be sent again.
    fn settle(&mut self, attempt: &Try<'_>, outcome: Outcome, replayable: bool) -> Verdict {
        let state = &*self.own.state;
        let cluster = attempt.cluster;
        let endpoint = attempt.endpoint;
        attempt
            .latency
            .observe(attempt.started.elapsed().as_secs_f64());
        let (kind, failure, retry) = match outcome {
            Outcome::Answered(status) if status.is_server_error() => {
                if !(self.retry_any && replayable) {
                    // Nothing to retry with: their answer is the answer.
                    if state.router.health().report_failure(endpoint, false) {
                        state.metrics.ejections.with_label_values(&[cluster]).inc();
                    }
                    self.own.served(cluster, status);
                    return Verdict::Deliver;
                }
                (
                    "status_5xx",
                    (
                        StatusCode::BAD_GATEWAY,
                        format!("{cluster} answered {status}"),
                    ),
                    true,
                )
            }
            Outcome::Answered(status) => {
                state.router.health().report_success(endpoint);
                self.own.served(cluster, status);
                return Verdict::Deliver;
            }
            Outcome::Unsent(why) => (
                "connect",
                (StatusCode::BAD_GATEWAY, format!("{cluster}: {why}")),
                true,
            ),
            Outcome::Failed(why) => (
                "other",
                (StatusCode::BAD_GATEWAY, format!("{cluster}: {why}")),
                self.retry_any,
            ),
            Outcome::TimedOut => (
                "timeout",
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{cluster} did not answer in time"),
                ),
                self.retry_any,
            ),
        };
        state
            .metrics
            .errors
            .with_label_values(&[cluster, kind])
            .inc();
        if state
            .router
            .health()
            .report_failure(endpoint, kind != "status_5xx")
        {
            state.metrics.ejections.with_label_values(&[cluster]).inc();
        }
        tracing::info!(%cluster, kind, "ingress: a cluster failed a request");
        self.last_failure = Some(failure);
        if !retry {
            return Verdict::Stop;
        }
        state.metrics.retries.with_label_values(&[cluster]).inc();
        Verdict::Next
    }

    /// The answer when no try delivered one.
    fn give_up(self) -> Refusal {
        match self.last_failure {
            Some((status, why)) => {
                Refusal::new(status, format!("no cluster could serve the request: {why}"))
            }
            None if self.full > 0 => Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "every healthy cluster is at capacity",
            ),
            None => Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no cluster could take the request",
            ),
        }
    }
}

async fn handle(own: &Connection, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
    let state = &*own.state;
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let table = state.router.table();
    let forwarded_for = parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok());
    let (mut tries, client) = match Tries::new(
        own,
        &table,
        parts.method.as_str(),
        host,
        parts.uri.path(),
        peer,
        forwarded_for,
    ) {
        Ok(t) => t,
        Err(refusal) => return reply(refusal),
    };
    let mut payload = match payload(body, &parts.headers, state.config.retry_body_limit).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    while let Some(attempt) = tries.next() {
        let body = match &mut payload {
            Payload::Replayable(bytes) => full_body(bytes.clone()),
            Payload::Stream(stream) => match stream.take() {
                Some(s) => s.boxed(),
                // Sent to a cluster that failed; it cannot be sent again.
                None => break,
            },
        };
        let upstream = match upstream_request(&parts, host, client, body) {
            Ok(r) => r,
            Err(e) => return reply(Refusal::new(StatusCode::BAD_REQUEST, e)),
        };
        let answer = own
            .clock
            .within(
                attempt.started + state.config.response_timeout,
                own.upstreams.send(attempt.endpoint, upstream),
            )
            .await;
        let (outcome, response) = match answer {
            Some(Ok(response)) => (Outcome::Answered(response.status()), Some(response)),
            Some(Err(e @ SendError::Connect(_))) => (Outcome::Unsent(e.to_string()), None),
            Some(Err(e)) => (Outcome::Failed(e.to_string()), None),
            None => (Outcome::TimedOut, None),
        };
        let replayable = matches!(payload, Payload::Replayable(_));
        match (tries.settle(&attempt, outcome, replayable), response) {
            (Verdict::Deliver, Some(response)) => return finish(response, attempt.cluster),
            (Verdict::Stop, _) => break,
            _ => {}
        }
    }
    reply(tries.give_up())
}

/// The request as a cluster gets it: origin-form (`/path?query`), as a server
/// expects from a client; the cluster is the connection it is sent on.
fn upstream_request(
    parts: &hyper::http::request::Parts,
    host: &str,
    client: std::net::IpAddr,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, String> {
    let uri = match parts.uri.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => hyper::Uri::from(p.clone()),
        Some(p) => {
            hyper::Uri::try_from(p.as_str()).map_err(|e| format!("bad request target: {e}"))?
        }
        None => hyper::Uri::from_static("/"),
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    *headers = parts.headers.clone();
    strip_hop_by_hop(headers);
    // The member's ingress routes by the Host the client asked for (most often the
    // client's own Host header, shared rather than copied).
    let host_value = match parts.headers.get(header::HOST) {
        Some(v) if v.as_bytes() == host.as_bytes() => Some(v.clone()),
        _ => HeaderValue::from_str(host).ok(),
    };
    if let Some(h) = &host_value {
        headers.insert(header::HOST, h.clone());
    }
    let xff = match parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {client}"),
        None => client.to_string(),
    };
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(h) = host_value {
        headers.insert(X_FORWARDED_HOST, h);
    }
    Ok(request)
}

/// The cluster's answer as the client gets it.
fn finish(response: Response<Incoming>, cluster: &str) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(cluster) {
        parts.headers.insert(CLUSTER, v);
    }
    Response::from_parts(parts, body.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn capacity_is_a_bound_on_requests_in_flight() {
        let counter = Arc::new(AtomicU32::new(0));
        let a = InFlight::take(counter.clone(), 2).unwrap();
        let _b = InFlight::take(counter.clone(), 2).unwrap();
        assert!(InFlight::take(counter.clone(), 2).is_none());
        drop(a);
        assert!(InFlight::take(counter.clone(), 2).is_some());
        assert!(InFlight::take(Arc::new(AtomicU32::new(0)), 0).is_none());
    }

    #[test]
    fn which_methods_are_retried() {
        assert!(idempotent("GET") && idempotent("PUT"));
        assert!(!idempotent("POST") && !idempotent("PATCH") && !idempotent("get"));
    }
}
