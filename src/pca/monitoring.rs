//! Process monitoring on a published fit (issue 17, `docs/DESIGN.md` §10): Hotelling's
//! T² and the squared prediction error (SPE, Q) of each row, their per-variable
//! contributions, and the control limits of both statistics.
//!
//! Everything is in the fit's *component space* (n for autoencoders, n_y for regression
//! models) and uses the covariance with divisor N − 1, `C = Σ/(N−1)` = `FitTarget::matrix ·
//! N/(N−1)`, the same divisor as [`Components::eigenvalues`].
//!
//! Per published fit, off the request path: [`LimitMoments::new`] (cost: one symmetric
//! m×m·m×m product, `m³` multiply-adds, plus `O(m²r)`). Per request: [`limits`] (a few
//! quantile evaluations, `O(r)`) and [`Components::project_with_statistics`]
//! (`O(rows·m·k)`).

use faer::linalg::matmul::matmul;
use faer::prelude::{Reborrow, ReborrowMut};
use faer::{Accum, Par};
use nalgebra::DMatrix;
use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, FisherSnedecor, Normal};

use super::accumulator::FitTarget;
use super::components::{Components, Projection};
use super::linalg;
use super::PcaError;

/// Discarded variance θ₁ at or below this fraction of `tr C` is refused by [`limits`]:
/// it is within a few thousand units of round-off of `tr C` for m ≤ 4096 (the tail
/// moments carry an absolute error of order `m·ε·λ₁`), so no SPE limit built on it
/// would mean anything.
pub const THETA_FLOOR: f64 = 1e-12;

/// Columns of the deflated covariance formed at a time by [`LimitMoments::new`]: the
/// work buffers are three m×`PANEL` blocks instead of one m×m matrix.
const PANEL: usize = 128;

/// What a published fit needs for control limits at any `k ≤ r`, computed once per fit
/// from the covariance the fit used (divisor N − 1).
///
/// The discarded-variance moments `θ_i(k) = Σ_{j>k} λ_j^i` are not formed as
/// `tr C^i − Σ_{j≤k} λ_j^i`: that subtraction loses about `log10(tr C^i / θ_i)` digits,
/// which for `i = 3` is three times the loss of θ₁ (with θ₁ = 1e-6·tr C it can leave no
/// digit of θ₃ at all). Instead the covariance is deflated once by the r reported
/// components, `R = (I − U Uᵀ) C (I − U Uᵀ)` (U m×r), and
/// `θ_i(k) = Σ_{k<j≤r} λ_j^i + tr Rⁱ`: a sum of positive terms, with no cancellation
/// beyond forming R (absolute error of order `ε·λ₁` per entry). In exact arithmetic with
/// exact eigenpairs this equals `tr C^i − Σ_{j≤k} λ_j^i`; with a fit's Ritz pairs,
/// `tr R` is exactly `tr C − Σ_{j≤r} λ_j` and `tr R²`, `tr R³` are the moments of the
/// SPE that the fitted subspace actually leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitMoments {
    /// Weighted sample count N of the fit.
    pub samples: f64,
    /// Component-space dimension m.
    pub dim: usize,
    /// Number r of reported components R was deflated by; [`limits`] takes exactly r
    /// eigenvalues.
    pub components: usize,
    /// `tr C`, the total variance (squared units).
    pub trace: f64,
    /// `‖C‖²_F = Σ λ_j²` (squared units, squared).
    pub frobenius_sq: f64,
    /// `[tr R, tr R², tr R³]`: the moments of the variance beyond all r reported
    /// components (squared units to the power 1, 2, 3).
    pub tail: [f64; 3],
}

