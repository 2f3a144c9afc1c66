//! The accept loop: serves the router over HTTP/1.1 with a bounded number of
//! connections, each watched by [`super::connection`], and a bounded shutdown.
//!
//! - At most `max_connections` connections (capped by the open-file limit, see
//!   [`super::fd_limit`]); one more is answered `503 overloaded` (once its request
//!   head is in, or after 1 s) and closed within 2 s, so descriptors never run out
//!   and clients learn why.
//! - Stalled connections are closed (header-read and idle timeouts, see
//!   [`super::connection`]), so silent or trickling clients cannot keep their slots.
//! - On shutdown: stop accepting, close connections with no request in flight, let
//!   requests in flight finish for up to `shutdown_grace_secs`, then close the rest.
//! - Accept failures (e.g. `EMFILE`) are retried with exponential backoff and logged at
//!   a bounded rate.

use std::future::Future;
use std::io;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::connection::{self, Closed, ConnectionLimits};
use super::error::ApiError;
use super::fd_limit;
use crate::config::Settings;
use crate::telemetry::throttle::{Backoff, LogThrottle};

/// Refused connections kept open briefly (to read the request head, answer 503 and
/// close cleanly); beyond this many at once, refused connections are closed unanswered.
const LINGERING_REFUSALS: usize = 32;
/// How long a refused connection waits for its request head, and then for the client
/// to take the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Connection-level warnings: at most 5 lines per kind per 10 s, with counts.
static CONNECTION_LOG: LazyLock<LogThrottle> =
    LazyLock::new(|| LogThrottle::new(Duration::from_secs(10), 5));

/// Serves `router` on `listener` with the connection settings of `settings` until
/// `shutdown` completes, then shuts down within `shutdown_grace_secs` (see the module
/// documentation).
///
/// # Errors
/// None at present: accept failures are retried, never returned; the `Result` leaves
/// room for set-up failures.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let c = &settings.connections;
    let other = (settings.limits.max_models as u64)
        .saturating_add(settings.limits.blocking_threads as u64)
        .saturating_add(fd_limit::RESERVED_DESCRIPTORS);
    let max = fd_limit::apply(c.max_connections, other);
    let limits = ConnectionLimits {
        header_read_timeout: c.header_read_timeout(),
        idle_timeout: c.idle_timeout(),
        body_limit: settings.body_limit,
    };
    let slots = Arc::new(Semaphore::new(max));
    let lingering = Arc::new(Semaphore::new(LINGERING_REFUSALS));
    let refusal: Arc<[u8]> = refusal_response(max).into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    tracing::info!(
        max_connections = max,
        header_read_timeout_secs = c.header_read_timeout_secs,
        idle_timeout_secs = c.idle_timeout_secs,
        "accepting connections"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff.succeeded();
                    if let Ok(slot) = slots.clone().try_acquire_owned() {
                        let (router, stop) = (router.clone(), stop_rx.clone());
                        tasks.spawn(async move {
                            let closed = connection::serve(stream, router, limits, stop).await;
                            drop(slot);
                            log_closed(closed, &limits);
                        });
                    } else {
                        if let Some(suppressed) = CONNECTION_LOG.check("refused") {
                            tracing::warn!(max_connections = max, suppressed,
                                "refused a connection: max_connections are open");
                        }
                        if let Ok(linger) = lingering.clone().try_acquire_owned() {
                            let refusal = refusal.clone();
                            tasks.spawn(async move {
                                refuse(stream, &refusal).await;
                                drop(linger);
                            });
                        }
                        // Otherwise the connection is closed unanswered.
                    }
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // E.g. EMFILE: wait for descriptors to free up instead of spinning.
                    let wait = backoff.failed();
                    if let Some(suppressed) = CONNECTION_LOG.check("accept") {
                        tracing::error!(error = %e, suppressed, retry_in_ms = wait.as_millis() as u64,
                            "accepting a connection failed");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    let open = slots.available_permits();
    tracing::info!(
        open_connections = max - open,
        grace_secs = c.shutdown_grace_secs,
        "stopped accepting; finishing requests in flight"
    );
    let drained = tokio::time::timeout(c.shutdown_grace(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!(
            connections = tasks.len(),
            grace_secs = c.shutdown_grace_secs,
            "closing connections whose requests did not finish within the shutdown grace"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// The bytes of the 503 sent to a connection beyond `max`.
fn refusal_response(max: usize) -> Vec<u8> {
    let error = ApiError::Overloaded(format!("{max} connections are open (max_connections)"));
    let body = json!({"error": {"code": error.code(), "message": error.to_string()}}).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Waits up to [`REFUSAL_LINGER`] for the client's request head (so the answer is not
/// an unsolicited response to a client about to send one), sends the 503, half-closes,
/// and for up to [`REFUSAL_LINGER`] more reads (and drops) what else the client sends,
/// so the close is not a reset that loses the answer.
async fn refuse(mut stream: TcpStream, refusal: &[u8]) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut head = Vec::new();
        loop {
            let n = stream.read(&mut buf).await?;
            // Only the new bytes (and the three before them) can complete the head.
            let from = head.len().saturating_sub(3);
            head.extend_from_slice(&buf[..n]);
            let complete = head[from..].windows(4).any(|w| w == b"\r\n\r\n");
            if n == 0 || complete || head.len() >= 64 * 1024 {
                return Ok::<(), io::Error>(());
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(refusal).await?;
        stream.shutdown().await?;
        let mut total = 0usize;
        while total < 64 * 1024 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

fn log_closed(closed: Option<Closed>, limits: &ConnectionLimits) {
    match closed {
        None => {}
        Some(Closed::Idle) => tracing::trace!("closed an idle kept-alive connection"),
        Some(Closed::HeaderTimeout) => {
            if let Some(suppressed) = CONNECTION_LOG.check("header_timeout") {
                tracing::warn!(
                    secs = limits.header_read_timeout.as_secs(),
                    suppressed,
                    "closed a connection that sent no complete request head in time"
                );
            }
        }
        Some(Closed::WriteStalled) => {
            if let Some(suppressed) = CONNECTION_LOG.check("write_stalled") {
                tracing::warn!(
                    secs = limits.idle_timeout.as_secs(),
                    suppressed,
                    "closed a connection that stopped reading its response"
                );
            }
        }
    }
}

/// Errors that concern one connection only (the next accept works).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_503_with_the_error_shape() {
        let bytes = refusal_response(768);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("retry-after: 1"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "overloaded");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("768 connections are open (max_connections)"));
    }
}
