//! Cluster mode's `/v1/models` and `/v1/models/{name}`: create, list, status, delete
//! against the cluster's catalog.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::{ClusterState, Failure};
use crate::cluster::{ModelRecord, ModelStatus as NodeStatus};
use crate::http::body::ApiJson;
use crate::http::error::ApiError;
use crate::http::models::CreateModel;
use crate::http::ModelName;
use crate::model::ModelConfig;

/// One partition in a cluster-mode status.
#[derive(Debug, Serialize)]
pub struct PartitionView {
    partition: u32,
    /// Node holding the partition's fold lease.
    owner: Option<String>,
    /// Stream sequence covered by its newest checkpoint.
    covered: u64,
    /// Batches in its newest checkpoint.
    batches: u64,
}

/// A model's status in cluster mode: the embedded status's fields (counts from the
/// newest published view) plus the cluster's generation, trainer and partitions.
#[derive(Debug, Serialize)]
pub struct ClusterModelStatus {
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
    /// Samples in the newest published view (every node serves the same view).
    samples: f64,
    batches: u64,
    converged: bool,
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    trainer: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partition_states: Vec<PartitionView>,
}

impl ClusterModelStatus {
    pub(super) fn of(record: &ModelRecord, status: Option<&NodeStatus>) -> Self {
        let c = &record.config;
        let view = status.and_then(|s| s.view.as_ref());
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
            samples: view.map_or(0.0, |v| v.pointer.samples),
            batches: view.map_or(0, |v| v.pointer.batches),
            converged: view.is_some_and(|v| v.pointer.converged),
            generation: record.generation,
            trainer: status.and_then(|s| s.trainer.clone()),
            partition_states: status
                .map(|s| {
                    s.partitions
                        .iter()
                        .map(|p| PartitionView {
                            partition: p.partition,
                            owner: p.owner.clone(),
                            covered: p.checkpoint.as_ref().map_or(0, |c| c.covered),
                            batches: p.checkpoint.as_ref().map_or(0, |c| c.batches),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// `GET /v1/models` response.
#[derive(Debug, Serialize)]
pub struct ModelList {
    models: Vec<ClusterModelStatus>,
}

/// `POST /v1/models`: 201 with the new model's status, 200 if an identical one exists.
/// `partitions` defaults to the cluster's `--cluster-partitions`.
pub async fn create(
    State(state): State<ClusterState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<ClusterModelStatus>), Failure> {
    let given = body.get("partitions").is_some_and(|p| !p.is_null());
    let request: CreateModel =
        serde_json::from_value(body).map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    let mut config = ModelConfig::try_from(request)?;
    if !given {
        config.partitions = state.node.settings().partitions as usize;
    }
    let (record, created) = state.node.create_model(config).await?;
    if created {
        tracing::info!(model = %record.config.name, generation = record.generation, "model created");
    }
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(ClusterModelStatus::of(&record, None))))
}

/// `GET /v1/models`.
pub async fn list(State(state): State<ClusterState>) -> Json<ModelList> {
    let mut models = Vec::new();
    for record in state.node.models() {
        let status = state.node.status(record.config.name.as_str()).await.ok();
        models.push(ClusterModelStatus::of(&record, status.as_ref()));
    }
    Json(ModelList { models })
}

/// `GET /v1/models/{name}`. The embedded mode's wait for a covering fit
/// (`?fitted_sequence=S&wait=T`) is refused here, 400 naming `fitted_sequence`: a cluster
/// status has no `fitted_sequence` to compare (its views carry per-partition checkpoint
/// sequences, not the model-wide one).
pub async fn status(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
    RawQuery(query): RawQuery,
) -> Result<Json<ClusterModelStatus>, Failure> {
    if crate::http::wait::WaitQuery::parse(query.as_deref())?.is_some() {
        return Err(ApiError::invalid(
            "fitted_sequence",
            "waiting for a covering fit is not supported in cluster mode; poll the status",
        )
        .into());
    }
    let s = state.node.status(&name).await?;
    Ok(Json(ClusterModelStatus::of(&s.record, Some(&s))))
}

/// `DELETE /v1/models/{name}`: 204; every node stops serving it within a second.
pub async fn delete(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
) -> Result<StatusCode, Failure> {
    state.node.delete_model(&name).await?;
    state.guard.forget(&name);
    tracing::info!(model = %name, "model deleted");
    Ok(StatusCode::NO_CONTENT)
}