impl LimitMoments {
    /// Computes the moments of `target` (the one `components` was fitted to). Cost: one
    /// m×m by m×m symmetric product (`m³` multiply-adds, evaluated as its lower half
    /// `m³/2` plus `O(m²r)`), in panels of 128 columns (extra memory `3·m·128` f64).
    ///
    /// # Errors
    /// [`PcaError::DimensionMismatch`] when the shapes disagree,
    /// [`PcaError::Incompatible`] when the two come from different sample counts,
    /// [`PcaError::NotEnoughSamples`] with N ≤ 1, [`PcaError::InvalidParam`] when the
    /// fit reports no component, [`PcaError::NonFinite`] if a moment overflows.
    pub fn new(target: &FitTarget, components: &Components) -> Result<Self, PcaError> {
        let m = target.matrix.nrows();
        let u = &components.vectors;
        if u.nrows() != m {
            return Err(PcaError::DimensionMismatch {
                what: "components' rows (the target's dimension)",
                expected: m,
                got: u.nrows(),
            });
        }
        if target.count.to_bits() != components.samples.to_bits() {
            return Err(PcaError::Incompatible {
                reason: format!(
                    "the target has {} samples, the components were fitted to {}",
                    target.count, components.samples
                ),
            });
        }
        let n = target.count;
        if n.is_nan() || n <= 1.0 {
            return Err(PcaError::NotEnoughSamples { have: n, need: 2 });
        }
        let r = u.ncols();
        if r == 0 {
            return Err(PcaError::InvalidParam {
                name: "components",
                reason: "the fit reports no component (zero variance)".into(),
            });
        }
        // Everything below uses C_N = Σ/N; the divisor N − 1 enters as powers of f.
        let f = n / (n - 1.0);
        let c = &target.matrix;
        let g = linalg::mul(c, false, u, false); // C_N U, m×r
        let h = linalg::mul(u, true, &g, false); // Uᵀ C_N U, r×r
        let (cv, uv, gv, hv) = (
            linalg::view(c),
            linalg::view(u),
            linalg::view(&g),
            linalg::view(&h),
        );
        let mut rj = DMatrix::<f64>::zeros(m, PANEL);
        let mut sj = DMatrix::<f64>::zeros(m, PANEL);
        let mut t = DMatrix::<f64>::zeros(r, PANEL);
        let (mut tr1, mut tr2, mut tr3) = (0.0, 0.0, 0.0);
        for j0 in (0..m).step_by(PANEL) {
            let b = PANEL.min(m - j0);
            let mut rjv = linalg::view_mut(&mut rj).submatrix_mut(0, 0, m, b);
            let uj = uv.submatrix(j0, 0, b, r);
            // R_J = C_J − G U_Jᵀ − U (G_Jᵀ − H U_Jᵀ)  (columns j0..j0+b of R)
            rjv.copy_from(cv.submatrix(0, j0, m, b));
            matmul(rjv.rb_mut(), Accum::Add, gv, uj.transpose(), -1.0, Par::Seq);
            let mut tv = linalg::view_mut(&mut t).submatrix_mut(0, 0, r, b);
            tv.copy_from(gv.submatrix(j0, 0, b, r).transpose());
            matmul(tv.rb_mut(), Accum::Add, hv, uj.transpose(), -1.0, Par::Seq);
            matmul(rjv.rb_mut(), Accum::Add, uv, tv.rb(), -1.0, Par::Seq);
            // (R²)_{i≥j0, J} = C_{i≥j0,:} R_J − U_{i≥j0,:} (Gᵀ R_J), because R R_J =
            // P C R_J when R = P C P (P R_J = R_J) and Uᵀ C = Gᵀ.
            matmul(
                tv.rb_mut(),
                Accum::Replace,
                gv.transpose(),
                rjv.rb(),
                1.0,
                Par::Seq,
            );
            let rows = m - j0;
            let mut sjv = linalg::view_mut(&mut sj).submatrix_mut(0, 0, rows, b);
            matmul(
                sjv.rb_mut(),
                Accum::Replace,
                cv.submatrix(j0, 0, rows, m),
                rjv.rb(),
                1.0,
                Par::Seq,
            );
            matmul(
                sjv.rb_mut(),
                Accum::Add,
                uv.submatrix(j0, 0, rows, r),
                tv.rb(),
                -1.0,
                Par::Seq,
            );
            // Lower triangle of the symmetric sums: off-diagonal entries count twice.
            for jj in 0..b {
                let j = j0 + jj;
                let (rcol, scol) = (rj.column(jj), sj.column(jj));
                tr1 += rcol[j];
                tr2 += rcol[j] * rcol[j];
                tr3 += scol[jj] * rcol[j];
                let (mut s2, mut s3) = (0.0, 0.0);
                for i in (j + 1)..m {
                    s2 += rcol[i] * rcol[i];
                    s3 += scol[i - j0] * rcol[i];
                }
                tr2 += 2.0 * s2;
                tr3 += 2.0 * s3;
            }
        }
        let (mut trace, mut frob) = (0.0, 0.0);
        for j in 0..m {
            let col = c.column(j);
            trace += col[j];
            frob += col[j] * col[j] + 2.0 * col.rows(j + 1, m - j - 1).norm_squared();
        }
        let out = Self {
            samples: n,
            dim: m,
            components: r,
            trace: f * trace,
            frobenius_sq: f * f * frob,
            tail: [f * tr1, f * f * tr2, f * f * f * tr3],
        };
        let finite = out.trace.is_finite()
            && out.frobenius_sq.is_finite()
            && out.tail.iter().all(|v| v.is_finite());
        if !finite {
            return Err(PcaError::NonFinite {
                what: "covariance moments (tr C, ‖C‖², tr R³)".into(),
            });
        }
        Ok(out)
    }

