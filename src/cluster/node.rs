//! A cluster node: the async API the HTTP layer calls in cluster mode, and the
//! background tasks every node runs (catalog watch, state watch, and one contender per
//! partition fold and per model trainer, each of which works only while it holds the
//! matching lease).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::connection::State as ConnState;
use tokio::task::JoinHandle;

use crate::model::{ModelConfig, ModelName};
use crate::pca::{Batch, Components};

use super::catalog::{Catalog, ModelRecord};
use super::checkpoint::CheckpointPointer;
use super::connect::{connect, Connection};
use super::error::ClusterError;
use super::lease::LeaseValue;
use super::lifecycle;
use super::metrics::ClusterMetrics;
use super::publish::{self, PublishReceipt};
use super::roles;
use super::served;
use super::settings::ClusterSettings;
use super::transfer;
use super::view::ViewPointer;
use super::wire;

/// A model's published view as this node serves it.
#[derive(Debug, Clone)]
pub struct ServedView {
    /// The pointer (what was merged, counts).
    pub pointer: ViewPointer,
    /// The components, once enough samples arrived.
    pub components: Option<Arc<Components>>,
    pub(crate) revision: u64,
}

/// One partition's state, for status.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionStatus {
    /// k.
    pub partition: u32,
    /// The node holding its fold lease.
    pub owner: Option<String>,
    /// Its newest committed checkpoint.
    pub checkpoint: Option<CheckpointPointer>,
}

/// A model's status in cluster mode.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    /// Catalog record (configuration, generation, partitions).
    pub record: Arc<ModelRecord>,
    /// The newest view, if any was published.
    pub view: Option<Arc<ServedView>>,
    /// Per-partition owners and checkpoints.
    pub partitions: Vec<PartitionStatus>,
    /// The node holding the train lease.
    pub trainer: Option<String>,
}

/// What an acknowledged batch returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestReceipt {
    /// Rows in the batch.
    pub accepted: usize,
    /// The batch's model-wide sequence (`base_sequence` + its last message's stream
    /// sequence): strictly increasing over the model. `None` for a duplicate of a
    /// chunked batch, whose original sequence the server does not return.
    pub sequence: Option<u64>,
    /// Where it went and whether it was a duplicate.
    pub publish: PublishReceipt,
}

/// Readiness for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The NATS connection is up.
    pub connected: bool,
    /// The model bucket answers.
    pub catalog: bool,
}

