//! Ingest scoring, `POST /v1/models/{name}/samples?score=true`: every row of an accepted
//! batch is scored against the fit that was published *before* the batch was folded
//! (so a batch never vouches for itself), at the model's `alpha` and the fit's reported
//! k, and the answer counts the rows over each control limit.
//!
//! Scoring never refuses a batch the model accepts: when no fit with control limits
//! exists yet (before the first fit, a fit that reports no component, or a fit whose k
//! leaves only round-off variance, so that no SPE limit is defined) the batch is folded
//! as usual and the answer says `"scored": null` with the reason in `not_scored`.

use std::borrow::Cow;

use serde::Serialize;

use super::error::ApiError;
use super::limits::fit_limits;
use crate::model::Published;
use crate::pca::{Batch, BatchData};

/// The options of an ingest request's query string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestQuery {
    /// Score the batch against the published fit before folding it.
    pub score: bool,
}

impl IngestQuery {
    /// Parses `score=true|false|1|0` (a bare `score` means true). Any other key is
    /// refused, so a misspelt option is not silently ignored.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] naming `score` (a bad value) or `query` (an
    /// unknown key).
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut out = Self::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "score" => {
                    out.score = match value {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(ApiError::invalid(
                                "score",
                                format!(
                                    "must be true or false, got `{}`",
                                    value.chars().take(40).collect::<String>()
                                ),
                            ))
                        }
                    }
                }
                _ => {
                    return Err(ApiError::invalid(
                        "query",
                        format!(
                            "unknown key `{}`, expected score",
                            key.chars().take(40).collect::<String>()
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// How one batch scored: counts of rows over each limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredBatch {
    /// Rows scored (all of the batch's).
    pub rows: usize,
    /// Rows with T² above `limit_t2`.
    pub t2: usize,
    /// Rows with SPE above `limit_spe`.
    pub spe: usize,
    /// Components the statistics used: every component the fit reports.
    pub k: usize,
    /// The model's false-alarm rate the limits are for.
    pub alpha: f64,
    /// The T² limit (dimensionless).
    pub limit_t2: f64,
    /// The SPE limit (squared units of the fit's space: z-scores for a standardised
    /// model).
    pub limit_spe: f64,
    /// The fit scored against covers every batch up to this sequence (never this one).
    pub fitted_sequence: u64,
}

/// What a `score=true` ingest answer adds: `scored`, or `scored: null` and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreAnswer {
    /// The counts, or `None` when there was nothing to score against.
    pub scored: Option<ScoredBatch>,
    /// Why the batch was not scored (absent when it was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_scored: Option<String>,
}

impl ScoreAnswer {
    /// The answer for a scoring outcome.
    pub fn new(outcome: Result<ScoredBatch, String>) -> Self {
        match outcome {
            Ok(s) => Self {
                scored: Some(s),
                not_scored: None,
            },
            Err(reason) => Self {
                scored: None,
                not_scored: Some(reason),
            },
        }
    }
}

/// Scores the rows of `batch` against `published` at false-alarm rate `alpha`: T² and
/// SPE of each row (`Components::statistics` without contributions, in the scaled space
/// for a standardised model) compared with the limits at the fit's reported k. Cost:
/// one projection of the batch, `O(rows·n·k)`, and a few quantile evaluations.
///
/// # Errors
/// The reason, for the answer's `not_scored`, when `published` has no fit with control
/// limits at that k (this never refuses the batch).
pub fn score(published: &Published, batch: &Batch, alpha: f64) -> Result<ScoredBatch, String> {
    let fit = match published.components.as_ref() {
        Some(f) if !f.is_empty() => f,
        _ => return Err("no fit yet: scoring starts with the first published fit".into()),
    };
    let monitor = published.monitor.as_ref();
    // Computes the moments if the trainer deferred them (this runs on the blocking pool).
    if monitor.and_then(|m| m.moments(fit)).is_none() {
        return Err("the published fit has no control limits".into());
    }
    let k = fit.len();
    let limits = fit_limits(published, k, alpha)
        .map_err(|e| format!("no control limits at the fit's k = {k}: {e}"))?;
    let x: Cow<'_, [f64]> = match batch.data() {
        BatchData::F64 { x, .. } => Cow::Borrowed(x),
        BatchData::F32 { x, .. } => Cow::Owned(x.iter().map(|&v| f64::from(v)).collect()),
    };
    let x = match monitor.and_then(|m| m.standardizer.as_ref()) {
        Some(s) => Cow::Owned(
            s.scale_rows(&x)
                .map_err(|e| format!("scaling the rows failed: {e}"))?,
        ),
        None => x,
    };
    let stats = fit
        .statistics(&x, k, false)
        .map_err(|e| format!("scoring the rows failed: {e}"))?;
    let over = stats.count_over(&limits);
    Ok(ScoredBatch {
        rows: batch.rows(),
        t2: over.t2,
        spe: over.spe,
        k,
        alpha,
        limit_t2: limits.t2,
        limit_spe: limits.spe,
        fitted_sequence: published.sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_takes_score_flags_and_refuses_anything_else() {
        let parse = |q| IngestQuery::parse(q).map(|o| o.score);
        assert_eq!(parse(None), Ok(false));
        assert_eq!(parse(Some("")), Ok(false));
        assert_eq!(parse(Some("score=true")), Ok(true));
        assert_eq!(parse(Some("score")), Ok(true));
        assert_eq!(parse(Some("score=1")), Ok(true));
        assert_eq!(parse(Some("score=false")), Ok(false));
        assert_eq!(parse(Some("score=true&score=0")), Ok(false));
        let Err(ApiError::InvalidParameter { name, reason }) = parse(Some("score=yes")) else {
            panic!("score=yes accepted");
        };
        assert_eq!((name.as_str(), reason.contains("`yes`")), ("score", true));
        let Err(ApiError::InvalidParameter { name, reason }) = parse(Some("scores=true")) else {
            panic!("an unknown key accepted");
        };
        assert_eq!(
            (name.as_str(), reason.contains("`scores`")),
            ("query", true)
        );
    }
}
