//! What a cluster operation can fail with, and how each failure maps onto the API's
//! status codes (the HTTP layer turns these into its `{"error":{"code","message"}}`).

use std::time::Duration;

/// A cluster operation's failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// No such model.
    #[error("model `{0}` does not exist")]
    ModelNotFound(String),
    /// A model of that name exists with a different configuration.
    #[error("model `{0}` already exists with a different configuration")]
    ModelExists(String),
    /// A request parameter out of range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A batch that does not fit the model.
    #[error("dimension mismatch: {0}")]
    DimensionMismatch(String),
    /// No fit yet.
    #[error("model `{0}` has no fitted components yet; ingest more samples and retry")]
    NotFitted(String),
    /// A snapshot that cannot be imported.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// The server's limit on models or on their accumulator state is used up.
    #[error("too many models: {0}; delete one first")]
    TooManyModels(String),
    /// A batch larger than the cluster can store as one atomic batch.
    #[error("batch of {bytes} encoded bytes exceeds the cluster limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// NATS could not take the request now (no stream leader, connection down, stream
    /// full); retrying later may succeed.
    #[error("cluster unavailable: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The NATS server is too old for cluster mode.
    #[error(
        "nats-server {found} is too old for cluster mode: version 2.11 or newer is required \
         (pinned consumers, per-message TTLs and atomic batch publish; 2.12+ for batches \
         over max_payload)"
    )]
    ServerTooOld {
        /// The version the server reported.
        found: String,
    },
    /// A configuration or server setup problem found at start-up.
    #[error("cluster setup failed: {0}")]
    Setup(String),
}

impl ClusterError {
    /// An `Unavailable` error with the default retry hint (1 s).
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            reason: reason.to_string(),
            retry_after: Duration::from_secs(1),
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::ModelNotFound(_) => 404,
            Self::ModelExists(_) | Self::NotFitted(_) | Self::TooManyModels(_) => 409,
            Self::InvalidParameter { .. } | Self::InvalidSnapshot(_) => 400,
            Self::DimensionMismatch(_) => 422,
            Self::TooLarge { .. } => 413,
            Self::Unavailable { .. } | Self::ServerTooOld { .. } | Self::Setup(_) => 503,
        }
    }

    /// Machine-readable error code, as the API's error body names it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ModelNotFound(_) => "model_not_found",
            Self::ModelExists(_) => "model_exists",
            Self::InvalidParameter { .. } => "invalid_parameter",
            Self::DimensionMismatch(_) => "dimension_mismatch",
            Self::NotFitted(_) => "not_fitted",
            Self::InvalidSnapshot(_) => "invalid_snapshot",
            Self::TooManyModels(_) => "too_many_models",
            Self::TooLarge { .. } => "body_too_large",
            Self::Unavailable { .. } | Self::ServerTooOld { .. } | Self::Setup(_) => "unavailable",
        }
    }

    /// The `Retry-After` hint for 503s.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}
