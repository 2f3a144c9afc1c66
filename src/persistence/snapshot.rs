//! Snapshots: a model's whole state in one versioned, checksummed binary file, written
//! atomically, with the previous one kept as a fallback.
//!
//! Owns the snapshot format, the `snapshot-<sequence>.bin` files in a model directory,
//! choosing the newest readable one, and pruning old ones. It does not decide *when* to
//! snapshot (the service does) nor touch the WAL (see [`super::store`]).
//!
//! # Format (version 1)
//!
//! ```text
//! "SPCASNAP" (8 bytes) · version u32 · payload · crc32 u32 of everything before it
//! payload:
//!   config      name str · dim u64 · components u64 · target_dim u64 (0 = none) ·
//!               half_life opt_f64 · optimizer str · tolerance f64
//!   position    sequence u64 · batches u64
//!   accumulator dim u64 · target_dim u64 (0 = none) · half_life opt_f64 · count f64 ·
//!               mean_x vec · sxx mat · mean_y opt_vec · syx opt_mat · tr_syy f64
//!   trainer     q opt_mat · a opt_mat · b opt_mat · previous opt_mat · total_steps u64
//! str = u32 byte length + UTF-8 · opt_f64 = u8 flag + f64 · vec = u64 len + f64s ·
//! mat = u64 rows · u64 cols · f64s column-major · opt_x = u8 flag (0/1) + x if 1
//! ```
//!
//! All integers little-endian; every f64 is its raw IEEE-754 bits, so restore is
//! bit-exact. A 784-dim model's scatter is 4.9 MB: writing streams through a
//! `BufWriter` and a checksumming writer, with no intermediate buffer of the whole file.
//! Reading loads the file (one allocation of its size) and decodes from the slice.
//!
//! # Files and crash safety
//!
//! [`write`] writes `.snapshot-….tmp`, fsyncs it, renames it to
//! `snapshot-{sequence:020}.bin` and fsyncs the directory. A crash leaves at worst a
//! stray temporary file, which [`load_latest`] never reads. [`load_latest`] takes the
//! newest file that decodes and validates; a corrupt newer one is skipped, reported and
//! left on disk untouched. [`prune`] keeps the newest two, so there is always a
//! fallback; the WAL must then be kept back to the *older* one's sequence (the store
//! does this).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::pca::{Accumulator, AccumulatorParts, TrainerState};

use super::codec::{CrcWriter, Reader};
use super::config::ModelConfig;
use super::error::{Error, FormatError, IoContext, Result};
use super::fsutil;

/// First bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"SPCASNAP";
/// The snapshot format this build reads and writes.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Snapshots [`prune`] keeps by default: the newest and one fallback.
pub const KEEP: usize = 2;

const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".bin";

/// A model's complete state at one point of its log.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The model's creation settings.
    pub config: ModelConfig,
    /// Sequence of the last batch folded into `accumulator` (0 before the first).
    pub sequence: u64,
    /// Number of batches folded in.
    pub batches: u64,
    /// The accumulator's raw moments.
    pub accumulator: AccumulatorParts,
    /// The optimiser's warm start.
    pub trainer: TrainerState,
}

impl Snapshot {
    /// Checks the snapshot before anything is built from it: the config's ranges, the
    /// accumulator's settings against the config, and the accumulator's shapes and
    /// finiteness through [`Accumulator::from_parts`]. The trainer state is not checked
    /// here: `Trainer::with_state` drops any matrix of the wrong shape or with
    /// non-finite entries, so it can never poison a fit.
    ///
    /// # Errors
    /// [`FormatError::Inconsistent`] saying what does not fit.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |s: String| FormatError::Inconsistent(s);
        self.config.validate().map_err(|e| bad(e.to_string()))?;
        let (c, a) = (&self.config, &self.accumulator);
        if a.dim != c.dim || a.target_dim != c.target_dim {
            return Err(bad(format!(
                "accumulator shape (dim {}, target_dim {:?}) differs from the config's \
                 (dim {}, target_dim {:?})",
                a.dim, a.target_dim, c.dim, c.target_dim
            )));
        }
        if a.half_life.map(f64::to_bits) != c.half_life.map(f64::to_bits) {
            return Err(bad(format!(
                "accumulator half_life {:?} differs from the config's {:?}",
                a.half_life, c.half_life
            )));
        }
        // `from_parts` owns the rules for what a valid accumulator is; the clone (one
        // n×n copy) is cheap next to reading the file.
        Accumulator::from_parts(self.accumulator.clone()).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }
}

