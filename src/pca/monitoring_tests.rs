//! Checks of `monitoring` and `standardize` against independent references: nalgebra's
//! `SymmetricEigen` of covariances computed directly from the rows (not the faer path
//! the core uses), scipy's distributions through `tests/reference/monitoring_limits.py`,
//! and false-alarm rates of fresh Gaussian rows.

#![allow(clippy::unwrap_used, reason = "tests")]
#![allow(
    clippy::needless_range_loop,
    reason = "index loops compare several arrays element by element"
)]

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{rngs::StdRng, Rng, SeedableRng};

use statrs::distribution::{ChiSquared, FisherSnedecor, Normal};

use super::monitoring::upper_quantile;
use super::*;

fn randn(rng: &mut StdRng, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| {
        rng.sample::<f64, _>(rand_distr::StandardNormal)
    })
}

/// Row-major copy of an N×n matrix.
fn rows_from(x: &DMatrix<f64>) -> Vec<f64> {
    x.transpose().as_slice().to_vec()
}

/// Reference eigenpairs by nalgebra, descending.
fn eigh_ref(c: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    let e = SymmetricEigen::new(c.clone());
    let mut idx: Vec<usize> = (0..c.nrows()).collect();
    idx.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
    let vals = idx.iter().map(|&i| e.eigenvalues[i]).collect();
    let vecs = DMatrix::from_fn(c.nrows(), c.nrows(), |r, j| e.eigenvectors[(r, idx[j])]);
    (vals, vecs)
}

/// Mean (n) and covariance with divisor N − 1 (n×n), directly from the rows of `x`.
fn mean_and_covariance(x: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let mean = x.row_mean().transpose();
    let mut xc = x.clone();
    for mut r in xc.row_iter_mut() {
        r -= mean.transpose();
    }
    let c = xc.transpose() * &xc / (x.nrows() as f64 - 1.0);
    (mean, (&c + c.transpose()) * 0.5)
}

/// Rows `x = μ + D (A f + e)`: `latent` factors with loadings A (n×latent), unit
/// Gaussian f, noise e with standard deviations 0.1..0.5, per-variable units D spanning
/// 1e-3..1e4 and offsets μ up to 1e5 (mixed-unit plant data).
struct Plant {
    mean: DVector<f64>,
    /// The rows' covariance square root: x = μ + L z with z standard normal.
    root: DMatrix<f64>,
}

impl Plant {
    fn new(rng: &mut StdRng, n: usize, latent: usize) -> Self {
        let a = randn(rng, n, latent);
        let units = DVector::from_fn(n, |i, _| 10f64.powf(-3.0 + 7.0 * (i as f64) / n as f64));
        let noise = DVector::from_fn(n, |_, _| rng.gen_range(0.1..0.5));
        let mut root = DMatrix::zeros(n, latent + n);
        for i in 0..n {
            for j in 0..latent {
                root[(i, j)] = units[i] * a[(i, j)];
            }
            root[(i, latent + i)] = units[i] * noise[i];
        }
        let mean = DVector::from_fn(n, |i, _| units[i] * rng.gen_range(-10.0..10.0));
        Self { mean, root }
    }

    /// `rows` fresh rows (rows×n).
    fn sample(&self, rng: &mut StdRng, rows: usize) -> DMatrix<f64> {
        let z = randn(rng, self.root.ncols(), rows);
        let mut x = linalg::mul(&self.root, false, &z, false);
        for mut col in x.column_iter_mut() {
            col += &self.mean;
        }
        x.transpose()
    }
}

fn accumulate(x: &DMatrix<f64>) -> Accumulator {
    let mut acc = Accumulator::new(x.ncols(), None, None).unwrap();
    let rows = rows_from(x);
    for chunk in rows.chunks(257 * x.ncols()) {
        acc.update(chunk, None).unwrap();
    }
    acc
}

/// A fit to `tol` radians through the trainer, as the service runs it (repeated fits
/// until converged).
fn fit(target: &FitTarget, p: usize, tol: f64) -> Components {
    let mut params = FitParams::new(p, OptimizerKind::Subspace);
    params.tolerance = tol;
    let mut trainer = Trainer::new(params.check(target.matrix.nrows()).unwrap());
    for _ in 0..20 {
        let c = trainer.fit(target, None).unwrap();
        if c.converged {
            return c;
        }
    }
    panic!("no convergence to {tol} rad in 1000 steps");
}