    /// `θ_i(k) = Σ_{j>k} λ_j^i` for i = 1, 2, 3 from the r reported `eigenvalues`
    /// (divisor N − 1) and the tail beyond them. `k ≤ r` is not checked here.
    pub fn theta(&self, eigenvalues: &[f64], k: usize) -> [f64; 3] {
        let mut th = self.tail;
        for &l in eigenvalues.iter().skip(k) {
            th[0] += l;
            th[1] += l * l;
            th[2] += l * l * l;
        }
        th
    }
}

/// How [`Limits::spe`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeMethod {
    /// Jackson & Mudholkar (1979), the normal approximation of `(SPE/θ₁)^h₀`.
    JacksonMudholkar,
    /// Box (1954), `g·χ²(h)`: used when `h₀ ≤ 0`, where Jackson–Mudholkar's
    /// transformation is no longer increasing and its formula would answer a value
    /// below θ₁ (this happens when one discarded eigenvalue dominates a long flat tail,
    /// `θ₁θ₃ ≥ 1.5 θ₂²`).
    Box,
}

impl SpeMethod {
    /// The name users see: `"jackson_mudholkar"` or `"box"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JacksonMudholkar => "jackson_mudholkar",
            Self::Box => "box",
        }
    }
}

/// Upper control limits of T² and SPE at false-alarm rate α for the first k components.
/// Limits are in the statistics' units: T² is dimensionless, SPE in squared units.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Number of components k the statistics use.
    pub k: usize,
    /// False-alarm rate α in (0, 0.5).
    pub alpha: f64,
    /// Sample count N of the fit.
    pub samples: f64,
    /// `k(N−1)(N+1)/(N(N−k)) · F_{1−α}(k, N−k)`: the limit for a new row, with mean
    /// and covariance estimated from the same N samples.
    pub t2: f64,
    /// The SPE limit by [`Self::spe_method`].
    pub spe: f64,
    /// Box's `g·χ²_{1−α}(h)` with `g = θ₂/θ₁`, `h = θ₁²/θ₂`.
    pub spe_box: f64,
    /// Which approximation [`Self::spe`] is.
    pub spe_method: SpeMethod,
    /// `[θ₁, θ₂, θ₃]`, `θ_i = Σ_{j>k} λ_j^i`.
    pub theta: [f64; 3],
    /// Jackson–Mudholkar's `h₀ = 1 − 2θ₁θ₃/(3θ₂²)` (at most 1/3).
    pub h0: f64,
}

