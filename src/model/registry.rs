//! The registry: every live model by name, the models recovery held back, and the
//! operations that change the set — create, import, delete — with the server's limits
//! applied to each the same way.
//!
//! The map lock is held to look up, insert or remove a name, and across the disk work
//! of create, import and delete, so a name's directory and its live model never
//! disagree. Those are rare, small operations next to ingest, which never takes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::pca::{Accumulator, Trainer};
use crate::persistence::{self, HeldModel, Position, Store};

use super::config::{ConfigError, ModelConfig, ModelName};
use super::error::ModelError;
use super::model::{Model, Published};
use super::snapshots::Schedule;
use super::trainer;

/// Longest wait for trainer threads at shutdown, over all models.
pub const TRAINER_STOP_WAIT: Duration = Duration::from_secs(3);

/// The server's limits on models, checked at creation and import alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Largest input or target dimension.
    pub max_dim: usize,
    /// Most components per model.
    pub max_components: usize,
    /// Most models.
    pub max_models: usize,
    /// Bytes of accumulator state all models may hold together
    /// ([`ModelConfig::state_bytes`]: one scatter per partition plus a merge buffer).
    pub max_state_bytes: u64,
}

impl ModelLimits {
    /// Decodes an uploaded snapshot and checks it against these limits (dimension,
    /// components, state bytes: before any n×n allocation) and every partition's scatter
    /// for positive semi-definiteness. Imports of either backend go through here.
    ///
    /// # Errors
    /// What is wrong, for an `invalid_snapshot` answer.
    pub fn decode_upload(
        &self,
        bytes: &[u8],
    ) -> Result<(persistence::Snapshot, Vec<Accumulator>), String> {
        let (snap, accs) = persistence::snapshot::decode_checked(bytes, |c| {
            let over = c.dim > self.max_dim
                || c.target_dim.is_some_and(|t| t > self.max_dim)
                || c.components > self.max_components
                || c.state_bytes() > self.max_state_bytes;
            if over {
                Err(format!(
                    "a model of dim {}, target_dim {:?}, {} components and {} partitions is \
                     over this server's limits (max_dim {}, max_components {}, \
                     max_state_bytes {})",
                    c.dim,
                    c.target_dim,
                    c.components,
                    c.partitions,
                    self.max_dim,
                    self.max_components,
                    self.max_state_bytes
                ))
            } else {
                Ok(())
            }
        })
        .map_err(|e| e.to_string())?;
        for (k, a) in accs.iter().enumerate() {
            a.check_semidefinite().map_err(|e| {
                format!("partition {k}: the scatter is not positive semi-definite ({e})")
            })?;
        }
        Ok((snap, accs))
    }
}

#[derive(Debug)]
struct Entry {
    model: Arc<Model>,
    thread: Option<JoinHandle<()>>,
}

/// What [`Registry::create`] did.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new model.
    New(Arc<Model>),
    /// A model with the very same configuration existed already.
    Existing(Arc<Model>),
}

/// The live models.
#[derive(Debug)]
pub struct Registry {
    models: RwLock<HashMap<String, Entry>>,
    /// Models recovery refused to serve, by name, until deleted or the service is
    /// restarted with `--accept-data-loss`.
    held: RwLock<BTreeMap<String, HeldModel>>,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    limits: ModelLimits,
    drift_interval: Duration,
}

