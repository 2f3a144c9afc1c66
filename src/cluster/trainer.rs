//! A model's trainer, run by whichever node holds the model's train lease: merges the
//! newest checkpoint of every partition in partition order (k = 0..K−1), fits the
//! ordered components warm-started from the previous fit, and publishes the result as
//! the model's view (object + KV pointer by compare-and-set). It also trims the stream
//! below what every partition's checkpoint covers.
//!
//! Why one trainer per model rather than a fit on every node: every node then serves
//! the very same components (bit for bit, not merely within the tolerance), the fit's
//! cost is paid once per change instead of once per node, and a node that only ingests
//! or answers queries never loads the n×n accumulators.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::pca::{Accumulator, Components, PcaError, Trainer};

use super::catalog::{now_ms, ModelRecord};
use super::checkpoint::{self, CheckpointPointer};
use super::connect::Connection;
use super::error::ClusterError;
use super::metrics::ClusterMetrics;
use super::names::{checkpoint_filter, parse_state_key, random_id, view_key, view_object};
use super::store::{cas_put, delete_object, get_object, leader_get, put_object, Cas};
use super::view::{self, ViewPointer};

/// How often the stream is trimmed at most.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Refits of an unconverged fit while nothing new arrives.
const MAX_REFITS: usize = 20;

/// What a trainer needs.
#[derive(Debug, Clone)]
pub struct TrainCtx {
    /// The connection.
    pub conn: Connection,
    /// The model.
    pub record: Arc<ModelRecord>,
    /// This node.
    pub node: String,
    /// Metrics.
    pub metrics: ClusterMetrics,
}

/// The merged accumulator of the given checkpoints, in partition order.
///
/// # Errors
/// A merge that would overflow, or shapes that disagree.
pub fn merge_in_order(
    record: &ModelRecord,
    parts: &[&Accumulator],
) -> Result<Accumulator, ClusterError> {
    let mut merged = checkpoint::empty(record)?;
    for a in parts {
        merged
            .merge(a)
            .map_err(|e| ClusterError::unavailable(format!("merging partitions: {e}")))?;
    }
    Ok(merged)
}

/// The trainer's checked parameters for a model.
///
/// # Errors
/// [`ClusterError::InvalidParameter`] for a configuration out of range.
pub fn fit_params(record: &ModelRecord) -> Result<crate::pca::ValidParams, ClusterError> {
    record
        .config
        .validate()
        .map_err(|e| ClusterError::InvalidParameter {
            name: e.field,
            reason: e.reason,
        })
}

