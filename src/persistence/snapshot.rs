//! Snapshots: a model's whole state (every partition's accumulator and position, and
//! the trainer's warm start) in one versioned, checksummed binary file, written
//! atomically, with the previous one kept as a fallback. The same bytes are the
//! export format of `GET /v1/models/{name}/snapshot`.
//!
//! Owns the snapshot format, the `snapshot-<sequence>.bin` files in a model directory,
//! choosing the newest readable one, and pruning old ones. It does not decide *when* to
//! snapshot (the model layer does) nor touch the logs (see [`super::store`]).
//!
//! # Format (version 2)
//!
//! ```text
//! "SPCASNAP" (8 bytes) · version u32 · payload · crc32 u32 of everything before it
//! payload:
//!   config      name str · dim u64 · components u64 · target_dim u64 (0 = none) ·
//!               half_life opt_f64 · optimizer str · tolerance f64 · partitions u64 (K) ·
//!               standardize u8 (0/1) · alpha f64
//!   positions   K × (sequence u64 · local u64 · batches u64)
//!   partitions  K × (count f64 · clock u64 · mean_x vec · sxx mat · mean_y opt_vec ·
//!               syx opt_mat · tr_syy f64)
//!   trainer     q opt_mat · a opt_mat · b opt_mat · previous opt_mat · total_steps u64
//! str = u32 byte length + UTF-8 · opt_f64 = u8 flag + f64 · vec = u64 len + f64s ·
//! mat = u64 rows · u64 cols · f64s column-major · opt_x = u8 flag (0/1) + x if 1
//! ```
//!
//! Version 1 (release 0.1: one accumulator, no partitions) reads as one partition whose
//! `local` is its sequence and whose clock is 0.
//!
//! The envelope is fixed for every version: magic, version, and a trailing CRC-32 of
//! all preceding bytes. So the checksum is checked first, and only an intact file of
//! another version is reported as [`FormatError::UnsupportedVersion`].
//!
//! Decoding never allocates more than the bytes present: every length is checked
//! against the remaining input before a vector is built, and the configuration (at the
//! head of the payload) is handed to the caller's check — the server's limits — before
//! any matrix is read. All integers little-endian; every f64 is its raw IEEE-754 bits,
//! so restore is bit-exact.
//!
//! # Files and crash safety
//!
//! [`write()`] writes `.snapshot-….tmp`, fsyncs it, renames it to
//! `snapshot-{sequence:020}.bin` and fsyncs the directory. [`load_latest`] takes the
//! newest file that decodes and validates; a corrupt newer one is skipped, reported and
//! left on disk (the store then renames it aside with [`quarantine`]). [`prune`] keeps
//! the newest two, so there is always a fallback; the logs must then be kept back to
//! the *older* one's positions (the store does this).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::model::config::{ModelConfig, ModelName};
use crate::pca::{Accumulator, AccumulatorParts, OptimizerKind, TrainerState};

use super::codec::{CrcWriter, Reader};
use super::error::{Error, FormatError, IoContext, Result};
use super::fsutil;

/// First bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"SPCASNAP";
/// The snapshot format this build writes (it also reads version 1).
pub const SNAPSHOT_VERSION: u32 = 2;
/// Snapshots [`prune`] keeps by default: the newest and one fallback.
pub const KEEP: usize = 2;
/// Largest sequence number or row clock a snapshot may carry: 2⁵³ − 1, the largest
/// integer every JSON client reads exactly. A model at that sequence could not take
/// another batch, so an imported state claiming more is refused.
pub const MAX_POSITION: u64 = (1 << 53) - 1;

const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".bin";

/// Where a partition's state stands in its model's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Sequence of the last batch folded into the partition (0 before any).
    pub sequence: u64,
    /// Local index of that batch in the partition's log (0 before any).
    pub local: u64,
    /// Batches folded into the partition.
    pub batches: u64,
}

/// One partition of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionState {
    /// Where the partition stands.
    pub position: Position,
    /// Its accumulator's raw moments.
    pub accumulator: AccumulatorParts,
}

/// A model's complete state at one point of each partition's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The model's creation settings.
    pub config: ModelConfig,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionState>,
    /// The optimiser's warm start.
    pub trainer: TrainerState,
}

