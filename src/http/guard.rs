//! Overload protection and request limits: the service-wide in-flight bound and request
//! timeout (one middleware), the per-model ingest admission, and the configured
//! [`Limits`] the handlers check. Owns no handler.
//!
//! Memory stays bounded because every source of it is: at most `max_in_flight`
//! requests, each with a body of at most `body_limit` bytes; at most `ingest_queue`
//! batches per model between admission and apply; `max_query_rows` rows per projection;
//! `max_models` models of at most `max_dim`² scatter each; `blocking_threads` threads
//! (set on the runtime by `main`) for the blocking work, each with its stack and the
//! linear-algebra kernels' per-thread workspace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::config::Limits;

/// The route whose timeout the ingest handler applies itself (see [`Guard`]).
pub const INGEST_ROUTE: &str = "/v1/models/{name}/samples";

/// Limits and admission state shared by the middleware and handlers.
#[derive(Debug)]
pub struct Guard {
    /// The configured limits.
    pub limits: Limits,
    /// Requests in flight across the service (health probes and `/metrics` excepted).
    in_flight: Arc<Semaphore>,
    /// Per-model ingest admission, by model name. An entry is removed when its model is
    /// deleted; one re-created by a racing ingest of a deleted model is harmless (it is
    /// only a counter) and bounded by the names in use.
    ingest: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Guard {
    /// A guard enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            ingest: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.limits.request_timeout)
    }

    /// How a request body is read: `limit` bytes at most, and the slow-body bound.
    pub fn body_read(&self, limit: usize) -> super::body_stream::BodyRead {
        super::body_stream::BodyRead {
            limit,
            min_rate: self.limits.body_min_rate,
            grace: Duration::from_secs(self.limits.body_grace_secs),
        }
    }

    /// Admits one ingest batch for `model`; the permit is held until the batch is
    /// applied or rejected.
    ///
    /// # Errors
    /// [`ApiError::Overloaded`] when `ingest_queue` batches are already in flight.
    pub fn admit_ingest(&self, model: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        let sem = {
            let mut map = self.ingest.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry(model.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.ingest_queue)))
                .clone()
        };
        sem.try_acquire_owned().map_err(|_| {
            ApiError::Overloaded(format!(
                "model `{model}` already has {} batches in flight (ingest_queue)",
                self.limits.ingest_queue
            ))
        })
    }

    /// Forgets a deleted model's admission state.
    pub fn forget(&self, model: &str) {
        self.ingest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(model);
    }

    /// Checks a row count against a limit.
    ///
    /// # Errors
    /// [`ApiError::TooManyRows`].
    pub fn check_rows(&self, what: &'static str, got: usize) -> Result<(), ApiError> {
        let (limit, max) = if what == "batch" {
            ("max_batch_rows", self.limits.max_batch_rows)
        } else {
            ("max_query_rows", self.limits.max_query_rows)
        };
        if got > max {
            return Err(ApiError::TooManyRows {
                what,
                limit,
                max,
                got,
            });
        }
        Ok(())
    }
}

/// Middleware: sheds load beyond `max_in_flight` with 503 `overloaded` and bounds each
/// request's time with 503 `timeout` (both with `Retry-After`). Health probes and
/// `/metrics` bypass both, so an overloaded service still answers its probes.
///
/// The ingest route is admitted here but not timed: its handler times the body read
/// itself and then always finishes applying the batch, because cancelling it midway
/// would answer 503 for a batch that may have been applied.
pub async fn shed_and_timeout(
    State(guard): State<Arc<Guard>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    if matches!(route.as_deref(), Some("/healthz" | "/readyz" | "/metrics")) {
        return next.run(req).await;
    }
    let Ok(_permit) = guard.in_flight.clone().try_acquire_owned() else {
        return ApiError::Overloaded(format!(
            "{} requests are in flight (max_in_flight)",
            guard.limits.max_in_flight
        ))
        .into_response();
    };
    if route.as_deref() == Some(INGEST_ROUTE) {
        return next.run(req).await;
    }
    match tokio::time::timeout(guard.timeout(), next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout(guard.limits.request_timeout).into_response(),
    }
}
