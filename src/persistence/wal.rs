//! The per-model write-ahead log: every accepted batch, exactly as received, in sequence
//! order, durable before the producer hears "accepted".
//!
//! Owns the log file (`wal.log`), its record format, recovery after a crash, group
//! commit and the rewrite that drops records a snapshot already covers. It knows nothing
//! of snapshots or HTTP; it only reads the accumulator type to offer
//! [`WalRecord::apply_to`].
//!
//! # File format (version 1)
//!
//! ```text
//! header  : "SPCAWAL\0" (8 bytes) · version u32 LE (= 1)
//! record* : len u32 LE · crc u32 LE · payload (len bytes)
//! payload : kind u8 (= 1, batch) · value width u8 (4 = f32, 8 = f64) ·
//!           sequence u64 · rows u32 · dim u32 · target_dim u32 (0 = none) ·
//!           x (rows·dim values) · y (rows·target_dim values), values little-endian
//! ```
//!
//! The CRC-32 (IEEE, `crc32fast`) covers the four length bytes *and* the payload, so a
//! flipped bit in the length is caught even when the wrong length happens to land inside
//! the file. Values are stored in the width they arrived in, so replay feeds the
//! accumulator the very same numbers and reproduces its state bit for bit.
//!
//! # Ordering
//!
//! Log order is sequence order, enforced: [`Wal::write`] rejects a sequence that does not
//! exceed the last one ([`Error::OutOfOrder`]). The caller assigns sequences and calls
//! [`Wal::write`] under its model lock, applies the batch, releases the lock, and only
//! then waits for durability with [`Wal::wait`]. The wait is outside the lock so that
//! concurrent producers of one model share one fsync (group commit); holding the lock
//! across [`Wal::append`] is correct too, but serialises fsyncs. Sequences should be
//! consecutive (the first batch of a model is 1): recovery reports a gap as lost records.
//!
//! Measured (test `concurrent_appends_from_eight_threads_all_land_once_and_share_fsyncs`,
//! ext4 on a virtio disk, 2 cores): 8 threads × 40 appends took 78–80 fsyncs for 320
//! appends, about 4 appends per fsync; one thread appending alone takes one fsync each.
//! [`Wal::fsync_count`] exposes the count for tests and metrics.
//!
//! Between `write` and `wait` a batch is visible in memory but not yet durable. If the
//! fsync fails the handle is poisoned ([`Error::WalPoisoned`]): after a failed fsync the
//! kernel may have dropped the dirty pages, so retrying cannot tell what is on disk
//! (PostgreSQL's "fsyncgate"). The service should stop accepting writes for that model
//! and restart, which recovers exactly what reached the disk.
//!
//! # Recovery
//!
//! [`Wal::open`] reads records until the first torn (short) or corrupt one, truncates the
//! file to the end of the last whole record so new appends are not hidden behind the
//! garbage, and reports the problem ([`TailProblem`]). A torn tail is the normal result
//! of a crash during an append that was never acknowledged. Any other problem (bad
//! checksum, impossible length, undecodable payload) may be real damage. Either way the
//! discarded bytes are first copied aside (fsynced): `wal.log.torn-<offset>` for a
//! short record, `wal.log.corrupt-<offset>` otherwise. Recovery never drops bytes
//! without a copy, because a flipped length in the *middle* of the log looks exactly
//! like a torn tail and would otherwise take every later record with it unseen.
//!
//! One process owns a log at a time; nothing here locks the file against a second one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::pca::{Accumulator, PcaError};

use super::error::{Error, IoContext, Result};
use super::fsutil;

/// First bytes of every log file.
const MAGIC: &[u8; 8] = b"SPCAWAL\0";
/// The log format this build reads and writes.
pub const WAL_VERSION: u32 = 1;
/// Magic plus version.
const HEADER_LEN: u64 = 12;
/// Length plus checksum in front of every payload.
const RECORD_HEADER_LEN: u64 = 8;
/// Fixed part of a payload: kind, width, sequence, rows, dim, target_dim.
const PAYLOAD_FIXED: usize = 1 + 1 + 8 + 4 + 4 + 4;
/// Largest payload accepted (1 GiB). A length above it is corruption, not a batch.
pub const MAX_PAYLOAD: u32 = 1 << 30;
/// Payload kind of a batch record (the only kind so far).
const KIND_BATCH: u8 = 1;

/// When [`Wal::wait`] forces records to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` before acknowledging; concurrent appends share one (the default).
    #[default]
    Always,
    /// Never fsync; the OS writes back when it likes. A crash (of the machine, not the
    /// process) can lose acknowledged batches. For benchmarks and throwaway data.
    Never,
}

/// The values of one batch, in the width they arrived in.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchData {
    /// Single-precision input (e.g. a raw little-endian f32 body).
    F32 {
        /// Row-major inputs, rows×dim.
        x: Vec<f32>,
        /// Row-major targets, rows×target_dim, for regression models.
        y: Option<Vec<f32>>,
    },
    /// Double-precision input (e.g. parsed JSON numbers).
    F64 {
        /// Row-major inputs, rows×dim.
        x: Vec<f64>,
        /// Row-major targets, rows×target_dim, for regression models.
        y: Option<Vec<f64>>,
    },
}

impl BatchData {
    /// Number of values in `x` and, if present, in `y`.
    pub fn lens(&self) -> (usize, Option<usize>) {
        match self {
            Self::F32 { x, y } => (x.len(), y.as_ref().map(Vec::len)),
            Self::F64 { x, y } => (x.len(), y.as_ref().map(Vec::len)),
        }
    }

    fn width(&self) -> u8 {
        match self {
            Self::F32 { .. } => 4,
            Self::F64 { .. } => 8,
        }
    }

    /// Feeds the values to an accumulator in the width they arrived in.
    ///
    /// # Errors
    /// Whatever [`Accumulator::update`] returns; the accumulator is then unchanged.
    pub fn apply_to(&self, acc: &mut Accumulator) -> Result<(), PcaError> {
        self.apply_with_scratch(acc, &mut Vec::new())
    }

