//! The HTTP layer: [`router`] wires thin handlers to the shared [`AppState`]; errors
//! are [`error::ApiError`]s; bodies are parsed in [`body`]. Handlers convert DTOs to
//! registry/pca types, call one function, and return JSON.

pub mod auth;
pub mod body;
pub mod body_stream;
pub mod cluster;
pub mod components;
pub mod connection;
pub mod error;
pub mod fd_limit;
pub mod guard;
pub mod limits;
pub mod models;
pub mod npz;
pub mod project;
pub mod samples;
pub mod scoring;
pub mod server;
pub mod snapshot;
pub mod wait;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Json, Router};
use serde_json::json;

use crate::metrics::{self, Metrics};
use crate::model::Registry;
use body::BodyLimit;
use error::ApiError;

/// Every route as `(method, path template)`: the list the OpenAPI test compares with
/// `openapi.yaml`. [`router`] must register exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("POST", "/v1/models"),
    ("GET", "/v1/models/{name}"),
    ("DELETE", "/v1/models/{name}"),
    ("POST", "/v1/models/{name}/samples"),
    ("GET", "/v1/models/{name}/components"),
    ("POST", "/v1/models/{name}/project"),
    ("GET", "/v1/models/{name}/limits"),
    ("GET", "/v1/models/{name}/snapshot"),
    ("PUT", "/v1/models/{name}/snapshot"),
];

/// State shared by every handler. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The live models.
    pub registry: Arc<Registry>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// False until start-up is complete and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// API keys.
    pub auth: Arc<auth::Auth>,
    /// Limits and overload admission.
    pub guard: Arc<guard::Guard>,
}

/// The application's router. `body_limit` is the largest accepted body in bytes.
pub fn router(state: AppState, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/v1/models", get(models::list).post(models::create))
        .route(
            "/v1/models/{name}",
            get(models::status).delete(models::delete),
        )
        .route("/v1/models/{name}/samples", post(samples::ingest))
        .route("/v1/models/{name}/components", get(components::get))
        .route("/v1/models/{name}/project", post(project::project))
        .route("/v1/models/{name}/limits", get(limits::get))
        .route(
            "/v1/models/{name}/snapshot",
            get(snapshot::export).put(snapshot::import),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A bug that panics in a handler answers 500 `internal` (the panic is logged)
        // instead of dropping the connection; the process is unaffected either way.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        // Layers run outermost last-added: metrics see every answer; the key is checked
        // before any admission slot is taken or any body is read.
        .layer(middleware::from_fn_with_state(
            state.guard.clone(),
            guard::shed_and_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_key,
        ))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        .with_state(state)
}

/// The `{name}` path segment, with axum's rejection (e.g. invalid percent-encoding)
/// given our error shape.
#[derive(Debug)]
pub struct ModelName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ModelName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| Self(name))
            .map_err(|e| ApiError::invalid("name", e.body_text()))
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when start-up finished, shutdown has not begun, and no model was held back by
/// recovery. A held-back model makes it answer 503 `{"status": "degraded", "held": […]}`
/// naming the model and what is missing, so the operator sees it before serving.
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return ApiError::Unavailable.into_response();
    }
    let held = state.registry.held();
    if held.is_empty() {
        return Json(json!({ "status": "ready" })).into_response();
    }
    let held: Vec<_> = held
        .iter()
        .map(|h| json!({ "model": h.name, "problem": h.reason }))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "degraded", "held": held })),
    )
        .into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
