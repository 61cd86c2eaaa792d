//! The admin HTTP API: plugins, ad-hoc plans, previews, shadow differences, routes,
//! health and metrics.
//!
//! It is served by its own small accept loop rather than `axum::serve`, so that a
//! client cannot hold the host: request heads must arrive within a deadline (a
//! client sending its headers byte by byte is dropped), every request has a deadline
//! as a whole, connections are limited, `/plan` has its own small capacity (a flood
//! of plans cannot starve the controller's plugin calls) and shutdown is bounded
//! even with requests half sent. With a token, every endpoint but `/healthz` wants
//! `Authorization: Bearer <token>`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

use crate::placer::Placer;
use crate::plan::PlanRequest;
use crate::runtime::{PluginError, Registry};
use crate::shadow::SHADOW_SUFFIX;

/// How the admin API protects itself.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// When set, every endpoint but `/healthz` wants `Authorization: Bearer <token>`.
    pub token: Option<AdminToken>,
    /// A request's head (request line and headers) must arrive within this.
    pub header_timeout: Duration,
    /// A whole request (body read, handler run) must finish within this: 408 after.
    pub request_timeout: Duration,
    /// Connections open at once at most; more are closed at once.
    pub max_connections: usize,
    /// `/plan` evaluations at once at most; more are answered 429 at once.
    pub max_plans: usize,
    /// How long connections may take to finish once shutdown starts; then they are
    /// dropped.
    pub shutdown_grace: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: None,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_plans: 2,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A bearer token, compared in constant time; never printed.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8; 32]>);

impl AdminToken {
    /// The token in `text`, without surrounding white space; `None` if empty.
    pub fn new(text: &str) -> Option<Self> {
        let token = text.trim();
        (!token.is_empty()).then(|| Self(Arc::new(Sha256::digest(token.as_bytes()).into())))
    }

    /// Whether `candidate` is the token. Both are hashed first, so the comparison
    /// takes the same time whatever the candidate's length or content.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let other: [u8; 32] = Sha256::digest(candidate).into();
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub health: Health,
    /// The routing table, when a federation is attached.
    pub router: Option<Arc<crate::routing::Router>>,
    /// The controllers' placer (its shadows, and the base of previews).
    pub placer: Placer,
    /// The federation, when one is attached.
    pub federation: Option<FederationView>,
}

/// The federation plane and the member view the controllers use.
#[derive(Clone)]
pub struct FederationView {
    pub client: kube::Client,
    pub fleet: Arc<crate::fleet::Fleet>,
    /// The kinds the controllers propagate.
    pub kinds: Vec<crate::federation::kinds::Kind>,
    /// Who leads, as this host knows it.
    pub leadership: tokio::sync::watch::Receiver<crate::leader::Leadership>,
    /// Whether this host takes part in an election (else it leads alone).
    pub election: bool,
}

/// `POST /preview`: `{"plugin": NAME, "as": REPLACED}`; `as` defaults to `NAME`
/// without a `.shadow` suffix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    plugin: String,
    #[serde(rename = "as")]
    as_name: Option<String>,
}

/// What the middleware and `/plan` share besides [`AdminState`].
#[derive(Clone)]
struct Guard {
    token: Option<AdminToken>,
    request_timeout: Duration,
    plans: Arc<Semaphore>,
}

/// Whether the process still does its job: false once a part that must run for
/// ever (a propagation controller) stopped. `/healthz` reports it.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn healthy() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
    pub fn is_ok(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn fail(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// `GET /plugins`, `POST /plan`, `POST /preview`, `GET /shadow`, `GET /leader`,
/// `GET /routes`, `GET /healthz`, `GET /metrics`, with the token check and the
/// request deadline of `config`.
pub fn router(state: AdminState, config: &AdminConfig) -> Router {
    let guard = Guard {
        token: config.token.clone(),
        request_timeout: config.request_timeout,
        plans: Arc::new(Semaphore::new(config.max_plans.max(1))),
    };
    let plans = guard.plans.clone();
    // A preview decides every federated object: one at a time, so a flood of them
    // cannot crowd the controller's plugin calls off the blocking pool.
    let previews = Arc::new(Semaphore::new(1));
    Router::new()
        .route("/plugins", get(plugins))
        .route(
            "/plan",
            post(move |state: State<AdminState>, body: String| plan(state, plans.clone(), body)),
        )
        .route(
            "/preview",
            post(move |state: State<AdminState>, body: String| {
                one_preview(state, previews.clone(), body)
            }),
        )
        .route("/shadow", get(shadow))
        .route("/leader", get(leader))
        .route("/healthz", get(healthz))
        .route("/routes", get(routes))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(middleware::from_fn_with_state(guard, guarded))
}

/// The token check (all but `/healthz`) and the deadline of the whole request.
async fn guarded(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if let Some(token) = &guard.token {
        if request.uri().path() != "/healthz" && !authorized(token, &request) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(
                    json!({"error": "a bearer token is required (Authorization: Bearer <token>)"}),
                ),
            )
                .into_response();
        }
    }
    match tokio::time::timeout(guard.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({"error": format!(
                "the request took longer than {} ms", guard.request_timeout.as_millis()
            )})),
        )
            .into_response(),
    }
}