/// Relative difference, with the reference as the scale.
fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Eigenvectors aligned in sign with `found` (columns 0..k).
fn aligned(reference: &DMatrix<f64>, found: &DMatrix<f64>, k: usize) -> DMatrix<f64> {
    let mut v = reference.columns(0, k).into_owned();
    for i in 0..k {
        if v.column(i).dot(&found.column(i)) < 0.0 {
            v.column_mut(i).neg_mut();
        }
    }
    v
}

/// Reference T², SPE and complete-decomposition contributions of centred rows `xc`
/// (n×rows) from eigenvectors `v` (n×k) and eigenvalues `lam`.
struct RefStats {
    t2: Vec<f64>,
    spe: Vec<f64>,
    c_t2: DMatrix<f64>,
    c_spe: DMatrix<f64>,
}

fn reference_stats(xc: &DMatrix<f64>, v: &DMatrix<f64>, lam: &[f64]) -> RefStats {
    let k = v.ncols();
    let scores = v.transpose() * xc; // k×rows
    let resid = xc - v * &scores;
    let inv_sqrt = DMatrix::from_diagonal(&DVector::from_fn(k, |i, _| 1.0 / lam[i].sqrt()));
    let half = v * inv_sqrt * &scores; // M^{1/2} x
    RefStats {
        t2: (0..xc.ncols())
            .map(|j| (0..k).map(|i| scores[(i, j)].powi(2) / lam[i]).sum())
            .collect(),
        spe: resid.column_iter().map(|c| c.norm_squared()).collect(),
        c_t2: half.transpose().map(|x| x * x),
        c_spe: resid.transpose().map(|x| x * x),
    }
}

/// Checks statistics against a reference: T² and SPE per row to `tol` relative, each
/// contribution to `tol` relative to its row's index, and the contributions' sums to the
/// statistics themselves. Returns the largest errors seen (t2, spe, contributions).
fn compare(stats: &RowStatistics, r: &RefStats, tol: f64) -> (f64, f64, f64) {
    let (mut et2, mut espe, mut econ) = (0.0f64, 0.0f64, 0.0f64);
    let c = stats.contributions.as_ref().unwrap();
    for row in 0..r.t2.len() {
        et2 = et2.max(rel(stats.t2[row], r.t2[row]));
        espe = espe.max(rel(stats.spe[row], r.spe[row]));
        for j in 0..r.c_t2.ncols() {
            econ = econ.max((c.t2[(row, j)] - r.c_t2[(row, j)]).abs() / r.t2[row]);
            econ = econ.max((c.spe[(row, j)] - r.c_spe[(row, j)]).abs() / r.spe[row]);
        }
        assert!(rel(c.t2.row(row).sum(), stats.t2[row]) < 1e-12);
        assert!(rel(c.spe.row(row).sum(), stats.spe[row]) < 1e-12);
    }
    eprintln!("max relative error: t2 {et2:.2e}, spe {espe:.2e}, contributions {econ:.2e}");
    assert!(et2 < tol && espe < tol && econ < tol, "{et2} {espe} {econ}");
    (et2, espe, econ)
}

// ------------------------------------------------------------------ per-row statistics

