//! Live models: each model's configuration, accumulator, sequence counter, published
//! fit and background trainer thread, and the registry that names them.
//!
//! Concurrency (why each lock exists, and what it never covers):
//! - [`Model::ingest`] parses nothing: it takes an already validated [`Batch`], locks
//!   the model's accumulator mutex only for `Accumulator::update` plus the sequence bump,
//!   so concurrent producers are serialised into one order and every acknowledged batch
//!   is applied exactly once. A durability hook belongs inside that critical section
//!   (append the batch with its sequence number before acknowledging).
//! - The trainer thread clones the accumulator under the same mutex (O(n²), cheap next to
//!   a fit), releases it, fits, and publishes an `Arc<Published>` by swapping a pointer.
//!   Queries clone that pointer (and copy the small [`Counters`]); they never wait for a
//!   fit or an update.
//! - The registry's map lock is held only to look up, insert or remove a name.
//!
//! - Durability (when the registry has a [`Store`]): the batch is appended to the
//!   model's write-ahead log under the same mutex, so log order is sequence order, and
//!   made durable *outside* it ([`persistence::Wal::wait`]) so concurrent producers
//!   share one fsync; only then is the batch acknowledged. Creation, deletion and
//!   snapshot import go through the store under the registry's map lock, so a name's
//!   directory and its live model never disagree.
//!
//! No HTTP types here except [`ApiError`] as the error vocabulary. File I/O happens only
//! through [`persistence`] and only when a store is attached: call the methods that
//! may touch the disk from blocking threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::http::error::{ApiError, ERROR_CODES};
use crate::metrics::Metrics;
use crate::pca::{
    all_finite, Accumulator, AccumulatorParts, Cancel, Components, FitParams, OptimizerKind,
    PcaError, Trainer, TrainerState, ValidParams,
};
use crate::persistence::{self, BatchData, ModelStore, Snapshot, Store, WalRecord};

/// Largest input or target dimension a model may have. The accumulator holds an n×n
/// float64 scatter and the trainer clones it per fit: 16 384 is 2 GiB each, while
/// 65 536 would be 32 GiB and abort the process on allocation.
pub const MAX_DIM: usize = 16_384;
/// Largest number of components a model may have.
pub const MAX_COMPONENTS: usize = 1024;
/// Default convergence tolerance, in radians.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;

/// Under a continuous stream the trainer waits this many times its last fit's duration
/// before the next fit (see `Model::pause_while_ingesting`): fits then take at most
/// 1/(1 + 4) of a core, and ingest keeps the rest.
const TRAINER_PACE: f64 = 4.0;
/// Shortest pause between fits under a continuous stream.
const TRAINER_MIN_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between fits under a continuous stream: bounds how far the published
/// components can lag the newest batches (plus one fit).
const TRAINER_MAX_PAUSE: Duration = Duration::from_millis(250);
/// Longest time [`Registry::shutdown`] waits for the trainers to stop, in all.
pub const TRAINER_STOP_WAIT: Duration = Duration::from_secs(3);

/// Locks a mutex, recovering the data if a previous holder panicked (the data under our
/// locks is only replaced by whole values, so it is never left half-written).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(l: &RwLock<T>, value: T) {
    *l.write().unwrap_or_else(PoisonError::into_inner) = value;
}

/// Checks a batch's shapes and finiteness against the model before it is logged, so
/// the accumulator can then reject it only for overflow (see [`Model::ingest`]). Cheap
/// next to the update itself (O(rows·n) against O(rows·n²)).
fn check_batch(batch: &Batch, c: &ModelConfig) -> Result<(), ApiError> {
    let (nx, ny) = batch.data.lens();
    if batch.rows == 0 || nx == 0 {
        return Err(ApiError::EmptyBatch);
    }
    if nx != batch.rows * c.dim {
        return Err(ApiError::DimensionMismatch(format!(
            "x has {nx} values, expected {} rows of {}",
            batch.rows, c.dim
        )));
    }
    match (c.target_dim, ny) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "y",
                "this model has no targets (target_dim not set)",
            ))
        }
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "y",
                "this regression model needs targets",
            ))
        }
        (Some(m), Some(ny)) => {
            if ny != batch.rows * m {
                return Err(ApiError::DimensionMismatch(format!(
                    "y has {ny} values, expected {} rows of {m}",
                    batch.rows
                )));
            }
        }
    }
    let finite = match &batch.data {
        BatchData::F32 { x, y } => all_finite(x) && y.as_deref().is_none_or(all_finite),
        BatchData::F64 { x, y } => all_finite(x) && y.as_deref().is_none_or(all_finite),
    };
    if !finite {
        return Err(ApiError::NonFinite(
            "the batch holds NaN or infinity".into(),
        ));
    }
    Ok(())
}

