//! `POST /v1/models/{name}/project`: scores, reconstructions and residual norms of new
//! rows against the latest published components, computed off the async runtime.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::body::{flatten, media_type, RawBody};
use super::error::ApiError;
use super::{AppState, ModelName};

/// `POST /v1/models/{name}/project` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectRequest {
    x: Vec<Vec<f64>>,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    whiten: bool,
    #[serde(default)]
    reconstruct: bool,
}

/// `POST /v1/models/{name}/project` response.
#[derive(Debug, Serialize)]
pub struct ProjectResponse {
    scores: Vec<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reconstructions: Option<Vec<Vec<f64>>>,
    residual_norms: Vec<f64>,
    k: usize,
    sequence: u64,
}

fn rows(m: &DMatrix<f64>) -> Vec<Vec<f64>> {
    m.row_iter().map(|r| r.iter().copied().collect()).collect()
}

/// Projects rows onto the first `k` components (default: all reported). The body is
/// parsed off the async runtime, like the projection itself: both grow with the rows.
pub async fn project(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Json<ProjectResponse>, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    match media_type(&headers).as_deref() {
        Some("application/json") => {}
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected application/json, got {}",
                other.unwrap_or("no Content-Type")
            )))
        }
    }
    let RawBody(bytes) = body?;
    let req: ProjectRequest = tokio::task::spawn_blocking(move || serde_json::from_slice(&bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("parse task failed: {e}")))?
        .map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    state.guard.check_rows("query", req.x.len())?;
    let p = model.config().components;
    if let Some(k) = req.k {
        if k == 0 || k > p {
            return Err(ApiError::invalid(
                "k",
                format!("must be between 1 and {p} (the model's components), got {k}"),
            ));
        }
    }
    let published = model.published();
    let Some(fit) = published.components.clone() else {
        return Err(ApiError::NotFitted(name));
    };
    if fit.is_empty() {
        return Err(ApiError::NotFitted(name));
    }
    let k = req.k.unwrap_or(fit.len());
    if k > fit.len() {
        return Err(ApiError::invalid(
            "k",
            format!(
                "only {} components are defined for this data (rank-deficient), got {k}",
                fit.len()
            ),
        ));
    }
    let dim = model.config().dim;
    let sequence = published.sequence;
    tokio::task::spawn_blocking(move || {
        let x = flatten("x", &req.x, dim)?;
        let proj = fit.project(&x, k, req.whiten, req.reconstruct)?;
        Ok(Json(ProjectResponse {
            scores: rows(&proj.scores),
            reconstructions: proj.reconstructions.as_ref().map(rows),
            residual_norms: proj.residual_norms,
            k,
            sequence,
        }))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("projection task failed: {e}")))?
}