    /// [`BatchData::apply_to`] reusing a work buffer
    /// ([`Accumulator::update_with_scratch`]).
    ///
    /// # Errors
    /// As [`BatchData::apply_to`].
    pub fn apply_with_scratch(
        &self,
        acc: &mut Accumulator,
        scratch: &mut Vec<f64>,
    ) -> Result<(), PcaError> {
        match self {
            Self::F32 { x, y } => acc.update_with_scratch(x, y.as_deref(), scratch),
            Self::F64 { x, y } => acc.update_with_scratch(x, y.as_deref(), scratch),
        }
    }
}

/// A record encoded for the log, before its sequence number is known: encoding (the
/// O(rows·n) part) can then happen outside the caller's lock, and
/// [`Wal::write_encoded`] only stamps the sequence and checksum (a CRC pass) under it.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    bytes: Vec<u8>,
}

/// Byte offset of the sequence number in an encoded record: length (4), checksum (4),
/// kind (1), width (1).
const SEQUENCE_OFFSET: usize = 10;

impl EncodedRecord {
    fn stamp(&mut self, sequence: u64) {
        self.bytes[SEQUENCE_OFFSET..SEQUENCE_OFFSET + 8].copy_from_slice(&sequence.to_le_bytes());
        let crc = record_crc(&self.bytes[0..4], &self.bytes[8..]);
        self.bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// One logged batch.
#[derive(Debug, Clone, PartialEq)]
pub struct WalRecord {
    /// The batch's sequence number, assigned by the caller; strictly increasing in the log.
    pub sequence: u64,
    /// Input dimension n (row length of `x`).
    pub dim: usize,
    /// Target dimension n_y for regression models (row length of `y`).
    pub target_dim: Option<usize>,
    /// The values.
    pub data: BatchData,
}

impl WalRecord {
    /// Number of rows: `x.len() / dim`.
    pub fn rows(&self) -> usize {
        self.data.lens().0.checked_div(self.dim).unwrap_or(0)
    }

    /// Feeds the batch to an accumulator, exactly as the live path did.
    ///
    /// # Errors
    /// Whatever [`Accumulator::update`] returns; the accumulator is then unchanged. The
    /// update is deterministic, so a record the live path rejected is rejected again on
    /// replay and should be skipped the same way.
    pub fn apply_to(&self, acc: &mut Accumulator) -> Result<(), PcaError> {
        self.data.apply_to(acc)
    }

    /// Checks the shapes and encodes the record for [`Wal::write_encoded`], which sets
    /// the sequence number and the checksum (`self.sequence` is ignored; the checksum
    /// bytes are left zero here, so the CRC pass runs once, after the stamp).
    ///
    /// # Errors
    /// [`Error::InvalidRecord`] for a malformed record.
    pub fn encode_unsequenced(&self) -> Result<EncodedRecord> {
        let invalid = |reason: String| Error::InvalidRecord { reason };
        let (nx, ny) = self.data.lens();
        if self.dim == 0 || nx == 0 || nx % self.dim != 0 {
            return Err(invalid(format!(
                "x has {nx} values, not a positive whole number of rows of dim {}",
                self.dim
            )));
        }
        let rows = nx / self.dim;
        match (self.target_dim, ny) {
            (None, None) => {}
            (Some(m), Some(ny)) if m > 0 && ny == rows * m => {}
            (t, ny) => {
                return Err(invalid(format!(
                    "y has {ny:?} values for {rows} rows of target_dim {t:?}"
                )))
            }
        }
        let u32_of = |v: usize, what: &str| {
            u32::try_from(v).map_err(|_| invalid(format!("{what} {v} exceeds u32")))
        };
        let (rows32, dim32) = (u32_of(rows, "rows")?, u32_of(self.dim, "dim")?);
        let target32 = u32_of(self.target_dim.unwrap_or(0), "target_dim")?;
        let width = self.data.width();
        let payload_len = PAYLOAD_FIXED + (nx + ny.unwrap_or(0)) * usize::from(width);
        let len = u32::try_from(payload_len)
            .ok()
            .filter(|l| *l <= MAX_PAYLOAD)
            .ok_or_else(|| {
                invalid(format!(
                    "payload of {payload_len} bytes exceeds {MAX_PAYLOAD}"
                ))
            })?;

        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN as usize + payload_len);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&[0; 4]); // checksum, filled by `EncodedRecord::stamp`
        buf.push(KIND_BATCH);
        buf.push(width);
        buf.extend_from_slice(&self.sequence.to_le_bytes());
        buf.extend_from_slice(&rows32.to_le_bytes());
        buf.extend_from_slice(&dim32.to_le_bytes());
        buf.extend_from_slice(&target32.to_le_bytes());
        let head = buf.len();
        buf.resize(RECORD_HEADER_LEN as usize + payload_len, 0);
        let values = &mut buf[head..];
        match &self.data {
            BatchData::F32 { x, y } => {
                for (b, v) in values
                    .chunks_exact_mut(4)
                    .zip(x.iter().chain(y.iter().flatten()))
                {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            }
            BatchData::F64 { x, y } => {
                for (b, v) in values
                    .chunks_exact_mut(8)
                    .zip(x.iter().chain(y.iter().flatten()))
                {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        Ok(EncodedRecord { bytes: buf })
    }

    /// Decodes a payload whose checksum already matched.
    fn decode(payload: &[u8]) -> Result<Self, String> {
        let mut r = super::codec::Reader::new(payload);
        let kind = r.u8("record kind")?;
        if kind != KIND_BATCH {
            return Err(format!("unknown record kind {kind}"));
        }
        let width = r.u8("value width")?;
        let sequence = r.u64("sequence")?;
        let rows = r.u32("rows")? as usize;
        let dim = r.u32("dim")? as usize;
        let target_dim = match r.u32("target_dim")? {
            0 => None,
            m => Some(m as usize),
        };
        if rows == 0 || dim == 0 {
            return Err(format!("empty batch: {rows} rows of dim {dim}"));
        }
        let nx = rows.checked_mul(dim).ok_or("rows×dim overflows")?;
        let ny = target_dim
            .map(|m| rows.checked_mul(m).ok_or("rows×target_dim overflows"))
            .transpose()?;
        let data = match width {
            4 => BatchData::F32 {
                x: r.f32s(nx, "x values")?,
                y: ny.map(|n| r.f32s(n, "y values")).transpose()?,
            },
            8 => BatchData::F64 {
                x: r.f64s(nx, "x values")?,
                y: ny.map(|n| r.f64s(n, "y values")).transpose()?,
            },
            w => return Err(format!("unknown value width {w}")),
        };
        if r.remaining() != 0 {
            return Err(format!(
                "{} unexpected bytes after the values",
                r.remaining()
            ));
        }
        Ok(Self {
            sequence,
            dim,
            target_dim,
            data,
        })
    }
}

fn record_crc(len_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(payload);
    h.finalize()
}

/// Why recovery stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailReason {
    /// The file ends inside a record: a crash during an unacknowledged append.
    Short {
        /// Bytes the record needs from its start.
        needed: u64,
        /// Bytes left in the file from its start.
        available: u64,
    },
    /// The length field is zero or above [`MAX_PAYLOAD`].
    BadLength {
        /// The length read.
        len: u32,
    },
    /// The checksum does not match the bytes.
    BadChecksum {
        /// Checksum stored in the record.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// The checksum matches but the payload does not decode.
    Undecodable {
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for TailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short { needed, available } => {
                write!(f, "torn record: needs {needed} bytes, {available} present")
            }
            Self::BadLength { len } => write!(f, "impossible record length {len}"),
            Self::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            Self::Undecodable { reason } => write!(f, "undecodable record: {reason}"),
        }
    }
}

/// A torn or corrupt tail found (and cut off) by [`Wal::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailProblem {
    /// Byte offset of the first bad record; the file now ends here.
    pub offset: u64,
    /// Bytes cut off.
    pub discarded: u64,
    /// What was wrong.
    pub reason: TailReason,
    /// Where the discarded bytes were copied before truncation.
    pub saved_to: PathBuf,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// Every whole record, in log (= sequence) order.
    pub records: Vec<WalRecord>,
    /// The torn or corrupt tail that was cut off, if any.
    pub torn_tail: Option<TailProblem>,
}

/// Proof that a record was written; pass it to [`Wal::wait`] to wait until it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a written record is not durable until `Wal::wait` returns"]
pub struct Ticket {
    /// Logical end of the record: bytes appended through this handle so far.
    end: u64,
}

/// State changed only by writers, under [`Wal::writer`].
#[derive(Debug)]
struct Writer {
    /// The current log file. An `Arc` so a group-commit leader can fsync it without
    /// holding the writer lock (appends continue meanwhile); `truncate_through` swaps it.
    file: Arc<File>,
    /// Length of the current file = the offset of the next record.
    file_len: u64,
    /// Bytes appended through this handle since open, across file swaps. Durability is
    /// tracked in this unit because file offsets restart when the log is rewritten.
    logical_end: u64,
    /// Sequence of the last record in the log.
    last_sequence: Option<u64>,
    /// `(sequence, offset)` of every record in the current file, for `truncate_through`.
    index: Vec<(u64, u64)>,
}

/// Group-commit state, under [`Wal::durability`].
#[derive(Debug, Default)]
struct Durability {
    /// Every record ending at or before this logical offset is on disk.
    durable: u64,
    /// Whether some thread is running an fsync now (the leader).
    syncing: bool,
}

/// An open write-ahead log. `Sync`: share it by reference or `Arc` between threads.
#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    sync: SyncMode,
    /// Serialises writes so records never interleave and log order is sequence order.
    writer: Mutex<Writer>,
    /// Group commit: who is syncing and how far the disk is known to be. Lock order:
    /// `writer` before `durability`, never the reverse.
    durability: Mutex<Durability>,
    /// Signalled when a leader's fsync finishes (or the log is rewritten).
    synced: Condvar,
    /// Set once, on the first write or fsync failure; every later call fails with it.
    poisoned: OnceLock<String>,
    /// fsyncs of the log file performed by appends (for tests and metrics).
    fsyncs: AtomicU64,
}

impl Wal {
    /// Opens (creating if absent) the log at `path`, recovers its records, and cuts off a
    /// torn or corrupt tail (see the module docs).
    ///
    /// # Errors
    /// [`Error::Io`] on any file-system failure; [`Error::Corrupt`] when the header is
    /// not a WAL header or the sequences are not increasing (the file is left as it is:
    /// that is not a crash artefact); [`Error::UnsupportedVersion`] for a newer format.
    pub fn open(path: impl Into<PathBuf>, sync: SyncMode) -> Result<(Self, Recovery)> {
        let path = path.into();
        if !path.exists() {
            create_empty(&path)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .at("open", &path)?;
        let mut len = file.metadata().at("stat", &path)?.len();
        if len == 0 {
            // Only a file created by someone else can be empty (we create by rename);
            // a log with no header has no records either, so give it one.
            (&file).write_all(&header()).at("write header", &path)?;
            file.sync_all().at("fsync", &path)?;
            len = HEADER_LEN;
        } else {
            check_header(&file, &path, len)?;
        }
        let scan = scan(&file, &path, len)?;
        let mut torn_tail = None;
        if let Some((offset, reason)) = scan.problem {
            let kind = match reason {
                TailReason::Short { .. } => "torn",
                _ => "corrupt",
            };
            let saved_to = save_tail(&file, &path, offset, len, kind)?;
            file.set_len(offset).at("truncate torn tail", &path)?;
            file.sync_all().at("fsync", &path)?;
            torn_tail = Some(TailProblem {
                offset,
                discarded: len - offset,
                reason,
                saved_to,
            });
        }
        let file_len = torn_tail.as_ref().map_or(len, |t| t.offset);
        (&file).seek(SeekFrom::Start(file_len)).at("seek", &path)?;
        let (records, index): (Vec<_>, Vec<_>) = scan.records.into_iter().unzip();
        let writer = Writer {
            file: Arc::new(file),
            file_len,
            logical_end: 0,
            last_sequence: records.last().map(|r: &WalRecord| r.sequence),
            index,
        };
        let wal = Self {
            path,
            sync,
            writer: Mutex::new(writer),
            durability: Mutex::new(Durability::default()),
            synced: Condvar::new(),
            poisoned: OnceLock::new(),
            fsyncs: AtomicU64::new(0),
        };
        Ok((wal, Recovery { records, torn_tail }))
    }

    /// Writes a record (not yet durable) and returns the [`Ticket`] to [`Wal::wait`] on.
    /// The record is encoded before the writer lock is taken; under it there is one
    /// `write` system call.
    ///
    /// # Errors
    /// [`Error::InvalidRecord`] for a malformed record; [`Error::OutOfOrder`] when the
    /// sequence does not exceed the last logged one; [`Error::Io`] when the write fails
    /// (the partial record is cut off again, so the log stays readable);
    /// [`Error::WalPoisoned`] after an earlier unrecoverable failure.
    pub fn write(&self, record: &WalRecord) -> Result<Ticket> {
        let mut encoded = record.encode_unsequenced()?;
        self.write_encoded(&mut encoded, record.sequence)
    }

    /// [`Wal::write`] for a record encoded beforehand ([`WalRecord::encode_unsequenced`]):
    /// stamps `sequence` and the checksum into it, then appends it.
    ///
    /// # Errors
    /// As [`Wal::write`].
    pub fn write_encoded(&self, encoded: &mut EncodedRecord, sequence: u64) -> Result<Ticket> {
        encoded.stamp(sequence);
        let bytes = &encoded.bytes;
        let mut w = self.lock_writer()?;
        self.check_poison()?;
        if let Some(last) = w.last_sequence {
            if sequence <= last {
                return Err(Error::OutOfOrder {
                    path: self.path.clone(),
                    last,
                    got: sequence,
                });
            }
        }
        let start = w.file_len;
        if let Err(source) = (&*w.file).write_all(bytes) {
            // Cut the partial record off so later appends are not hidden behind it.
            let undo = w
                .file
                .set_len(start)
                .and_then(|()| (&*w.file).seek(SeekFrom::Start(start)));
            if let Err(e) = undo {
                self.poison(format!(
                    "append failed ({source}) and could not be undone ({e})"
                ));
            }
            return Err(Error::Io {
                op: "append",
                path: self.path.clone(),
                source,
            });
        }
        let len = bytes.len() as u64;
        w.file_len += len;
        w.logical_end += len;
        w.index.push((sequence, start));
        w.last_sequence = Some(sequence);
        Ok(Ticket { end: w.logical_end })
    }

    /// Returns once the ticket's record is durable (at once under [`SyncMode::Never`]).
    ///
    /// Group commit: the first waiter to find no fsync running becomes the leader and
    /// fsyncs everything written so far; waiters arriving meanwhile sleep until a
    /// finished fsync covers them, so one fsync serves every record written before it
    /// started.
    ///
    /// # Errors
    /// [`Error::Io`] when the fsync fails (the log is then poisoned);
    /// [`Error::WalPoisoned`] after an earlier failure.
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        if self.sync == SyncMode::Never {
            return self.check_poison();
        }
        let mut d = self.lock_durability()?;
        loop {
            self.check_poison()?;
            if d.durable >= ticket.end {
                return Ok(());
            }
            if d.syncing {
                d = self.synced.wait(d).map_err(|_| self.lock_error())?;
                continue;
            }
            d.syncing = true;
            drop(d);
            // Become the leader. Everything written before this point is covered.
            let (file, target) = {
                let w = self.lock_writer();
                match w {
                    Ok(w) => (Arc::clone(&w.file), w.logical_end),
                    Err(e) => {
                        self.finish_sync(None);
                        return Err(e);
                    }
                }
            };
            let result = file.sync_data();
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(()) => self.finish_sync(Some(target)),
                Err(source) => {
                    self.poison(format!("fsync failed: {source}"));
                    self.finish_sync(None);
                    return Err(Error::Io {
                        op: "fsync",
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            d = self.lock_durability()?;
        }
    }

    /// [`Wal::write`] then [`Wal::wait`]: returns once the record is durable.
    ///
    /// # Errors
    /// As [`Wal::write`] and [`Wal::wait`].
    pub fn append(&self, record: &WalRecord) -> Result<()> {
        let ticket = self.write(record)?;
        self.wait(ticket)
    }

    /// Drops every record with sequence ≤ `sequence`, once a snapshot covering them is
    /// durable. Appends wait meanwhile.
    ///
    /// Crash-safe by rewrite: the records to keep are copied to a temporary sibling
    /// (`.wal.log.….tmp`), which is fsynced and renamed over `wal.log`, then the
    /// directory is fsynced. A crash leaves either the old log (replay skips records the
    /// snapshot covers) or the new one, plus perhaps a stray temporary file that the
    /// store removes at open. Appends wait while the kept records are copied. Returns the number of records
    /// dropped. Every record written so far is durable when this returns.
    ///
    /// # Errors
    /// [`Error::Io`]; a failure after the rename poisons the handle.
    pub fn truncate_through(&self, sequence: u64) -> Result<usize> {
        let mut w = self.lock_writer()?;
        self.check_poison()?;
        let drop_count = w.index.iter().take_while(|(s, _)| *s <= sequence).count();
        if drop_count == 0 {
            return Ok(0);
        }
        let keep_from = w.index.get(drop_count).map_or(w.file_len, |(_, off)| *off);
        let tmp = fsutil::temp_sibling(&self.path);
        let new_file = self.write_rewrite(&tmp, &w.file, keep_from, w.file_len)?;
        if let Err(e) = fs::rename(&tmp, &self.path).at("rename into place", &self.path) {
            let _ = fs::remove_file(&tmp); // best effort; the store removes strays at open
            return Err(e);
        }
        if let Err(e) = fsutil::sync_parent(&self.path) {
            // Which log survives a crash is unknown; the in-memory state can no longer
            // promise anything about the disk.
            self.poison(format!("directory fsync after rewrite failed: {e}"));
            return Err(e);
        }
        let shift = keep_from - HEADER_LEN;
        w.index.drain(..drop_count);
        for (_, off) in &mut w.index {
            *off -= shift;
        }
        w.file_len -= shift;
        w.file = Arc::new(new_file);
        // The new file was fsynced whole: every record written so far is durable.
        let end = w.logical_end;
        if let Ok(mut d) = self.durability.lock() {
            d.durable = d.durable.max(end);
        }
        self.synced.notify_all();
        Ok(drop_count)
    }

    /// Sequence of the last record in the log, if any.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn last_sequence(&self) -> Result<Option<u64>> {
        Ok(self.lock_writer()?.last_sequence)
    }

    /// Number of records in the log file now.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn len(&self) -> Result<usize> {
        Ok(self.lock_writer()?.index.len())
    }

    /// Whether the log holds no records.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Size of the log file in bytes.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn size_bytes(&self) -> Result<u64> {
        Ok(self.lock_writer()?.file_len)
    }

