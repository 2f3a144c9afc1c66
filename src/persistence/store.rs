//! The data directory: one directory per model, created and deleted durably, and the
//! recovery of every model at startup.
//!
//! ```text
//! DATA_DIR/models/{name}/model.json              creation settings (written once)
//!                        wal.log                 batches since the older kept snapshot
//!                        snapshot-{seq:020}.bin  the newest two snapshots
//! DATA_DIR/models/.{name}.creating-{pid}-{n}/    a creation in progress (or crashed)
//! DATA_DIR/models/.{name}.deleted-{pid}-{n}/     a deletion in progress (or crashed)
//! ```
//!
//! Creation builds the whole directory under a dot-name, fsyncs it, renames it into
//! place and fsyncs `models/`: a model exists completely or not at all. Deletion renames
//! the directory to a tombstone, fsyncs `models/`, then removes the tombstone. At open,
//! dot-directories are leftovers of unacknowledged creations or acknowledged deletions
//! and are removed, as are stray temporary files inside model directories. A corrupt
//! snapshot skipped in favour of an older one is renamed to `snapshot-….bin.corrupt`
//! (kept for inspection, never deleted); when no snapshot is readable nothing is moved
//! and the open fails, naming the files.
//!
//! WAL retention: after a snapshot at sequence s₂ is durable and older ones are pruned
//! to the newest two (s₁ < s₂), the log is cut through s₁, not s₂. If the newest
//! snapshot is later found corrupt, recovery falls back to s₁ and still finds every
//! batch after it in the log. With a single snapshot the log is not cut at all.
//!
//! The store does not lock models against concurrent use: the service owns that (one
//! [`ModelStore`] per model, dropped before the model is deleted).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::config::{validate_name, ModelConfig};
use super::error::{Error, FormatError, IoContext, Result};
use super::fsutil;
use super::snapshot::{self, LoadedSnapshot, Snapshot};
use super::wal::{self, SyncMode, TailProblem, Wal, WalRecord};

/// Name of the config file in a model directory.
pub const CONFIG_FILE: &str = "model.json";
/// Name of the log in a model directory.
pub const WAL_FILE: &str = "wal.log";
/// Version of the `model.json` layout.
const CONFIG_FORMAT: u32 = 1;

/// `model.json`: the config with a format number, so it can change later.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigFile {
    format: u32,
    config: ModelConfig,
}

/// The data directory. Create and delete models through it; open it once per process.
#[derive(Debug)]
pub struct Store {
    data_dir: PathBuf,
    models_dir: PathBuf,
    sync: SyncMode,
    /// Names of the models on disk. Held across a create or delete so two of them for
    /// one name cannot interleave their renames.
    names: Mutex<BTreeSet<String>>,
}

/// Everything needed to bring one model back after a restart.
#[derive(Debug)]
pub struct RecoveredModel {
    /// The model's files, with its log open for appending.
    pub store: ModelStore,
    /// The newest readable snapshot (and any newer corrupt ones skipped), or `None`
    /// when the model has never been snapshotted: start from an empty accumulator.
    pub snapshot: Option<LoadedSnapshot>,
    /// Logged batches after the snapshot's sequence, in order: apply them with
    /// [`WalRecord::apply_to`] (skipping any the accumulator rejects, as the live path
    /// did) to reach the state at the crash.
    pub replay: Vec<WalRecord>,
    /// Where the corrupt snapshots listed in `snapshot.skipped` were renamed to
    /// (`snapshot-….bin.corrupt`), so they no longer count as snapshots.
    pub quarantined: Vec<PathBuf>,
    /// A torn or corrupt log tail that was cut off during recovery.
    pub wal_tail: Option<TailProblem>,
    /// The first break in consecutive sequences from the snapshot (or from 1) through
    /// the replayed records: batches that were acknowledged but are gone.
    pub sequence_gap: Option<SequenceGap>,
}

