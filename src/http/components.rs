//! `GET /v1/models/{name}/components?k=`: the latest published fit.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{AppState, ModelName};

/// Query string.
#[derive(Debug, Deserialize)]
pub struct ComponentsQuery {
    /// Return only the first k components (1 ≤ k ≤ components).
    k: Option<usize>,
}

/// `GET /v1/models/{name}/components` response. Before the first fit the lists are
/// empty, `loss` is null and `converged` false.
#[derive(Debug, Serialize)]
pub struct ComponentsResponse {
    components: Vec<Vec<f64>>,
    eigenvalues: Vec<f64>,
    explained_variance_ratio: Vec<f64>,
    error_bounds: Vec<f64>,
    relative_gaps: Vec<f64>,
    mean: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_y: Option<Vec<f64>>,
    samples: f64,
    sequence: u64,
    steps: usize,
    converged: bool,
    loss: Option<f64>,
}

/// Serves the latest published components, truncated to `k`.
pub async fn get(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    query: Result<Query<ComponentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ComponentsResponse>, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let Query(q) = query.map_err(|e| ApiError::invalid("k", e.body_text()))?;
    let p = model.config().components;
    if let Some(k) = q.k {
        if k == 0 || k > p {
            return Err(ApiError::invalid(
                "k",
                format!("must be between 1 and {p} (the model's components), got {k}"),
            ));
        }
    }
    let published = model.published();
    let Some(fit) = published.components.as_deref() else {
        let counters = model.counters();
        return Ok(Json(ComponentsResponse {
            components: vec![],
            eigenvalues: vec![],
            explained_variance_ratio: vec![],
            error_bounds: vec![],
            relative_gaps: vec![],
            mean: vec![],
            mean_y: None,
            samples: counters.samples,
            sequence: counters.sequence,
            steps: 0,
            converged: false,
            loss: None,
        }));
    };
    let k = q.k.unwrap_or(p).min(fit.len());
    Ok(Json(ComponentsResponse {
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
        sequence: published.sequence,
        steps: fit.steps,
        converged: fit.converged,
        loss: Some(fit.loss).filter(|l| l.is_finite()),
    }))
}
