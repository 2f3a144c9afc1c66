//! What process monitoring needs from a published fit, and when it is computed.
//!
//! The control-limit moments ([`LimitMoments::new`]: one symmetric eigendecomposition of
//! the n×n deflated target, O(n³), about 25 ms at n = 784 and 2.5 s at n = 4096) are
//! needed only by requests that use control limits: `GET /limits`, a projection with
//! `alpha`, `POST /samples?score=true`. A model becomes *monitored* the first time such a
//! request reads the moments of one of its fits; from then on its trainer computes them
//! with every fit, off the request path, as before. Until then the trainer publishes the
//! fit with its target kept aside, and the first request that needs the moments computes
//! them once, from that same target and components (so the answer is bit-identical to an
//! eager computation), and caches them in the fit.
//!
//! Memory: an unmonitored fit keeps its target (n² float64: 4.9 MB at n = 784) until
//! the moments are computed or the fit is replaced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::pca::{Components, FitTarget, LimitMoments, Standardizer};

use super::partition::lock;

/// What process monitoring needs from a fit.
#[derive(Debug)]
pub struct FitMonitor {
    /// The moments of the variance the fit leaves, for control limits at any k, once
    /// computed; `Some(None)` when they cannot be formed (a fit with no defined
    /// component).
    moments: OnceLock<Option<LimitMoments>>,
    /// The target the fit was computed from, until its moments are computed.
    target: Mutex<Option<FitTarget>>,
    /// The model's monitored flag: set when these moments are read.
    monitored: Arc<AtomicBool>,
    /// For a standardised model, the per-variable means and standard deviations the fit
    /// was scaled by: queries are scaled by them before they are projected.
    pub standardizer: Option<Standardizer>,
}

impl FitMonitor {
    /// A fit whose moments were computed with it (`None`: they cannot be formed).
    pub fn computed(
        moments: Option<LimitMoments>,
        standardizer: Option<Standardizer>,
        monitored: Arc<AtomicBool>,
    ) -> Self {
        Self {
            moments: OnceLock::from(moments),
            target: Mutex::new(None),
            monitored,
            standardizer,
        }
    }

    /// A fit of `target` whose moments are computed when first read.
    pub fn deferred(
        target: FitTarget,
        standardizer: Option<Standardizer>,
        monitored: Arc<AtomicBool>,
    ) -> Self {
        Self {
            moments: OnceLock::new(),
            target: Mutex::new(Some(target)),
            monitored,
            standardizer,
        }
    }

    /// The moments of this fit (`components` is the fit's), computed now if they were
    /// deferred, and marks the model monitored. Blocking: up to one O(n³)
    /// eigendecomposition (call it from a blocking thread unless
    /// [`FitMonitor::is_computed`]); concurrent callers wait for the one computation.
    pub fn moments(&self, components: &Components) -> Option<&LimitMoments> {
        self.monitored.store(true, Ordering::Release);
        self.moments
            .get_or_init(|| {
                let target = lock(&self.target).take()?;
                compute(&target, components)
            })
            .as_ref()
    }

    /// Whether the moments are computed (or known not to exist): reading them is free.
    pub fn is_computed(&self) -> bool {
        self.moments.get().is_some()
    }
}

/// The moments of `components` fitted to `target`, `None` (logged) when they cannot be
/// formed.
pub(crate) fn compute(target: &FitTarget, components: &Components) -> Option<LimitMoments> {
    match LimitMoments::new(target, components) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!(error = %e, "no control limits for this fit");
            None
        }
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
