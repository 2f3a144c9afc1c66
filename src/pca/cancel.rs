//! [`Cancel`]: the flag that stops a running fit at its next step (a model deleted, the
//! service stopping), so nobody waits for a fit whose result will be thrown away.

use std::sync::atomic::{AtomicBool, Ordering};

use super::PcaError;

/// A cancellation flag. [`crate::pca::Trainer::fit_until`] checks it once per optimiser
/// step and between the large kernels inside a step (orthonormalisation, the n×n
/// products, the Rayleigh–Ritz eigensolve), and returns [`PcaError::Cancelled`] once
/// it is set. Setting it is permanent.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    /// A flag that is not set.
    pub const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Sets the flag: running and later fits stop at their next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(PcaError::Cancelled)` once the flag is set.
    ///
    /// # Errors
    /// [`PcaError::Cancelled`].
    pub fn check(&self) -> Result<(), PcaError> {
        if self.is_cancelled() {
            Err(PcaError::Cancelled)
        } else {
            Ok(())
        }
    }
}
