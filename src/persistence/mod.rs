//! Durable storage of models: a write-ahead log of accepted batches, versioned
//! snapshots of the whole model state, and the data directory that holds them.
//!
//! Owns every byte streampca writes to disk and the crash-safety rules around them
//! (temp file + fsync + rename + directory fsync; checksummed records and snapshots;
//! recovery that never silently discards a corrupt file). It serialises the plain data
//! types [`crate::pca`] exposes ([`AccumulatorParts`](crate::pca::AccumulatorParts),
//! [`TrainerState`](crate::pca::TrainerState)) and knows nothing of HTTP, async or
//! metrics; it is blocking code, meant to run on blocking threads.
//!
//! - [`wal`]: per-model append-only log with group commit and torn-tail recovery.
//! - [`snapshot`]: the `SPCASNAP` format, atomic writes, newest-valid loading, pruning.
//! - [`store`]: `DATA_DIR/models/{name}/` layout, durable create/delete, recovery.
//! - [`config`]: [`ModelConfig`], the creation settings stored with a model.
//! - [`error`]: [`Error`], which keeps the path next to every I/O error.
//!
//! How the service uses it:
//!
//! 1. Startup: [`Store::open`] → for each [`RecoveredModel`], rebuild the accumulator
//!    with `Accumulator::from_parts` from the snapshot (or empty), apply `replay` in
//!    order with [`WalRecord::apply_to`], resume the trainer with
//!    `Trainer::with_state`, and continue sequences from
//!    [`RecoveredModel::last_sequence`]. Report `wal_tail`, `quarantined` and
//!    `sequence_gap` if present.
//! 2. Ingest, per batch: check shapes and finiteness first (so applying cannot fail
//!    after logging); then under the model lock take `sequence = last + 1`,
//!    [`Wal::write`], apply, set `last = sequence`, unlock; then [`Wal::wait`] (one
//!    fsync shared by concurrent producers) and acknowledge. If `write` fails nothing
//!    was logged: answer 5xx and do not advance `last`. If `wait` fails the log is
//!    poisoned: answer 5xx and stop accepting batches for that model until restart.
//! 3. Periodically (and at shutdown): build a [`Snapshot`] under the lock (cloning the
//!    parts is a memcpy), then [`ModelStore::write_snapshot`] outside it; it prunes old
//!    snapshots and cuts the log.
//! 4. Export: [`snapshot::encode`]; import: [`snapshot::decode`] (validates everything
//!    before anything is replaced).

pub mod config;
pub mod error;
pub mod snapshot;
pub mod store;
pub mod wal;

mod codec;
mod fsutil;

pub use config::ModelConfig;
pub use error::{Error, FormatError, Result};
pub use snapshot::{LoadedSnapshot, Snapshot};
pub use store::{ModelStore, RecoveredModel, SequenceGap, SnapshotWritten, Store};
pub use wal::{
    BatchData, EncodedRecord, Recovery, SyncMode, TailProblem, TailReason, Ticket, Wal, WalRecord,
};
