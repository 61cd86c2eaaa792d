//! The global L7 ingress: one address for every client, each request sent to the
//! closest healthy cluster with capacity, as the routing table ranks them for the
//! client's location, and to the next one when that fails.
//!
//! A plain reverse proxy on hyper 1, inside the host's tokio runtime: hop-by-hop
//! headers dropped, `Host` kept, `X-Forwarded-For/-Proto/-Host` added, bodies
//! streamed both ways. A connection failure is retried on the next cluster for any
//! method; a failed idempotent request too. Retrying needs the request body again,
//! so bodies up to [`IngressConfig::retry_body_limit`] are kept for that; a larger
//! one streams to the first cluster that accepts the connection, unretried.

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
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::routing::{Backend, RouteKey, Router};

use crate::http::full_body;
pub use crate::http::{empty_body, http_client, HttpClient, ProxyBody};

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
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            retry_body_limit: 64 * 1024,
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

/// What every connection shares.
struct State {
    router: Arc<Router>,
    client: HttpClient,
    metrics: Arc<IngressMetrics>,
    config: IngressConfig,
    load: Load,
}

/// Serves the ingress on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Arc<Router>,
    metrics: Arc<IngressMetrics>,
    config: IngressConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let state = Arc::new(State {
        router,
        client: http_client(),
        metrics,
        config,
        load: Load::default(),
    });
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
        let state = state.clone();
        let header_timeout = state.config.header_timeout;
        let max_head = state.config.max_header_bytes.max(8192);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_head)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "ingress connection");
            }
        });
    }
}

/// A short plain-text answer of the proxy itself.
fn reply(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
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

fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
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
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if declared.is_some_and(|n| n > limit) || (chunked && declared.is_none()) {
        return Ok(Payload::Stream(Some(body)));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Payload::Replayable(collected.to_bytes())),
        Err(e) => Err(reply(
            StatusCode::BAD_REQUEST,
            &format!("reading the request body: {e}"),
        )),
    }
}

async fn handle(state: &State, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let table = state.router.table();
    let Some(route) = table.ingress_route(&host, &path) else {
        return reply(
            StatusCode::NOT_FOUND,
            "no federated Ingress rule matches this host and path",
        );
    };
    let forwarded_for = parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok());
    let client = table.locality.client_address(peer.ip(), forwarded_for);
    let location = table.locality.locate(client);
    let mut candidates: Vec<&Backend> = route.ranked(&location).filter(|b| b.healthy).collect();
    if candidates.is_empty() {
        // Every endpoint fails its probes or is ejected: more likely a starved
        // prober or a passing blip than every cluster gone. Try the ones that are
        // otherwise fit (fail open) rather than refuse everyone.
        candidates = route.ranked(&location).filter(|b| b.eligible).collect();
        if !candidates.is_empty() {
            tracing::warn!(route = ?route.key, "no healthy backend; trying every eligible one (panic routing)");
        }
    }
    if candidates.is_empty() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "no healthy cluster serves {}/{}",
                route.key.namespace, route.key.name
            ),
        );
    }
    let mut payload = match payload(body, &parts.headers, state.config.retry_body_limit).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let retry_any = idempotent(&parts.method);
    let mut last_failure: Option<(StatusCode, String)> = None;
    let mut full = 0;
    for backend in candidates {
        let Some(endpoint) = backend.endpoint.as_deref() else {
            continue;
        };
        let Some(_slot) = InFlight::take(
            state.load.counter(&route.key, &backend.cluster),
            backend.capacity,
        ) else {
            // Full: spill to the next cluster in the ranking.
            full += 1;
            continue;
        };
        let body = match &mut payload {
            Payload::Replayable(bytes) => full_body(bytes.clone()),
            Payload::Stream(stream) => match stream.take() {
                Some(s) => s.boxed(),
                // Sent to a cluster that failed; it cannot be sent again.
                None => break,
            },
        };
        let upstream = match upstream_request(&parts, &host, client, endpoint, body) {
            Ok(r) => r,
            Err(e) => return reply(StatusCode::BAD_REQUEST, &e),
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            state.config.response_timeout,
            state.client.request(upstream),
        )
        .await;
        let cluster = backend.cluster.as_str();
        state
            .metrics
            .latency
            .with_label_values(&[cluster])
            .observe(started.elapsed().as_secs_f64());
        let (kind, failure, retry) = match outcome {
            Ok(Ok(response)) if response.status().is_server_error() => {
                let status = response.status();
                let replayable = matches!(payload, Payload::Replayable(_));
                if !(retry_any && replayable) {
                    // Nothing to retry with: their answer is the answer.
                    if state.router.health().report_failure(endpoint, false) {
                        state.metrics.ejections.with_label_values(&[cluster]).inc();
                    }
                    return finish(state, response, cluster);
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
            Ok(Ok(response)) => {
                state.router.health().report_success(endpoint);
                return finish(state, response, cluster);
            }
            Ok(Err(e)) if e.is_connect() => (
                "connect",
                (StatusCode::BAD_GATEWAY, format!("{cluster}: {e}")),
                true,
            ),
            Ok(Err(e)) => (
                "other",
                (StatusCode::BAD_GATEWAY, format!("{cluster}: {e}")),
                retry_any,
            ),
            Err(_) => (
                "timeout",
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{cluster} did not answer in time"),
                ),
                retry_any,
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
        last_failure = Some(failure);
        if !retry {
            break;
        }
        state.metrics.retries.with_label_values(&[cluster]).inc();
    }
    match last_failure {
        Some((status, why)) => reply(
            status,
            &format!("no cluster could serve the request: {why}"),
        ),
        None if full > 0 => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "every healthy cluster is at capacity",
        ),
        None => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no cluster could take the request",
        ),
    }
}

/// The request as a cluster gets it.
fn upstream_request(
    parts: &hyper::http::request::Parts,
    host: &str,
    client: std::net::IpAddr,
    endpoint: &str,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, String> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut target = String::with_capacity(endpoint.len() + path.len());
    target.push_str(endpoint);
    target.push_str(path);
    let uri = hyper::Uri::try_from(target).map_err(|e| format!("bad request target: {e}"))?;
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
fn finish(state: &State, response: Response<Incoming>, cluster: &str) -> Response<ProxyBody> {
    state
        .metrics
        .requests
        .with_label_values(&[cluster, response.status().as_str()])
        .inc();
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
        assert!(idempotent(&Method::GET) && idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
    }
}
