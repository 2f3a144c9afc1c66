//! Cross-module checks of the numerical core against independent references: nalgebra's
//! own symmetric eigensolver (not the faer path the core uses), batch covariances
//! computed directly from the rows, and the loss's definition.

#![allow(clippy::unwrap_used, reason = "tests")]
#![allow(
    clippy::needless_range_loop,
    reason = "index loops compare several arrays element by element"
)]

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::loss::{self, Moments, Weights};
use super::optimizer::gradient_descent_step;
use super::*;

fn randn(rng: &mut StdRng, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| {
        rng.sample::<f64, _>(rand_distr::StandardNormal)
    })
}

fn random_orthogonal(rng: &mut StdRng, n: usize) -> DMatrix<f64> {
    randn(rng, n, n).qr().q()
}

/// Reference eigenpairs by nalgebra (descending).
pub(super) fn eigh_ref(c: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    let e = SymmetricEigen::new(c.clone());
    let mut idx: Vec<usize> = (0..c.nrows()).collect();
    idx.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
    let vals = idx.iter().map(|&i| e.eigenvalues[i]).collect();
    let vecs = DMatrix::from_fn(c.nrows(), c.nrows(), |r, j| e.eigenvectors[(r, idx[j])]);
    (vals, vecs)
}

/// Angle between two lines (sign-insensitive), accurate for small angles.
pub(super) fn angle(a: &DVector<f64>, b: &DVector<f64>) -> f64 {
    let (a, b) = (a.normalize(), b.normalize());
    let s = if a.dot(&b) < 0.0 { -1.0 } else { 1.0 };
    let diff = (&a - &b * s).norm();
    let sum = (&a + &b * s).norm();
    2.0 * diff.atan2(sum)
}

fn max_angle(found: &DMatrix<f64>, truth: &DMatrix<f64>, p: usize) -> f64 {
    (0..p)
        .map(|i| angle(&found.column(i).into_owned(), &truth.column(i).into_owned()))
        .fold(0.0, f64::max)
}

/// A target with covariance `U diag(λ) Uᵀ` and a large count.
fn synthetic_target(rng: &mut StdRng, lambdas: &[f64]) -> (FitTarget, DMatrix<f64>) {
    let n = lambdas.len();
    let u = random_orthogonal(rng, n);
    let c = &u * DMatrix::from_diagonal(&DVector::from_column_slice(lambdas)) * u.transpose();
    let c = (&c + c.transpose()) * 0.5;
    let target = FitTarget {
        trace_yy: c.trace(),
        trace_xx: c.trace(),
        matrix: c,
        regression: None,
        mean_x: DVector::zeros(n),
        mean_y: None,
        count: 1e6,
    };
    (target, u)
}

fn rows_from(x: &DMatrix<f64>) -> Vec<f64> {
    // row-major copy of an N×n matrix
    x.transpose().as_slice().to_vec()
}

pub(super) fn sample_covariance(x: &DMatrix<f64>) -> DMatrix<f64> {
    let n = x.nrows() as f64;
    let mean = x.row_mean();
    let mut xc = x.clone();
    for mut r in xc.row_iter_mut() {
        r -= &mean;
    }
    xc.transpose() * &xc / n
}

// ------------------------------------------------------------------ accumulator

#[test]
fn merge_of_shards_equals_one_accumulation_of_all_rows() {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, ny) = (12, 3);
    let x = randn(&mut rng, 900, n).add_scalar(5.0);
    let y = &x * randn(&mut rng, n, ny) + randn(&mut rng, 900, ny);
    let mut whole = Accumulator::new(n, Some(ny), None).unwrap();
    whole.update(&rows_from(&x), Some(&rows_from(&y))).unwrap();
    let mut shards: Vec<Accumulator> = Vec::new();
    for (lo, hi) in [(0, 100), (100, 137), (137, 600), (600, 900)] {
        let mut a = Accumulator::new(n, Some(ny), None).unwrap();
        for start in (lo..hi).step_by(50) {
            let end = (start + 50).min(hi);
            let xs = x.rows(start, end - start).into_owned();
            let ys = y.rows(start, end - start).into_owned();
            a.update(&rows_from(&xs), Some(&rows_from(&ys))).unwrap();
        }
        shards.push(a);
    }
    let mut merged = Accumulator::new(n, Some(ny), None).unwrap();
    for s in &shards {
        merged.merge(s).unwrap();
    }
    let rel = |a: &DMatrix<f64>, b: &DMatrix<f64>| (a - b).norm() / b.norm();
    assert!(rel(&merged.scatter(), &whole.scatter()) < 1e-12);
    assert!(
        rel(
            merged.cross_scatter().unwrap(),
            whole.cross_scatter().unwrap()
        ) < 1e-12
    );
    assert!((merged.mean_x() - whole.mean_x()).norm() / whole.mean_x().norm() < 1e-12);
    assert!((merged.trace_syy() - whole.trace_syy()).abs() / whole.trace_syy() < 1e-12);
    assert!((merged.count() - 900.0).abs() < 1e-9);
    // and against the textbook definition on all rows at once
    let direct = sample_covariance(&x) * 900.0;
    assert!(rel(&whole.scatter(), &direct) < 1e-12);
}

