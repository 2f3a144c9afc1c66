//! Streaming, mergeable second moments (docs/DESIGN.md §2).
//!
//! Owns the float64 count `N`, the means `μ_x` (n) and `μ_y` (n_y), the centred scatter
//! `Σ_xx` (n×n, lower triangle authoritative), the cross scatter `Σ_yx` (n_y×n) and
//! `tr Σ_yy`, and the rules that change them: a batch update and a shard merge, both by
//! Chan et al.'s pairwise rule, with optional exponential forgetting. It never touches
//! the optimiser or any I/O.
//!
//! Why Chan's rule: the naive `Σ xxᵀ − N μμᵀ` loses all precision on data with a mean
//! offset (it cancels N‖μ‖² against Nσ², docs/DESIGN.md §2); merging centred
//! scatters keeps it at round-off.

use nalgebra::{DMatrix, DVector};

use super::batch::{Batch, BatchData, MAX_ABS_VALUE};

mod parts;
mod target;

use super::linalg;
use super::PcaError;
pub use parts::AccumulatorParts;
pub use target::FitTarget;

/// Largest magnitude a diagonal scatter entry may reach. Staying far below `f64::MAX`
/// keeps every later product (`C·V`, Rayleigh quotients) finite.
const MAX_SCATTER: f64 = 1e290;

/// Running moments of a stream of inputs `x ∈ Rⁿ` and, for regression models, targets
/// `y ∈ R^{n_y}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulator {
    dim: usize,
    target_dim: Option<usize>,
    /// Half-life of the forgetting in samples; `None` keeps every sample at weight 1.
    half_life: Option<f64>,
    /// Weighted sample count `N` (a plain count without forgetting).
    count: f64,
    mean_x: DVector<f64>,
    /// Centred scatter `Σ_xx`, stored as the top n×n block of a
    /// [`scatter_rows`]`(n)`×n matrix (the extra rows, if any, stay zero). Only the lower
    /// triangle is kept up to date: the batch update is a symmetric rank-b kernel that
    /// writes one triangle.
    sxx: DMatrix<f64>,
    mean_y: Option<DVector<f64>>,
    /// Centred cross scatter `Σ_yx` (n_y×n); `None` for autoencoders (`y = x`).
    syx: Option<DMatrix<f64>>,
    /// `tr Σ_yy` for regression models; for autoencoders `tr Σ_xx` is read off `sxx`.
    tr_syy: f64,
    /// The stream's row clock as of this state: the number of rows, counted over the
    /// whole stream (every partition of a model), through the last batch folded in.
    /// Forgetting weighs a row by γ^(clock now − clock of its batch), so two
    /// accumulators that saw different parts of one stream merge exactly once both are
    /// brought to the later clock. Without forgetting it only orders states.
    clock: u64,
}

impl Accumulator {
    /// An empty accumulator for `dim`-dimensional inputs and, when `target_dim` is
    /// given, `target_dim`-dimensional regression targets.
    ///
    /// # Errors
    /// [`PcaError::InvalidParam`] for a zero dimension or a half-life that is not a
    /// positive finite number of samples.
    pub fn new(
        dim: usize,
        target_dim: Option<usize>,
        half_life: Option<f64>,
    ) -> Result<Self, PcaError> {
        if dim == 0 {
            return Err(invalid("dim", "must be at least 1"));
        }
        if target_dim == Some(0) {
            return Err(invalid("target_dim", "must be at least 1"));
        }
        if let Some(h) = half_life {
            if !(h.is_finite() && h > 0.0) {
                return Err(invalid("half_life", "must be a positive number of samples"));
            }
        }
        Ok(Self {
            dim,
            target_dim,
            half_life,
            count: 0.0,
            mean_x: DVector::zeros(dim),
            sxx: DMatrix::zeros(scatter_rows(dim), dim),
            mean_y: target_dim.map(DVector::zeros),
            syx: target_dim.map(|m| DMatrix::zeros(m, dim)),
            tr_syy: 0.0,
            clock: 0,
        })
    }