#[test]
fn t2_spe_and_contributions_match_a_full_eigendecomposition_of_the_same_data() {
    let mut rng = StdRng::seed_from_u64(17);
    let plant = Plant::new(&mut rng, 30, 6);
    let x = plant.sample(&mut rng, 4000);
    let target = accumulate(&x).target().unwrap();
    let comps = fit(&target, 8, 1e-11);
    let (mean, c) = mean_and_covariance(&x);
    let (lam, vecs) = eigh_ref(&c);
    let q = plant.sample(&mut rng, 64);
    let mut qc = q.transpose();
    for mut col in qc.column_iter_mut() {
        col -= &mean;
    }
    for k in [3, 6, 8] {
        for i in 0..k {
            assert!(rel(comps.eigenvalues[i], lam[i]) < 1e-9);
        }
        let v = aligned(&vecs, &comps.vectors, k);
        let reference = reference_stats(&qc, &v, &lam[..k]);
        let (proj, stats) = comps
            .project_with_statistics(&rows_from(&q), k, true, false, true)
            .unwrap();
        compare(&stats, &reference, 1e-9);
        // Whitened scores squared sum to T².
        for row in 0..q.nrows() {
            assert!(rel(proj.scores.row(row).norm_squared(), stats.t2[row]) < 1e-12);
        }
        // `statistics` is the same numbers without the projection.
        let plain = comps.statistics(&rows_from(&q), k, false).unwrap();
        assert_eq!(plain.t2, stats.t2);
        assert_eq!(plain.spe, stats.spe);
        assert!(plain.contributions.is_none());
    }
}

#[test]
fn statistics_reject_bad_rows_and_k_like_project() {
    let mut rng = StdRng::seed_from_u64(3);
    let plant = Plant::new(&mut rng, 6, 2);
    let target = accumulate(&plant.sample(&mut rng, 200)).target().unwrap();
    let comps = fit(&target, 3, 1e-8);
    let row = rows_from(&plant.sample(&mut rng, 1));
    assert!(matches!(
        comps.statistics(&row, 0, false),
        Err(PcaError::InvalidParam { name: "k", .. })
    ));
    assert!(matches!(
        comps.statistics(&row, 4, false),
        Err(PcaError::InvalidParam { name: "k", .. })
    ));
    assert!(matches!(
        comps.statistics(&row[..5], 2, false),
        Err(PcaError::DimensionMismatch { .. })
    ));
    let mut bad = row.clone();
    bad[4] = f64::NAN;
    assert_eq!(
        comps.statistics(&bad, 2, true),
        Err(PcaError::NonFinite {
            what: "x row 0, column 4".into()
        })
    );
    assert_eq!(comps.statistics(&[], 2, true), Err(PcaError::EmptyBatch));
}

// ------------------------------------------------------------------ θ and its precision

/// A target whose covariance (divisor N − 1) is `U diag(λ) Uᵀ`, U random orthogonal.
fn spectrum_target(rng: &mut StdRng, lambdas: &[f64], samples: f64) -> FitTarget {
    let n = lambdas.len();
    let u = randn(rng, n, n).qr().q();
    let scale = (samples - 1.0) / samples; // FitTarget::matrix has divisor N
    let c = &u * DMatrix::from_diagonal(&DVector::from_column_slice(lambdas)) * u.transpose();
    let c = (&c + c.transpose()) * (0.5 * scale);
    FitTarget {
        trace_yy: c.trace(),
        trace_xx: c.trace(),
        matrix: c,
        regression: None,
        mean_x: DVector::zeros(n),
        mean_y: None,
        count: samples,
    }
}

/// Spectrum: `top` leading eigenvalues, then `tail` equal-ish eigenvalues holding
/// `fraction` of the total variance.
fn spectrum(top: &[f64], tail: usize, fraction: f64) -> Vec<f64> {
    let lead: f64 = top.iter().sum();
    let each = fraction / (1.0 - fraction) * lead / tail as f64;
    top.iter()
        .copied()
        .chain((0..tail).map(|i| each * (1.5 - i as f64 / tail as f64)))
        .collect()
}

