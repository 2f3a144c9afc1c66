//! [`PartitionLog`]: what a partition needs from the log behind it, whatever holds the
//! bytes. The embedded implementation is the local write-ahead log ([`super::Wal`]); a
//! replicated log (a NATS JetStream stream) fits the same shape: write a stamped record
//! in the partition's order, learn when it is durable, and drop what a snapshot covers.

use std::fmt::Debug;

use super::error::Result;
use super::record::{EncodedRecord, Stamp};

/// Proof that a record was written; pass it to [`PartitionLog::wait`] to wait until it
/// is durable. Opaque to callers (for the local log: a logical byte offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a written record is not durable until `PartitionLog::wait` returns"]
pub struct Ticket(pub(crate) u64);

/// The log behind one partition of a model.
pub trait PartitionLog: Send + Sync + Debug {
    /// Stamps `record` and writes it (not yet durable). Called under the partition's
    /// lock, so records reach the log in the partition's order.
    ///
    /// # Errors
    /// [`super::Error::OutOfOrder`] when `stamp.local` is not the next local index or
    /// the sequence does not increase; [`super::Error::Io`] when the write fails (then
    /// nothing of the record remains in the log); [`super::Error::WalPoisoned`] after
    /// an earlier unrecoverable failure.
    fn write(&self, record: &mut EncodedRecord, stamp: Stamp) -> Result<Ticket>;

    /// Returns once the ticket's record is durable. Called outside the partition's
    /// lock, so concurrent producers share one flush (group commit).
    ///
    /// # Errors
    /// [`super::Error::Io`] when the flush fails (the log is then poisoned);
    /// [`super::Error::WalPoisoned`] after an earlier failure.
    fn wait(&self, ticket: Ticket) -> Result<()>;

    /// Drops every record with local index ≤ `local`, once a snapshot covering them is
    /// durable; returns how many were dropped.
    ///
    /// # Errors
    /// [`super::Error::Io`]; a failure after which the log's state on disk is unknown
    /// poisons it.
    fn truncate_through(&self, local: u64) -> Result<usize>;

    /// Where the log lives, for messages.
    fn describe(&self) -> String;
}
