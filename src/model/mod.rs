//! Live models: the registry that names them, each model's partitions and sequencer,
//! the background trainer, the snapshot schedule and start-up recovery.
//!
//! One direction: `http` → [`Registry`] → [`Model`] → [`partition::Partition`] → {the
//! partition's log ([`crate::persistence::PartitionLog`]), its accumulator
//! ([`crate::pca::Accumulator`])}. Errors are [`ModelError`]s in the model layer's own
//! words; nothing here knows about HTTP. Blocking code: call the methods that touch the
//! disk from blocking threads.
//!
//! - [`config`]: [`ModelName`] and [`ModelConfig`], validated in one place.
//! - [`registry`]: create / import / delete under the server's limits; lookups.
//! - [`model`]: ingest through a partition, the exact merge every fit reads, snapshots.
//! - [`partition`]: one accumulator, its position and its log under one lock; the pool.
//! - [`trainer`]: the background fit loop and its pacing.
//! - [`monitor`]: a fit's control-limit moments, computed only for monitored models.
//! - [`snapshots`]: when snapshots are written, with backoff after failures.
//! - [`restore`]: rebuilding recovered models at start-up.

pub mod config;
mod error;
#[allow(
    clippy::module_inception,
    reason = "model::model is the Model type's file"
)]
pub mod model;
pub mod monitor;
pub mod partition;
pub mod registry;
pub mod restore;
pub mod snapshots;
#[cfg(test)]
mod tests;
pub mod trainer;

pub use config::{ConfigError, ModelConfig, ModelName};
pub use error::ModelError;
pub use model::{Counters, FitMonitor, IngestReceipt, Model, Published};
pub use registry::{Created, ModelLimits, Registry};
pub use snapshots::{Schedule, Snapshotter};
