//! The data directory: one directory per model, created, replaced and deleted durably,
//! and the recovery of every model at start-up.
//!
//! ```text
//! DATA_DIR/models/{name}/model.json              creation settings (written once)
//!                        partition-{k}.log       partition k's batches since the older kept snapshot
//!                        snapshot-{seq:020}.bin  the newest two snapshots (all partitions)
//! DATA_DIR/models/.{name}.creating-…/            a creation or import in progress (or crashed)
//! DATA_DIR/models/.{name}.replaced-…/            the model an import is replacing
//! DATA_DIR/models/.{name}.deleted-…/             a deletion in progress (or crashed)
//! ```
//!
//! Creation builds the whole directory under a dot-name, fsyncs it, renames it into
//! place and fsyncs `models/`: a model exists completely or not at all. An import builds
//! the new directory the same way, then renames the old one to `.replaced-…`, the new one
//! into place, fsyncs `models/` and removes the old one; a crash between the two renames
//! leaves the old model under `.replaced-…`, which the next start renames back, so a
//! failed import leaves the old model exactly as it was. Deletion renames the directory
//! to a tombstone, fsyncs `models/`, then removes the tombstone.
//!
//! Logs are cut only through the *older* of the two kept snapshots, partition by
//! partition, so a corrupt newest snapshot can still fall back. A directory written by
//! release 0.1 (`wal.log`, snapshot format v1) is migrated at start-up to one partition
//! (see [`super::migrate`]).
//!
//! Recovery refuses to guess: a partition log that is missing, shorter than a header,
//! out of order, or that starts after the newest snapshot ends (acknowledged batches
//! missing) holds the model back ([`HeldModel`]) unless the operator accepts the loss.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::model::config::{ModelConfig, ModelName};
use crate::pca::Accumulator;

use super::error::{Error, FormatError, IoContext, Result};
use super::fsutil;
use super::log::{SyncMode, Wal};
use super::partition_log::PartitionLog;
use super::record::LogRecord;
use super::recovery::TailProblem;
use super::snapshot::{self, Position, Snapshot};

/// The settings file in each model directory.
pub const CONFIG_FILE: &str = "model.json";
/// Release 0.1's single log, migrated at start-up.
pub const V1_LOG_FILE: &str = "wal.log";
const CONFIG_FORMAT: u32 = 1;

/// The file of partition `k`'s log.
pub fn log_file(k: usize) -> String {
    format!("partition-{k}.log")
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigFile {
    format: u32,
    config: ModelConfig,
}

/// The data directory. Creation, import and deletion are serialised by `names`.
#[derive(Debug)]
pub struct Store {
    data_dir: PathBuf,
    models_dir: PathBuf,
    sync: SyncMode,
    /// Names with a directory on disk (held-back models included).
    names: Mutex<BTreeSet<String>>,
}

/// One model's files: its directory, one log per partition, and which snapshots are on
/// disk (with their positions, to know where each log may be cut).
#[derive(Debug)]
pub struct ModelFiles {
    config: ModelConfig,
    dir: PathBuf,
    logs: Vec<Arc<Wal>>,
    /// Snapshots on disk, oldest first, with every partition's position. Also
    /// serialises snapshot writes of this model.
    kept: Mutex<Vec<(u64, Vec<Position>)>>,
}

/// A model recovered whole.
#[derive(Debug)]
pub struct RecoveredModel {
    /// Its files, open.
    pub files: ModelFiles,
    /// The newest readable snapshot and its accumulators, if any.
    pub snapshot: Option<(Snapshot, Vec<Accumulator>)>,
    /// Per partition, the log records after the snapshot's position, in order.
    pub replay: Vec<Vec<LogRecord>>,
    /// Corrupt snapshots renamed aside.
    pub quarantined: Vec<PathBuf>,
    /// Torn or corrupt log tails cut off (saved aside).
    pub torn_tails: Vec<TailProblem>,
    /// Problems the operator accepted with `accept_data_loss` (empty otherwise).
    pub accepted_losses: Vec<String>,
    /// Whether the directory was migrated from release 0.1's format.
    pub migrated: bool,
}

/// A model that recovery refused to serve: what is missing, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldModel {
    /// The model's directory name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// What recovery found missing or damaged.
    pub reason: String,
}

