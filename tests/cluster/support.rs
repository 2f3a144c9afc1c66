//! Data, references and waiting for the cluster tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use streampca::cluster::{ClusterNode, ClusterSettings, ServedView};
use streampca::model::{ModelConfig, ModelName};
use streampca::pca::OptimizerKind;
use streampca::pca::{Accumulator, AccumulatorParts, Batch, BatchData, Shape};
use streampca::persistence::Snapshot;

/// Settings for a test node: short lease TTL and checkpoint interval so failover and
/// freshness fit in a test.
pub fn settings(urls: Vec<String>, node: &str) -> ClusterSettings {
    let mut s = ClusterSettings::new(urls);
    s.node_id = node.to_owned();
    s.lease_ttl = Duration::from_secs(3);
    s.checkpoint_interval = Duration::from_millis(500);
    s.publish_retry = Duration::from_secs(8);
    // JetStream reserves a stream's max_bytes up front: keep the tests' reservation small
    // so a shared disk never refuses a stream.
    s.stream_max_bytes = 256 << 20;
    s
}

/// An autoencoder model's configuration (K = 4 partitions).
pub fn config(name: &str, dim: usize, components: usize) -> ModelConfig {
    ModelConfig {
        name: ModelName::new(name).expect("valid name"),
        dim,
        components,
        target_dim: None,
        half_life: None,
        optimizer: OptimizerKind::Subspace,
        tolerance: 1e-6,
        partitions: 4,
        standardize: false,
        alpha: streampca::model::config::DEFAULT_ALPHA,
    }
}

/// Rows from a fixed, well-separated spectrum in a random basis, with a mean offset.
pub struct Source {
    dim: usize,
    basis: DMatrix<f64>,
    scales: Vec<f64>,
    mean: Vec<f64>,
}

impl Source {
    /// A source of `dim`-dimensional rows; standard deviations 5, 4, 3, 2, then 0.5
    /// falling slowly.
    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let m = DMatrix::from_fn(dim, dim, |_, _| StandardNormal.sample(&mut rng));
        let basis = m.qr().q();
        let scales = (0..dim)
            .map(|i| {
                if i < 4 {
                    5.0 - i as f64
                } else {
                    0.5 / (1.0 + 0.1 * i as f64)
                }
            })
            .collect();
        let mean = (0..dim).map(|i| 100.0 + i as f64).collect();
        Self {
            dim,
            basis,
            scales,
            mean,
        }
    }

    /// Batch `id` (deterministic): `rows` rows, row-major.
    pub fn rows(&self, id: u64, rows: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(0xba7c4 ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut out = Vec::with_capacity(rows * self.dim);
        for _ in 0..rows {
            let z: Vec<f64> = (0..self.dim)
                .map(|i| {
                    let n: f64 = StandardNormal.sample(&mut rng);
                    self.scales[i] * n
                })
                .collect();
            for r in 0..self.dim {
                let v: f64 = (0..self.dim).map(|c| self.basis[(r, c)] * z[c]).sum();
                out.push(self.mean[r] + v);
            }
        }
        out
    }

    /// Batch `id` checked for the model, in f32 when `single`.
    pub fn batch(&self, id: u64, rows: usize, single: bool) -> Batch {
        let v = self.rows(id, rows);
        let data = if single {
            BatchData::F32 {
                x: v.iter().map(|&a| a as f32).collect(),
                y: None,
            }
        } else {
            BatchData::F64 { x: v, y: None }
        };
        Batch::new(Shape::inputs(self.dim), data).expect("valid batch")
    }
}

/// Folds batches into one accumulator offline (the reference for the cluster's merge).
pub fn offline(dim: usize, batches: &[Batch]) -> Accumulator {
    let mut acc = Accumulator::new(dim, None, None).expect("accumulator");
    for b in batches {
        match b.data() {
            BatchData::F32 { x, .. } => acc.update(x, None),
            BatchData::F64 { x, .. } => acc.update(x, None),
        }
        .expect("update");
    }
    acc
}

/// The exact merge of a snapshot's partitions in partition order, as parts.
pub fn merged(snap: &Snapshot) -> AccumulatorParts {
    let accs = snap.accumulators().expect("consistent snapshot");
    let mut it = accs.into_iter();
    let mut m = it.next().expect("at least one partition");
    for a in it {
        m.merge(&a).expect("merge");
    }
    m.to_parts()
}

/// Asserts two accumulators' moments agree to `rel` (relative to each quantity's
/// largest magnitude) and their counts exactly.
pub fn assert_same_moments(got: &AccumulatorParts, want: &Accumulator, rel: f64) {
    assert_eq!(
        got.count.to_bits(),
        want.count().to_bits(),
        "sample counts differ"
    );
    let mean_scale = want.mean_x().amax();
    let mean_err = (&got.mean_x - want.mean_x()).amax();
    assert!(
        mean_err <= rel * mean_scale,
        "mean differs by {mean_err:e} (scale {mean_scale:e})"
    );
    let mut g = got.sxx.clone();
    for j in 0..g.ncols() {
        for i in 0..j {
            g[(i, j)] = g[(j, i)];
        }
    }
    let w = want.scatter();
    let scale = w.amax();
    let err = (&g - &w).amax();
    assert!(
        err <= rel * scale,
        "scatter differs by {err:e} (scale {scale:e})"
    );
}

/// The top `p` eigenvectors (n×p) of an accumulator's covariance, by a symmetric
/// eigensolver (the independent reference).
pub fn reference_components(acc: &Accumulator, p: usize) -> DMatrix<f64> {
    let c = acc.scatter() / acc.count();
    let e = SymmetricEigen::new(c);
    let mut idx: Vec<usize> = (0..e.eigenvalues.len()).collect();
    idx.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
    DMatrix::from_fn(acc.dim(), p, |r, c| e.eigenvectors[(r, idx[c])])
}

/// Waits until `node` serves a converged view covering exactly `rows` rows.
///
/// # Panics
/// After `limit`, with what it saw last.
pub async fn wait_rows(
    node: &ClusterNode,
    name: &str,
    rows: u64,
    limit: Duration,
) -> Arc<ServedView> {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(Some(v)) = node.view(name).await {
            if v.pointer.rows == rows && v.pointer.converged {
                return v;
            }
            last = Some(v.pointer.clone());
        }
        assert!(
            start.elapsed() < limit,
            "node {} never served {rows} rows of {name} in {limit:?}; last view {last:?}",
            node.node_id()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
