//! The fold worker of one partition, run by whichever node holds the partition's lease.
//!
//! It resumes from the newest committed checkpoint, reads the partition's subject from
//! the stream in order with an ephemeral pull consumer, folds every batch into the
//! accumulator exactly once, and commits checkpoints by compare-and-set.
//!
//! - Idempotent by stream sequence: a message at or below the last folded sequence
//!   (a redelivery after a consumer restart or an ownership change) is skipped.
//! - Ordered: every delivery's consumer sequence must follow the previous one; any jump
//!   re-creates the consumer from the last folded position (never skips ahead).
//! - Gaps: if the stream no longer holds messages the partition has not covered (its
//!   first sequence is past `covered + 1`: limits or a purge removed them), the worker
//!   reports the gap and stops; it never folds past it. A message that does not decode
//!   (damage, another format) is reported the same way.
//! - Chunked batches (atomic batches of several messages) are reassembled and folded
//!   whole; a checkpoint never lands inside one.
//! - The row clock ([`Accumulator::fold`]) of a partition counts the partition's own
//!   rows: a batch of b rows folds at `clock + b`. Any increasing clock gives the exact
//!   moments without forgetting, which is why cluster mode refuses `half_life`
//!   ([`super::catalog::check_config`]): forgetting would need every partition's rows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::pca::{Accumulator, Shape};
use crate::persistence::Position;

use super::catalog::ModelRecord;
use super::checkpoint::{self, CheckpointPointer};
use super::connect::Connection;
use super::error::ClusterError;
use super::metrics::ClusterMetrics;
use super::store::{delete_object, Cas};
use super::wire::{self, Assembler, Frame};

/// Messages per pull request.
const PULL_BATCH: usize = 256;
/// How long a pull waits for messages before it returns empty.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How often an idle partition checks how far the stream moved on without it.
const COVERED_CHECK: Duration = Duration::from_secs(3);
/// Shortest interval between pointer writes that only advance `covered`.
const COVERED_WRITE: Duration = Duration::from_secs(5);

/// What a fold worker needs.
#[derive(Debug, Clone)]
pub struct FoldCtx {
    /// The connection.
    pub conn: Connection,
    /// The model.
    pub record: Arc<ModelRecord>,
    /// The partition.
    pub k: u32,
    /// This node.
    pub node: String,
    /// Shortest interval between checkpoints under load.
    pub checkpoint_interval: Duration,
    /// Metrics.
    pub metrics: ClusterMetrics,
}

/// Why a fold worker stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum FoldEnd {
    /// Another node committed a checkpoint: it owns the partition now.
    Lost,
    /// The stream lacks messages the partition has not folded, or holds one that does
    /// not decode. Reported, never folded past.
    Gap(String),
}

struct State {
    acc: Accumulator,
    /// Last folded stream sequence.
    seq: u64,
    /// Every partition message ≤ covered is folded.
    covered: u64,
    /// Model-wide sequence of the last folded batch.
    sequence: u64,
    /// Batches taken, folded or refused.
    local: u64,
    batches: u64,
    rows: u64,
    rejected: u64,
    pointer: Option<CheckpointPointer>,
    revision: Option<u64>,
    dirty: bool,
    last_write: Instant,
    objects: VecDeque<String>,
}

enum Outcome {
    Folded(usize),
    Rejected(String),
    Corrupt(String),
}

