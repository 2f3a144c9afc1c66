//! The ordered loss of Oftadeh, Shen, Wang & Shell (ICML 2020) and plain MSE, value and
//! gradient side by side, in closed form (docs/DESIGN.md §3).
//!
//! With decoder `A` (n_y×p), encoder `B` (p×n), scatters `Σ_xx` (n×n), `Σ_yx` (n_y×n),
//! `T = diag(p, …, 1)` and `S[i,j] = p − max(i,j) + 1` (1-based):
//!
//! ```text
//! L(A,B)  = Σ_{i=1..p} ‖Y − A I_{i;p} B X‖²_F
//!         = p·tr Σ_yy − 2·tr(A T B Σ_xy) + tr(Bᵀ (S ∘ AᵀA) B Σ_xx)
//! ∂L/∂B   = −2 (T Aᵀ Σ_yx − (S ∘ AᵀA) B Σ_xx)
//! ∂L/∂A   = −2 (Σ_yx Bᵀ T − A (S ∘ (B Σ_xx Bᵀ)))
//! ```
//!
//! MSE `‖Y − ABX‖²_F` is the same expression with one copy of `tr Σ_yy`, `T = I` and
//! `S = 11ᵀ`, so both losses share one implementation through [`Weights`]. Cost:
//! O(p n² + p² n), never a loop over the p terms.

use nalgebra::{DMatrix, DVector};

use super::linalg;

/// The weights that distinguish the ordered loss from MSE.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// Number of copies of `tr Σ_yy` in the loss (p for the ordered loss, 1 for MSE).
    pub copies: f64,
    /// Diagonal of `T` (length p).
    pub t: DVector<f64>,
    /// `S` (p×p).
    pub s: DMatrix<f64>,
}

impl Weights {
    /// The ordered loss on p components: `T = diag(p, …, 1)`, `S[i,j] = p − max(i,j) + 1`.
    pub fn ordered(p: usize) -> Self {
        Self {
            copies: p as f64,
            t: DVector::from_fn(p, |i, _| (p - i) as f64),
            s: DMatrix::from_fn(p, p, |i, j| (p - i.max(j)) as f64),
        }
    }

    /// Plain mean squared error of the rank-p model: `T = I`, `S = 11ᵀ`.
    pub fn mse(p: usize) -> Self {
        Self {
            copies: 1.0,
            t: DVector::from_element(p, 1.0),
            s: DMatrix::from_element(p, p, 1.0),
        }
    }
}

/// Second moments a loss is evaluated on: `Σ_xx` (n×n, symmetric), `Σ_yx` (n_y×n) and
/// `tr Σ_yy`. For an autoencoder pass `Σ_xx` as `syx` too. Scatters or covariances both
/// work; the loss scales with them.
#[derive(Debug, Clone, Copy)]
pub struct Moments<'a> {
    /// `Σ_xx` (n×n).
    pub sxx: &'a DMatrix<f64>,
    /// `Σ_yx` (n_y×n).
    pub syx: &'a DMatrix<f64>,
    /// `tr Σ_yy`.
    pub tr_syy: f64,
}

/// `L(A, B)` in closed form. `a`: n_y×p, `b`: p×n.
pub fn value(w: &Weights, a: &DMatrix<f64>, b: &DMatrix<f64>, m: Moments<'_>) -> f64 {
    let syx_bt = linalg::mul(m.syx, false, b, true); // n_y×p
    let cross: f64 = (0..a.ncols())
        .map(|i| w.t[i] * a.column(i).dot(&syx_bt.column(i)))
        .sum();
    let ata = linalg::mul(a, true, a, false);
    let bsb = bsxx_bt(b, m.sxx);
    w.copies * m.tr_syy - 2.0 * cross + w.s.component_mul(&ata).component_mul(&bsb).sum()
}

/// `(∂L/∂A, ∂L/∂B)` in closed form, shapes n_y×p and p×n.
pub fn gradient(
    w: &Weights,
    a: &DMatrix<f64>,
    b: &DMatrix<f64>,
    m: Moments<'_>,
) -> (DMatrix<f64>, DMatrix<f64>) {
    let t = DMatrix::from_diagonal(&w.t);
    // ∂L/∂B = −2 (T Aᵀ Σ_yx − (S ∘ AᵀA) B Σ_xx)
    let ata = linalg::mul(a, true, a, false);
    let b_sxx = linalg::mul(b, false, m.sxx, false); // p×n
    let at_syx = linalg::mul(a, true, m.syx, false); // p×n
    let grad_b = (&t * at_syx - w.s.component_mul(&ata) * &b_sxx) * -2.0;
    // ∂L/∂A = −2 (Σ_yx Bᵀ T − A (S ∘ (B Σ_xx Bᵀ)))
    let bsb = linalg::mul(&b_sxx, false, b, true);
    let syx_bt = linalg::mul(m.syx, false, b, true);
    let grad_a = (syx_bt * &t - a * w.s.component_mul(&bsb)) * -2.0;
    (grad_a, grad_b)
}

