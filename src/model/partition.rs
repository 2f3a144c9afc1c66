//! A partition: one accumulator, its position in the model's stream, and the log behind
//! it, under one lock. And the pool that hands idle partitions to producers.
//!
//! A batch is never split: one producer takes a whole partition from the [`Pool`] (the
//! first one idle; it waits only when every partition is busy), appends the batch to
//! that partition's log and folds it under that partition's lock alone. So the log
//! appends and folds of different partitions run in parallel, on as many cores as there
//! are partitions and producers.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::pca::{Accumulator, AccumulatorParts, Batch, PcaError};
use crate::persistence::{PartitionLog, Position, Stamp, Ticket};

/// Largest work buffer a partition keeps between batches (16 MiB: n = 2048 at
/// b = 1023): fresh pages for every batch cost more than the copy itself, but one huge
/// batch must not pin its size.
const SCRATCH_KEEP_BYTES: usize = 16 << 20;

/// Locks a mutex, recovering the data if a holder panicked (the data under our locks is
/// only replaced by whole values, so it is never left half-written).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a partition holds under its lock.
#[derive(Debug)]
pub struct PartitionState {
    /// The partition's share of the model's moments, as of its row clock.
    pub acc: Accumulator,
    /// Where the partition stands in the model's stream.
    pub position: Position,
    /// Work buffer for the centred batch, reused across batches.
    scratch: Vec<f64>,
}

/// One partition of a model.
#[derive(Debug)]
pub struct Partition {
    state: Mutex<PartitionState>,
    log: Arc<dyn PartitionLog>,
}

/// A batch written to a partition's log and folded, not yet durable.
#[derive(Debug)]
pub struct Folded {
    /// The partition's weighted count after the batch.
    pub count: f64,
    /// Its row clock after the batch.
    pub clock: u64,
    /// To wait on for durability, outside the lock.
    pub ticket: Ticket,
}

impl Partition {
    /// A partition holding `acc` at `position`, writing through `log`.
    pub fn new(acc: Accumulator, position: Position, log: Arc<dyn PartitionLog>) -> Self {
        Self {
            state: Mutex::new(PartitionState {
                acc,
                position,
                scratch: Vec::new(),
            }),
            log,
        }
    }

    /// Takes the partition's lock.
    pub fn lock(&self) -> MutexGuard<'_, PartitionState> {
        lock(&self.state)
    }

    /// The partition's log.
    pub fn log(&self) -> &dyn PartitionLog {
        &*self.log
    }

    /// A copy of the accumulator's parts and the position, taken under the lock.
    pub fn parts(&self) -> (AccumulatorParts, Position) {
        let st = self.lock();
        (st.acc.to_parts(), st.position)
    }
}

impl PartitionState {
    /// The stamp the next batch of `rows` rows gets, given the model's next sequence
    /// and row clock.
    pub fn next_stamp(&self, sequence: u64, clock: u64) -> Stamp {
        Stamp {
            sequence,
            local: self.position.local + 1,
            clock,
        }
    }

    /// Folds a batch already written to the log under `stamp` and advances the
    /// position. The caller holds the partition's lock from the write through this.
    ///
    /// # Errors
    /// The accumulator's refusal, which a checked [`Batch`] on a validated state cannot
    /// cause (see [`Accumulator::fold`]); the position still advances, because the log
    /// holds the record and replay refuses it the same way.
    pub fn fold(&mut self, batch: &Batch, stamp: Stamp) -> Result<(), PcaError> {
        let st = &mut *self;
        let folded = st.acc.fold(batch, stamp.clock, &mut st.scratch);
        if st.scratch.capacity() * std::mem::size_of::<f64>() > SCRATCH_KEEP_BYTES {
            st.scratch = Vec::new();
        }
        st.position.sequence = stamp.sequence;
        st.position.local = stamp.local;
        if folded.is_ok() {
            st.position.batches += 1;
        }
        folded
    }
}

/// The idle partitions of a model, in the order they became idle. A producer takes the
/// one idle longest, uses it alone, and gives it back; it waits only when every
/// partition is taken. Taking the longest-idle one spreads even a single producer's
/// batches over every partition, so they all hold a share of the stream.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<VecDeque<usize>>,
    returned: Condvar,
}

/// A partition taken from the [`Pool`], given back on drop.
#[derive(Debug)]
pub struct Lease<'a> {
    pool: &'a Pool,
    index: usize,
}

impl Pool {
    /// A pool of partitions `0..k`, all idle.
    pub fn new(k: usize) -> Self {
        Self {
            idle: Mutex::new((0..k).collect()),
            returned: Condvar::new(),
        }
    }

    /// Takes an idle partition, waiting for one if all are in use.
    pub fn take(&self) -> Lease<'_> {
        let mut idle = lock(&self.idle);
        loop {
            if let Some(index) = idle.pop_front() {
                return Lease { pool: self, index };
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Lease<'_> {
    /// The partition's index.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        lock(&self.pool.idle).push_back(self.index);
        self.pool.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn no_partition_is_leased_twice_and_no_producer_waits_while_one_is_idle() {
        let pool = Pool::new(3);
        let busy: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let most = AtomicUsize::new(0);
        let in_use = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let lease = pool.take();
                        let k = lease.index();
                        assert_eq!(
                            busy[k].fetch_add(1, Ordering::SeqCst),
                            0,
                            "partition {k} leased twice"
                        );
                        let n = in_use.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        in_use.fetch_sub(1, Ordering::SeqCst);
                        busy[k].fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 3);
        // One producer alone goes round every partition without waiting.
        let order: Vec<usize> = (0..6).map(|_| pool.take().index()).collect();
        assert_eq!(order[..3], order[3..]);
        let mut first = order[..3].to_vec();
        first.sort_unstable();
        assert_eq!(first, [0, 1, 2]);
    }
}
