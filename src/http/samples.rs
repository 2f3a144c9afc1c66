//! `POST /v1/models/{name}/samples`: parse a mini-batch in any of the four formats and
//! apply it, off the async runtime.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::body::{media_type, parse_batch, BatchFormat, RawBody};
use super::error::ApiError;
use super::{AppState, ModelName};

/// `POST /v1/models/{name}/samples` response.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    accepted: usize,
    samples: f64,
    sequence: u64,
}

/// Ingests one batch: applied whole or not at all, exactly once, in `sequence` order.
pub async fn ingest(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Json<IngestResponse>, ApiError> {
    let model = state.registry.get(&name)?;
    let result = async {
        let format = BatchFormat::from_media_type(media_type(&headers).as_deref())?;
        let RawBody(bytes) = body?;
        let m = model.clone();
        tokio::task::spawn_blocking(move || {
            let batch = parse_batch(format, &bytes, m.config())?;
            m.ingest(&batch)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("ingest task failed: {e}")))?
    }
    .await;
    match result {
        Ok(r) => Ok(Json(IngestResponse {
            accepted: r.accepted,
            samples: r.samples,
            sequence: r.sequence,
        })),
        Err(e) => {
            model.record_rejection(e.code());
            Err(e)
        }
    }
}