/// Control limits at false-alarm rate `alpha` for the first `k` components of a fit:
/// `eigenvalues` are its r reported eigenvalues (divisor N − 1), `samples` its N and
/// `moments` the [`LimitMoments`] of the same fit.
///
/// T²: `k(N−1)(N+1)/(N(N−k)) · F_{1−α}(k, N−k)`. SPE (Jackson–Mudholkar):
/// `θ₁ [c_α √(2θ₂h₀²)/θ₁ + 1 + θ₂h₀(h₀−1)/θ₁²]^{1/h₀}`, `c_α = Φ⁻¹(1−α)`,
/// `h₀ = 1 − 2θ₁θ₃/(3θ₂²)`; when `h₀ ≤ 0` the Box limit is answered instead
/// ([`SpeMethod::Box`]). Quantiles come from `statrs`.
///
/// # Errors
/// [`PcaError::InvalidParam`] for α outside (0, 0.5), k outside 1..=r or `k ≥ N`, or a
/// k whose discarded variance θ₁ is at most [`THETA_FLOOR`]·tr C (or leaves θ₂, θ₃
/// non-positive): the SPE limit is then undefined and the message says so and which
/// k are usable; [`PcaError::DimensionMismatch`] /
/// [`PcaError::Incompatible`] when `eigenvalues` or `samples` are not the moments' fit.
pub fn limits(
    eigenvalues: &[f64],
    k: usize,
    alpha: f64,
    samples: f64,
    moments: &LimitMoments,
) -> Result<Limits, PcaError> {
    if !(alpha > 0.0 && alpha < 0.5) {
        return Err(PcaError::InvalidParam {
            name: "alpha",
            reason: format!("must be in (0, 0.5), got {alpha}"),
        });
    }
    let r = moments.components;
    if eigenvalues.len() != r {
        return Err(PcaError::DimensionMismatch {
            what: "eigenvalues (the fit's reported components)",
            expected: r,
            got: eigenvalues.len(),
        });
    }
    if samples.to_bits() != moments.samples.to_bits() {
        return Err(PcaError::Incompatible {
            reason: format!(
                "limits asked for N = {samples}, the moments are of N = {}",
                moments.samples
            ),
        });
    }
    if k == 0 || k > r {
        return Err(PcaError::InvalidParam {
            name: "k",
            reason: format!("must be between 1 and {r} (the reported components), got {k}"),
        });
    }
    let n = samples;
    let kf = k as f64;
    if n.is_nan() || n <= kf {
        return Err(PcaError::InvalidParam {
            name: "k",
            reason: format!("must be below the sample count N = {n}, got {k}"),
        });
    }
    let theta = moments.theta(eigenvalues, k);
    let [t1, t2, t3] = theta;
    if !(t1 > THETA_FLOOR * moments.trace && t2 > 0.0 && t3 > 0.0) {
        let usable = (1..k)
            .rev()
            .find(|&j| moments.theta(eigenvalues, j)[0] > THETA_FLOOR * moments.trace);
        return Err(PcaError::InvalidParam {
            name: "k",
            reason: format!(
                "the first {k} components leave a variance of {t1:e} out of tr C = {:e} \
                 (θ₂ = {t2:e}, θ₃ = {t3:e}); at or below {THETA_FLOOR:e} of tr C this is \
                 round-off and no SPE limit is defined{}",
                moments.trace,
                usable.map_or(String::new(), |j| format!("; use k ≤ {j}"))
            ),
        });
    }
    let quantile_err = |what: &str, e: &dyn std::fmt::Display| PcaError::InvalidParam {
        name: "k",
        reason: format!("{what} distribution undefined: {e}"),
    };
    let f = FisherSnedecor::new(kf, n - kf).map_err(|e| quantile_err("F", &e))?;
    let t2_limit = kf * (n - 1.0) * (n + 1.0) / (n * (n - kf)) * upper_quantile(&f, alpha)?;
    let g = t2 / t1;
    let h = t1 * t1 / t2;
    let chi = ChiSquared::new(h).map_err(|e| quantile_err("χ²", &e))?;
    let spe_box = g * upper_quantile(&chi, alpha)?;
    let h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2);
    let (spe, spe_method) = if h0 > 0.0 {
        let normal = Normal::new(0.0, 1.0).map_err(|e| quantile_err("normal", &e))?;
        let c = upper_quantile(&normal, alpha)?;
        let base = c * (2.0 * t2).sqrt() * h0 / t1 + t2 * h0 * (h0 - 1.0) / (t1 * t1);
        (t1 * (base.ln_1p() / h0).exp(), SpeMethod::JacksonMudholkar)
    } else {
        (spe_box, SpeMethod::Box)
    };
    let out = Limits {
        k,
        alpha,
        samples: n,
        t2: t2_limit,
        spe,
        spe_box,
        spe_method,
        theta,
        h0,
    };
    if [out.t2, out.spe, out.spe_box].iter().all(|v| v.is_finite()) {
        Ok(out)
    } else {
        Err(PcaError::NonFinite {
            what: format!("control limits for k = {k}, α = {alpha}"),
        })
    }
}