    /// How many fsyncs appends have performed since open. Under concurrency this is
    /// below the number of appends: that is group commit at work.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sync mode chosen at open.
    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    /// Copies `[keep_from, end)` of `old` behind a fresh header into `tmp`, fsyncs it,
    /// and returns it open for appending at its end.
    fn write_rewrite(&self, tmp: &Path, old: &File, keep_from: u64, end: u64) -> Result<File> {
        let result = (|| -> Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(tmp)
                .at("create", tmp)?;
            let mut out = BufWriter::new(&file);
            out.write_all(&header()).at("write", tmp)?;
            let mut src = old;
            src.seek(SeekFrom::Start(keep_from))
                .at("seek", &self.path)?;
            let copied = io::copy(&mut src.take(end - keep_from), &mut out).at("copy", tmp)?;
            out.flush().at("write", tmp)?;
            drop(out);
            if copied != end - keep_from {
                return Err(Error::Corrupt {
                    path: self.path.clone(),
                    reason: format!(
                        "log shrank while rewriting: copied {copied} of {} bytes",
                        end - keep_from
                    ),
                });
            }
            file.sync_all().at("fsync", tmp)?;
            Ok(file)
        })();
        // The old handle's position moved while copying; appends use the new file, but
        // restore it in case the rewrite failed and the old file stays in use.
        let mut old = old;
        let restore = old.seek(SeekFrom::Start(end)).map(drop);
        if result.is_err() {
            let _ = fs::remove_file(tmp); // best effort; the store removes strays at open
        }
        let file = result?;
        restore.at("seek", &self.path)?;
        Ok(file)
    }

