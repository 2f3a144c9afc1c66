//! Correlation PCA (model setting `"standardize": true`, `docs/DESIGN.md` §10.6): each
//! variable scaled by its running standard deviation, taken exactly from the
//! accumulator's scatter, so variables in mixed units weigh alike.
//!
//! Scale `s_j = √(Σ_jj/(N−1))` (the sample standard deviation). The fit then targets
//! `D⁻¹ (Σ/N) D⁻¹` with `D = diag(s)`, whose reported eigenvalues (×N/(N−1), as for any
//! fit) are those of the correlation matrix (unit diagonal). Query rows are turned into
//! z-scores `z_j = (x_j − μ_j)/s_j`, so the standardised target has mean 0 and
//! projections, limits and contributions all live in the z space.
//!
//! Constant variables: `s_j ≤ 1e-12 · max_i s_i` (including `s_j = 0`, and every
//! variable when all are constant) marks variable j constant. Its z-score is fixed at 0
//! for every row, in the target (its row and column of the correlation matrix are 0)
//! and in queries: it contributes nothing to scores, T², SPE or contributions, and
//! never divides by zero. A later change in such a variable is therefore invisible to
//! the model; [`Standardizer::constant_columns`] lists them so the service can report
//! them.

use nalgebra::{DMatrix, DVector};

use super::accumulator::FitTarget;
use super::PcaError;

/// `s_j ≤ CONSTANT_RELATIVE · max_i s_i` marks variable j constant.
pub const CONSTANT_RELATIVE: f64 = 1e-12;

/// The per-variable affine map into the standardised space of one fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// `μ` (n), input units.
    mean: DVector<f64>,
    /// `s` (n), input units; 0 for constant variables.
    scale: DVector<f64>,
    /// Indices of constant variables, ascending.
    constant: Vec<usize>,
}

impl Standardizer {
    /// Scale factors from an autoencoder target (`C = Σ/N`, N > 1).
    ///
    /// # Errors
    /// [`PcaError::InvalidParam`] for regression targets (standardisation applies to
    /// autoencoder models), [`PcaError::NotEnoughSamples`] with N ≤ 1.
    pub fn from_target(target: &FitTarget) -> Result<Self, PcaError> {
        if target.regression.is_some() {
            return Err(PcaError::InvalidParam {
                name: "standardize",
                reason: "applies to autoencoder models only (this model has targets)".into(),
            });
        }
        let n = target.count;
        if n.is_nan() || n <= 1.0 {
            return Err(PcaError::NotEnoughSamples { have: n, need: 2 });
        }
        let f = n / (n - 1.0);
        let m = target.matrix.nrows();
        let mut scale = DVector::from_fn(m, |j, _| (target.matrix[(j, j)].max(0.0) * f).sqrt());
        let top = scale.max();
        let constant: Vec<usize> = (0..m)
            .filter(|&j| scale[j] <= CONSTANT_RELATIVE * top)
            .collect();
        for &j in &constant {
            scale[j] = 0.0;
        }
        Ok(Self {
            mean: target.mean_x.clone(),
            scale,
            constant,
        })
    }

    /// The means `μ` (n) in input units.
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// The scale factors `s` (n) in input units; 0 marks a constant variable.
    pub fn scale(&self) -> &DVector<f64> {
        &self.scale
    }

    /// Indices (0-based, ascending) of the variables treated as constant.
    pub fn constant_columns(&self) -> &[usize] {
        &self.constant
    }

    /// The correlation target: `D⁻¹ C D⁻¹` with constant rows and columns 0, mean 0,
    /// traces of the new matrix; the count is kept. Consumes `target` and reuses its
    /// n×n storage.
    ///
    /// # Errors
    /// [`PcaError::DimensionMismatch`] if the target is not the one this was built from
    /// (different dimension); [`PcaError::InvalidParam`] for a regression target.
    pub fn standardize_target(&self, mut target: FitTarget) -> Result<FitTarget, PcaError> {
        let m = self.scale.len();
        if target.regression.is_some() {
            return Err(PcaError::InvalidParam {
                name: "standardize",
                reason: "applies to autoencoder models only (this model has targets)".into(),
            });
        }
        if target.matrix.nrows() != m {
            return Err(PcaError::DimensionMismatch {
                what: "target dimension (the standardizer's)",
                expected: m,
                got: target.matrix.nrows(),
            });
        }
        let inv = self.inverse_scale();
        for j in 0..m {
            for i in 0..m {
                target.matrix[(i, j)] *= inv[i] * inv[j];
            }
        }
        let trace = target.matrix.trace();
        target.mean_x = DVector::zeros(m);
        target.trace_xx = trace;
        target.trace_yy = trace;
        Ok(target)
    }

    /// z-scores of rows (row-major, rows×n in, the same shape out):
    /// `(x_j − μ_j)/s_j`, and 0 for constant variables.
    ///
    /// # Errors
    /// [`PcaError::EmptyBatch`], [`PcaError::DimensionMismatch`] for rows of the wrong
    /// length, [`PcaError::NonFinite`] for NaN/∞ input (by row and column).
    pub fn scale_rows(&self, x: &[f64]) -> Result<Vec<f64>, PcaError> {
        let n = self.scale.len();
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
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(PcaError::NonFinite {
                what: format!("x row {}, column {}", i / n, i % n),
            });
        }
        let inv = self.inverse_scale();
        Ok(x.chunks_exact(n)
            .flat_map(|row| {
                row.iter()
                    .zip(self.mean.iter().zip(inv.iter()))
                    .map(|(v, (m, s))| (v - m) * s)
            })
            .collect())
    }

    /// Back from z space to input units, for reconstructions (rows×n in and out):
    /// `μ_j + s_j z_j` (constant variables: `μ_j`).
    pub fn unscale_rows(&self, z: &DMatrix<f64>) -> DMatrix<f64> {
        DMatrix::from_fn(z.nrows(), z.ncols(), |r, j| {
            self.mean[j] + self.scale[j] * z[(r, j)]
        })
    }

    /// `1/s_j`, and 0 for constant variables (their z-score is fixed at 0).
    fn inverse_scale(&self) -> DVector<f64> {
        self.scale.map(|s| if s > 0.0 { 1.0 / s } else { 0.0 })
    }
}

/// The correlation-PCA target of an autoencoder target, with the map of query rows
/// into its space: [`Standardizer::from_target`] then
/// [`Standardizer::standardize_target`].
///
/// # Errors
/// As [`Standardizer::from_target`].
pub fn correlation_target(target: FitTarget) -> Result<(FitTarget, Standardizer), PcaError> {
    let s = Standardizer::from_target(&target)?;
    let t = s.standardize_target(target)?;
    Ok((t, s))
}