/// Runs the fold until the partition is lost or a gap is found.
///
/// # Errors
/// [`ClusterError::Unavailable`] when NATS fails in a way worth retrying from the last
/// checkpoint (the caller restarts the worker after a pause).
pub async fn run(ctx: &FoldCtx) -> Result<FoldEnd, ClusterError> {
    let rec = &ctx.record;
    let name = rec.config.name.as_str();
    let pk = ctx.k.to_string();
    let shape = Shape {
        dim: rec.config.dim,
        target_dim: rec.config.target_dim,
    };
    let mut st = resume(ctx).await?;
    let stream = ctx
        .conn
        .js
        .get_stream(ctx.conn.names.stream(name, rec.generation))
        .await
        .map_err(|e| ClusterError::unavailable(format!("opening the stream of {name}: {e}")))?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| ClusterError::unavailable(format!("stream info: {e}")))?;
    if info.state.messages > 0 && info.state.first_sequence > st.covered + 1 {
        let msg = format!(
            "model {name} partition {}: the stream starts at sequence {} but only {} is folded; \
             messages {}..{} are gone (stream limits or a purge)",
            ctx.k,
            info.state.first_sequence,
            st.covered,
            st.covered + 1,
            info.state.first_sequence - 1
        );
        ctx.metrics.gap(name, &pk);
        tracing::error!("{msg}");
        return Ok(FoldEnd::Gap(msg));
    }
    let subject = ctx
        .conn
        .names
        .partition_subject(name, rec.generation, ctx.k);
    let mut handle: Option<Consumer<pull::Config>> = None;
    let mut expected_cseq = 1u64;
    let mut asm = Assembler::default();
    let mut last_covered_check = Instant::now();
    let mut scratch = Vec::new();
    loop {
        if handle.is_none() {
            asm.reset();
            expected_cseq = 1;
            let c = stream
                .create_consumer(pull::Config {
                    filter_subject: subject.clone(),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: st.covered + 1,
                    },
                    ack_policy: AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    memory_storage: true,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    ClusterError::unavailable(format!("creating the fold consumer: {e}"))
                })?;
            handle = Some(c);
        }
        let Some(c) = handle.as_ref() else { continue };
        let mut msgs = match c
            .batch()
            .max_messages(PULL_BATCH)
            .max_bytes(64 << 20)
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(model = name, partition = ctx.k, error = %e, "pull failed; re-creating the consumer");
                handle = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut got = 0usize;
        let mut broken = false;
        let mut lag = 0u64;
        let mut floor = st.covered;
        let mut folds: Vec<(u64, Bytes)> = Vec::new();
        let mut corrupt: Option<String> = None;
        while let Some(m) = msgs.next().await {
            let Ok(m) = m else {
                broken = true;
                break;
            };
            let Ok(info) = m.info() else {
                broken = true;
                break;
            };
            let (seq, cseq, pending) = (info.stream_sequence, info.consumer_sequence, info.pending);
            if cseq != expected_cseq {
                broken = true;
                break;
            }
            expected_cseq += 1;
            got += 1;
            lag = pending;
            if seq <= floor {
                continue;
            }
            match wire::frame(&m.payload) {
                Ok(Frame::Whole(_)) => {
                    if asm.in_progress() {
                        corrupt = Some(format!(
                            "sequence {seq}: a whole batch inside a chunked one"
                        ));
                        break;
                    }
                    folds.push((seq, m.payload.clone()));
                    floor = seq;
                }
                Ok(Frame::Chunk {
                    id,
                    index,
                    count,
                    total,
                    body,
                }) => match asm.push(id, index, count, total, body) {
                    Ok(Some(whole)) => {
                        folds.push((seq, Bytes::from(whole)));
                        floor = seq;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        corrupt = Some(format!("sequence {seq}: {e}"));
                        break;
                    }
                },
                Err(e) => {
                    corrupt = Some(format!("sequence {seq}: {e}"));
                    break;
                }
            }
        }
        drop(msgs);
        if !folds.is_empty() {
            let acc = std::mem::replace(&mut st.acc, checkpoint::empty(rec)?);
            let mut sc = std::mem::take(&mut scratch);
            let (acc, sc, outcomes) = tokio::task::spawn_blocking(move || {
                let (acc, outcomes) = fold_all(acc, folds, shape, &mut sc);
                (acc, sc, outcomes)
            })
            .await
            .map_err(|e| ClusterError::unavailable(format!("fold task: {e}")))?;
            st.acc = acc;
            scratch = sc;
            for (seq, outcome) in outcomes {
                match outcome {
                    Outcome::Folded(rows) => {
                        st.batches += 1;
                        st.local += 1;
                        st.rows += rows as u64;
                        ctx.metrics.folded(name, &pk, rows);
                    }
                    Outcome::Rejected(why) => {
                        st.rejected += 1;
                        st.local += 1;
                        tracing::warn!(model = name, partition = ctx.k, seq, error = %why, "batch refused by the accumulator at fold time");
                    }
                    Outcome::Corrupt(why) => {
                        corrupt = Some(format!("sequence {seq}: {why}"));
                        break;
                    }
                }
                st.seq = seq;
                st.covered = seq;
                st.sequence = rec.base_sequence + seq;
                st.dirty = true;
            }
        }
        if let Some(why) = corrupt {
            ctx.metrics.gap(name, &pk);
            let msg = format!(
                "model {name} partition {}: undecodable message at {why}",
                ctx.k
            );
            tracing::error!("{msg}");
            // Keep what was folded before it.
            let _ = checkpoint_now(ctx, &mut st).await?;
            return Ok(FoldEnd::Gap(msg));
        }
        ctx.metrics.set_lag(name, &pk, lag);
        if broken {
            handle = None;
            continue;
        }
        let idle = got == 0;
        if idle && !asm.in_progress() && last_covered_check.elapsed() >= COVERED_CHECK {
            last_covered_check = Instant::now();
            if let Some(c) = covered_by_stream(&stream, &subject, st.covered).await {
                st.covered = st.covered.max(c);
            }
        }
        let since = st.last_write.elapsed();
        let due = (st.dirty
            && (since >= ctx.checkpoint_interval
                || (idle && since >= ctx.checkpoint_interval / 4)))
            || (st.pointer.as_ref().is_none_or(|p| st.covered > p.covered)
                && since >= COVERED_WRITE
                && st.covered > 0);
        if due && checkpoint_now(ctx, &mut st).await? == Cas::Conflict {
            return Ok(FoldEnd::Lost);
        }
    }
}