/// Whether `name` is a valid model name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// A model's immutable configuration: what it was created with.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Name, `[a-z0-9][a-z0-9_-]{0,63}`.
    pub name: String,
    /// Input dimension n.
    pub dim: usize,
    /// Number of ordered components p.
    pub components: usize,
    /// Target dimension n_y for regression models; `None` for autoencoders.
    pub target_dim: Option<usize>,
    /// Forgetting half-life in samples; `None` keeps every sample.
    pub half_life: Option<f64>,
    /// Which optimiser.
    pub optimizer: OptimizerKind,
    /// Convergence tolerance on every error bound, in radians.
    pub tolerance: f64,
}

impl ModelConfig {
    /// Checks the configuration and derives the trainer's parameters.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] naming the first field out of range.
    pub fn validate(&self) -> Result<ValidParams, ApiError> {
        if !valid_name(&self.name) {
            return Err(ApiError::invalid(
                "name",
                format!("`{}` does not match [a-z0-9][a-z0-9_-]{{0,63}}", self.name),
            ));
        }
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(ApiError::invalid(
                "dim",
                format!("must be between 1 and {MAX_DIM}, got {}", self.dim),
            ));
        }
        if let Some(t) = self.target_dim {
            if t == 0 || t > MAX_DIM {
                return Err(ApiError::invalid(
                    "target_dim",
                    format!("must be between 1 and {MAX_DIM}, got {t}"),
                ));
            }
        }
        let m = self.target_dim.unwrap_or(self.dim);
        if self.components == 0 || self.components > MAX_COMPONENTS.min(m) {
            return Err(ApiError::invalid(
                "components",
                format!(
                    "must be between 1 and {} (the {} dimension, capped at {MAX_COMPONENTS}), got {}",
                    MAX_COMPONENTS.min(m),
                    if self.target_dim.is_some() { "target" } else { "input" },
                    self.components
                ),
            ));
        }
        if let Some(h) = self.half_life {
            if !(h.is_finite() && h > 0.0) {
                return Err(ApiError::invalid(
                    "half_life",
                    format!("must be a positive number of samples, got {h}"),
                ));
            }
        }
        let mut params = FitParams::new(self.components, self.optimizer);
        params.tolerance = self.tolerance;
        Ok(params.check(m)?)
    }

    /// Values per binary row: `dim + target_dim`.
    pub fn row_width(&self) -> usize {
        self.dim + self.target_dim.unwrap_or(0)
    }
}

impl ModelConfig {
    /// The storage layer's record of this configuration.
    pub fn to_stored(&self) -> persistence::ModelConfig {
        persistence::ModelConfig {
            name: self.name.clone(),
            dim: self.dim,
            components: self.components,
            target_dim: self.target_dim,
            half_life: self.half_life,
            optimizer: self.optimizer.as_str().to_owned(),
            tolerance: self.tolerance,
        }
    }

    /// The configuration recorded by the storage layer, checked like a new model's.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] for an unknown optimiser or a field out of range.
    pub fn from_stored(c: &persistence::ModelConfig) -> Result<Self, ApiError> {
        let optimizer = OptimizerKind::parse(&c.optimizer).ok_or_else(|| {
            ApiError::invalid("optimizer", format!("unknown optimizer `{}`", c.optimizer))
        })?;
        let config = Self {
            name: c.name.clone(),
            dim: c.dim,
            components: c.components,
            target_dim: c.target_dim,
            half_life: c.half_life,
            optimizer,
            tolerance: c.tolerance,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Maps a storage failure on a request path to the API's vocabulary.
pub fn storage_error(e: &persistence::Error) -> ApiError {
    ApiError::StorageUnavailable(e.to_string())
}

/// A validated mini-batch: `rows` rows, `x` row-major rows×dim, `y` row-major
/// rows×target_dim for regression models, in the precision they arrived in (raw f32
/// bodies stay f32 all the way to the log and the accumulator, which widens them to f64
/// as it centres them). Built by the HTTP layer's body parsers.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Number of rows (≥ 1).
    pub rows: usize,
    /// The values.
    pub data: BatchData,
}

impl Batch {
    /// A double-precision batch.
    pub fn f64(rows: usize, x: Vec<f64>, y: Option<Vec<f64>>) -> Self {
        Self {
            rows,
            data: BatchData::F64 { x, y },
        }
    }

    /// A single-precision batch.
    pub fn f32(rows: usize, x: Vec<f32>, y: Option<Vec<f32>>) -> Self {
        Self {
            rows,
            data: BatchData::F32 { x, y },
        }
    }

    /// `x` and `y` widened to f64, for tests that compare parsers across widths.
    #[cfg(test)]
    pub(crate) fn to_f64(&self) -> (Vec<f64>, Option<Vec<f64>>) {
        match &self.data {
            BatchData::F64 { x, y } => (x.clone(), y.clone()),
            BatchData::F32 { x, y } => {
                let widen = |v: &Vec<f32>| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
                (widen(x), y.as_ref().map(widen))
            }
        }
    }
}

/// What an acknowledged batch returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestReceipt {
    /// Rows accepted.
    pub accepted: usize,
    /// The model's sample count after the batch (weighted under forgetting).
    pub samples: f64,
    /// The batch's sequence number: 1 for the first batch, then +1 per batch.
    pub sequence: u64,
}

/// Counters that change with every batch, copied out for status queries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counters {
    /// Sample count (weighted under forgetting).
    pub samples: f64,
    /// Batches applied.
    pub batches: u64,
    /// Sequence number of the last applied batch (0 before any).
    pub sequence: u64,
}

