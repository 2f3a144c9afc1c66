//! The background trainer of one model: a thread that waits for new batches, fits the
//! exact merge of the model's partitions, publishes the fit, and paces itself under a
//! continuous stream.
//!
//! Pacing: after each fit it waits four times that fit's duration (5 ms to 250 ms)
//! while batches keep arriving, and folds everything that arrived meanwhile into the
//! next fit; fits then take at most about a fifth of a core and ingest keeps the rest.
//! An idle model fits as soon as a batch arrives.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::drift::DriftTracker;
use crate::pca::{PcaError, Trainer};

use super::model::{Model, Published};
use super::partition::lock;

/// Under a continuous stream the trainer waits this many times its last fit's duration
/// before the next fit.
const TRAINER_PACE: f64 = 4.0;
/// Shortest pause between fits under a continuous stream.
const TRAINER_MIN_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between fits under a continuous stream: bounds how far the published
/// components can lag the newest batches (plus one fit).
const TRAINER_MAX_PAUSE: Duration = Duration::from_millis(250);

/// Starts `model`'s trainer thread, warm-started from `trainer`.
///
/// # Errors
/// The operating system's refusal to start a thread.
pub fn spawn(
    model: Arc<Model>,
    trainer: Trainer,
    drift_interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("train-{}", model.config().name))
        .spawn(move || run(&model, trainer, DriftTracker::new(drift_interval)))
}

fn run(model: &Model, mut trainer: Trainer, mut drift: DriftTracker) {
    while wait_for_work(model) {
        let (acc, sequence) = match model.merged() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(model = %model.config().name, error = %e, "merging partitions failed");
                continue;
            }
        };
        if acc.count() < model.params.min_samples() as f64 {
            continue;
        }
        let start = Instant::now();
        let fit = acc.into_target().and_then(|t| trainer.fit(&t, None));
        let elapsed = start.elapsed();
        match fit {
            Ok(c) => {
                let angle = drift.observe(Instant::now(), &c.vectors);
                let published = Published {
                    components: Some(Arc::new(c)),
                    sequence,
                    total_steps: trainer.total_steps(),
                    trainer: trainer.state().clone(),
                };
                model.publish(published, elapsed, angle);
            }
            Err(PcaError::NotEnoughSamples { .. }) => {}
            Err(e) => tracing::warn!(model = %model.config().name, error = %e, "fit failed"),
        }
        if !pause_while_ingesting(model, elapsed) {
            break;
        }
    }
    tracing::debug!(model = %model.config().name, "trainer stopped");
}

fn wait_for_work(model: &Model) -> bool {
    let mut w = lock(&model.wake);
    while !w.pending && !w.stop {
        w = model
            .wake_cv
            .wait(w)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    w.pending = false;
    !w.stop && !model.cancel.load(Ordering::Acquire)
}

fn pause_while_ingesting(model: &Model, fit: Duration) -> bool {
    let pause = fit
        .mul_f64(TRAINER_PACE)
        .clamp(TRAINER_MIN_PAUSE, TRAINER_MAX_PAUSE);
    let deadline = Instant::now() + pause;
    let mut w = lock(&model.wake);
    while w.pending && !w.stop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        w = model
            .wake_cv
            .wait_timeout(w, deadline - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
    !w.stop
}
