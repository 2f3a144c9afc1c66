//! Durable storage of models: a write-ahead log per partition, versioned snapshots of a
//! model's whole state, and the data directory that holds them.
//!
//! Owns every byte streampca writes to disk and the crash-safety rules around them
//! (temporary file + fsync + rename + directory fsync; checksummed records, headers and
//! snapshots; recovery that never silently discards a corrupt file). It serialises the
//! plain data types [`crate::pca`] exposes (`Batch`, `AccumulatorParts`, `TrainerState`)
//! and the model's [`ModelConfig`](crate::model::config::ModelConfig), and knows
//! nothing of HTTP, async or metrics; it is blocking code, meant for blocking threads.
//!
//! - [`partition_log`]: the [`PartitionLog`] interface a partition writes through.
//! - [`log`]: the local implementation, one file per partition, with group commit.
//! - [`record`]: the log record format; [`recovery`]: reading a log back after a crash.
//! - [`snapshot`]: the `SPCASNAP` format, atomic writes, newest-valid loading, pruning.
//! - [`store`]: the `DATA_DIR/models/{name}/` layout, durable create / import /
//!   delete and start-up recovery; [`migrate`]: the upgrade from release 0.1.
//! - [`error`]: [`Error`], which keeps the path next to every I/O error.

pub mod error;
pub mod log;
pub mod migrate;
pub mod partition_log;
pub mod record;
pub mod recovery;
pub mod snapshot;
pub mod store;

mod codec;
mod fsutil;

pub use error::{Error, FormatError, Result};
pub use log::{LogRecovery, SyncMode, Wal};
pub use partition_log::{PartitionLog, Ticket};
pub use record::{EncodedRecord, LogRecord, Stamp};
pub use recovery::{TailProblem, TailReason};
pub use snapshot::{LoadedSnapshot, PartitionState, Position, Snapshot};
pub use store::{HeldModel, ModelFiles, RecoveredModel, SnapshotWritten, Store};