    fn finish_sync(&self, durable: Option<u64>) {
        if let Ok(mut d) = self.durability.lock() {
            d.syncing = false;
            if let Some(t) = durable {
                d.durable = d.durable.max(t);
            }
        }
        self.synced.notify_all();
    }

    fn poison(&self, reason: String) {
        let _ = self.poisoned.set(reason); // the first failure is the one worth reporting
        self.synced.notify_all();
    }

    fn check_poison(&self) -> Result<()> {
        match self.poisoned.get() {
            Some(reason) => Err(Error::WalPoisoned {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn lock_error(&self) -> Error {
        self.poison("a thread panicked while holding the log's lock".into());
        Error::WalPoisoned {
            path: self.path.clone(),
            reason: "a thread panicked while holding the log's lock".into(),
        }
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        self.writer.lock().map_err(|_| self.lock_error())
    }

    fn lock_durability(&self) -> Result<MutexGuard<'_, Durability>> {
        self.durability.lock().map_err(|_| self.lock_error())
    }
}

fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&WAL_VERSION.to_le_bytes());
    h
}

/// Creates an empty log atomically: header into `*.tmp`, fsync, rename, fsync the dir.
pub(crate) fn create_empty(path: &Path) -> Result<()> {
    let tmp = fsutil::temp_sibling(path);
    {
        let mut f = File::create(&tmp).at("create", &tmp)?;
        f.write_all(&header()).at("write", &tmp)?;
        f.sync_all().at("fsync", &tmp)?;
    }
    fs::rename(&tmp, path).at("rename into place", path)?;
    fsutil::sync_parent(path)
}

fn check_header(file: &File, path: &Path, len: u64) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if len < HEADER_LEN {
        return Err(corrupt(format!(
            "{len} bytes is shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    let mut f = file;
    f.seek(SeekFrom::Start(0)).at("seek", path)?;
    f.read_exact(&mut h).at("read header", path)?;
    if &h[..8] != MAGIC {
        return Err(corrupt("not a streampca WAL (bad magic)".into()));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&h[8..]);
    let version = u32::from_le_bytes(v);
    if version != WAL_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            version,
            supported: WAL_VERSION,
        });
    }
    Ok(())
}

struct Scan {
    records: Vec<(WalRecord, (u64, u64))>,
    problem: Option<(u64, TailReason)>,
}

/// Reads whole records from just after the header; stops at the first bad one.
fn scan(file: &File, path: &Path, len: u64) -> Result<Scan> {
    let mut f = file;
    f.seek(SeekFrom::Start(HEADER_LEN)).at("seek", path)?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut offset = HEADER_LEN;
    let mut records = Vec::new();
    let mut last: Option<u64> = None;
    let problem = loop {
        let available = len - offset;
        if available == 0 {
            break None;
        }
        if available < RECORD_HEADER_LEN {
            break Some((
                offset,
                TailReason::Short {
                    needed: RECORD_HEADER_LEN,
                    available,
                },
            ));
        }
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        r.read_exact(&mut head).at("read", path)?;
        let mut four = [0u8; 4];
        four.copy_from_slice(&head[..4]);
        let plen = u32::from_le_bytes(four);
        four.copy_from_slice(&head[4..]);
        let stored = u32::from_le_bytes(four);
        if plen == 0 || plen > MAX_PAYLOAD {
            break Some((offset, TailReason::BadLength { len: plen }));
        }
        let needed = RECORD_HEADER_LEN + u64::from(plen);
        if needed > available {
            break Some((offset, TailReason::Short { needed, available }));
        }
        let mut payload = vec![0u8; plen as usize];
        r.read_exact(&mut payload).at("read", path)?;
        let computed = record_crc(&head[..4], &payload);
        if computed != stored {
            break Some((offset, TailReason::BadChecksum { stored, computed }));
        }
        let record = match WalRecord::decode(&payload) {
            Ok(rec) => rec,
            Err(reason) => break Some((offset, TailReason::Undecodable { reason })),
        };
        if let Some(prev) = last.filter(|p| record.sequence <= *p) {
            // A valid checksum with a sequence out of order is not a crash artefact:
            // refuse to guess rather than cut off data.
            return Err(Error::Corrupt {
                path: path.to_owned(),
                reason: format!(
                    "record at offset {offset} has sequence {} after {prev}",
                    record.sequence
                ),
            });
        }
        let sequence = record.sequence;
        last = Some(sequence);
        records.push((record, (sequence, offset)));
        offset += needed;
    };
    Ok(Scan { records, problem })
}

/// Copies `[offset, len)` to `<path>.<kind>-<offset>` (fsynced) before it is cut off.
fn save_tail(file: &File, path: &Path, offset: u64, len: u64, kind: &str) -> Result<PathBuf> {
    // Never overwrite earlier evidence: pick the first free name.
    let (dest, mut out) = (0u32..)
        .map(|n| {
            let mut dest = path.as_os_str().to_owned();
            dest.push(format!(".{kind}-{offset}"));
            if n > 0 {
                dest.push(format!(".{n}"));
            }
            let dest = PathBuf::from(dest);
            let opened = OpenOptions::new().write(true).create_new(true).open(&dest);
            (dest, opened)
        })
        .find(|(_, opened)| !matches!(opened, Err(e) if e.kind() == io::ErrorKind::AlreadyExists))
        .map(|(dest, opened)| opened.at("create", &dest).map(|f| (dest, f)))
        .unwrap_or_else(|| {
            Err(Error::Corrupt {
                path: path.to_owned(),
                reason: "no free name to save the corrupt tail".into(),
            })
        })?;
    let mut src = file;
    src.seek(SeekFrom::Start(offset)).at("seek", path)?;
    io::copy(&mut src.take(len - offset), &mut out).at("copy corrupt tail", &dest)?;
    out.sync_all().at("fsync", &dest)?;
    fsutil::sync_parent(&dest)?;
    Ok(dest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::sync::Mutex;

    /// A deterministic record for `seq`: f32 on odd, f64 on even sequences, targets on
    /// every third, with awkward values (signed zero, subnormals) mixed in.
    fn record(seq: u64, dim: usize) -> WalRecord {
        let mut rng = StdRng::seed_from_u64(seq);
        let rows = 1 + (seq % 3) as usize;
        let target_dim = seq.is_multiple_of(3).then_some(2);
        let mut x: Vec<f64> = (0..rows * dim).map(|_| rng.gen_range(-1e3..1e3)).collect();
        x[0] = -0.0;
        if x.len() > 1 {
            x[1] = f64::MIN_POSITIVE / 3.0;
        }
        let y: Option<Vec<f64>> =
            target_dim.map(|m| (0..rows * m).map(|_| rng.gen::<f64>() - 0.5).collect());
        let data = if seq % 2 == 1 {
            BatchData::F32 {
                x: x.iter().map(|v| *v as f32).collect(),
                y: y.map(|y| y.iter().map(|v| *v as f32).collect()),
            }
        } else {
            BatchData::F64 { x, y }
        };
        WalRecord {
            sequence: seq,
            dim,
            target_dim,
            data,
        }
    }

    /// Bit patterns of a record, so comparisons are exact (and NaN-safe).
    fn bits(r: &WalRecord) -> (u64, usize, Option<usize>, Vec<u64>) {
        let values = match &r.data {
            BatchData::F32 { x, y } => x
                .iter()
                .chain(y.iter().flatten())
                .map(|v| u64::from(v.to_bits()) | 1 << 40)
                .collect(),
            BatchData::F64 { x, y } => x
                .iter()
                .chain(y.iter().flatten())
                .map(|v| v.to_bits())
                .collect(),
        };
        (r.sequence, r.dim, r.target_dim, values)
    }

    fn assert_same(got: &[WalRecord], want: &[WalRecord]) {
        assert_eq!(got.len(), want.len(), "record count");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(bits(g), bits(w), "record {}", w.sequence);
        }
    }

    /// Writes records 1..=n and returns them with the file length after each.
    fn write_log(path: &Path, n: u64, dim: usize) -> (Vec<WalRecord>, Vec<u64>) {
        let (wal, rec) = Wal::open(path, SyncMode::Never).unwrap();
        assert!(rec.records.is_empty() && rec.torn_tail.is_none());
        let mut ends = vec![wal.size_bytes().unwrap()];
        let records: Vec<_> = (1..=n).map(|s| record(s, dim)).collect();
        for r in &records {
            wal.append(r).unwrap();
            ends.push(wal.size_bytes().unwrap());
        }
        (records, ends)
    }

    #[test]
    fn records_round_trip_bit_exactly_through_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (records, ends) = write_log(&path, 7, 5);

        let (wal, recovery) = Wal::open(&path, SyncMode::Always).unwrap();

        assert_same(&recovery.records, &records);
        assert_eq!(recovery.torn_tail, None);
        assert_eq!(wal.last_sequence().unwrap(), Some(7));
        assert_eq!(wal.size_bytes().unwrap(), *ends.last().unwrap());
        assert_eq!(fs::metadata(&path).unwrap().len(), *ends.last().unwrap());
    }

