//! Checkpoints of one partition: the accumulator in the object store, and a KV pointer
//! to it written by compare-and-set as the commit point. A checkpoint object that no
//! pointer names is garbage, never state.
//!
//! The object is the snapshot codec's format (version 2, `SPCASNAP`, checksummed): a
//! one-partition snapshot of the model (its configuration with `partitions = 1`), the
//! partition's [`Position`] and accumulator parts, and an empty trainer state. So every
//! checkpoint is also a valid snapshot an embedded server can import as a
//! one-partition model, and the format's version and CRC cover it.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::pca::{Accumulator, TrainerState};
use crate::persistence::{snapshot, PartitionState, Position, Snapshot};

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
    /// Model-wide sequence of the last batch folded (`base_sequence + seq`, or the
    /// imported partition's own sequence before any fold).
    #[serde(default)]
    pub sequence: u64,
    /// Batches this partition has taken, folded or refused (the snapshot format's
    /// `local` index; imported partitions start from theirs).
    #[serde(default)]
    pub local: u64,
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
    let key = checkpoint_key(record.config.name.as_str(), record.generation, k);
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

impl CheckpointPointer {
    /// The partition's position in the snapshot format's terms.
    pub fn position(&self) -> Position {
        Position {
            sequence: self.sequence,
            local: self.local,
            batches: self.batches,
        }
    }
}

/// The model's configuration as a one-partition checkpoint carries it.
fn checkpoint_config(record: &ModelRecord) -> crate::model::ModelConfig {
    crate::model::ModelConfig {
        partitions: 1,
        ..record.config.clone()
    }
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
    let rec = record.clone();
    tokio::task::spawn_blocking(move || decode(&rec, &bytes))
        .await
        .map_err(|e| ClusterError::unavailable(e.to_string()))?
}

/// Decodes a checkpoint object of `record`'s model.
///
/// # Errors
/// [`ClusterError::Unavailable`] for bytes that do not decode, belong to another
/// model, or hold an inconsistent accumulator.
pub fn decode(record: &ModelRecord, bytes: &[u8]) -> Result<Accumulator, ClusterError> {
    let name = &record.config.name;
    let (s, accs) = snapshot::decode_checked(bytes, |_| Ok(()))
        .map_err(|e| ClusterError::unavailable(format!("checkpoint of {name}: {e}")))?;
    if s.config != checkpoint_config(record) {
        return Err(ClusterError::unavailable(format!(
            "a checkpoint of another model in {name}'s place"
        )));
    }
    accs.into_iter()
        .next()
        .ok_or_else(|| ClusterError::unavailable("a checkpoint without a partition"))
}

/// Encodes a partition's accumulator at `position` as a checkpoint object.
///
/// # Errors
/// Only if encoding to memory fails.
pub fn encode(
    record: &ModelRecord,
    acc: &Accumulator,
    position: Position,
) -> Result<Vec<u8>, ClusterError> {
    snapshot::encode(&Snapshot {
        config: checkpoint_config(record),
        partitions: vec![PartitionState {
            position,
            accumulator: acc.to_parts(),
        }],
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
    let name = record.config.name.as_str();
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::model::{ModelConfig, ModelName};
    use crate::pca::{Batch, BatchData, OptimizerKind, Shape};

    fn record(name: &str, partitions: usize) -> ModelRecord {
        ModelRecord {
            config: ModelConfig {
                name: ModelName::new(name).unwrap(),
                dim: 3,
                components: 2,
                target_dim: None,
                half_life: None,
                optimizer: OptimizerKind::Subspace,
                tolerance: 1e-6,
                partitions,
                standardize: false,
                alpha: crate::model::config::DEFAULT_ALPHA,
            },
            generation: 7,
            base_sequence: 0,
            created_ms: 0,
        }
    }

    #[test]
    fn a_checkpoint_is_a_one_partition_snapshot_that_round_trips_bit_for_bit() {
        let rec = record("m", 4);
        let mut acc = empty(&rec).unwrap();
        let x = vec![1.0, 2.0, 3.5, -1.0, 0.25, 8.0, 4.0, 4.0, -2.0];
        let batch = Batch::new(Shape::inputs(3), BatchData::F64 { x, y: None }).unwrap();
        acc.fold(&batch, 3, &mut Vec::new()).unwrap();
        let position = Position {
            sequence: 9,
            local: 2,
            batches: 1,
        };
        let bytes = encode(&rec, &acc, position).unwrap();
        // The snapshot codec reads it as a one-partition model at that position.
        let snap = snapshot::decode(&bytes).unwrap();
        assert_eq!(snap.config.partitions, 1);
        assert_eq!(snap.positions(), vec![position]);
        assert_eq!(decode(&rec, &bytes).unwrap(), acc);
        // Another model's (or another shape's) checkpoint is refused, as is damage.
        let e = decode(&record("other", 4), &bytes).unwrap_err();
        assert!(e.to_string().contains("another model"), "{e}");
        let mut bad = bytes.clone();
        bad[40] ^= 1;
        let e = decode(&rec, &bad).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
