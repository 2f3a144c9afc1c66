//! `POST /v1/models/{name}/project`: scores, reconstructions and residual norms of new
//! rows against the latest published components, computed off the async runtime.

use axum::extract::{Request, State};
use axum::Json;
use nalgebra::DMatrix;
use serde::Serialize;

use super::body::{media_type, BodyLimit};
use super::body_stream;
use super::error::ApiError;
use super::{AppState, ModelName};
use crate::format::{ProjectOptions, ProjectParser, RowLimit};
use crate::pca::BatchData;

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
/// parsed as it arrives (`application/json`, or `application/x-npy` with the options in
/// the query string: `?k=3&whiten=true&reconstruct=true`); the projection runs off the
/// async runtime.
pub async fn project(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    req: Request,
) -> Result<Json<ProjectResponse>, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let dim = model.config().dim;
    let limit = RowLimit {
        max: state.guard.limits.max_query_rows,
        setting: "max_query_rows",
    };
    let mut parser = match media_type(req.headers()).as_deref() {
        Some("application/json") => ProjectParser::json(dim, limit),
        Some("application/x-npy") => {
            let options = ProjectOptions::from_query(req.uri().query().unwrap_or(""))?;
            ProjectParser::npy(dim, limit, options)
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected application/json or application/x-npy, got {}",
                other.unwrap_or("no Content-Type")
            )))
        }
    };
    let body_limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let read = state.guard.body_read(body_limit);
    let (parts, body) = req.into_parts();
    body_stream::read_into(&parts.headers, body, read, &mut parser).await?;
    let query = parser.finish()?;
    let req = query.options;
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
    let sequence = published.sequence;
    let x = match query.x.into_data() {
        BatchData::F64 { x, .. } => x,
        BatchData::F32 { x, .. } => x.into_iter().map(f64::from).collect(),
    };
    let x_len = x.len();
    let answer = move || -> Result<Json<ProjectResponse>, ApiError> {
        let proj = fit.project(&x, k, req.whiten, req.reconstruct)?;
        Ok(Json(ProjectResponse {
            scores: rows(&proj.scores),
            reconstructions: proj.reconstructions.as_ref().map(rows),
            residual_norms: proj.residual_norms,
            k,
            sequence,
        }))
    };
    // A small projection (a row or a few: tens of microseconds) runs inline; the hand-off
    // to the blocking pool would cost more than the work.
    if x_len.saturating_mul(k) <= INLINE_PROJECTION_WORK {
        return answer();
    }
    tokio::task::spawn_blocking(answer)
        .await
        .map_err(|e| ApiError::Internal(format!("projection task failed: {e}")))?
}

/// Largest projection, in multiply-adds (values × k), run on the request's task.
const INLINE_PROJECTION_WORK: usize = 64 * 1024;