/// Runs the trainer until another node publishes a view (returns then).
///
/// # Errors
/// [`ClusterError::Unavailable`] worth a restart after a pause.
pub async fn run(ctx: &TrainCtx) -> Result<(), ClusterError> {
    let rec = &ctx.record;
    let name = rec.config.name.as_str();
    let k_count = rec.config.partitions;
    let vkey = view_key(name, rec.generation);
    let params = fit_params(rec)?;
    let (mut trainer, mut view_rev, mut published) =
        match leader_get(&ctx.conn.state, &vkey).await? {
            Some(v) => {
                let p: ViewPointer = serde_json::from_slice(&v.value)
                    .map_err(|e| ClusterError::unavailable(format!("view pointer: {e}")))?;
                let bytes = get_object(&ctx.conn.blobs, &p.object, Duration::from_secs(5)).await?;
                let state = view::decode(&bytes).map(|(_, t)| t).unwrap_or_default();
                (
                    Trainer::with_state(params.clone(), state),
                    Some(v.revision),
                    Some(p),
                )
            }
            None => (Trainer::new(params.clone()), None, None),
        };
    let mut objects: VecDeque<String> = published.iter().map(|p| p.object.clone()).collect();
    let mut pointers: Vec<Option<CheckpointPointer>> = vec![None; k_count];
    let mut cache: Vec<Option<(String, Arc<Accumulator>)>> = vec![None; k_count];
    let mut refits = 0usize;
    let mut last_poll = Instant::now() - Duration::from_secs(60);
    let mut last_trim = Instant::now();
    let mut trimmed = 0u64;
    let mut watch = None;
    loop {
        // Follow the pointers: a KV watch, plus a read from the leader every 2 s in case
        // the watch was lost with its server.
        if watch.is_none() {
            watch = ctx
                .conn
                .state
                .watch(checkpoint_filter(name, rec.generation))
                .await
                .ok();
        }
        if last_poll.elapsed() >= Duration::from_secs(2) {
            last_poll = Instant::now();
            for (k, slot) in pointers.iter_mut().enumerate() {
                if let Ok(Some((p, _))) = checkpoint::read_pointer(&ctx.conn, rec, k as u32).await {
                    if slot
                        .as_ref()
                        .is_none_or(|old| p.written_ms >= old.written_ms)
                    {
                        *slot = Some(p);
                    }
                }
            }
        }
        let converged_or_fresh = published.as_ref().is_none_or(|p| p.converged || !p.fitted);
        let wait = if refits < MAX_REFITS && !converged_or_fresh {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        if let Some(w) = watch.as_mut() {
            let first = tokio::time::timeout(wait, w.next()).await;
            let mut entries = Vec::new();
            let mut lost = false;
            match first {
                Ok(Some(Ok(e))) => entries.push(e),
                Ok(_) => lost = true,
                Err(_) => {}
            }
            // Coalesce whatever else is already there.
            while let Ok(Some(Ok(e))) =
                tokio::time::timeout(Duration::from_millis(20), w.next()).await
            {
                entries.push(e);
            }
            if lost {
                watch = None;
            }
            for e in entries {
                let Some(("ckpt", _, _, Some(k))) = parse_state_key(&e.key) else {
                    continue;
                };
                let Ok(k) = k.parse::<usize>() else { continue };
                if let (Some(slot), Ok(p)) = (
                    pointers.get_mut(k),
                    serde_json::from_slice::<CheckpointPointer>(&e.value),
                ) {
                    *slot = Some(p);
                }
            }
        } else {
            tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
        }
        let seqs: Vec<u64> = pointers
            .iter()
            .map(|p| p.as_ref().map_or(0, |p| p.seq))
            .collect();
        let changed = published.as_ref().is_none_or(|p| p.seqs != seqs);
        let refit = !changed
            && published.as_ref().is_some_and(|p| p.fitted && !p.converged)
            && refits < MAX_REFITS;
        if changed || refit {
            refits = if changed { 0 } else { refits + 1 };
            // Load what changed, then merge in partition order.
            for k in 0..k_count {
                let want = pointers[k].as_ref().and_then(|p| p.object.clone());
                let have = cache[k].as_ref().map(|(o, _)| o.clone());
                if want != have {
                    cache[k] = match (&want, &pointers[k]) {
                        (Some(o), Some(p)) => Some((
                            o.clone(),
                            Arc::new(checkpoint::load(&ctx.conn, rec, p).await?),
                        )),
                        _ => None,
                    };
                }
            }
            let parts: Vec<Arc<Accumulator>> =
                cache.iter().flatten().map(|(_, a)| a.clone()).collect();
            let record = rec.clone();
            let start = Instant::now();
            let (t, fit) = tokio::task::spawn_blocking(move || {
                let refs: Vec<&Accumulator> = parts.iter().map(|a| a.as_ref()).collect();
                let fit = fit_merged(&record, &refs, &mut trainer);
                (trainer, fit)
            })
            .await
            .map_err(|e| ClusterError::unavailable(format!("fit task: {e}")))?;
            trainer = t;
            let (samples, components) = fit?;
            ctx.metrics.fitted(name, start.elapsed());
            let sum =
                |f: fn(&CheckpointPointer) -> u64| pointers.iter().flatten().map(f).sum::<u64>();
            let object = view_object(name, rec.generation, &random_id()[..16]);
            put_object(
                &ctx.conn.blobs,
                &object,
                &view::encode(components.as_ref(), trainer.state()),
            )
            .await?;
            let pointer = ViewPointer {
                seqs,
                samples,
                batches: sum(|p| p.batches),
                rows: sum(|p| p.rows),
                rejected: sum(|p| p.rejected),
                object: object.clone(),
                fitted: components.is_some(),
                converged: components.as_ref().is_some_and(|c| c.converged),
                node: ctx.node.clone(),
                written_ms: now_ms(),
            };
            let value = Bytes::from(
                serde_json::to_vec(&pointer).map_err(|e| ClusterError::Setup(e.to_string()))?,
            );
            match cas_put(&ctx.conn.state, &vkey, value, view_rev).await? {
                Cas::Written(r) => {
                    view_rev = Some(r);
                    published = Some(pointer);
                    objects.push_back(object);
                    while objects.len() > 2 {
                        if let Some(old) = objects.pop_front() {
                            delete_object(&ctx.conn.blobs, &old).await;
                        }
                    }
                }
                Cas::Conflict => {
                    delete_object(&ctx.conn.blobs, &object).await;
                    return Ok(());
                }
            }
        }
        if last_trim.elapsed() >= TRIM_EVERY && pointers.iter().all(Option::is_some) {
            last_trim = Instant::now();
            let w = pointers
                .iter()
                .flatten()
                .map(|p| p.covered)
                .min()
                .unwrap_or(0);
            if w > trimmed {
                trim(ctx, w).await;
                trimmed = w;
            }
        }
    }
}

/// Merges and fits; returns the merged sample count and the components (`None` before
/// enough samples).
fn fit_merged(
    record: &ModelRecord,
    parts: &[&Accumulator],
    trainer: &mut Trainer,
) -> Result<(f64, Option<Components>), ClusterError> {
    let merged = merge_in_order(record, parts)?;
    let samples = merged.count();
    if samples < trainer.params().min_samples() as f64 {
        return Ok((samples, None));
    }
    let target = merged
        .into_target()
        .map_err(|e| ClusterError::unavailable(format!("fit target: {e}")))?;
    match trainer.fit(&target, None) {
        Ok(c) => Ok((samples, Some(c))),
        Err(PcaError::NotEnoughSamples { .. }) => Ok((samples, None)),
        Err(e) => Err(ClusterError::unavailable(format!("fit: {e}"))),
    }
}

/// Purges the stream below `covered + 1`: every partition has folded and committed
/// everything up to `covered`.
async fn trim(ctx: &TrainCtx, covered: u64) {
    let rec = &ctx.record;
    let stream = ctx
        .conn
        .names
        .stream(rec.config.name.as_str(), rec.generation);
    let result = async {
        let s = ctx
            .conn
            .js
            .get_stream(&stream)
            .await
            .map_err(|e| e.to_string())?;
        s.purge()
            .sequence(covered + 1)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(r) => tracing::debug!(
            stream,
            below = covered + 1,
            purged = r.purged,
            "stream trimmed"
        ),
        Err(e) => tracing::warn!(stream, error = %e, "trimming failed"),
    }
}
