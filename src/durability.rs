//! The service's use of [`crate::persistence`]: start-up recovery of every model into the
//! [`Registry`], and the background snapshot schedule.
//!
//! Owns *when* things are written (thresholds, the final snapshot at shutdown) and how a
//! recovered model is rebuilt; the formats and crash-safety rules live in `persistence`,
//! the live state in `registry`. Blocking code: run it on blocking threads.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::metrics::Metrics;
use crate::pca::{Accumulator, TrainerState};
use crate::persistence::RecoveredModel;
use crate::registry::{Counters, ModelConfig, ModelSnapshot, Registry};

/// Rebuilds one recovered model (snapshot, then the log records after it, in order) and
/// serves it from `registry`. Tail problems and sequence gaps are logged and counted in
/// `streampca_wal_torn_records_total`; they do not stop start-up (the discarded bytes
/// were saved aside by the log).
///
/// # Errors
/// A model that cannot be rebuilt, naming its directory.
pub fn restore_recovered(
    registry: &Registry,
    metrics: &Metrics,
    r: RecoveredModel,
) -> anyhow::Result<()> {
    let dir = r.store.dir().to_owned();
    let what = || format!("recovering model directory {}", dir.display());
    let config = ModelConfig::from_stored(r.store.config())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(what)?;
    let last_sequence = r.last_sequence();
    let (mut acc, mut batches, trainer, snapshot_sequence) = match &r.snapshot {
        Some(loaded) => {
            let s = &loaded.snapshot;
            let acc = Accumulator::from_parts(s.accumulator.clone())
                .map_err(|e| anyhow::anyhow!("{}: {e}", loaded.path.display()))
                .with_context(what)?;
            tracing::info!(model = %config.name, path = %loaded.path.display(),
                sequence = s.sequence, "loaded snapshot");
            (acc, s.batches, s.trainer.clone(), Some(s.sequence))
        }
        None => (
            Accumulator::new(config.dim, config.target_dim, config.half_life)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(what)?,
            0,
            TrainerState::default(),
            None,
        ),
    };
    for record in &r.replay {
        match record.apply_to(&mut acc) {
            Ok(()) => batches += 1,
            // The live path rejected it too (after logging it); skipped the same way.
            Err(e) => tracing::warn!(model = %config.name, sequence = record.sequence,
                error = %e, "skipping a logged batch the accumulator rejects"),
        }
    }
    let name = config.name.clone();
    let snap = ModelSnapshot {
        counters: Counters {
            samples: acc.count(),
            batches,
            sequence: last_sequence,
        },
        accumulator: acc.to_parts(),
        config,
        trainer,
    };
    let replayed = r.replay.len();
    let (tail, gap) = (r.wal_tail.clone(), r.sequence_gap);
    let model = registry
        .restore(snap, Some(r.store))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(what)?;
    model.mark_snapshotted(snapshot_sequence);
    if let Some(t) = tail {
        tracing::warn!(model = %name, offset = t.offset, discarded_bytes = t.discarded,
            reason = %t.reason, saved_to = %t.saved_to.display(),
            "write-ahead log had a torn or corrupt tail; recovered up to the last whole record");
        metrics.wal_torn_record(&name);
    }
    if let Some(g) = gap {
        tracing::error!(model = %name, expected = g.expected, found = g.found,
            "write-ahead log has a sequence gap: acknowledged batches may be missing");
    }
    tracing::info!(model = %name, sequence = last_sequence, replayed, "model recovered");
    Ok(())
}

/// The background snapshot thread; stops (and is joined) on drop of [`Snapshotter`].
#[derive(Debug)]
pub struct Snapshotter {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Snapshotter {
    /// Starts a thread that, every 100 ms (a counter read per model), snapshots every model whose sequence
    /// advanced by `every_batches` since its last snapshot, or advanced at all and
    /// `interval` passed.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(
        registry: Arc<Registry>,
        every_batches: u64,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<()>();
        let tick = interval.min(Duration::from_millis(100));
        let thread = std::thread::Builder::new()
            .name("snapshotter".into())
            .spawn(move || {
                // Stops when `stop` is dropped (or sends).
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                    registry.snapshot_due(every_batches, interval, false);
                }
            })?;
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for a snapshot in progress. Blocking.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the snapshot thread panicked");
            }
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.halt();
    }
}
