//! Criterion benchmarks of process monitoring (`cargo bench --bench monitoring`).
//!
//! - `moments/{n}`: [`LimitMoments::new`] for a fit with r = 16 components, n ∈ {784,
//!   4096}: the per-published-fit cost (the deflated tr R³, one symmetric n×n·n×n
//!   product), off the request path.
//! - `score/784/16` and `score_contributions/784/16`: T² and SPE (and contributions) of
//!   10 000 rows at n = 784, k = 16.
//! - Baselines in the same run: `baseline/accumulator_update/784` (one batch of 256 rows)
//!   and `baseline/warm_step/784/16` (one warm optimiser step, p = 16), the costs the
//!   service already pays per batch and per fit step.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use nalgebra::{DMatrix, DVector};
use rand::{rngs::StdRng, Rng, SeedableRng};
use streampca::pca::{
    Accumulator, Components, FitParams, FitTarget, LimitMoments, OptimizerKind, Trainer,
};

fn gaussian(rng: &mut StdRng, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| {
        rng.sample::<f64, _>(rand_distr::StandardNormal)
    })
}

/// A covariance target `B Bᵀ/N` with B n×(n/2) (a realistic decaying spectrum is not
/// needed: the cost does not depend on it) and components with r orthonormal columns.
fn target_and_components(n: usize, r: usize) -> (FitTarget, Components) {
    let mut rng = StdRng::seed_from_u64(1);
    let b = gaussian(&mut rng, n, n / 2);
    let c = &b * b.transpose() / 1e4;
    let u = gaussian(&mut rng, n, r).qr().q();
    let target = FitTarget {
        trace_yy: c.trace(),
        trace_xx: c.trace(),
        matrix: c,
        regression: None,
        mean_x: DVector::zeros(n),
        mean_y: None,
        count: 1e4,
    };
    let comps = Components {
        vectors: u,
        eigenvalues: (0..r).map(|i| 100.0 / (i + 1) as f64).collect(),
        explained_variance_ratio: vec![0.0; r],
        error_bounds: vec![0.0; r],
        relative_gaps: vec![0.0; r],
        loss: 0.0,
        converged: true,
        steps: 0,
        products: 0.0,
        mean: DVector::zeros(n),
        mean_y: None,
        regression: None,
        samples: 1e4,
    };
    (target, comps)
}

fn moments(c: &mut Criterion) {
    let mut group = c.benchmark_group("moments");
    group.sample_size(10);
    for n in [784usize, 4096] {
        let (target, comps) = target_and_components(n, 16);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| LimitMoments::new(black_box(&target), black_box(&comps)).expect("moments"))
        });
    }
    group.finish();
}

fn scoring_and_baselines(c: &mut Criterion) {
    let n = 784;
    let mut rng = StdRng::seed_from_u64(2);
    // A fitted model on rows with a decaying spectrum, as the service would hold.
    let scales: Vec<f64> = (0..n).map(|i| 1.0 / (1.0 + i as f64 / 8.0)).collect();
    let rows: Vec<f64> = (0..20_000 * n)
        .map(|i| scales[i % n] * rng.sample::<f64, _>(rand_distr::StandardNormal))
        .collect();
    let mut acc = Accumulator::new(n, None, None).expect("accumulator");
    for chunk in rows.chunks(256 * n) {
        acc.update(chunk, None).expect("update");
    }
    let target = acc.target().expect("target");
    let params = FitParams::new(16, OptimizerKind::Subspace)
        .check(n)
        .expect("params");
    let mut trainer = Trainer::new(params);
    let comps = trainer.fit(&target, Some(200)).expect("fit");
    let query = &rows[..10_000 * n];
    let mut group = c.benchmark_group("score");
    group.sample_size(20);
    group.bench_function("784/16", |b| {
        b.iter(|| {
            comps
                .statistics(black_box(query), 16, false)
                .expect("score")
        })
    });
    group.bench_function("contributions/784/16", |b| {
        b.iter(|| comps.statistics(black_box(query), 16, true).expect("score"))
    });
    group.finish();
    let mut group = c.benchmark_group("baseline");
    group.sample_size(20);
    let batch: Vec<f32> = rows[..256 * n].iter().map(|v| *v as f32).collect();
    let mut scratch = Vec::new();
    group.bench_function("accumulator_update/784", |b| {
        b.iter(|| {
            acc.update_with_scratch(black_box(&batch), None, &mut scratch)
                .expect("update")
        })
    });
    group.bench_function("warm_step/784/16", |b| {
        b.iter(|| trainer.fit(black_box(&target), Some(1)).expect("step"))
    });
    group.finish();
}

#[allow(
    missing_docs,
    reason = "criterion's macro generates an undocumented function"
)]
mod group {
    use super::*;
    criterion_group!(benches, moments, scoring_and_baselines);
}
use group::benches;
criterion_main!(benches);
