//! streampca: learns the ordered principal components of a live data stream and serves
//! them over HTTP.
//!
//! - [`pca`]: the numerical core (accumulators, ordered loss, optimisers, projections).
//! - [`registry`]: live models: configuration, accumulator, sequence, published fit and
//!   the background trainer thread of each.
//! - [`http`]: the router, handlers, body formats and the API's errors.
//! - [`metrics`]: every Prometheus metric, the request-counting middleware, `/metrics`.
//! - [`config`]: command line and environment settings.
//! - [`drift`]: how far each model's subspace turned over a fixed interval.
//! - [`telemetry`], [`shutdown`]: logging set-up and the stop signal.
//! - [`durability`]: start-up recovery into the registry and the snapshot schedule.
//! - [`persistence`]: the write-ahead log, snapshots and data directory (blocking file
//!   I/O; no HTTP).
//! - [`cli`]: the command-line client (`streampca models|ingest|components|project|demo`),
//!   which talks to a running server over HTTP only.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod drift;
pub mod durability;
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
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Settings, Sync};
use crate::durability::Snapshotter;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::persistence::{Store, SyncMode};
use crate::registry::Registry;

/// Recovers every model from the data directory, then serves the API on `listener`
/// until `shutdown` completes; then drains in-flight requests, stops every trainer
/// thread and writes a final snapshot of every model.
///
/// Recovery runs before the first request is served (connections wait in the listen
/// backlog), so `/readyz` never answers ready before it finished.
///
/// # Errors
/// Invalid settings, an unrecoverable data directory (the message names the file), or a
/// failing server.
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
    let metrics = Arc::new(Metrics::with_drift_interval(Duration::from_secs_f64(
        settings.drift_interval_secs,
    )));
    let sync = match settings.sync {
        Sync::Always => SyncMode::Always,
        Sync::Never => SyncMode::Never,
    };
    let data_dir = settings.data_dir.clone();
    let registry = {
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<Registry>> {
            let (store, recovered) = Store::open(&data_dir, sync)
                .with_context(|| format!("recovering data directory {}", data_dir.display()))?;
            let registry = Arc::new(Registry::with_store(metrics.clone(), Arc::new(store)));
            for r in recovered {
                durability::restore_recovered(&registry, &metrics, r)?;
            }
            Ok(registry)
        })
        .await
        .context("recovery task")??
    };
    let snapshotter = Snapshotter::start(
        registry.clone(),
        settings.snapshot_every_batches,
        Duration::from_secs(settings.snapshot_interval_secs),
    )
    .context("starting the snapshot thread")?;
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
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), sync = ?settings.sync,
        models = registry.list().len(), "recovered; listening");
    ready.store(true, Ordering::Release);
    let not_ready = ready.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            not_ready.store(false, Ordering::Release);
        })
        .await
        .context("serving HTTP");
    tokio::task::spawn_blocking(move || {
        snapshotter.stop();
        registry.shutdown();
        // After the trainers stopped, so the snapshot holds their last state.
        registry.snapshot_due(u64::MAX, Duration::MAX, true);
    })
    .await
    .context("stopping trainers and writing final snapshots")?;
    served?;
    tracing::info!("stopped");
    Ok(())
}
