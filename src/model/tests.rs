//! The model layer against direct computations: batches spread over partitions by
//! concurrent producers merge to one accumulation of the same batches, and forgetting
//! weighs every row by the rows acknowledged after its batch, over all partitions.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nalgebra::{DMatrix, DVector};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;
use crate::metrics::Metrics;
use crate::pca::{Accumulator, Batch, BatchData, OptimizerKind, Shape};
use crate::persistence::{Store, SyncMode};

/// A registry over a fresh store in `dir` (no fsync) with small limits; also used by
/// `monitor_tests`.
pub(super) fn registry(dir: &std::path::Path) -> Registry {
    let (store, _, _) = Store::open(dir, SyncMode::Never, false).unwrap();
    Registry::new(
        Arc::new(store),
        Arc::new(Metrics::new()),
        ModelLimits {
            max_dim: 64,
            max_components: 8,
            max_models: 8,
            max_state_bytes: 1 << 30,
        },
        Duration::from_secs(300),
    )
}

fn config(name: &str, target_dim: Option<usize>, half_life: Option<f64>, k: usize) -> ModelConfig {
    ModelConfig {
        name: ModelName::new(name).unwrap(),
        dim: 6,
        components: 2,
        target_dim,
        half_life,
        optimizer: OptimizerKind::Subspace,
        tolerance: 1e-6,
        partitions: k,
        standardize: false,
        alpha: 0.01,
    }
}

/// A batch of 1–40 rows with a mean offset and correlated targets.
fn batch(seed: u64, shape: Shape) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let rows = rng.gen_range(1..40);
    let x: Vec<f64> = (0..rows * shape.dim)
        .map(|i| rng.gen_range(-1.0..1.0) * (1 + i % shape.dim) as f64 + 50.0)
        .collect();
    let y = shape.target_dim.map(|t| {
        (0..rows * t)
            .map(|i| x[(i / t) * shape.dim] * 0.5 + rng.gen_range(-0.1..0.1))
            .collect()
    });
    Batch::new(shape, BatchData::F64 { x, y }).unwrap()
}

/// Ingests `per_thread` batches from each of `threads` threads; returns every batch
/// with the sequence it was answered.
fn ingest_concurrently(m: &Arc<Model>, threads: u64, per_thread: u64) -> Vec<(u64, Batch)> {
    let seen = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (m, seen) = (m.clone(), &seen);
            s.spawn(move || {
                for i in 0..per_thread {
                    let b = batch(t * 1000 + i, m.config().shape());
                    let r = m.ingest(&b).unwrap();
                    assert_eq!(r.accepted, b.rows());
                    seen.lock().unwrap().push((r.sequence, b));
                }
            });
        }
    });
    let mut all = seen.into_inner().unwrap();
    all.sort_by_key(|(s, _)| *s);
    all
}

fn rel(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    (a - b).norm() / b.norm()
}

#[test]
fn batches_spread_over_partitions_merge_to_one_accumulation_of_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let Created::New(m) = reg.create(config("r", Some(2), None, 4)).unwrap() else {
        panic!("new model")
    };

    let all = ingest_concurrently(&m, 6, 40);

    let sequences: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        sequences,
        (1..=240).collect::<Vec<_>>(),
        "one strictly increasing sequence"
    );
    let used = m
        .snapshot()
        .partitions
        .iter()
        .filter(|p| p.position.batches > 0)
        .count();
    assert!(used >= 2, "concurrent producers used {used} partition(s)");
    let mut serial = Accumulator::new(6, Some(2), None).unwrap();
    for (_, b) in &all {
        let (x, y) = b.to_f64();
        serial.update(&x, y.as_deref()).unwrap();
    }
    let (merged, covers) = m.merged().unwrap();
    assert_eq!(covers, 240);
    assert_eq!(merged.count().to_bits(), serial.count().to_bits());
    assert!(rel(&merged.scatter(), &serial.scatter()) < 1e-12);
    assert!(
        rel(
            merged.cross_scatter().unwrap(),
            serial.cross_scatter().unwrap()
        ) < 1e-12
    );
    let dm = (merged.mean_x() - serial.mean_x()).norm() / serial.mean_x().norm();
    assert!(dm < 1e-14, "{dm:e}");
    let dt = (merged.trace_syy() - serial.trace_syy()).abs() / serial.trace_syy();
    assert!(dt < 1e-12, "{dt:e}");
    assert_eq!(m.counters().samples.to_bits(), serial.count().to_bits());
    assert_eq!(m.counters().batches, 240);
}

