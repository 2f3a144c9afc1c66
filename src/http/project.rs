//! `POST /v1/models/{name}/project`: scores, reconstructions and residual norms of new
//! rows against the latest published components, computed off the async runtime. Rows
//! arrive as JSON or `.npy`; the answer is JSON or, on request, an `.npz` archive.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::body::{check_finite, flatten, media_type, RawBody};
use super::error::ApiError;
use super::{npy, npz, AppState, ModelName};
use crate::pca::Projection;

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

/// Query string: the options of an `application/x-npy` body (a JSON body carries them
/// itself).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectQuery {
    k: Option<usize>,
    whiten: Option<bool>,
    reconstruct: Option<bool>,
}

/// Where the rows come from, before they are checked against the model.
enum Rows {
    /// A JSON body's rows.
    Json(Vec<Vec<f64>>),
    /// An `application/x-npy` body (its header already read once).
    Npy(bytes::Bytes),
}

/// True when the `Accept` header lists `application/x-npz` with a non-zero quality.
fn wants_npz(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let ty = parts.next().unwrap_or("");
            let zero_q = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            ty.eq_ignore_ascii_case(NPZ) && !zero_q
        })
}

/// The binary answer's media type.
const NPZ: &str = "application/x-npz";

/// Projects rows onto the first `k` components (default: all reported). Bodies are JSON
/// (`{"x", "k", "whiten", "reconstruct"}`) or `application/x-npy` (rows×dim, options in
/// the query string); the answer is JSON, or an `.npz` archive when `Accept` asks for
/// `application/x-npz`. Parsing and projecting run off the async runtime: both grow
/// with the rows.
pub async fn project(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    headers: HeaderMap,
    query: Result<Query<ProjectQuery>, QueryRejection>,
    body: Result<RawBody, ApiError>,
) -> Result<Response, ApiError> {
    let model = state.registry.get(&name)?;
    let npy_body = match media_type(&headers).as_deref() {
        Some("application/json") => false,
        Some("application/x-npy") => true,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected application/json or application/x-npy, got {}",
                other.unwrap_or("no Content-Type")
            )))
        }
    };
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let binary = wants_npz(&headers);
    let RawBody(bytes) = body?;
    let (input, n_rows, k, whiten, reconstruct) = if npy_body {
        let n = npy::view(&bytes)?.rows;
        (
            Rows::Npy(bytes),
            n,
            q.k,
            q.whiten.unwrap_or(false),
            q.reconstruct.unwrap_or(false),
        )
    } else {
        if let Some(given) = [
            q.k.map(|_| "k"),
            q.whiten.map(|_| "whiten"),
            q.reconstruct.map(|_| "reconstruct"),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(ApiError::invalid(
                given,
                "query-string options are for application/x-npy bodies; a JSON body \
                 carries k, whiten and reconstruct itself",
            ));
        }
        let req: ProjectRequest =
            tokio::task::spawn_blocking(move || serde_json::from_slice(&bytes))
                .await
                .map_err(|e| ApiError::Internal(format!("parse task failed: {e}")))?
                .map_err(|e| ApiError::MalformedBody(e.to_string()))?;
        let n = req.x.len();
        (Rows::Json(req.x), n, req.k, req.whiten, req.reconstruct)
    };
    state.guard.check_rows("query", n_rows)?;
    let p = model.config().components;
    if let Some(k) = k {
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
    let k = k.unwrap_or(fit.len());
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
        let x = match input {
            Rows::Json(r) => flatten("x", &r, dim)?,
            Rows::Npy(bytes) => {
                let v = npy::view(&bytes)?;
                npy::check_width(&v, dim, None)?;
                let x = v.values_f64();
                check_finite("x", &x, dim)?;
                x
            }
        };
        let proj = fit.project(&x, k, whiten, reconstruct)?;
        if binary {
            return npz_answer(&proj, k, sequence);
        }
        let json = Json(ProjectResponse {
            scores: rows(&proj.scores),
            reconstructions: proj.reconstructions.as_ref().map(rows),
            residual_norms: proj.residual_norms,
            k,
            sequence,
        });
        Ok(([(header::VARY, "accept")], json).into_response())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("projection task failed: {e}")))?
}

/// The projection as an `.npz` archive: `scores` (rows×k), `residual_norms` (rows),
/// `reconstructions` (rows×m, when asked for), and 0-d int64 `k` and `sequence`.
fn npz_answer(proj: &Projection, k: usize, sequence: u64) -> Result<Response, ApiError> {
    // nalgebra is column-major: the transpose's storage is the row-major order .npy wants.
    let scores = proj.scores.transpose();
    let recon = proj.reconstructions.as_ref().map(DMatrix::transpose);
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut arrays = vec![
        (
            "scores",
            npz::Array::F64Matrix {
                rows: proj.scores.nrows(),
                cols: proj.scores.ncols(),
                values: scores.as_slice(),
            },
        ),
        (
            "residual_norms",
            npz::Array::F64Vector(&proj.residual_norms),
        ),
    ];
    if let (Some(r), Some(t)) = (&proj.reconstructions, &recon) {
        arrays.push((
            "reconstructions",
            npz::Array::F64Matrix {
                rows: r.nrows(),
                cols: r.ncols(),
                values: t.as_slice(),
            },
        ));
    }
    arrays.push(("k", npz::Array::I64Scalar(int(k as u64))));
    arrays.push(("sequence", npz::Array::I64Scalar(int(sequence))));
    let body = npz::write(&arrays)?;
    Ok((
        [(header::CONTENT_TYPE, NPZ), (header::VARY, "accept")],
        body,
    )
        .into_response())
}
