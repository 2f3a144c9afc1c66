//! The background trainer of one model: a thread that waits for new batches, fits the
//! exact merge of the model's partitions, publishes the fit, and paces itself under a
//! continuous stream.
//!
//! Pacing: after each fit it waits four times that fit's duration (5 ms to 60 s)
//! while batches keep arriving, and folds everything that arrived meanwhile into the
//! next fit; fits then take at most about a fifth of a core and ingest keeps the rest,
//! however long a fit is (its control-limit moments, computed with the fit once the model
//! is monitored, take 2.5 s at n = 4096).
//! An idle model fits as soon as a batch arrives, and so does a paced one while a request
//! waits for a fit covering its batch ([`Model::add_waiter`]).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::drift::DriftTracker;
use crate::pca::{correlation_target, Components, FitTarget, PcaError, Trainer};

use super::model::{FitMonitor, Model, Published};
use super::monitor::compute;
use super::partition::lock;

/// Under a continuous stream the trainer waits this many times its last fit's duration
/// before the next fit.
const TRAINER_PACE: f64 = 4.0;
/// Shortest pause between fits under a continuous stream.
const TRAINER_MIN_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between fits under a continuous stream. Reached only by fits over 15 s:
/// below that the pause stays at four fits, so the trainer's share of a core stays at a
/// fifth and the published components lag the newest batch by at most five fits.
const TRAINER_MAX_PAUSE: Duration = Duration::from_secs(60);

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
        let fit = acc.into_target().and_then(|t| fit(model, &mut trainer, t));
        let elapsed = start.elapsed();
        match fit {
            Ok((c, monitor)) => {
                let angle = drift.observe(Instant::now(), &c.vectors);
                let published = Published {
                    components: Some(Arc::new(c)),
                    sequence,
                    total_steps: trainer.total_steps(),
                    trainer: trainer.state().clone(),
                    monitor: Some(Arc::new(monitor)),
                };
                model.publish(published, elapsed, angle);
            }
            Err(PcaError::NotEnoughSamples { .. }) => {}
            Err(PcaError::Cancelled) => break,
            Err(e) => tracing::warn!(model = %model.config().name, error = %e, "fit failed"),
        }
        if !pause_while_ingesting(model, elapsed) {
            break;
        }
    }
    tracing::debug!(model = %model.config().name, "trainer stopped");
}

/// One fit of `target` (of its correlation matrix for a standardised model), and what
/// its control limits need: the moments themselves for a monitored model, the target
/// they are computed from otherwise (see [`super::monitor`]).
fn fit(
    model: &Model,
    trainer: &mut Trainer,
    target: FitTarget,
) -> Result<(Components, FitMonitor), PcaError> {
    let (target, standardizer) = if model.config().standardize {
        let (t, s) = correlation_target(target)?;
        (t, Some(s))
    } else {
        (target, None)
    };
    let components = trainer.fit_until(&target, None, &model.cancel)?;
    let flag = model.monitored_flag();
    let monitor = if model.is_monitored() {
        FitMonitor::computed(compute(&target, &components), standardizer, flag)
    } else {
        FitMonitor::deferred(target, standardizer, flag)
    };
    Ok((components, monitor))
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
    !w.stop && !model.cancel.is_cancelled()
}

fn pause_while_ingesting(model: &Model, fit: Duration) -> bool {
    let pause = fit
        .mul_f64(TRAINER_PACE)
        .clamp(TRAINER_MIN_PAUSE, TRAINER_MAX_PAUSE);
    let deadline = Instant::now() + pause;
    let mut w = lock(&model.wake);
    // A request waiting for a covering fit (`GET /models/{name}?fitted_sequence=`)
    // ends the pause: the next fit starts at once.
    while w.pending && !w.stop && !model.has_waiters() {
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
