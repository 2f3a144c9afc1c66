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

use crate::persistence::ModelConfig;

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
    /// Partitions K.
    pub partitions: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Refuses what cluster mode cannot do exactly: forgetting. A row's weight under
/// forgetting is γ^(rows in later batches over all partitions), and no partition sees
/// the others' batches as it folds.
///
/// # Errors
/// [`ClusterError::InvalidParameter`] naming the field.
pub fn check_config(config: &ModelConfig) -> Result<(), ClusterError> {
    config
        .validate()
        .map_err(|e| ClusterError::InvalidParameter {
            name: "config",
            reason: e.to_string(),
        })?;
    if config.half_life.is_some() {
        return Err(ClusterError::InvalidParameter {
            name: "half_life",
            reason: "forgetting is not available in cluster mode: a row's weight depends on \
                     the order of batches across all partitions, which no partition sees; \
                     create the model without half_life"
                .into(),
        });
    }
    Ok(())
}

/// The catalog as this node sees it.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    models: RwLock<HashMap<String, Arc<ModelRecord>>>,
    /// Bumped on every change, so the supervisor can wait for one.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Catalog {
    /// An empty catalog; call [`Catalog::load`] then [`Catalog::watch`].
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
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

    /// Creates the model if absent. `prepare` makes the model's stream for the new
    /// generation before the record becomes visible (so no node ever sees a model
    /// without its stream); `discard` removes it again when the name turned out to be
    /// taken. Returns the record and whether it was created (false: an identical model
    /// existed).
    ///
    /// # Errors
    /// [`ClusterError::ModelExists`] for another configuration under that name;
    /// [`ClusterError::InvalidParameter`]; [`ClusterError::Unavailable`].
    pub async fn create<P, PF, D, DF>(
        &self,
        config: ModelConfig,
        partitions: u32,
        prepare: P,
        discard: D,
    ) -> Result<(ModelRecord, bool), ClusterError>
    where
        P: FnOnce(u64) -> PF,
        PF: std::future::Future<Output = Result<(), ClusterError>>,
        D: FnOnce(u64) -> DF,
        DF: std::future::Future<Output = ()>,
    {
        check_config(&config)?;
        let name = config.name.clone();
        if let Some((existing, _)) = self.fresh(&name).await? {
            return same_or_conflict(existing, &config);
        }
        let generation = self.next_generation().await?;
        prepare(generation).await?;
        let record = ModelRecord {
            config: config.clone(),
            generation,
            partitions,
            created_ms: now_ms(),
        };
        let value = Bytes::from(
            serde_json::to_vec(&record).map_err(|e| ClusterError::Setup(e.to_string()))?,
        );
        match cas_put(&self.conn.models, &name, value, None).await? {
            Cas::Written(_) => {
                self.apply(&name, Some(record.clone()));
                Ok((record, true))
            }
            Cas::Conflict => {
                discard(generation).await;
                match self.fresh(&name).await? {
                    Some((existing, _)) => same_or_conflict(existing, &config),
                    None => Err(ClusterError::unavailable(
                        "model created and deleted meanwhile",
                    )),
                }
            }
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
        Err(ClusterError::ModelExists(config.name.clone()))
    }
}