/// What [`load_latest`] found.
#[derive(Debug, Clone)]
pub struct LoadedSnapshot {
    /// The newest readable snapshot.
    pub snapshot: Snapshot,
    /// Its file.
    pub path: PathBuf,
    /// Newer snapshot files that were skipped, newest first, with why (left on disk).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Streams the encoded snapshot into `out` and returns `out`.
///
/// # Errors
/// The writer's error; `InvalidInput` for a string longer than `u32::MAX` bytes.
pub fn encode_to<W: Write>(s: &Snapshot, out: W) -> io::Result<W> {
    let mut w = CrcWriter::new(out);
    w.write_all(MAGIC)?;
    w.u32(SNAPSHOT_VERSION)?;
    let c = &s.config;
    w.str(&c.name)?;
    w.usize(c.dim)?;
    w.usize(c.components)?;
    w.usize(c.target_dim.unwrap_or(0))?;
    w.opt_f64(c.half_life)?;
    w.str(&c.optimizer)?;
    w.f64(c.tolerance)?;
    w.u64(s.sequence)?;
    w.u64(s.batches)?;
    let a = &s.accumulator;
    w.usize(a.dim)?;
    w.usize(a.target_dim.unwrap_or(0))?;
    w.opt_f64(a.half_life)?;
    w.f64(a.count)?;
    w.vector(&a.mean_x)?;
    w.matrix(&a.sxx)?;
    w.opt_vector(a.mean_y.as_ref())?;
    w.opt_matrix(a.syx.as_ref())?;
    w.f64(a.tr_syy)?;
    let t = &s.trainer;
    w.opt_matrix(t.q.as_ref())?;
    w.opt_matrix(t.a.as_ref())?;
    w.opt_matrix(t.b.as_ref())?;
    w.opt_matrix(t.previous.as_ref())?;
    w.u64(t.total_steps)?;
    let (crc, mut out) = w.finish();
    out.write_all(&crc.to_le_bytes())?;
    Ok(out)
}

/// Encodes a snapshot into memory (for export over HTTP); same bytes as the file.
///
/// # Errors
/// [`Error::InvalidSnapshot`] if a string is longer than `u32::MAX` bytes (the only
/// way writing to memory can fail).
pub fn encode(s: &Snapshot) -> Result<Vec<u8>> {
    encode_to(s, Vec::new()).map_err(|e| FormatError::Inconsistent(e.to_string()).into())
}

/// Decodes and fully validates a snapshot (checksum, structure, [`Snapshot::validate`])
/// before returning it, so an import replaces nothing unless the whole file is good.
///
/// # Errors
/// [`FormatError::UnsupportedVersion`] for another format version (checked before the
/// checksum, since another version may checksum differently);
/// [`FormatError::Corrupt`] for bad magic, checksum or structure;
/// [`FormatError::Inconsistent`] when [`Snapshot::validate`] fails.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, FormatError> {
    let corrupt = FormatError::Corrupt;
    if bytes.len() < MAGIC.len() + 4 + 4 {
        return Err(corrupt(format!(
            "{} bytes is too short for a snapshot",
            bytes.len()
        )));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a streampca snapshot (bad magic)".into()));
    }
    let mut r = Reader::new(&bytes[MAGIC.len()..]);
    let version = r.u32("version").map_err(corrupt)?;
    if version != SNAPSHOT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(tail);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} \
             (truncated or damaged)"
        )));
    }
    let mut r = Reader::new(&body[MAGIC.len() + 4..]);
    let snapshot = read_payload(&mut r).map_err(corrupt)?;
    if r.remaining() != 0 {
        return Err(corrupt(format!(
            "{} unexpected bytes after the payload",
            r.remaining()
        )));
    }
    snapshot.validate()?;
    Ok(snapshot)
}

fn opt_dim(v: usize) -> Option<usize> {
    (v != 0).then_some(v)
}

