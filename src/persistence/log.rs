//! The local write-ahead log of one partition (`partition-{k}.log`): every batch the
//! partition folded, in its order, durable before the producer hears "accepted". The
//! embedded implementation of [`PartitionLog`].
//!
//! # File
//!
//! A version 2 header (magic, version, partition, `first_local`, header CRC; see
//! [`super::recovery`]), then records ([`super::record`]). Local indices run
//! consecutively from `first_local`; a rewrite that drops records a snapshot covers
//! starts the new file at the first index it keeps, so recovery can tell a log that
//! starts where the snapshot ends from one that lost records.
//!
//! # Group commit
//!
//! The caller (the partition) stamps and writes a record under its lock
//! ([`PartitionLog::write`]: one `write` system call), folds the batch, releases the
//! lock, and only then waits for durability ([`PartitionLog::wait`]). Concurrent
//! producers of one partition share one `fdatasync`: the first waiter to find no fsync
//! running becomes the leader and syncs everything written so far; later waiters sleep
//! until a finished fsync covers them.
//!
//! If an fsync fails the handle is poisoned: after a failed fsync the kernel may have
//! dropped the dirty pages, so retrying cannot tell what is on disk (PostgreSQL's
//! "fsyncgate"). Every later call fails; a restart recovers exactly what reached the disk.
//!
//! One process owns a log at a time; nothing here locks the file against a second one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use super::error::{Error, IoContext, Result};
use super::fsutil;
use super::partition_log::{PartitionLog, Ticket};
use super::record::{EncodedRecord, LogRecord, Stamp};
use super::recovery::{self, Header, TailProblem, LOG_VERSION};

/// When [`Wal::wait`] forces records to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` before acknowledging; concurrent appends share one (the default).
    #[default]
    Always,
    /// Never fsync; the OS writes back when it likes. A crash of the machine (not of
    /// the process) can lose acknowledged batches. For benchmarks and throwaway data.
    Never,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecovery {
    /// The local index the file's first record has (or would have).
    pub first_local: u64,
    /// Every whole record, in log order.
    pub records: Vec<LogRecord>,
    /// The torn or corrupt tail that was cut off, if any.
    pub torn_tail: Option<TailProblem>,
}

/// State changed only by writers, under [`Wal::writer`].
#[derive(Debug)]
struct Writer {
    /// The current file. An `Arc` so a group-commit leader can fsync it without
    /// holding the writer lock (appends continue meanwhile); a rewrite swaps it.
    file: Arc<File>,
    /// Length of the current file = the offset of the next record.
    file_len: u64,
    /// Bytes appended through this handle since open, across rewrites. Durability is
    /// tracked in this unit because file offsets restart when the log is rewritten.
    logical_end: u64,
    /// The stamp of the last record written, if any.
    last: Option<Stamp>,
    /// Local index of the current file's first record.
    first_local: u64,
    /// `(local, offset)` of every record in the current file, for `truncate_through`.
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

/// An open partition log. `Sync`: share it by reference or `Arc` between threads.
#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    partition: u32,
    sync: SyncMode,
    /// Serialises writes so records never interleave. Lock order: `writer` before
    /// `durability`, never the reverse.
    writer: Mutex<Writer>,
    durability: Mutex<Durability>,
    /// Signalled when a leader's fsync finishes (or the log is rewritten).
    synced: Condvar,
    /// Set once, on the first fsync or undo failure; every later call fails with it.
    poisoned: OnceLock<String>,
    /// fsyncs performed by waits (for tests and metrics).
    fsyncs: AtomicU64,
}