fn authorized(token: &AdminToken, request: &Request) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|candidate| token.matches(candidate))
}

/// Serves `routes` on `listener` until `shutdown` resolves, then lets connections
/// finish for at most `config.shutdown_grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Router,
    config: &AdminConfig,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = config.max_connections, "admin API: too many connections; one refused");
            continue;
        };
        let service = TowerToHyperService::new(routes.clone());
        let header_timeout = config.header_timeout;
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopping => {
                    // Finish the request in progress, take no other.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "admin API connection");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "admin API: connections still open after the shutdown grace; dropped"
        );
        tasks.shutdown().await;
    }
}

async fn plugins(State(state): State<AdminState>) -> impl IntoResponse {
    Json(state.registry.list())
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Per route and client location, the ranking in effect.
async fn routes(State(state): State<AdminState>) -> Response {
    match &state.router {
        Some(router) => Json(router.describe()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no federation attached (run with --kubeconfig)"})),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// [`preview`], one at a time: 429 at once while another runs.
async fn one_preview(state: State<AdminState>, previews: Arc<Semaphore>, body: String) -> Response {
    let Ok(_permit) = previews.try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "a preview is already running; retry when it ends"})),
        )
            .into_response();
    };
    preview(state, body).await
}

/// What the plugin `plugin` in the plugin directory would change in place of `as`,
/// decided from the controllers' own member view; nothing is written.
async fn preview(State(state): State<AdminState>, body: String) -> Response {
    let Some(view) = &state.federation else {
        return error(
            StatusCode::NOT_FOUND,
            "no federation attached (run with --kubeconfig)",
        );
    };
    let body: PreviewBody = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"plugin\": NAME, \"as\": NAME}}: {e}"),
            )
        }
    };
    let Ok(candidate) = state.registry.get(&body.plugin) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no plugin named `{}` is loaded", body.plugin),
        );
    };
    let replaced = body.as_name.unwrap_or_else(|| {
        body.plugin
            .strip_suffix(SHADOW_SUFFIX)
            .unwrap_or(&body.plugin)
            .to_string()
    });
    let placer = state
        .placer
        .substituting([(replaced.clone(), candidate)].into_iter().collect());
    let members = view.fleet.snapshot().members;
    match crate::preview::preview(&view.client, &placer, &members, &view.kinds).await {
        Ok(preview) => Json(preview).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// Who leads: `{"identity", "leader", "leading", "election"}`.
async fn leader(State(state): State<AdminState>) -> Response {
    let Some(view) = &state.federation else {
        return error(
            StatusCode::NOT_FOUND,
            "no federation attached (run with --kubeconfig)",
        );
    };
    let leadership = view.leadership.borrow().clone();
    Json(json!({
        "identity": leadership.identity,
        "leader": leadership.leader,
        "leading": leadership.leading,
        "election": view.election,
    }))
    .into_response()
}

/// The shadow plugins loaded and their recent differences, newest first.
async fn shadow(State(state): State<AdminState>) -> Response {
    let shadows: Vec<String> = state
        .registry
        .serving()
        .keys()
        .filter(|n| n.ends_with(SHADOW_SUFFIX))
        .cloned()
        .collect();
    Json(json!({
        "shadows": shadows,
        "recent": state.placer.shadows().recent(),
    }))
    .into_response()
}

/// `ok` while every part runs; 503 once a controller stopped (the process then
/// exits so its supervisor restarts it).
async fn healthz(State(state): State<AdminState>) -> Response {
    if state.health.is_ok() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a controller stopped\n").into_response()
    }
}

