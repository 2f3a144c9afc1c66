//! `POST /v1/models/{name}/samples`: parse a mini-batch in any of the five formats as
//! its body arrives, and apply it off the async runtime.

use axum::extract::{Request, State};
use axum::Json;
use serde::Serialize;

use super::body::{media_type, BodyLimit};
use super::body_stream;
use super::error::ApiError;
use super::scoring::{self, IngestQuery, ScoreAnswer};
use super::{AppState, ModelName};
use crate::format::{BatchParser, Format, RowLimit};

/// `POST /v1/models/{name}/samples` response.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    accepted: usize,
    samples: f64,
    sequence: u64,
    /// With `score=true`: the batch's counts over the control limits (`scoring`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    score: Option<ScoreAnswer>,
}

/// Ingests one batch: applied whole or not at all, exactly once, in `sequence` order.
///
/// Admission (`ingest_queue` per model) comes first, so a full queue answers 503 before
/// the body is read. The body read is bounded by the request timeout; once the batch is
/// handed to the blocking task it always runs to completion (see
/// [`super::guard::shed_and_timeout`]), so a 503 never hides an applied batch.
///
/// With `?score=true` the rows are scored against the fit published before the batch
/// is folded ([`scoring::score`]); scoring never refuses a batch.
pub async fn ingest(
    State(state): State<AppState>,
    ModelName(name): ModelName,
    req: Request,
) -> Result<Json<IngestResponse>, ApiError> {
    let model = state.registry.get(&name).map_err(ApiError::from)?;
    let result = async {
        let query = IngestQuery::parse(req.uri().query())?;
        let permit = state.guard.admit_ingest(&name)?;
        let format = Format::from_media_type(media_type(req.headers()).as_deref())?;
        let limit = RowLimit {
            max: state.guard.limits.max_batch_rows,
            setting: "max_batch_rows",
        };
        let mut parser = BatchParser::new(format, model.config().shape(), limit);
        let body_limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let read = state.guard.body_read(body_limit);
        let (parts, body) = req.into_parts();
        tokio::time::timeout(
            state.guard.timeout(),
            body_stream::read_into(&parts.headers, body, read, &mut parser),
        )
        .await
        .map_err(|_| ApiError::Timeout(state.guard.limits.request_timeout))??;
        let m = model.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // The batch's one pass of value checks runs here, off the runtime. A batch of
            // f32 values (decimal text printed from f32, small integers) is logged and
            // folded as f32: the same numbers in half the bytes.
            let batch = parser.finish()?.narrowed();
            // The fit published before the batch is folded: the one it is scored against.
            let published = query.score.then(|| m.published());
            let receipt = m.ingest(&batch).map_err(ApiError::from)?;
            let score = published.map(|p| {
                let outcome = scoring::score(&p, &batch, m.config().alpha);
                if let Ok(s) = &outcome {
                    m.record_scored(s.rows, s.t2, s.spe);
                }
                ScoreAnswer::new(outcome)
            });
            Ok::<_, ApiError>((receipt, score))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("ingest task failed: {e}")))?
    }
    .await;
    match result {
        Ok((r, score)) => Ok(Json(IngestResponse {
            accepted: r.accepted,
            samples: r.samples,
            sequence: r.sequence,
            score,
        })),
        Err(e) => {
            model.record_rejection(e.code());
            Err(e)
        }
    }
}
