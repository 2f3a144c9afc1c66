//! Cluster mode's queries: components, project, limits, snapshot export and import.
//! Every node answers from the view the model's trainer published (the exact merge of
//! the partitions' newest checkpoints), so answers agree across nodes.

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::models::ClusterModelStatus;
use super::{ClusterState, Failure};
use crate::cluster::ClusterError;
use crate::format::{ProjectOptions, ProjectParser, RowLimit};
use crate::http::body::{media_type, BodyLimit, RawBody};
use crate::http::body_stream;
use crate::http::error::ApiError;
use crate::http::ModelName;
use crate::pca::BatchData;

/// `?k=` of the components route.
#[derive(Debug, Deserialize)]
pub struct ComponentsQuery {
    k: Option<usize>,
}

/// `GET /v1/models/{name}/components` response in cluster mode (the embedded answer's
/// fields; `batches` counts the batches the served view merged).
#[derive(Debug, Serialize)]
pub struct ClusterComponents {
    components: Vec<Vec<f64>>,
    eigenvalues: Vec<f64>,
    explained_variance_ratio: Vec<f64>,
    error_bounds: Vec<f64>,
    relative_gaps: Vec<f64>,
    mean: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_y: Option<Vec<f64>>,
    samples: f64,
    batches: u64,
    steps: usize,
    converged: bool,
    loss: Option<f64>,
}

fn check_k(k: Option<usize>, p: usize) -> Result<(), ApiError> {
    match k {
        Some(k) if k == 0 || k > p => Err(ApiError::invalid(
            "k",
            format!("must be between 1 and {p} (the model's components), got {k}"),
        )),
        _ => Ok(()),
    }
}

/// Serves the newest published components, truncated to `k`; 409 `not_fitted` before
/// the first fit.
pub async fn components(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
    query: Result<Query<ComponentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ClusterComponents>, Failure> {
    let record = state.node.record(&name).await?;
    let Query(q) = query.map_err(|e| ApiError::invalid("k", e.body_text()))?;
    check_k(q.k, record.config.components)?;
    let (fit, pointer) = state.node.components(&name).await?;
    let k = q.k.unwrap_or(fit.len()).min(fit.len());
    Ok(Json(ClusterComponents {
        components: (0..k)
            .map(|i| fit.vectors.column(i).iter().copied().collect())
            .collect(),
        eigenvalues: fit.eigenvalues[..k].to_vec(),
        explained_variance_ratio: fit.explained_variance_ratio[..k].to_vec(),
        error_bounds: fit.error_bounds[..k].to_vec(),
        relative_gaps: fit.relative_gaps[..k].to_vec(),
        mean: fit.mean.iter().copied().collect(),
        mean_y: fit.mean_y.as_ref().map(|m| m.iter().copied().collect()),
        samples: fit.samples,
        batches: pointer.batches,
        steps: fit.steps,
        converged: fit.converged,
        loss: Some(fit.loss).filter(|l| l.is_finite()),
    }))
}

/// `POST /v1/models/{name}/project` response in cluster mode.
#[derive(Debug, Serialize)]
pub struct ClusterProjection {
    scores: Vec<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reconstructions: Option<Vec<Vec<f64>>>,
    residual_norms: Vec<f64>,
    t2: Vec<f64>,
    spe: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contributions_t2: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contributions_spe: Option<Vec<Vec<f64>>>,
    k: usize,
    batches: u64,
}

fn rows(m: &DMatrix<f64>) -> Vec<Vec<f64>> {
    m.row_iter().map(|r| r.iter().copied().collect()).collect()
}

/// Projects rows (JSON, or `.npy` with the options in the query string) onto the
/// first `k` served components, with T² and SPE per row. Control limits (`alpha`) are
/// refused in cluster mode (400): the cluster's trainer does not publish the moments
/// they need yet.
pub async fn project(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
    req: Request,
) -> Result<Response, Failure> {
    let record = state.node.record(&name).await?;
    let dim = record.config.dim;
    let limit = RowLimit {
        max: state.guard.limits.max_query_rows,
        setting: "max_query_rows",
    };
    let mut parser = match media_type(req.headers()).as_deref() {
        Some("application/json") => {
            crate::http::project::refuse_query_with_json(req.uri().query())?;
            ProjectParser::json(dim, limit)
        }
        Some("application/x-npy") => {
            let options = ProjectOptions::from_query(req.uri().query().unwrap_or(""))?;
            ProjectParser::npy(dim, limit, options)
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected application/json or application/x-npy, got {}",
                other.unwrap_or("no Content-Type")
            ))
            .into())
        }
    };
    let body_limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let read = state.guard.body_read(body_limit);
    let (parts, body) = req.into_parts();
    body_stream::read_into(&parts.headers, body, read, &mut parser).await?;
    let query = parser.finish()?;
    let opts = query.options;
    if opts.alpha.is_some() {
        return Err(ApiError::invalid(
            "alpha",
            "control limits are not available in cluster mode yet; omit alpha",
        )
        .into());
    }
    check_k(opts.k, record.config.components)?;
    let (fit, pointer) = state.node.components(&name).await?;
    if fit.is_empty() {
        return Err(ClusterError::NotFitted(name).into());
    }
    let k = opts.k.unwrap_or(fit.len());
    if k > fit.len() {
        return Err(ApiError::invalid(
            "k",
            format!(
                "only {} components are defined for this data (rank-deficient), got {k}",
                fit.len()
            ),
        )
        .into());
    }
    let x = match query.x.into_data() {
        BatchData::F64 { x, .. } => x,
        BatchData::F32 { x, .. } => x.into_iter().map(f64::from).collect(),
    };
    let answer = tokio::task::spawn_blocking(move || -> Result<Response, ApiError> {
        let (proj, stats) =
            fit.project_with_statistics(&x, k, opts.whiten, opts.reconstruct, opts.contributions)?;
        let body = ClusterProjection {
            scores: rows(&proj.scores),
            reconstructions: proj.reconstructions.as_ref().map(rows),
            residual_norms: proj.residual_norms,
            t2: stats.t2,
            spe: stats.spe,
            contributions_t2: stats.contributions.as_ref().map(|c| rows(&c.t2)),
            contributions_spe: stats.contributions.as_ref().map(|c| rows(&c.spe)),
            k,
            batches: pointer.batches,
        };
        Ok(Json(body).into_response())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("projection task failed: {e}")))??;
    Ok(answer)
}

/// `GET /v1/models/{name}/limits`: refused in cluster mode (400) until the cluster's
/// trainer publishes the control-limit moments; 404 for an unknown model.
pub async fn limits(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
) -> Result<Response, Failure> {
    state.node.record(&name).await?;
    Err(ApiError::invalid(
        "limits",
        "control limits are not available in cluster mode yet",
    )
    .into())
}

/// Exports the model as a snapshot (format v2: each partition's newest checkpoint).
pub async fn export(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
) -> Result<Response, Failure> {
    let bytes = state.node.export(&name).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.spcasnap\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Imports a snapshot (v1 or v2) as the model the URL names: 201 new, 200 replaced.
pub async fn import(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
    body: Result<RawBody, ApiError>,
) -> Result<(StatusCode, Json<ClusterModelStatus>), Failure> {
    let name =
        crate::model::ModelName::new(name).map_err(|e| ApiError::invalid(e.field, e.reason))?;
    let RawBody(bytes) = body?;
    let (record, replaced) = state.node.import(&name, bytes.to_vec()).await?;
    tracing::info!(model = %name, generation = record.generation, replaced, "snapshot imported");
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ClusterModelStatus::of(&record, None))))
}
