//! One live model: its partitions, the sequencer that orders its stream, the published
//! fit, and the counters queries read.
//!
//! Concurrency (why each lock exists, and what it never covers):
//! - [`Model::ingest`] takes an idle partition from the pool and that partition's lock,
//!   then, for a few instructions, the sequencer's lock to draw the batch's `sequence`
//!   and row clock. Under the partition's lock alone it appends the record to the
//!   partition's log (one `write`) and folds the batch. Partitions share nothing else,
//!   so K producers run on K cores. The durability wait (group commit) comes after the
//!   lock is released. Lock order: partition, then sequencer, then `totals`; never the
//!   other way.
//! - A fit reads the sequencer's `sequence` S, then merges the partitions in order
//!   k = 0..K−1, each under its own lock. Every batch with a sequence up to S was drawn
//!   under its partition's lock and is folded before that lock is released, so the
//!   merge covers every batch acknowledged before the fit started (and perhaps a few
//!   more).
//! - Queries clone the published `Arc` and copy the small [`Counters`]: they never wait
//!   for a fit or an update.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::pca::{Accumulator, Batch, Cancel, Components, TrainerState, ValidParams};
use crate::persistence::{EncodedRecord, ModelFiles, PartitionState, Position, Snapshot};
use crate::telemetry::throttle::LogThrottle;

pub use super::monitor::FitMonitor;

use super::config::ModelConfig;
use super::error::ModelError;
use super::partition::{lock, Partition, Pool};

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn write<T>(l: &RwLock<T>, value: T) {
    *l.write().unwrap_or_else(std::sync::PoisonError::into_inner) = value;
}

/// What an acknowledged batch returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestReceipt {
    /// Rows accepted.
    pub accepted: usize,
    /// The model's sample count after the batch (weighted under forgetting; batches
    /// folding concurrently in other partitions may or may not be counted yet).
    pub samples: f64,
    /// The batch's sequence number: strictly increasing over the model, 1 for the first
    /// batch. A batch refused with a 4xx never takes one.
    pub sequence: u64,
}

/// Counters that change with every batch, copied out for status queries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counters {
    /// Sample count (weighted under forgetting).
    pub samples: f64,
    /// Batches folded.
    pub batches: u64,
    /// Highest sequence folded.
    pub sequence: u64,
}

/// The latest fit, published for queries.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The components, `None` before the first fit.
    pub components: Option<Arc<Components>>,
    /// The fit covers every batch with a sequence up to this one (every batch
    /// acknowledged before the fit started), and possibly some later ones.
    pub sequence: u64,
    /// Optimiser steps over the model's life.
    pub total_steps: u64,
    /// The trainer's warm-start state after the fit (for snapshots).
    pub trainer: TrainerState,
    /// What monitoring needs from this fit; `None` before the first fit.
    pub monitor: Option<Arc<FitMonitor>>,
}

/// The model's next sequence and row clock.
#[derive(Debug, Default)]
struct Sequencer {
    sequence: u64,
    clock: u64,
    /// Set when the model is deleted or replaced: no batch is sequenced after that.
    closed: bool,
}

/// Each partition's count and clock after its last batch, for the samples counter.
#[derive(Debug)]
struct Totals {
    parts: Vec<(f64, u64)>,
    batches: u64,
}

/// Wake-up flags for the trainer thread.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// New batches arrived since the trainer last merged.
    pub(crate) pending: bool,
    /// The model was deleted or the service is stopping.
    pub(crate) stop: bool,
}

/// When a model was last snapshotted, and how its failures are backed off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapshotMark {
    /// Sequence the last snapshot covered (`None` before the first in this process).
    pub(crate) sequence: Option<u64>,
    /// When it was written (or the model was loaded).
    pub(crate) at: Instant,
    /// Consecutive failures since the last success.
    pub(crate) failures: u32,
    /// No attempt before this instant (exponential backoff after failures).
    pub(crate) retry_at: Instant,
}