    /// The row clock as of this state (see the field's documentation).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The weighted count this state will have at the later row clock `clock`: `N`
    /// decayed by γ^(clock − self.clock) (just `N` without forgetting).
    pub fn count_at(&self, clock: u64) -> f64 {
        self.count * self.decay(clock.saturating_sub(self.clock))
    }

    /// Input dimension n.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Target dimension n_y for regression models, `None` for autoencoders.
    pub fn target_dim(&self) -> Option<usize> {
        self.target_dim
    }

    /// Forgetting half-life in samples, if any.
    pub fn half_life(&self) -> Option<f64> {
        self.half_life
    }

    /// Weighted sample count `N` (a plain count without forgetting).
    pub fn count(&self) -> f64 {
        self.count
    }

    /// Mean of the inputs `μ_x` (n).
    pub fn mean_x(&self) -> &DVector<f64> {
        &self.mean_x
    }

    /// Mean of the targets `μ_y` (n_y), for regression models.
    pub fn mean_y(&self) -> Option<&DVector<f64>> {
        self.mean_y.as_ref()
    }

    /// The centred scatter `Σ_xx` as a full symmetric n×n matrix (not divided by N).
    pub fn scatter(&self) -> DMatrix<f64> {
        let mut s = self.sxx.rows(0, self.dim).into_owned();
        linalg::symmetrize_from_lower(&mut s);
        s
    }

    /// The centred cross scatter `Σ_yx` (n_y×n), for regression models.
    pub fn cross_scatter(&self) -> Option<&DMatrix<f64>> {
        self.syx.as_ref()
    }

    /// `tr Σ_yy` (for autoencoders, `tr Σ_xx`), not divided by N.
    pub fn trace_syy(&self) -> f64 {
        if self.syx.is_some() {
            self.tr_syy
        } else {
            (0..self.dim).map(|i| self.sxx[(i, i)]).sum()
        }
    }

    /// Merges a batch of `rows` = `x.len() / dim` rows (row-major `x`, rows×n) and, for
    /// regression models, their targets (row-major `y`, rows×n_y). The batch is applied
    /// whole or not at all: on any error the accumulator is unchanged.
    ///
    /// Cost: one symmetric rank-(b+1) update of n×n (the `+1` folds Chan's mean
    /// correction `w·d dᵀ` into the same kernel), plus an n_y×n×b product for targets.
    ///
    /// # Errors
    /// [`PcaError::EmptyBatch`], [`PcaError::DimensionMismatch`] for ragged or
    /// mismatched input, [`PcaError::NonFinite`] for NaN/∞ values or a batch whose
    /// magnitude would overflow the scatter.
    pub fn update<T: Copy + Into<f64>>(
        &mut self,
        x: &[T],
        y: Option<&[T]>,
    ) -> Result<(), PcaError> {
        self.update_with_scratch(x, y, &mut Vec::new())
    }

    /// [`Accumulator::update`] with a caller-owned work buffer for the centred batch
    /// (n×(rows+1) f64), so a stream of batches reuses one allocation instead of
    /// faulting in fresh pages for every batch. The buffer's contents are not meaningful
    /// before or after the call.
    ///
    /// # Errors
    /// As [`Accumulator::update`].
    pub fn update_with_scratch<T: Copy + Into<f64>>(
        &mut self,
        x: &[T],
        y: Option<&[T]>,
        scratch: &mut Vec<f64>,
    ) -> Result<(), PcaError> {
        let rows = (x.len() / self.dim) as u64;
        self.fold_values(x, y, self.clock + rows, scratch)
    }

