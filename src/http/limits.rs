//! `GET /v1/models/{name}/limits?k=&alpha=`: the control limits of Hotelling's T² and of
//! the SPE for the latest published fit, and the helper the projection and ingest
//! scoring use to compute them.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{AppState, ModelName};
use crate::model::Published;
use crate::pca::{limits, Limits, PcaError};

/// Query of `GET /limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsQuery {
    k: Option<usize>,
    alpha: Option<f64>,
}

/// The control limits, as the API answers them.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsResponse {
    k: usize,
    alpha: f64,
    samples: f64,
    t2: f64,
    spe: f64,
    spe_box: f64,
    spe_method: &'static str,
    theta: [f64; 3],
    h0: f64,
}

impl From<&Limits> for LimitsResponse {
    fn from(l: &Limits) -> Self {
        Self {
            k: l.k,
            alpha: l.alpha,
            samples: l.samples,
            t2: l.t2,
            spe: l.spe,
            spe_box: l.spe_box,
            spe_method: l.spe_method.as_str(),
            theta: l.theta,
            h0: l.h0,
        }
    }
}

/// The limits of `published` at `k` components and false-alarm rate `alpha`. Reading
/// the fit's moments marks the model monitored; if they were deferred (see
/// [`crate::model::monitor`]) they are computed here, once: blocking, O(n³) — from an
/// async handler call [`published_limits`] instead.
///
/// # Errors
/// [`ApiError::NotFitted`] before a fit with control-limit moments;
/// [`ApiError::InvalidParameter`] naming `k` or `alpha` when they are out of range (or
/// the variance left beyond `k` is only round-off).
pub fn fit_limits(published: &Published, k: usize, alpha: f64) -> Result<Limits, ApiError> {
    let Some(fit) = published.components.as_ref() else {
        return Err(not_fitted());
    };
    let Some(moments) = published.monitor.as_ref().and_then(|m| m.moments(fit)) else {
        return Err(not_fitted());
    };
    limits(&fit.eigenvalues, k, alpha, fit.samples, moments).map_err(|e| match e {
        PcaError::InvalidParam { name, reason } => ApiError::invalid(name, reason),
        other => ApiError::Internal(other.to_string()),
    })
}

fn not_fitted() -> ApiError {
    ApiError::NotFitted("the model (no fit with control limits yet)".into())
}

/// [`fit_limits`] for async handlers: when the fit's moments are still to be computed
/// (the model's first request that needs limits), on the blocking pool.
///
/// # Errors
/// As [`fit_limits`].
pub async fn published_limits(
    published: Arc<Published>,
    k: usize,
    alpha: f64,
) -> Result<Limits, ApiError> {
    if published.monitor.as_ref().is_none_or(|m| m.is_computed()) {
        return fit_limits(&published, k, alpha);
    }
    tokio::task::spawn_blocking(move || fit_limits(&published, k, alpha))
        .await
        .map_err(|e| ApiError::Internal(format!("control-limit task failed: {e}")))?
}

/// The limits at `k` (default: every reported component) and `alpha` (default: the
/// model's).
pub async fn get(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    query: Result<Query<LimitsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LimitsResponse>, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let published = model.published();
    let reported = published.components.as_ref().map_or(0, |c| c.len());
    let k = q.k.unwrap_or(reported);
    let alpha = q.alpha.unwrap_or(model.config().alpha);
    let limits = published_limits(published, k, alpha)
        .await
        .map_err(|e| match e {
            ApiError::NotFitted(_) => ApiError::NotFitted(name.clone()),
            other => other,
        })?;
    Ok(Json(LimitsResponse::from(&limits)))
}
