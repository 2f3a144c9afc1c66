//! `/v1/models` and `/v1/models/{name}`: create, list, status, delete.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::ApiJson;
use super::error::ApiError;
use super::{AppState, ModelName};
use crate::model::config::{default_partitions, DEFAULT_ALPHA, DEFAULT_TOLERANCE};
use crate::model::{Created, Model, ModelConfig, ModelName as Name};
use crate::pca::OptimizerKind;

/// `POST /v1/models` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    name: String,
    dim: usize,
    components: usize,
    #[serde(default)]
    target_dim: Option<usize>,
    #[serde(default)]
    half_life: Option<f64>,
    #[serde(default)]
    optimizer: Option<String>,
    #[serde(default)]
    tolerance: Option<f64>,
    #[serde(default)]
    partitions: Option<usize>,
    #[serde(default)]
    standardize: bool,
    #[serde(default)]
    alpha: Option<f64>,
}

impl TryFrom<CreateModel> for ModelConfig {
    type Error = ApiError;

    fn try_from(c: CreateModel) -> Result<Self, ApiError> {
        let optimizer = match c.optimizer.as_deref() {
            None => OptimizerKind::default(),
            Some(s) => OptimizerKind::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "optimizer",
                    format!("must be \"subspace\" or \"gradient\", got {s:?}"),
                )
            })?,
        };
        Ok(Self {
            name: Name::new(c.name).map_err(|e| ApiError::invalid(e.field, e.reason))?,
            dim: c.dim,
            components: c.components,
            target_dim: c.target_dim,
            half_life: c.half_life,
            optimizer,
            tolerance: c.tolerance.unwrap_or(DEFAULT_TOLERANCE),
            partitions: c.partitions.unwrap_or_else(default_partitions),
            standardize: c.standardize,
            alpha: c.alpha.unwrap_or(DEFAULT_ALPHA),
        })
    }
}

/// The configured `max_dim` and `max_components` (the registry checks its own, larger,
/// hard caps and the rest of the configuration).
#[derive(Debug, Serialize)]
pub struct ModelStatus {
    name: String,
    dim: usize,
    components: usize,
    target_dim: Option<usize>,
    half_life: Option<f64>,
    optimizer: &'static str,
    tolerance: f64,
    partitions: usize,
    standardize: bool,
    alpha: f64,
    samples: f64,
    batches: u64,
    sequence: u64,
    fitted_sequence: u64,
    steps: u64,
    loss: Option<f64>,
    converged: bool,
    max_error_bound: Option<f64>,
}

impl ModelStatus {
    /// The status of `m` from its counters and published fit (no waiting).
    pub fn of(m: &Model) -> Self {
        let c = m.config();
        let counters = m.counters();
        let published = m.published();
        let fit = published.components.as_deref();
        Self {
            name: c.name.to_string(),
            dim: c.dim,
            components: c.components,
            target_dim: c.target_dim,
            half_life: c.half_life,
            optimizer: c.optimizer.as_str(),
            tolerance: c.tolerance,
            partitions: c.partitions,
            standardize: c.standardize,
            alpha: c.alpha,
            samples: counters.samples,
            batches: counters.batches,
            sequence: counters.sequence,
            fitted_sequence: published.sequence,
            steps: published.total_steps,
            loss: fit.map(|f| f.loss).filter(|l| l.is_finite()),
            converged: fit.is_some_and(|f| f.converged),
            max_error_bound: fit.map(|f| f.max_error_bound()),
        }
    }
}

/// `GET /v1/models` response.
#[derive(Debug, Serialize)]
pub struct ModelList {
    models: Vec<ModelStatus>,
}

/// `POST /v1/models`: 201 with the status of a new model, 200 if an identical one exists.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateModel>,
) -> Result<(StatusCode, Json<ModelStatus>), ApiError> {
    let config = ModelConfig::try_from(body)?;
    let registry = state.registry.clone();
    // Creating the model's directory fsyncs: off the async runtime.
    let created = tokio::task::spawn_blocking(move || registry.create(config))
        .await
        .map_err(|e| ApiError::Internal(format!("create task failed: {e}")))?
        .map_err(ApiError::from)?;
    match created {
        Created::New(m) => {
            tracing::info!(model = %m.config().name, "model created");
            Ok((StatusCode::CREATED, Json(ModelStatus::of(&m))))
        }
        Created::Existing(m) => Ok((StatusCode::OK, Json(ModelStatus::of(&m)))),
    }
}

/// `GET /v1/models`.
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        models: state
            .registry
            .list()
            .iter()
            .map(|m| ModelStatus::of(m))
            .collect(),
    })
}

/// `GET /v1/models/{name}`, and with `?fitted_sequence=S&wait=T` once the published fit
/// covers batch `S` or after `T` seconds (see [`super::wait`]).
pub async fn status(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    RawQuery(query): RawQuery,
) -> Result<Json<ModelStatus>, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let Some(q) = super::wait::WaitQuery::parse(query.as_deref())? else {
        return Ok(Json(ModelStatus::of(&model)));
    };
    let wait = super::wait::capped(q.wait, state.guard.timeout());
    let max = super::wait::max_waiters(state.guard.limits.max_in_flight);
    super::wait::until_fitted(&model, q, wait, max, &state.ready).await?;
    // The model may have been deleted (or replaced) meanwhile: answer for the current one.
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    Ok(Json(ModelStatus::of(&model)))
}

/// `DELETE /v1/models/{name}`: 204.
pub async fn delete(
    State(state): State<AppState>,
    ModelName(name): ModelName,
) -> Result<StatusCode, ApiError> {
    let registry = state.registry.clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || registry.delete(&n))
        .await
        .map_err(|e| ApiError::Internal(format!("delete task failed: {e}")))?
        .map_err(ApiError::from)?;
    state.guard.forget(&name);
    tracing::info!(model = %name, "model deleted");
    Ok(StatusCode::NO_CONTENT)
}
