//! Cluster mode's `POST /v1/models/{name}/samples`: the batch is parsed and checked
//! exactly as in embedded mode, then published to the model's partition stream; the
//! 200 comes after JetStream's acknowledgement (stored on the stream's replicas).

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::{ClusterState, Failure};
use crate::format::{BatchParser, Format, RowLimit};
use crate::http::body::{media_type, BodyLimit};
use crate::http::body_stream;
use crate::http::error::ApiError;
use crate::http::ModelName;
use crate::pca::Batch;

/// The request header naming a batch for deduplication.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /v1/models/{name}/samples` response in cluster mode.
#[derive(Debug, Serialize)]
pub struct ClusterIngestResponse {
    accepted: usize,
    /// The batch's model-wide sequence; null for a retried chunked batch, whose
    /// original sequence the server does not return.
    sequence: Option<u64>,
    /// Partition the batch went to.
    partition: u32,
    /// True when a batch with this `Idempotency-Key` was already stored (this one is
    /// not counted again).
    duplicate: bool,
}

/// The `Idempotency-Key` header: absent, or 1-128 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII characters"))?;
    crate::cluster::publish::check_key(key)
        .map_err(|e| ApiError::invalid("Idempotency-Key", e.to_string()))?;
    Ok(Some(key.to_owned()))
}

/// Ingests one batch on any node: applied whole or not at all, exactly once per
/// `Idempotency-Key` within the dedup window. `score=true` is refused (no control
/// limits in cluster mode yet).
pub async fn ingest(
    State(state): State<ClusterState>,
    ModelName(name): ModelName,
    req: Request,
) -> Result<Json<ClusterIngestResponse>, Failure> {
    if req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("score=")))
    {
        return Err(ApiError::invalid(
            "score",
            "scoring at ingest is not available in cluster mode",
        )
        .into());
    }
    let key = idempotency_key(req.headers())?;
    let record = state.node.record(&name).await?;
    let _permit = state.guard.admit_ingest(&name)?;
    let format = Format::from_media_type(media_type(req.headers()).as_deref())?;
    let limit = RowLimit {
        max: state.guard.limits.max_batch_rows,
        setting: "max_batch_rows",
    };
    let mut parser = BatchParser::new(format, record.config.shape(), limit);
    let body_limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    let read = state.guard.body_read(body_limit);
    let (parts, body) = req.into_parts();
    tokio::time::timeout(
        state.guard.timeout(),
        body_stream::read_into(&parts.headers, body, read, &mut parser),
    )
    .await
    .map_err(|_| ApiError::Timeout(state.guard.limits.request_timeout))??;
    // The batch's one pass of value checks, off the runtime; a batch of f32 values
    // travels and is logged as f32.
    let batch = tokio::task::spawn_blocking(move || parser.finish().map(Batch::narrowed))
        .await
        .map_err(|e| ApiError::Internal(format!("ingest task failed: {e}")))??;
    let r = state.node.ingest(&name, &batch, key.as_deref()).await?;
    Ok(Json(ClusterIngestResponse {
        accepted: r.accepted,
        sequence: r.sequence,
        partition: r.publish.partition,
        duplicate: r.publish.duplicate,
    }))
}