/// The latest fit, published for queries.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The components, `None` before the first fit.
    pub components: Option<Arc<Components>>,
    /// The batch sequence number the fit saw.
    pub sequence: u64,
    /// Optimiser steps over the model's life.
    pub total_steps: u64,
    /// The trainer's warm-start state after the fit (for snapshots).
    pub trainer: TrainerState,
}

/// The accumulator and its sequence counter, changed together under one mutex.
#[derive(Debug)]
struct IngestState {
    acc: Accumulator,
    counters: Counters,
    /// Work buffer for the centred batch, reused across batches (fresh pages for every
    /// batch cost more than the copy itself); dropped after a batch that needed more
    /// than [`SCRATCH_KEEP_BYTES`], so one huge batch does not pin its size.
    scratch: Vec<f64>,
}

/// Largest work buffer a model keeps between batches (16 MiB: n = 2048 at b = 1023).
const SCRATCH_KEEP_BYTES: usize = 16 << 20;

/// Wake-up flags for the trainer thread.
#[derive(Debug, Default)]
struct Wake {
    /// New batches arrived since the trainer last cloned the accumulator.
    pending: bool,
    /// The model was deleted or the service is stopping.
    stop: bool,
}

/// Everything needed to rebuild a model elsewhere (for the durability layer).
#[derive(Debug, Clone)]
pub struct ModelSnapshot {
    /// The configuration.
    pub config: ModelConfig,
    /// The accumulator's contents.
    pub accumulator: AccumulatorParts,
    /// Counters consistent with `accumulator`.
    pub counters: Counters,
    /// The trainer's warm-start state (from the last published fit).
    pub trainer: TrainerState,
}

impl ModelSnapshot {
    /// The storage layer's snapshot of this state.
    pub fn to_stored(&self) -> Snapshot {
        Snapshot {
            config: self.config.to_stored(),
            sequence: self.counters.sequence,
            batches: self.counters.batches,
            accumulator: self.accumulator.clone(),
            trainer: self.trainer.clone(),
        }
    }

    /// The state a stored snapshot holds, checked (config ranges, accumulator shapes
    /// and finiteness) before anything is built from it.
    ///
    /// # Errors
    /// [`ApiError::InvalidSnapshot`] saying what is wrong.
    pub fn from_stored(s: Snapshot) -> Result<Self, ApiError> {
        s.validate()
            .map_err(|e| ApiError::InvalidSnapshot(e.to_string()))?;
        let config = ModelConfig::from_stored(&s.config)
            .map_err(|e| ApiError::InvalidSnapshot(e.to_string()))?;
        let acc = Accumulator::from_parts(s.accumulator.clone())
            .map_err(|e| ApiError::InvalidSnapshot(e.to_string()))?;
        Ok(Self {
            config,
            counters: Counters {
                samples: acc.count(),
                batches: s.batches,
                sequence: s.sequence,
            },
            accumulator: s.accumulator,
            trainer: s.trainer,
        })
    }
}

/// When a model was last snapshotted.
#[derive(Debug, Clone, Copy)]
struct SnapshotMark {
    /// Sequence the last snapshot covered (`None` before the first in this process).
    sequence: Option<u64>,
    /// When it was written (or the model was loaded).
    at: Instant,
}

/// One live model.
#[derive(Debug)]
pub struct Model {
    config: ModelConfig,
    params: ValidParams,
    /// Accumulator + counters: the only state a batch changes. Held for one update.
    ingest: Mutex<IngestState>,
    /// Copy of the counters for readers; written under `ingest`, read without it.
    counters: RwLock<Counters>,
    /// Latest fit; the lock is held only to clone or swap the pointer.
    published: RwLock<Arc<Published>>,
    wake: Mutex<Wake>,
    wake_cv: Condvar,
    /// Set by `stop`: a running fit returns at its next step instead of finishing.
    cancel: Cancel,
    /// False once deleted: guards metric updates so a deleted model's late trainer or
    /// ingest cannot recreate its series.
    alive: Mutex<bool>,
    metrics: Arc<Metrics>,
    /// The model's files (log and snapshots); `None` when the registry runs without a
    /// data directory (unit tests).
    store: Option<ModelStore>,
    /// Serialises snapshot writes of this model (they must not go backwards in
    /// sequence) and guards them against deletion: `deleted` is set under it.
    snapshot_mark: Mutex<SnapshotMark>,
    /// Set (under `snapshot_mark`) before the model's directory is deleted, so a late
    /// snapshot cannot write into a directory a new model of the same name now owns.
    deleted: AtomicBool,
}

