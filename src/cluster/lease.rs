//! Leases in KV: who folds a partition, who trains a model. A lease is a KV key whose
//! value names its holder; the holder renews it by compare-and-set every TTL/3. Another
//! node takes it over once it has seen the same revision for a whole TTL on its own
//! monotonic clock (so no two clocks need agree), again by compare-and-set, so exactly
//! one taker wins. A lease is liveness only: two nodes may briefly both believe they
//! hold one (a paused holder), and correctness comes from the compare-and-set commits
//! of what they produce.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::catalog::now_ms;
use super::store::{cas_put, leader_get, Cas};

/// What a lease key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The holder's node id.
    pub node: String,
    /// When the holder acquired it, ms since the Unix epoch.
    pub since_ms: u64,
}

/// A held lease. Dropping it does not release it (see [`Lease::release`]); the key then
/// goes stale and another node takes over after the TTL.
#[derive(Debug)]
pub struct Lease {
    state: kv::Store,
    key: String,
    revision: u64,
    value: Bytes,
    held: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often a contender polls a lease it does not hold.
fn poll_interval(ttl: Duration) -> Duration {
    (ttl / 4).min(Duration::from_secs(1))
}

/// Waits until this node holds the lease `key`. `held` counts the leases this node
/// holds: a node holding many waits longer before taking a free one, which spreads
/// partitions over nodes.
pub async fn acquire(
    state: &kv::Store,
    key: &str,
    node: &str,
    ttl: Duration,
    held: &Arc<AtomicUsize>,
) -> Lease {
    let value = Bytes::from(
        serde_json::to_vec(&LeaseValue {
            node: node.to_owned(),
            since_ms: now_ms(),
        })
        .unwrap_or_default(),
    );
    let mut observed: Option<(u64, Instant)> = None;
    loop {
        let backoff = Duration::from_millis(150)
            * u32::try_from(held.load(Ordering::Relaxed))
                .unwrap_or(u32::MAX)
                .min(40);
        let attempt = match leader_get(state, key).await {
            Err(_) => None,
            Ok(None) => Some(None),
            Ok(Some(v)) => {
                let holder = serde_json::from_slice::<LeaseValue>(&v.value).ok();
                let mine = holder.as_ref().is_some_and(|h| h.node == node);
                let stale = match observed {
                    Some((rev, at)) if rev == v.revision => at.elapsed() >= ttl,
                    _ => {
                        observed = Some((v.revision, Instant::now()));
                        false
                    }
                };
                (mine || stale).then_some(Some(v.revision))
            }
        };
        if let Some(expected) = attempt {
            tokio::time::sleep(backoff).await;
            if let Ok(Cas::Written(revision)) = cas_put(state, key, value.clone(), expected).await {
                held.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key, node, revision, "lease acquired");
                return Lease {
                    state: state.clone(),
                    key: key.to_owned(),
                    revision,
                    value,
                    held: held.clone(),
                };
            }
        }
        tokio::time::sleep(poll_interval(ttl)).await;
    }
}

impl Lease {
    /// The lease's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Renews the lease every TTL/3 until it is lost: another node took it (a
    /// compare-and-set failed), or no renewal succeeded for a whole TTL (this node
    /// must assume another one has taken over). Returns then.
    pub async fn hold(&mut self, ttl: Duration) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(ttl / 3).await;
            match cas_put(
                &self.state,
                &self.key,
                self.value.clone(),
                Some(self.revision),
            )
            .await
            {
                Ok(Cas::Written(r)) => {
                    self.revision = r;
                    last_ok = Instant::now();
                }
                Ok(Cas::Conflict) => {
                    tracing::info!(key = %self.key, "lease taken over by another node");
                    return;
                }
                Err(e) => {
                    if last_ok.elapsed() >= ttl {
                        tracing::warn!(key = %self.key, error = %e, "lease not renewed for a whole TTL; giving it up");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up at once (clean shutdown), so another node need not wait for
    /// the TTL.
    pub async fn release(self) {
        if let Err(e) = self
            .state
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            tracing::debug!(key = %self.key, error = %e, "lease release failed");
        }
    }
}