#[test]
fn f32_stream_with_a_large_mean_offset_keeps_the_covariance_accurate() {
    let mut rng = StdRng::seed_from_u64(2);
    let n = 8;
    let scale = DVector::from_fn(n, |i, _| 0.5f64.powi(i as i32));
    let rows: Vec<f32> = (0..20_000)
        .flat_map(|_| {
            let z = randn(&mut rng, 1, n);
            (0..n)
                .map(|i| (1e4 + z[i] * scale[i]) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut acc = Accumulator::new(n, None, None).unwrap();
    for chunk in rows.chunks(256 * n) {
        acc.update(chunk, None).unwrap();
    }
    // Reference: two-pass in f64 on the same f32 values (exactly representable).
    let x = DMatrix::from_row_slice(
        rows.len() / n,
        n,
        &rows.iter().map(|v| f64::from(*v)).collect::<Vec<_>>(),
    );
    let reference = sample_covariance(&x);
    let mut ours = acc.scatter();
    ours /= acc.count();
    let rel = (&ours - &reference).norm() / reference.norm();
    assert!(rel < 1e-6, "relative error {rel:e}");
}

#[test]
fn padded_scatter_storage_at_n_512_gives_the_weighted_covariance_and_round_trips() {
    // n = 512 is stored with padding rows (4K aliasing, see `scatter_rows`). Check the
    // update with forgetting, the merge, the persisted parts and the target against a
    // direct weighted computation on all rows.
    let mut rng = StdRng::seed_from_u64(12);
    let (n, rows, h) = (512, 300, 150.0);
    let x = randn(&mut rng, rows, n).add_scalar(3.0);
    let mut acc = Accumulator::new(n, None, Some(h)).unwrap();
    let batches = [(0, 100), (100, 260), (260, 300)];
    for (lo, hi) in batches {
        acc.update(&rows_from(&x.rows(lo, hi - lo).into_owned()), None)
            .unwrap();
    }
    // Row i's weight: 2^(−rows after its batch / h).
    let w: Vec<f64> = (0..rows)
        .map(|i| {
            let hi = batches
                .iter()
                .find(|(lo, hi)| (*lo..*hi).contains(&i))
                .unwrap()
                .1;
            (-((rows - hi) as f64) / h).exp2()
        })
        .collect();
    let total: f64 = w.iter().sum();
    let mean = (0..rows).fold(DVector::zeros(n), |m, i| m + x.row(i).transpose() * w[i]) / total;
    let mut xc = x.clone();
    for (i, mut r) in xc.row_iter_mut().enumerate() {
        r -= mean.transpose();
        r *= w[i].sqrt();
    }
    let direct = xc.transpose() * &xc;
    let rel = |a: &DMatrix<f64>, b: &DMatrix<f64>| (a - b).norm() / b.norm();
    assert!((acc.count() - total).abs() < 1e-9 * total);
    assert!((acc.mean_x() - &mean).norm() < 1e-12 * mean.norm());
    assert!(
        rel(&acc.scatter(), &direct) < 1e-12,
        "{:e}",
        rel(&acc.scatter(), &direct)
    );
    assert!((acc.trace_syy() - direct.trace()).abs() < 1e-12 * direct.trace());
    let target = acc.target().unwrap();
    assert!(rel(&target.matrix, &(&direct / total)) < 1e-12);
    // persisted parts are n×n and rebuild the same accumulator
    let parts = acc.to_parts();
    assert_eq!(parts.sxx.shape(), (n, n));
    assert_eq!(Accumulator::from_parts(parts).unwrap(), acc);
    // a merge of two unforgetting shards equals one accumulation
    let mut a = Accumulator::new(n, None, None).unwrap();
    let mut b = a.clone();
    let mut whole = a.clone();
    a.update(&rows_from(&x.rows(0, 120).into_owned()), None)
        .unwrap();
    b.update(&rows_from(&x.rows(120, 180).into_owned()), None)
        .unwrap();
    whole.update(&rows_from(&x), None).unwrap();
    a.merge(&b).unwrap();
    assert!(rel(&a.scatter(), &whole.scatter()) < 1e-12);
    assert!(rel(&whole.scatter(), &(sample_covariance(&x) * rows as f64)) < 1e-12);
}

#[test]
fn a_reused_work_buffer_gives_bit_identical_results_for_batches_of_any_size() {
    // Batches of 7, 300, 1 and 40 rows (growing, then shrinking the buffer), with
    // targets, against the same stream through a fresh buffer per batch.
    let mut rng = StdRng::seed_from_u64(11);
    let (n, m) = (9, 2);
    let mut fresh = Accumulator::new(n, Some(m), Some(500.0)).unwrap();
    let mut reused = fresh.clone();
    let mut scratch = vec![f64::NAN; 3];
    for rows in [7usize, 300, 1, 40] {
        let x: Vec<f64> = (0..rows * n)
            .map(|_| rng.gen::<f64>() * 10.0 - 3.0)
            .collect();
        let y: Vec<f64> = (0..rows * m).map(|_| rng.gen::<f64>()).collect();
        fresh.update(&x, Some(&y)).unwrap();
        reused
            .update_with_scratch(&x, Some(&y), &mut scratch)
            .unwrap();
        assert_eq!(reused, fresh, "after a batch of {rows} rows");
    }
}

#[test]
fn one_large_batch_of_f32_rows_gives_the_textbook_scatter_and_cross_scatter() {
    // 1 000 rows (many 64-row tiles of the centring, the last one partial) of 40
    // features (two 16-feature blocks and a partial one), as f32, with 3 targets:
    // against the covariances computed directly from the same (widened) values.
    let mut rng = StdRng::seed_from_u64(21);
    let (rows, n, ny) = (1000, 40, 3);
    let x = randn(&mut rng, rows, n).add_scalar(3.0);
    let y = &x * randn(&mut rng, n, ny) + randn(&mut rng, rows, ny);
    let x32: Vec<f32> = rows_from(&x).iter().map(|&v| v as f32).collect();
    let y32: Vec<f32> = rows_from(&y).iter().map(|&v| v as f32).collect();
    let xw = DMatrix::from_row_slice(
        rows,
        n,
        &x32.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
    );
    let yw = DMatrix::from_row_slice(
        rows,
        ny,
        &y32.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
    );
    let mut acc = Accumulator::new(n, Some(ny), None).unwrap();
    acc.update(&x32, Some(&y32)).unwrap();
    let rel = |a: &DMatrix<f64>, b: &DMatrix<f64>| (a - b).norm() / b.norm();
    let direct = sample_covariance(&xw) * rows as f64;
    assert!(
        rel(&acc.scatter(), &direct) < 1e-12,
        "{:e}",
        rel(&acc.scatter(), &direct)
    );
    let (mx, my) = (xw.row_mean(), yw.row_mean());
    let mut xc = xw.clone();
    let mut yc = yw.clone();
    xc.row_iter_mut().for_each(|mut r| r -= &mx);
    yc.row_iter_mut().for_each(|mut r| r -= &my);
    let cross = yc.transpose() * &xc;
    let got = acc.cross_scatter().unwrap();
    assert!(rel(got, &cross) < 1e-12, "{:e}", rel(got, &cross));
    assert!((acc.mean_x() - mx.transpose()).norm() < 1e-12 * mx.norm());
}

#[test]
fn a_batch_with_a_non_finite_or_overflowing_value_changes_nothing() {
    let mut acc = Accumulator::new(3, None, None).unwrap();
    acc.update(&[1.0, 2.0, 3.0, 2.0, 0.0, 1.0], None).unwrap();
    let before = acc.clone();
    let err = acc.update(&[1.0, f64::NAN, 3.0], None).unwrap_err();
    assert!(
        matches!(err, PcaError::NonFinite { ref what } if what.contains("row 0, column 1")),
        "{err}"
    );
    let err = acc
        .update(&[1.0, 1e200, 3.0, 0.0, -1e200, 0.0], None)
        .unwrap_err();
    assert!(matches!(err, PcaError::NonFinite { .. }), "{err}");
    // finite values whose column sum overflows: no position to name
    let err = acc
        .update(&[1.0, 1e308, 3.0, 0.0, 1e308, 0.0], None)
        .unwrap_err();
    assert!(
        matches!(err, PcaError::NonFinite { ref what } if what.contains("batch sum overflows")),
        "{err}"
    );
    assert!(matches!(
        acc.update(&[1.0, 2.0], None),
        Err(PcaError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        acc.update::<f64>(&[], None),
        Err(PcaError::EmptyBatch)
    ));
    assert_eq!(acc, before);
    // a NaN in a regression target is named by row and column, and changes nothing
    let mut reg = Accumulator::new(2, Some(2), None).unwrap();
    reg.update(&[1.0, 2.0, 0.0, 1.0], Some(&[1.0, 0.0, 2.0, 1.0]))
        .unwrap();
    let before = reg.clone();
    let err = reg
        .update(&[1.0, 2.0, 3.0, 4.0], Some(&[0.5, 1.0, f64::INFINITY, 0.0]))
        .unwrap_err();
    assert!(
        matches!(err, PcaError::NonFinite { ref what } if what.contains("y row 1, column 0")),
        "{err}"
    );
    assert_eq!(reg, before);
}

#[test]
fn forgetting_halves_the_weight_of_old_samples_after_one_half_life() {
    let mut acc = Accumulator::new(2, None, Some(100.0)).unwrap();
    acc.update(&vec![1.0; 200], None).unwrap();
    let first = acc.count();
    assert!((first - 100.0).abs() < 1e-12);
    acc.update(&vec![1.0; 200], None).unwrap();
    assert!((acc.count() - (first * 0.5 + 100.0)).abs() < 1e-9);
}

// ------------------------------------------------------------------ optimiser

fn fit_cold(target: &FitTarget, p: usize, budget: usize) -> Components {
    let mut params = FitParams::new(p, OptimizerKind::Subspace);
    params.max_steps = budget;
    let mut trainer = Trainer::new(params.check(target.matrix.nrows()).unwrap());
    trainer.fit(target, None).unwrap()
}

#[test]
fn subspace_search_finds_every_component_of_a_geometric_spectrum_within_1e_6_rad() {
    let mut rng = StdRng::seed_from_u64(3);
    let lambdas: Vec<f64> = (0..256).map(|i| 0.9f64.powi(i)).collect();
    let (target, u) = synthetic_target(&mut rng, &lambdas);
    let comps = fit_cold(&target, 16, 200);
    let worst = max_angle(&comps.vectors, &u, 16);
    assert!(
        worst < 1e-6,
        "max angle {worst:e} after {} steps",
        comps.steps
    );
    assert!(comps.converged);
    assert!(comps.error_bounds.iter().all(|b| *b <= 1e-6));
    // honest bound: never below the true angle by more than round-off
    for i in 0..16 {
        let a = angle(
            &comps.vectors.column(i).into_owned(),
            &u.column(i).into_owned(),
        );
        assert!(
            a <= comps.error_bounds[i] + 1e-13,
            "component {i}: angle {a:e} bound {:e}",
            comps.error_bounds[i]
        );
    }
    // eigenvalues: Rayleigh quotients, reported with divisor N−1
    let unbias = target.count / (target.count - 1.0);
    for i in 0..16 {
        assert!((comps.eigenvalues[i] / unbias - lambdas[i]).abs() <= 1e-10 * lambdas[i]);
    }
}

#[test]
fn subspace_search_separates_two_leading_components_two_percent_apart() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut lambdas = vec![1.0, 0.98];
    lambdas.extend((0..254).map(|i| 0.9 * 0.93f64.powi(i)));
    let (target, u) = synthetic_target(&mut rng, &lambdas);
    let comps = fit_cold(&target, 16, 300);
    let worst = max_angle(&comps.vectors, &u, 16);
    assert!(
        worst < 1e-6,
        "max angle {worst:e} after {} steps",
        comps.steps
    );
    assert!(comps.converged, "bounds {:?}", comps.error_bounds);
}

#[test]
fn converged_is_false_while_the_true_error_is_large() {
    let mut rng = StdRng::seed_from_u64(5);
    let lambdas: Vec<f64> = (0..256).map(|i| 0.97f64.powi(i)).collect();
    let (target, u) = synthetic_target(&mut rng, &lambdas);
    let comps = fit_cold(&target, 16, 2);
    let worst = max_angle(&comps.vectors, &u, 16);
    assert!(worst > 1e-6, "two steps should not be enough ({worst:e})");
    assert!(!comps.converged);
    assert!(comps.max_error_bound() >= worst * 0.25);
}

#[test]
fn warm_start_after_a_small_change_needs_few_steps_and_keeps_signs() {
    let mut rng = StdRng::seed_from_u64(6);
    let lambdas: Vec<f64> = (0..128).map(|i| 0.9f64.powi(i)).collect();
    let (target, _) = synthetic_target(&mut rng, &lambdas);
    let mut trainer = Trainer::new(
        FitParams::new(8, OptimizerKind::Subspace)
            .check(128)
            .unwrap(),
    );
    let first = trainer.fit(&target, None).unwrap();
    assert!(first.converged);
    let mut moved = target.clone();
    let e = randn(&mut rng, 128, 128) * 1e-3;
    moved.matrix += (&e + e.transpose()) * 0.5;
    let second = trainer.fit(&moved, None).unwrap();
    assert!(second.converged);
    assert!(
        second.steps < first.steps,
        "warm {} vs cold {}",
        second.steps,
        first.steps
    );
    for i in 0..8 {
        assert!(
            first.vectors.column(i).dot(&second.vectors.column(i)) > 0.0,
            "sign of component {i} flipped"
        );
    }
}

#[test]
fn reported_loss_equals_the_closed_form_loss_at_the_components() {
    let mut rng = StdRng::seed_from_u64(7);
    let lambdas: Vec<f64> = (0..40).map(|i| 2.0 * 0.8f64.powi(i)).collect();
    let (target, _) = synthetic_target(&mut rng, &lambdas);
    let comps = fit_cold(&target, 5, 100);
    let a = comps.vectors.clone();
    let m = Moments {
        sxx: &target.matrix,
        syx: &target.matrix,
        tr_syy: target.trace_yy,
    };
    let direct = loss::value(&Weights::ordered(5), &a, &a.transpose(), m);
    assert!((comps.loss - direct).abs() <= 1e-12 * direct.abs());
    let lstar = 5.0 * target.trace_yy - (0..5).map(|i| (5 - i) as f64 * lambdas[i]).sum::<f64>();
    assert!((comps.loss - lstar).abs() <= 1e-10 * lstar);
}

#[test]
fn gradient_descent_on_the_ordered_loss_recovers_eigenvectors_but_mse_leaves_them_mixed() {
    // The paper's claim on a small problem: same start, same step rule, two losses.
    let mut rng = StdRng::seed_from_u64(8);
    let (target, u) = synthetic_target(&mut rng, &[4.0, 2.5, 1.5, 0.5, 0.3, 0.2, 0.1, 0.05]);
    let c = &target.matrix;
    let p = 3;
    let m = Moments {
        sxx: c,
        syx: c,
        tr_syy: c.trace(),
    };
    let a0 = randn(&mut rng, 8, p);
    let lmax = 4.0 * 1.2;
    let run = |w: &Weights| {
        let (mut a, mut b) = (a0.clone(), a0.transpose());
        for _ in 0..20_000 {
            gradient_descent_step(w, &mut a, &mut b, m, lmax);
        }
        a
    };
    let ordered = run(&Weights::ordered(p));
    let mse = run(&Weights::mse(p));
    assert!(
        max_angle(&ordered, &u, p) < 1e-4,
        "ordered: {:e}",
        max_angle(&ordered, &u, p)
    );
    assert!(
        max_angle(&mse, &u, p) > 0.1,
        "mse columns should stay mixed: {:e}",
        max_angle(&mse, &u, p)
    );
    // ... although MSE found the right subspace: projector distance ~ 0.
    let proj = |a: &DMatrix<f64>| {
        let q = a.clone().qr().q();
        &q * q.transpose()
    };
    let up = u.columns(0, p).into_owned();
    assert!((proj(&mse) - &up * up.transpose()).norm() < 1e-4);
}

#[test]
fn the_gradient_optimiser_converges_through_the_trainer_too() {
    let mut rng = StdRng::seed_from_u64(9);
    let (target, u) = synthetic_target(
        &mut rng,
        &[5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01],
    );
    let mut params = FitParams::new(3, OptimizerKind::Gradient);
    params.max_steps = 20_000;
    params.tolerance = 1e-5;
    let mut trainer = Trainer::new(params.check(10).unwrap());
    let comps = trainer.fit(&target, None).unwrap();
    assert!(
        comps.converged,
        "bounds {:?} after {} steps",
        comps.error_bounds, comps.steps
    );
    assert!(max_angle(&comps.vectors, &u, 3) < 1e-5);
}

/// A geometric spectrum with component `i` (0-based) tied to component `i − 1`: a fit
/// whose error bounds include both never converges, so without a cancellation it runs
/// to its step budget.
fn tied_at(i: usize, n: usize) -> Vec<f64> {
    (0..n)
        .map(|j| 0.9f64.powi(if j == i { j as i32 - 1 } else { j as i32 }))
        .collect()
}

/// Runs `fit_until` on another thread with an effectively unbounded budget, cancels it
/// once the fit has started, and returns the result and the trainer.
fn fit_then_cancel(
    mut trainer: Trainer,
    target: &FitTarget,
) -> (Result<Components, PcaError>, Trainer) {
    let cancel = Cancel::new();
    std::thread::scope(|s| {
        let fit = s.spawn(|| {
            let r = trainer.fit_until(target, Some(usize::MAX), &cancel);
            (r, trainer)
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        cancel.cancel();
        fit.join().unwrap()
    })
}

#[test]
fn a_fit_cancelled_before_it_starts_does_nothing_and_the_trainer_still_fits() {
    let mut rng = StdRng::seed_from_u64(31);
    let lambdas: Vec<f64> = (0..128).map(|i| 0.9f64.powi(i)).collect();
    let (target, _) = synthetic_target(&mut rng, &lambdas);
    let mut trainer = Trainer::new(
        FitParams::new(8, OptimizerKind::Subspace)
            .check(128)
            .unwrap(),
    );
    let cancel = Cancel::new();
    cancel.cancel();
    assert_eq!(
        trainer.fit_until(&target, None, &cancel).unwrap_err(),
        PcaError::Cancelled
    );
    assert_eq!(trainer.total_steps(), 0);
    assert!(trainer.state().q.is_none());
    let comps = trainer.fit_until(&target, None, &Cancel::new()).unwrap();
    let (_, vecs) = eigh_ref(&target.matrix);
    assert!(comps.converged);
    assert!(max_angle(&comps.vectors, &vecs, 8) < 1e-6);
}

#[test]
fn a_subspace_fit_that_would_never_converge_stops_when_cancelled_and_resumes_warm() {
    // Arrange: p = 12 with components 11 and 12 tied (12 is a guard column).
    let (p, n) = (12, 300);
    let mut rng = StdRng::seed_from_u64(32);
    let (target, _) = synthetic_target(&mut rng, &tied_at(p, n));
    let trainer = Trainer::new(FitParams::new(p, OptimizerKind::Subspace).check(n).unwrap());
    // Act
    let (result, mut trainer) = fit_then_cancel(trainer, &target);
    // Assert: cancelled, with a finite orthonormal warm start kept.
    assert_eq!(result.unwrap_err(), PcaError::Cancelled);
    let q = trainer.state().q.clone().unwrap();
    assert_eq!(q.shape(), (n, p + 4));
    let gram = q.transpose() * &q;
    assert!((gram - DMatrix::identity(p + 4, p + 4)).amax() < 1e-10);
    // The next (bounded) fit resumes and gets the separated components right.
    let comps = trainer
        .fit_until(&target, Some(200), &Cancel::new())
        .unwrap();
    let (_, vecs) = eigh_ref(&target.matrix);
    assert!(max_angle(&comps.vectors, &vecs, p - 1) < 1e-6);
}

#[test]
fn a_gradient_fit_stops_when_cancelled() {
    // Plain gradient descent has no guard columns: tie components 2 and 3 of p = 4.
    let (p, n) = (4, 40);
    let mut rng = StdRng::seed_from_u64(33);
    let (target, _) = synthetic_target(&mut rng, &tied_at(p - 1, n));
    let trainer = Trainer::new(FitParams::new(p, OptimizerKind::Gradient).check(n).unwrap());
    let (result, trainer) = fit_then_cancel(trainer, &target);
    assert_eq!(result.unwrap_err(), PcaError::Cancelled);
    let a = trainer.state().a.clone().unwrap();
    assert_eq!(a.shape(), (n, p));
    assert!(a.iter().all(|v| v.is_finite()));
}

#[test]
fn regression_components_are_the_eigenvectors_of_the_explained_target_covariance() {
    let mut rng = StdRng::seed_from_u64(10);
    let (n, ny, rows) = (60, 40, 3000);
    let x = randn(&mut rng, rows, n)
        * DMatrix::from_diagonal(&DVector::from_fn(n, |i, _| 1.0 + i as f64 * 0.1));
    let w = randn(&mut rng, n, ny)
        * DMatrix::from_diagonal(&DVector::from_fn(ny, |i, _| 0.7f64.powi(i as i32)));
    let y = (&x * w + randn(&mut rng, rows, ny) * 0.1).add_scalar(3.0);
    let mut acc = Accumulator::new(n, Some(ny), None).unwrap();
    for start in (0..rows).step_by(250) {
        let xs = x.rows(start, 250).into_owned();
        let ys = y.rows(start, 250).into_owned();
        acc.update(&rows_from(&xs), Some(&rows_from(&ys))).unwrap();
    }
    // Independent reference: Σ_yx Σ_xx⁻¹ Σ_xy from the rows, by nalgebra's LU solve.
    let mx = x.row_mean();
    let my = y.row_mean();
    let mut xc = x.clone();
    xc.row_iter_mut().for_each(|mut r| r -= &mx);
    let mut yc = y.clone();
    yc.row_iter_mut().for_each(|mut r| r -= &my);
    let sxx = xc.transpose() * &xc;
    let syx = yc.transpose() * &xc;
    let t = &syx * sxx.lu().solve(&syx.transpose()).unwrap() / rows as f64;
    let (vals, vecs) = eigh_ref(&((&t + t.transpose()) * 0.5));
    let p = 4;
    let mut trainer = Trainer::new(
        FitParams::new(p, OptimizerKind::Subspace)
            .check(ny)
            .unwrap(),
    );
    let comps = trainer.fit(&acc.target().unwrap(), None).unwrap();
    assert!(max_angle(&comps.vectors, &vecs, p) < 1e-6);
    for i in 0..p {
        let ours = comps.eigenvalues[i] * (rows as f64 - 1.0) / rows as f64;
        assert!((ours - vals[i]).abs() < 1e-9 * vals[i]);
    }
    // prediction through the components: rank-ny prediction equals least squares
    let proj = comps
        .project(&rows_from(&x.rows(0, 5).into_owned()), p, false, true)
        .unwrap();
    assert_eq!(proj.scores.shape(), (5, p));
    assert!(proj.reconstructions.unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn rank_deficient_data_and_a_repeated_row_give_no_nan() {
    let mut rng = StdRng::seed_from_u64(11);
    // 30-dimensional data living in a 3-dimensional subspace, plus 5 constant columns.
    let basis = randn(&mut rng, 3, 30);
    let mut x = randn(&mut rng, 500, 3) * basis;
    for j in 25..30 {
        x.column_mut(j).fill(7.0);
    }
    let mut acc = Accumulator::new(30, None, None).unwrap();
    acc.update(&rows_from(&x), None).unwrap();
    let mut trainer = Trainer::new(
        FitParams::new(8, OptimizerKind::Subspace)
            .check(30)
            .unwrap(),
    );
    let comps = trainer.fit(&acc.target().unwrap(), None).unwrap();
    assert_eq!(
        comps.len(),
        3,
        "only the components with positive variance are reported"
    );
    assert!(comps.converged);
    assert!(comps
        .vectors
        .iter()
        .chain(comps.eigenvalues.iter())
        .all(|v| v.is_finite()));
    assert!(
        comps.steps < 50,
        "undefined components must not keep the fit running"
    );

    // The same through the iterative path (k = 20 columns, 3k < n): rank 12 < p = 16.
    let basis = randn(&mut rng, 12, 100);
    let x = randn(&mut rng, 400, 12) * basis;
    let mut acc = Accumulator::new(100, None, None).unwrap();
    acc.update(&rows_from(&x), None).unwrap();
    let mut trainer = Trainer::new(
        FitParams::new(16, OptimizerKind::Subspace)
            .check(100)
            .unwrap(),
    );
    let comps = trainer.fit(&acc.target().unwrap(), None).unwrap();
    assert_eq!(comps.len(), 12);
    assert!(comps.converged, "bounds {:?}", comps.error_bounds);
    assert!(comps.steps < 50, "took {} steps", comps.steps);
    assert!(comps
        .vectors
        .iter()
        .chain(comps.eigenvalues.iter())
        .all(|v| v.is_finite()));

    let mut same = Accumulator::new(30, None, None).unwrap();
    same.update(&vec![1.5; 30 * 40], None).unwrap();
    let mut trainer = Trainer::new(
        FitParams::new(8, OptimizerKind::Subspace)
            .check(30)
            .unwrap(),
    );
    let comps = trainer.fit(&same.target().unwrap(), None).unwrap();
    assert!(comps.is_empty());
    assert!(comps.loss.is_finite());
}

#[test]
fn fitting_waits_for_enough_samples() {
    let mut acc = Accumulator::new(30, None, None).unwrap();
    acc.update(&vec![1.0; 30 * 5], None).unwrap();
    let mut trainer = Trainer::new(
        FitParams::new(8, OptimizerKind::Subspace)
            .check(30)
            .unwrap(),
    );
    assert!(matches!(
        trainer.fit(&acc.target().unwrap(), None),
        Err(PcaError::NotEnoughSamples { need: 13, .. })
    ));
}

#[test]
fn a_model_with_a_half_life_tracks_rotated_directions() {
    let mut rng = StdRng::seed_from_u64(12);
    let n = 10;
    let lambdas = DVector::from_fn(n, |i, _| 0.5f64.powi(i as i32).sqrt());
    let before = random_orthogonal(&mut rng, n);
    let after = random_orthogonal(&mut rng, n);
    let draw = |rng: &mut StdRng, u: &DMatrix<f64>, rows: usize| {
        randn(rng, rows, n) * DMatrix::from_diagonal(&lambdas) * u.transpose()
    };
    let mut forgetful = Accumulator::new(n, None, Some(500.0)).unwrap();
    let mut plain = Accumulator::new(n, None, None).unwrap();
    for u in [&before, &after] {
        for _ in 0..40 {
            let x = rows_from(&draw(&mut rng, u, 100));
            forgetful.update(&x, None).unwrap();
            plain.update(&x, None).unwrap();
        }
    }
    let fit = |acc: &Accumulator| {
        let mut t = Trainer::new(FitParams::new(2, OptimizerKind::Subspace).check(n).unwrap());
        t.fit(&acc.target().unwrap(), None).unwrap()
    };
    let tracked = max_angle(&fit(&forgetful).vectors, &after, 1);
    let stale = max_angle(&fit(&plain).vectors, &after, 1);
    assert!(tracked < 0.15, "with forgetting: {tracked}");
    assert!(
        stale > tracked * 2.0,
        "without forgetting {stale} vs {tracked}"
    );
}

// ------------------------------------------------------------------ projection

#[test]
fn projection_scores_reconstructions_and_residuals_agree_with_the_components() {
    let mut rng = StdRng::seed_from_u64(13);
    let n = 12;
    let x = randn(&mut rng, 400, n)
        * DMatrix::from_diagonal(&DVector::from_fn(n, |i, _| 0.8f64.powi(i as i32)))
        * random_orthogonal(&mut rng, n);
    let x = x.add_scalar(2.0);
    let mut acc = Accumulator::new(n, None, None).unwrap();
    acc.update(&rows_from(&x), None).unwrap();
    let mut t = Trainer::new(FitParams::new(4, OptimizerKind::Subspace).check(n).unwrap());
    let comps = t.fit(&acc.target().unwrap(), None).unwrap();
    let rows = rows_from(&x.rows(0, 7).into_owned());
    let proj = comps.project(&rows, 3, false, true).unwrap();
    let recon = proj.reconstructions.clone().unwrap();
    for r in 0..7 {
        let xr = x.row(r).transpose() - acc.mean_x();
        for j in 0..3 {
            assert!((proj.scores[(r, j)] - comps.vectors.column(j).dot(&xr)).abs() < 1e-12);
        }
        let resid = (x.row(r) - recon.row(r)).norm();
        assert!((resid - proj.residual_norms[r]).abs() < 1e-10);
    }
    // projecting a reconstruction again changes nothing (a projection is idempotent)
    let again = comps.project(&rows_from(&recon), 3, false, true).unwrap();
    assert!((again.reconstructions.unwrap() - &recon).norm() < 1e-10);
    assert!(again.residual_norms.iter().all(|r| *r < 1e-10));
    // whitened scores have unit sample variance over the fitted data
    let all = comps.project(&rows_from(&x), 4, true, false).unwrap();
    for j in 0..4 {
        let col = all.scores.column(j);
        let var = col.iter().map(|v| v * v).sum::<f64>() / 399.0;
        assert!((var - 1.0).abs() < 1e-9, "whitened variance {var}");
    }
    assert!(matches!(
        comps.project(&rows, 5, false, false),
        Err(PcaError::InvalidParam { name: "k", .. })
    ));
    assert!(matches!(
        comps.project(&rows[..5], 1, false, false),
        Err(PcaError::DimensionMismatch { .. })
    ));
}

// ------------------------------------------------------------------ properties

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(64))]

    /// However a stream is cut into batches and shards, merging gives the accumulation
    /// of all rows at once.
    #[test]
    fn any_split_into_batches_and_shards_merges_to_the_whole(
        seed in 0u64..1000,
        rows in 2usize..120,
        cuts in proptest::collection::vec(0usize..120, 0..6),
        offset in -1e3f64..1e3,
    ) {
        let n = 5;
        let mut rng = StdRng::seed_from_u64(seed);
        let x = randn(&mut rng, rows, n).add_scalar(offset);
        let mut whole = Accumulator::new(n, None, None).unwrap();
        whole.update(&rows_from(&x), None).unwrap();
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % rows).collect();
        bounds.extend([0, rows]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut merged = Accumulator::new(n, None, None).unwrap();
        for w in bounds.windows(2) {
            let mut shard = Accumulator::new(n, None, None).unwrap();
            shard.update(&rows_from(&x.rows(w[0], w[1] - w[0]).into_owned()), None).unwrap();
            merged.merge(&shard).unwrap();
        }
        let scale = whole.scatter().norm().max(1e-300);
        proptest::prop_assert!((merged.scatter() - whole.scatter()).norm() <= 1e-11 * scale);
        proptest::prop_assert!((merged.mean_x() - whole.mean_x()).norm() <= 1e-12 * (1.0 + whole.mean_x().norm()));
        proptest::prop_assert!((merged.count() - rows as f64).abs() < 1e-9);
    }
}