#[test]
fn theta_matches_the_discarded_eigenvalues_where_the_trace_subtraction_cannot() {
    let mut rng = StdRng::seed_from_u64(5);
    let top = [8.0, 5.0, 3.0, 2.0, 1.2];
    for fraction in [0.3, 1e-3, 2e-6] {
        let target = spectrum_target(&mut rng, &spectrum(&top, 40, fraction), 1e4);
        let comps = fit(&target, 5, 1e-11);
        let moments = LimitMoments::new(&target, &comps).unwrap();
        let c = &target.matrix * (1e4 / (1e4 - 1.0));
        let (lam, _) = eigh_ref(&c);
        let c2 = &c * &c;
        let literal_traces = [c.trace(), c2.trace(), (&c2 * &c).trace()];
        assert!(rel(moments.trace, c.trace()) < 1e-13);
        assert!(rel(moments.frobenius_sq, c.norm_squared()) < 1e-13);
        for k in [2, 5] {
            let theta = moments.theta(&comps.eigenvalues, k);
            let mut worst_literal = 0.0f64;
            for i in 0..3 {
                let reference: f64 = lam[k..].iter().map(|l| l.powi(i as i32 + 1)).sum();
                let err = rel(theta[i], reference);
                let literal =
                    literal_traces[i] - lam[..k].iter().map(|l| l.powi(i as i32 + 1)).sum::<f64>();
                worst_literal = worst_literal.max(rel(literal, reference));
                eprintln!(
                    "fraction {fraction:e} k {k} θ{}: deflated error {err:.1e}, literal {:.1e}",
                    i + 1,
                    rel(literal, reference)
                );
                assert!(err < 1e-9, "θ{} off by {err:e}", i + 1);
            }
            if fraction < 1e-5 && k == 5 {
                // The subtraction tr C³ − Σλ³ has lost every digit of θ₃ here, even
                // with reference eigenvalues: why the moments are deflated instead.
                assert!(worst_literal > 1e-3, "{worst_literal}");
            }
        }
    }
}

#[test]
fn a_discarded_variance_within_round_off_is_refused_with_the_usable_k() {
    let mut rng = StdRng::seed_from_u64(6);
    // Rank 5 plus a tail of 1e-14 of the variance.
    let target = spectrum_target(
        &mut rng,
        &spectrum(&[4.0, 3.0, 2.0, 1.5, 1.0], 20, 1e-14),
        1e4,
    );
    let comps = fit(&target, 5, 1e-9);
    let moments = LimitMoments::new(&target, &comps).unwrap();
    let l4 = limits(&comps.eigenvalues, 4, 0.01, 1e4, &moments).unwrap();
    assert!(l4.spe > l4.theta[0] && l4.spe.is_finite());
    let err = limits(&comps.eigenvalues, 5, 0.01, 1e4, &moments).unwrap_err();
    let PcaError::InvalidParam { name: "k", reason } = err else {
        panic!("{err:?}")
    };
    assert!(
        reason.contains("round-off") && reason.contains("use k ≤ 4"),
        "{reason}"
    );
    // The statistics themselves stay finite at that k.
    let q = rows_from(&randn(&mut rng, 10, 25));
    let s = comps.statistics(&q, 5, true).unwrap();
    assert!(s.t2.iter().chain(&s.spe).all(|v| v.is_finite()));
}

#[test]
fn limits_validate_alpha_k_samples_and_the_eigenvalues_fit() {
    let mut rng = StdRng::seed_from_u64(7);
    let target = spectrum_target(&mut rng, &spectrum(&[3.0, 2.0, 1.0], 6, 0.2), 50.0);
    let comps = fit(&target, 3, 1e-9);
    let m = LimitMoments::new(&target, &comps).unwrap();
    let ev = &comps.eigenvalues;
    for alpha in [0.0, 0.5, -0.1, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            limits(ev, 2, alpha, 50.0, &m),
            Err(PcaError::InvalidParam { name: "alpha", .. })
        ));
    }
    for k in [0, 4] {
        assert!(matches!(
            limits(ev, k, 0.01, 50.0, &m),
            Err(PcaError::InvalidParam { name: "k", .. })
        ));
    }
    assert!(matches!(
        limits(&ev[..2], 2, 0.01, 50.0, &m),
        Err(PcaError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        limits(ev, 2, 0.01, 51.0, &m),
        Err(PcaError::Incompatible { .. })
    ));
    // k must stay below N.
    let few = LimitMoments {
        samples: 3.0,
        ..m.clone()
    };
    let err = limits(ev, 3, 0.01, 3.0, &few).unwrap_err();
    assert!(
        matches!(err, PcaError::InvalidParam { name: "k", ref reason } if reason.contains("below the sample count"))
    );
    // Moments of another fit are refused.
    let mut other = comps.clone();
    other.samples = 49.0;
    assert!(matches!(
        LimitMoments::new(&target, &other),
        Err(PcaError::Incompatible { .. })
    ));
}