    #[test]
    fn a_log_cut_anywhere_inside_the_last_record_recovers_exactly_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("original.log");
        let (records, ends) = write_log(&original, 3, 3);
        let (good_end, full_end) = (ends[2], ends[3]);

        for cut in good_end..full_end {
            let path = dir.path().join(format!("cut-{cut}.log"));
            fs::copy(&original, &path).unwrap();
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(cut)
                .unwrap();

            let (wal, recovery) = Wal::open(&path, SyncMode::Always).unwrap();

            assert_same(&recovery.records, &records[..2]);
            let tail = recovery.torn_tail.clone();
            if cut == good_end {
                assert_eq!(tail, None, "cut at a record boundary is not torn");
            } else {
                let tail = tail.unwrap();
                assert_eq!(
                    (tail.offset, tail.discarded),
                    (good_end, cut - good_end),
                    "cut {cut}"
                );
                assert!(
                    matches!(tail.reason, TailReason::Short { .. }),
                    "cut {cut}: {}",
                    tail.reason
                );
                let saved = fs::read(&tail.saved_to).unwrap();
                assert_eq!(saved.len() as u64, cut - good_end, "torn bytes kept aside");
                assert!(tail.saved_to.to_string_lossy().contains(".torn-"));
            }
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                good_end,
                "file truncated to last whole record"
            );