impl Model {
    fn new(
        config: ModelConfig,
        params: ValidParams,
        metrics: Arc<Metrics>,
        store: Option<ModelStore>,
    ) -> Result<Self, ApiError> {
        let acc = Accumulator::new(config.dim, config.target_dim, config.half_life)?;
        Ok(Self::from_parts(
            config,
            params,
            acc,
            Counters::default(),
            Published::default(),
            metrics,
            store,
        ))
    }

    fn from_parts(
        config: ModelConfig,
        params: ValidParams,
        acc: Accumulator,
        counters: Counters,
        published: Published,
        metrics: Arc<Metrics>,
        store: Option<ModelStore>,
    ) -> Self {
        Self {
            config,
            params,
            ingest: Mutex::new(IngestState {
                acc,
                counters,
                scratch: Vec::new(),
            }),
            counters: RwLock::new(counters),
            published: RwLock::new(Arc::new(published)),
            wake: Mutex::new(Wake::default()),
            wake_cv: Condvar::new(),
            cancel: Cancel::new(),
            alive: Mutex::new(true),
            metrics,
            store,
            snapshot_mark: Mutex::new(SnapshotMark {
                sequence: None,
                at: Instant::now(),
            }),
            deleted: AtomicBool::new(false),
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

    /// Applies one validated batch, whole or not at all, assigns it the next sequence
    /// number, makes it durable (when a store is attached) and wakes the trainer.
    /// Concurrent calls are serialised: the accumulator always equals a serial
    /// accumulation of every acknowledged batch in sequence order.
    ///
    /// Order, and why: shapes and finiteness are checked first, then under the model
    /// lock the batch is written to the log *before* the accumulator sees it. So a
    /// failed log write changes nothing (503, no sequence used), and no batch is ever
    /// in memory without being in the log. The only way the update can then fail is a
    /// batch whose magnitude would overflow the scatter: the accumulator is unchanged,
    /// the sequence number stays used (the log holds it; replay rejects it the same
    /// way, deterministically) and the caller gets the error. The durability wait is
    /// outside the lock (group commit); if it fails the log is poisoned, the caller
    /// gets 503 and every later batch for this model is refused until a restart
    /// recovers exactly what reached the disk.
    ///
    /// # Errors
    /// [`ApiError::DimensionMismatch`], [`ApiError::NonFinite`], [`ApiError::EmptyBatch`]
    /// or [`ApiError::InvalidParameter`] for a bad batch (then nothing changed);
    /// [`ApiError::StorageUnavailable`] when the log cannot take it.
    pub fn ingest(&self, batch: Batch) -> Result<IngestReceipt, ApiError> {
        check_batch(&batch, &self.config)?;
        let rows = batch.rows;
        let record = WalRecord {
            sequence: 0,
            dim: self.config.dim,
            target_dim: self.config.target_dim,
            data: batch.data,
        };
        // Encoded before the lock; under it the log only stamps the sequence number.
        let mut encoded = match &self.store {
            Some(_) => Some(
                record
                    .encode_unsequenced()
                    .map_err(|e| self.wal_failed(&e))?,
            ),
            None => None,
        };
        let (receipt, ticket) = {
            let mut st = lock(&self.ingest);
            let sequence = st.counters.sequence + 1;
            let ticket = match (&self.store, encoded.as_mut()) {
                (Some(store), Some(encoded)) => {
                    match store.wal().write_encoded(encoded, sequence) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            drop(st);
                            return Err(self.wal_failed(&e));
                        }
                    }
                }
                _ => None,
            };
            let st = &mut *st;
            let applied = record.data.apply_with_scratch(&mut st.acc, &mut st.scratch);
            if st.scratch.capacity() * std::mem::size_of::<f64>() > SCRATCH_KEEP_BYTES {
                st.scratch = Vec::new();
            }
            if let Err(e) = applied {
                if ticket.is_some() {
                    // Logged: the number is used (see above).
                    st.counters.sequence = sequence;
                    write(&self.counters, st.counters);
                }
                return Err(e.into());
            }
            st.counters.sequence = sequence;
            st.counters.batches += 1;
            st.counters.samples = st.acc.count();
            write(&self.counters, st.counters);
            // Metrics inside the critical section so the samples gauge moves in sequence
            // order (lock order: ingest, then alive; nothing takes them the other way).
            if *lock(&self.alive) {
                self.metrics
                    .batch_accepted(&self.config.name, rows, st.counters.samples);
            }
            (
                IngestReceipt {
                    accepted: rows,
                    samples: st.counters.samples,
                    sequence: st.counters.sequence,
                },
                ticket,
            )
        };
        lock(&self.wake).pending = true;
        self.wake_cv.notify_one();
        if let (Some(store), Some(ticket)) = (&self.store, ticket) {
            let start = Instant::now();
            store.wal().wait(ticket).map_err(|e| self.wal_failed(&e))?;
            self.metrics.wal_fsync_waited(start.elapsed());
        }
        Ok(receipt)
    }