/// The upper-α quantile `x > 0` with `P(X > x) = α` (0 < α < 0.5) of a statrs
/// distribution whose survival function is 1 at 0 (F, χ²) or 1/2 (standard normal).
///
/// statrs's own `inverse_cdf` is not used: for the Gamma family it stops after 8
/// bisection and 4 Newton steps, and for the F distribution it runs AS 64, which we
/// measured up to 1.6e-3 (χ², h = 250, α = 0.001) and 6.9e-6 (F, ν = 1e5) away from
/// scipy, and which never returns for ν = 1e8. Instead this solves `sf(x) = α` on
/// statrs's survival function by Newton steps (derivative: the density) kept inside a
/// bisection bracket, until a step changes x by at most 2ε relative (or the bracket is
/// 4ε wide): at most 1100 doublings to bracket and 200 refinements, so it always ends.
pub(crate) fn upper_quantile<D>(d: &D, alpha: f64) -> Result<f64, PcaError>
where
    D: ContinuousCDF<f64, f64> + Continuous<f64, f64>,
{
    let failed = || PcaError::NonFinite {
        what: format!("the upper {alpha} quantile (no root of the survival function)"),
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut doublings = 0;
    while d.sf(hi) > alpha {
        lo = hi;
        hi *= 2.0;
        doublings += 1;
        if doublings > 1100 || !hi.is_finite() {
            return Err(failed());
        }
    }
    let mut x = 0.5 * (lo + hi);
    for _ in 0..200 {
        let s = d.sf(x);
        if !s.is_finite() {
            return Err(failed());
        }
        if s > alpha {
            lo = x;
        } else if s < alpha {
            hi = x;
        } else {
            return Ok(x);
        }
        // Newton on sf(x) − α (sf' = −pdf); bisect when the step leaves the bracket.
        let step = x + (s - alpha) / d.pdf(x);
        if step > lo && step < hi && step.is_finite() {
            if (step - x).abs() <= 2.0 * f64::EPSILON * x {
                return Ok(step);
            }
            x = step;
        } else {
            x = 0.5 * (lo + hi);
            if hi - lo <= 4.0 * f64::EPSILON * hi {
                return Ok(x);
            }
        }
    }
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(failed())
    }
}

/// Per-row monitoring statistics for the first k components (see
/// [`Components::project_with_statistics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RowStatistics {
    /// Hotelling's `T² = Σ_{i≤k} score_i² / λ_i` per row (dimensionless). Length rows.
    pub t2: Vec<f64>,
    /// `SPE = ‖x̃ − U_k U_kᵀ x̃‖²` per row, in squared (component-space) units. Length rows.
    pub spe: Vec<f64>,
    /// Per-variable contributions, when asked for.
    pub contributions: Option<Contributions>,
}

/// Per-variable contributions (each rows×m) by the *complete decomposition* of a
/// quadratic index `xᵀ M x = ‖M^{1/2} x‖²` (Alcala & Qin, 2011): `c_j = (M^{1/2} x̃)_j²`.
/// They are non-negative and sum over j to the index exactly (up to the
/// orthonormality of U). For SPE, `M = I − U_k U_kᵀ` is its own square root, so `c_j` is
/// the squared residual of variable j. For T², `M = U_k Λ_k⁻¹ U_kᵀ` and
/// `M^{1/2} = U_k Λ_k^{-1/2} U_kᵀ`, so `c_j = (U_k z)_j²` with z the whitened scores.
/// Like every contribution that sums to T², these smear a fault in one variable over
/// correlated variables; the largest contribution is a pointer, not a diagnosis.
#[derive(Debug, Clone, PartialEq)]
pub struct Contributions {
    /// T² contributions (rows×m, dimensionless).
    pub t2: DMatrix<f64>,
    /// SPE contributions (rows×m, squared units): squared residual per variable.
    pub spe: DMatrix<f64>,
}

