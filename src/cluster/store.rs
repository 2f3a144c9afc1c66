//! Reads and writes on the shared buckets with the semantics the cluster needs: KV reads
//! from the stream leader (a KV `get` is a direct get that a lagging replica may
//! answer), compare-and-set writes, and whole-object puts and gets with retries for an
//! object another node just wrote.

use std::time::Duration;

use async_nats::jetstream::{kv, object_store::ObjectStore, stream::LastRawMessageErrorKind};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::error::ClusterError;

/// A KV value and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// Its revision (the bucket stream's sequence; never reused).
    pub revision: u64,
}

/// Result of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Written at this revision.
    Written(u64),
    /// The key changed since the expected revision (or exists, for a create).
    Conflict,
}

/// Reads `key` from the bucket's stream leader. `None` when absent or deleted.
///
/// # Errors
/// [`ClusterError::Unavailable`] when the leader cannot answer.
pub async fn leader_get(store: &kv::Store, key: &str) -> Result<Option<Versioned>, ClusterError> {
    let subject = format!("{}{key}", store.prefix);
    match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => {
            let op = m.headers.get("KV-Operation").map(|v| v.as_str().to_owned());
            if matches!(op.as_deref(), Some("DEL" | "PURGE")) {
                Ok(None)
            } else {
                Ok(Some(Versioned {
                    value: m.payload,
                    revision: m.sequence,
                }))
            }
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(ClusterError::unavailable(format!("reading {key}: {e}"))),
    }
}

/// Writes `value` if the key is still at `expected` (`None`: absent or deleted).
///
/// # Errors
/// [`ClusterError::Unavailable`] when NATS cannot take the write.
pub async fn cas_put(
    store: &kv::Store,
    key: &str,
    value: Bytes,
    expected: Option<u64>,
) -> Result<Cas, ClusterError> {
    match expected {
        None => match store.create(key, value).await {
            Ok(r) => Ok(Cas::Written(r)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Cas::Conflict),
            Err(e) => Err(ClusterError::unavailable(format!("creating {key}: {e}"))),
        },
        Some(rev) => match store.update(key, value, rev).await {
            Ok(r) => Ok(Cas::Written(r)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Cas::Conflict),
            Err(e) => Err(ClusterError::unavailable(format!("updating {key}: {e}"))),
        },
    }
}

/// Stores `bytes` as object `name` (replacing any object of that name).
///
/// # Errors
/// [`ClusterError::Unavailable`].
pub async fn put_object(blobs: &ObjectStore, name: &str, bytes: &[u8]) -> Result<(), ClusterError> {
    let mut reader = bytes;
    blobs
        .put(name, &mut reader)
        .await
        .map(|_| ())
        .map_err(|e| ClusterError::unavailable(format!("writing object {name}: {e}")))
}

/// Reads object `name` whole, retrying for up to `patience` while it is not yet
/// visible (object metadata is read with a direct get, which a replica may answer
/// before it has the newest write).
///
/// # Errors
/// [`ClusterError::Unavailable`] when it cannot be read in time.
pub async fn get_object(
    blobs: &ObjectStore,
    name: &str,
    patience: Duration,
) -> Result<Vec<u8>, ClusterError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let attempt = async {
            let mut obj = blobs.get(name).await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            obj.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(out)
        }
        .await;
        match attempt {
            Ok(b) => return Ok(b),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ClusterError::unavailable(format!(
                    "reading object {name}: {e}"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Deletes object `name`, ignoring failures (garbage is harmless: every name is
/// unique, and pointers decide what is live).
pub async fn delete_object(blobs: &ObjectStore, name: &str) {
    if let Err(e) = blobs.delete(name).await {
        tracing::debug!(object = name, error = %e, "deleting an old object failed");
    }
}