impl Wal {
    /// Creates an empty log for `partition` atomically (header into a temporary file,
    /// fsync, rename, fsync the directory), whose first record will have local index
    /// `first_local`.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn create_file(path: &Path, partition: u32, first_local: u64) -> Result<()> {
        let header = Header {
            version: LOG_VERSION,
            partition,
            first_local,
        };
        fsutil::write_atomic(path, |w| w.write_all(&header.encode()))
    }

    /// Opens the existing log at `path`, recovers its records and cuts off a torn or
    /// corrupt tail (saved aside first; see [`super::recovery`]).
    ///
    /// # Errors
    /// [`Error::Io`] (a missing file included: a partition's log always exists);
    /// [`Error::Corrupt`] for a bad header, a header naming another partition, or
    /// records out of order (the file is left as it is);
    /// [`Error::UnsupportedVersion`] for any version but 2 (version 1 logs are migrated
    /// by the store before they are opened).
    pub fn open(
        path: impl Into<PathBuf>,
        partition: u32,
        sync: SyncMode,
    ) -> Result<(Self, LogRecovery)> {
        let path = path.into();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .at("open", &path)?;
        let len = file.metadata().at("stat", &path)?.len();
        let header = recovery::read_header(&file, &path, len)?;
        if header.version != LOG_VERSION {
            return Err(Error::UnsupportedVersion {
                path,
                version: header.version,
                supported: LOG_VERSION,
            });
        }
        if header.partition != partition {
            return Err(Error::Corrupt {
                path,
                reason: format!(
                    "the header says partition {}, the file name {partition}",
                    header.partition
                ),
            });
        }
        let scan = recovery::scan(&file, &path, len, header)?;
        let torn_tail = recovery::cut_tail(&file, &path, len, &scan)?;
        let file_len = torn_tail.as_ref().map_or(len, |t| t.offset);
        (&file).seek(SeekFrom::Start(file_len)).at("seek", &path)?;
        let index = scan
            .records
            .iter()
            .map(|(r, off)| (r.stamp.local, *off))
            .collect();
        let records: Vec<LogRecord> = scan.records.into_iter().map(|(r, _)| r).collect();
        let writer = Writer {
            file: Arc::new(file),
            file_len,
            logical_end: 0,
            last: records.last().map(|r| r.stamp),
            first_local: header.first_local,
            index,
        };
        let wal = Self {
            path,
            partition,
            sync,
            writer: Mutex::new(writer),
            durability: Mutex::new(Durability::default()),
            synced: Condvar::new(),
            poisoned: OnceLock::new(),
            fsyncs: AtomicU64::new(0),
        };
        Ok((
            wal,
            LogRecovery {
                first_local: header.first_local,
                records,
                torn_tail,
            },
        ))
    }

    /// [`PartitionLog::write`] then [`PartitionLog::wait`]: returns once the record is
    /// durable.
    ///
    /// # Errors
    /// As both.
    pub fn append(&self, record: &mut EncodedRecord, stamp: Stamp) -> Result<()> {
        let ticket = self.write(record, stamp)?;
        self.wait(ticket)
    }

    /// Stamp of the last record in the log, if any.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn last_stamp(&self) -> Result<Option<Stamp>> {
        Ok(self.lock_writer()?.last)
    }

    /// Number of records in the file now.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn len(&self) -> Result<usize> {
        Ok(self.lock_writer()?.index.len())
    }

    /// Whether the file holds no records.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Size of the file in bytes.
    ///
    /// # Errors
    /// [`Error::WalPoisoned`] if a thread panicked while writing.
    pub fn size_bytes(&self) -> Result<u64> {
        Ok(self.lock_writer()?.file_len)
    }

    /// How many fsyncs waits have performed since open. Under concurrency this is below
    /// the number of appends: group commit at work.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies `[keep_from, end)` of `old` behind a fresh header into `tmp`, fsyncs it,
    /// and returns it open for appending at its end.
    fn write_rewrite(
        &self,
        tmp: &Path,
        old: &File,
        first_local: u64,
        keep_from: u64,
        end: u64,
    ) -> Result<File> {
        let result = (|| -> Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(tmp)
                .at("create", tmp)?;
            let mut out = BufWriter::new(&file);
            let header = Header {
                version: LOG_VERSION,
                partition: self.partition,
                first_local,
            };
            out.write_all(&header.encode()).at("write", tmp)?;
            let mut src = old;
            src.seek(SeekFrom::Start(keep_from))
                .at("seek", &self.path)?;
            let copied =
                io::copy(&mut io::Read::take(src, end - keep_from), &mut out).at("copy", tmp)?;
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
        // The old handle's position moved while copying; restore it in case the rewrite
        // failed and the old file stays in use.
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
        let reason = "a thread panicked while holding the log's lock";
        self.poison(reason.into());
        Error::WalPoisoned {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        self.writer.lock().map_err(|_| self.lock_error())
    }

    fn lock_durability(&self) -> Result<MutexGuard<'_, Durability>> {
        self.durability.lock().map_err(|_| self.lock_error())
    }
}