fn read_payload(r: &mut Reader<'_>) -> Result<Snapshot, String> {
    let config = ModelConfig {
        name: r.str("config name")?,
        dim: r.usize("config dim")?,
        components: r.usize("config components")?,
        target_dim: opt_dim(r.usize("config target_dim")?),
        half_life: r.opt_f64("config half_life")?,
        optimizer: r.str("config optimizer")?,
        tolerance: r.f64("config tolerance")?,
    };
    let sequence = r.u64("sequence")?;
    let batches = r.u64("batches")?;
    let accumulator = AccumulatorParts {
        dim: r.usize("accumulator dim")?,
        target_dim: opt_dim(r.usize("accumulator target_dim")?),
        half_life: r.opt_f64("accumulator half_life")?,
        count: r.f64("count")?,
        mean_x: r.vector("mean_x")?,
        sxx: r.matrix("sxx")?,
        mean_y: r.opt_vector("mean_y")?,
        syx: r.opt_matrix("syx")?,
        tr_syy: r.f64("tr_syy")?,
    };
    let trainer = TrainerState {
        q: r.opt_matrix("trainer q")?,
        a: r.opt_matrix("trainer a")?,
        b: r.opt_matrix("trainer b")?,
        previous: r.opt_matrix("trainer previous")?,
        total_steps: r.u64("trainer total_steps")?,
    };
    Ok(Snapshot {
        config,
        sequence,
        batches,
        accumulator,
        trainer,
    })
}

/// The file name of the snapshot at `sequence`: `snapshot-{sequence:020}.bin`
/// (zero-padded so names sort like sequences).
pub fn file_name(sequence: u64) -> String {
    format!("{FILE_PREFIX}{sequence:020}{FILE_SUFFIX}")
}

/// The sequence in a snapshot file name, or `None` for any other name (temporary
/// files, `*.corrupt`, anything an operator left there).
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes `s` durably into `dir` as [`file_name`]`(s.sequence)` (see the module docs)
/// and returns its path. An existing snapshot of the same sequence is replaced
/// atomically.
///
/// # Errors
/// [`Error::Io`] naming the file and the step that failed.
pub fn write(dir: &Path, s: &Snapshot) -> Result<PathBuf> {
    let path = dir.join(file_name(s.sequence));
    fsutil::write_atomic(&path, |w| encode_to(s, w).map(drop))?;
    Ok(path)
}

/// Reads and decodes one snapshot file.
///
/// # Errors
/// [`Error::Io`] if it cannot be read; [`Error::Corrupt`] or
/// [`Error::UnsupportedVersion`] (naming the file) if it does not decode.
pub fn read(path: &Path) -> Result<Snapshot> {
    let bytes = fs::read(path).at("read", path)?;
    decode(&bytes).map_err(|e| e.at(path))
}

/// The snapshot files in `dir` as `(sequence, path)`, oldest first.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be listed.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).at("list", dir)? {
        let entry = entry.at("list", dir)?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_file_name) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest snapshot in `dir` that reads, decodes and validates; `Ok(None)` when
/// there are no snapshot files. Corrupt newer files are skipped (and listed in
/// [`LoadedSnapshot::skipped`] and logged), never deleted or renamed. A snapshot whose
/// sequence differs from its file name's counts as corrupt.
///
/// # Errors
/// [`Error::NoValidSnapshot`] listing every file when none is readable;
/// [`Error::UnsupportedVersion`] at once for a file of another format version (falling
/// back past a newer format would silently lose its data); [`Error::Io`] when a file
/// cannot be read at all (a permission problem is not corruption).
pub fn load_latest(dir: &Path) -> Result<Option<LoadedSnapshot>> {
    let files = list(dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    let mut skipped = Vec::new();
    for (seq, path) in files.into_iter().rev() {
        let bytes = fs::read(&path).at("read", &path)?;
        let problem = match decode(&bytes) {
            Ok(snapshot) if snapshot.sequence == seq => {
                return Ok(Some(LoadedSnapshot {
                    snapshot,
                    path,
                    skipped,
                }));
            }
            Ok(snapshot) => format!("holds sequence {}, not its name's {seq}", snapshot.sequence),
            Err(e @ FormatError::UnsupportedVersion { .. }) => return Err(e.at(path)),
            Err(e) => e.to_string(),
        };
        tracing::warn!(path = %path.display(), %problem, "skipping unreadable snapshot");
        skipped.push((path, problem));
    }
    Err(Error::NoValidSnapshot {
        dir: dir.to_owned(),
        problems: skipped,
    })
}

/// Deletes all but the `keep` newest snapshot files (by sequence) and returns the
/// deleted paths. Call it only after the newest is durable. Files are judged by name
/// only: an old file is deleted whether or not it would have read.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be removed.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let files = list(dir)?;
    let excess = files.len().saturating_sub(keep);
    let mut removed = Vec::with_capacity(excess);
    for (_, path) in files.into_iter().take(excess) {
        fs::remove_file(&path).at("remove old snapshot", &path)?;
        removed.push(path);
    }
    if !removed.is_empty() {
        fsutil::sync_dir(dir)?;
    }
    Ok(removed)
}
