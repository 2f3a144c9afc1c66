//! An accumulator's raw contents for persistence, and the checks that make restoring
//! them safe: shapes against the parts' own sizes before anything is allocated, then
//! every value, then (for imports) positive semi-definiteness.

use nalgebra::{DMatrix, DVector};

use super::{check_shape, invalid, scatter_rows, Accumulator, MAX_ABS_VALUE};
use crate::pca::linalg;
use crate::pca::PcaError;

/// The raw contents of an [`Accumulator`], for persistence. Shapes: `mean_x` n,
/// `sxx` n×n (lower triangle authoritative), `mean_y` n_y, `syx` n_y×n.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs, reason = "fields mirror Accumulator's documented fields")]
pub struct AccumulatorParts {
    pub dim: usize,
    pub target_dim: Option<usize>,
    pub half_life: Option<f64>,
    pub count: f64,
    pub mean_x: DVector<f64>,
    pub sxx: DMatrix<f64>,
    pub mean_y: Option<DVector<f64>>,
    pub syx: Option<DMatrix<f64>>,
    pub tr_syy: f64,
    pub clock: u64,
}

impl Accumulator {
    /// Rebuilds an accumulator from persisted parts. Every shape is checked against the
    /// parts' own sizes *before* anything is allocated (a header claiming a huge `dim`
    /// with small matrices allocates nothing), then every value: finite, a non-negative
    /// count, means within [`MAX_ABS_VALUE`], and a scatter diagonal that is
    /// non-negative and no larger than `count · (2·MAX_ABS_VALUE)²` (what any stream of
    /// accepted rows can produce). So a restored accumulator takes every accepted batch
    /// without its overflow guard ever firing. Positive semi-definiteness costs a
    /// factorisation and is checked separately ([`Accumulator::check_semidefinite`]).
    ///
    /// # Errors
    /// [`PcaError::DimensionMismatch`], [`PcaError::NonFinite`] or
    /// [`PcaError::InvalidParam`] naming the first inconsistent part.
    pub fn from_parts(p: AccumulatorParts) -> Result<Self, PcaError> {
        if p.dim == 0 {
            return Err(invalid("dim", "must be at least 1"));
        }
        if p.target_dim == Some(0) {
            return Err(invalid("target_dim", "must be at least 1"));
        }
        if let Some(h) = p.half_life {
            if !(h.is_finite() && h > 0.0) {
                return Err(invalid("half_life", "must be a positive number of samples"));
            }
        }
        check_shape("mean_x", p.dim, p.mean_x.len())?;
        check_shape("sxx rows", p.dim, p.sxx.nrows())?;
        check_shape("sxx columns", p.dim, p.sxx.ncols())?;
        match (p.target_dim, &p.mean_y, &p.syx) {
            (None, None, None) => {}
            (Some(m), Some(my), Some(syx)) => {
                check_shape("mean_y", m, my.len())?;
                check_shape("syx rows", m, syx.nrows())?;
                check_shape("syx columns", p.dim, syx.ncols())?;
            }
            _ => return Err(invalid("target_dim", "targets present without target_dim")),
        }
        let finite = p.count.is_finite()
            && p.tr_syy.is_finite()
            && p.mean_x.iter().chain(p.sxx.iter()).all(|v| v.is_finite())
            && p.mean_y
                .iter()
                .flat_map(|m| m.iter())
                .all(|v| v.is_finite())
            && p.syx.iter().flat_map(|m| m.iter()).all(|v| v.is_finite());
        if !finite {
            return Err(PcaError::NonFinite {
                what: "accumulator parts".into(),
            });
        }
        if p.count < 0.0 || p.tr_syy < 0.0 {
            return Err(invalid("count", "count and tr Σ_yy must not be negative"));
        }
        let max_mean = p
            .mean_x
            .iter()
            .chain(p.mean_y.iter().flat_map(|m| m.iter()))
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if max_mean > MAX_ABS_VALUE {
            return Err(invalid(
                "mean",
                &format!("a mean of magnitude {max_mean:e} exceeds {MAX_ABS_VALUE:e}"),
            ));
        }
        let max_diag = p.count * (2.0 * MAX_ABS_VALUE) * (2.0 * MAX_ABS_VALUE);
        for i in 0..p.dim {
            let d = p.sxx[(i, i)];
            if !(0.0..=max_diag).contains(&d) {
                return Err(invalid(
                    "sxx",
                    &format!(
                        "diagonal entry {i} is {d:e}, outside [0, count·(2·{MAX_ABS_VALUE:e})²] \
                         for count {}",
                        p.count
                    ),
                ));
            }
        }
        if p.tr_syy > max_diag * p.target_dim.unwrap_or(0) as f64 {
            return Err(invalid(
                "tr_syy",
                "larger than any accepted stream can produce",
            ));
        }
        let rows = scatter_rows(p.dim);
        let sxx = if rows == p.dim {
            p.sxx
        } else {
            let mut padded = DMatrix::zeros(rows, p.dim);
            padded.rows_mut(0, p.dim).copy_from(&p.sxx);
            padded
        };
        Ok(Self {
            dim: p.dim,
            target_dim: p.target_dim,
            half_life: p.half_life,
            count: p.count,
            mean_x: p.mean_x,
            sxx,
            mean_y: p.mean_y,
            syx: p.syx,
            tr_syy: p.tr_syy,
            clock: p.clock,
        })
    }

    /// Checks that the scatter `Σ_xx` is positive semi-definite up to round-off: a
    /// Cholesky factorisation of `Σ_xx + δ·I` with `δ = 1e-9 · max diag` must succeed
    /// (a real stream's scatter has eigenvalues of at least −1e-13·‖Σ‖ or so; an imported
    /// one that is indefinite would make the loss negative). Costs one n³/3
    /// factorisation.
    ///
    /// # Errors
    /// [`PcaError::NotPositiveDefinite`] when the factorisation fails.
    pub fn check_semidefinite(&self) -> Result<(), PcaError> {
        let mut s = self.sxx.rows(0, self.dim).into_owned();
        let max_diag = (0..self.dim).fold(0.0f64, |m, i| m.max(s[(i, i)]));
        let delta = 1e-9 * max_diag.max(f64::MIN_POSITIVE);
        for i in 0..self.dim {
            s[(i, i)] += delta;
        }
        if linalg::is_positive_definite(&s) {
            Ok(())
        } else {
            Err(PcaError::NotPositiveDefinite { ridge: 1e-9 })
        }
    }

    /// The raw contents, for persistence.
    pub fn to_parts(&self) -> AccumulatorParts {
        AccumulatorParts {
            dim: self.dim,
            target_dim: self.target_dim,
            half_life: self.half_life,
            count: self.count,
            mean_x: self.mean_x.clone(),
            sxx: self.sxx.rows(0, self.dim).into_owned(),
            mean_y: self.mean_y.clone(),
            syx: self.syx.clone(),
            tr_syy: self.tr_syy,
            clock: self.clock,
        }
    }
}
