//! Training the ordered linear autoencoder (docs/DESIGN.md §4).
//!
//! Two optimisers share one [`Trainer`]:
//!
//! - [`OptimizerKind::Subspace`] (default): gradient steps on the ordered loss with an
//!   exact search over `span{Q, ∂L/∂A, P}`. Rayleigh–Ritz is the exact minimiser of the
//!   ordered loss over decoders with columns in a subspace, and at a Ritz point the
//!   loss gradient is the eigen-residual `−2 (C Q − Q Λ) T`, so each step minimises L
//!   exactly over the previous decoder, its gradient and the previous move: the LOBPCG
//!   scheme, reached from the loss. `q` guard columns (k = p + q) are carried and the
//!   first p reported.
//! - [`OptimizerKind::Gradient`]: plain gradient descent on the ordered loss as the
//!   paper describes it, one block (B, then A) at a time with step `1/L` from each
//!   block's exact Lipschitz constant, and A's columns renormalised after each step
//!   (the `(AD, D⁻¹B)` invariance). Correct but slow: kept for comparison and teaching.
//!
//! The trainer only sees a [`FitTarget`]; it never reads the accumulator or does I/O.

use nalgebra::{DMatrix, DVector};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::accumulator::FitTarget;
use super::cancel::Cancel;
use super::components::Components;
use super::linalg;
use super::loss::{self, Moments, Weights};
use super::params::{OptimizerKind, ValidParams};
use super::PcaError;

/// Ritz values below this fraction of the largest are treated as zero: their
/// components are undefined, not reported, and do not keep a fit running (docs/DESIGN.md §4).
const RANK_TOLERANCE: f64 = 1e-12;

/// The optimiser's warm-start state, for persistence. Shapes: `q` m×k (subspace),
/// `a` m×p and `b` p×m (gradient), `previous` m×r (the last published components).
#[derive(Debug, Clone, PartialEq, Default)]
#[allow(missing_docs, reason = "fields mirror Trainer's documented fields")]
pub struct TrainerState {
    pub q: Option<DMatrix<f64>>,
    pub a: Option<DMatrix<f64>>,
    pub b: Option<DMatrix<f64>>,
    pub previous: Option<DMatrix<f64>>,
    pub total_steps: u64,
}

/// A model's optimiser: warm-started across fits, one [`Trainer::fit`] per accumulator
/// change (or per budget).
#[derive(Debug, Clone)]
pub struct Trainer {
    params: ValidParams,
    state: TrainerState,
    rng: StdRng,
}

impl Trainer {
    /// A trainer with no warm start.
    pub fn new(params: ValidParams) -> Self {
        let rng = StdRng::seed_from_u64(params.inner.seed);
        Self {
            params,
            state: TrainerState::default(),
            rng,
        }
    }

    /// A trainer resumed from persisted state. Matrices of the wrong shape or with
    /// non-finite entries are dropped (the next fit starts cold), never trusted.
    pub fn with_state(params: ValidParams, state: TrainerState) -> Self {
        let mut t = Self::new(params);
        let (m, k, p) = (t.params.dim, t.params.block(), t.params.inner.components);
        let ok = |x: &Option<DMatrix<f64>>, r: usize, c: usize| {
            x.as_ref()
                .filter(|x| x.shape() == (r, c) && x.iter().all(|v| v.is_finite()))
                .cloned()
        };
        t.state = TrainerState {
            q: ok(&state.q, m, k),
            a: ok(&state.a, m, p),
            b: ok(&state.b, p, m),
            previous: state
                .previous
                .filter(|x| x.nrows() == m && x.ncols() <= p && x.iter().all(|v| v.is_finite())),
            total_steps: state.total_steps,
        };
        t
    }

    /// The warm-start state, for persistence.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The checked parameters.
    pub fn params(&self) -> &ValidParams {
        &self.params
    }

    /// Total optimiser steps over the trainer's life.
    pub fn total_steps(&self) -> u64 {
        self.state.total_steps
    }

    /// Fits the target to convergence or to `budget` steps (default: `max_steps`),
    /// warm-started from the previous fit, and returns the ordered components.
    ///
    /// # Errors
    /// [`PcaError::NotEnoughSamples`] before `k + 1` samples;
    /// [`PcaError::DimensionMismatch`] if the target's dimension is not the trainer's.
    pub fn fit(
        &mut self,
        target: &FitTarget,
        budget: Option<usize>,
    ) -> Result<Components, PcaError> {
        self.fit_until(target, budget, &Cancel::new())
    }

