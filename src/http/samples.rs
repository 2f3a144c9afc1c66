//! `POST /v1/models/{name}/samples`: parse a mini-batch in any of the four formats and
//! apply it, off the async runtime.

use axum::extract::{FromRequest, Request, State};
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
///
/// Admission (`ingest_queue` per model) comes first, so a full queue answers 503 before
/// the body is read. The body read is bounded by the request timeout; once the batch is
/// handed to the blocking task it always runs to completion (see
/// [`super::guard::shed_and_timeout`]), so a 503 never hides an applied batch.
pub async fn ingest(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    req: Request,
) -> Result<Json<IngestResponse>, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let result = async {
        let permit = state.guard.admit_ingest(&name)?;
        let format = BatchFormat::from_media_type(media_type(req.headers()).as_deref())?;
        let RawBody(bytes) =
            tokio::time::timeout(state.guard.timeout(), RawBody::from_request(req, &state))
                .await
                .map_err(|_| ApiError::Timeout(state.guard.limits.request_timeout))??;
        let m = model.clone();
        let guard = state.guard.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let batch = parse_batch(format, &bytes, m.config())?;
            guard.check_rows("batch", batch.rows())?;
            m.ingest(&batch).map_err(ApiError::from)
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
