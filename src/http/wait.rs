//! `GET /v1/models/{name}?fitted_sequence=S&wait=T`: the model's status once its
//! published fit covers batch `S` (`fitted_sequence ≥ S`), or after `T` seconds,
//! whichever comes first (the answer is the same 200 status either way; the client
//! compares `fitted_sequence`).
//!
//! The wait is asynchronous: it holds no thread, only a receiver of the model's published
//! sequence. While a request waits, the model's trainer skips its pacing pause, so the
//! fit covering `S` starts as soon as the running one ends. Bounds: at most
//! [`max_waiters`] requests wait on one model (beyond that, 503 `overloaded`), each also
//! holds one of the service's `max_in_flight` admissions; `T` is capped just under the
//! request timeout, so a wait answers 200 rather than 503 `timeout`; a wait ends at
//! once when the model is deleted or the service shuts down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::error::ApiError;
use crate::model::Model;

/// Longest `wait`, seconds.
pub const MAX_WAIT_SECS: f64 = 60.0;

/// How often a waiting request checks whether the service is shutting down.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// What a waiting status request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitQuery {
    /// The batch sequence the published fit must cover.
    pub fitted_sequence: u64,
    /// How long to wait at most.
    pub wait: Duration,
}

impl WaitQuery {
    /// Parses `fitted_sequence=S&wait=T` (both or neither; `None` for neither). Any
    /// other key is refused, so a misspelt parameter is not silently ignored.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] naming `fitted_sequence` (not a u64, or given
    /// without `wait`), `wait` (not a number in (0, 60], or given without
    /// `fitted_sequence`), or `query` (an unknown key).
    pub fn parse(query: Option<&str>) -> Result<Option<Self>, ApiError> {
        let shown = |v: &str| v.chars().take(40).collect::<String>();
        let (mut sequence, mut wait) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "fitted_sequence" => {
                    sequence = Some(value.parse::<u64>().map_err(|_| {
                        ApiError::invalid(
                            "fitted_sequence",
                            format!(
                                "must be a batch sequence (an integer ≥ 0), got `{}`",
                                shown(value)
                            ),
                        )
                    })?);
                }
                "wait" => {
                    let t = value
                        .parse::<f64>()
                        .ok()
                        .filter(|t| *t > 0.0 && *t <= MAX_WAIT_SECS);
                    wait = Some(t.ok_or_else(|| {
                        ApiError::invalid(
                            "wait",
                            format!(
                                "must be seconds in (0, {MAX_WAIT_SECS}], got `{}`",
                                shown(value)
                            ),
                        )
                    })?);
                }
                _ => {
                    return Err(ApiError::invalid(
                        "query",
                        format!(
                            "unknown key `{}`, expected fitted_sequence and wait",
                            shown(key)
                        ),
                    ))
                }
            }
        }
        match (sequence, wait) {
            (None, None) => Ok(None),
            (Some(fitted_sequence), Some(wait)) => Ok(Some(Self {
                fitted_sequence,
                wait: Duration::from_secs_f64(wait),
            })),
            (Some(_), None) => Err(ApiError::invalid(
                "wait",
                "is required with fitted_sequence (seconds in (0, 60])",
            )),
            (None, Some(_)) => Err(ApiError::invalid(
                "fitted_sequence",
                "is required with wait (the batch sequence the fit must cover)",
            )),
        }
    }
}

/// Requests that may wait on one model at once: a quarter of `max_in_flight` (at least
/// one), so waiters never take every admission from ingest and queries.
pub fn max_waiters(max_in_flight: usize) -> usize {
    (max_in_flight / 4).max(1)
}

/// The longest wait a request may have under `request_timeout`: `wait`, capped half a
/// second under the timeout (the answer then still goes out as a 200).
pub fn capped(wait: Duration, request_timeout: Duration) -> Duration {
    wait.min(request_timeout.saturating_sub(Duration::from_millis(500)))
}