impl Readiness {
    /// Both conditions hold.
    pub fn ready(&self) -> bool {
        self.connected && self.catalog
    }
}

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    pub(crate) settings: ClusterSettings,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) metrics: ClusterMetrics,
    pub(crate) views: RwLock<HashMap<(String, u64), Arc<ServedView>>>,
    pub(crate) checkpoints: RwLock<HashMap<(String, u64, u32), CheckpointPointer>>,
    pub(crate) leases: RwLock<HashMap<String, LeaseValue>>,
    pub(crate) held: Arc<AtomicUsize>,
    pub(crate) roles: Mutex<HashMap<(String, u64), roles::ModelRoles>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running cluster node. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node", &self.inner.settings.node_id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ClusterNode {
    /// Connects, loads the catalog and starts this node's background work.
    ///
    /// # Errors
    /// [`ClusterError::ServerTooOld`] or [`ClusterError::Setup`].
    pub async fn start(settings: ClusterSettings) -> Result<Self, ClusterError> {
        let conn = connect(&settings).await?;
        let catalog = Arc::new(Catalog::new(conn.clone(), settings.limits));
        catalog.load().await?;
        let inner = Arc::new(Inner {
            conn,
            settings,
            catalog: catalog.clone(),
            metrics: ClusterMetrics::new(),
            views: RwLock::new(HashMap::new()),
            checkpoints: RwLock::new(HashMap::new()),
            leases: RwLock::new(HashMap::new()),
            held: Arc::new(AtomicUsize::new(0)),
            roles: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = vec![tokio::spawn(catalog.watch())];
        tasks.push(tokio::spawn(served::watch_state(inner.clone())));
        if inner.settings.worker {
            tasks.push(tokio::spawn(roles::supervise(inner.clone())));
        }
        *lock(&inner.tasks) = tasks;
        Ok(Self { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.settings.node_id
    }

    /// The connection (server version, replicas, `max_payload`).
    pub fn connection(&self) -> &Connection {
        &self.inner.conn
    }

    /// This node's cluster metrics.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.inner.metrics
    }

    /// The settings this node started with.
    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    /// The largest batch (encoded bytes) one ingest can store: the atomic-batch limit
    /// of the server times its `max_payload`.
    pub fn max_batch_bytes(&self) -> usize {
        publish::max_batch_bytes(&self.inner.conn)
    }

    /// Creates a model (or returns the identical existing one: `false`).
    ///
    /// # Errors
    /// [`ClusterError::ModelExists`], [`ClusterError::InvalidParameter`] (including
    /// `half_life`, refused in cluster mode), [`ClusterError::Unavailable`].
    pub async fn create_model(
        &self,
        config: ModelConfig,
    ) -> Result<(ModelRecord, bool), ClusterError> {
        let inner = &self.inner;
        inner
            .catalog
            .create(
                config,
                |record| async move { lifecycle::create_stream(inner, &record).await },
                |record| async move { lifecycle::cleanup(inner, &record).await },
            )
            .await
    }

    /// Deletes a model: its record at once (every node stops serving it within a
    /// second), then its stream, pointers and objects.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`] or [`ClusterError::Unavailable`].
    pub async fn delete_model(&self, name: &str) -> Result<(), ClusterError> {
        let record = self.inner.catalog.delete(name).await?;
        roles::stop_model(&self.inner, name, record.generation).await;
        lifecycle::cleanup(&self.inner, &record).await;
        Ok(())
    }

    /// The catalog record of one model.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`].
    pub async fn record(&self, name: &str) -> Result<Arc<ModelRecord>, ClusterError> {
        self.inner.catalog.require(name).await
    }

    /// Every model this node knows, by name.
    pub fn models(&self) -> Vec<Arc<ModelRecord>> {
        self.inner.catalog.all()
    }

    /// Publishes a checked batch to the model's stream and returns once JetStream has
    /// stored it (on a quorum of the stream's replicas). `idempotency_key`: the client's
    /// `Idempotency-Key`; a retry with the same key within the dedup window is stored
    /// once.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`], [`ClusterError::DimensionMismatch`] for a batch
    /// checked against another shape, [`ClusterError::InvalidParameter`] for a bad key,
    /// [`ClusterError::TooLarge`], [`ClusterError::Unavailable`] (503 + `Retry-After`).
    pub async fn ingest(
        &self,
        name: &str,
        batch: &Batch,
        idempotency_key: Option<&str>,
    ) -> Result<IngestReceipt, ClusterError> {
        if let Some(k) = idempotency_key {
            publish::check_key(k)?;
        }
        let record = self.inner.catalog.require(name).await?;
        let c = &record.config;
        if batch.shape().dim != c.dim || batch.shape().target_dim != c.target_dim {
            return Err(ClusterError::DimensionMismatch(format!(
                "the batch has rows of {} (targets {:?}); model `{name}` expects {} (targets {:?})",
                batch.shape().dim,
                batch.shape().target_dim,
                c.dim,
                c.target_dim
            )));
        }
        let encoded = wire::encode(batch);
        let msg_id = publish::message_id(idempotency_key);
        let start = tokio::time::Instant::now();
        let s = &self.inner.settings;
        let receipt = match publish::publish(
            &self.inner.conn,
            &record,
            encoded,
            &msg_id,
            s.publish_retry,
            s.request_timeout,
            s.test_chunk_pause,
        )
        .await
        {
            Ok(r) => r,
            // A model deleted on another node a moment ago (its stream is gone): 404,
            // not 503.
            Err(e @ ClusterError::Unavailable { .. }) => {
                return match self.inner.catalog.fresh(name).await {
                    Ok(Some((r, _))) if r.generation == record.generation => Err(e),
                    Ok(_) => Err(ClusterError::ModelNotFound(name.to_owned())),
                    Err(_) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        self.inner
            .metrics
            .published(name, start.elapsed(), receipt.retries);
        Ok(IngestReceipt {
            accepted: batch.rows(),
            sequence: receipt.sequence.map(|q| record.base_sequence + q),
            publish: receipt,
        })
    }

    /// The model's newest view as this node serves it.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`].
    pub async fn view(&self, name: &str) -> Result<Option<Arc<ServedView>>, ClusterError> {
        let record = self.inner.catalog.require(name).await?;
        Ok(read(&self.inner.views)
            .get(&(name.to_owned(), record.generation))
            .cloned())
    }

    /// The fitted components every node serves for the model.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`], [`ClusterError::NotFitted`].
    pub async fn components(
        &self,
        name: &str,
    ) -> Result<(Arc<Components>, ViewPointer), ClusterError> {
        match self.view(name).await? {
            Some(v) => match &v.components {
                Some(c) => Ok((c.clone(), v.pointer.clone())),
                None => Err(ClusterError::NotFitted(name.to_owned())),
            },
            None => Err(ClusterError::NotFitted(name.to_owned())),
        }
    }

    /// Status: record, view, partition owners and checkpoints.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`].
    pub async fn status(&self, name: &str) -> Result<ModelStatus, ClusterError> {
        let record = self.inner.catalog.require(name).await?;
        let g = record.generation;
        let view = read(&self.inner.views).get(&(name.to_owned(), g)).cloned();
        let leases = read(&self.inner.leases);
        let ckpts = read(&self.inner.checkpoints);
        let partitions = (0..record.partitions())
            .map(|k| PartitionStatus {
                partition: k,
                owner: leases
                    .get(&super::names::fold_lease_key(name, g, k))
                    .map(|l| l.node.clone()),
                checkpoint: ckpts.get(&(name.to_owned(), g, k)).cloned(),
            })
            .collect();
        let trainer = leases
            .get(&super::names::train_lease_key(name, g))
            .map(|l| l.node.clone());
        drop((leases, ckpts));
        Ok(ModelStatus {
            record,
            view,
            partitions,
            trainer,
        })
    }

    /// The model's state as a snapshot (format v2, the same as embedded mode's
    /// export): each partition's newest committed checkpoint as that partition, and the
    /// published fit's warm start.
    ///
    /// # Errors
    /// [`ClusterError::ModelNotFound`], [`ClusterError::Unavailable`].
    pub async fn export(&self, name: &str) -> Result<Vec<u8>, ClusterError> {
        transfer::export(&self.inner, name).await
    }

    /// Imports a snapshot (format v1 or v2, any number of partitions) as the model
    /// `name`, replacing an existing model of that name atomically (one catalog
    /// compare-and-set to a new generation). Returns the new record and whether a
    /// model was replaced.
    ///
    /// # Errors
    /// [`ClusterError::InvalidSnapshot`], [`ClusterError::InvalidParameter`] (e.g.
    /// `half_life`), [`ClusterError::TooManyModels`], [`ClusterError::Unavailable`].
    pub async fn import(
        &self,
        name: &ModelName,
        bytes: Vec<u8>,
    ) -> Result<(ModelRecord, bool), ClusterError> {
        transfer::import(&self.inner, name, bytes).await
    }

    /// Whether the connection is up and the catalog bucket answers.
    pub async fn readiness(&self) -> Readiness {
        let connected = self.inner.conn.client.connection_state() == ConnState::Connected;
        let catalog = connected
            && tokio::time::timeout(Duration::from_secs(2), self.inner.conn.models.status())
                .await
                .is_ok_and(|r| r.is_ok());
        Readiness { connected, catalog }
    }

    /// Stops every background task, releasing held leases so other nodes take over at
    /// once.
    pub async fn shutdown(&self) {
        for h in lock(&self.inner.tasks).drain(..) {
            h.abort();
        }
        roles::stop_all(&self.inner).await;
        let _ = self.inner.conn.client.flush().await;
    }
}

pub(crate) fn roles_map(
    inner: &Inner,
) -> std::sync::MutexGuard<'_, HashMap<(String, u64), roles::ModelRoles>> {
    lock(&inner.roles)
}