    /// Folds a checked batch whose last row is row `clock` of the whole stream (rows
    /// counted over every partition of the model, in `sequence` order). Old samples are
    /// decayed by γ^(clock − self.clock) before the batch is added at weight 1, so a
    /// partition that sees only some of a stream's batches weighs its rows exactly as
    /// one accumulator of the whole stream would. Without forgetting this is
    /// [`Accumulator::update`]. Whole or not at all.
    ///
    /// # Errors
    /// [`PcaError::Incompatible`] when the batch's shape is not this accumulator's or
    /// `clock` is less than `self.clock` plus the batch's rows (folds follow the
    /// stream's order); [`PcaError::NonFinite`] if the scatter would overflow (which a
    /// [`Batch`] cannot cause on a state that passed [`Accumulator::from_parts`]).
    pub fn fold(
        &mut self,
        batch: &Batch,
        clock: u64,
        scratch: &mut Vec<f64>,
    ) -> Result<(), PcaError> {
        let shape = batch.shape();
        if shape.dim != self.dim || shape.target_dim != self.target_dim {
            return Err(PcaError::Incompatible {
                reason: format!(
                    "a batch of shape ({}, {:?}) for an accumulator of ({}, {:?})",
                    shape.dim, shape.target_dim, self.dim, self.target_dim
                ),
            });
        }
        match batch.data() {
            BatchData::F32 { x, y } => self.fold_values(x, y.as_deref(), clock, scratch),
            BatchData::F64 { x, y } => self.fold_values(x, y.as_deref(), clock, scratch),
        }
    }