/// Loads the newest checkpoint (or starts empty).
async fn resume(ctx: &FoldCtx) -> Result<State, ClusterError> {
    let pointer = checkpoint::read_pointer(&ctx.conn, &ctx.record, ctx.k).await?;
    let (acc, p, rev) = match pointer {
        Some((p, rev)) => (
            checkpoint::load(&ctx.conn, &ctx.record, &p).await?,
            Some(p),
            Some(rev),
        ),
        None => (checkpoint::empty(&ctx.record)?, None, None),
    };
    let mut objects = VecDeque::new();
    if let Some(o) = p.as_ref().and_then(|p| p.object.clone()) {
        objects.push_back(o);
    }
    Ok(State {
        acc,
        seq: p.as_ref().map_or(0, |p| p.seq),
        covered: p.as_ref().map_or(0, |p| p.covered),
        sequence: p.as_ref().map_or(0, |p| p.sequence),
        local: p.as_ref().map_or(0, |p| p.local),
        batches: p.as_ref().map_or(0, |p| p.batches),
        rows: p.as_ref().map_or(0, |p| p.rows),
        rejected: p.as_ref().map_or(0, |p| p.rejected),
        pointer: p,
        revision: rev,
        dirty: false,
        last_write: Instant::now(),
        objects,
    })
}

/// Folds decoded batches in order; stops at the first that does not decode.
fn fold_all(
    mut acc: Accumulator,
    folds: Vec<(u64, Bytes)>,
    shape: Shape,
    scratch: &mut Vec<f64>,
) -> (Accumulator, Vec<(u64, Outcome)>) {
    let mut out = Vec::with_capacity(folds.len());
    for (seq, bytes) in folds {
        let batch = match wire::decode(&bytes, shape) {
            Ok(b) => b,
            Err(e) => {
                out.push((seq, Outcome::Corrupt(e.0)));
                break;
            }
        };
        let rows = batch.rows();
        // The partition's own row clock (see the module documentation).
        let r = acc.fold(&batch, acc.clock() + rows as u64, scratch);
        out.push((
            seq,
            match r {
                Ok(()) => Outcome::Folded(rows),
                Err(e) => Outcome::Rejected(e.to_string()),
            },
        ));
    }
    if scratch.capacity() > 2 << 20 {
        *scratch = Vec::new();
    }
    (acc, out)
}

/// How far the stream has moved on with no message of this partition: reads the
/// stream's last sequence from its leader, then the partition's next message above
/// `covered`. Both come from the leader, so nothing acknowledged is overlooked.
async fn covered_by_stream(stream: &Stream, subject: &str, covered: u64) -> Option<u64> {
    let last = stream.get_info().await.ok()?.state.last_sequence;
    match stream
        .raw_message_builder()
        .sequence(covered + 1)
        .next_by_subject(subject.to_owned())
        .send()
        .await
    {
        Ok(m) => Some(m.sequence.saturating_sub(1)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Some(last),
        Err(_) => None,
    }
}

/// Writes a checkpoint of the current state (a pointer-only update when nothing new
/// was folded) and commits it.
async fn checkpoint_now(ctx: &FoldCtx, st: &mut State) -> Result<Cas, ClusterError> {
    let start = Instant::now();
    let encoded = if st.dirty
        || st
            .pointer
            .as_ref()
            .is_none_or(|p| p.object.is_none() && st.batches + st.rejected > 0)
    {
        let acc = st.acc.clone();
        let rec = ctx.record.clone();
        let position = Position {
            sequence: st.sequence,
            local: st.local,
            batches: st.batches,
        };
        Some(
            tokio::task::spawn_blocking(move || checkpoint::encode(&rec, &acc, position))
                .await
                .map_err(|e| ClusterError::unavailable(e.to_string()))??,
        )
    } else {
        None
    };
    let pointer = CheckpointPointer {
        seq: st.seq,
        covered: st.covered,
        batches: st.batches,
        rows: st.rows,
        rejected: st.rejected,
        sequence: st.sequence,
        local: st.local,
        object: st.pointer.as_ref().and_then(|p| p.object.clone()),
        node: ctx.node.clone(),
        written_ms: 0,
    };
    let wrote_object = encoded.is_some();
    let (cas, pointer) =
        checkpoint::commit(&ctx.conn, &ctx.record, ctx.k, encoded, pointer, st.revision).await?;
    match cas {
        Cas::Written(rev) => {
            if wrote_object {
                if let Some(o) = &pointer.object {
                    st.objects.push_back(o.clone());
                }
                // Keep the previous checkpoint: a trainer may be reading it right now.
                while st.objects.len() > 2 {
                    if let Some(old) = st.objects.pop_front() {
                        delete_object(&ctx.conn.blobs, &old).await;
                    }
                }
            }
            let name = ctx.record.config.name.as_str();
            ctx.metrics.checkpoint_written(name, start.elapsed());
            ctx.metrics.set_checkpoint_time(
                name,
                &ctx.k.to_string(),
                pointer.written_ms as f64 / 1000.0,
            );
            st.revision = Some(rev);
            st.pointer = Some(pointer);
            st.dirty = false;
            st.last_write = Instant::now();
        }
        Cas::Conflict => {
            if let Some(o) = pointer.object.filter(|_| wrote_object) {
                delete_object(&ctx.conn.blobs, &o).await;
            }
        }
    }
    Ok(cas)
}