/// `B Σ_xx Bᵀ` (p×p), symmetrised.
fn bsxx_bt(b: &DMatrix<f64>, sxx: &DMatrix<f64>) -> DMatrix<f64> {
    let bs = linalg::mul(b, false, sxx, false);
    let m = linalg::mul(&bs, false, b, true);
    (&m + m.transpose()) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn randn(rng: &mut StdRng, r: usize, c: usize) -> DMatrix<f64> {
        DMatrix::from_fn(r, c, |_, _| {
            rng.sample::<f64, _>(rand_distr::StandardNormal)
        })
    }

    /// The definition: Σ_i ‖Y − A I_{i;p} B X‖²_F with rows as samples (X: N×n).
    fn sum_of_terms(a: &DMatrix<f64>, b: &DMatrix<f64>, x: &DMatrix<f64>, y: &DMatrix<f64>) -> f64 {
        let p = a.ncols();
        (1..=p)
            .map(|i| {
                let ai = a.columns(0, i);
                let bi = b.rows(0, i);
                let recon = x * bi.transpose() * ai.transpose();
                (y - recon).norm_squared()
            })
            .sum()
    }

    struct Problem {
        x: DMatrix<f64>,
        y: DMatrix<f64>,
        sxx: DMatrix<f64>,
        syx: DMatrix<f64>,
        tr_syy: f64,
    }

    fn problem(seed: u64, n: usize, ny: Option<usize>) -> Problem {
        let mut rng = StdRng::seed_from_u64(seed);
        let x = randn(&mut rng, 40, n);
        let y = match ny {
            None => x.clone(),
            Some(m) => &x * randn(&mut rng, n, m) + randn(&mut rng, 40, m) * 0.1,
        };
        Problem {
            sxx: x.transpose() * &x,
            syx: y.transpose() * &x,
            tr_syy: (y.transpose() * &y).trace(),
            x,
            y,
        }
    }

    fn check_closed_form(ny: Option<usize>) {
        let (n, p) = (7, 4);
        let pr = problem(7, n, ny);
        let mut rng = StdRng::seed_from_u64(3);
        let a = randn(&mut rng, ny.unwrap_or(n), p);
        let b = randn(&mut rng, p, n);
        let m = Moments {
            sxx: &pr.sxx,
            syx: &pr.syx,
            tr_syy: pr.tr_syy,
        };
        let closed = value(&Weights::ordered(p), &a, &b, m);
        assert_relative_eq!(
            closed,
            sum_of_terms(&a, &b, &pr.x, &pr.y),
            max_relative = 1e-12
        );
        let mse = value(&Weights::mse(p), &a, &b, m);
        let direct = (&pr.y - &pr.x * b.transpose() * a.transpose()).norm_squared();
        assert_relative_eq!(mse, direct, max_relative = 1e-12);
    }

    #[test]
    fn closed_form_ordered_loss_equals_the_sum_of_p_terms_for_an_autoencoder() {
        check_closed_form(None);
    }

    #[test]
    fn closed_form_ordered_loss_equals_the_sum_of_p_terms_for_regression() {
        check_closed_form(Some(5));
    }

    fn check_gradient(w: &Weights, ny: Option<usize>, seed: u64) {
        let (n, p) = (6, w.t.len());
        let pr = problem(seed, n, ny);
        let mut rng = StdRng::seed_from_u64(seed + 100);
        let a = randn(&mut rng, ny.unwrap_or(n), p);
        let b = randn(&mut rng, p, n);
        let m = Moments {
            sxx: &pr.sxx,
            syx: &pr.syx,
            tr_syy: pr.tr_syy,
        };
        let (ga, gb) = gradient(w, &a, &b, m);
        let h = 1e-5;
        let fd = |which: u8, i: usize, j: usize| {
            let (mut ap, mut am, mut bp, mut bm) = (a.clone(), a.clone(), b.clone(), b.clone());
            if which == 0 {
                ap[(i, j)] += h;
                am[(i, j)] -= h;
            } else {
                bp[(i, j)] += h;
                bm[(i, j)] -= h;
            }
            (value(w, &ap, &bp, m) - value(w, &am, &bm, m)) / (2.0 * h)
        };
        let fa = DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| fd(0, i, j));
        let fb = DMatrix::from_fn(b.nrows(), b.ncols(), |i, j| fd(1, i, j));
        assert!(
            (&ga - &fa).norm() <= 1e-6 * fa.norm(),
            "dL/dA {} vs {}",
            ga,
            fa
        );
        assert!(
            (&gb - &fb).norm() <= 1e-6 * fb.norm(),
            "dL/dB {} vs {}",
            gb,
            fb
        );
    }

    #[test]
    fn ordered_gradients_match_central_differences() {
        for seed in 0..4 {
            check_gradient(&Weights::ordered(3), None, seed);
            check_gradient(&Weights::ordered(3), Some(4), seed);
        }
    }

    #[test]
    fn mse_gradients_match_central_differences() {
        check_gradient(&Weights::mse(3), None, 11);
        check_gradient(&Weights::mse(3), Some(4), 12);
    }

    #[test]
    fn ordered_loss_minimum_is_attained_by_the_ordered_eigenvectors() {
        // L* = p·tr Σ_yy − Σ_i (p−i+1) λ_i, reached at A = U_p, B = U_pᵀ.
        let pr = problem(5, 6, None);
        let p = 3;
        let (vals, vecs) = linalg::eigh_desc(&pr.sxx).expect("eigh");
        let u = vecs.columns(0, p).into_owned();
        let m = Moments {
            sxx: &pr.sxx,
            syx: &pr.sxx,
            tr_syy: pr.tr_syy,
        };
        let l = value(&Weights::ordered(p), &u, &u.transpose(), m);
        let lstar = p as f64 * pr.tr_syy - (0..p).map(|i| (p - i) as f64 * vals[i]).sum::<f64>();
        assert_relative_eq!(l, lstar, max_relative = 1e-12);
        // Swapping two columns (same subspace, wrong order) costs more under the ordered
        // loss but not under MSE.
        let mut swapped = u.clone();
        swapped.swap_columns(0, 1);
        assert!(value(&Weights::ordered(p), &swapped, &swapped.transpose(), m) > l * (1.0 + 1e-6));
        let mse_u = value(&Weights::mse(p), &u, &u.transpose(), m);
        let mse_s = value(&Weights::mse(p), &swapped, &swapped.transpose(), m);
        assert_relative_eq!(mse_u, mse_s, max_relative = 1e-10);
    }
}
