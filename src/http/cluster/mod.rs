//! The HTTP layer in cluster mode: the same routes, middleware (metrics, API keys,
//! admission and timeouts) and error shape as the embedded router, with handlers that
//! call a [`ClusterNode`] instead of the embedded registry. [`crate::app::run`] picks
//! one router or the other at start-up (`--nats` given or not): the one place the
//! backend is chosen.

mod models;
mod query;
mod samples;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Json, Router};
use serde_json::json;

use super::body::BodyLimit;
use super::error::ApiError;
use super::{auth, guard};
use crate::cluster::{ClusterError, ClusterNode};
use crate::metrics::{self, Metrics};

/// State shared by the cluster-mode handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClusterState {
    /// This process's cluster node.
    pub node: ClusterNode,
    /// HTTP metrics (the cluster's own are appended to `/metrics`).
    pub metrics: Arc<Metrics>,
    /// False until start-up is complete and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// API keys.
    pub auth: Arc<auth::Auth>,
    /// Limits and overload admission.
    pub guard: Arc<guard::Guard>,
}

/// The cluster-mode router: exactly [`super::ROUTES`]. `body_limit` is the largest
/// accepted body in bytes.
pub fn router(state: ClusterState, body_limit: usize) -> Router {
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
        .route("/v1/models/{name}/components", get(query::components))
        .route("/v1/models/{name}/project", post(query::project))
        .route("/v1/models/{name}/limits", get(query::limits))
        .route(
            "/v1/models/{name}/snapshot",
            get(query::export).put(query::import),
        )
        .fallback(
            |uri: axum::http::Uri| async move { ApiError::RouteNotFound(uri.path().to_owned()) },
        )
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send + 'static>| {
                ApiError::Internal("handler panicked".into()).into_response()
            },
        ))
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

/// A failed cluster-mode request: an API error, or a cluster error mapped onto the
/// API's status codes and error codes (503s carry the cluster's `Retry-After`).
#[derive(Debug)]
pub enum Failure {
    /// Parsing, validation, limits: as in embedded mode.
    Api(ApiError),
    /// The cluster refused or could not do it.
    Cluster(ClusterError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        Self::Cluster(e)
    }
}

impl From<crate::format::FormatError> for Failure {
    fn from(e: crate::format::FormatError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let e = match self {
            Self::Api(e) => return e.into_response(),
            Self::Cluster(e) => e,
        };
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        if status.is_server_error() {
            tracing::warn!(error = %e, "cluster request failed");
        }
        let body = json!({ "error": { "code": e.code(), "message": e.to_string() } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = e.retry_after().map_or(1, |d| d.as_secs().max(1));
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when start-up finished, shutdown has not begun, the NATS connection is up
/// and the model bucket answers; otherwise 503 naming what is missing.
async fn readyz(State(state): State<ClusterState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return ApiError::Unavailable.into_response();
    }
    let r = state.node.readiness().await;
    let body = json!({
        "status": if r.ready() { "ready" } else { "degraded" },
        "mode": "cluster",
        "node": state.node.node_id(),
        "nats_connected": r.connected,
        "catalog": r.catalog,
    });
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(body)).into_response();
    if !r.ready() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The HTTP metrics followed by the cluster's (per partition: lag, owner, checkpoint
/// age, fold rate; publish latency).
async fn render_metrics(State(state): State<ClusterState>) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&state.node.metrics().gather());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