    fn fold_values<T: Copy + Into<f64>>(
        &mut self,
        x: &[T],
        y: Option<&[T]>,
        clock: u64,
        scratch: &mut Vec<f64>,
    ) -> Result<(), PcaError> {
        let n = self.dim;
        if x.is_empty() {
            return Err(PcaError::EmptyBatch);
        }
        if !x.len().is_multiple_of(n) {
            return Err(PcaError::DimensionMismatch {
                what: "x length (a whole number of rows)",
                expected: n * (x.len() / n + 1),
                got: x.len(),
            });
        }
        let b = x.len() / n;
        let elapsed = clock
            .checked_sub(self.clock)
            .filter(|e| *e >= b as u64)
            .ok_or_else(|| PcaError::Incompatible {
                reason: format!(
                    "a batch of {b} rows ending at row {clock} cannot follow state at row {}",
                    self.clock
                ),
            })?;
        let decay = self.decay(elapsed);
        let n0 = self.count * decay;
        let n1 = n0 + b as f64;
        let w = n0 * b as f64 / n1;
        let sw = w.sqrt();

        // Centred batch, transposed: column-major (b+1)×n, so column i holds feature i of
        // every row minus the batch mean, and its last entry is √w·d_i with d = batch mean
        // − running mean. One pass also yields each column's sum of squares.
        let mut col_sq = Vec::new();
        let Some(new_mean_x) = centre(x, n, b, &self.mean_x, sw, n1, scratch, &mut col_sq) else {
            return Err(non_finite_batch("x", x, n));
        };
        match (self.target_dim, y) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(invalid(
                    "y",
                    "this model has no targets (target_dim not set)",
                ))
            }
            (Some(_), None) => return Err(invalid("y", "this regression model needs targets")),
            (Some(m), Some(y)) => {
                check_shape("y length (rows × target_dim)", b * m, y.len())?;
            }
        }
        let xc: &[f64] = scratch;
        // Diagonal after the update, checked before anything is written.
        for i in 0..n {
            let s = decay * self.sxx[(i, i)] + col_sq[i];
            if !(s.is_finite() && s <= MAX_SCATTER && new_mean_x[i].is_finite()) {
                return Err(PcaError::NonFinite {
                    what: format!("x column {i}: its scatter would overflow"),
                });
            }
        }
        let targets = match (self.target_dim, y, self.mean_y.as_ref()) {
            (Some(m), Some(y), Some(my)) => {
                let mut yc = Vec::new();
                let Some(new_mean_y) = centre(y, m, b, my, sw, n1, &mut yc, &mut col_sq) else {
                    return Err(non_finite_batch("y", y, m));
                };
                let tr = decay * self.tr_syy + col_sq.iter().sum::<f64>();
                if !(tr.is_finite()
                    && tr <= MAX_SCATTER
                    && new_mean_y.iter().all(|v| v.is_finite()))
                {
                    return Err(PcaError::NonFinite {
                        what: "y: its scatter would overflow".into(),
                    });
                }
                Some((yc, new_mean_y, tr))
            }
            _ => None,
        };

        // Commit: nothing below can fail.
        if decay < 1.0 {
            scale_lower(&mut self.sxx, decay);
        }
        linalg::syrk_lower_add(&mut self.sxx, xc, n, b + 1);
        self.mean_x = new_mean_x;
        if let (Some((yc, new_mean_y, tr)), Some(syx)) = (targets, self.syx.as_mut()) {
            if decay < 1.0 {
                *syx *= decay;
            }
            linalg::gemm_tn_add(syx, &yc, xc, b + 1);
            self.mean_y = Some(new_mean_y);
            self.tr_syy = tr;
        }
        self.count = n1;
        self.clock = clock;
        Ok(())
    }

    /// Merges another accumulator into this one, exactly (Chan et al.):
    /// `N = N_a + N_b`, `μ = μ_a + d·N_b/N`, `Σ = Σ_a + Σ_b + d dᵀ·N_a N_b/N` with
    /// `d = μ_b − μ_a`. Under forgetting both states are first brought to the later of
    /// the two row clocks (the earlier one's count and scatters decayed by
    /// γ^(difference)), so merging the partitions of one stream gives the accumulator of
    /// the whole stream. Without forgetting the clocks only decide the merged clock (the
    /// later one).
    ///
    /// # Errors
    /// [`PcaError::Incompatible`] when dimensions or half-lives differ;
    /// [`PcaError::NonFinite`] if the sum would overflow (then nothing changes).
    pub fn merge(&mut self, other: &Self) -> Result<(), PcaError> {
        if self.dim != other.dim || self.target_dim != other.target_dim {
            return Err(PcaError::Incompatible {
                reason: format!(
                    "dimensions ({}, {:?}) and ({}, {:?})",
                    self.dim, self.target_dim, other.dim, other.target_dim
                ),
            });
        }
        if self.half_life.map(f64::to_bits) != other.half_life.map(f64::to_bits) {
            return Err(PcaError::Incompatible {
                reason: "different half-lives".into(),
            });
        }
        let clock = self.clock.max(other.clock);
        let (wa, wb) = (
            self.decay(clock - self.clock),
            other.decay(clock - other.clock),
        );
        let (na, nb) = (self.count * wa, other.count * wb);
        if nb == 0.0 {
            if wa < 1.0 {
                self.scale(wa);
            }
            self.clock = clock;
            return Ok(());
        }
        let n1 = na + nb;
        let w = na * nb / n1;
        let d = &other.mean_x - &self.mean_x;
        let new_diag_ok = (0..self.dim).all(|i| {
            let s = wa * self.sxx[(i, i)] + wb * other.sxx[(i, i)] + w * d[i] * d[i];
            s.is_finite() && s <= MAX_SCATTER
        });
        if !new_diag_ok {
            return Err(PcaError::NonFinite {
                what: "merged scatter".into(),
            });
        }
        if wa < 1.0 {
            self.scale(wa);
        }
        let ratio = nb / n1;
        for j in 0..self.dim {
            for i in j..self.dim {
                self.sxx[(i, j)] += wb * other.sxx[(i, j)];
            }
        }
        let scaled: Vec<f64> = d.iter().map(|v| v * w.sqrt()).collect();
        linalg::syrk_lower_add(&mut self.sxx, &scaled, self.dim, 1);
        if let (Some(syx), Some(osyx), Some(my), Some(omy)) = (
            self.syx.as_mut(),
            other.syx.as_ref(),
            self.mean_y.as_mut(),
            other.mean_y.as_ref(),
        ) {
            let dy = omy - &*my;
            *syx += osyx * wb + (&dy * d.transpose()) * w;
            self.tr_syy += wb * other.tr_syy + w * dy.norm_squared();
            *my += dy * ratio;
        }
        self.mean_x += d * ratio;
        self.count = n1;
        self.clock = clock;
        Ok(())
    }

    /// Multiplies the weight of every sample by `s` (count, scatters, `tr Σ_yy`).
    fn scale(&mut self, s: f64) {
        self.count *= s;
        scale_lower(&mut self.sxx, s);
        if let Some(syx) = self.syx.as_mut() {
            *syx *= s;
        }
        self.tr_syy *= s;
    }

    /// `γ^rows` with `γ = 2^(−1/half_life)`: the weight left on old samples after
    /// `rows` more rows of the stream.
    fn decay(&self, rows: u64) -> f64 {
        self.half_life.map_or(1.0, |h| (-(rows as f64) / h).exp2())
    }
}

