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
//! The envelope is fixed for every version: magic, version, and a trailing CRC-32 of
//! all preceding bytes. So the checksum is checked first, and only an intact file of
//! another version is reported as [`FormatError::UnsupportedVersion`]; a damaged one
//! (whose version field may be garbage) is corrupt and can be fallen back from.
//!
//! All integers little-endian; every f64 is its raw IEEE-754 bits, so restore is
//! bit-exact. A 784-dim model's scatter is 4.9 MB: writing streams through a
//! `BufWriter` and a checksumming writer, with no intermediate buffer of the whole file.
//! Reading loads the file (one allocation of its size) and decodes from the slice.
//!
//! # Files and crash safety
//!
//! [`write()`] writes `.snapshot-….tmp`, fsyncs it, renames it to
//! `snapshot-{sequence:020}.bin` and fsyncs the directory. A crash leaves at worst a
//! stray temporary file, which [`load_latest`] never reads. [`load_latest`] takes the
//! newest file that decodes and validates; a corrupt newer one is skipped, reported and
//! left on disk untouched (the store then renames it aside with [`quarantine`]). [`prune`] keeps the newest two, so there is always a
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
/// [`FormatError::Corrupt`] for bad magic, checksum or structure;
/// [`FormatError::UnsupportedVersion`] for an intact file of another format version;
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
    let mut r = Reader::new(&body[MAGIC.len()..]);
    let version = r.u32("version").map_err(corrupt)?;
    if version != SNAPSHOT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            version,
            supported: SNAPSHOT_VERSION,
        });
    }
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
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use nalgebra::DMatrix;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::fs::OpenOptions;

    fn config(dim: usize, target_dim: Option<usize>, half_life: Option<f64>) -> ModelConfig {
        ModelConfig {
            name: "m-1".into(),
            dim,
            components: 2.min(target_dim.unwrap_or(dim)),
            target_dim,
            half_life,
            optimizer: "subspace".into(),
            tolerance: 1e-6,
        }
    }

    /// A snapshot of a real accumulator fed `batches` random batches, with a trainer
    /// state holding some matrices and not others.
    fn sample(
        dim: usize,
        target_dim: Option<usize>,
        half_life: Option<f64>,
        sequence: u64,
    ) -> Snapshot {
        let mut rng = StdRng::seed_from_u64(sequence ^ dim as u64);
        let mut acc = Accumulator::new(dim, target_dim, half_life).unwrap();
        for _ in 0..3 {
            let rows = 5;
            let x: Vec<f64> = (0..rows * dim)
                .map(|_| rng.gen_range(-3.0..3.0) + 10.0)
                .collect();
            let y: Option<Vec<f64>> =
                target_dim.map(|m| (0..rows * m).map(|_| rng.gen::<f64>()).collect());
            acc.update(&x, y.as_deref()).unwrap();
        }
        let mut random = |r, c| DMatrix::from_fn(r, c, |_, _| rng.gen::<f64>() - 0.5);
        let trainer = TrainerState {
            q: Some(random(dim, 2)),
            a: None,
            b: Some(random(2, dim)),
            previous: Some(random(dim, 1)),
            total_steps: 42,
        };
        Snapshot {
            config: config(dim, target_dim, half_life),
            sequence,
            batches: 3,
            accumulator: acc.to_parts(),
            trainer,
        }
    }

    fn f64_bits<'a>(it: impl Iterator<Item = &'a f64>) -> Vec<u64> {
        it.map(|v| v.to_bits()).collect()
    }

    /// Every f64 in the snapshot, as bits, in a fixed order.
    fn all_bits(s: &Snapshot) -> Vec<u64> {
        let a = &s.accumulator;
        let t = &s.trainer;
        let mut v = vec![
            a.count.to_bits(),
            a.tr_syy.to_bits(),
            s.config.tolerance.to_bits(),
        ];
        v.extend(f64_bits(a.mean_x.iter()));
        v.extend(f64_bits(a.sxx.iter()));
        v.extend(f64_bits(a.mean_y.iter().flatten()));
        v.extend(f64_bits(a.syx.iter().flatten()));
        for m in [&t.q, &t.a, &t.b, &t.previous] {
            v.push(
                m.as_ref()
                    .map_or(u64::MAX, |m| (m.nrows() * 1000 + m.ncols()) as u64),
            );
            v.extend(f64_bits(m.iter().flatten()));
        }
        v
    }

    /// Sets the version field and re-seals the checksum, as a future build would write.
    fn with_version(mut bytes: Vec<u8>, version: u32) -> Vec<u8> {
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn encode_then_decode_is_bit_exact() {
        for (target_dim, half_life) in [(None, None), (Some(3), Some(250.5)), (None, Some(1e-3))] {
            let mut s = sample(6, target_dim, half_life, 17);
            s.accumulator.sxx[(0, 5)] = -0.0; // upper triangle is not authoritative, but kept
            s.accumulator.sxx[(1, 5)] = f64::MIN_POSITIVE / 7.0;

            let back = decode(&encode(&s).unwrap()).unwrap();

            assert_eq!(back, s);
            assert_eq!(all_bits(&back), all_bits(&s));
        }
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected() {
        let bytes = encode(&sample(3, None, None, 5)).unwrap();

        for pos in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[pos] ^= 0x10;
            assert!(
                decode(&damaged).is_err(),
                "flip at byte {pos} of {} went unnoticed",
                bytes.len()
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncation to {len} bytes went unnoticed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing garbage went unnoticed");
    }

    #[test]
    fn an_unknown_version_is_a_clear_error() {
        let bytes = with_version(encode(&sample(3, None, None, 5)).unwrap(), 2);

        let err = decode(&bytes).unwrap_err();

        assert_eq!(
            err,
            FormatError::UnsupportedVersion {
                version: 2,
                supported: 1
            }
        );
        assert!(err.to_string().contains("format version 2"), "{err}");
    }

    #[test]
    fn an_inconsistent_snapshot_is_rejected_even_with_a_good_checksum() {
        let mut wrong_dim = sample(4, None, None, 5);
        wrong_dim.config.dim = 5;
        let mut wrong_half_life = sample(4, None, Some(100.0), 5);
        wrong_half_life.config.half_life = Some(100.5);
        let mut bad_shape = sample(4, None, None, 5);
        bad_shape.accumulator.sxx = DMatrix::zeros(4, 3);
        let mut not_finite = sample(4, None, None, 5);
        not_finite.accumulator.mean_x[2] = f64::NAN;
        let mut bad_config = sample(4, None, None, 5);
        bad_config.config.optimizer = "adam".into();

        for s in [
            wrong_dim,
            wrong_half_life,
            bad_shape,
            not_finite,
            bad_config,
        ] {
            let err = decode(&encode(&s).unwrap()).unwrap_err();
            assert!(matches!(err, FormatError::Inconsistent(_)), "{err}");
        }
    }

    #[test]
    fn a_784_dimensional_snapshot_streams_to_a_file_and_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample(784, None, None, 9);

        let path = write(dir.path(), &s).unwrap();

        assert_eq!(
            path.file_name().unwrap(),
            "snapshot-00000000000000000009.bin"
        );
        let size = fs::metadata(&path).unwrap().len();
        assert!(size > 784 * 784 * 8, "{size} bytes");
        let back = read(&path).unwrap();
        assert_eq!(all_bits(&back), all_bits(&s));
    }

    #[test]
    fn a_corrupt_newest_snapshot_falls_back_to_the_previous_and_is_left_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample(3, None, None, 5)).unwrap();
        let newest = write(dir.path(), &sample(3, None, None, 9)).unwrap();
        let mut bytes = fs::read(&newest).unwrap();
        bytes[40] ^= 0xff;
        fs::write(&newest, &bytes).unwrap();

        let loaded = load_latest(dir.path()).unwrap().unwrap();

        assert_eq!(loaded.snapshot.sequence, 5);
        assert_eq!(loaded.skipped.len(), 1);
        assert_eq!(loaded.skipped[0].0, newest);
        assert!(
            loaded.skipped[0].1.contains("checksum"),
            "{}",
            loaded.skipped[0].1
        );
        assert_eq!(
            fs::read(&newest).unwrap(),
            bytes,
            "corrupt file left as it was"
        );
    }

    #[test]
    fn when_every_snapshot_is_corrupt_the_error_names_each_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), &sample(3, None, None, 5)).unwrap();
        let b = write(dir.path(), &sample(3, None, None, 9)).unwrap();
        fs::write(&a, b"SPCASNAP garbage").unwrap();
        let len = fs::metadata(&b).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&b)
            .unwrap()
            .set_len(len / 2)
            .unwrap();

        let err = load_latest(dir.path()).unwrap_err();

        let msg = err.to_string();
        assert!(matches!(err, Error::NoValidSnapshot { ref problems, .. } if problems.len() == 2));
        assert!(msg.contains("snapshot-00000000000000000005.bin"), "{msg}");
        assert!(msg.contains("snapshot-00000000000000000009.bin"), "{msg}");
    }

    #[test]
    fn a_snapshot_of_a_newer_format_stops_loading_instead_of_falling_back() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample(3, None, None, 5)).unwrap();
        let newest = write(dir.path(), &sample(3, None, None, 9)).unwrap();
        fs::write(&newest, with_version(fs::read(&newest).unwrap(), 3)).unwrap();

        let err = load_latest(dir.path()).unwrap_err();

        assert!(
            matches!(err, Error::UnsupportedVersion { version: 3, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("snapshot-00000000000000000009.bin"),
            "{err}"
        );
    }

    #[test]
    fn a_temp_file_left_by_a_crash_before_rename_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample(3, None, None, 5)).unwrap();
        // Simulate a crash mid-write of snapshot 9: its temporary file, half written.
        let full = encode(&sample(3, None, None, 9)).unwrap();
        let tmp = fsutil::temp_sibling(&dir.path().join(file_name(9)));
        fs::write(&tmp, &full[..full.len() / 2]).unwrap();

        let loaded = load_latest(dir.path()).unwrap().unwrap();

        assert_eq!(loaded.snapshot.sequence, 5);
        assert!(loaded.skipped.is_empty(), "a temp file is not a snapshot");
    }

    #[test]
    fn a_snapshot_whose_contents_disagree_with_its_name_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample(3, None, None, 5)).unwrap();
        let nine = write(dir.path(), &sample(3, None, None, 9)).unwrap();
        fs::rename(&nine, dir.path().join(file_name(12))).unwrap();

        let loaded = load_latest(dir.path()).unwrap().unwrap();

        assert_eq!(loaded.snapshot.sequence, 5);
        assert!(
            loaded.skipped[0].1.contains("sequence 9"),
            "{:?}",
            loaded.skipped
        );
    }

    #[test]
    fn prune_keeps_the_two_newest() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [3, 10, 7, 12] {
            write(dir.path(), &sample(2, None, None, seq)).unwrap();
        }

        let removed = prune(dir.path(), KEEP).unwrap();

        assert_eq!(removed.len(), 2);
        let left: Vec<u64> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(left, vec![10, 12]);
        assert_eq!(
            load_latest(dir.path()).unwrap().unwrap().snapshot.sequence,
            12
        );
    }

    #[test]
    fn an_empty_directory_has_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_latest(dir.path()).unwrap().is_none());
        assert_eq!(parse_file_name("snapshot-1.bin"), None);
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
    }
}