/// Waits until `model`'s published fit covers `q.fitted_sequence`, `wait` elapses, the
/// model's trainer stops or `ready` is cleared (shutdown). Holds no thread.
///
/// # Errors
/// [`ApiError::InvalidParameter`] naming `fitted_sequence` when it is beyond the model's
/// last acknowledged batch (nothing waits); [`ApiError::Overloaded`] when `max`
/// requests already wait on this model.
pub async fn until_fitted(
    model: &Model,
    q: WaitQuery,
    wait: Duration,
    max: usize,
    ready: &AtomicBool,
) -> Result<(), ApiError> {
    let last = model.counters().sequence;
    if q.fitted_sequence > last {
        return Err(ApiError::invalid(
            "fitted_sequence",
            format!(
                "{} is beyond the model's last acknowledged batch, sequence {last}",
                q.fitted_sequence
            ),
        ));
    }
    let mut fitted = model.watch_fitted();
    if *fitted.borrow_and_update() >= q.fitted_sequence {
        return Ok(());
    }
    let Some(_waiter) = model.add_waiter(max) else {
        return Err(ApiError::Overloaded(format!(
            "{max} requests are already waiting for a fit of model `{}`",
            model.config().name
        )));
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if *fitted.borrow_and_update() >= q.fitted_sequence
            || model.is_stopped()
            || !ready.load(Ordering::Acquire)
        {
            return Ok(());
        }
        tokio::select! {
            changed = fitted.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(()),
            () = tokio::time::sleep(SHUTDOWN_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(q: &str) -> (String, String) {
        match WaitQuery::parse(Some(q)) {
            Err(ApiError::InvalidParameter { name, reason }) => (name, reason),
            other => panic!("{q} gave {other:?}"),
        }
    }

    #[test]
    fn the_query_takes_both_parameters_or_neither() {
        assert_eq!(WaitQuery::parse(None), Ok(None));
        assert_eq!(WaitQuery::parse(Some("")), Ok(None));
        assert_eq!(
            WaitQuery::parse(Some("fitted_sequence=7&wait=2.5")),
            Ok(Some(WaitQuery {
                fitted_sequence: 7,
                wait: Duration::from_millis(2500)
            }))
        );
        assert_eq!(
            WaitQuery::parse(Some("wait=60&fitted_sequence=0")).map(|q| q.map(|q| q.wait)),
            Ok(Some(Duration::from_secs(60)))
        );
        for (q, name, needle) in [
            ("fitted_sequence=-1&wait=1", "fitted_sequence", "`-1`"),
            ("fitted_sequence=1.5&wait=1", "fitted_sequence", "`1.5`"),
            ("fitted_sequence=&wait=1", "fitted_sequence", "``"),
            ("fitted_sequence=1&wait=0", "wait", "`0`"),
            ("fitted_sequence=1&wait=60.001", "wait", "`60.001`"),
            ("fitted_sequence=1&wait=-3", "wait", "`-3`"),
            ("fitted_sequence=1&wait=NaN", "wait", "`NaN`"),
            ("fitted_sequence=1&wait=inf", "wait", "`inf`"),
            ("fitted_sequence=1", "wait", "required"),
            ("wait=1", "fitted_sequence", "required"),
            ("fitted_sequence=1&wait=1&sequence=2", "query", "`sequence`"),
        ] {
            let (n, reason) = refused(q);
            assert_eq!(n, name, "{q}");
            assert!(reason.contains(needle), "{q}: {reason}");
        }
    }

    #[test]
    fn waits_are_capped_under_the_request_timeout_and_bounded_per_model() {
        let s = Duration::from_secs;
        assert_eq!(capped(s(60), s(30)), Duration::from_millis(29_500));
        assert_eq!(capped(s(2), s(30)), s(2));
        assert_eq!(capped(s(2), Duration::from_millis(300)), Duration::ZERO);
        assert_eq!(max_waiters(512), 128);
        assert_eq!(max_waiters(2), 1);
    }
}
