//! `POST /v1/models/{name}/project`: scores, reconstructions and residual norms of new
//! rows against the latest published components, with each row's monitoring statistics
//! (Hotelling's T² and SPE; with `alpha` the control limits and outlier flags; with
//! `contributions` the per-variable contributions). Rows arrive as JSON or `.npy`; the
//! answer is JSON or, when `Accept` asks for `application/x-npz`, an `.npz` archive.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nalgebra::DMatrix;
use serde::Serialize;

use super::body::{media_type, BodyLimit};
use super::body_stream;
use super::error::ApiError;
use super::limits::{published_limits, LimitsResponse};
use super::npz;
use super::{AppState, ModelName};
use crate::format::{ProjectOptions, ProjectParser, RowLimit};
use crate::pca::{BatchData, Limits, Projection, RowStatistics};

/// The binary answer's media type.
const NPZ: &str = "application/x-npz";

/// `POST /v1/models/{name}/project` response.
#[derive(Debug, Serialize)]
pub struct ProjectResponse {
    scores: Vec<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reconstructions: Option<Vec<Vec<f64>>>,
    residual_norms: Vec<f64>,
    t2: Vec<f64>,
    spe: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlier_t2: Option<Vec<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outlier_spe: Option<Vec<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contributions_t2: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contributions_spe: Option<Vec<Vec<f64>>>,
    k: usize,
    sequence: u64,
}

fn rows(m: &DMatrix<f64>) -> Vec<Vec<f64>> {
    m.row_iter().map(|r| r.iter().copied().collect()).collect()
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

/// Projects rows onto the first `k` components (default: all reported). The body is
/// parsed as it arrives (`application/json`, or `application/x-npy` with the options in
/// the query string: `?k=3&whiten=true&reconstruct=true&alpha=0.01&contributions=true`);
/// a standardised model's rows are scaled by the fit's means and standard deviations
/// first. Small projections run inline, larger ones off the async runtime.
pub async fn project(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    req: Request,
) -> Result<Response, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let dim = model.config().dim;
    let limit = RowLimit {
        max: state.guard.limits.max_query_rows,
        setting: "max_query_rows",
    };
    let mut parser = match media_type(req.headers()).as_deref() {
        Some("application/json") => {
            refuse_query_with_json(req.uri().query())?;
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
            )))
        }
    };
    let binary = wants_npz(req.headers());
    let body_limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let read = state.guard.body_read(body_limit);
    let (parts, body) = req.into_parts();
    body_stream::read_into(&parts.headers, body, read, &mut parser).await?;
    let query = parser.finish()?;
    let opts = query.options;
    let p = model.config().components;
    if let Some(k) = opts.k {
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
    let k = opts.k.unwrap_or(fit.len());
    if k > fit.len() {
        return Err(ApiError::invalid(
            "k",
            format!(
                "only {} components are defined for this data (rank-deficient), got {k}",
                fit.len()
            ),
        ));
    }
    let limits = match opts.alpha {
        Some(alpha) => Some(published_limits(published.clone(), k, alpha).await?),
        None => None,
    };
    let sequence = published.sequence;
    let standardizer = published
        .monitor
        .as_ref()
        .and_then(|m| m.standardizer.clone());
    let x = match query.x.into_data() {
        BatchData::F64 { x, .. } => x,
        BatchData::F32 { x, .. } => x.into_iter().map(f64::from).collect(),
    };
    let work = x.len().saturating_mul(k);
    let answer = move || -> Result<Response, ApiError> {
        let x = match &standardizer {
            Some(s) => s.scale_rows(&x)?,
            None => x,
        };
        let (mut proj, stats) =
            fit.project_with_statistics(&x, k, opts.whiten, opts.reconstruct, opts.contributions)?;
        if let (Some(s), Some(r)) = (&standardizer, proj.reconstructions.as_ref()) {
            proj.reconstructions = Some(s.unscale_rows(r));
        }
        if binary {
            npz_answer(&proj, &stats, limits.as_ref(), k, sequence)
        } else {
            Ok(json_answer(proj, stats, limits, k, sequence))
        }
    };
    // A small projection (a row or a few: tens of microseconds) runs inline; the hand-off
    // to the blocking pool would cost more than the work.
    if work <= INLINE_PROJECTION_WORK {
        return answer();
    }
    tokio::task::spawn_blocking(answer)
        .await
        .map_err(|e| ApiError::Internal(format!("projection task failed: {e}")))?
}

