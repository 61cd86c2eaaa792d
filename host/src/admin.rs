//! The admin HTTP API: plugins, ad-hoc plans, health and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::plan::PlanRequest;
use crate::runtime::{PluginError, Registry};

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub health: Health,
    /// The routing table, when a federation is attached.
    pub router: Option<Arc<crate::routing::Router>>,
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

/// `GET /plugins`, `POST /plan`, `GET /healthz`, `GET /metrics`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/plugins", get(plugins))
        .route("/plan", post(plan))
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
        let state = AdminState {
            registry: Registry::new(runtime).unwrap(),
            metrics,
            health: health.clone(),
            router: None,
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