/// Centres `b` row-major rows of length `n` on their own mean and writes them
/// transposed into `buf`, a column-major (b+1)×n block: column `f` holds feature `f` of
/// every row minus the batch mean, then `√w·d_f` with `d` = batch mean − running mean.
/// `col_sq` receives each column's sum of squares (the scatter diagonal's increment).
/// Returns the new running mean `μ + d·b/N₁`, or `None` when the batch sum is not
/// finite: a NaN or infinity in the data (they propagate into the sum), or f64 values
/// whose sum overflows. This stands in for a separate finiteness pass over the batch;
/// the caller looks for the offending value only once it knows there is one.
#[allow(
    clippy::too_many_arguments,
    reason = "one private helper, called twice"
)]
fn centre<T: Copy + Into<f64>>(
    data: &[T],
    n: usize,
    b: usize,
    mean: &DVector<f64>,
    sw: f64,
    n1: f64,
    buf: &mut Vec<f64>,
    col_sq: &mut Vec<f64>,
) -> Option<DVector<f64>> {
    let k = b + 1;
    // Every entry is written below; resizing only zero-fills what is new.
    buf.resize(n * k, 0.0);
    let mut bm = vec![0.0; n];
    for row in data.chunks_exact(n) {
        for (m, v) in bm.iter_mut().zip(row) {
            *m += (*v).into();
        }
    }
    if !all_finite(&bm) {
        return None;
    }
    let inv_b = 1.0 / b as f64;
    bm.iter_mut().for_each(|m| *m *= inv_b);
    col_sq.clear();
    col_sq.resize(n, 0.0);
    // Transpose while centring, BLOCK features at a time: each row contributes BLOCK
    // contiguous values (one cache line of f32), and the BLOCK columns being written
    // each advance by one entry per row, so reads and writes both stay in L1. The rows
    // go TILE at a time (at n = 784, 392 KiB of f64 rows), every block of a tile before
    // the next tile, so each block reads the tile from L2; untiled, a large batch
    // (10 240 rows: 64 MB) was read from memory once per block. Measured with perf on
    // 10 240-row .npy requests at n = 784: this function's time fell by a median 27 %
    // (5 pairs; clients/python/bench/RESULTS.md). Each column's sums run over the rows
    // in order either way, so the result is the same to the bit.
    //
    // Within a block, rows go four at a time: each column then takes four contiguous
    // values per step (one 32-byte store instead of four scattered ones), and the
    // column's sum of squares still adds the four squares one after the other, in row
    // order. Iterators instead of indices leave no bounds check in the loop. perf under
    // float64 `.npy` ingest at n = 784 had this function at 10 % of the server's CPU
    // before.
    const BLOCK: usize = 16;
    const TILE: usize = 64;
    for (t, tile) in data.chunks(TILE * n).enumerate() {
        let r0 = t * TILE;
        for (blk, ((cols, m), sq)) in buf
            .chunks_mut(BLOCK * k)
            .zip(bm.chunks(BLOCK))
            .zip(col_sq.chunks_mut(BLOCK))
            .enumerate()
        {
            let f0 = blk * BLOCK;
            let w = m.len();
            let quads = tile.chunks_exact(4 * n);
            let rest = quads.remainder();
            for (q, quad) in quads.enumerate() {
                let r = r0 + 4 * q;
                let (a, more) = quad.split_at(n);
                let (b1, more) = more.split_at(n);
                let (c1, d1) = more.split_at(n);
                let rows4 = a[f0..f0 + w]
                    .iter()
                    .zip(&b1[f0..f0 + w])
                    .zip(c1[f0..f0 + w].iter().zip(&d1[f0..f0 + w]));
                for (((col, &mj), s), ((&va, &vb), (&vc, &vd))) in cols
                    .chunks_exact_mut(k)
                    .zip(m)
                    .zip(sq.iter_mut())
                    .zip(rows4)
                {
                    let v = [
                        va.into() - mj,
                        vb.into() - mj,
                        vc.into() - mj,
                        vd.into() - mj,
                    ];
                    col[r..r + 4].copy_from_slice(&v);
                    *s = *s + v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
                }
            }
            let r_rest = r0 + (tile.len() / n - rest.len() / n);
            for (i, row) in rest.chunks_exact(n).enumerate() {
                let r = r_rest + i;
                for (((col, &mj), s), &v) in cols
                    .chunks_exact_mut(k)
                    .zip(m)
                    .zip(sq.iter_mut())
                    .zip(&row[f0..f0 + w])
                {
                    let c = v.into() - mj;
                    col[r] = c;
                    *s += c * c;
                }
            }
        }
    }
    let mut new_mean = mean.clone();
    for i in 0..n {
        let d = bm[i] - mean[i];
        let chan = sw * d;
        buf[i * k + b] = chan;
        col_sq[i] += chan * chan;
        new_mean[i] += d * (b as f64 / n1);
    }
    Some(new_mean)
}