/// One live model.
#[derive(Debug)]
pub struct Model {
    config: ModelConfig,
    pub(crate) params: ValidParams,
    partitions: Vec<Partition>,
    pool: Pool,
    sequencer: Mutex<Sequencer>,
    totals: Mutex<Totals>,
    /// Copy of the counters for readers.
    counters: RwLock<Counters>,
    /// Latest fit; the lock is held only to clone or swap the pointer.
    published: RwLock<Arc<Published>>,
    pub(crate) wake: Mutex<Wake>,
    pub(crate) wake_cv: Condvar,
    /// Set when the model is deleted or replaced (with `alive` cleared under its lock):
    /// fits stop at the next step.
    pub(crate) cancel: Cancel,
    /// False once deleted: guards metric updates so a deleted model's late trainer or
    /// ingest cannot recreate its series.
    alive: Mutex<bool>,
    pub(crate) metrics: Arc<Metrics>,
    files: ModelFiles,
    /// Serialises snapshot writes of this model and guards them against deletion.
    pub(crate) snapshot_mark: Mutex<SnapshotMark>,
    /// Set (under `snapshot_mark`) before the model's directory is deleted or replaced.
    pub(crate) deleted: AtomicBool,
    /// The published fit's `sequence`, for requests waiting for a covering fit; also
    /// signalled (unchanged) when the trainer stops, so waiters end.
    fitted: tokio::sync::watch::Sender<u64>,
    /// Requests waiting for a covering fit: while any is present the trainer skips its
    /// pacing pause.
    waiters: AtomicUsize,
    /// Set once a request has read the control-limit moments of one of the model's fits
    /// (see [`super::monitor`]): the trainer then computes them with every fit.
    monitored: Arc<AtomicBool>,
}

/// One request waiting for a covering fit, counted in [`Model::waiters`] until dropped.
#[derive(Debug)]
pub struct FitWaiter<'a> {
    model: &'a Model,
}