/// What a snapshot write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The new file.
    pub path: PathBuf,
    /// Old snapshot files removed.
    pub pruned: Vec<PathBuf>,
    /// Log records dropped, over all partitions.
    pub records_dropped: usize,
}

impl Store {
    /// Opens (creating if needed) `data_dir`, finishes or undoes interrupted creates,
    /// imports and deletes, migrates release-0.1 directories, and recovers every model.
    /// Models whose data is incomplete are returned as [`HeldModel`]s instead, unless
    /// `accept_data_loss`, in which case they are recovered with what is left and the
    /// problem is reported in [`RecoveredModel::accepted_losses`].
    ///
    /// # Errors
    /// [`Error::Io`] on the data directory itself. Problems inside a model directory
    /// hold that model back instead of failing.
    pub fn open(
        data_dir: impl Into<PathBuf>,
        sync: SyncMode,
        accept_data_loss: bool,
    ) -> Result<(Self, Vec<RecoveredModel>, Vec<HeldModel>)> {
        let data_dir = data_dir.into();
        let models_dir = data_dir.join("models");
        if !models_dir.is_dir() {
            fs::create_dir_all(&models_dir).at("create", &models_dir)?;
            fsutil::sync_parent(&models_dir)?;
            fsutil::sync_parent(&data_dir)?;
        }
        finish_interrupted(&models_dir)?;
        let mut recovered = Vec::new();
        let mut held = Vec::new();
        let mut names = BTreeSet::new();
        for entry in fs::read_dir(&models_dir).at("list", &models_dir)? {
            let entry = entry.at("list", &models_dir)?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "ignoring non-UTF-8 entry in models/");
                continue;
            };
            if name.starts_with('.') || !entry.file_type().at("stat", &path)?.is_dir() {
                tracing::warn!(path = %path.display(), "ignoring an unknown entry in models/");
                continue;
            }
            if ModelName::new(name.as_str()).is_err() {
                tracing::warn!(path = %path.display(), "ignoring a directory with an invalid model name");
                continue;
            }
            names.insert(name.clone());
            match recover_model(&path, &name, sync, accept_data_loss) {
                Ok(r) => recovered.push(r),
                Err(e) => held.push(HeldModel {
                    name,
                    dir: path,
                    reason: e.to_string(),
                }),
            }
        }
        fsutil::sync_dir(&models_dir)?;
        recovered.sort_by(|a, b| a.files.config.name.cmp(&b.files.config.name));
        held.sort_by(|a, b| a.name.cmp(&b.name));
        let store = Self {
            data_dir,
            models_dir,
            sync,
            names: Mutex::new(names),
        };
        Ok((store, recovered, held))
    }

    /// Creates a model's directory durably, with one empty log per partition.
    ///
    /// # Errors
    /// [`Error::ModelExists`]; [`Error::Io`].
    pub fn create(&self, config: &ModelConfig) -> Result<ModelFiles> {
        let mut names = self.lock_names()?;
        let name = config.name.as_str();
        let dir = self.models_dir.join(name);
        if names.contains(name) || dir.exists() {
            return Err(Error::ModelExists {
                name: name.to_owned(),
            });
        }
        let staging = self.build_aside(config, None)?;
        if let Err(e) = fs::rename(&staging, &dir)
            .at("rename into place", &dir)
            .and_then(|()| fsutil::sync_dir(&self.models_dir))
        {
            let _ = fs::remove_dir_all(&staging); // best effort; open removes leftovers
            return Err(e);
        }
        names.insert(name.to_owned());
        open_files(config.clone(), &dir, self.sync, Vec::new())
    }

    /// Installs `snap` as the model of its name, durably and atomically: the new
    /// directory (settings, empty logs starting after the snapshot's positions, the
    /// snapshot) is built and fsynced aside, then swapped in. Until the swap the old
    /// model's directory is untouched; a failure at any point leaves it exactly as it
    /// was, and a crash between the renames is undone at the next start.
    ///
    /// # Errors
    /// [`Error::Io`] (then nothing changed on disk).
    pub fn install(&self, snap: &Snapshot) -> Result<ModelFiles> {
        let mut names = self.lock_names()?;
        let name = snap.config.name.as_str();
        let dir = self.models_dir.join(name);
        let staging = self.build_aside(&snap.config, Some(snap))?;
        let swapped = (|| -> Result<Option<PathBuf>> {
            let old = if dir.exists() {
                let old = self
                    .models_dir
                    .join(format!(".{name}.replaced-{}", unique()));
                fs::rename(&dir, &old).at("rename aside", &dir)?;
                Some(old)
            } else {
                None
            };
            if let Err(e) = fs::rename(&staging, &dir).at("rename into place", &dir) {
                if let Some(old) = &old {
                    // Put the old model back; if even that fails, the next start does.
                    let _ = fs::rename(old, &dir);
                }
                return Err(e);
            }
            fsutil::sync_dir(&self.models_dir)?;
            Ok(old)
        })();
        let old = match swapped {
            Ok(old) => old,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging); // best effort; open removes leftovers
                return Err(e);
            }
        };
        names.insert(name.to_owned());
        drop(names);
        if let Some(old) = old {
            if let Err(e) = fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove a replaced model; the next start does");
            }
        }
        let kept = vec![(snap.sequence(), snap.positions())];
        open_files(snap.config.clone(), &dir, self.sync, kept)
    }

    /// Deletes a model's directory durably (tombstone rename, fsync, remove).
    ///
    /// # Errors
    /// [`Error::ModelNotFound`]; [`Error::Io`].
    pub fn delete(&self, name: &str) -> Result<()> {
        let mut names = self.lock_names()?;
        let dir = self.models_dir.join(name);
        if ModelName::new(name).is_err() || !dir.is_dir() {
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

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Builds a model directory under a dot-name: settings, one empty log per
    /// partition (starting after `snap`'s positions, if given) and `snap` itself.
    fn build_aside(&self, config: &ModelConfig, snap: Option<&Snapshot>) -> Result<PathBuf> {
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
            for k in 0..config.partitions {
                let first = snap.map_or(1, |s| s.partitions[k].position.local + 1);
                Wal::create_file(&staging.join(log_file(k)), k as u32, first)?;
            }
            if let Some(s) = snap {
                snapshot::write(&staging, s)?;
            }
            fsutil::sync_dir(&staging)
        })();
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&staging); // best effort; open removes leftovers
            return Err(e);
        }
        Ok(staging)
    }

    fn lock_names(&self) -> Result<MutexGuard<'_, BTreeSet<String>>> {
        self.names.lock().map_err(|_| Error::Corrupt {
            path: self.models_dir.clone(),
            reason: "a thread panicked during a create or delete; restart to rescan".into(),
        })
    }
}