    /// Records that the snapshot on disk covers `sequence` (after recovery), so the
    /// schedule counts from there.
    pub fn mark_snapshotted(&self, sequence: Option<u64>) {
        *lock(&self.snapshot_mark) = SnapshotMark {
            sequence,
            at: Instant::now(),
        };
    }

    fn wal_failed(&self, e: &persistence::Error) -> ApiError {
        tracing::error!(model = %self.config.name, error = %e, "write-ahead log append failed");
        if *lock(&self.alive) {
            self.metrics.wal_append_failed(&self.config.name);
        }
        storage_error(e)
    }

    /// Writes a snapshot if one is due: the sequence advanced by `every_batches` since
    /// the last one, or advanced at all and `interval` passed. `force` writes one
    /// whenever the model changed since the last snapshot of this process, or none was
    /// written yet (shutdown). Returns whether one was written.
    ///
    /// # Errors
    /// The storage failure (also counted in the metrics and logged by the caller).
    pub fn snapshot_if_due(
        &self,
        every_batches: u64,
        interval: Duration,
        force: bool,
    ) -> Result<bool, persistence::Error> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let mut mark = lock(&self.snapshot_mark);
        if self.deleted.load(Ordering::Acquire) {
            return Ok(false);
        }
        let sequence = self.counters().sequence;
        let due = match mark.sequence {
            None => force || sequence > 0,
            Some(last) if sequence > last => {
                force || sequence - last >= every_batches || mark.at.elapsed() >= interval
            }
            Some(_) => false,
        };
        if !due {
            return Ok(false);
        }
        let snap = self.snapshot();
        let result = store.write_snapshot(&snap.to_stored());
        let alive = lock(&self.alive);
        match result {
            Ok(w) => {
                *mark = SnapshotMark {
                    sequence: Some(snap.counters.sequence),
                    at: Instant::now(),
                };
                if *alive {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    self.metrics.snapshot_succeeded(&self.config.name, now);
                }
                tracing::debug!(model = %self.config.name, sequence = snap.counters.sequence,
                    path = %w.path.display(), wal_records_dropped = w.wal_records_dropped, "snapshot written");
                Ok(true)
            }
            Err(e) => {
                if *alive {
                    self.metrics.snapshot_failed(&self.config.name);
                }
                Err(e)
            }
        }
    }

    /// Records a rejected batch in the metrics (only while the model exists).
    pub fn record_rejection(&self, code: &str) {
        if *lock(&self.alive) {
            self.metrics.batch_rejected(&self.config.name, code);
        }
    }

    /// A consistent copy of the model's durable state.
    pub fn snapshot(&self) -> ModelSnapshot {
        let (accumulator, counters) = {
            let st = lock(&self.ingest);
            (st.acc.to_parts(), st.counters)
        };
        ModelSnapshot {
            config: self.config.clone(),
            accumulator,
            counters,
            trainer: self.published().trainer.clone(),
        }
    }

    fn stop(&self) {
        self.cancel.cancel();
        lock(&self.wake).stop = true;
        self.wake_cv.notify_all();
    }

    /// Marks the model deleted and removes its metric series.
    fn retire(&self) {
        let mut alive = lock(&self.alive);
        *alive = false;
        self.metrics
            .model_removed(&self.config.name, self.config.components, ERROR_CODES);
    }

    /// Blocks until there is new data (true) or the model is stopping (false).
    fn wait_for_work(&self) -> bool {
        let mut w = lock(&self.wake);
        while !w.pending && !w.stop {
            w = self.wake_cv.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
        w.pending = false;
        !w.stop
    }

    /// After a fit that took `fit`, if batches arrived meanwhile (a busy stream), waits
    /// `TRAINER_PACE × fit` (at least [`TRAINER_MIN_PAUSE`], at most
    /// [`TRAINER_MAX_PAUSE`]) before the next fit, so the trainer takes at most about a
    /// fifth of a core and leaves the rest to ingest; the batches that arrive meanwhile
    /// are coalesced into the next fit. A quiet model fits at once when a batch arrives.
    /// Returns false if the model is stopping.
    fn pause_while_ingesting(&self, fit: Duration) -> bool {
        let pause = fit
            .mul_f64(TRAINER_PACE)
            .clamp(TRAINER_MIN_PAUSE, TRAINER_MAX_PAUSE);
        let deadline = Instant::now() + pause;
        let mut w = lock(&self.wake);
        while w.pending && !w.stop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            w = self
                .wake_cv
                .wait_timeout(w, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        !w.stop
    }

    /// The trainer thread's loop: fit the latest accumulator, publish, repeat while new
    /// batches arrived meanwhile (coalescing); sleep when there is nothing new. A fit
    /// that ends unconverged with no new data waits for new data.
    fn train(self: Arc<Self>, mut trainer: Trainer) {
        while self.wait_for_work() {
            let (acc, sequence) = {
                let st = lock(&self.ingest);
                if st.acc.count() < self.params.min_samples() as f64 {
                    continue;
                }
                (st.acc.clone(), st.counters.sequence)
            };
            let start = Instant::now();
            let fit = acc
                .into_target()
                .and_then(|t| trainer.fit_until(&t, None, &self.cancel));
            let elapsed = start.elapsed();
            match fit {
                Ok(c) => self.publish(c, sequence, &trainer, elapsed),
                Err(PcaError::NotEnoughSamples { .. }) => {}
                Err(PcaError::Cancelled) => break,
                Err(e) => tracing::warn!(model = %self.config.name, error = %e, "fit failed"),
            }
            if !self.pause_while_ingesting(elapsed) {
                break;
            }
        }
        tracing::debug!(model = %self.config.name, "trainer stopped");
    }

    fn publish(
        &self,
        c: Components,
        sequence: u64,
        trainer: &Trainer,
        elapsed: std::time::Duration,
    ) {
        {
            let alive = lock(&self.alive);
            if *alive {
                self.metrics
                    .fit_published(&self.config.name, &c, elapsed, self.config.components);
            }
        }
        tracing::debug!(
            model = %self.config.name, sequence, steps = c.steps, converged = c.converged,
            max_error_bound = c.max_error_bound(), "fit published"
        );
        let published = Published {
            components: Some(Arc::new(c)),
            sequence,
            total_steps: trainer.total_steps(),
            trainer: trainer.state().clone(),
        };
        write(&self.published, Arc::new(published));
    }
}

/// A model with its trainer thread.
#[derive(Debug)]
struct Entry {
    model: Arc<Model>,
    thread: Option<JoinHandle<()>>,
}

/// Outcome of [`Registry::create`].
#[derive(Debug, Clone)]
pub enum Created {
    /// A new model.
    New(Arc<Model>),
    /// A model with the same name and configuration already existed.
    Existing(Arc<Model>),
}

/// All live models by name.
#[derive(Debug)]
pub struct Registry {
    /// Held only to look up, insert or remove a name, and (with a store) across the
    /// directory create/delete of that name, so disk and memory agree; creates and
    /// deletes are rare and each costs a few fsyncs.
    models: RwLock<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
    /// The data directory; `None` runs in memory only (unit tests).
    store: Option<Arc<Store>>,
}

impl Registry {
    /// An empty, in-memory registry reporting to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            models: RwLock::new(HashMap::new()),
            metrics,
            store: None,
        }
    }

    /// An empty registry whose models live in `store` (fill it with [`Registry::restore`]
    /// from the store's recovery).
    pub fn with_store(metrics: Arc<Metrics>, store: Arc<Store>) -> Self {
        Self {
            models: RwLock::new(HashMap::new()),
            metrics,
            store: Some(store),
        }
    }

    /// Creates a model (durably, with a store) and starts its trainer; idempotent for an
    /// identical configuration. Blocking with a store: call from a blocking context.
    ///
    /// # Errors
    /// [`ApiError::InvalidParameter`] for an invalid configuration;
    /// [`ApiError::ModelExists`] when the name is taken by another configuration;
    /// [`ApiError::StorageUnavailable`] when the directory cannot be created;
    /// [`ApiError::Internal`] if the trainer thread cannot be spawned.
    pub fn create(&self, config: ModelConfig) -> Result<Created, ApiError> {
        let params = config.validate()?;
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = models.get(&config.name) {
            return if e.model.config == config {
                Ok(Created::Existing(e.model.clone()))
            } else {
                Err(ApiError::ModelExists(config.name))
            };
        }
        let store = self.create_dir(&config)?;
        let model = Arc::new(Model::new(
            config,
            params.clone(),
            self.metrics.clone(),
            store,
        )?);
        let entry = spawn_trainer(model.clone(), Trainer::new(params))?;
        self.metrics.model_created(&model.config.name);
        models.insert(model.config.name.clone(), entry);
        self.metrics.set_models(models.len());
        Ok(Created::New(model))
    }

    fn create_dir(&self, config: &ModelConfig) -> Result<Option<ModelStore>, ApiError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        store.create(&config.to_stored()).map(Some).map_err(|e| {
            tracing::error!(model = %config.name, error = %e, "cannot create model directory");
            storage_error(&e)
        })
    }

    /// Restores a model from a snapshot and starts its trainer, which fits the restored
    /// accumulator at once. `store` is the model's files (from recovery), if any.
    ///
    /// # Errors
    /// As [`Registry::create`], plus [`ApiError::Internal`] for inconsistent parts.
    pub fn restore(
        &self,
        snap: ModelSnapshot,
        store: Option<ModelStore>,
    ) -> Result<Arc<Model>, ApiError> {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        if models.contains_key(&snap.config.name) {
            return Err(ApiError::ModelExists(snap.config.name));
        }
        self.insert_restored(&mut models, snap, store)
    }

    fn insert_restored(
        &self,
        models: &mut HashMap<String, Entry>,
        snap: ModelSnapshot,
        store: Option<ModelStore>,
    ) -> Result<Arc<Model>, ApiError> {
        let params = snap.config.validate()?;
        let acc = Accumulator::from_parts(snap.accumulator)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let trainer = Trainer::with_state(params.clone(), snap.trainer.clone());
        let published = Published {
            total_steps: trainer.total_steps(),
            trainer: snap.trainer,
            ..Published::default()
        };
        let model = Arc::new(Model::from_parts(
            snap.config,
            params,
            acc,
            snap.counters,
            published,
            self.metrics.clone(),
            store,
        ));
        lock(&model.wake).pending = true;
        let entry = spawn_trainer(model.clone(), trainer)?;
        self.metrics.model_created(&model.config.name);
        models.insert(model.config.name.clone(), entry);
        self.metrics.set_models(models.len());
        Ok(model)
    }

    /// Replaces (or creates) the model named by the snapshot's config with the
    /// snapshot's state, durably: the old model (if any) is deleted, a fresh directory
    /// is created and the snapshot written into it before the new model is served.
    /// The snapshot must be validated already ([`ModelSnapshot::from_stored`]).
    ///
    /// Not atomic on disk: a crash between the delete and the snapshot write leaves the
    /// model absent or empty (the import was not acknowledged, so the client retries).
    /// Blocking: call from a blocking context.
    ///
    /// # Errors
    /// [`ApiError::StorageUnavailable`]; [`ApiError::Internal`].
    pub fn import(&self, snap: ModelSnapshot) -> Result<Arc<Model>, ApiError> {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        let name = snap.config.name.clone();
        if let Some(old) = models.remove(&name) {
            self.metrics.set_models(models.len());
            self.retire_entry(old)?;
        }
        let store = self.create_dir(&snap.config)?;
        if let Some(store) = &store {
            store.write_snapshot(&snap.to_stored()).map_err(|e| {
                tracing::error!(model = %name, error = %e, "cannot write imported snapshot");
                storage_error(&e)
            })?;
        }
        let model = self.insert_restored(&mut models, snap, store)?;
        model.mark_snapshotted(Some(model.counters().sequence));
        Ok(model)
    }

    /// The model called `name`.
    ///
    /// # Errors
    /// [`ApiError::ModelNotFound`].
    pub fn get(&self, name: &str) -> Result<Arc<Model>, ApiError> {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        models
            .get(name)
            .map(|e| e.model.clone())
            .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))
    }

    /// Every model, sorted by name.
    pub fn list(&self) -> Vec<Arc<Model>> {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = models.values().map(|e| e.model.clone()).collect();
        all.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        all
    }

    /// Deletes a model (durably, with a store): stops its trainer (without waiting for
    /// a running fit), removes its directory and its metric series. Blocking with a
    /// store: call from a blocking context.
    ///
    /// # Errors
    /// [`ApiError::ModelNotFound`]; [`ApiError::StorageUnavailable`] when the directory
    /// cannot be removed (the model then stays).
    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        let entry = models
            .remove(name)
            .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))?;
        if let Err(e) = self.retire_entry_dir(&entry) {
            entry.model.deleted.store(false, Ordering::Release);
            models.insert(name.to_owned(), entry);
            return Err(e);
        }
        self.metrics.set_models(models.len());
        drop(models);
        entry.model.stop();
        entry.model.retire();
        // The thread finishes its current fit (if any) on its own; it holds only its Arc.
        drop(entry.thread);
        Ok(())
    }

    /// Marks the model deleted (so no snapshot writes into its directory any more) and
    /// deletes the directory.
    fn retire_entry_dir(&self, entry: &Entry) -> Result<(), ApiError> {
        let _mark = lock(&entry.model.snapshot_mark);
        entry.model.deleted.store(true, Ordering::Release);
        if let Some(store) = &self.store {
            store.delete(&entry.model.config.name).map_err(|e| {
                tracing::error!(model = %entry.model.config.name, error = %e, "cannot delete model directory");
                storage_error(&e)
            })?;
        }
        Ok(())
    }

    fn retire_entry(&self, entry: Entry) -> Result<(), ApiError> {
        self.retire_entry_dir(&entry)?;
        entry.model.stop();
        entry.model.retire();
        drop(entry.thread);
        Ok(())
    }

    /// Writes the snapshots that are due (see [`Model::snapshot_if_due`]); failures are
    /// logged and counted, and retried next time. Blocking.
    pub fn snapshot_due(&self, every_batches: u64, interval: Duration, force: bool) {
        for m in self.list() {
            if let Err(e) = m.snapshot_if_due(every_batches, interval, force) {
                tracing::error!(model = %m.config.name, error = %e, "snapshot failed");
            }
        }
    }

    /// Stops every trainer: a running fit is cancelled at its next check, and each
    /// thread is waited for up to [`TRAINER_STOP_WAIT`] in all. A trainer still inside
    /// one long kernel then (an eigensolve at n = 4096, p = 1024 takes tens of seconds)
    /// is left to the process exit: a cancelled fit publishes nothing, so a final
    /// snapshot taken meanwhile holds the last published warm start (at worst a fit
    /// that finished in that kernel is not in it, which only costs the next start
    /// some steps). Blocking: call from a blocking context.
    pub fn shutdown(&self) {
        let threads: Vec<_> = {
            let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
            models
                .values_mut()
                .map(|e| {
                    e.model.stop();
                    e.thread.take()
                })
                .collect()
        };
        let deadline = Instant::now() + TRAINER_STOP_WAIT;
        for t in threads.into_iter().flatten() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !t.is_finished() {
                tracing::warn!(
                    thread = t.thread().name().unwrap_or("trainer"),
                    "a cancelled fit is still inside one kernel; not waiting for it"
                );
            } else if t.join().is_err() {
                tracing::error!("a trainer thread panicked");
            }
        }
    }
}

