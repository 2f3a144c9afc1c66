//! When models are snapshotted: the durability policy. A background thread looks at
//! every model every 100 ms and writes a snapshot when enough batches arrived since the
//! last one, or any arrived and enough time passed, and at shutdown. A failed snapshot
//! (full disk, I/O error) is retried with exponential backoff — 1 s, 2 s, 4 s, … up to
//! 60 s — instead of at every tick, so a full disk is not hammered with full-size
//! writes, and each retry logs one line with the number of failures so far.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::model::{Model, SnapshotMark};
use super::partition::lock;
use super::registry::Registry;
use crate::persistence;

/// First retry delay after a failed snapshot.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How often the schedule looks at the models.
const TICK: Duration = Duration::from_millis(100);

/// When to snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// After this many batches since the last snapshot.
    pub every_batches: u64,
    /// After this long, if any batch arrived.
    pub interval: Duration,
}

impl Model {
    /// Records that the snapshot on disk covers `sequence` (after recovery or import),
    /// so the schedule counts from there.
    pub fn mark_snapshotted(&self, sequence: Option<u64>) {
        let now = Instant::now();
        *lock(&self.snapshot_mark) = SnapshotMark {
            sequence,
            at: now,
            failures: 0,
            retry_at: now,
        };
    }

    /// Writes a snapshot if one is due (see the module documentation). `force` writes
    /// one whenever the model changed since the last snapshot of this process, or none
    /// was written yet (shutdown), ignoring the backoff. Returns whether one was
    /// written.
    ///
    /// # Errors
    /// The storage failure (counted in the metrics; logged by the caller).
    pub fn snapshot_if_due(
        &self,
        schedule: Schedule,
        force: bool,
    ) -> Result<bool, persistence::Error> {
        let mut mark = lock(&self.snapshot_mark);
        if self.deleted.load(Ordering::Acquire) {
            return Ok(false);
        }
        let now = Instant::now();
        if !force && now < mark.retry_at {
            return Ok(false);
        }
        let sequence = self.counters().sequence;
        let due = match mark.sequence {
            None => force || sequence > 0,
            Some(last) if sequence > last => {
                force
                    || sequence - last >= schedule.every_batches
                    || mark.at.elapsed() >= schedule.interval
                    || mark.failures > 0
            }
            Some(_) => false,
        };
        if !due {
            return Ok(false);
        }
        let snap = self.snapshot();
        let result = self.files().write_snapshot(&snap);
        let alive = self.is_alive();
        let name = self.config().name.as_str();
        match result {
            Ok(w) => {
                *mark = SnapshotMark {
                    sequence: Some(snap.sequence()),
                    at: Instant::now(),
                    failures: 0,
                    retry_at: now,
                };
                if alive {
                    let unix = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    self.metrics.snapshot_succeeded(name, unix);
                }
                tracing::debug!(model = name, sequence = snap.sequence(), path = %w.path.display(),
                    log_records_dropped = w.records_dropped, "snapshot written");
                Ok(true)
            }
            Err(e) => {
                mark.failures += 1;
                let shift = (mark.failures - 1).min(6);
                mark.retry_at = now + (BACKOFF_START * (1 << shift)).min(BACKOFF_CAP);
                if alive {
                    self.metrics.snapshot_failed(name);
                }
                tracing::error!(model = name, failures = mark.failures,
                    retry_in_secs = (mark.retry_at - now).as_secs(), error = %e, "snapshot failed");
                Err(e)
            }
        }
    }
}

/// The background snapshot thread; stopped (and joined) by [`Snapshotter::stop`] or on
/// drop.
#[derive(Debug)]
pub struct Snapshotter {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Snapshotter {
    /// Starts the thread.
    ///
    /// # Errors
    /// The operating system's refusal to start a thread.
    pub fn start(registry: Arc<Registry>, schedule: Schedule) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TICK) {
                    registry.snapshot_due(schedule, false);
                }
            })?;
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
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
