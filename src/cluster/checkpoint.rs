//! Checkpoints of one partition: the accumulator in the object store (the snapshot
//! codec, so a checkpoint is a valid single-partition snapshot), and a KV pointer to it
//! written by compare-and-set as the commit point. A checkpoint object that no pointer
//! names is garbage, never state.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::pca::{Accumulator, TrainerState};
use crate::persistence::{snapshot, Snapshot};

use super::catalog::{now_ms, ModelRecord};
use super::connect::Connection;
use super::error::ClusterError;
use super::names::{checkpoint_key, checkpoint_object, random_id};
use super::store::{cas_put, get_object, leader_get, put_object, Cas};

/// The commit record of a partition's newest checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    /// Stream sequence of the last message folded into the accumulator (0: none).
    pub seq: u64,
    /// Every message of this partition with a stream sequence ≤ `covered` is folded
    /// (`covered ≥ seq`; larger when the fold saw the stream move on without this
    /// partition). Trimming keeps everything above the smallest `covered`.
    pub covered: u64,
    /// Batches folded.
    pub batches: u64,
    /// Rows folded.
    pub rows: u64,
    /// Batches the accumulator refused at fold time (a sum that would overflow).
    pub rejected: u64,
    /// The checkpoint object; `None` while nothing is folded.
    pub object: Option<String>,
    /// The node that wrote it.
    pub node: String,
    /// When, ms since the Unix epoch.
    pub written_ms: u64,
}

/// Reads partition `k`'s pointer from the bucket leader.
///
/// # Errors
/// [`ClusterError::Unavailable`].
pub async fn read_pointer(
    conn: &Connection,
    record: &ModelRecord,
    k: u32,
) -> Result<Option<(CheckpointPointer, u64)>, ClusterError> {
    let key = checkpoint_key(&record.config.name, record.generation, k);
    let Some(v) = leader_get(&conn.state, &key).await? else {
        return Ok(None);
    };
    let p = serde_json::from_slice(&v.value)
        .map_err(|e| ClusterError::unavailable(format!("checkpoint pointer {key}: {e}")))?;
    Ok(Some((p, v.revision)))
}

/// An empty accumulator of the model's shape.
///
/// # Errors
/// Only for a configuration the catalog should have refused.
pub fn empty(record: &ModelRecord) -> Result<Accumulator, ClusterError> {
    let c = &record.config;
    Accumulator::new(c.dim, c.target_dim, c.half_life)
        .map_err(|e| ClusterError::Setup(e.to_string()))
}

/// Loads the accumulator a pointer names (empty when it names none), checking that it
/// belongs to this model.
///
/// # Errors
/// [`ClusterError::Unavailable`] when the object cannot be read or does not decode.
pub async fn load(
    conn: &Connection,
    record: &ModelRecord,
    pointer: &CheckpointPointer,
) -> Result<Accumulator, ClusterError> {
    let Some(object) = &pointer.object else {
        return empty(record);
    };
    let bytes = get_object(&conn.blobs, object, Duration::from_secs(5)).await?;
    let config = record.config.clone();
    tokio::task::spawn_blocking(move || {
        let s = snapshot::decode(&bytes)
            .map_err(|e| ClusterError::unavailable(format!("checkpoint {}: {e}", config.name)))?;
        if s.config != config {
            return Err(ClusterError::unavailable("checkpoint of another model"));
        }
        Accumulator::from_parts(s.accumulator)
            .map_err(|e| ClusterError::unavailable(format!("checkpoint accumulator: {e}")))
    })
    .await
    .map_err(|e| ClusterError::unavailable(e.to_string()))?
}

/// Encodes a partition accumulator as a snapshot (`sequence` = last folded message).
///
/// # Errors
/// Only if encoding to memory fails.
pub fn encode(
    record: &ModelRecord,
    acc: &Accumulator,
    seq: u64,
    batches: u64,
) -> Result<Vec<u8>, ClusterError> {
    snapshot::encode(&Snapshot {
        config: record.config.clone(),
        sequence: seq,
        batches,
        accumulator: acc.to_parts(),
        trainer: TrainerState::default(),
    })
    .map_err(|e| ClusterError::Setup(e.to_string()))
}

/// Writes a checkpoint object from already encoded bytes and commits `pointer` to it by
/// compare-and-set against `expected` (`None`: no pointer yet). On a conflict the
/// object is deleted again and [`Cas::Conflict`] returned: another node owns the
/// partition now.
///
/// # Errors
/// [`ClusterError::Unavailable`].
pub async fn commit(
    conn: &Connection,
    record: &ModelRecord,
    k: u32,
    encoded: Option<Vec<u8>>,
    mut pointer: CheckpointPointer,
    expected: Option<u64>,
) -> Result<(Cas, CheckpointPointer), ClusterError> {
    let name = &record.config.name;
    if let Some(bytes) = encoded {
        let object = checkpoint_object(name, record.generation, k, pointer.seq, &random_id()[..12]);
        put_object(&conn.blobs, &object, &bytes).await?;
        pointer.object = Some(object);
    }
    pointer.written_ms = now_ms();
    let key = checkpoint_key(name, record.generation, k);
    let value =
        Bytes::from(serde_json::to_vec(&pointer).map_err(|e| ClusterError::Setup(e.to_string()))?);
    let cas = cas_put(&conn.state, &key, value, expected).await?;
    Ok((cas, pointer))
}
