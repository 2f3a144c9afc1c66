//! Start-up wiring of cluster mode (`--nats`): connect (refusing a NATS server older
//! than 2.11, naming the version found), start this node's cluster roles, serve the
//! cluster-mode router until shutdown, then release leases so other nodes take over.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cluster::{ClusterNode, ClusterSettings};
use crate::config::Settings;
use crate::http::cluster::ClusterState;
use crate::metrics::Metrics;

/// Serves the API in cluster mode on `listener` until `shutdown` completes. No data
/// directory is used: NATS JetStream holds every model.
///
/// # Errors
/// A NATS server that cannot be reached or is too old (the message names its version),
/// invalid settings, or a failing server.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    cluster: ClusterSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let urls = cluster.urls.join(",");
    let node = ClusterNode::start(cluster)
        .await
        .map_err(anyhow::Error::new)
        .with_context(|| format!("starting cluster mode against {urls}"))?;
    let ready = Arc::new(AtomicBool::new(false));
    let keys = settings.auth.keys().map_err(anyhow::Error::msg)?;
    let auth = crate::http::auth::Auth {
        keys,
        metrics_auth: settings.auth.metrics_auth,
    };
    let state = ClusterState {
        node: node.clone(),
        metrics: Arc::new(Metrics::new()),
        ready: ready.clone(),
        auth: Arc::new(auth),
        guard: Arc::new(crate::http::guard::Guard::new(settings.limits.clone())),
    };
    let app = crate::http::cluster::router(state, settings.body_limit);
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(%addr, node = node.node_id(), nats = %urls, models = node.models().len(),
        "cluster mode; listening");
    ready.store(true, Ordering::Release);
    let not_ready = ready.clone();
    let served = crate::http::server::serve(listener, app, &settings, async move {
        shutdown.await;
        not_ready.store(false, Ordering::Release);
    })
    .await
    .context("serving HTTP");
    // Releasing leases needs NATS; when it is unreachable (the whole cluster stopping at
    // once, say) the client would retry forever, so the release gets the same grace as
    // the requests and the leases then simply expire after their TTL.
    let grace = settings
        .connections
        .shutdown_grace()
        .max(Duration::from_secs(1));
    if tokio::time::timeout(grace, node.shutdown()).await.is_err() {
        tracing::warn!(
            secs = grace.as_secs(),
            "NATS did not answer at shutdown: leases not released, they expire after their TTL"
        );
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}
