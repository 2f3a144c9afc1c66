//! Deferred control-limit moments: an unmonitored model publishes fits without them; the
//! first read computes them from the fit's own target, bit-identical to computing them
//! eagerly, and marks the model monitored, after which the trainer computes them with
//! every fit.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::model::{Created, Model, ModelConfig, ModelName, Published, Registry};
use crate::pca::{limits, Batch, BatchData, LimitMoments, Limits, OptimizerKind, Shape};

const DIM: usize = 8;

fn model(dir: &std::path::Path) -> (Registry, Arc<Model>) {
    let reg = crate::model::tests::registry(dir);
    let config = ModelConfig {
        name: ModelName::new("m").unwrap(),
        dim: DIM,
        components: 3,
        target_dim: None,
        half_life: None,
        optimizer: OptimizerKind::Subspace,
        tolerance: 1e-8,
        partitions: 1,
        standardize: false,
        alpha: 0.01,
    };
    let Created::New(m) = reg.create(config).unwrap() else {
        panic!("new model")
    };
    (reg, m)
}

/// 300 rows with a decaying spectrum and a mean offset.
fn batch(seed: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let x: Vec<f64> = (0..300 * DIM)
        .map(|i| rng.gen_range(-1.0..1.0) * (DIM - i % DIM) as f64 + 5.0)
        .collect();
    Batch::new(
        Shape {
            dim: DIM,
            target_dim: None,
        },
        BatchData::F64 { x, y: None },
    )
    .unwrap()
}

fn published_at(m: &Model, sequence: u64) -> Arc<Published> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = m.published();
        if p.sequence >= sequence && p.components.is_some() {
            return p;
        }
        assert!(Instant::now() < deadline, "no fit covering {sequence}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The limits of `p` at several k and alpha from `moments`.
fn all_limits(p: &Published, moments: &LimitMoments) -> Vec<Limits> {
    let fit = p.components.as_ref().unwrap();
    let mut out = Vec::new();
    for k in 1..=fit.len() {
        for alpha in [0.001, 0.01, 0.05] {
            out.push(limits(&fit.eigenvalues, k, alpha, fit.samples, moments).unwrap());
        }
    }
    out
}

fn assert_bit_identical(got: &[Limits], want: &[Limits]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let bits = |l: &Limits| {
            [
                l.samples, l.t2, l.spe, l.spe_box, l.theta[0], l.theta[1], l.theta[2], l.h0,
            ]
            .map(f64::to_bits)
        };
        assert_eq!(bits(g), bits(w), "{g:?} against {w:?}");
        assert_eq!((g.k, g.spe_method), (w.k, w.spe_method));
    }
}

/// The moments computed eagerly from the model's current merged target and `p`'s fit.
fn eager(m: &Model, p: &Published) -> LimitMoments {
    let (acc, covers) = m.merged().unwrap();
    assert_eq!(covers, p.sequence, "the fit is of the current merge");
    let target = acc.into_target().unwrap();
    LimitMoments::new(&target, p.components.as_ref().unwrap()).unwrap()
}

#[test]
fn unmonitored_fits_defer_their_moments_and_the_first_read_matches_an_eager_computation() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, m) = model(dir.path());
    m.ingest(&batch(1)).unwrap();
    let p = published_at(&m, 1);
    let monitor = p.monitor.clone().unwrap();
    assert!(!m.is_monitored());
    assert!(
        !monitor.is_computed(),
        "an unmonitored fit computed its moments"
    );

    let fit = p.components.clone().unwrap();
    let lazy = all_limits(&p, monitor.moments(&fit).unwrap());
    assert!(monitor.is_computed());
    assert!(
        m.is_monitored(),
        "reading the moments marks the model monitored"
    );
    assert_bit_identical(&lazy, &all_limits(&p, &eager(&m, &p)));
    // Read again: the cached moments, the same answer.
    assert_bit_identical(&all_limits(&p, monitor.moments(&fit).unwrap()), &lazy);

    // Monitored now: the next fit carries its moments from the trainer.
    m.ingest(&batch(2)).unwrap();
    let p2 = published_at(&m, 2);
    let monitor2 = p2.monitor.clone().unwrap();
    assert!(
        monitor2.is_computed(),
        "a monitored model's fit has no moments"
    );
    let fit2 = p2.components.clone().unwrap();
    let published = all_limits(&p2, monitor2.moments(&fit2).unwrap());
    assert_bit_identical(&published, &all_limits(&p2, &eager(&m, &p2)));
}