impl ModelFiles {
    /// The model's settings.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partitions' logs, in partition order.
    pub fn logs(&self) -> Vec<Arc<dyn PartitionLog>> {
        self.logs
            .iter()
            .map(|l| Arc::clone(l) as Arc<dyn PartitionLog>)
            .collect()
    }

    /// Writes `snap` (which must not be behind the newest snapshot on disk), keeps the
    /// newest [`snapshot::KEEP`], and cuts each partition's log through the older kept
    /// snapshot's position for that partition.
    ///
    /// # Errors
    /// [`Error::InvalidSnapshot`] for a snapshot of another model or behind the newest;
    /// [`Error::Io`].
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<SnapshotWritten> {
        if snap.config != self.config {
            return Err(FormatError::Inconsistent(format!(
                "snapshot config {:?} differs from the model's {:?}",
                snap.config, self.config
            ))
            .into());
        }
        let mut kept = self.kept.lock().map_err(|_| Error::Corrupt {
            path: self.dir.clone(),
            reason: "a thread panicked while writing a snapshot".into(),
        })?;
        let sequence = snap.sequence();
        if let Some((newest, _)) = kept.last() {
            if sequence < *newest {
                return Err(FormatError::Inconsistent(format!(
                    "snapshot sequence {sequence} is behind the newest on disk, {newest}"
                ))
                .into());
            }
        }
        let path = snapshot::write(&self.dir, snap)?;
        kept.retain(|(s, _)| *s != sequence);
        kept.push((sequence, snap.positions()));
        let pruned = snapshot::prune(&self.dir, snapshot::KEEP)?;
        let excess = kept.len().saturating_sub(snapshot::KEEP);
        kept.drain(..excess);
        let mut records_dropped = 0;
        if kept.len() >= 2 {
            let older = &kept[kept.len() - 2].1;
            for (log, pos) in self.logs.iter().zip(older) {
                records_dropped += log.truncate_through(pos.local)?;
            }
        }
        Ok(SnapshotWritten {
            path,
            pruned,
            records_dropped,
        })
    }
}

