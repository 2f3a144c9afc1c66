//! Snapshots in cluster mode: export a model as the snapshot format embedded mode
//! writes (version 2, one partition state per partition), and import any snapshot
//! (version 1 or 2) as a new generation of a model.
//!
//! - Export reads each partition's newest committed checkpoint (pointer from the
//!   bucket's leader, then the object it names) and the published view's trainer warm
//!   start. Every partition is a committed state; together they are the state the
//!   model's trainer merges.
//! - Import checks the whole upload first (format, the server's limits before any
//!   matrix is read, every accumulator, positive semi-definiteness), then makes the new
//!   generation's stream, writes partition k of the snapshot as partition k's first
//!   checkpoint and the trainer's warm start as a not-yet-fitted view, and only then
//!   makes the generation visible with one compare-and-set of the catalog entry
//!   (replacing an existing model of that name atomically). The model keeps the
//!   snapshot's partition count and continues its sequences: the stream's sequence
//!   `q` is the model's `snapshot.sequence() + q`.

use std::time::Duration;

use bytes::Bytes;

use crate::model::ModelName;
use crate::pca::{Accumulator, TrainerState};
use crate::persistence::{snapshot, PartitionState, Position, Snapshot};

use super::catalog::{now_ms, ModelRecord};
use super::checkpoint::{self, CheckpointPointer};
use super::error::ClusterError;
use super::lifecycle;
use super::names::{random_id, view_key, view_object};
use super::node::Inner;
use super::roles;
use super::store::{cas_put, get_object, leader_get, put_object, Cas};
use super::view::{self, ViewPointer};

/// See the module documentation.
pub(crate) async fn export(inner: &Inner, name: &str) -> Result<Vec<u8>, ClusterError> {
    let record = inner.catalog.require(name).await?;
    let conn = &inner.conn;
    let mut partitions = Vec::with_capacity(record.config.partitions);
    for k in 0..record.partitions() {
        let (acc, position) = match checkpoint::read_pointer(conn, &record, k).await? {
            Some((p, _)) => (checkpoint::load(conn, &record, &p).await?, p.position()),
            None => (checkpoint::empty(&record)?, Position::default()),
        };
        partitions.push(PartitionState {
            position,
            accumulator: acc.to_parts(),
        });
    }
    let trainer = match leader_get(&conn.state, &view_key(name, record.generation)).await? {
        Some(v) => match serde_json::from_slice::<ViewPointer>(&v.value) {
            Ok(p) => get_object(&conn.blobs, &p.object, Duration::from_secs(5))
                .await
                .ok()
                .and_then(|b| view::decode(&b).ok())
                .map(|(_, t)| t)
                .unwrap_or_default(),
            Err(_) => TrainerState::default(),
        },
        None => TrainerState::default(),
    };
    let snap = Snapshot {
        config: record.config.clone(),
        partitions,
        trainer,
    };
    tokio::task::spawn_blocking(move || {
        snapshot::encode(&snap).map_err(|e| ClusterError::Setup(e.to_string()))
    })
    .await
    .map_err(|e| ClusterError::unavailable(e.to_string()))?
}

/// Decodes and checks an upload (blocking: it may hold n×n matrices).
fn check_upload(
    inner: &Inner,
    name: &ModelName,
    bytes: &[u8],
) -> Result<(Snapshot, Vec<Accumulator>), ClusterError> {
    let (mut snap, accs) = inner
        .settings
        .limits
        .decode_upload(bytes)
        .map_err(ClusterError::InvalidSnapshot)?;
    snap.config.name = name.clone();
    Ok((snap, accs))
}

/// See the module documentation. Returns the new record and whether it replaced one.
pub(crate) async fn import(
    inner: &std::sync::Arc<Inner>,
    name: &ModelName,
    bytes: Vec<u8>,
) -> Result<(ModelRecord, bool), ClusterError> {
    let (snap, accs) = {
        let (inner2, name2) = (inner.clone(), name.clone());
        tokio::task::spawn_blocking(move || check_upload(&inner2, &name2, &bytes))
            .await
            .map_err(|e| ClusterError::unavailable(e.to_string()))??
    };
    let base = snap.sequence();
    let seed = &snap;
    let accs = &accs;
    let (record, replaced) = inner
        .catalog
        .replace(
            snap.config.clone(),
            base,
            |record| async move { seed_generation(inner, &record, seed, accs).await },
            |record| async move { lifecycle::cleanup(inner, &record).await },
        )
        .await?;
    if let Some(old) = &replaced {
        roles::stop_model(inner, old.config.name.as_str(), old.generation).await;
        lifecycle::cleanup(inner, old).await;
    }
    Ok((record, replaced.is_some()))
}

/// Makes a new generation's stream, its first checkpoints and its warm start, before
/// the catalog names it.
async fn seed_generation(
    inner: &Inner,
    record: &ModelRecord,
    snap: &Snapshot,
    accs: &[Accumulator],
) -> Result<(), ClusterError> {
    lifecycle::create_stream(inner, record).await?;
    for (k, (part, acc)) in snap.partitions.iter().zip(accs).enumerate() {
        let k = u32::try_from(k).map_err(|e| ClusterError::Setup(e.to_string()))?;
        let position = part.position;
        let encoded = {
            let (rec, acc) = (record.clone(), acc.clone());
            tokio::task::spawn_blocking(move || checkpoint::encode(&rec, &acc, position))
                .await
                .map_err(|e| ClusterError::unavailable(e.to_string()))??
        };
        let pointer = CheckpointPointer {
            seq: 0,
            covered: 0,
            batches: position.batches,
            // Without forgetting (refused in cluster mode) the count is the rows.
            rows: acc.count().round().max(0.0) as u64,
            rejected: 0,
            sequence: position.sequence,
            local: position.local,
            object: None,
            node: inner.settings.node_id.clone(),
            written_ms: 0,
        };
        match checkpoint::commit(&inner.conn, record, k, Some(encoded), pointer, None).await? {
            (Cas::Written(_), _) => {}
            (Cas::Conflict, _) => {
                return Err(ClusterError::unavailable(
                    "a checkpoint of a generation not yet created exists",
                ))
            }
        }
    }
    // The warm start, as a view without components: the trainer resumes from it and
    // publishes the first fit (the empty `seqs` differs from any checkpoint set).
    let object = view_object(
        record.config.name.as_str(),
        record.generation,
        &random_id()[..16],
    );
    put_object(
        &inner.conn.blobs,
        &object,
        &view::encode(None, &snap.trainer),
    )
    .await?;
    let pointer = ViewPointer {
        seqs: Vec::new(),
        samples: accs.iter().map(Accumulator::count).sum(),
        batches: snap.partitions.iter().map(|p| p.position.batches).sum(),
        rows: accs.iter().map(|a| a.count().round().max(0.0) as u64).sum(),
        rejected: 0,
        object,
        fitted: false,
        converged: false,
        node: inner.settings.node_id.clone(),
        written_ms: now_ms(),
    };
    let value =
        Bytes::from(serde_json::to_vec(&pointer).map_err(|e| ClusterError::Setup(e.to_string()))?);
    let vkey = view_key(record.config.name.as_str(), record.generation);
    match cas_put(&inner.conn.state, &vkey, value, None).await? {
        Cas::Written(_) => Ok(()),
        Cas::Conflict => Err(ClusterError::unavailable(
            "a view of a generation not yet created exists",
        )),
    }
}