#[test]
fn forgetting_across_partitions_weighs_each_row_by_the_rows_acknowledged_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let half_life = 700.0;
    let Created::New(m) = reg.create(config("f", None, Some(half_life), 3)).unwrap() else {
        panic!("new model")
    };

    let all = ingest_concurrently(&m, 5, 30);

    // Directly: w = γ^(rows of every batch with a later sequence), over all batches.
    let gamma = (-1.0 / half_life).exp2();
    let mut after = 0usize;
    let mut weighted: Vec<(f64, DVector<f64>)> = Vec::new();
    for (_, b) in all.iter().rev() {
        let w = gamma.powi(i32::try_from(after).unwrap());
        let (x, _) = b.to_f64();
        for row in x.chunks(6) {
            weighted.push((w, DVector::from_column_slice(row)));
        }
        after += b.rows();
    }
    let total: f64 = weighted.iter().map(|(w, _)| w).sum();
    let mean = weighted
        .iter()
        .fold(DVector::zeros(6), |acc, (w, x)| acc + x * *w)
        / total;
    let scatter = weighted.iter().fold(DMatrix::zeros(6, 6), |acc, (w, x)| {
        let d = x - &mean;
        acc + &d * d.transpose() * *w
    });

    let (merged, _) = m.merged().unwrap();
    let dc = (merged.count() - total).abs() / total;
    assert!(
        dc < 1e-12,
        "count {} against {total}: {dc:e}",
        merged.count()
    );
    let ds = rel(&merged.scatter(), &scatter);
    assert!(ds < 1e-11, "scatter off by {ds:e}");
    let dm = (merged.mean_x() - &mean).norm() / mean.norm();
    assert!(dm < 1e-13, "mean off by {dm:e}");
    // The samples counter is the same weighted count.
    let dsamples = (m.counters().samples - total).abs() / total;
    assert!(dsamples < 1e-12, "{dsamples:e}");
}

#[test]
fn a_batch_of_the_wrong_shape_changes_nothing_and_takes_no_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let Created::New(m) = reg.create(config("s", None, None, 2)).unwrap() else {
        panic!("new model")
    };
    m.ingest(&batch(1, m.config().shape())).unwrap();
    let other = batch(2, Shape::inputs(5));

    assert!(matches!(m.ingest(&other), Err(ModelError::Batch(_))));

    let r = m.ingest(&batch(3, m.config().shape())).unwrap();
    assert_eq!(r.sequence, 2);
}

#[test]
fn a_standardised_model_fits_the_correlation_matrix_and_publishes_its_limits_moments() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let mut c = config("z", None, None, 2);
    c.standardize = true;
    let Created::New(m) = reg.create(c).unwrap() else {
        panic!("new model")
    };
    let all = ingest_concurrently(&m, 2, 20);
    let last = all.last().unwrap().0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let published = loop {
        let p = m.published();
        if p.sequence >= last && p.components.as_ref().is_some_and(|c| c.converged) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no converged fit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let monitor = published.monitor.clone().unwrap();
    let fit = published.components.clone().unwrap();
    assert!(monitor.standardizer.is_some() && monitor.moments(&fit).is_some());

    // The explicit correlation matrix of every row, with divisor N − 1 throughout.
    let rows: Vec<DVector<f64>> = all
        .iter()
        .flat_map(|(_, b)| {
            b.to_f64()
                .0
                .chunks(6)
                .map(DVector::from_column_slice)
                .collect::<Vec<_>>()
        })
        .collect();
    let n = rows.len() as f64;
    let mean = rows.iter().fold(DVector::zeros(6), |a, r| a + r) / n;
    let cov = rows.iter().fold(DMatrix::zeros(6, 6), |a, r| {
        let d = r - &mean;
        a + &d * d.transpose()
    }) / (n - 1.0);
    let s = DVector::from_fn(6, |i, _| cov[(i, i)].sqrt());
    let corr = DMatrix::from_fn(6, 6, |i, j| cov[(i, j)] / (s[i] * s[j]));
    let mut eig: Vec<f64> = corr.symmetric_eigen().eigenvalues.iter().copied().collect();
    eig.sort_by(|a, b| b.total_cmp(a));
    for (got, want) in fit.eigenvalues.iter().zip(&eig) {
        assert!((got - want).abs() < 1e-9 * eig[0], "{got} against {want}");
    }
}