impl Registry {
    /// An empty registry over `store`.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        limits: ModelLimits,
        drift_interval: Duration,
    ) -> Self {
        Self {
            models: RwLock::new(HashMap::new()),
            held: RwLock::new(BTreeMap::new()),
            metrics,
            store,
            limits,
            drift_interval,
        }
    }

    /// Checks `config` against the server's limits, with `others` the models that stay
    /// (a replaced model does not count).
    fn check_limits<'a>(
        &self,
        config: &ModelConfig,
        others: impl Iterator<Item = &'a ModelConfig>,
    ) -> Result<(), ModelError> {
        let l = &self.limits;
        for (field, v) in [("dim", Some(config.dim)), ("target_dim", config.target_dim)] {
            if let Some(v) = v.filter(|v| *v > l.max_dim) {
                return Err(ConfigError {
                    field,
                    reason: format!("must be at most {} (max_dim), got {v}", l.max_dim),
                }
                .into());
            }
        }
        if config.components > l.max_components {
            return Err(ConfigError {
                field: "components",
                reason: format!(
                    "must be at most {} (max_components), got {}",
                    l.max_components, config.components
                ),
            }
            .into());
        }
        let (mut count, mut used) = (0usize, 0u64);
        for c in others {
            count += 1;
            used = used.saturating_add(c.state_bytes());
        }
        if count >= l.max_models {
            return Err(ModelError::TooManyModels(format!(
                "the limit (max_models) is {}",
                l.max_models
            )));
        }
        let want = config.state_bytes();
        if used.saturating_add(want) > l.max_state_bytes {
            return Err(ModelError::TooManyModels(format!(
                "this model needs {want} bytes of accumulator state ({} partitions and a \
                 merge buffer of 8·{}² bytes each; fewer partitions need less), {used} of \
                 the budget (max_state_bytes) of {} are in use",
                config.partitions,
                config.row_width(),
                l.max_state_bytes
            )));
        }
        Ok(())
    }

    /// Creates a model, or returns the existing one if it has the very same
    /// configuration.
    ///
    /// # Errors
    /// [`ModelError::Config`] for a field out of range or over a limit;
    /// [`ModelError::Exists`] for a name in use with another configuration;
    /// [`ModelError::Quarantined`] for the name of a model held back after recovery;
    /// [`ModelError::TooManyModels`]; [`ModelError::Storage`].
    pub fn create(&self, config: ModelConfig) -> Result<Created, ModelError> {
        let params = config.validate()?;
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        let name = config.name.to_string();
        if let Some(e) = models.get(&name) {
            return if e.model.config() == &config {
                Ok(Created::Existing(e.model.clone()))
            } else {
                Err(ModelError::Exists(name))
            };
        }
        self.refuse_held(&name)?;
        self.check_limits(&config, models.values().map(|e| e.model.config()))?;
        let files = self.store.create(&config)?;
        let accs = (0..config.partitions)
            .map(|_| Accumulator::new(config.dim, config.target_dim, config.half_life))
            .collect::<Result<Vec<_>, _>>()?;
        let positions = vec![Position::default(); config.partitions];
        let model = Arc::new(Model::new(
            config,
            params.clone(),
            accs,
            positions,
            Published::default(),
            self.metrics.clone(),
            files,
        ));
        self.insert(&mut models, model.clone(), Trainer::new(params), false)?;
        Ok(Created::New(model))
    }

    /// Serves `model` under its name, starting its trainer (at once when `wake`).
    fn insert(
        &self,
        models: &mut HashMap<String, Entry>,
        model: Arc<Model>,
        trainer: Trainer,
        wake: bool,
    ) -> Result<(), ModelError> {
        if wake {
            super::partition::lock(&model.wake).pending = true;
        }
        let thread = trainer::spawn(model.clone(), trainer, self.drift_interval).map_err(|e| {
            ModelError::Storage(persistence::Error::Io {
                op: "start trainer thread",
                path: model.files().dir().to_owned(),
                source: e,
            })
        })?;
        let c = model.counters();
        self.metrics
            .model_created(model.config().name.as_str(), c.samples);
        models.insert(
            model.config().name.to_string(),
            Entry {
                model,
                thread: Some(thread),
            },
        );
        self.metrics.set_models(models.len());
        Ok(())
    }

    /// Adds a recovered model (start-up only).
    ///
    /// # Errors
    /// [`ModelError::Exists`] for a duplicate name; a failure to start its trainer.
    pub fn restore(&self, model: Arc<Model>, trainer: Trainer) -> Result<(), ModelError> {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        if models.contains_key(model.config().name.as_str()) {
            return Err(ModelError::Exists(model.config().name.to_string()));
        }
        self.insert(&mut models, model, trainer, true)
    }

    /// Records a model recovery refused to serve.
    pub fn hold(&self, held: HeldModel) {
        self.metrics.model_held(&held.name, true);
        self.held
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(held.name.clone(), held);
    }

    /// The models recovery held back.
    pub fn held(&self) -> Vec<HeldModel> {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// A held-back model's name cannot be reused until the model is deleted.
    fn refuse_held(&self, name: &str) -> Result<(), ModelError> {
        match self
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            Some(h) => Err(ModelError::Quarantined {
                name: h.name.clone(),
                reason: h.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Imports an encoded snapshot as the model `name` (replacing a model of that name,
    /// durably and atomically). The snapshot's own name is replaced by `name`. Checked
    /// before anything is allocated or changed: the format, the configuration against
    /// the server's limits, positions, every accumulator's values and positive
    /// semi-definiteness. Returns whether a model was replaced.
    ///
    /// # Errors
    /// [`ModelError::InvalidSnapshot`] saying what is wrong; [`ModelError::Config`] /
    /// [`ModelError::TooManyModels`] for a snapshot over a limit; [`ModelError::Storage`]
    /// when it cannot be made durable (the old model, if any, is then unchanged).
    pub fn import(&self, name: &ModelName, bytes: &[u8]) -> Result<(bool, Arc<Model>), ModelError> {
        let (mut snap, accs) = self
            .limits
            .decode_upload(bytes)
            .map_err(ModelError::InvalidSnapshot)?;
        snap.config.name = name.clone();
        let params = snap.config.validate()?;
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        let key = name.to_string();
        self.refuse_held(&key)?;
        self.check_limits(
            &snap.config,
            models
                .iter()
                .filter(|(n, _)| **n != key)
                .map(|(_, e)| e.model.config()),
        )?;
        let old = models.get(&key).map(|e| e.model.clone());
        if let Some(old) = &old {
            // No batch is sequenced and no snapshot written into the directory from now
            // on: after the swap its path is the new model's.
            old.close(true);
            let _mark = super::partition::lock(&old.snapshot_mark);
            old.deleted
                .store(true, std::sync::atomic::Ordering::Release);
        }
        // The old model stays whole on disk (and serving reads) until this succeeds.
        let files = match self.store.install(&snap) {
            Ok(f) => f,
            Err(e) => {
                if let Some(old) = &old {
                    old.deleted
                        .store(false, std::sync::atomic::Ordering::Release);
                    old.close(false);
                }
                tracing::error!(model = %name, error = %e, "import failed; the existing model is unchanged");
                return Err(e.into());
            }
        };
        if let Some(entry) = models.remove(&key) {
            retire(entry);
        }
        let positions = snap.positions();
        let trainer = Trainer::with_state(params.clone(), snap.trainer.clone());
        let published = Published {
            total_steps: trainer.total_steps(),
            trainer: snap.trainer.clone(),
            ..Published::default()
        };
        let model = Arc::new(Model::new(
            snap.config.clone(),
            params,
            accs,
            positions,
            published,
            self.metrics.clone(),
            files,
        ));
        model.mark_snapshotted(Some(snap.sequence()));
        self.insert(&mut models, model.clone(), trainer, true)?;
        Ok((old.is_some(), model))
    }

    /// The model called `name`.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; [`ModelError::Quarantined`] for a model recovery held
    /// back.
    pub fn get(&self, name: &str) -> Result<Arc<Model>, ModelError> {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = models.get(name) {
            return Ok(e.model.clone());
        }
        drop(models);
        match self
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            Some(h) => Err(ModelError::Quarantined {
                name: h.name.clone(),
                reason: h.reason.clone(),
            }),
            None => Err(ModelError::NotFound(name.to_owned())),
        }
    }

    /// Every live model, by name.
    pub fn list(&self) -> Vec<Arc<Model>> {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = models.values().map(|e| e.model.clone()).collect();
        all.sort_by(|a, b| a.config().name.cmp(&b.config().name));
        all
    }

    /// Deletes a model (or a held-back model's directory), durably.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; [`ModelError::Storage`] (then the model is unchanged).
    pub fn delete(&self, name: &str) -> Result<(), ModelError> {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = models.remove(name) else {
            drop(models);
            let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
            if !held.contains_key(name) {
                return Err(ModelError::NotFound(name.to_owned()));
            }
            self.store.delete(name)?;
            held.remove(name);
            self.metrics.model_held(name, false);
            return Ok(());
        };
        entry.model.close(true);
        let deleted = {
            let _mark = super::partition::lock(&entry.model.snapshot_mark);
            entry
                .model
                .deleted
                .store(true, std::sync::atomic::Ordering::Release);
            self.store.delete(name)
        };
        if let Err(e) = deleted {
            entry
                .model
                .deleted
                .store(false, std::sync::atomic::Ordering::Release);
            entry.model.close(false);
            models.insert(name.to_owned(), entry);
            return Err(e.into());
        }
        self.metrics.set_models(models.len());
        drop(models);
        retire(entry);
        Ok(())
    }

    /// Snapshots every model that is due (see [`Model::snapshot_if_due`]); failures are
    /// logged and counted there.
    pub fn snapshot_due(&self, schedule: Schedule, force: bool) {
        for m in self.list() {
            let _ = m.snapshot_if_due(schedule, force);
        }
    }

    /// Stops every trainer: a running fit is cancelled at its next step or kernel, and
    /// the threads are waited for up to [`TRAINER_STOP_WAIT`] in all. A trainer still
    /// inside one long kernel then (an eigensolve at n = 4096, p = 1024 takes tens of
    /// seconds) is left to the process exit: a cancelled fit publishes nothing, so a
    /// final snapshot taken meanwhile holds the last published warm start.
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
        let deadline = std::time::Instant::now() + TRAINER_STOP_WAIT;
        for t in threads.into_iter().flatten() {
            while !t.is_finished() && std::time::Instant::now() < deadline {
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

/// Stops a removed model's trainer (a running fit stops at its next step; the thread
/// is not joined) and removes its metric series.
fn retire(entry: Entry) {
    entry.model.stop();
    entry.model.retire();
    drop(entry.thread);
}
