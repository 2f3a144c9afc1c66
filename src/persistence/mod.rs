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
//!    from the snapshot (or empty), apply `replay` in order, resume the trainer.
//! 2. Ingest, per batch: under the model lock assign `sequence = last + 1`,
//!    [`Wal::write`], apply to the accumulator, unlock; then [`Wal::wait`] (shared
//!    fsync) and acknowledge.
//! 3. Periodically: clone a [`Snapshot`] under the lock, then
//!    [`ModelStore::write_snapshot`] outside it (prunes and cuts the log).

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
pub use wal::{BatchData, Recovery, SyncMode, TailProblem, TailReason, Ticket, Wal, WalRecord};
