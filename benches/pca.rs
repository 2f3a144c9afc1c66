//! Criterion benchmarks of the numerical core (`cargo bench --bench pca`).
//!
//! - `accumulator_update/{n}`: one batch of b = 256 rows into an n-dimensional
//!   accumulator (the symmetric rank-b kernel plus centring, reusing the work buffer as
//!   the service does), n ∈ {64, 784, 2048}.
//!   `accumulator_update_f64/784`: the same with float64 rows (as a `.npy` body of
//!   float64 brings them), whose centring reads twice the bytes.
//!   Compare with `bench/kernels.py`, which times numpy/OpenBLAS `dsyrk` on the same
//!   shapes in the same run.
//! - `product/{p}`: one n×n · n×p product at n = 784: the unit fit costs are counted in.
//! - `warm_step/{p}`: a warm fit limited to one step at n = 784.
//! - `cold_fit/{p}`: a cold fit to 1e-6 rad on Fashion-MNIST's 10 000 test images
//!   (n = 784), when Debian's `dataset-fashion-mnist` is installed; the cost in units of
//!   one n×n·n×p product is printed once per p.
//! - `fit/eigh/784`: faer's full symmetric eigendecomposition of that 784×784 covariance
//!   (numpy's `eigh`, LAPACK `dsyevd`, in `bench/kernels.py`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nalgebra::DMatrix;
use rand::{rngs::StdRng, Rng, SeedableRng};
use streampca::pca::{Accumulator, FitParams, FitTarget, OptimizerKind, Trainer};

fn random_rows(seed: u64, rows: usize, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..rows * n)
        .map(|i| rng.gen::<f32>() + (i % n) as f32 * 0.01)
        .collect()
}

/// Fashion-MNIST's test images as row-major f32 pixels in [0, 255], if the package is
/// installed (`streampca::datasets`: absent is an error only with
/// `STREAMPCA_REQUIRE_DATASETS=1`; a broken file always is).
fn fashion_mnist() -> Option<(Vec<f32>, usize)> {
    streampca::datasets::fashion_mnist_test()
        .expect("reading Fashion-MNIST")
        .map(|images| (images.to_f32(), images.dim))
}

fn accumulator_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("accumulator_update");
    for n in [64usize, 784, 2048] {
        update_one(&mut group, n, random_rows(1, 256, n));
    }
    group.finish();
    let mut group = c.benchmark_group("accumulator_update_f64");
    let n = 784;
    update_one(
        &mut group,
        n,
        random_rows(1, 256, n).into_iter().map(f64::from).collect(),
    );
    group.finish();
}

/// One benchmark of a 256-row batch of `T` into an n-dimensional accumulator.
fn update_one<T: Copy + Into<f64>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
    batch: Vec<T>,
) {
    let mut acc = Accumulator::new(n, None, None).expect("accumulator");
    acc.update(&batch, None).expect("warm-up batch");
    group.throughput(Throughput::Elements(256));
    // As the service ingests: one work buffer per model, reused across batches.
    let mut scratch = Vec::new();
    group.bench_with_input(BenchmarkId::from_parameter(n), &batch, |b, batch| {
        b.iter(|| {
            acc.update_with_scratch(black_box(batch), None, &mut scratch)
                .expect("update")
        });
    });
}

/// `out = c · v` by faer, the kernel the optimiser uses.
fn product(out: &mut DMatrix<f64>, c: &DMatrix<f64>, v: &DMatrix<f64>) {
    let (r, k) = out.shape();
    faer::linalg::matmul::matmul(
        faer::MatMut::from_column_major_slice_mut(out.as_mut_slice(), r, k),
        faer::Accum::Replace,
        faer::MatRef::from_column_major_slice(c.as_slice(), c.nrows(), c.ncols()),
        faer::MatRef::from_column_major_slice(v.as_slice(), v.nrows(), v.ncols()),
        1.0,
        faer::Par::Seq,
    );
}

fn target_of(rows: &[f32], n: usize) -> FitTarget {
    let mut acc = Accumulator::new(n, None, None).expect("accumulator");
    for chunk in rows.chunks(256 * n) {
        acc.update(chunk, None).expect("update");
    }
    acc.target().expect("target")
}

fn fitting(c: &mut Criterion) {
    let n = 784;
    let (rows, n) = fashion_mnist().unwrap_or_else(|| {
        eprintln!("Fashion-MNIST is not installed: fitting 10 000 random rows instead");
        (random_rows(2, 10_000, n), n)
    });
    let target = target_of(&rows, n);
    let mut group = c.benchmark_group("fit");
    group.sample_size(10);
    // The full symmetric eigendecomposition of the same n×n target: the kernel the
    // optimiser falls back to when its trial space covers the whole space.
    group.bench_function(BenchmarkId::new("eigh", n), |b| {
        b.iter(|| {
            faer::MatRef::from_column_major_slice(black_box(target.matrix.as_slice()), n, n)
                .self_adjoint_eigen(faer::Side::Lower)
                .expect("eigh")
        });
    });
    for p in [16usize, 64] {
        let mut rng = StdRng::seed_from_u64(3);
        let v = DMatrix::from_fn(n, p, |_, _| rng.gen::<f64>());
        group.bench_with_input(BenchmarkId::new("product", p), &v, |b, v| {
            let mut out = DMatrix::<f64>::zeros(n, p);
            b.iter(|| product(&mut out, black_box(&target.matrix), black_box(v)));
        });
        let params = FitParams::new(p, OptimizerKind::Subspace)
            .check(n)
            .expect("params");
        let mut trainer = Trainer::new(params.clone());
        let cold = trainer.fit(&target, Some(200)).expect("cold fit");
        eprintln!(
            "cold fit p={p}: {} steps, {:.1} units of n×n·n×p, converged {}, max bound {:.1e}",
            cold.steps,
            cold.products,
            cold.converged,
            cold.max_error_bound()
        );
        group.bench_function(BenchmarkId::new("warm_step", p), |b| {
            b.iter(|| trainer.fit(black_box(&target), Some(1)).expect("warm step"));
        });
        group.bench_function(BenchmarkId::new("cold_fit", p), |b| {
            b.iter(|| {
                Trainer::new(params.clone())
                    .fit(black_box(&target), Some(200))
                    .expect("cold fit")
            });
        });
    }
    group.finish();
}

#[allow(
    missing_docs,
    reason = "criterion's macro generates an undocumented function"
)]
mod group {
    use super::*;
    criterion_group!(benches, accumulator_update, fitting);
}
use group::benches;
criterion_main!(benches);