impl RecoveredModel {
    /// The sequence the model has reached: the last replayed record's, else the
    /// snapshot's, else 0. The next batch gets this plus one.
    pub fn last_sequence(&self) -> u64 {
        self.replay
            .last()
            .map(|r| r.sequence)
            .or_else(|| self.snapshot.as_ref().map(|s| s.snapshot.sequence))
            .unwrap_or(0)
    }
}

/// A break in the sequence numbers found during recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceGap {
    /// The sequence that should have come next.
    pub expected: u64,
    /// The sequence found instead.
    pub found: u64,
}

/// Outcome of [`ModelStore::write_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The new snapshot file.
    pub path: PathBuf,
    /// Older snapshot files deleted.
    pub pruned: Vec<PathBuf>,
    /// Log records dropped because the older kept snapshot covers them.
    pub wal_records_dropped: usize,
}

/// One model's files: its config, its open log and its snapshots.
#[derive(Debug)]
pub struct ModelStore {
    config: ModelConfig,
    dir: PathBuf,
    wal: Wal,
    /// Serialises snapshot writes, pruning and the log cut that follows them.
    snapshots: Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) `data_dir`, finishes or discards interrupted creates
    /// and deletes, and recovers every model: newest readable snapshot, log opened with
    /// its tail repaired, records to replay. Models come back sorted by name.
    ///
    /// Any model that cannot be recovered (unreadable `model.json`, all snapshots
    /// corrupt, a snapshot of a newer format) fails the whole open, naming the file:
    /// serving without a model that exists on disk would let a client recreate it over
    /// data an operator may still rescue.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`], [`Error::NoValidSnapshot`],
    /// [`Error::UnsupportedVersion`].
    pub fn open(
        data_dir: impl Into<PathBuf>,
        sync: SyncMode,
    ) -> Result<(Self, Vec<RecoveredModel>)> {
        let data_dir = data_dir.into();
        let models_dir = data_dir.join("models");
        if !models_dir.is_dir() {
            fs::create_dir_all(&models_dir).at("create", &models_dir)?;
            fsutil::sync_parent(&models_dir)?;
            fsutil::sync_parent(&data_dir)?;
        }
        let mut recovered = Vec::new();
        for entry in fs::read_dir(&models_dir).at("list", &models_dir)? {
            let entry = entry.at("list", &models_dir)?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "ignoring non-UTF-8 entry in models/");
                continue;
            };
            if !entry.file_type().at("stat", &path)?.is_dir() {
                tracing::warn!(path = %path.display(), "ignoring a file in models/");
                continue;
            }
            if name.starts_with('.') {
                if name.contains(".creating-") || name.contains(".deleted-") {
                    tracing::info!(path = %path.display(), "removing an interrupted create or delete");
                    fs::remove_dir_all(&path).at("remove", &path)?;
                } else {
                    tracing::warn!(path = %path.display(), "ignoring unknown hidden directory");
                }
                continue;
            }
            if validate_name(&name).is_err() {
                tracing::warn!(path = %path.display(), "ignoring directory with an invalid model name");
                continue;
            }
            recovered.push(recover_model(&path, &name, sync)?);
        }
        fsutil::sync_dir(&models_dir)?;
        recovered.sort_by(|a, b| a.store.config.name.cmp(&b.store.config.name));
        let names = recovered
            .iter()
            .map(|m| m.store.config.name.clone())
            .collect();
        let store = Self {
            data_dir,
            models_dir,
            sync,
            names: Mutex::new(names),
        };
        Ok((store, recovered))
    }

    /// Creates a model durably: when this returns, the model survives a crash.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; [`Error::ModelExists`]; [`Error::Io`].
    pub fn create(&self, config: &ModelConfig) -> Result<ModelStore> {
        config.validate()?;
        let mut names = self.lock_names()?;
        let dir = self.models_dir.join(&config.name);
        if names.contains(&config.name) || dir.exists() {
            return Err(Error::ModelExists {
                name: config.name.clone(),
            });
        }
        let staging = self
            .models_dir
            .join(format!(".{}.creating-{}", config.name, unique()));
        let built = (|| -> Result<()> {
            fs::create_dir(&staging).at("create", &staging)?;
            let file = ConfigFile {
                format: CONFIG_FORMAT,
                config: config.clone(),
            };
            fsutil::write_atomic(&staging.join(CONFIG_FILE), |w| {
                serde_json::to_writer_pretty(&mut *w, &file).map_err(std::io::Error::other)
            })?;
            wal::create_empty(&staging.join(WAL_FILE))?;
            fs::rename(&staging, &dir).at("rename into place", &dir)?;
            fsutil::sync_dir(&self.models_dir)
        })();
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&staging); // best effort; open removes leftovers
            return Err(e);
        }
        // On disk now, whatever happens next: record it before opening the log.
        names.insert(config.name.clone());
        let (wal, _) = Wal::open(dir.join(WAL_FILE), self.sync)?;
        Ok(ModelStore {
            config: config.clone(),
            dir,
            wal,
            snapshots: Mutex::new(()),
        })
    }

    /// Deletes a model durably: when this returns, it stays deleted after a crash.
    /// The caller must drop (and stop using) the model's [`ModelStore`] first.
    ///
    /// # Errors
    /// [`Error::ModelNotFound`]; [`Error::InvalidConfig`] for a name that cannot be a
    /// model; [`Error::Io`].
    pub fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let mut names = self.lock_names()?;
        let dir = self.models_dir.join(name);
        if !dir.is_dir() {
            return Err(Error::ModelNotFound {
                name: name.to_owned(),
            });
        }
        let tombstone = self
            .models_dir
            .join(format!(".{name}.deleted-{}", unique()));
        fs::rename(&dir, &tombstone).at("rename to tombstone", &dir)?;
        fsutil::sync_dir(&self.models_dir)?;
        names.remove(name);
        drop(names);
        if let Err(e) = fs::remove_dir_all(&tombstone) {
            // The delete is already durable; the next open finishes the removal.
            tracing::warn!(path = %tombstone.display(), error = %e, "could not remove tombstone");
        }
        Ok(())
    }

    /// Names of the models on disk, sorted.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a thread panicked inside a create or delete.
    pub fn model_names(&self) -> Result<Vec<String>> {
        Ok(self.lock_names()?.iter().cloned().collect())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn lock_names(&self) -> Result<MutexGuard<'_, BTreeSet<String>>> {
        self.names.lock().map_err(|_| Error::Corrupt {
            path: self.models_dir.clone(),
            reason: "a thread panicked during a create or delete; restart to rescan".into(),
        })
    }
}