/// Counts of rows over a limit (strictly greater).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutlierCounts {
    /// Rows with `T² > limits.t2`.
    pub t2: usize,
    /// Rows with `SPE > limits.spe`.
    pub spe: usize,
}

impl RowStatistics {
    /// Per-row flags `(T² > limit, SPE > limit)`, each of length rows.
    pub fn flags(&self, limits: &Limits) -> (Vec<bool>, Vec<bool>) {
        (
            self.t2.iter().map(|v| *v > limits.t2).collect(),
            self.spe.iter().map(|v| *v > limits.spe).collect(),
        )
    }

    /// How many rows are over each limit.
    pub fn count_over(&self, limits: &Limits) -> OutlierCounts {
        OutlierCounts {
            t2: self.t2.iter().filter(|v| **v > limits.t2).count(),
            spe: self.spe.iter().filter(|v| **v > limits.spe).count(),
        }
    }
}

impl Components {
    /// [`Components::project`] and the rows' monitoring statistics in one pass:
    /// T² and SPE always, [`Contributions`] when `contributions` is set (one more
    /// m×k×rows product and two rows×m matrices). Rows are row-major, rows×n, in the
    /// fit's input units (for a standardised model: already scaled by
    /// [`super::standardize::Standardizer::scale_rows`]).
    ///
    /// # Errors
    /// As [`Components::project`].
    pub fn project_with_statistics(
        &self,
        x: &[f64],
        k: usize,
        whiten: bool,
        reconstruct: bool,
        contributions: bool,
    ) -> Result<(Projection, RowStatistics), PcaError> {
        let mut proj = self.project(x, k, false, reconstruct)?;
        let lam = &self.eigenvalues[..k];
        let t2: Vec<f64> = proj
            .scores
            .row_iter()
            .map(|s| s.iter().zip(lam).map(|(v, l)| v * v / l).sum())
            .collect();
        let spe = proj.residual_norms.iter().map(|v| v * v).collect();
        let contributions = contributions.then(|| self.contributions(x, k, &proj.scores));
        if whiten {
            for (i, mut col) in proj.scores.column_iter_mut().enumerate() {
                col /= lam[i].sqrt();
            }
        }
        Ok((
            proj,
            RowStatistics {
                t2,
                spe,
                contributions,
            },
        ))
    }

    /// T² and SPE (and contributions if asked) of rows, without keeping scores: what
    /// scoring an ingested batch needs.
    ///
    /// # Errors
    /// As [`Components::project`].
    pub fn statistics(
        &self,
        x: &[f64],
        k: usize,
        contributions: bool,
    ) -> Result<RowStatistics, PcaError> {
        Ok(self
            .project_with_statistics(x, k, false, false, contributions)?
            .1)
    }

    /// Complete-decomposition contributions of already validated rows `x` with their
    /// raw scores (rows×k).
    fn contributions(&self, x: &[f64], k: usize, scores: &DMatrix<f64>) -> Contributions {
        let n = self.mean.len();
        let rows = x.len() / n;
        let mut xc = DMatrix::from_column_slice(n, rows, x);
        for mut col in xc.column_iter_mut() {
            col -= &self.mean;
        }
        let mut full = match &self.regression {
            None => xc,
            Some(w) => linalg::mul(w, false, &xc, false),
        };
        let uk = self.vectors.columns(0, k).into_owned();
        let mut z = scores.transpose(); // k×rows
                                        // residual = full − U_k s (m×rows), in place
        linalg::gemm(&mut full, Accum::Add, &uk, false, &z, false, -1.0);
        for (i, mut row) in z.row_iter_mut().enumerate() {
            row /= self.eigenvalues[i].sqrt();
        }
        let w = linalg::mul(&uk, false, &z, false); // U_k Λ^{-1/2} s, m×rows
        Contributions {
            t2: w.transpose().map(|v| v * v),
            spe: full.transpose().map(|v| v * v),
        }
    }
}