/// Same body and answer as `fedwasm plan`, plus an optional `"plugin": NAME`; 429
/// at once when `plans` has no room.
async fn plan(State(state): State<AdminState>, plans: Arc<Semaphore>, body: String) -> Response {
    let Ok(permit) = plans.try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "too many plans at once; retry shortly"})),
        )
            .into_response();
    };
    // A call may run up to its deadline: keep it off the async workers. The permit
    // is held until the evaluation ends, even if the request timed out meanwhile.
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let (request, plugin) = PlanRequest::parse(&body)?;
        request.evaluate(&state.registry, plugin.as_deref())
    })
    .await;
    match outcome {
        Ok(Ok(decision)) => Json(decision).into_response(),
        Ok(Err(e)) => {
            let status = match &e {
                PluginError::BadRequest(_) => StatusCode::BAD_REQUEST,
                PluginError::NotFound(_) => StatusCode::NOT_FOUND,
                PluginError::Unsupported { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (
                status,
                Json(json!({"error": e.to_string(), "kind": e.kind()})),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("plan task failed: {e}")})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::runtime::{Runtime, RuntimeConfig};
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn state() -> (AdminState, Health) {
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::new(RuntimeConfig::default(), metrics.clone()).unwrap();
        let health = Health::healthy();
        let registry = Registry::new(runtime).unwrap();
        let state = AdminState {
            placer: Placer::new(registry.clone()),
            registry,
            metrics,
            health: health.clone(),
            router: None,
            federation: None,
        };
        (state, health)
    }

    /// The admin API on a free loopback port, served by [`serve`] until the sender
    /// says stop; the task ends when `serve` returns.
    async fn start(
        config: AdminConfig,
    ) -> (
        SocketAddr,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
        Health,
    ) {
        let (state, health) = state();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let routes = router(state, &config);
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            serve(listener, routes, &config, shutdown).await;
        });
        (addr, stop, task, health)
    }

    async fn status(url: String, token: Option<&str>) -> u16 {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// Everything the server sends until it closes the connection, if it does
    /// within `limit`.
    async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut out = Vec::new();
        let read = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.ok()
            .map(|()| String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn healthz_fails_once_a_controller_stopped() {
        let (addr, _stop, _task, health) = start(AdminConfig::default()).await;
        let url = format!("http://{addr}/healthz");
        assert_eq!(status(url.clone(), None).await, 200);
        health.fail();
        assert_eq!(status(url, None).await, 503);
    }

    #[tokio::test]
    async fn a_token_guards_every_endpoint_but_healthz() {
        let config = AdminConfig {
            token: AdminToken::new("s3cret-admin-token\n"),
            ..AdminConfig::default()
        };
        let (addr, _stop, _task, _) = start(config).await;
        for path in ["/plugins", "/metrics", "/routes"] {
            let url = format!("http://{addr}{path}");
            assert_eq!(status(url.clone(), None).await, 401, "{path}");
            assert_eq!(status(url.clone(), Some("wrong")).await, 401, "{path}");
            assert_eq!(
                status(url.clone(), Some("s3cret-admin-tok")).await,
                401,
                "{path}"
            );
            let with = status(url, Some("s3cret-admin-token")).await;
            assert_ne!(with, 401, "{path}");
        }
        let plan = reqwest::Client::new()
            .post(format!("http://{addr}/plan"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(plan.status().as_u16(), 401);
        assert_eq!(status(format!("http://{addr}/healthz"), None).await, 200);
        // Without a token configured, nothing is asked for.
        let (open, _stop, _task, _) = start(AdminConfig::default()).await;
        assert_eq!(status(format!("http://{open}/plugins"), None).await, 200);
    }

    #[test]
    fn tokens_compare_whole() {
        let token = AdminToken::new("  abc \n").unwrap();
        assert!(token.matches(b"abc"));
        assert!(!token.matches(b"ab"));
        assert!(!token.matches(b"abcd"));
        assert!(!token.matches(b""));
        assert!(AdminToken::new(" \n").is_none());
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }

    #[tokio::test]
    async fn a_client_trickling_its_headers_is_dropped() {
        let config = AdminConfig {
            header_timeout: Duration::from_millis(300),
            ..AdminConfig::default()
        };
        let (addr, _stop, _task, _) = start(config).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let started = Instant::now();
        // One byte every 20 ms: never idle, never done.
        let trickle = tokio::spawn(async move {
            let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            writer.write_all(head).await?;
            for _ in 0..500 {
                writer.write_all(b"a").await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            std::io::Result::Ok(())
        });
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the trickling client is still connected");
        assert!(started.elapsed() >= Duration::from_millis(250));
        trickle.abort();
    }

    #[tokio::test]
    async fn a_request_that_takes_too_long_gets_408() {
        let config = AdminConfig {
            request_timeout: Duration::from_millis(300),
            ..AdminConfig::default()
        };
        let (addr, _stop, _task, _) = start(config).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A head promising 100 bytes of body, and 10 of them.
        stream
            .write_all(b"POST /plan HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"hook\": ")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let answer = answer.expect("an answer within 3 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed() {
        let config = AdminConfig {
            max_connections: 2,
            ..AdminConfig::default()
        };
        let (addr, _stop, _task, _) = start(config).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"HTTP/1.1 200");
            held.push(s); // kept alive
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut third, Duration::from_secs(2)).await;
        assert_eq!(
            answer.as_deref(),
            Some(""),
            "the third connection was served"
        );
        drop(held.pop());
        let url = format!("http://{addr}/healthz");
        let until = Instant::now() + Duration::from_secs(5);
        // The slot is free once the server saw the close.
        loop {
            let r = reqwest::Client::new().get(&url).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < until, "no slot after a connection closed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_is_bounded_with_a_request_half_sent() {
        let config = AdminConfig {
            header_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_millis(500),
            ..AdminConfig::default()
        };
        let (addr, stop, task, _) = start(config).await;
        let mut half_head = TcpStream::connect(addr).await.unwrap();
        half_head
            .write_all(b"GET /healthz HTTP/1.1\r\nHo")
            .await
            .unwrap();
        let mut half_body = TcpStream::connect(addr).await.unwrap();
        half_body
            .write_all(b"POST /plan HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("the server stopped within 3 s")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // The listener is gone: nobody is served any more.
        assert!(TcpStream::connect(addr).await.is_err());
    }

    /// Any body to `/plan` and `/preview`, well-formed or not: an answer every
    /// time, never a 500; a refusal is a 4xx with `{"error": "..."}` naming what
    /// is wrong.
    #[test]
    fn any_plan_or_preview_body_gets_a_clear_answer() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (addr, _stop, _task, _) = rt.block_on(start(AdminConfig::default()));
        let client = reqwest::Client::new();
        let json_like = prop_oneof![
            ".{0,64}".boxed(),
            Just(
                r#"{"hook": "distribute", "totalReplicas": 5, "clusters": ["a", "b"]}"#.to_string()
            )
            .boxed(),
            (
                prop_oneof![
                    Just("select"),
                    Just("distribute"),
                    Just("rank"),
                    Just("customize"),
                    Just("nope")
                ],
                prop::collection::btree_map(
                    prop_oneof![
                        Just("totalReplicas"),
                        Just("clusters"),
                        Just("object"),
                        Just("backends"),
                        Just("plugin"),
                        Just("settings"),
                        Just("cluster")
                    ],
                    prop_oneof![
                        any::<i64>().prop_map(serde_json::Value::from),
                        ".{0,8}".prop_map(serde_json::Value::from),
                        Just(serde_json::json!(["a", "b"])),
                        Just(serde_json::json!({"kind": "ConfigMap"})),
                        Just(serde_json::Value::Null),
                    ],
                    0..5,
                ),
            )
                .prop_map(|(hook, fields)| {
                    let mut v = serde_json::json!({"hook": hook});
                    for (k, f) in fields {
                        v[k] = f;
                    }
                    v.to_string()
                })
                .boxed(),
        ];
        let mut runner = TestRunner::new(Config {
            cases: 128,
            ..Config::default()
        });
        runner
            .run(
                &(json_like, prop_oneof![Just("/plan"), Just("/preview")]),
                |(body, path)| {
                    let (status, answer) = rt.block_on(async {
                        let r = client
                            .post(format!("http://{addr}{path}"))
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        let status = r.status().as_u16();
                        (status, r.json::<serde_json::Value>().await.ok())
                    });
                    prop_assert!(status != 500 && status < 600, "{path} {body}: {status}");
                    if status != 200 {
                        prop_assert!((400..500).contains(&status), "{path} {body}: {status}");
                        let message = answer.as_ref().and_then(|a| a["error"].as_str());
                        prop_assert!(
                            message.is_some_and(|m| !m.is_empty()),
                            "{path} {body}: {status} {answer:?}"
                        );
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    #[tokio::test]
    async fn a_second_preview_while_one_runs_is_refused_at_once() {
        let (state, _) = state();
        let previews = Arc::new(Semaphore::new(1));
        let running = previews.clone().try_acquire_owned().unwrap();
        let body = r#"{"plugin": "weighted-spread"}"#.to_string();
        let refused = one_preview(State(state.clone()), previews.clone(), body.clone()).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(running);
        // Its turn: this host has no federation attached, which it is told.
        let answered = one_preview(State(state), previews, body).await;
        assert_eq!(answered.status(), StatusCode::NOT_FOUND);
    }
}