impl PartitionLog for Wal {
    fn write(&self, record: &mut EncodedRecord, stamp: Stamp) -> Result<Ticket> {
        let mut w = self.lock_writer()?;
        self.check_poison()?;
        let want_local = w.last.map_or(w.first_local, |l| l.local + 1);
        let in_order = stamp.local == want_local
            && w.last
                .is_none_or(|l| stamp.sequence > l.sequence && stamp.clock >= l.clock);
        if !in_order {
            return Err(Error::OutOfOrder {
                path: self.path.clone(),
                last: w.last.map_or(0, |l| l.sequence),
                got: stamp.sequence,
            });
        }
        record.stamp(stamp);
        let bytes = record.as_bytes();
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
        w.index.push((stamp.local, start));
        w.last = Some(stamp);
        Ok(Ticket(w.logical_end))
    }

    fn wait(&self, ticket: Ticket) -> Result<()> {
        if self.sync == SyncMode::Never {
            return self.check_poison();
        }
        let mut d = self.lock_durability()?;
        loop {
            self.check_poison()?;
            if d.durable >= ticket.0 {
                return Ok(());
            }
            if d.syncing {
                d = self.synced.wait(d).map_err(|_| self.lock_error())?;
                continue;
            }
            d.syncing = true;
            drop(d);
            // The leader: everything written before this point is covered.
            let (file, target) = match self.lock_writer() {
                Ok(w) => (Arc::clone(&w.file), w.logical_end),
                Err(e) => {
                    self.finish_sync(None);
                    return Err(e);
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

    /// Crash-safe by rewrite: the records to keep are copied behind a header whose
    /// `first_local` is the first kept index into a temporary sibling, which is fsynced
    /// and renamed over the log, then the directory is fsynced. A crash leaves either
    /// the old log (replay skips what the snapshot covers) or the new one, plus perhaps
    /// a stray temporary file the store removes at open. Writes wait meanwhile.
    fn truncate_through(&self, local: u64) -> Result<usize> {
        let mut w = self.lock_writer()?;
        self.check_poison()?;
        let drop_count = w.index.iter().take_while(|(l, _)| *l <= local).count();
        if drop_count == 0 {
            return Ok(0);
        }
        let keep_from = w.index.get(drop_count).map_or(w.file_len, |(_, off)| *off);
        let first_local = w
            .index
            .get(drop_count)
            .map_or(w.last.map_or(w.first_local, |l| l.local + 1), |(l, _)| *l);
        let tmp = fsutil::temp_sibling(&self.path);
        let new_file = self.write_rewrite(&tmp, &w.file, first_local, keep_from, w.file_len)?;
        if let Err(e) = fs::rename(&tmp, &self.path).at("rename into place", &self.path) {
            let _ = fs::remove_file(&tmp); // best effort; the store removes strays at open
            return Err(e);
        }
        if let Err(e) = fsutil::sync_parent(&self.path) {
            // Which log survives a crash is unknown now.
            self.poison(format!("directory fsync after rewrite failed: {e}"));
            return Err(e);
        }
        let shift = keep_from - recovery::HEADER_LEN;
        w.index.drain(..drop_count);
        for (_, off) in &mut w.index {
            *off -= shift;
        }
        w.file_len -= shift;
        w.first_local = first_local;
        w.file = Arc::new(new_file);
        // The new file was fsynced whole: every record written so far is durable.
        let end = w.logical_end;
        if let Ok(mut d) = self.durability.lock() {
            d.durable = d.durable.max(end);
        }
        self.synced.notify_all();
        Ok(drop_count)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