impl ModelStore {
    /// The model's creation settings.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model's write-ahead log: [`Wal::write`] under the model lock, [`Wal::wait`]
    /// outside it (see the [`super::wal`] docs).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Writes a snapshot durably, prunes to the newest two, and cuts the log through the
    /// older of the two (see the module docs). The snapshot is validated first, so a
    /// file that could not be read back is never written.
    ///
    /// Call it with a snapshot taken under the model lock (cloning the parts is cheap)
    /// and write outside the lock; snapshots of one model must not go backwards in
    /// sequence.
    ///
    /// # Errors
    /// [`Error::InvalidSnapshot`] if the snapshot is inconsistent, belongs to another
    /// config, or is older than the newest on disk; [`Error::Io`].
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<SnapshotWritten> {
        snap.validate()?;
        if snap.config != self.config {
            return Err(FormatError::Inconsistent(format!(
                "snapshot config {:?} differs from the model's {:?}",
                snap.config, self.config
            ))
            .into());
        }
        let _guard = self.snapshots.lock().map_err(|_| Error::Corrupt {
            path: self.dir.clone(),
            reason: "a thread panicked while writing a snapshot".into(),
        })?;
        if let Some((newest, _)) = snapshot::list(&self.dir)?.last() {
            if snap.sequence < *newest {
                return Err(FormatError::Inconsistent(format!(
                    "snapshot sequence {} is behind the newest on disk, {newest}",
                    snap.sequence
                ))
                .into());
            }
        }
        let path = snapshot::write(&self.dir, snap)?;
        let pruned = snapshot::prune(&self.dir, snapshot::KEEP)?;
        let kept = snapshot::list(&self.dir)?;
        let wal_records_dropped = match kept.len() {
            0 | 1 => 0,
            n => self.wal.truncate_through(kept[n - 2].0)?,
        };
        Ok(SnapshotWritten {
            path,
            pruned,
            wal_records_dropped,
        })
    }
}

