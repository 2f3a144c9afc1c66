//! What a fit reports (docs/DESIGN.md §5) and how new rows are projected onto it.
//!
//! [`Components`] is an immutable, self-contained answer: the ordered components, their
//! eigenvalue estimates, error bounds and the means and maps a projection needs, so the
//! service can publish one behind an `Arc` and answer queries without touching the
//! accumulator or the optimiser.

use nalgebra::{DMatrix, DVector};

use super::linalg;
use super::PcaError;

/// The ordered principal components of one fit. `m` is the component space's
/// dimension: n for autoencoders, n_y for regression models; `r ≤ p` is the number of
/// components with a positive eigenvalue (only those are reported).
#[derive(Debug, Clone, PartialEq)]
pub struct Components {
    /// Unit-norm components as columns (m×r), ordered by eigenvalue, sign aligned
    /// with the previous fit (`a·a_prev ≥ 0`; first fit: largest-magnitude entry > 0).
    pub vectors: DMatrix<f64>,
    /// Eigenvalue estimates `ρ_i = aᵢᵀ C aᵢ · N/(N−1)` (sample covariance with divisor
    /// N−1, as scikit-learn's `explained_variance_`), in squared input units. Length r.
    pub eigenvalues: Vec<f64>,
    /// `ρ_i / tr C`: the share of total (target) variance along each component, in [0, 1].
    pub explained_variance_ratio: Vec<f64>,
    /// Upper estimate of each component's angle to the exact eigenvector, in radians:
    /// `‖C aᵢ − ρ_i aᵢ‖ / gap_i`, capped at π/2.
    pub error_bounds: Vec<f64>,
    /// Each component's gap to the nearest other Ritz value divided by its own value.
    /// A small gap means a component that is still moving statistically (docs/DESIGN.md §5).
    pub relative_gaps: Vec<f64>,
    /// The ordered loss per sample, `L/N`, at the reported components (with the
    /// optimal encoder), in squared target units.
    pub loss: f64,
    /// Every reported bound is at most the model's tolerance.
    pub converged: bool,
    /// Optimiser steps taken by the fit that produced this.
    pub steps: usize,
    /// Cost of that fit in units of one m×m · m×p product.
    pub products: f64,
    /// `μ_x` (n).
    pub mean: DVector<f64>,
    /// `μ_y` (n_y) for regression models.
    pub mean_y: Option<DVector<f64>>,
    /// Regression map `W = C_yx C_xx⁻¹` (n_y×n) for regression models.
    pub regression: Option<DMatrix<f64>>,
    /// Weighted sample count N the fit saw.
    pub samples: f64,
}

/// The result of [`Components::project`]. `rows` is the number of rows projected.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Scores (rows×k): coordinates along the first k components (whitened: divided by
    /// `√eigenvalue`).
    pub scores: DMatrix<f64>,
    /// Reconstructions (rows×m), in input units: `μ + Σ scoreᵢ aᵢ` (for regression
    /// models, the rank-k prediction of y). Present when asked for.
    pub reconstructions: Option<DMatrix<f64>>,
    /// Euclidean norm of what the first k components miss (the anomaly score): for
    /// autoencoders `‖x − reconstruction‖`; for regression models the distance between
    /// the rank-k and the full linear prediction of y. Length rows.
    pub residual_norms: Vec<f64>,
}

impl Components {
    /// Number of reported components r.
    pub fn len(&self) -> usize {
        self.vectors.ncols()
    }

    /// Whether no component is reported (too few samples or zero variance).
    pub fn is_empty(&self) -> bool {
        self.vectors.ncols() == 0
    }

    /// Largest error bound in radians (0 when nothing is reported).
    pub fn max_error_bound(&self) -> f64 {
        self.error_bounds.iter().copied().fold(0.0, f64::max)
    }

