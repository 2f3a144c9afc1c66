//! [`ModelError`]: every way an operation on the live models can fail, in the model
//! layer's own words. The HTTP layer maps it to statuses and codes in one match
//! (`http/error.rs`); nothing here knows about HTTP.

use crate::pca::{BatchError, PcaError};
use crate::persistence;

use super::config::ConfigError;

/// A failed operation on the model registry or a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No model has this name.
    #[error("model `{0}` does not exist")]
    NotFound(String),
    /// A model of this name exists with another configuration.
    #[error("model `{0}` already exists with a different configuration")]
    Exists(String),
    /// A configuration field out of range (also against the server's limits).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model count or the state budget is used up.
    #[error("too many models: {0}; delete one first")]
    TooManyModels(String),
    /// A batch that does not fit the model.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// No fit has been published yet.
    #[error("model `{0}` has no fitted components yet; ingest more samples and retry")]
    NotFitted(String),
    /// An uploaded snapshot that does not decode, is inconsistent, or breaks a limit.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// The change could not be made durable (disk full, I/O error, a log unusable after
    /// an earlier failure). Nothing was acknowledged.
    #[error("storage unavailable: {0}")]
    Storage(#[from] persistence::Error),
    /// The model was not recovered whole at start-up and refuses to serve until an
    /// operator decides (see `--accept-data-loss`).
    #[error("model `{name}` is held back after recovery: {reason}")]
    Quarantined {
        /// The model.
        name: String,
        /// What recovery found missing.
        reason: String,
    },
    /// A numerical failure that a valid request cannot cause.
    #[error("numerical failure: {0}")]
    Numerics(#[from] PcaError),
}