    /// [`Self::fit`], stopped by `cancel`: it is checked before each optimiser step and
    /// between the large kernels inside one, so a cancelled fit returns within one
    /// kernel's time (an eigensolve of the 3k×3k Rayleigh–Ritz matrix at most). The
    /// trainer keeps its warm start (the iterate reached), so a later fit resumes.
    ///
    /// # Errors
    /// As [`Self::fit`], and [`PcaError::Cancelled`] once `cancel` is set.
    pub fn fit_until(
        &mut self,
        target: &FitTarget,
        budget: Option<usize>,
        cancel: &Cancel,
    ) -> Result<Components, PcaError> {
        cancel.check()?;
        let m = target.matrix.nrows();
        if m != self.params.dim {
            return Err(PcaError::DimensionMismatch {
                what: "target matrix",
                expected: self.params.dim,
                got: m,
            });
        }
        if target.count < self.params.min_samples() as f64 {
            return Err(PcaError::NotEnoughSamples {
                have: target.count,
                need: self.params.min_samples(),
            });
        }
        let budget = budget.unwrap_or(self.params.inner.max_steps);
        let mut fit = match self.params.inner.optimizer {
            OptimizerKind::Subspace => self.fit_subspace(&target.matrix, budget, cancel),
            OptimizerKind::Gradient => self.fit_gradient(&target.matrix, budget, cancel),
        }?;
        self.align_signs(&mut fit);
        self.state.total_steps += fit.steps as u64;
        Ok(self.report(target, fit))
    }

    /// Subspace search. Returns k Ritz pairs (or p columns for small m solved directly).
    fn fit_subspace(
        &mut self,
        c: &DMatrix<f64>,
        budget: usize,
        cancel: &Cancel,
    ) -> Result<Fit, PcaError> {
        let m = c.nrows();
        let p = self.params.inner.components;
        let k = self.params.block();
        let units = |cols: usize| cols as f64 / p as f64;
        // Small problems: the trial space would be (almost) the whole space, so solve
        // it directly and exactly.
        if 3 * k >= m {
            if let Some((vals, vecs)) = linalg::eigh_desc(c) {
                let q = vecs.columns(0, k).into_owned();
                let cq = linalg::mul(c, false, &q, false);
                let lam = vals.rows(0, k).into_owned();
                self.state.q = Some(q.clone());
                return Ok(Fit {
                    q,
                    cq,
                    lam,
                    steps: 1,
                    products: units(m),
                });
            }
        }
        let mut products = 0.0;
        let start = self
            .state
            .q
            .take()
            .filter(|q| q.shape() == (m, k) && q.iter().all(|v| v.is_finite()));
        let start = start.unwrap_or_else(|| self.random(m, k));
        let v = linalg::orthonormalize(&start);
        if let Err(e) = cancel.check() {
            self.state.q = Some(start);
            return Err(e);
        }
        let cv = linalg::mul(c, false, &v, false);
        products += units(k);
        let (mut q, mut cq, mut lam) = match ritz(&v, &cv, k) {
            Some(r) => r,
            None => {
                // Never keep a non-finite Q (docs/DESIGN.md §4): restart from random.
                let v = linalg::orthonormalize(&self.random(m, k));
                let cv = linalg::mul(c, false, &v, false);
                products += units(k);
                ritz(&v, &cv, k).unwrap_or_else(|| (v.clone(), cv.clone(), DVector::zeros(k)))
            }
        };
        let mut p_move: Option<DMatrix<f64>> = None;
        let mut steps = 0;
        // Keeps the iterate reached as the warm start, then reports the cancellation.
        let cancelled = |t: &mut Self, q: &DMatrix<f64>, steps: usize| {
            t.state.q = Some(q.clone());
            t.state.total_steps += steps as u64;
            Err(PcaError::Cancelled)
        };
        loop {
            let r = residual(&q, &cq, &lam);
            let (bounds, _) = error_bounds(&r, &lam);
            if done(&bounds, &lam, p, self.params.inner.tolerance) || steps >= budget {
                break;
            }
            if cancel.is_cancelled() {
                return cancelled(self, &q, steps);
            }
            let extra = p_move.as_ref().map_or(0, |pm| pm.ncols());
            let cols = (2 * k + extra).min(m);
            let mut trial = DMatrix::zeros(m, 2 * k + extra);
            trial.columns_mut(0, k).copy_from(&q);
            trial.columns_mut(k, k).copy_from(&r);
            if let Some(pm) = &p_move {
                trial.columns_mut(2 * k, extra).copy_from(pm);
            }
            let trial = trial.columns(0, cols).into_owned();
            let v = linalg::orthonormalize(&trial);
            if cancel.is_cancelled() {
                return cancelled(self, &q, steps);
            }
            // span(V[:, :k]) = span(Q) (Householder keeps leading spans), so C·V[:, :k]
            // = CQ · (Qᵀ V[:, :k]): only the new columns cost an n×n product.
            let v1 = v.columns(0, k).into_owned();
            let v2 = v.columns(k, cols - k).into_owned();
            let o = linalg::mul(&q, true, &v1, false);
            let mut cv = DMatrix::zeros(m, cols);
            cv.columns_mut(0, k)
                .copy_from(&linalg::mul(&cq, false, &o, false));
            cv.columns_mut(k, cols - k)
                .copy_from(&linalg::mul(c, false, &v2, false));
            products += units(cols - k);
            steps += 1;
            if cancel.is_cancelled() {
                return cancelled(self, &q, steps);
            }
            let Some((qn, cqn, lamn)) = ritz(&v, &cv, k) else {
                break;
            };
            let overlap = linalg::mul(&q, true, &qn, false);
            p_move = Some(&qn - linalg::mul(&q, false, &overlap, false));
            q = qn;
            cq = cqn;
            lam = lamn;
        }
        self.state.q = Some(q.clone());
        Ok(Fit {
            q,
            cq,
            lam,
            steps,
            products,
        })
    }