fn open_files(
    config: ModelConfig,
    dir: &Path,
    sync: SyncMode,
    kept: Vec<(u64, Vec<Position>)>,
) -> Result<ModelFiles> {
    let logs = (0..config.partitions)
        .map(|k| Wal::open(dir.join(log_file(k)), k as u32, sync).map(|(w, _)| Arc::new(w)))
        .collect::<Result<Vec<_>>>()?;
    Ok(ModelFiles {
        config,
        dir: dir.to_owned(),
        logs,
        kept: Mutex::new(kept),
    })
}

/// Undoes or finishes what a crash interrupted: an import whose old directory was
/// renamed aside but whose new one never arrived is rolled back; every other dot
/// directory (creations and imports never acknowledged, deletions acknowledged) is
/// removed.
fn finish_interrupted(models_dir: &Path) -> Result<()> {
    for entry in fs::read_dir(models_dir).at("list", models_dir)? {
        let entry = entry.at("list", models_dir)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        if let Some((model, _)) = rest.split_once(".replaced-") {
            let dir = models_dir.join(model);
            if dir.exists() {
                tracing::info!(path = %path.display(), "removing a model replaced by an import");
                fs::remove_dir_all(&path).at("remove", &path)?;
            } else {
                tracing::warn!(path = %path.display(), "an import was interrupted: restoring the model it was replacing");
                fs::rename(&path, &dir).at("rename back", &path)?;
            }
        } else if rest.contains(".creating-") || rest.contains(".deleted-") {
            tracing::info!(path = %path.display(), "removing an interrupted create, import or delete");
            fs::remove_dir_all(&path).at("remove", &path)?;
        }
    }
    fsutil::sync_dir(models_dir)
}

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
    if file.config.name.as_str() != name {
        return Err(corrupt(format!(
            "names model `{}` but lives in directory `{name}`",
            file.config.name
        )));
    }
    Ok(file.config)
}

