//! Role contenders: for every model, one task per partition fold and one for the
//! trainer. Each waits for its lease, works while it holds it, and goes back to waiting
//! when the lease is lost (or the work says another node committed instead).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::catalog::ModelRecord;
use super::fold::{self, FoldCtx, FoldEnd};
use super::lease;
use super::names::{fold_lease_key, train_lease_key};
use super::node::{lock, roles_map, Inner};
use super::trainer::{self, TrainCtx};

/// The running contenders of one model generation.
#[derive(Debug)]
pub(crate) struct ModelRoles {
    cancel: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    partitions: u32,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Fold(u32),
    Train,
}

impl ModelRoles {
    /// Starts K fold contenders and one trainer contender.
    pub(crate) fn start(inner: &Arc<Inner>, record: Arc<ModelRecord>) -> Self {
        let (cancel, rx) = watch::channel(false);
        let mut handles: Vec<JoinHandle<()>> = (0..record.partitions())
            .map(|k| {
                tokio::spawn(role(
                    inner.clone(),
                    record.clone(),
                    Kind::Fold(k),
                    rx.clone(),
                ))
            })
            .collect();
        handles.push(tokio::spawn(role(
            inner.clone(),
            record.clone(),
            Kind::Train,
            rx,
        )));
        Self {
            cancel,
            handles,
            partitions: record.partitions(),
        }
    }

    async fn stop(self) {
        let _ = self.cancel.send(true);
        for h in self.handles {
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Stops a model's contenders (releasing their leases).
pub(crate) async fn stop_model(inner: &Arc<Inner>, name: &str, generation: u64) {
    let roles = roles_map(inner).remove(&(name.to_owned(), generation));
    if let Some(r) = roles {
        let partitions = r.partitions;
        r.stop().await;
        // Not when the name lives on in a newer generation (an import replaced it):
        // metric labels carry no generation.
        if inner.catalog.get(name).is_none() {
            inner.metrics.remove_model(name, partitions);
        }
    }
}

/// Stops every contender (shutdown).
pub(crate) async fn stop_all(inner: &Arc<Inner>) {
    let all: Vec<ModelRoles> = roles_map(inner).drain().map(|(_, r)| r).collect();
    for r in all {
        r.stop().await;
    }
}

async fn role(
    inner: Arc<Inner>,
    record: Arc<ModelRecord>,
    kind: Kind,
    mut cancel: watch::Receiver<bool>,
) {
    let name = record.config.name.to_string();
    let g = record.generation;
    let (key, label) = match kind {
        Kind::Fold(k) => (fold_lease_key(&name, g, k), k.to_string()),
        Kind::Train => (train_lease_key(&name, g), "train".to_owned()),
    };
    let ttl = inner.settings.lease_ttl;
    let node = inner.settings.node_id.clone();
    loop {
        let mut held = tokio::select! {
            l = lease::acquire(&inner.conn.state, &key, &node, ttl, &inner.held) => l,
            _ = cancel.changed() => return,
        };
        inner.metrics.set_owned(&name, &label, true);
        tracing::info!(model = %name, role = %label, node = %node, "role taken");
        let cancelled = tokio::select! {
            () = held.hold(ttl) => false,
            () = work(&inner, &record, kind) => false,
            _ = cancel.changed() => true,
        };
        inner.metrics.set_owned(&name, &label, false);
        if cancelled {
            held.release().await;
            return;
        }
        drop(held);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn work(inner: &Arc<Inner>, record: &Arc<ModelRecord>, kind: Kind) {
    match kind {
        Kind::Fold(k) => {
            let ctx = FoldCtx {
                conn: inner.conn.clone(),
                record: record.clone(),
                k,
                node: inner.settings.node_id.clone(),
                checkpoint_interval: inner.settings.checkpoint_interval,
                metrics: inner.metrics.clone(),
            };
            loop {
                match fold::run(&ctx).await {
                    Ok(FoldEnd::Lost) => return,
                    Ok(FoldEnd::Gap(_)) => tokio::time::sleep(Duration::from_secs(10)).await,
                    Err(e) => {
                        tracing::debug!(model = %record.config.name, partition = k, error = %e, "fold interrupted; resuming from the last checkpoint");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        Kind::Train => {
            let ctx = TrainCtx {
                conn: inner.conn.clone(),
                record: record.clone(),
                node: inner.settings.node_id.clone(),
                metrics: inner.metrics.clone(),
            };
            loop {
                match trainer::run(&ctx).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(model = %record.config.name, error = %e, "trainer interrupted; restarting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }
}

/// Starts and stops role contenders as models come and go.
pub(crate) async fn supervise(inner: Arc<Inner>) {
    let mut changes = inner.catalog.subscribe();
    loop {
        let live: HashMap<(String, u64), Arc<ModelRecord>> = inner
            .catalog
            .all()
            .into_iter()
            .map(|r| ((r.config.name.to_string(), r.generation), r))
            .collect();
        let gone: Vec<(String, u64)> = lock(&inner.roles)
            .keys()
            .filter(|k| !live.contains_key(*k))
            .cloned()
            .collect();
        for (name, g) in gone {
            stop_model(&inner, &name, g).await;
        }
        for (key, record) in live {
            lock(&inner.roles)
                .entry(key)
                .or_insert_with(|| ModelRoles::start(&inner, record));
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