    /// Plain block gradient descent on the ordered loss over `(A, B)` with the target
    /// as both `Σ_xx` and `Σ_yx` (for regression models this is the loss of the
    /// encoder `B W`, see docs/DESIGN.md §3). Returns the normalised columns of A with their
    /// Rayleigh quotients.
    fn fit_gradient(
        &mut self,
        c: &DMatrix<f64>,
        budget: usize,
        cancel: &Cancel,
    ) -> Result<Fit, PcaError> {
        let m = c.nrows();
        let p = self.params.inner.components;
        let (mut a, mut b) = match (self.state.a.take(), self.state.b.take()) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                let a = normalize_columns(self.random(m, p));
                let b = a.transpose();
                (a, b)
            }
        };
        let weights = Weights::ordered(p);
        let lmax = largest_eigenvalue(c, &mut self.rng);
        let moments = Moments {
            sxx: c,
            syx: c,
            tr_syy: c.trace(),
        };
        let mut steps = 0;
        let mut products = 0.0;
        let (mut q, mut cq, mut lam);
        loop {
            // Convergence is judged every 25 steps (it costs one more product).
            if steps % 25 == 0 || steps >= budget {
                q = a.clone();
                cq = linalg::mul(c, false, &q, false);
                products += 1.0;
                lam = DVector::from_fn(p, |i, _| q.column(i).dot(&cq.column(i)));
                let r = residual(&q, &cq, &lam);
                let (bounds, _) = error_bounds(&r, &lam);
                if done(&bounds, &lam, p, self.params.inner.tolerance) || steps >= budget {
                    break;
                }
            }
            if cancel.is_cancelled() {
                self.state.a = Some(a);
                self.state.b = Some(b);
                self.state.total_steps += steps as u64;
                return Err(PcaError::Cancelled);
            }
            gradient_descent_step(&weights, &mut a, &mut b, moments, lmax);
            products += 3.0;
            steps += 1;
        }
        self.state.a = Some(a);
        self.state.b = Some(b);
        Ok(Fit {
            q,
            cq,
            lam,
            steps,
            products,
        })
    }

    /// Flips columns so each agrees in sign with the last published component
    /// (`a·a_prev ≥ 0`), or, the first time, has its largest-magnitude entry positive.
    fn align_signs(&mut self, fit: &mut Fit) {
        for i in 0..fit.q.ncols() {
            let col = fit.q.column(i);
            let s = match self.state.previous.as_ref().filter(|prev| i < prev.ncols()) {
                Some(prev) => col.dot(&prev.column(i)),
                None => col.iter().copied().fold(
                    0.0,
                    |best: f64, v| if v.abs() > best.abs() { v } else { best },
                ),
            };
            if s < 0.0 {
                fit.q.column_mut(i).neg_mut();
                fit.cq.column_mut(i).neg_mut();
            }
        }
        if let Some(q) = self.state.q.as_mut() {
            if q.ncols() == fit.q.ncols() {
                q.copy_from(&fit.q);
            }
        }
    }

    fn report(&mut self, target: &FitTarget, fit: Fit) -> Components {
        let p = self.params.inner.components;
        let r = residual(&fit.q, &fit.cq, &fit.lam);
        let (bounds, gaps) = error_bounds(&r, &fit.lam);
        let top = fit.lam.iter().copied().fold(0.0, f64::max);
        let defined = (0..p.min(fit.lam.len()))
            .take_while(|&i| top > 0.0 && fit.lam[i] > RANK_TOLERANCE * top)
            .count();
        let vectors = fit.q.columns(0, defined).into_owned();
        let n = target.count;
        let unbias = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let total = target.trace_yy;
        let eigenvalues: Vec<f64> = (0..defined).map(|i| fit.lam[i] * unbias).collect();
        let explained_variance_ratio = (0..defined)
            .map(|i| {
                if total > 0.0 {
                    (fit.lam[i] / total).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let error_bounds: Vec<f64> = bounds.iter().take(defined).copied().collect();
        let relative_gaps = (0..defined).map(|i| gaps[i] / fit.lam[i]).collect();
        // At orthonormal A with the optimal B = Aᵀ (per sample):
        // L = p·tr C_yy − Σ_i (p − i + 1) ρ_i (docs/DESIGN.md §3).
        let loss = match self.params.inner.optimizer {
            OptimizerKind::Subspace => {
                p as f64 * total
                    - (0..p.min(fit.lam.len()))
                        .map(|i| (p - i) as f64 * fit.lam[i])
                        .sum::<f64>()
            }
            OptimizerKind::Gradient => match (&self.state.a, &self.state.b) {
                (Some(a), Some(b)) => loss::value(
                    &Weights::ordered(p),
                    a,
                    b,
                    Moments {
                        sxx: &target.matrix,
                        syx: &target.matrix,
                        tr_syy: total,
                    },
                ),
                _ => f64::NAN,
            },
        };
        let converged = error_bounds
            .iter()
            .all(|b| *b <= self.params.inner.tolerance);
        self.state.previous = Some(vectors.clone());
        Components {
            vectors,
            eigenvalues,
            explained_variance_ratio,
            error_bounds,
            relative_gaps,
            loss,
            converged,
            steps: fit.steps,
            products: fit.products,
            mean: target.mean_x.clone(),
            mean_y: target.mean_y.clone(),
            regression: target.regression.clone(),
            samples: target.count,
        }
    }

    fn random(&mut self, r: usize, c: usize) -> DMatrix<f64> {
        let rng = &mut self.rng;
        DMatrix::from_fn(r, c, |_, _| {
            rng.sample::<f64, _>(rand_distr::StandardNormal)
        })
    }
}

/// One fit's raw result: `q` (m×c), `cq = C q`, Rayleigh quotients `lam` (c).
struct Fit {
    q: DMatrix<f64>,
    cq: DMatrix<f64>,
    lam: DVector<f64>,
    steps: usize,
    products: f64,
}

/// One step of plain gradient descent on the loss `w` (ordered or MSE): first B with
/// step `1/L_B`, `L_B = 2 λmax(S∘AᵀA) λmax(Σ_xx)`, then A with `1/L_A`,
/// `L_A = 2 λmax(S∘(BΣ_xxBᵀ))` (each block's exact Lipschitz constant, so each block's
/// loss decreases), then A's columns are normalised (`(AD, D⁻¹B)` leaves L unchanged
/// and keeps `S∘AᵀA` well conditioned, docs/DESIGN.md §3). `lmax_sxx` must bound
/// `λmax(Σ_xx)` from above.
pub fn gradient_descent_step(
    w: &Weights,
    a: &mut DMatrix<f64>,
    b: &mut DMatrix<f64>,
    m: Moments<'_>,
    lmax_sxx: f64,
) {
    let t = DMatrix::from_diagonal(&w.t);
    let s_ata = w.s.component_mul(&linalg::mul(a, true, a, false));
    let l_b = 2.0 * sym_lmax(&s_ata) * lmax_sxx;
    if l_b > 0.0 && l_b.is_finite() {
        let at_syx = linalg::mul(a, true, m.syx, false);
        let b_sxx = linalg::mul(b, false, m.sxx, false);
        let grad_b = (&t * at_syx - &s_ata * b_sxx) * -2.0;
        *b -= grad_b / l_b;
    }
    let b_sxx = linalg::mul(b, false, m.sxx, false);
    let bsb = linalg::mul(&b_sxx, false, b, true);
    let s_bsb = w.s.component_mul(&((&bsb + bsb.transpose()) * 0.5));
    let l_a = 2.0 * sym_lmax(&s_bsb);
    if l_a > 0.0 && l_a.is_finite() {
        let syx_bt = linalg::mul(m.syx, false, b, true);
        let grad_a = (syx_bt * &t - &*a * &s_bsb) * -2.0;
        *a -= grad_a / l_a;
    }
    for i in 0..a.ncols() {
        let norm = a.column(i).norm();
        if norm > 0.0 && norm.is_finite() {
            a.column_mut(i).unscale_mut(norm);
            b.row_mut(i).scale_mut(norm);
        }
    }
}

/// An upper estimate of `λmax` of a symmetric positive semidefinite matrix: 1.2× the
/// Rayleigh quotient after 40 power iterations, never above the trace.
pub fn largest_eigenvalue(c: &DMatrix<f64>, rng: &mut StdRng) -> f64 {
    let n = c.nrows();
    let mut v = DVector::from_fn(n, |_, _| rng.sample::<f64, _>(rand_distr::StandardNormal));
    let mut rho = 0.0;
    for _ in 0..40 {
        let norm = v.norm();
        if norm == 0.0 || !norm.is_finite() {
            break;
        }
        v /= norm;
        let cv = c * &v;
        rho = v.dot(&cv);
        v = cv;
    }
    (1.2 * rho).min(c.trace().max(0.0)).max(rho)
}

fn sym_lmax(m: &DMatrix<f64>) -> f64 {
    linalg::eigh_desc(m).map_or(f64::INFINITY, |(vals, _)| vals[0])
}

fn normalize_columns(mut a: DMatrix<f64>) -> DMatrix<f64> {
    for mut col in a.column_iter_mut() {
        let n = col.norm();
        if n > 0.0 {
            col /= n;
        }
    }
    a
}

/// Rayleigh–Ritz on an orthonormal basis `v` (m×c) with `cv = C v`: the top `k` Ritz
/// vectors, `C` times them, and the Ritz values, descending. `None` if the small
/// eigenproblem fails.
fn ritz(
    v: &DMatrix<f64>,
    cv: &DMatrix<f64>,
    k: usize,
) -> Option<(DMatrix<f64>, DMatrix<f64>, DVector<f64>)> {
    let h = linalg::mul(v, true, cv, false);
    let h = (&h + h.transpose()) * 0.5;
    let (vals, vecs) = linalg::eigh_desc(&h)?;
    let z = vecs.columns(0, k).into_owned();
    Some((
        linalg::mul(v, false, &z, false),
        linalg::mul(cv, false, &z, false),
        vals.rows(0, k).into_owned(),
    ))
}

/// The eigen-residual `C Q − Q Λ` (m×k) from `cq = C Q`, column by column (no k×k
/// diagonal matrix product). At a Ritz point it spans the loss gradient (docs/DESIGN.md §4).
fn residual(q: &DMatrix<f64>, cq: &DMatrix<f64>, lam: &DVector<f64>) -> DMatrix<f64> {
    let mut r = cq.clone();
    for (i, mut col) in r.column_iter_mut().enumerate() {
        col.axpy(-lam[i], &q.column(i), 1.0);
    }
    r
}

/// Per column i: `‖r_i‖ / min_{j≠i} |λ_i − λ_j|` capped at π/2 (an angle bound,
/// docs/DESIGN.md §5), and the gap itself.
fn error_bounds(r: &DMatrix<f64>, lam: &DVector<f64>) -> (Vec<f64>, Vec<f64>) {
    let k = lam.len();
    (0..k)
        .map(|i| {
            let gap = (0..k)
                .filter(|&j| j != i)
                .map(|j| (lam[i] - lam[j]).abs())
                .fold(if k == 1 { lam[i].abs() } else { f64::INFINITY }, f64::min);
            let res = r.column(i).norm();
            let bound = if gap > 0.0 {
                (res / gap).min(std::f64::consts::FRAC_PI_2)
            } else {
                std::f64::consts::FRAC_PI_2
            };
            (
                if bound.is_nan() {
                    std::f64::consts::FRAC_PI_2
                } else {
                    bound
                },
                gap,
            )
        })
        .unzip()
}

/// Whether every defined component among the first p has its bound within `tol`.
fn done(bounds: &[f64], lam: &DVector<f64>, p: usize, tol: f64) -> bool {
    let top = lam.iter().copied().fold(0.0, f64::max);
    if top <= 0.0 || !top.is_finite() {
        return true;
    }
    (0..p.min(lam.len()))
        .filter(|&i| lam[i] > RANK_TOLERANCE * top)
        .all(|i| bounds[i] <= tol)
}