/// A JSON body carries its options itself; options in the query string as well would be
/// ambiguous (which wins?) and silently ignoring them would answer a different question
/// than the one asked, so any query key is refused, named.
pub(crate) fn refuse_query_with_json(query: Option<&str>) -> Result<(), ApiError> {
    let Some(first) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let key: String = first
        .split_once('=')
        .map_or(first, |(k, _)| k)
        .chars()
        .take(40)
        .collect();
    Err(ApiError::invalid(
        &key,
        "query-string options are for application/x-npy bodies; a JSON body carries k, \
         whiten, reconstruct, alpha and contributions itself",
    ))
}

/// Largest projection, in multiply-adds (values × k), run on the request's task.
const INLINE_PROJECTION_WORK: usize = 64 * 1024;

fn json_answer(
    proj: Projection,
    stats: RowStatistics,
    limits: Option<Limits>,
    k: usize,
    sequence: u64,
) -> Response {
    let flags = limits.as_ref().map(|l| stats.flags(l));
    let (outlier_t2, outlier_spe) = match flags {
        Some((t, s)) => (Some(t), Some(s)),
        None => (None, None),
    };
    let body = ProjectResponse {
        scores: rows(&proj.scores),
        reconstructions: proj.reconstructions.as_ref().map(rows),
        residual_norms: proj.residual_norms,
        t2: stats.t2,
        spe: stats.spe,
        limits: limits.as_ref().map(LimitsResponse::from),
        outlier_t2,
        outlier_spe,
        contributions_t2: stats.contributions.as_ref().map(|c| rows(&c.t2)),
        contributions_spe: stats.contributions.as_ref().map(|c| rows(&c.spe)),
        k,
        sequence,
    };
    ([(header::VARY, "accept")], Json(body)).into_response()
}

/// A row-major matrix (rows, columns, the transpose's storage) as an `.npz` member.
fn matrix(m: &(usize, usize, DMatrix<f64>)) -> npz::Array<'_> {
    npz::Array::F64Matrix {
        rows: m.0,
        cols: m.1,
        values: m.2.as_slice(),
    }
}

/// The projection as an uncompressed `.npz`: `scores` (rows×k), `residual_norms`, `t2`,
/// `spe`, and when asked `reconstructions` (rows×n), `outlier_t2`, `outlier_spe`
/// (booleans), `contributions_t2`, `contributions_spe` (rows×n), the limits as 0-d
/// float64 arrays `limit_t2`, `limit_spe`, and 0-d int64 `k` and `sequence`.
fn npz_answer(
    proj: &Projection,
    stats: &RowStatistics,
    limits: Option<&Limits>,
    k: usize,
    sequence: u64,
) -> Result<Response, ApiError> {
    // nalgebra is column-major: the transpose's storage is the row-major order .npy wants.
    let row_major = |m: &DMatrix<f64>| (m.nrows(), m.ncols(), m.transpose());
    let scores = row_major(&proj.scores);
    let recon = proj.reconstructions.as_ref().map(row_major);
    let contrib = stats
        .contributions
        .as_ref()
        .map(|c| (row_major(&c.t2), row_major(&c.spe)));
    let flags = limits.map(|l| stats.flags(l));
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut arrays = vec![
        ("scores", matrix(&scores)),
        (
            "residual_norms",
            npz::Array::F64Vector(&proj.residual_norms),
        ),
        ("t2", npz::Array::F64Vector(&stats.t2)),
        ("spe", npz::Array::F64Vector(&stats.spe)),
    ];
    if let Some(r) = &recon {
        arrays.push(("reconstructions", matrix(r)));
    }
    if let Some((t, s)) = &flags {
        arrays.push(("outlier_t2", npz::Array::BoolVector(t)));
        arrays.push(("outlier_spe", npz::Array::BoolVector(s)));
    }
    if let Some(l) = limits {
        arrays.push(("limit_t2", npz::Array::F64Scalar(l.t2)));
        arrays.push(("limit_spe", npz::Array::F64Scalar(l.spe)));
    }
    if let Some((t, s)) = &contrib {
        arrays.push(("contributions_t2", matrix(t)));
        arrays.push(("contributions_spe", matrix(s)));
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