fn recover_model(
    dir: &Path,
    name: &str,
    sync: SyncMode,
    accept_data_loss: bool,
) -> Result<RecoveredModel> {
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
    let mut torn_tails = Vec::new();
    let migrated = dir.join(V1_LOG_FILE).exists();
    if migrated {
        if let Some(t) = super::migrate::migrate_v1(dir, &config)? {
            torn_tails.push(t);
        }
    }
    let mut accepted_losses = Vec::new();
    let loaded = match snapshot::load_latest(dir) {
        Ok(l) => l,
        Err(e @ Error::NoValidSnapshot { .. }) if accept_data_loss => {
            let what = format!("{e}; replaying the logs from their start");
            tracing::error!(model = name, problem = %what, "accepting data loss");
            accepted_losses.push(what);
            None
        }
        Err(e) => return Err(e),
    };
    let mut quarantined = Vec::new();
    for (path, _) in loaded.iter().flat_map(|s| &s.skipped) {
        let moved = snapshot::quarantine(path)?;
        tracing::warn!(from = %path.display(), to = %moved.display(), "moved corrupt snapshot aside");
        quarantined.push(moved);
    }
    let mut kept = Vec::new();
    if let Some(l) = &loaded {
        if l.snapshot.config != config {
            return Err(Error::Corrupt {
                path: l.path.clone(),
                reason: format!("its config differs from {CONFIG_FILE}'s"),
            });
        }
        // The fallback's positions say where each log may be cut.
        for (seq, path) in snapshot::list(dir)? {
            if seq < l.snapshot.sequence() {
                if let Ok(older) = snapshot::read(&path) {
                    kept.push((seq, older.positions()));
                }
            }
        }
        kept.push((l.snapshot.sequence(), l.snapshot.positions()));
    }
    let positions = loaded.as_ref().map_or_else(
        || vec![Position::default(); config.partitions],
        |l| l.snapshot.positions(),
    );
    let mut replay = Vec::with_capacity(config.partitions);
    let mut logs = Vec::with_capacity(config.partitions);
    for (k, pos) in positions.iter().enumerate() {
        let path = dir.join(log_file(k));
        let opened = if path.exists() {
            Wal::open(&path, k as u32, sync)
        } else {
            Err(Error::Corrupt {
                path: path.clone(),
                reason: "the partition's log is missing".into(),
            })
        };
        let (wal, rec) = match opened {
            Ok(ok) => ok,
            Err(e) if accept_data_loss => {
                let what = format!("{e}; starting an empty log after local index {}", pos.local);
                tracing::error!(model = name, partition = k, problem = %what, "accepting data loss");
                accepted_losses.push(what);
                let aside = path.with_extension(format!("log.lost-{}", unique()));
                if path.exists() {
                    fs::rename(&path, &aside).at("rename aside", &path)?;
                }
                Wal::create_file(&path, k as u32, pos.local + 1)?;
                Wal::open(&path, k as u32, sync)?
            }
            Err(e) => return Err(e),
        };
        if rec.first_local > pos.local + 1 {
            let what = format!(
                "partition {k}: the log {} starts at local index {} but the {} ends at {}: \
                 batches {} to {} of this partition are missing",
                path.display(),
                rec.first_local,
                if loaded.is_some() {
                    "newest snapshot"
                } else {
                    "empty model (no snapshot)"
                },
                pos.local,
                pos.local + 1,
                rec.first_local - 1
            );
            if !accept_data_loss {
                return Err(Error::Corrupt { path, reason: what });
            }
            tracing::error!(model = name, problem = %what, "accepting data loss");
            accepted_losses.push(what);
        }
        if let Some(t) = rec.torn_tail.clone() {
            torn_tails.push(t);
        }
        replay.push(
            rec.records
                .into_iter()
                .filter(|r| r.stamp.local > pos.local)
                .collect(),
        );
        logs.push(Arc::new(wal));
    }
    let snapshot = match loaded {
        Some(l) => {
            let accs = l.snapshot.accumulators().map_err(|e| e.at(&l.path))?;
            Some((l.snapshot, accs))
        }
        None => None,
    };
    Ok(RecoveredModel {
        files: ModelFiles {
            config,
            dir: dir.to_owned(),
            logs,
            kept: Mutex::new(kept),
        },
        snapshot,
        replay,
        quarantined,
        torn_tails,
        accepted_losses,
        migrated,
    })
}
