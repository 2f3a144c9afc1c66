//! The fit target: the symmetric matrix whose ordered eigenvectors the loss finds, built
//! from an accumulator's per-sample moments.

use nalgebra::{DMatrix, DVector};

use super::Accumulator;
use crate::pca::linalg;
use crate::pca::PcaError;

/// The symmetric matrix whose ordered eigenvectors the loss finds, with what a
/// projection needs (docs/DESIGN.md §2). All moments are per sample (scatters divided by N).
#[derive(Debug, Clone)]
pub struct FitTarget {
    /// `C = Σ_xx/N` (n×n) for autoencoders; `C_yx C_xx⁻¹ C_xy` (n_y×n_y) for regression.
    pub matrix: DMatrix<f64>,
    /// `tr C_yy`: the loss's constant term (per sample).
    pub trace_yy: f64,
    /// Regression map `W = C_yx C_xx⁻¹` (n_y×n); `None` for autoencoders.
    pub regression: Option<DMatrix<f64>>,
    /// `μ_x` (n).
    pub mean_x: DVector<f64>,
    /// `μ_y` (n_y) for regression models.
    pub mean_y: Option<DVector<f64>>,
    /// Weighted sample count `N`.
    pub count: f64,
    /// `tr C_xx`, the total variance of the inputs (per sample).
    pub trace_xx: f64,
}

impl Accumulator {
    /// Per-sample moments and the matrix the optimiser targets (docs/DESIGN.md §2):
    /// `C = Σ_xx/N`, or for regression `C_yx C_xx⁻¹ C_xy`, by one Cholesky of
    /// `C_xx + ridge·I`. The ridge starts at 1e-12·tr(C_xx)/n when `C_xx` is singular
    /// and grows tenfold until the factorisation succeeds.
    ///
    /// # Errors
    /// [`PcaError::NotEnoughSamples`] with no samples; [`PcaError::NotPositiveDefinite`]
    /// if no ridge up to 1e-2 relative makes `C_xx` factorisable.
    pub fn target(&self) -> Result<FitTarget, PcaError> {
        self.clone().into_target()
    }

    /// [`Accumulator::target`] for an accumulator the caller no longer needs: the
    /// scatter's own storage becomes `C` (symmetrised and scaled in place), saving one
    /// n×n copy. The service's trainer fits a copy taken under the ingest lock, so it
    /// uses this.
    ///
    /// # Errors
    /// As [`Accumulator::target`].
    pub fn into_target(self) -> Result<FitTarget, PcaError> {
        if self.count <= 0.0 {
            return Err(PcaError::NotEnoughSamples {
                have: self.count,
                need: 1,
            });
        }
        let pad = self.sxx.nrows() - self.dim;
        let mut cxx = self.sxx.remove_rows(self.dim, pad);
        linalg::symmetrize_from_lower(&mut cxx);
        cxx /= self.count;
        let trace_xx = cxx.trace();
        let (matrix, regression, trace_yy) = match &self.syx {
            None => (cxx, None, trace_xx),
            Some(syx) => {
                let cyx = syx / self.count;
                let cxy = cyx.transpose();
                let n = self.dim;
                let base = (trace_xx / n as f64).max(f64::MIN_POSITIVE);
                let mut ridge = 0.0;
                let wt = loop {
                    let mut a = cxx.clone();
                    for i in 0..n {
                        a[(i, i)] += ridge * base;
                    }
                    let mut rhs = cxy.clone();
                    if linalg::cholesky_solve_in_place(&a, &mut rhs) {
                        break rhs;
                    }
                    ridge = if ridge == 0.0 { 1e-12 } else { ridge * 10.0 };
                    if ridge > 1e-2 {
                        return Err(PcaError::NotPositiveDefinite { ridge });
                    }
                };
                let mut t = linalg::mul(&cyx, false, &wt, false);
                t = (&t + t.transpose()) * 0.5;
                (t, Some(wt.transpose()), self.tr_syy / self.count)
            }
        };
        Ok(FitTarget {
            matrix,
            trace_yy,
            regression,
            mean_x: self.mean_x,
            mean_y: self.mean_y,
            count: self.count,
            trace_xx,
        })
    }
}
