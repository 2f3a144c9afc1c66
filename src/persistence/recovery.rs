//! Reading a log file back after a crash: the header, every whole record, and the torn or
//! corrupt tail that ends it, which is copied aside before the file is cut.
//!
//! A torn tail is the normal result of a crash during an append that was never
//! acknowledged. Any other problem (bad checksum, impossible length, undecodable
//! payload) may be real damage. Either way the discarded bytes are first copied aside
//! (fsynced): `<log>.torn-<offset>` for a short record, `<log>.corrupt-<offset>`
//! otherwise. Recovery never drops bytes without a copy, because a flipped length in the
//! *middle* of the log looks exactly like a torn tail and would otherwise take every
//! later record with it unseen. A record with a valid checksum that does not follow the
//! one before it (its local index or sequence out of order) is not a crash artefact:
//! the file is refused as it is.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::{Error, IoContext, Result};
use super::fsutil;
use super::record::{self, LogRecord, MAX_PAYLOAD, RECORD_HEADER_LEN};

/// First bytes of every log file.
pub const MAGIC: &[u8; 8] = b"SPCAWAL\0";
/// The log format this build writes (it also reads version 1, for the upgrade).
pub const LOG_VERSION: u32 = 2;
/// Version 2 header: magic · version u32 · partition u32 · first_local u64 · crc u32.
pub const HEADER_LEN: u64 = 28;
/// Version 1 header: magic · version u32.
pub const V1_HEADER_LEN: u64 = 12;

/// What a log file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version (1 or 2).
    pub version: u32,
    /// The partition the log belongs to (0 for version 1).
    pub partition: u32,
    /// Local index the first record must have (1 for a new log; after a rewrite, the
    /// first index the snapshot does not cover).
    pub first_local: u64,
}

impl Header {
    /// Bytes before the first record.
    pub fn size(&self) -> u64 {
        if self.version == 1 {
            V1_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The encoded version 2 header.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.partition.to_le_bytes());
        h[16..24].copy_from_slice(&self.first_local.to_le_bytes());
        let crc = crc32fast::hash(&h[..24]);
        h[24..].copy_from_slice(&crc.to_le_bytes());
        h
    }
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

/// A torn or corrupt tail found (and cut off) when a log was opened.
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

/// Reads and checks a log file's header.
///
/// # Errors
/// [`Error::Corrupt`] for a file too short for a header, with bad magic, or (version 2)
/// a header checksum that does not match; [`Error::UnsupportedVersion`] for a version
/// other than 1 or 2. The file is left as it is.
pub fn read_header(file: &File, path: &Path, len: u64) -> Result<Header> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if len < V1_HEADER_LEN {
        return Err(corrupt(format!(
            "{len} bytes is shorter than a log header (an empty or truncated log is not \
             something streampca writes)"
        )));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    let mut f = file;
    f.seek(SeekFrom::Start(0)).at("seek", path)?;
    let take = len.min(HEADER_LEN) as usize;
    f.read_exact(&mut h[..take]).at("read header", path)?;
    if &h[..8] != MAGIC {
        return Err(corrupt("not a streampca log (bad magic)".into()));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    match version {
        1 => Ok(Header {
            version,
            partition: 0,
            first_local: 1,
        }),
        LOG_VERSION => {
            if len < HEADER_LEN {
                return Err(corrupt(format!(
                    "{len} bytes is shorter than the {HEADER_LEN}-byte header"
                )));
            }
            let stored = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
            if stored != crc32fast::hash(&h[..24]) {
                return Err(corrupt("header checksum mismatch".into()));
            }
            let mut first = [0u8; 8];
            first.copy_from_slice(&h[16..24]);
            Ok(Header {
                version,
                partition: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
                first_local: u64::from_le_bytes(first),
            })
        }
        v => Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            version: v,
            supported: LOG_VERSION,
        }),
    }
}

/// Every whole record of a log, with its byte offset, and the problem that ended the
/// scan early, if any.
pub struct Scan {
    /// Records in file order, each with its offset.
    pub records: Vec<(LogRecord, u64)>,
    /// Where and why the scan stopped before the end of the file.
    pub problem: Option<(u64, TailReason)>,
}

/// Reads whole records from just after the header; stops at the first bad one. Local
/// indices must run consecutively from the header's `first_local` (version 1: sequences
/// must increase), else the file is refused.
///
/// # Errors
/// [`Error::Io`]; [`Error::Corrupt`] for a well-formed record out of order.
pub fn scan(file: &File, path: &Path, len: u64, header: Header) -> Result<Scan> {
    let mut f = file;
    let start = header.size();
    f.seek(SeekFrom::Start(start)).at("seek", path)?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut offset = start;
    let mut records: Vec<(LogRecord, u64)> = Vec::new();
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
        let plen = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if plen == 0 || plen > MAX_PAYLOAD {
            break Some((offset, TailReason::BadLength { len: plen }));
        }
        let needed = RECORD_HEADER_LEN + u64::from(plen);
        if needed > available {
            break Some((offset, TailReason::Short { needed, available }));
        }
        let mut payload = vec![0u8; plen as usize];
        r.read_exact(&mut payload).at("read", path)?;
        let computed = record::record_crc(&head[..4], &payload);
        if computed != stored {
            break Some((offset, TailReason::BadChecksum { stored, computed }));
        }
        let rec = match record::decode(&payload, header.version) {
            Ok(rec) => rec,
            Err(reason) => break Some((offset, TailReason::Undecodable { reason })),
        };
        let out_of_order = match records.last() {
            None => header.version >= 2 && rec.stamp.local != header.first_local,
            Some((prev, _)) => {
                rec.stamp.sequence <= prev.stamp.sequence
                    || (header.version >= 2 && rec.stamp.local != prev.stamp.local + 1)
            }
        };
        if out_of_order {
            let (want_local, prev_seq) =
                records.last().map_or((header.first_local, 0), |(p, _)| {
                    (p.stamp.local + 1, p.stamp.sequence)
                });
            // A valid checksum out of order is not a crash artefact: refuse to guess
            // rather than cut off data.
            return Err(Error::Corrupt {
                path: path.to_owned(),
                reason: format!(
                    "record at offset {offset} has local index {} and sequence {}, \
                     expected local index {want_local} after sequence {prev_seq}",
                    rec.stamp.local, rec.stamp.sequence
                ),
            });
        }
        records.push((rec, offset));
        offset += needed;
    };
    Ok(Scan { records, problem })
}

/// Copies `[offset, len)` to `<path>.<kind>-<offset>` (fsynced) before it is cut off.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written.
pub fn save_tail(file: &File, path: &Path, offset: u64, len: u64, kind: &str) -> Result<PathBuf> {
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

/// Cuts a scan's bad tail off `file` after saving it aside; returns the problem, or
/// `None` when the scan reached the end of the file.
///
/// # Errors
/// [`Error::Io`].
pub fn cut_tail(file: &File, path: &Path, len: u64, scan: &Scan) -> Result<Option<TailProblem>> {
    let Some((offset, reason)) = scan.problem.clone() else {
        return Ok(None);
    };
    let kind = match reason {
        TailReason::Short { .. } => "torn",
        _ => "corrupt",
    };
    let saved_to = save_tail(file, path, offset, len, kind)?;
    file.set_len(offset).at("truncate torn tail", path)?;
    file.sync_all().at("fsync", path)?;
    Ok(Some(TailProblem {
        offset,
        discarded: len - offset,
        reason,
        saved_to,
    }))
}