// ------------------------------------------------------------------ limits vs scipy

/// `python3` with numpy and scipy, or `None` (then the test is skipped unless
/// `STREAMPCA_REQUIRE_PYTHON=1`, which makes absence a failure).
fn python_with_scipy() -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import numpy, scipy.stats"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3");
    }
    assert!(
        std::env::var("STREAMPCA_REQUIRE_PYTHON").as_deref() != Ok("1"),
        "STREAMPCA_REQUIRE_PYTHON=1 but python3 with numpy and scipy is not available"
    );
    eprintln!("skipped: python3 with numpy and scipy not available");
    None
}

const KS: [usize; 3] = [1, 3, 6];
const ALPHAS: [f64; 3] = [0.001, 0.01, 0.05];

/// Limits by the service's path: accumulator → (correlation) target → trainer →
/// moments → limits, for every (k, α) of KS × ALPHAS.
fn service_limits(target: &FitTarget, p: usize, ks: &[usize]) -> Vec<Limits> {
    let comps = fit(target, p, 1e-11);
    let moments = LimitMoments::new(target, &comps).unwrap();
    ks.iter()
        .flat_map(|&k| ALPHAS.iter().map(move |&a| (k, a)))
        .map(|(k, a)| limits(&comps.eigenvalues, k, a, comps.samples, &moments).unwrap())
        .collect()
}

fn check_against(ours: &[Limits], theirs: &serde_json::Value, worst: &mut [f64; 4]) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (l, r) in ours.iter().zip(theirs) {
        let get = |key: &str| r[key].as_f64().unwrap();
        assert_eq!(l.k as u64, r["k"].as_u64().unwrap());
        let errs = [
            rel(l.t2, get("t2")),
            rel(l.spe, get("spe")),
            rel(l.spe_box, get("spe_box")),
            (0..3)
                .map(|i| rel(l.theta[i], r["theta"][i].as_f64().unwrap()))
                .fold(0.0, f64::max),
        ];
        assert_eq!(l.spe_method == SpeMethod::Box, get("h0") <= 0.0);
        for (w, e) in worst.iter_mut().zip(errs) {
            *w = w.max(e);
        }
        assert!(
            errs.iter().all(|e| *e < 1e-9),
            "k {} α {}: errors {errs:?} (ours {l:?}, scipy {r})",
            l.k,
            l.alpha
        );
    }
}