impl Snapshot {
    /// The highest sequence any partition has folded: the snapshot's name.
    pub fn sequence(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.position.sequence)
            .max()
            .unwrap_or(0)
    }

    /// Every partition's position, in partition order.
    pub fn positions(&self) -> Vec<Position> {
        self.partitions.iter().map(|p| p.position).collect()
    }

    /// Checks the snapshot before anything is built from it and builds each
    /// partition's accumulator: the config's ranges, one partition per configured
    /// partition, positions within [`MAX_POSITION`], and each accumulator through
    /// [`Accumulator::from_parts`] (shapes before allocation, then values). The trainer
    /// state is not checked: `Trainer::with_state` drops any matrix of the wrong shape
    /// or with non-finite entries.
    ///
    /// # Errors
    /// [`FormatError::Inconsistent`] saying what does not fit.
    pub fn accumulators(&self) -> Result<Vec<Accumulator>, FormatError> {
        let bad = |s: String| FormatError::Inconsistent(s);
        self.config.validate().map_err(|e| bad(e.to_string()))?;
        if self.partitions.len() != self.config.partitions {
            return Err(bad(format!(
                "{} partition states for a model of {} partitions",
                self.partitions.len(),
                self.config.partitions
            )));
        }
        let c = &self.config;
        self.partitions
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let (pos, a) = (p.position, &p.accumulator);
                if pos.sequence > MAX_POSITION || a.clock > MAX_POSITION {
                    return Err(bad(format!(
                        "partition {k}: sequence {} or clock {} exceeds {MAX_POSITION}",
                        pos.sequence, a.clock
                    )));
                }
                if pos.local > pos.sequence || pos.batches > pos.local {
                    return Err(bad(format!(
                        "partition {k}: {} batches at local index {} cannot end at \
                         sequence {}",
                        pos.batches, pos.local, pos.sequence
                    )));
                }
                if a.dim != c.dim || a.target_dim != c.target_dim {
                    return Err(bad(format!(
                        "partition {k}: accumulator shape (dim {}, target_dim {:?}) differs \
                         from the config's (dim {}, target_dim {:?})",
                        a.dim, a.target_dim, c.dim, c.target_dim
                    )));
                }
                if a.half_life.map(f64::to_bits) != c.half_life.map(f64::to_bits) {
                    return Err(bad(format!(
                        "partition {k}: half_life {:?} differs from the config's {:?}",
                        a.half_life, c.half_life
                    )));
                }
                Accumulator::from_parts(a.clone()).map_err(|e| bad(format!("partition {k}: {e}")))
            })
            .collect()
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
    w.str(c.name.as_str())?;
    w.usize(c.dim)?;
    w.usize(c.components)?;
    w.usize(c.target_dim.unwrap_or(0))?;
    w.opt_f64(c.half_life)?;
    w.str(c.optimizer.as_str())?;
    w.f64(c.tolerance)?;
    w.usize(c.partitions)?;
    w.u8(u8::from(c.standardize))?;
    w.f64(c.alpha)?;
    for p in &s.partitions {
        w.u64(p.position.sequence)?;
        w.u64(p.position.local)?;
        w.u64(p.position.batches)?;
    }
    for p in &s.partitions {
        let a = &p.accumulator;
        w.f64(a.count)?;
        w.u64(a.clock)?;
        w.vector(&a.mean_x)?;
        w.matrix(&a.sxx)?;
        w.opt_vector(a.mean_y.as_ref())?;
        w.opt_matrix(a.syx.as_ref())?;
        w.f64(a.tr_syy)?;
    }
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

/// Decodes a snapshot of version 1 or 2, calling `check` on its configuration before
/// any matrix is read (the import path passes the server's limits here), then checks
/// positions and accumulators ([`Snapshot::accumulators`]) and returns both.
///
/// # Errors
/// [`FormatError::Corrupt`] for bad magic, checksum or structure;
/// [`FormatError::UnsupportedVersion`] for an intact file of another version;
/// [`FormatError::Inconsistent`] when `check` or the validation refuses it.
pub fn decode_checked(
    bytes: &[u8],
    check: impl FnOnce(&ModelConfig) -> std::result::Result<(), String>,
) -> Result<(Snapshot, Vec<Accumulator>), FormatError> {
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
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} \
             (truncated or damaged)"
        )));
    }
    let mut r = Reader::new(&body[MAGIC.len()..]);
    let version = r.u32("version").map_err(corrupt)?;
    if version != 1 && version != SNAPSHOT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let config = read_config(&mut r, version)?;
    check(&config).map_err(FormatError::Inconsistent)?;
    let snapshot = if version == 1 {
        read_v1_state(&mut r, config)
    } else {
        read_v2_state(&mut r, config)
    }
    .map_err(corrupt)?;
    if r.remaining() != 0 {
        return Err(corrupt(format!(
            "{} unexpected bytes after the payload",
            r.remaining()
        )));
    }
    let accumulators = snapshot.accumulators()?;
    Ok((snapshot, accumulators))
}

/// [`decode_checked`] with no check beyond the format's own.
///
/// # Errors
/// As [`decode_checked`].
pub fn decode(bytes: &[u8]) -> Result<Snapshot, FormatError> {
    decode_checked(bytes, |_| Ok(())).map(|(s, _)| s)
}

fn opt_dim(v: usize) -> Option<usize> {
    (v != 0).then_some(v)
}