fn spawn_trainer(model: Arc<Model>, trainer: Trainer) -> Result<Entry, ApiError> {
    let m = model.clone();
    let thread = std::thread::Builder::new()
        .name(format!("train-{}", model.config.name))
        .spawn(move || m.train(trainer))
        .map_err(|e| ApiError::Internal(format!("cannot spawn trainer thread: {e}")))?;
    Ok(Entry {
        model,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            dim: 4,
            components: 2,
            target_dim: None,
            half_life: None,
            optimizer: OptimizerKind::Subspace,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    #[test]
    fn state_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Registry>();
        check::<Model>();
        check::<Published>();
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        assert!(valid_name("a"));
        assert!(valid_name("mnist_784-v2"));
        assert!(valid_name(&"a".repeat(64)));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(!valid_name("_a"));
        assert!(!valid_name("A"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
    }

    #[test]
    fn creating_twice_is_idempotent_but_a_different_config_conflicts() {
        let r = Registry::new(Arc::new(Metrics::new()));
        assert!(matches!(r.create(config("m")), Ok(Created::New(_))));
        assert!(matches!(r.create(config("m")), Ok(Created::Existing(_))));
        let other = ModelConfig {
            dim: 5,
            ..config("m")
        };
        assert!(matches!(r.create(other), Err(ApiError::ModelExists(_))));
        r.shutdown();
    }

    #[test]
    fn a_failed_batch_changes_nothing() {
        let r = Registry::new(Arc::new(Metrics::new()));
        let Ok(Created::New(m)) = r.create(config("m")) else {
            panic!("model not created")
        };
        let bad = Batch::f64(1, vec![1.0, 2.0, 3.0, f64::NAN], None);
        assert!(m.ingest(bad).is_err());
        assert_eq!(m.counters(), Counters::default());
        r.shutdown();
    }

    #[test]
    fn the_trainer_publishes_after_enough_samples() {
        let r = Registry::new(Arc::new(Metrics::new()));
        let Ok(Created::New(m)) = r.create(config("m")) else {
            panic!("model not created")
        };
        let x: Vec<f64> = (0..400).map(|i| ((i * 7919) % 101) as f64 / 10.0).collect();
        let receipt = m.ingest(Batch::f64(100, x, None)).expect("valid batch");
        assert_eq!(receipt.sequence, 1);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while m.published().components.is_none() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let p = m.published();
        assert_eq!(p.sequence, 1);
        assert!(p.components.is_some());
        r.shutdown();
    }
}