/// `{pid}-{counter}`: unique among this process's staging and tombstone names, and
/// distinct from any earlier process's leftovers (which open removes anyway).
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn read_config(dir: &Path, name: &str) -> Result<ModelConfig> {
    let path = dir.join(CONFIG_FILE);
    let bytes = fs::read(&path).at("read", &path)?;
    let corrupt = |reason: String| Error::Corrupt {
        path: path.clone(),
        reason,
    };
    let file: ConfigFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.format != CONFIG_FORMAT {
        return Err(Error::UnsupportedVersion {
            path: path.clone(),
            version: file.format,
            supported: CONFIG_FORMAT,
        });
    }
    file.config.validate().map_err(|e| corrupt(e.to_string()))?;
    if file.config.name != name {
        return Err(corrupt(format!(
            "names model `{}` but lives in directory `{name}`",
            file.config.name
        )));
    }
    Ok(file.config)
}

fn recover_model(dir: &Path, name: &str, sync: SyncMode) -> Result<RecoveredModel> {
    let config = read_config(dir, name)?;
    // Temporary files are writes that never completed (never acknowledged).
    for entry in fs::read_dir(dir).at("list", dir)? {
        let entry = entry.at("list", dir)?;
        if entry.file_name().to_str().is_some_and(fsutil::is_temp_name) {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing an interrupted write");
            fs::remove_file(&path).at("remove", &path)?;
        }
    }
    let snapshot = snapshot::load_latest(dir)?;
    if let Some(loaded) = &snapshot {
        if loaded.snapshot.config != config {
            return Err(Error::Corrupt {
                path: loaded.path.clone(),
                reason: format!("its config differs from {CONFIG_FILE}'s"),
            });
        }
    }
    // Corrupt snapshots newer than the one we run from are renamed aside: left in
    // place they would hold one of the two kept places and decide where the log is cut,
    // leaving no real fallback.
    let mut quarantined = Vec::new();
    for (path, _) in snapshot.iter().flat_map(|s| &s.skipped) {
        let moved = snapshot::quarantine(path)?;
        tracing::warn!(from = %path.display(), to = %moved.display(), "moved corrupt snapshot aside");
        quarantined.push(moved);
    }
    let (wal, recovery) = Wal::open(dir.join(WAL_FILE), sync)?;
    let after = snapshot.as_ref().map_or(0, |s| s.snapshot.sequence);
    let replay: Vec<WalRecord> = recovery
        .records
        .into_iter()
        .filter(|r| r.sequence > after)
        .collect();
    let mut expected = after + 1;
    let mut sequence_gap = None;
    for r in &replay {
        if r.sequence != expected {
            sequence_gap = Some(SequenceGap {
                expected,
                found: r.sequence,
            });
            break;
        }
        expected = r.sequence + 1;
    }
    if let Some(tail) = &recovery.torn_tail {
        tracing::warn!(model = name, offset = tail.offset, reason = %tail.reason, "cut off WAL tail");
    }
    Ok(RecoveredModel {
        store: ModelStore {
            config,
            dir: dir.to_owned(),
            wal,
            snapshots: Mutex::new(()),
        },
        snapshot,
        replay,
        quarantined,
        wal_tail: recovery.torn_tail,
        sequence_gap,
    })
}