    /// Projects `x` (row-major, rows×n) onto the first `k` components.
    ///
    /// # Errors
    /// [`PcaError::DimensionMismatch`] for rows of the wrong length,
    /// [`PcaError::InvalidParam`] for `k` = 0 or above the number of reported
    /// components, [`PcaError::NonFinite`] for NaN/∞ input, [`PcaError::EmptyBatch`].
    pub fn project(
        &self,
        x: &[f64],
        k: usize,
        whiten: bool,
        reconstruct: bool,
    ) -> Result<Projection, PcaError> {
        let n = self.mean.len();
        if x.is_empty() {
            return Err(PcaError::EmptyBatch);
        }
        if !x.len().is_multiple_of(n) {
            return Err(PcaError::DimensionMismatch {
                what: "x row length",
                expected: n,
                got: x.len() % n,
            });
        }
        if k == 0 || k > self.len() {
            return Err(PcaError::InvalidParam {
                name: "k",
                reason: format!(
                    "must be between 1 and {} (the reported components)",
                    self.len()
                ),
            });
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(PcaError::NonFinite {
                what: format!("x row {}, column {}", i / n, i % n),
            });
        }
        let rows = x.len() / n;
        // Centred inputs as an n×rows column-major matrix (each row of x is a column).
        let mut xc = DMatrix::from_column_slice(n, rows, x);
        for mut col in xc.column_iter_mut() {
            col -= &self.mean;
        }
        // In component space: x − μ itself, or the full linear prediction W(x − μ).
        let full = match &self.regression {
            None => xc,
            Some(w) => linalg::mul(w, false, &xc, false),
        };
        // The first k components (m×k), read in place.
        let scores_t = linalg::mul_leading_cols(&self.vectors, k, true, &full); // k×rows
        let recon_t = linalg::mul_leading_cols(&self.vectors, k, false, &scores_t); // m×rows, centred
        let residual_norms = (0..rows)
            .map(|j| (full.column(j) - recon_t.column(j)).norm())
            .collect();
        let reconstructions = reconstruct.then(|| {
            let centre = self.mean_y.as_ref().unwrap_or(&self.mean);
            let mut r = recon_t.clone();
            for mut col in r.column_iter_mut() {
                col += centre;
            }
            r.transpose()
        });
        let mut scores = scores_t.transpose();
        if whiten {
            for (i, mut col) in scores.column_iter_mut().enumerate() {
                col /= self.eigenvalues[i].sqrt();
            }
        }
        Ok(Projection {
            scores,
            reconstructions,
            residual_norms,
        })
    }
}

/// Largest principal angle, in radians, between the column spans of `a` (m×r) and `b`
/// (m×s), both with orthonormal columns: `asin ‖B − A(AᵀB)‖₂`, the largest angle by
/// which a direction of span(B) leaves span(A). Accurate for small angles (no `acos`
/// of a cosine near 1). Returns π/2 when the shapes' row counts differ or either is
/// empty.
pub fn max_principal_angle(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    if a.nrows() != b.nrows() || a.ncols() == 0 || b.ncols() == 0 {
        return std::f64::consts::FRAC_PI_2;
    }
    let overlap = linalg::mul(a, true, b, false);
    let outside = b - linalg::mul(a, false, &overlap, false);
    let sin = outside.singular_values().max();
    sin.clamp(0.0, 1.0).asin()
}

#[cfg(test)]
mod angle_tests {
    use super::*;

    #[test]
    fn principal_angle_of_a_rotated_plane_is_the_rotation_angle() {
        let a = DMatrix::from_column_slice(3, 2, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let t: f64 = 0.3;
        let b = DMatrix::from_column_slice(3, 2, &[1.0, 0.0, 0.0, 0.0, t.cos(), t.sin()]);
        assert!((max_principal_angle(&a, &b) - t).abs() < 1e-14);
        // the same plane under another basis: no angle
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let c = DMatrix::from_column_slice(3, 2, &[s, s, 0.0, s, -s, 0.0]);
        assert!(max_principal_angle(&a, &c) < 1e-15);
        let tiny: f64 = 1e-9;
        let d = DMatrix::from_column_slice(3, 2, &[1.0, 0.0, 0.0, 0.0, tiny.cos(), tiny.sin()]);
        assert!((max_principal_angle(&a, &d) - tiny).abs() < 1e-18);
    }
}