#[test]
fn limits_match_an_independent_scipy_reference() {
    let Some(python) = python_with_scipy() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(11);
    // Data sets: mixed-unit plant rows, raw and standardised (with a constant column).
    let plant = Plant::new(&mut rng, 20, 4);
    let mut x = plant.sample(&mut rng, 3000);
    x.column_mut(7).fill(42.0);
    let acc = accumulate(&x);
    let raw = service_limits(&acc.target().unwrap(), 6, &KS);
    let (corr, _) = correlation_target(acc.target().unwrap()).unwrap();
    let standardised = service_limits(&corr, 6, &KS);
    // Spectra given directly: a large N, a weighted (non-integer) N, and a spectrum
    // with h₀ ≤ 0 (one dominant discarded eigenvalue over a long flat tail: Box).
    let mut flat = vec![10.0, 5.0];
    flat.extend(std::iter::repeat_n(0.1, 60));
    let spectra: [(Vec<f64>, f64, Vec<usize>); 3] = [
        (
            spectrum(&[9.0, 4.0, 2.0, 1.0, 0.5, 0.3], 30, 0.1),
            2e5,
            vec![1, 3, 6],
        ),
        (spectrum(&[6.0, 3.0, 1.0], 12, 0.05), 1234.5, vec![1, 2, 3]),
        (flat, 800.0, vec![1]),
    ];
    let spectra_limits: Vec<Vec<Limits>> = spectra
        .iter()
        .map(|(lam, n, ks)| {
            let p = ks.iter().copied().max().unwrap();
            service_limits(&spectrum_target(&mut rng, lam, *n), p, ks)
        })
        .collect();
    assert!(spectra_limits[2]
        .iter()
        .all(|l| l.spe_method == SpeMethod::Box));
    // Quantiles alone over a grid: F with ν = N − k up to 1e5 (where statrs's
    // incomplete beta still carries 1e-9, measured 2.3e-10 at 1e5) and beyond, χ² with h from 0.05 to 1e5, normal.
    let mut grid = Vec::new();
    for a in [0.001, 0.01, 0.05, 0.3] {
        for k in [1.0, 2.0, 3.0, 6.0, 20.0, 100.0] {
            for nu in [5.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e8, 1e10] {
                grid.push(("f", k, nu, a));
            }
        }
        for h in [0.05, 0.3, 1.0, 6.0, 13.2, 250.0, 2000.0, 1e5] {
            grid.push(("chi2", h, 0.0, a));
        }
    }
    for a in [1e-6, 0.001, 0.01, 0.05, 0.3, 0.49] {
        grid.push(("norm", 0.0, 0.0, a));
    }
    let fixture = serde_json::json!({
        "datasets": [
            {"dim": 20, "rows": rows_from(&x), "standardize": false, "ks": KS, "alphas": ALPHAS},
            {"dim": 20, "rows": rows_from(&x), "standardize": true, "ks": KS, "alphas": ALPHAS},
        ],
        "spectra": spectra.iter().map(|(lam, n, ks)| serde_json::json!({
            "eigenvalues": lam, "samples": n, "ks": ks, "alphas": ALPHAS,
        })).collect::<Vec<_>>(),
        "quantiles": grid.iter().map(|(d, a, b, alpha)| serde_json::json!([d, a, b, alpha])).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixture.json");
    std::fs::write(&path, serde_json::to_vec(&fixture).unwrap()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/monitoring_limits.py"
    );
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut worst = [0.0; 4];
    check_against(&raw, &reference["datasets"][0], &mut worst);
    check_against(&standardised, &reference["datasets"][1], &mut worst);
    for (i, ours) in spectra_limits.iter().enumerate() {
        check_against(ours, &reference["spectra"][i], &mut worst);
    }
    let (mut within, mut beyond) = (0.0f64, 0.0f64);
    for ((d, a, b, alpha), r) in grid.iter().zip(reference["quantiles"].as_array().unwrap()) {
        let ours = match *d {
            "f" => upper_quantile(&FisherSnedecor::new(*a, *b).unwrap(), *alpha),
            "chi2" => upper_quantile(&ChiSquared::new(*a).unwrap(), *alpha),
            _ => upper_quantile(&Normal::new(0.0, 1.0).unwrap(), *alpha),
        }
        .unwrap();
        let err = rel(ours, r.as_f64().unwrap());
        if *b > 1e5 {
            beyond = beyond.max(err);
        } else {
            within = within.max(err);
        }
    }
    eprintln!("quantiles vs scipy: max relative error {within:.1e} (F with ν ≤ 1e5, χ², normal), {beyond:.1e} (F with ν = 1e6, 1e8, 1e10)");
    assert!(within < 1e-9, "{within}");
    // Beyond ν = 1e5 statrs's incomplete beta loses digits (docs/DESIGN.md §10.3); the
    // quantile still ends, within 1e-5.
    assert!(beyond < 1e-5, "{beyond}");
    eprintln!(
        "max relative error vs scipy: t2 {:.1e}, spe {:.1e}, spe_box {:.1e}, theta {:.1e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

// ------------------------------------------------------------------ false alarms

/// The 99.9 % two-sided normal quantile, for the binomial interval of a rate.
const Z_999: f64 = 3.290_526_731_491_926;

/// Rows over each limit among `rows` fresh rows of `plant`, scored in chunks against a
/// fit through the service's path; `scale` maps rows into a standardised model's space.
fn false_alarm_rates(
    plant: &Plant,
    rng: &mut StdRng,
    comps: &Components,
    limits: &[Limits],
    rows: usize,
    scale: Option<&Standardizer>,
) -> Vec<(f64, f64)> {
    let mut over = vec![(0usize, 0usize); limits.len()];
    for _ in 0..rows / 20_000 {
        let x = rows_from(&plant.sample(rng, 20_000));
        let x = match scale {
            Some(s) => s.scale_rows(&x).unwrap(),
            None => x,
        };
        let stats = comps.statistics(&x, limits[0].k, false).unwrap();
        for (o, l) in over.iter_mut().zip(limits) {
            let c = stats.count_over(l);
            o.0 += c.t2;
            o.1 += c.spe;
        }
    }
    over.iter()
        .map(|(t, s)| (*t as f64 / rows as f64, *s as f64 / rows as f64))
        .collect()
}

#[test]
fn fresh_rows_from_the_fitted_distribution_raise_false_alarms_at_the_rate_alpha() {
    let mut rng = StdRng::seed_from_u64(17);
    // 52 mixed-unit variables driven by 8 latent factors plus sensor noise (a Tennessee
    // Eastman-like plant); k = 8 leaves the sensor noise to the SPE (1.6 % of the
    // correlation matrix's variance; far less of the raw covariance's, which the
    // large-unit variables dominate).
    let plant = Plant::new(&mut rng, 52, 8);
    let train = plant.sample(&mut rng, 5000);
    let acc = accumulate(&train);
    let (fitted, m) = (5000usize, 200_000usize);
    assert_eq!(acc.count().to_bits(), (fitted as f64).to_bits());
    let raw = acc.target().unwrap();
    let (corr, standardizer) = correlation_target(acc.target().unwrap()).unwrap();
    for (name, target, scale) in [
        ("covariance", &raw, None),
        ("correlation", &corr, Some(&standardizer)),
    ] {
        let comps = fit(target, 8, 1e-6);
        let moments = LimitMoments::new(target, &comps).unwrap();
        let alphas = [0.01, 0.05];
        let limits: Vec<Limits> = alphas
            .iter()
            .map(|&a| limits(&comps.eigenvalues, 8, a, comps.samples, &moments).unwrap())
            .collect();
        let rates = false_alarm_rates(&plant, &mut rng, &comps, &limits, m, scale);
        for ((alpha, l), (t2, spe)) in alphas.iter().zip(&limits).zip(rates) {
            let half = Z_999 * (alpha * (1.0 - alpha) / m as f64).sqrt();
            eprintln!(
                "{name} α {alpha}: T² rate {t2:.5} (interval {:.5}..{:.5}), SPE rate {spe:.5} \
                 ({:?}, θ₁/tr C {:.1e}, h₀ {:.3})",
                alpha - half,
                alpha + half,
                l.spe_method,
                l.theta[0] / moments.trace,
                l.h0
            );
            assert!(
                (t2 - alpha).abs() <= half,
                "{name}: T² rate {t2} for α {alpha}"
            );
            assert!(
                (spe - alpha).abs() <= 0.25 * alpha,
                "{name}: SPE rate {spe} for α {alpha}"
            );
        }
    }
}

// ------------------------------------------------------------------ standardisation

#[test]
fn standardised_pca_equals_pca_of_the_explicit_correlation_matrix() {
    let mut rng = StdRng::seed_from_u64(19);
    let plant = Plant::new(&mut rng, 14, 4);
    let mut x = plant.sample(&mut rng, 3000);
    // Column 3 constant; column 9 varies by 1e-9 around 7 (1e-13 of the largest
    // standard deviation, which is ~1e4): numerically constant.
    x.column_mut(3).fill(-2.5);
    for r in 0..x.nrows() {
        x[(r, 9)] = 7.0 + 1e-9 * rng.sample::<f64, _>(rand_distr::StandardNormal);
    }
    let (corr, s) = correlation_target(accumulate(&x).target().unwrap()).unwrap();
    assert_eq!(s.constant_columns(), &[3, 9]);
    // Reference: the correlation matrix of the rows, constant rows/columns zero.
    let (mean, c) = mean_and_covariance(&x);
    let sd = c.diagonal().map(f64::sqrt);
    let keep = |j: usize| j != 3 && j != 9;
    let r = DMatrix::from_fn(14, 14, |i, j| {
        if keep(i) && keep(j) {
            c[(i, j)] / (sd[i] * sd[j])
        } else {
            0.0
        }
    });
    for j in (0..14).filter(|&j| keep(j)) {
        assert!(rel(s.scale()[j], sd[j]) < 1e-12);
    }
    let (lam, vecs) = eigh_ref(&r);
    let comps = fit(&corr, 6, 1e-11);
    let v = aligned(&vecs, &comps.vectors, 6);
    for i in 0..6 {
        assert!(rel(comps.eigenvalues[i], lam[i]) < 1e-9, "λ{i}");
    }
    assert!((&v - &comps.vectors).amax() < 1e-9);
    // Constant variables carry no weight in any component.
    assert!(comps.vectors.row(3).amax() < 1e-12 && comps.vectors.row(9).amax() < 1e-12);
    // Query rows, including a deviation in the constant variables, scored in z space.
    let mut q = plant.sample(&mut rng, 40);
    q.column_mut(3).fill(100.0);
    q.column_mut(9).fill(7.5);
    let z = s.scale_rows(&rows_from(&q)).unwrap();
    let zc = DMatrix::from_fn(14, 40, |j, row| {
        if keep(j) {
            (q[(row, j)] - mean[j]) / sd[j]
        } else {
            0.0
        }
    });
    assert!(
        (DMatrix::from_row_slice(40, 14, &z) - zc.transpose()).amax() < 1e-9,
        "z-scores"
    );
    let reference = reference_stats(&zc, &v.columns(0, 4).into_owned(), &lam[..4]);
    let (proj, stats) = comps
        .project_with_statistics(&z, 4, false, true, true)
        .unwrap();
    compare(&stats, &reference, 1e-9);
    let contrib = stats.contributions.as_ref().unwrap();
    for row in 0..40 {
        for j in [3, 9] {
            assert!(contrib.t2[(row, j)] <= 1e-18 * stats.t2[row]);
            assert!(contrib.spe[(row, j)] <= 1e-18 * stats.spe[row]);
        }
    }
    // Reconstructions back in input units: constant variables at their mean.
    let back = s.unscale_rows(proj.reconstructions.as_ref().unwrap());
    assert!(back.iter().all(|v| v.is_finite()));
    assert!(back
        .column(3)
        .iter()
        .all(|v| v.to_bits() == (-2.5f64).to_bits()));
    // Limits in the same space exist and are finite.
    let moments = LimitMoments::new(&corr, &comps).unwrap();
    assert!(
        rel(moments.trace, 12.0) < 1e-12,
        "tr R = number of non-constant variables"
    );
    let l = limits(&comps.eigenvalues, 4, 0.01, comps.samples, &moments).unwrap();
    assert!(l.t2.is_finite() && l.spe.is_finite());
}

#[test]
fn all_constant_data_and_regression_targets_are_handled_without_nan() {
    let x = DMatrix::from_fn(50, 4, |_, j| j as f64 * 1e6);
    let (corr, s) = correlation_target(accumulate(&x).target().unwrap()).unwrap();
    assert_eq!(s.constant_columns(), &[0, 1, 2, 3]);
    assert!(corr.matrix.iter().all(|v| *v == 0.0) && corr.trace_xx == 0.0);
    let z = s.scale_rows(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(z, vec![0.0; 4]);
    let comps = Trainer::new(FitParams::new(2, OptimizerKind::Subspace).check(4).unwrap())
        .fit(&corr, None)
        .unwrap();
    assert!(comps.is_empty());
    assert!(matches!(
        LimitMoments::new(&corr, &comps),
        Err(PcaError::InvalidParam {
            name: "components",
            ..
        })
    ));
    assert_eq!(
        s.scale_rows(&[1.0, f64::INFINITY, 3.0, 4.0]),
        Err(PcaError::NonFinite {
            what: "x row 0, column 1".into()
        })
    );
    assert!(matches!(
        s.scale_rows(&[1.0, 2.0, 3.0]),
        Err(PcaError::DimensionMismatch { .. })
    ));
    // Standardisation applies to autoencoders only.
    let mut acc = Accumulator::new(2, Some(1), None).unwrap();
    acc.update(&[1.0, 2.0, 3.0, 5.0, 4.0, 1.0], Some(&[1.0, 2.0, 0.5]))
        .unwrap();
    assert!(matches!(
        correlation_target(acc.target().unwrap()),
        Err(PcaError::InvalidParam {
            name: "standardize",
            ..
        })
    ));
}
