//! The admin HTTP API: plugins, ad-hoc plans, previews, shadow differences, routes,
//! health and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::placer::Placer;
use crate::plan::PlanRequest;
use crate::runtime::{PluginError, Registry};
use crate::shadow::SHADOW_SUFFIX;

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
/// `GET /routes`, `GET /healthz`, `GET /metrics`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/plugins", get(plugins))
        .route("/plan", post(plan))
        .route("/preview", post(preview))
        .route("/shadow", get(shadow))
        .route("/leader", get(leader))
        .route("/healthz", get(healthz))
        .route("/routes", get(routes))
        .route("/metrics", get(metrics))
        .with_state(state)
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

/// Same body and answer as `fedwasm plan`, plus an optional `"plugin": NAME`.
async fn plan(State(state): State<AdminState>, body: String) -> Response {
    // A call may run up to its deadline: keep it off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
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

    #[tokio::test]
    async fn healthz_fails_once_a_controller_stopped() {
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let status = |url: String| async move { reqwest::get(url).await.unwrap().status() };
        assert_eq!(status(url.clone()).await, reqwest::StatusCode::OK);
        health.fail();
        assert_eq!(status(url).await, reqwest::StatusCode::SERVICE_UNAVAILABLE);
        server.abort();
    }
}
