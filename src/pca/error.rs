//! Errors of the numerical core. Domain words with the numbers included, so a caller
//! (the HTTP layer) can turn each one into a precise message without re-deriving it.

use thiserror::Error;

/// Everything that can go wrong in [`crate::pca`].
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum PcaError {
    /// A row, batch or matrix has the wrong length or shape.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// What was being checked, e.g. `"x row length"`.
        what: &'static str,
        /// The expected length.
        expected: usize,
        /// The length that was supplied.
        got: usize,
    },
    /// A value is NaN or infinite, or a batch would make the accumulators so.
    #[error("non-finite value in {what}")]
    NonFinite {
        /// Where the value was found, e.g. `"x row 3, column 7"`.
        what: String,
    },
    /// A batch with no rows.
    #[error("empty batch: at least one row is required")]
    EmptyBatch,
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter's name as users spell it.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// `Σ_xx` could not be factorised even with the largest ridge tried.
    #[error("Σ_xx is not positive definite, even with a ridge of {ridge:e}")]
    NotPositiveDefinite {
        /// The last relative ridge tried.
        ridge: f64,
    },
    /// Two accumulators that cannot be merged (different shapes or settings).
    #[error("incompatible accumulators: {reason}")]
    Incompatible {
        /// What differs.
        reason: String,
    },
    /// Too few samples to fit yet.
    #[error("not enough samples to fit: have {have}, need at least {need}")]
    NotEnoughSamples {
        /// Samples accumulated (weighted count under forgetting).
        have: f64,
        /// Samples required.
        need: usize,
    },
    /// The fit was cancelled (the model was deleted or the service is stopping).
    #[error("fit cancelled")]
    Cancelled,
}
