//! `GET/PUT /v1/models/{name}/snapshot`: export a model as a portable snapshot (the
//! `SPCASNAP` format of [`crate::persistence::snapshot`]) and import one.
//!
//! Import checks the whole upload before anything is allocated in proportion to what it
//! claims or anything is replaced (see [`crate::model::Registry::import`]). The model is
//! named by the URL: an export of `a` imported as `b` makes a copy. An existing model of
//! that name is replaced atomically: until the new one is durable, the old one stays
//! whole, on disk and in memory.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body::RawBody;
use super::error::ApiError;
use super::models::ModelStatus;
use super::{AppState, ModelName};
use crate::persistence::snapshot;

/// Exports a model's state (every partition and the trainer's warm start).
pub async fn export(
    State(state): State<AppState>,
    ModelName(name): ModelName,
) -> Result<Response, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let bytes = tokio::task::spawn_blocking(move || {
        snapshot::encode(&model.snapshot())
            .map_err(|e| ApiError::Internal(format!("encoding snapshot: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("export task failed: {e}")))??;
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

/// Imports a snapshot as the model the URL names: 201 for a new model, 200 when it
/// replaced one.
pub async fn import(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    body: Result<RawBody, ApiError>,
) -> Result<(StatusCode, Json<ModelStatus>), ApiError> {
    let name =
        crate::model::ModelName::new(name).map_err(|e| ApiError::invalid(e.field, e.reason))?;
    let RawBody(bytes) = body?;
    let registry = state.registry.clone();
    let (replaced, model) = tokio::task::spawn_blocking(move || registry.import(&name, &bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))?
        .map_err(ApiError::from)?;
    tracing::info!(model = %model.config().name, sequence = model.counters().sequence, replaced, "snapshot imported");
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ModelStatus::of(&model))))
}
