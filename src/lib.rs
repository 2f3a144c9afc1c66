//! streampca: learns the ordered principal components of a live data stream and serves
//! them over HTTP.
//!
//! - [`pca`]: the numerical core (accumulators, ordered loss, optimisers, projections).
//! - [`registry`]: live models: configuration, accumulator, sequence, published fit and
//!   the background trainer thread of each.
//! - [`http`]: the router, handlers, body formats and the API's errors.
//! - [`metrics`]: every Prometheus metric, the request-counting middleware, `/metrics`.
//! - [`config`]: command line and environment settings.
//! - [`telemetry`], [`shutdown`]: logging set-up and the stop signal.
//! - [`persistence`]: the write-ahead log, snapshots and data directory (blocking file
//!   I/O; no HTTP).

pub mod config;
pub mod http;
pub mod metrics;
pub mod pca;
pub mod persistence;
pub mod registry;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight
/// requests and stops every trainer thread.
///
/// # Errors
/// Invalid settings, an uncreatable data directory, or a failing server.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    settings
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid settings")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(Registry::new(metrics.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let keys = settings.auth.keys().map_err(anyhow::Error::msg)?;
    let auth = http::auth::Auth {
        keys,
        metrics_auth: settings.auth.metrics_auth,
    };
    tracing::info!(auth = auth.enabled(), "API keys");
    let state = AppState {
        registry: registry.clone(),
        metrics,
        ready: ready.clone(),
        auth: Arc::new(auth),
        guard: Arc::new(http::guard::Guard::new(settings.limits.clone())),
    };
    let app = http::router(state, settings.body_limit);
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "listening");
    ready.store(true, Ordering::Release);
    let not_ready = ready.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            not_ready.store(false, Ordering::Release);
        })
        .await
        .context("serving HTTP")?;
    tokio::task::spawn_blocking(move || registry.shutdown())
        .await
        .context("stopping trainers")?;
    tracing::info!("stopped");
    Ok(())
}
