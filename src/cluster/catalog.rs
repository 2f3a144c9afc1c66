//! The model catalog: one KV entry per model (key: its name) holding its configuration,
//! generation and partition count. Creation is create-if-absent; deletion is a
//! compare-and-set delete; generations come from a compare-and-set counter and are
//! never reused, so a stream, checkpoint or batch of a deleted model can never be
//! mistaken for one of a new model of the same name. Every node keeps a copy of the
//! catalog up to date from a KV watch.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::model::{ModelConfig, ModelLimits};

use super::connect::Connection;
use super::error::ClusterError;
use super::names::GENERATION_KEY;
use super::store::{cas_put, leader_get, Cas};

/// What the catalog stores about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The creation settings.
    pub config: ModelConfig,
    /// Never reused across deletions; names the model's stream and state keys.
    pub generation: u64,
    /// The model-wide sequence of the state the model was imported with (0 for a model
    /// created empty): the batch at stream sequence `q` has model sequence
    /// `base_sequence + q`, so sequences keep increasing across an import.
    #[serde(default)]
    pub base_sequence: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl ModelRecord {
    /// Partitions K (the configuration's `partitions`, at most
    /// [`crate::model::config::MAX_PARTITIONS`]).
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.config.partitions).unwrap_or(u32::MAX)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Checks a configuration for cluster mode: every field in range (the build's hard
/// caps, then `limits`' `max_dim` and `max_components`), no forgetting and no
/// standardization (the cluster's trainer fits the covariance only).
///
/// Forgetting (`half_life`) is refused: a row's weight under forgetting is
/// γ^(rows in later batches over all partitions), so each batch's row clock must count
/// the rows of every partition before it. A publisher does not know that number (the
/// stream assigns the order), and each partition's fold reads only its own subject, so
/// the cluster's partitions count their own rows instead (see [`super::fold`]): exact
/// without forgetting, not with it.
///
/// # Errors
/// [`ClusterError::InvalidParameter`] naming the field.
pub fn check_config(config: &ModelConfig, limits: &ModelLimits) -> Result<(), ClusterError> {
    let invalid =
        |name: &'static str, reason: String| ClusterError::InvalidParameter { name, reason };
    config.validate().map_err(|e| invalid(e.field, e.reason))?;
    for (field, v) in [("dim", Some(config.dim)), ("target_dim", config.target_dim)] {
        if let Some(v) = v.filter(|v| *v > limits.max_dim) {
            return Err(invalid(
                field,
                format!("must be at most {} (max_dim), got {v}", limits.max_dim),
            ));
        }
    }
    if config.components > limits.max_components {
        return Err(invalid(
            "components",
            format!(
                "must be at most {} (max_components), got {}",
                limits.max_components, config.components
            ),
        ));
    }
    if config.half_life.is_some() {
        return Err(invalid(
            "half_life",
            "forgetting is not available in cluster mode: a row's weight depends on \
             the order of batches across all partitions, which no partition sees; \
             create the model without half_life"
                .into(),
        ));
    }
    if config.standardize {
        return Err(invalid(
            "standardize",
            "standardized (correlation) models are not available in cluster mode yet: \
             the cluster's trainer fits the covariance; create the model without \
             standardize"
                .into(),
        ));
    }
    Ok(())
}

/// The catalog as this node sees it.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    limits: ModelLimits,
    models: RwLock<HashMap<String, Arc<ModelRecord>>>,
    /// Bumped on every change, so the supervisor can wait for one.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Catalog {
    /// An empty catalog whose creations and imports are held to `limits`; call
    /// [`Catalog::load`] then [`Catalog::watch`].
    pub fn new(conn: Connection, limits: ModelLimits) -> Self {
        Self {
            conn,
            limits,
            models: RwLock::new(HashMap::new()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The model's record as this node last saw it.
    pub fn get(&self, name: &str) -> Option<Arc<ModelRecord>> {
        self.read().get(name).cloned()
    }

    /// Every model, by name.
    pub fn all(&self) -> Vec<Arc<ModelRecord>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<ModelRecord>>> {
        self.models
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, name: &str, record: Option<ModelRecord>) {
        {
            let mut m = self
                .models
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match record {
                // A late watch event must not resurrect an older generation.
                Some(r) => {
                    let newer = m.get(name).is_none_or(|old| old.generation <= r.generation);
                    if newer {
                        m.insert(name.to_owned(), Arc::new(r));
                    }
                }
                None => {
                    m.remove(name);
                }
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// The model's record read from the bucket's leader (not the local copy).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`].
    pub async fn fresh(&self, name: &str) -> Result<Option<(ModelRecord, u64)>, ClusterError> {
        let Some(v) = leader_get(&self.conn.models, name).await? else {
            return Ok(None);
        };
        let r: ModelRecord = serde_json::from_slice(&v.value)
            .map_err(|e| ClusterError::unavailable(format!("model record {name}: {e}")))?;
        Ok(Some((r, v.revision)))
    }

    /// The model's record: the local copy, or else the leader's (a model created a
    /// moment ago on another node).
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`] or [`ClusterError::Unavailable`].
    pub async fn require(&self, name: &str) -> Result<Arc<ModelRecord>, ClusterError> {
        if let Some(r) = self.get(name) {
            return Ok(r);
        }
        match self.fresh(name).await? {
            Some((r, _)) => {
                self.apply(name, Some(r.clone()));
                Ok(Arc::new(r))
            }
            None => Err(ClusterError::ModelNotFound(name.to_owned())),
        }
    }

    /// A generation number never handed out before (a compare-and-set counter).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`].
    pub async fn next_generation(&self) -> Result<u64, ClusterError> {
        for _ in 0..100 {
            let cur = leader_get(&self.conn.models, GENERATION_KEY).await?;
            let (next, expected) = match &cur {
                Some(v) => {
                    let n: u64 = std::str::from_utf8(&v.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| {
                            ClusterError::Setup("generation counter is corrupt".into())
                        })?;
                    (n + 1, Some(v.revision))
                }
                None => (1, None),
            };
            let value = Bytes::from(next.to_string());
            if let Cas::Written(_) =
                cas_put(&self.conn.models, GENERATION_KEY, value, expected).await?
            {
                return Ok(next);
            }
        }
        Err(ClusterError::unavailable("generation counter contended"))
    }

    /// Checks the server's limits on the number of models and their accumulator
    /// state against this node's copy of the catalog (`replacing`: the name of a model
    /// that goes away, so it does not count).
    fn check_room(
        &self,
        config: &ModelConfig,
        replacing: Option<&str>,
    ) -> Result<(), ClusterError> {
        let l = &self.limits;
        let (mut count, mut used) = (0usize, 0u64);
        for r in self.read().values() {
            if Some(r.config.name.as_str()) != replacing {
                count += 1;
                used = used.saturating_add(r.config.state_bytes());
            }
        }
        if count >= l.max_models {
            return Err(ClusterError::TooManyModels(format!(
                "the limit (max_models) is {}",
                l.max_models
            )));
        }
        let want = config.state_bytes();
        if used.saturating_add(want) > l.max_state_bytes {
            return Err(ClusterError::TooManyModels(format!(
                "this model needs {want} bytes of accumulator state ({} partitions and a \
                 merge buffer of 8·{}² bytes each), {used} of the budget (max_state_bytes) \
                 of {} are in use",
                config.partitions,
                config.row_width(),
                l.max_state_bytes
            )));
        }
        Ok(())
    }

    /// Writes a new generation's record for `config` by compare-and-set against
    /// `expected` (the current record's revision, `None`: absent). `prepare` makes the
    /// generation's stream (and, for imports, its first checkpoints) before the record
    /// becomes visible, so no node ever sees a model without them; `discard` removes
    /// them again when the compare-and-set loses.
    async fn install<P, PF, D, DF>(
        &self,
        config: &ModelConfig,
        base_sequence: u64,
        expected: Option<u64>,
        prepare: P,
        discard: D,
    ) -> Result<Option<ModelRecord>, ClusterError>
    where
        P: FnOnce(ModelRecord) -> PF,
        PF: std::future::Future<Output = Result<(), ClusterError>>,
        D: FnOnce(ModelRecord) -> DF,
        DF: std::future::Future<Output = ()>,
    {
        let generation = self.next_generation().await?;
        let record = ModelRecord {
            config: config.clone(),
            generation,
            base_sequence,
            created_ms: now_ms(),
        };
        prepare(record.clone()).await?;
        let value = Bytes::from(
            serde_json::to_vec(&record).map_err(|e| ClusterError::Setup(e.to_string()))?,
        );
        let name = config.name.as_str();
        match cas_put(&self.conn.models, name, value, expected).await? {
            Cas::Written(_) => {
                self.apply(name, Some(record.clone()));
                Ok(Some(record))
            }
            Cas::Conflict => {
                discard(record).await;
                Ok(None)
            }
        }
    }

    /// Creates the model if absent (see [`Catalog::install`] for `prepare` and
    /// `discard`). Returns the record and whether it was created (false: an identical
    /// model existed).
    ///
    /// # Errors
    /// [`ClusterError::ModelExists`] for another configuration under that name;
    /// [`ClusterError::InvalidParameter`]; [`ClusterError::TooManyModels`];
    /// [`ClusterError::Unavailable`].
    pub async fn create<P, PF, D, DF>(
        &self,
        config: ModelConfig,
        prepare: P,
        discard: D,
    ) -> Result<(ModelRecord, bool), ClusterError>
    where
        P: FnOnce(ModelRecord) -> PF,
        PF: std::future::Future<Output = Result<(), ClusterError>>,
        D: FnOnce(ModelRecord) -> DF,
        DF: std::future::Future<Output = ()>,
    {
        check_config(&config, &self.limits)?;
        let name = config.name.as_str();
        if let Some((existing, _)) = self.fresh(name).await? {
            return same_or_conflict(existing, &config);
        }
        self.check_room(&config, None)?;
        if let Some(record) = self.install(&config, 0, None, prepare, discard).await? {
            return Ok((record, true));
        }
        match self.fresh(name).await? {
            Some((existing, _)) => same_or_conflict(existing, &config),
            None => Err(ClusterError::unavailable(
                "model created and deleted meanwhile",
            )),
        }
    }

    /// Installs `config` as a new generation of the model, replacing the current one
    /// atomically (one compare-and-set of the catalog entry) if there is one. Returns
    /// the new record and the replaced one (for clean-up).
    ///
    /// # Errors
    /// [`ClusterError::InvalidParameter`]; [`ClusterError::TooManyModels`];
    /// [`ClusterError::Unavailable`] when another node changed the name meanwhile.
    pub async fn replace<P, PF, D, DF>(
        &self,
        config: ModelConfig,
        base_sequence: u64,
        prepare: P,
        discard: D,
    ) -> Result<(ModelRecord, Option<ModelRecord>), ClusterError>
    where
        P: FnOnce(ModelRecord) -> PF,
        PF: std::future::Future<Output = Result<(), ClusterError>>,
        D: FnOnce(ModelRecord) -> DF,
        DF: std::future::Future<Output = ()>,
    {
        check_config(&config, &self.limits)?;
        let name = config.name.as_str();
        let current = self.fresh(name).await?;
        self.check_room(&config, Some(name))?;
        let expected = current.as_ref().map(|(_, rev)| *rev);
        match self
            .install(&config, base_sequence, expected, prepare, discard)
            .await?
        {
            Some(record) => Ok((record, current.map(|(r, _)| r))),
            None => Err(ClusterError::unavailable(format!(
                "model `{name}` was changed on another node meanwhile"
            ))),
        }
    }

    /// Deletes the model's record (compare-and-set against the revision read from the
    /// leader) and returns it, for clean-up.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`] or [`ClusterError::Unavailable`].
    pub async fn delete(&self, name: &str) -> Result<ModelRecord, ClusterError> {
        for _ in 0..10 {
            let Some((record, rev)) = self.fresh(name).await? else {
                return Err(ClusterError::ModelNotFound(name.to_owned()));
            };
            match self
                .conn
                .models
                .delete_expect_revision(name, Some(rev))
                .await
            {
                Ok(()) => {
                    self.apply(name, None);
                    return Ok(record);
                }
                Err(e) => {
                    tracing::debug!(model = name, error = %e, "catalog delete raced; retrying")
                }
            }
        }
        Err(ClusterError::unavailable("catalog delete contended"))
    }

    /// Loads every record (call once before serving).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`].
    pub async fn load(&self) -> Result<(), ClusterError> {
        let mut keys = self
            .conn
            .models
            .keys()
            .await
            .map_err(|e| ClusterError::unavailable(format!("listing models: {e}")))?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            match k {
                Ok(k) if k != GENERATION_KEY => names.push(k),
                Ok(_) => {}
                Err(e) => return Err(ClusterError::unavailable(format!("listing models: {e}"))),
            }
        }
        for name in names {
            if let Some((r, _)) = self.fresh(&name).await? {
                self.apply(&name, Some(r));
            }
        }
        Ok(())
    }

    /// Follows changes to the catalog until the task is dropped, re-subscribing after
    /// any error (a watch is a consumer on the bucket's stream, lost when its server
    /// restarts).
    pub async fn watch(self: Arc<Self>) {
        loop {
            match self.conn.models.watch_with_history(">").await {
                Ok(mut w) => {
                    while let Some(e) = w.next().await {
                        let Ok(e) = e else { break };
                        if e.key == GENERATION_KEY {
                            continue;
                        }
                        match e.operation {
                            Operation::Put => match serde_json::from_slice::<ModelRecord>(&e.value)
                            {
                                Ok(r) => self.apply(&e.key, Some(r)),
                                Err(err) => {
                                    tracing::warn!(key = %e.key, error = %err, "unreadable model record");
                                }
                            },
                            Operation::Delete | Operation::Purge => {
                                self.remove_if_older(&e.key, e.revision).await
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "catalog watch failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Catch up with anything missed while the watch was down.
            if let Err(e) = self.reconcile().await {
                tracing::debug!(error = %e, "catalog reconcile failed");
            }
        }
    }

    async fn remove_if_older(&self, name: &str, _revision: u64) {
        // A delete marker always refers to the newest record of the name at the time;
        // re-read from the leader in case the name was re-created since.
        match self.fresh(name).await {
            Ok(Some((r, _))) => self.apply(name, Some(r)),
            _ => self.apply(name, None),
        }
    }

    /// Re-reads every name this node knows plus every key in the bucket.
    async fn reconcile(&self) -> Result<(), ClusterError> {
        let known: Vec<String> = self.read().keys().cloned().collect();
        for name in known {
            if self.fresh(&name).await?.is_none() {
                self.apply(&name, None);
            }
        }
        self.load().await
    }
}

fn same_or_conflict(
    existing: ModelRecord,
    config: &ModelConfig,
) -> Result<(ModelRecord, bool), ClusterError> {
    if existing.config == *config {
        Ok((existing, false))
    } else {
        Err(ClusterError::ModelExists(config.name.to_string()))
    }
}
