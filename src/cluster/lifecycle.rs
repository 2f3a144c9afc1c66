//! A model generation's resources on NATS: its stream, made before the catalog record
//! that names it, and the clean-up of everything a deleted or replaced generation left
//! (stream, pointers, leases, objects).

use std::time::Duration;

use async_nats::jetstream::stream::{self as js_stream, DiscardPolicy, StorageType};
use futures_util::StreamExt;

use super::catalog::ModelRecord;
use super::error::ClusterError;
use super::names::{checkpoint_key, fold_lease_key, train_lease_key, view_key};
use super::node::Inner;

/// Creates the stream of `record`'s generation (subjects `<prefix>.<model>.<gen>.*`,
/// discard new, the dedup window, atomic batches when the server has them), retrying
/// while the cluster elects a leader for up to the publish retry time.
///
/// # Errors
/// [`ClusterError::Unavailable`] when the stream could not be created in time.
pub(crate) async fn create_stream(inner: &Inner, record: &ModelRecord) -> Result<(), ClusterError> {
    let (name, generation) = (record.config.name.as_str(), record.generation);
    let n = &inner.conn.names;
    let cfg = js_stream::Config {
        name: n.stream(name, generation),
        subjects: vec![n.stream_subjects(name, generation)],
        storage: StorageType::File,
        num_replicas: inner.conn.replicas,
        discard: DiscardPolicy::New,
        max_bytes: inner.settings.stream_max_bytes,
        duplicate_window: inner.settings.dedup_window,
        allow_atomic_publish: inner.conn.atomic_batches,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + inner.settings.publish_retry;
    loop {
        match inner.conn.js.create_stream(cfg.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ClusterError::unavailable(format!(
                    "creating the stream of {name}: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Removes a deleted (or replaced) generation's stream, pointers, leases and objects.
/// Best effort: every name carries the generation, so leftovers never touch another
/// generation of the name.
pub(crate) async fn cleanup(inner: &Inner, record: &ModelRecord) {
    let (name, g) = (record.config.name.as_str(), record.generation);
    let _ = inner
        .conn
        .js
        .delete_stream(inner.conn.names.stream(name, g))
        .await;
    let mut keys = vec![view_key(name, g), train_lease_key(name, g)];
    for k in 0..record.partitions() {
        keys.push(checkpoint_key(name, g, k));
        keys.push(fold_lease_key(name, g, k));
    }
    for key in keys {
        let _ = inner.conn.state.purge(&key).await;
    }
    if let Ok(mut list) = inner.conn.blobs.list().await {
        let prefixes = [format!("ckpt/{name}/{g}/"), format!("view/{name}/{g}/")];
        let mut doomed = Vec::new();
        while let Some(Ok(o)) = list.next().await {
            if prefixes.iter().any(|p| o.name.starts_with(p)) {
                doomed.push(o.name);
            }
        }
        for o in doomed {
            let _ = inner.conn.blobs.delete(&o).await;
        }
    }
    // A replaced model's name lives on in its new generation (metric labels carry no
    // generation): its series stay.
    if inner.catalog.get(name).is_none() {
        inner.metrics.remove_model(name, record.partitions());
    }
}