            // Appends after recovery land right after the last whole record.
            let next = record(3, 3);
            wal.append(&next).unwrap();
            drop(wal);
            let (_, again) = Wal::open(&path, SyncMode::Always).unwrap();
            assert_same(&again.records, &records);
            assert_eq!(again.torn_tail, None);
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_in_the_last_record_is_detected_and_recovery_stops_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("original.log");
        let (records, ends) = write_log(&original, 3, 3);
        let bytes = fs::read(&original).unwrap();
        let (good_end, full_end) = (ends[2], ends[3]);

        for pos in good_end..full_end {
            let path = dir.path().join(format!("flip-{pos}.log"));
            let mut damaged = bytes.clone();
            damaged[pos as usize] ^= 0x5a;
            fs::write(&path, &damaged).unwrap();

            let (wal, recovery) = Wal::open(&path, SyncMode::Always).unwrap();

            assert_same(&recovery.records, &records[..2]);
            let tail = recovery.torn_tail.clone().unwrap();
            assert_eq!(tail.offset, good_end, "byte {pos}");
            assert_eq!(fs::metadata(&path).unwrap().len(), good_end);
            // A length grown past the end of the file looks exactly like a torn write.
            if matches!(tail.reason, TailReason::Short { .. }) {
                assert!(pos < good_end + 4, "byte {pos}: {}", tail.reason);
            }
            assert_eq!(
                fs::read(&tail.saved_to).unwrap(),
                &damaged[good_end as usize..],
                "discarded bytes kept aside"
            );

            wal.append(&record(3, 3)).unwrap();
            drop(wal);
            let (_, again) = Wal::open(&path, SyncMode::Always).unwrap();
            assert_same(&again.records, &records);
        }
    }

    #[test]
    fn a_second_corruption_at_the_same_offset_keeps_the_first_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (_, ends) = write_log(&path, 2, 2);
        let damage = |path: &Path| {
            let mut b = fs::read(path).unwrap();
            let last = b.len() - 1;
            b[last] ^= 1;
            fs::write(path, b).unwrap();
        };

        damage(&path);
        let (wal, first) = Wal::open(&path, SyncMode::Always).unwrap();
        wal.append(&record(2, 2)).unwrap();
        drop(wal);
        damage(&path);
        let (_, second) = Wal::open(&path, SyncMode::Always).unwrap();

        let (a, b) = (first.torn_tail.unwrap(), second.torn_tail.unwrap());
        assert_eq!((a.offset, b.offset), (ends[1], ends[1]));
        assert_ne!(a.saved_to, b.saved_to);
        assert!(a.saved_to.exists() && b.saved_to.exists());
    }

    #[test]
    fn an_out_of_order_sequence_is_rejected_and_leaves_the_log_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (records, ends) = write_log(&path, 3, 2);
        let (wal, _) = Wal::open(&path, SyncMode::Always).unwrap();

        let err = wal.append(&record(3, 2)).unwrap_err();

        assert!(
            matches!(
                err,
                Error::OutOfOrder {
                    last: 3,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(wal.size_bytes().unwrap(), ends[3]);
        drop(wal);
        assert_same(
            &Wal::open(&path, SyncMode::Always).unwrap().1.records,
            &records,
        );
    }

    #[test]
    fn malformed_records_are_rejected_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path().join("wal.log"), SyncMode::Always).unwrap();
        let ragged = WalRecord {
            sequence: 1,
            dim: 3,
            target_dim: None,
            data: BatchData::F64 {
                x: vec![1.0; 4],
                y: None,
            },
        };
        let missing_y = WalRecord {
            sequence: 1,
            dim: 2,
            target_dim: Some(1),
            data: BatchData::F32 {
                x: vec![1.0; 4],
                y: None,
            },
        };
        let empty = WalRecord {
            sequence: 1,
            dim: 2,
            target_dim: None,
            data: BatchData::F32 { x: vec![], y: None },
        };

        for bad in [ragged, missing_y, empty] {
            let err = wal.append(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidRecord { .. }), "{err}");
        }
        assert_eq!(wal.size_bytes().unwrap(), HEADER_LEN);
        assert!(wal.is_empty().unwrap());
    }

    #[test]
    fn concurrent_appends_from_eight_threads_all_land_once_and_share_fsyncs() {
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 40;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (wal, _) = Wal::open(&path, SyncMode::Always).unwrap();
        // The service's pattern: sequence + write under the model lock, wait outside it.
        let model_lock = Mutex::new(0u64);

        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..PER_THREAD {
                        let ticket = {
                            let mut last = model_lock.lock().unwrap();
                            *last += 1;
                            wal.write(&record(*last, 4)).unwrap()
                        };
                        wal.wait(ticket).unwrap();
                    }
                });
            }
        });

        let appends = THREADS * PER_THREAD;
        let fsyncs = wal.fsync_count();
        eprintln!("group commit: {fsyncs} fsyncs for {appends} appends from {THREADS} threads");
        assert!(fsyncs > 0, "SyncMode::Always must fsync");
        assert!(
            fsyncs < appends,
            "group commit should share fsyncs: {fsyncs} for {appends} appends"
        );
        drop(wal);
        let (_, recovery) = Wal::open(&path, SyncMode::Always).unwrap();
        let want: Vec<_> = (1..=appends).map(|s| record(s, 4)).collect();
        assert_same(&recovery.records, &want);
        assert_eq!(recovery.torn_tail, None);
    }

    #[test]
    fn truncating_while_eight_threads_append_loses_nothing_after_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (wal, _) = Wal::open(&path, SyncMode::Always).unwrap();
        let model_lock = Mutex::new(0u64);
        let mut cut = 0;

        std::thread::scope(|s| {
            let appenders: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..25 {
                            let ticket = {
                                let mut last = model_lock.lock().unwrap();
                                *last += 1;
                                wal.write(&record(*last, 3)).unwrap()
                            };
                            wal.wait(ticket).unwrap();
                        }
                    })
                })
                .collect();
            while !appenders.iter().all(|h| h.is_finished()) {
                let last = *model_lock.lock().unwrap();
                cut = cut.max(last.saturating_sub(10));
                wal.truncate_through(cut).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });

        drop(wal);
        let (_, recovery) = Wal::open(&path, SyncMode::Always).unwrap();
        let want: Vec<_> = (cut + 1..=200).map(|s| record(s, 3)).collect();
        assert_same(&recovery.records, &want);
        assert_eq!(recovery.torn_tail, None);
    }

    #[test]
    fn append_alone_returns_only_after_its_own_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path().join("wal.log"), SyncMode::Always).unwrap();

        wal.append(&record(1, 2)).unwrap();
        wal.append(&record(2, 2)).unwrap();

        assert_eq!(wal.fsync_count(), 2, "one uncontended append, one fsync");
    }

    #[test]
    fn sync_mode_never_does_not_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path().join("wal.log"), SyncMode::Never).unwrap();

        for s in 1..=5 {
            wal.append(&record(s, 2)).unwrap();
        }

        assert_eq!(wal.fsync_count(), 0);
    }

    #[test]
    fn truncate_through_drops_covered_records_keeps_later_ones_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (records, _) = write_log(&path, 10, 3);
        let (wal, _) = Wal::open(&path, SyncMode::Always).unwrap();

        assert_eq!(wal.truncate_through(6).unwrap(), 6);
        assert_eq!(wal.truncate_through(6).unwrap(), 0, "idempotent");
        assert_eq!(wal.len().unwrap(), 4);
        wal.append(&record(11, 3)).unwrap();
        drop(wal);

        let (wal, recovery) = Wal::open(&path, SyncMode::Always).unwrap();
        let mut want = records[6..].to_vec();
        want.push(record(11, 3));
        assert_same(&recovery.records, &want);

        assert_eq!(wal.truncate_through(100).unwrap(), 5);
        assert!(wal.is_empty().unwrap());
        assert_eq!(wal.size_bytes().unwrap(), HEADER_LEN);
        let err = wal.append(&record(11, 3)).unwrap_err();
        assert!(
            matches!(err, Error::OutOfOrder { .. }),
            "order survives an empty log: {err}"
        );
        wal.append(&record(12, 3)).unwrap();
        drop(wal);
        assert_same(
            &Wal::open(&path, SyncMode::Always).unwrap().1.records,
            &[record(12, 3)],
        );
        let strays: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "wal.log")
            .collect();
        assert!(strays.is_empty(), "no temporary files left: {strays:?}");
    }

    #[test]
    fn a_file_that_is_not_a_wal_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        fs::write(&path, b"hello, this is not a log at all").unwrap();

        let err = Wal::open(&path, SyncMode::Always).unwrap_err();

        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("wal.log"),
            "error names the file: {err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"hello, this is not a log at all");
    }

    #[test]
    fn a_newer_wal_version_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let mut h = header();
        h[8..].copy_from_slice(&7u32.to_le_bytes());
        fs::write(&path, h).unwrap();

        let err = Wal::open(&path, SyncMode::Always).unwrap_err();

        assert!(
            matches!(
                err,
                Error::UnsupportedVersion {
                    version: 7,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn replayed_records_feed_the_accumulator_the_same_numbers() {
        let mut live = Accumulator::new(3, None, None).unwrap();
        let mut replayed = live.clone();
        let rec = WalRecord {
            sequence: 1,
            dim: 3,
            target_dim: None,
            data: BatchData::F32 {
                x: vec![0.1, 0.2, 0.3, 1.5, -2.5, 3.25],
                y: None,
            },
        };
        let BatchData::F32 { x, .. } = &rec.data else {
            unreachable!()
        };
        live.update(x, None).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        Wal::open(&path, SyncMode::Always)
            .unwrap()
            .0
            .append(&rec)
            .unwrap();
        let (_, recovery) = Wal::open(&path, SyncMode::Always).unwrap();
        recovery.records[0].apply_to(&mut replayed).unwrap();

        assert_eq!(live, replayed);
        assert_eq!(recovery.records[0].rows(), 2);
    }
}