impl Drop for FitWaiter<'_> {
    fn drop(&mut self) {
        self.model.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Model {
    /// A model over `files` whose partitions hold `accs` at `positions` (one each, in
    /// partition order), with `published` as its last fit.
    pub(crate) fn new(
        config: ModelConfig,
        params: ValidParams,
        accs: Vec<Accumulator>,
        positions: Vec<Position>,
        published: Published,
        metrics: Arc<Metrics>,
        files: ModelFiles,
    ) -> Self {
        let logs = files.logs();
        let clock = accs.iter().map(Accumulator::clock).max().unwrap_or(0);
        let sequence = positions.iter().map(|p| p.sequence).max().unwrap_or(0);
        let batches = positions.iter().map(|p| p.batches).sum();
        let parts: Vec<(f64, u64)> = accs.iter().map(|a| (a.count(), a.clock())).collect();
        let counters = Counters {
            samples: total_count(&accs, clock),
            batches,
            sequence,
        };
        let partitions = accs
            .into_iter()
            .zip(positions)
            .zip(logs)
            .map(|((acc, pos), log)| Partition::new(acc, pos, log))
            .collect::<Vec<_>>();
        let now = Instant::now();
        let published_sequence = published.sequence;
        Self {
            pool: Pool::new(partitions.len()),
            partitions,
            sequencer: Mutex::new(Sequencer {
                sequence,
                clock,
                closed: false,
            }),
            totals: Mutex::new(Totals { parts, batches }),
            counters: RwLock::new(counters),
            published: RwLock::new(Arc::new(published)),
            wake: Mutex::new(Wake::default()),
            wake_cv: Condvar::new(),
            cancel: Cancel::new(),
            alive: Mutex::new(true),
            metrics,
            files,
            snapshot_mark: Mutex::new(SnapshotMark {
                sequence: None,
                at: now,
                failures: 0,
                retry_at: now,
            }),
            deleted: AtomicBool::new(false),
            fitted: tokio::sync::watch::Sender::new(published_sequence),
            waiters: AtomicUsize::new(0),
            monitored: Arc::new(AtomicBool::new(false)),
            params,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Current counters (never waits for an update or a fit).
    pub fn counters(&self) -> Counters {
        read(&self.counters)
    }

    /// The latest published fit (never waits for an update or a fit).
    pub fn published(&self) -> Arc<Published> {
        read(&self.published)
    }

    /// The model's files.
    pub(crate) fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Appends one checked batch to the log of an idle partition, folds it there, and
    /// returns once it is durable. The batch takes the model's next `sequence`; it is
    /// applied whole or not at all, exactly once.
    ///
    /// Order, and why: the record is encoded before any lock; under the partition's
    /// lock the batch is written to the log *before* the accumulator sees it, so no
    /// batch is ever in memory without being in the log, and a failed write changes
    /// nothing (the sequence number is given back). The durability wait is outside the
    /// lock (group commit). If it fails, the log is poisoned and every later batch for
    /// that partition is refused until a restart recovers exactly what reached the disk.
    ///
    /// # Errors
    /// [`ModelError::Batch`] for a batch of another shape (nothing changed);
    /// [`ModelError::NotFound`] once the model is deleted or replaced;
    /// [`ModelError::Storage`] when the log cannot take it;
    /// [`ModelError::Numerics`] if the accumulator refuses a checked batch (a bug: the
    /// record stays in the log and replay refuses it the same way).
    pub fn ingest(&self, batch: &Batch) -> Result<IngestReceipt, ModelError> {
        if batch.shape() != self.config.shape() {
            return Err(ModelError::Batch(crate::pca::BatchError::Shape {
                part: crate::pca::Part::X,
                width: self.config.dim,
                rows: batch.rows(),
                got: batch.rows() * batch.shape().dim,
            }));
        }
        let rows = batch.rows();
        let mut record = EncodedRecord::new(batch).map_err(|e| self.storage_failed(e))?;
        let lease = self.pool.take();
        let k = lease.index();
        let partition = &self.partitions[k];
        let mut st = partition.lock();
        let stamp = {
            let mut seq = lock(&self.sequencer);
            if seq.closed {
                return Err(ModelError::NotFound(self.config.name.to_string()));
            }
            seq.sequence += 1;
            seq.clock += rows as u64;
            st.next_stamp(seq.sequence, seq.clock)
        };
        let ticket = match partition.log().write(&mut record, stamp) {
            Ok(t) => t,
            Err(e) => {
                self.give_back(stamp.sequence, rows);
                drop(st);
                return Err(self.storage_failed(e));
            }
        };
        let folded = st.fold(batch, stamp);
        let (count, clock) = (st.acc.count(), st.acc.clock());
        drop(st);
        drop(lease);
        if let Err(e) = folded {
            tracing::error!(model = %self.config.name, sequence = stamp.sequence, error = %e,
                "the accumulator refused a checked batch");
            return Err(e.into());
        }
        let samples = {
            let mut t = lock(&self.totals);
            t.parts[k] = (count, clock);
            t.batches += 1;
            let now = t.parts.iter().map(|p| p.1).max().unwrap_or(clock);
            let samples = self.count_now(&t.parts, now);
            let mut c = read(&self.counters);
            c.samples = samples;
            c.batches = t.batches;
            c.sequence = c.sequence.max(stamp.sequence);
            write(&self.counters, c);
            // Inside the lock so the samples gauge moves in order (lock order: totals,
            // then alive; nothing takes them the other way).
            if *lock(&self.alive) {
                self.metrics
                    .batch_accepted(self.config.name.as_str(), rows, samples);
            }
            samples
        };
        lock(&self.wake).pending = true;
        self.wake_cv.notify_one();
        let start = Instant::now();
        partition
            .log()
            .wait(ticket)
            .map_err(|e| self.storage_failed(e))?;
        self.metrics.wal_fsync_waited(start.elapsed());
        Ok(IngestReceipt {
            accepted: rows,
            samples,
            sequence: stamp.sequence,
        })
    }

    /// Gives a sequence number back after a failed append: possible when no batch drew
    /// a later one meanwhile (always, unless another partition's producer raced it).
    /// Otherwise the number stays unused, and the rows of the failed batch stay counted
    /// in the row clock of later batches: forgetting then weighs older rows as if
    /// `rows` more had arrived. Logged, because only a failing disk causes it.
    fn give_back(&self, sequence: u64, rows: usize) {
        let mut seq = lock(&self.sequencer);
        if seq.sequence == sequence {
            seq.sequence -= 1;
            seq.clock -= rows as u64;
        } else {
            tracing::warn!(model = %self.config.name, sequence,
                "a failed append left its sequence number unused (a later batch had drawn one)");
        }
    }

    fn count_now(&self, parts: &[(f64, u64)], now: u64) -> f64 {
        let decay = |rows: u64| {
            self.config
                .half_life
                .map_or(1.0, |h| (-(rows as f64) / h).exp2())
        };
        parts.iter().map(|(c, t)| c * decay(now - t)).sum()
    }

    fn storage_failed(&self, e: crate::persistence::Error) -> ModelError {
        // A full disk fails every batch: at most 5 lines per model per 10 s, each with
        // the number left out since the previous one.
        static APPEND_LOG: std::sync::LazyLock<LogThrottle> =
            std::sync::LazyLock::new(|| LogThrottle::new(Duration::from_secs(10), 5));
        if let Some(suppressed) = APPEND_LOG.check(self.config.name.as_str()) {
            tracing::error!(model = %self.config.name, error = %e, suppressed, "log append failed");
        }
        if *lock(&self.alive) {
            self.metrics.wal_append_failed(self.config.name.as_str());
        }
        ModelError::Storage(e)
    }

    /// The exact merge of every partition, in partition order, and the sequence it is
    /// guaranteed to cover (see the module documentation).
    ///
    /// # Errors
    /// The merge's refusal (incompatible states: a bug).
    pub fn merged(&self) -> Result<(Accumulator, u64), ModelError> {
        let covers = lock(&self.sequencer).sequence;
        let mut merged: Option<Accumulator> = None;
        for p in &self.partitions {
            let st = p.lock();
            match merged.as_mut() {
                None => merged = Some(st.acc.clone()),
                Some(m) => m.merge(&st.acc)?,
            }
        }
        let merged = merged.ok_or(ModelError::Numerics(crate::pca::PcaError::EmptyBatch))?;
        Ok((merged, covers))
    }

    /// A consistent snapshot of the model: each partition's parts and position (each
    /// taken under its own lock) and the last fit's warm start.
    pub fn snapshot(&self) -> Snapshot {
        let partitions = self
            .partitions
            .iter()
            .map(|p| {
                let (accumulator, position) = p.parts();
                PartitionState {
                    position,
                    accumulator,
                }
            })
            .collect();
        Snapshot {
            config: self.config.clone(),
            partitions,
            trainer: self.published().trainer.clone(),
        }
    }

    /// Publishes a fit covering every batch up to `sequence`.
    pub(crate) fn publish(&self, published: Published, elapsed: Duration, drift: Option<f64>) {
        if let Some(c) = &published.components {
            if *lock(&self.alive) {
                self.metrics.fit_published(
                    self.config.name.as_str(),
                    c,
                    elapsed,
                    self.config.components,
                    drift,
                );
                self.metrics
                    .model_alpha(self.config.name.as_str(), self.config.alpha);
            }
            tracing::debug!(model = %self.config.name, sequence = published.sequence,
                steps = c.steps, converged = c.converged,
                max_error_bound = c.max_error_bound(), "fit published");
        }
        let sequence = published.sequence;
        write(&self.published, Arc::new(published));
        self.fitted.send_replace(sequence);
    }

    /// Registers a request waiting for a fit covering a sequence, unless `max` are
    /// already waiting on this model (`None`). While the returned guard lives the
    /// trainer skips its pacing pause; registering wakes a trainer that is pausing.
    pub fn add_waiter(&self, max: usize) -> Option<FitWaiter<'_>> {
        self.waiters
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        // Under the trainer's lock, so a trainer that has just found no waiter is
        // already waiting on the condition variable and gets this notification.
        drop(lock(&self.wake));
        self.wake_cv.notify_all();
        Some(FitWaiter { model: self })
    }

    /// Whether the model is monitored: its fits carry their control-limit moments from
    /// the trainer (see [`super::monitor`]).
    pub fn is_monitored(&self) -> bool {
        self.monitored.load(Ordering::Acquire)
    }

    /// The monitored flag, for the fits the trainer publishes.
    pub(crate) fn monitored_flag(&self) -> Arc<AtomicBool> {
        self.monitored.clone()
    }

    /// Whether any request is waiting for a covering fit.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Acquire) > 0
    }

    /// A receiver of the published fit's `sequence`: it changes with every publication,
    /// and is signalled once more when the trainer stops (see [`Model::is_stopped`]).
    pub fn watch_fitted(&self) -> tokio::sync::watch::Receiver<u64> {
        self.fitted.subscribe()
    }

    /// Whether the trainer was stopped (the model deleted or replaced, or shutdown).
    pub fn is_stopped(&self) -> bool {
        lock(&self.wake).stop
    }

    /// Records a rejected batch in the metrics (only while the model exists).
    pub fn record_rejection(&self, code: &str) {
        if *lock(&self.alive) {
            self.metrics.batch_rejected(self.config.name.as_str(), code);
        }
    }

    /// Records `rows` ingested rows scored against a published fit, `t2` and `spe` of
    /// them over the respective control limit (only while the model exists).
    pub fn record_scored(&self, rows: usize, t2: usize, spe: usize) {
        if *lock(&self.alive) {
            self.metrics
                .rows_scored(self.config.name.as_str(), rows, t2, spe);
        }
    }

    /// Stops sequencing batches (the model is being deleted or replaced); `reopen`
    /// undoes it when the deletion or replacement failed.
    pub(crate) fn close(&self, closed: bool) {
        lock(&self.sequencer).closed = closed;
    }

    /// Stops the trainer (at its next step).
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
        lock(&self.wake).stop = true;
        self.wake_cv.notify_all();
        // Wakes the requests waiting for a fit: none will come.
        self.fitted.send_modify(|_| {});
    }

    /// Marks the model deleted and removes its metric series.
    pub(crate) fn retire(&self) {
        let mut alive = lock(&self.alive);
        *alive = false;
        self.metrics
            .model_removed(self.config.name.as_str(), self.config.components);
    }

    /// Whether the model's series may still be written.
    pub(crate) fn is_alive(&self) -> bool {
        *lock(&self.alive)
    }
}

/// The weighted count of every partition, brought to row clock `now`.
fn total_count(accs: &[Accumulator], now: u64) -> f64 {
    accs.iter().map(|a| a.count_at(now)).sum()
}