fn read_config(r: &mut Reader<'_>, version: u32) -> Result<ModelConfig, FormatError> {
    let corrupt = FormatError::Corrupt;
    let name = r.str("config name").map_err(corrupt)?;
    let name = ModelName::new(name).map_err(|e| FormatError::Inconsistent(e.to_string()))?;
    let dim = r.usize("config dim").map_err(corrupt)?;
    let components = r.usize("config components").map_err(corrupt)?;
    let target_dim = opt_dim(r.usize("config target_dim").map_err(corrupt)?);
    let half_life = r.opt_f64("config half_life").map_err(corrupt)?;
    let optimizer = r.str("config optimizer").map_err(corrupt)?;
    let optimizer = OptimizerKind::parse(&optimizer)
        .ok_or_else(|| FormatError::Inconsistent(format!("unknown optimizer `{optimizer}`")))?;
    let tolerance = r.f64("config tolerance").map_err(corrupt)?;
    let (partitions, standardize, alpha) = if version == 1 {
        (1, false, crate::model::config::DEFAULT_ALPHA)
    } else {
        (
            r.usize("config partitions").map_err(corrupt)?,
            r.flag("config standardize").map_err(corrupt)?,
            r.f64("config alpha").map_err(corrupt)?,
        )
    };
    let config = ModelConfig {
        name,
        dim,
        components,
        target_dim,
        half_life,
        optimizer,
        tolerance,
        partitions,
        standardize,
        alpha,
    };
    config
        .validate()
        .map_err(|e| FormatError::Inconsistent(e.to_string()))?;
    Ok(config)
}

fn read_trainer(r: &mut Reader<'_>) -> std::result::Result<TrainerState, String> {
    Ok(TrainerState {
        q: r.opt_matrix("trainer q")?,
        a: r.opt_matrix("trainer a")?,
        b: r.opt_matrix("trainer b")?,
        previous: r.opt_matrix("trainer previous")?,
        total_steps: r.u64("trainer total_steps")?,
    })
}

fn read_v2_state(r: &mut Reader<'_>, config: ModelConfig) -> std::result::Result<Snapshot, String> {
    let k = config.partitions;
    let mut positions = Vec::with_capacity(k);
    for _ in 0..k {
        positions.push(Position {
            sequence: r.u64("sequence")?,
            local: r.u64("local index")?,
            batches: r.u64("batches")?,
        });
    }
    let mut partitions = Vec::with_capacity(k);
    for position in positions {
        let accumulator = AccumulatorParts {
            dim: config.dim,
            target_dim: config.target_dim,
            half_life: config.half_life,
            count: r.f64("count")?,
            clock: r.u64("clock")?,
            mean_x: r.vector("mean_x")?,
            sxx: r.matrix("sxx")?,
            mean_y: r.opt_vector("mean_y")?,
            syx: r.opt_matrix("syx")?,
            tr_syy: r.f64("tr_syy")?,
        };
        partitions.push(PartitionState {
            position,
            accumulator,
        });
    }
    Ok(Snapshot {
        config,
        partitions,
        trainer: read_trainer(r)?,
    })
}

fn read_v1_state(r: &mut Reader<'_>, config: ModelConfig) -> std::result::Result<Snapshot, String> {
    let sequence = r.u64("sequence")?;
    let batches = r.u64("batches")?;
    let dim = r.usize("accumulator dim")?;
    let target_dim = opt_dim(r.usize("accumulator target_dim")?);
    let half_life = r.opt_f64("accumulator half_life")?;
    let accumulator = AccumulatorParts {
        dim,
        target_dim,
        half_life,
        count: r.f64("count")?,
        mean_x: r.vector("mean_x")?,
        sxx: r.matrix("sxx")?,
        mean_y: r.opt_vector("mean_y")?,
        syx: r.opt_matrix("syx")?,
        tr_syy: r.f64("tr_syy")?,
        clock: 0,
    };
    Ok(Snapshot {
        config,
        partitions: vec![PartitionState {
            position: Position {
                sequence,
                local: sequence,
                batches,
            },
            accumulator,
        }],
        trainer: read_trainer(r)?,
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

/// Writes `s` durably into `dir` as [`file_name`]`(s.sequence())` (see the module docs)
/// and returns its path. An existing snapshot of the same sequence is replaced
/// atomically.
///
/// # Errors
/// [`Error::Io`] naming the file and the step that failed.
pub fn write(dir: &Path, s: &Snapshot) -> Result<PathBuf> {
    let path = dir.join(file_name(s.sequence()));
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
            Ok(snapshot) if snapshot.sequence() == seq => {
                return Ok(Some(LoadedSnapshot {
                    snapshot,
                    path,
                    skipped,
                }));
            }
            Ok(snapshot) => format!(
                "holds sequence {}, not its name's {seq}",
                snapshot.sequence()
            ),
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

/// Renames a corrupt snapshot to `<name>.corrupt` (or `<name>.corrupt.<n>` if taken)
/// and fsyncs the directory; returns the new path. The bytes are kept for an operator,
/// but the file no longer counts as a snapshot, so it cannot take one of the [`KEEP`]
/// places in [`prune`] nor decide where the WAL is cut. The store calls this for the
/// files [`load_latest`] skipped, once it has a readable snapshot to run from.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn quarantine(path: &Path) -> Result<PathBuf> {
    let mut n = 0u32;
    let dest = loop {
        let mut name = path.as_os_str().to_owned();
        name.push(".corrupt");
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let dest = PathBuf::from(name);
        if !dest.exists() {
            break dest;
        }
        n += 1;
    };
    fs::rename(path, &dest).at("rename corrupt snapshot aside", path)?;
    fsutil::sync_parent(&dest)?;
    Ok(dest)
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

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
