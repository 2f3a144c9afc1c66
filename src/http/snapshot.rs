//! `GET/PUT /v1/models/{name}/snapshot`: export a model as a portable snapshot (the
//! `SPCASNAP` format of [`crate::persistence::snapshot`]) and import one.
//!
//! Import decodes and validates the whole upload (checksum, version, shapes,
//! finiteness, config ranges) before anything is replaced. The model is named by the
//! URL: the snapshot's own name is replaced by it, so an export of `a` imported as `b`
//! makes a copy. An existing model of that name is replaced, durably (see
//! [`crate::registry::Registry::import`]).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body::RawBody;
use super::error::ApiError;
use super::models::ModelStatus;
use super::{AppState, ModelName};
use crate::persistence::snapshot;
use crate::registry::{valid_name, ModelSnapshot};

/// `GET /v1/models/{name}/snapshot`: the model's state as `application/octet-stream`.
pub async fn export(
    State(state): State<AppState>,
    ModelName(name): ModelName,
) -> Result<Response, ApiError> {
    let model = state.registry.get(&name)?;
    let bytes = tokio::task::spawn_blocking(move || {
        snapshot::encode(&model.snapshot().to_stored())
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

/// `PUT /v1/models/{name}/snapshot`: 201 with the status of the restored model when no
/// model of that name existed, 200 when one was replaced.
pub async fn import(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    body: Result<RawBody, ApiError>,
) -> Result<(StatusCode, Json<ModelStatus>), ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::invalid(
            "name",
            format!("`{name}` does not match [a-z0-9][a-z0-9_-]{{0,63}}"),
        ));
    }
    let RawBody(bytes) = body?;
    let registry = state.registry.clone();
    let (existed, model) = tokio::task::spawn_blocking(move || {
        let mut decoded =
            snapshot::decode(&bytes).map_err(|e| ApiError::InvalidSnapshot(e.to_string()))?;
        decoded.config.name.clone_from(&name);
        let snap = ModelSnapshot::from_stored(decoded)?;
        let existed = registry.get(&name).is_ok();
        registry.import(snap).map(|m| (existed, m))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))??;
    tracing::info!(model = %model.config().name, sequence = model.counters().sequence, "snapshot imported");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ModelStatus::of(&model))))
}