/// Scales the lower triangle of the top n×n block of `m` (ld×n, ld ≥ n) by `s`.
fn scale_lower(m: &mut DMatrix<f64>, s: f64) {
    let (ld, n) = m.shape();
    for (j, col) in m.as_mut_slice().chunks_exact_mut(ld).enumerate() {
        col[j..n].iter_mut().for_each(|v| *v *= s);
    }
}

/// Rows of storage for an n×n scatter. When a column is a whole number of 4 KiB pages
/// (n a multiple of 512), the update kernel's loads from one column alias its stores to
/// the neighbouring column in the CPU's store buffer (4K aliasing); at n = 2048 the
/// kernel ran 3-8% slower than with eight rows (one cache line) of padding, which break
/// the pattern (`bench/KERNELS.md`). Other n are left unpadded.
fn scatter_rows(n: usize) -> usize {
    if n.is_multiple_of(512) {
        n + 8
    } else {
        n
    }
}

/// True if every value is finite: one branch-free pass per chunk (it vectorises, where
/// an early-exit search does not).
pub fn all_finite<T: Copy + Into<f64>>(values: &[T]) -> bool {
    values
        .chunks(1024)
        .all(|c| c.iter().fold(true, |ok, v| ok & (*v).into().is_finite()))
}

/// The error for a batch (rows of length `n`) whose sum is not finite: the first NaN or
/// infinity by row and column, or, when every value is finite, the overflow of the sum.
/// Only called once [`centre`] has found the sum non-finite.
fn non_finite_batch<T: Copy + Into<f64>>(what: &str, data: &[T], n: usize) -> PcaError {
    let what = match data.iter().position(|v| !(*v).into().is_finite()) {
        Some(k) => format!("{what} row {}, column {}", k / n, k % n),
        None => format!("{what}: the batch sum overflows"),
    };
    PcaError::NonFinite { what }
}

fn check_shape(what: &'static str, expected: usize, got: usize) -> Result<(), PcaError> {
    if expected == got {
        Ok(())
    } else {
        Err(PcaError::DimensionMismatch {
            what,
            expected,
            got,
        })
    }
}

fn invalid(name: &'static str, reason: &str) -> PcaError {
    PcaError::InvalidParam {
        name,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod centre_tests;
