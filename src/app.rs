//! Start-up wiring: settings → recovered registry → snapshot schedule → HTTP server,
//! and the orderly stop (drain requests, stop trainers, final snapshots).

mod cluster;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Settings, SyncPolicy};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::model::{restore, Registry, Schedule, Snapshotter};
use crate::persistence::{Store, SyncMode};

/// Recovers every model from the data directory, then serves the API on `listener`
/// until `shutdown` completes; then drains in-flight requests, stops every trainer
/// thread and writes a final snapshot of every model.
///
/// Recovery runs before the first request is served (connections wait in the listen
/// backlog), so `/readyz` never answers ready before it finished. Models whose data is
/// incomplete are held back (see `--accept-data-loss`); `/readyz` then answers 503
/// naming them.
///
/// # Errors
/// Invalid settings, an unusable data directory (the message names it), or a failing
/// server.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    settings
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid settings")?;
    // The one place the backend is chosen: `--nats` serves from the cluster.
    if let Some(c) = settings.cluster.settings().map_err(anyhow::Error::msg)? {
        return cluster::run(listener, settings, c, shutdown).await;
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let metrics = Arc::new(Metrics::new());
    let sync = match settings.sync {
        SyncPolicy::Always => SyncMode::Always,
        SyncPolicy::Never => SyncMode::Never,
    };
    let registry = {
        let metrics = metrics.clone();
        let data_dir = settings.data_dir.clone();
        let limits = settings.limits.models();
        let drift = Duration::from_secs_f64(settings.drift_interval_secs);
        let accept = settings.accept_data_loss;
        tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<Registry>> {
            let (store, recovered, held) = Store::open(&data_dir, sync, accept)
                .with_context(|| format!("recovering data directory {}", data_dir.display()))?;
            let registry = Arc::new(Registry::new(
                Arc::new(store),
                metrics.clone(),
                limits,
                drift,
            ));
            for r in recovered {
                if let Err(h) = restore::restore(&registry, &metrics, r) {
                    registry.hold(h);
                }
            }
            for h in held {
                tracing::error!(model = %h.name, dir = %h.dir.display(), problem = %h.reason,
                    "model held back: its data is incomplete; it will not be served until \
                     the service runs with --accept-data-loss or the model is deleted");
                registry.hold(h);
            }
            Ok(registry)
        })
        .await
        .context("recovery task")??
    };
    let schedule = Schedule {
        every_batches: settings.snapshot_every_batches,
        interval: Duration::from_secs(settings.snapshot_interval_secs),
    };
    let snapshotter =
        Snapshotter::start(registry.clone(), schedule).context("starting the snapshot thread")?;
    let ready = Arc::new(AtomicBool::new(false));
    let keys = settings.auth.keys().map_err(anyhow::Error::msg)?;
    let auth = crate::http::auth::Auth {
        keys,
        metrics_auth: settings.auth.metrics_auth,
    };
    tracing::info!(auth = auth.enabled(), "API keys");
    let state = AppState {
        registry: registry.clone(),
        metrics,
        ready: ready.clone(),
        auth: Arc::new(auth),
        guard: Arc::new(crate::http::guard::Guard::new(settings.limits.clone())),
    };
    let app = crate::http::router(state, settings.body_limit);
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), sync = ?settings.sync,
        models = registry.list().len(), held = registry.held().len(), "recovered; listening");
    ready.store(true, Ordering::Release);
    let not_ready = ready.clone();
    let served = crate::http::server::serve(listener, app, &settings, async move {
        shutdown.await;
        not_ready.store(false, Ordering::Release);
    })
    .await
    .context("serving HTTP");
    tokio::task::spawn_blocking(move || {
        snapshotter.stop();
        registry.shutdown();
        // After the trainers stopped, so the snapshot holds their last state.
        registry.snapshot_due(schedule, true);
    })
    .await
    .context("stopping trainers and writing final snapshots")?;
    served?;
    tracing::info!("stopped");
    Ok(())
}
